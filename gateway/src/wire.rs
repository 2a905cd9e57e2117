//! How the gateway lays out its Flight messages, and how its client reads them without a copy
//! (docs/flight.md "Message layout").
//!
//! A received message's body is a slice of the receive buffer. Arrow arrays may be read in
//! place only from memory aligned for their type, and arrow-flight's decoder copies every
//! body that is not on a 64-byte boundary. tonic mostly receives a large message into a
//! buffer of its own that starts with the message's 5-byte gRPC prefix, and the allocator
//! aligns that buffer. The gateway therefore pads the `app_metadata` of each record batch
//! message with zero bytes so that prefix and message up to the body fill a multiple of 64
//! bytes, and [`BatchDecoder`] uses any body aligned for its buffers in place, copying only
//! the buffers that are not (as arrow-ipc does).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::MessageHeader;
use arrow::ipc::reader::RecordBatchDecoder;
use arrow::ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions};
use arrow_flight::{FlightData, SchemaAsIpc};
use bytes::Bytes;
use prost::Message;
use prost::encoding::encoded_len_varint;

/// Boundary the gateway places record batch bodies on, counting from the gRPC prefix.
pub const BODY_ALIGNMENT: usize = 64;

/// Length of the gRPC message prefix (compression flag and 4-byte length).
pub const GRPC_PREFIX: usize = 5;

/// Offset of the body in the protobuf encoding of `fd` if its app_metadata had `metadata`
/// bytes. prost writes the fields in tag order and `data_body` (field 1000) last.
fn body_offset(fd: &FlightData, metadata: usize) -> usize {
    // A length-delimited field: its tag, its length, its bytes.
    let field = |tag_bytes: usize, n: usize| tag_bytes + encoded_len_varint(n as u64) + n;
    let mut at = fd
        .flight_descriptor
        .as_ref()
        .map_or(0, |d| field(1, d.encoded_len()));
    if !fd.data_header.is_empty() {
        at += field(1, fd.data_header.len());
    }
    if metadata > 0 {
        at += field(1, metadata);
    }
    // The tag of field 1000 takes two bytes.
    at + 2 + encoded_len_varint(fd.data_body.len() as u64)
}

/// Pads the app_metadata of a record batch message with zero bytes so that its body starts
/// on a [`BODY_ALIGNMENT`] boundary counted from the message's gRPC prefix. Messages without
/// a body, or that carry app_metadata of their own, are left as they are.
pub fn align_body(fd: &mut FlightData) {
    if fd.data_body.is_empty() || !fd.app_metadata.is_empty() {
        return;
    }
    // Each extra byte of padding moves the body by one: one of the first 65 lengths fits.
    if let Some(m) = (0..=BODY_ALIGNMENT)
        .find(|&m| (GRPC_PREFIX + body_offset(fd, m)).is_multiple_of(BODY_ALIGNMENT))
    {
        fd.app_metadata = Bytes::from(vec![0u8; m]);
    }
}

/// Encodes a DoGet stream's messages with the gateway's layout: the schema message, then one
/// record batch message per batch of at most `max_body` bytes of buffers (bigger batches are
/// split by rows as arrow-flight's encoder splits them), each body aligned by [`align_body`].
/// No dictionaries: the served schema has none.
pub struct MessageEncoder {
    generator: IpcDataGenerator,
    tracker: DictionaryTracker,
    context: IpcWriteContext,
    options: IpcWriteOptions,
    max_body: usize,
}

impl MessageEncoder {
    /// An encoder splitting batches above `max_body` bytes.
    pub fn new(max_body: usize) -> Self {
        MessageEncoder {
            generator: IpcDataGenerator::default(),
            tracker: DictionaryTracker::new(false),
            context: IpcWriteContext::default(),
            options: IpcWriteOptions::default(),
            max_body: max_body.max(1),
        }
    }

    /// The schema message.
    pub fn schema(&self, schema: &Schema) -> FlightData {
        SchemaAsIpc::new(schema, &self.options).into()
    }

    /// The record batch messages of `batch` (none for a batch without rows).
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<FlightData>, ArrowError> {
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let size: usize = batch
            .columns()
            .iter()
            .map(|c| c.get_buffer_memory_size())
            .sum();
        let parts = size.div_ceil(self.max_body).max(1);
        let rows = (batch.num_rows() / parts).max(1);
        let mut out = Vec::with_capacity(parts);
        let mut at = 0;
        loop {
            let part = batch.slice(at, rows.min(batch.num_rows() - at));
            let (dictionaries, data) = self.generator.encode(
                &part,
                &mut self.tracker,
                &self.options,
                &mut self.context,
            )?;
            if !dictionaries.is_empty() {
                return Err(ArrowError::IpcError(
                    "served batches carry no dictionaries".into(),
                ));
            }
            let mut fd = FlightData::from(data);
            align_body(&mut fd);
            out.push(fd);
            at += part.num_rows();
            if at >= batch.num_rows() {
                return Ok(out);
            }
        }
    }
}

/// Decodes the messages of a DoGet stream: the schema message, then record batches (no
/// dictionaries: the served schema has none).
#[derive(Debug, Default)]
pub struct BatchDecoder {
    schema: Option<SchemaRef>,
}

impl BatchDecoder {
    /// A decoder that has seen no schema yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stream's schema, once its schema message was decoded.
    pub fn schema(&self) -> Option<&SchemaRef> {
        self.schema.as_ref()
    }

    /// Decodes one message: `Some` batch for a record batch message, `None` for the schema.
    /// The arrays are views of the message body where it is aligned for them; arrow-ipc
    /// copies the buffers that are not, and validates every array as arrow-flight does.
    pub fn decode(&mut self, fd: &FlightData) -> Result<Option<RecordBatch>, ArrowError> {
        let message = arrow::ipc::root_as_message(&fd.data_header)
            .map_err(|e| ArrowError::ParseError(format!("Flight message header: {e}")))?;
        match message.header_type() {
            MessageHeader::Schema => {
                self.schema = Some(Arc::new(Schema::try_from(fd)?));
                Ok(None)
            }
            MessageHeader::RecordBatch => {
                let schema = self.schema.clone().ok_or_else(|| {
                    ArrowError::IpcError("record batch message before the schema".into())
                })?;
                let batch = message.header_as_record_batch().ok_or_else(|| {
                    ArrowError::IpcError("record batch message without its header".into())
                })?;
                let body = Buffer::from(fd.data_body.clone());
                let dictionaries = HashMap::new();
                let version = message.version();
                RecordBatchDecoder::try_new(&body, batch, schema, &dictionaries, &version)?
                    .read_record_batch()
                    .map(Some)
            }
            other => Err(ArrowError::IpcError(format!(
                "unexpected Flight message {}",
                other.variant_name().unwrap_or("UNKNOWN")
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float32Array, Int64Array};
    use arrow::datatypes::{DataType, Field};
    use arrow_flight::SchemaAsIpc;
    use arrow_flight::encode::FlightDataEncoderBuilder;

    fn batch(rows: usize) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("x", DataType::Float32, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(0..rows as i64)),
                Arc::new(Float32Array::from_iter_values(
                    (0..rows).map(|i| i as f32 / 3.0),
                )),
            ],
        )
        .unwrap()
    }

    /// What arrow-flight's encoder sends for `b`.
    fn encoded(b: &RecordBatch) -> Vec<FlightData> {
        let enc = FlightDataEncoderBuilder::new().build(futures::stream::iter([Ok(b.clone())]));
        futures::executor::block_on_stream(enc)
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    }

    #[test]
    fn the_gateway_encoder_sends_what_arrow_flight_sends_with_aligned_bodies() {
        for (rows, max_body) in [(0, 1 << 20), (1, 1 << 20), (5_000, 1 << 20), (5_000, 7_000)] {
            let b = batch(rows);
            let mut ours = MessageEncoder::new(max_body);
            let mut got = vec![ours.schema(&b.schema())];
            got.extend(ours.batch(&b).unwrap());
            let theirs = futures::executor::block_on_stream(
                FlightDataEncoderBuilder::new()
                    .with_max_flight_data_size(max_body)
                    .build(futures::stream::iter([Ok(b.clone())])),
            )
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
            assert_eq!(got.len(), theirs.len(), "rows {rows} max {max_body}");
            for (o, t) in got.iter().zip(&theirs) {
                assert_eq!(o.data_header, t.data_header);
                assert_eq!(o.data_body, t.data_body);
                if !o.data_body.is_empty() {
                    let start = o.encode_to_vec().len() - o.data_body.len();
                    assert_eq!((GRPC_PREFIX + start) % BODY_ALIGNMENT, 0);
                }
            }
            let mut d = BatchDecoder::new();
            let back: Vec<RecordBatch> = got.iter().filter_map(|m| d.decode(m).unwrap()).collect();
            assert_eq!(
                arrow::compute::concat_batches(&b.schema(), &back).unwrap(),
                b
            );
        }
    }

    #[test]
    fn padded_bodies_start_on_the_boundary_counted_from_the_grpc_prefix() {
        // Sizes that move the header and body lengths across varint boundaries.
        for rows in [0, 1, 7, 100, 2_000, 40_000, 300_000] {
            for mut fd in encoded(&batch(rows)) {
                let had_body = !fd.data_body.is_empty();
                align_body(&mut fd);
                let bytes = fd.encode_to_vec();
                // The body is the last field: it starts where its length ends.
                let start = bytes.len() - fd.data_body.len();
                assert_eq!(&bytes[start..], &fd.data_body[..], "rows {rows}");
                if had_body {
                    assert_eq!((GRPC_PREFIX + start) % BODY_ALIGNMENT, 0, "rows {rows}");
                    assert!(fd.app_metadata.len() <= BODY_ALIGNMENT);
                    assert!(fd.app_metadata.iter().all(|&b| b == 0));
                } else {
                    assert!(fd.app_metadata.is_empty());
                }
            }
        }
    }

    /// Bytes in a buffer on a 64-byte boundary.
    struct Landed(arrow::buffer::MutableBuffer);

    impl AsRef<[u8]> for Landed {
        fn as_ref(&self) -> &[u8] {
            self.0.as_slice()
        }
    }

    fn land(bytes: &[u8], at: usize) -> Bytes {
        let mut buf = arrow::buffer::MutableBuffer::new(bytes.len() + at);
        buf.extend_from_slice(&vec![0u8; at]);
        buf.extend_from_slice(bytes);
        Bytes::from_owner(Landed(buf)).slice(at..)
    }

    #[test]
    fn decodes_what_arrow_flight_encodes_in_place_when_aligned() {
        let b = batch(5_000);
        // After a gRPC prefix at a 64- or 16-byte boundary, and elsewhere.
        for (at, in_place) in [(GRPC_PREFIX, true), (16 + GRPC_PREFIX, true), (3, false)] {
            let mut d = BatchDecoder::new();
            let mut got = Vec::new();
            for mut fd in encoded(&b) {
                align_body(&mut fd);
                let received = FlightData::decode(land(&fd.encode_to_vec(), at)).unwrap();
                if let Some(out) = d.decode(&received).unwrap() {
                    let body = received.data_body.as_ptr() as usize;
                    let body = body..body + received.data_body.len();
                    let values = out.column(1).to_data().buffers()[0].as_ptr() as usize;
                    assert_eq!(body.contains(&values), in_place, "landed at {at}");
                    got.push(out);
                }
            }
            assert_eq!(got, vec![b.clone()], "landed at {at}");
            assert_eq!(d.schema().unwrap().as_ref(), b.schema().as_ref());
        }
    }

    #[test]
    fn a_batch_before_the_schema_is_an_error() {
        let mut d = BatchDecoder::new();
        let msgs = encoded(&batch(3));
        let e = d.decode(&msgs[1]).unwrap_err().to_string();
        assert!(e.contains("before the schema"), "{e}");
        let opts = arrow::ipc::writer::IpcWriteOptions::default();
        let schema_msg: FlightData = SchemaAsIpc::new(&batch(1).schema(), &opts).into();
        assert!(d.decode(&schema_msg).unwrap().is_none());
    }
}
