//! How the gateway lays out its Flight messages, sends them without copying the Arrow data,
//! and how its client reads them without a copy (docs/flight.md "Message layout").
//!
//! Sending: [`MessageEncoder`] frames each record batch as a gRPC message in pieces
//! ([`WireMessage`]), lending the batch's large buffers to the transport, which writes them to
//! the socket from where they are (`crate::transport::route` serves DoGet with them). arrow-flight's
//! encoder and tonic would copy every body twice: into an IPC body, then into tonic's send
//! buffer.
//!
//! Receiving: a received message's body is a slice of the buffer it was received into. Arrow
//! arrays may be read in place only from memory aligned for their type, and arrow-flight's
//! decoder copies every body that is not on a 64-byte boundary. The gateway therefore pads the
//! `app_metadata` of each record batch message with zero bytes so that the gRPC prefix and the
//! message up to the body fill a multiple of 64 bytes; its client (`crate::transport::route::do_get`)
//! receives each message into a 64-byte aligned buffer of its own, prefix first, so every body
//! is aligned; and [`BatchDecoder`] uses any body aligned for its buffers in place, copying only
//! the buffers that are not (as arrow-ipc does).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::MessageHeader;
use arrow::ipc::reader::RecordBatchDecoder;
use arrow::ipc::writer::{IpcWriteOptions, StreamEncoder};
use arrow_flight::{FlightData, SchemaAsIpc};
use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

/// Boundary the gateway places record batch bodies on, counting from the gRPC prefix.
pub const BODY_ALIGNMENT: usize = 64;

/// Length of the gRPC message prefix (compression flag and 4-byte length).
pub const GRPC_PREFIX: usize = 5;

/// Arrow buffers of at least this many bytes are sent from the batch's own memory; shorter
/// ones are copied into the message's small pieces.
pub const SHARED_FROM: usize = 64 << 10;

/// Protobuf field numbers of `FlightData`.
const DATA_HEADER: u32 = 2;
const APP_METADATA: u32 = 3;
const DATA_BODY: u32 = 1000;

/// Offset of the body in the protobuf encoding of a `FlightData` with no descriptor, a header
/// of `header` bytes, `metadata` bytes of app_metadata and a body of `body` bytes (prost and
/// this module write the fields in tag order, `data_body` last).
fn body_offset(header: usize, metadata: usize, body: usize) -> usize {
    // A length-delimited field: its tag, its length, its bytes.
    let field = |n: usize| {
        if n == 0 {
            0
        } else {
            1 + encoded_len_varint(n as u64) + n
        }
    };
    // The tag of field 1000 takes two bytes.
    field(header) + field(metadata) + 2 + encoded_len_varint(body as u64)
}

/// Bytes of zero app_metadata that put the body of a message with a `header`-byte header and a
/// `body`-byte body on a [`BODY_ALIGNMENT`] boundary counted from the message's gRPC prefix.
/// Each byte of padding moves the body by one, so one of the first 65 lengths fits.
fn body_padding(header: usize, body: usize) -> usize {
    (0..=BODY_ALIGNMENT)
        .find(|&m| (GRPC_PREFIX + body_offset(header, m, body)).is_multiple_of(BODY_ALIGNMENT))
        .unwrap_or(0)
}

/// `msg` as one uncompressed gRPC message: flag byte 0, the protobuf length as 4 bytes
/// big-endian, the protobuf bytes (for small messages: a DoGet request, a schema).
pub fn grpc_message(msg: &impl Message) -> Bytes {
    let n = msg.encoded_len();
    let mut b = BytesMut::with_capacity(GRPC_PREFIX + n);
    b.put_u8(0);
    b.put_u32(n as u32);
    msg.encode_raw(&mut b);
    b.freeze()
}

/// An Arrow buffer lent to `bytes`: the bytes stay where the buffer keeps them.
pub(crate) struct Lent(pub(crate) Buffer);

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// One gRPC message of a DoGet response as it goes on the wire: the 5-byte gRPC prefix and
/// the protobuf encoding of a `FlightData`, in pieces. Arrow buffers of at least
/// [`SHARED_FROM`] bytes are pieces of their own that share the batch's memory; everything
/// else is copied into small pieces.
#[derive(Debug, Clone, Default)]
pub struct WireMessage {
    pieces: Vec<Bytes>,
    len: usize,
    arrow_bytes: usize,
}

impl WireMessage {
    /// The message of a `FlightData` encoded by prost (one copy; for small messages without
    /// a body worth lending, such as the schema).
    pub fn from_flight_data(fd: &FlightData) -> Self {
        let b = grpc_message(fd);
        WireMessage {
            len: b.len(),
            pieces: vec![b],
            arrow_bytes: fd.data_header.len() + fd.data_body.len(),
        }
    }

    /// A record batch message: `header` (the IPC message header) and the body in `body`
    /// (`body_len` bytes), with the body aligned by zero app_metadata.
    fn record_batch(header: &[u8], body: Vec<Buffer>, body_len: usize) -> Result<Self, ArrowError> {
        let pad = body_padding(header.len(), body_len);
        let proto = body_offset(header.len(), pad, body_len) + body_len;
        let prefix = u32::try_from(proto).map_err(|_| {
            ArrowError::IpcError(format!("a message of {proto} bytes is over gRPC's 4 GiB"))
        })?;
        let mut small = BytesMut::with_capacity(GRPC_PREFIX + proto - body_len + 4096);
        small.put_u8(0);
        small.put_u32(prefix);
        for (tag, bytes) in [
            (DATA_HEADER, header),
            (APP_METADATA, &[0u8; BODY_ALIGNMENT][..pad]),
        ] {
            if !bytes.is_empty() {
                encode_key(tag, WireType::LengthDelimited, &mut small);
                encode_varint(bytes.len() as u64, &mut small);
                small.put_slice(bytes);
            }
        }
        encode_key(DATA_BODY, WireType::LengthDelimited, &mut small);
        encode_varint(body_len as u64, &mut small);
        let mut pieces = Vec::new();
        for b in body {
            if b.len() >= SHARED_FROM {
                if !small.is_empty() {
                    pieces.push(std::mem::take(&mut small).freeze());
                }
                pieces.push(Bytes::from_owner(Lent(b)));
            } else {
                small.extend_from_slice(b.as_slice());
            }
        }
        if !small.is_empty() {
            pieces.push(small.freeze());
        }
        Ok(WireMessage {
            pieces,
            len: GRPC_PREFIX + proto,
            arrow_bytes: header.len() + body_len,
        })
    }

    /// The pieces, in order.
    pub fn pieces(&self) -> &[Bytes] {
        &self.pieces
    }

    /// The pieces, in order, to hand to the transport.
    pub fn into_pieces(self) -> Vec<Bytes> {
        self.pieces
    }

    /// Length on the wire, gRPC prefix included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a message of no bytes (never built by this module).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Arrow IPC bytes of the message: header and body.
    pub fn arrow_bytes(&self) -> usize {
        self.arrow_bytes
    }

    /// The `FlightData` this message encodes (copies the message into one buffer).
    pub fn to_flight_data(&self) -> Result<FlightData, prost::DecodeError> {
        let mut all = BytesMut::with_capacity(self.len);
        for p in &self.pieces {
            all.extend_from_slice(p);
        }
        FlightData::decode(all.freeze().slice(GRPC_PREFIX.min(self.len)..))
    }
}

/// Consecutive bytes out of the buffers of an encoded IPC stream.
struct IpcCursor(VecDeque<Buffer>);

impl IpcCursor {
    /// The next `n` bytes as slices of the stream's buffers.
    fn take(&mut self, mut n: usize) -> Result<Vec<Buffer>, ArrowError> {
        let mut out = Vec::new();
        while n > 0 {
            let b = self
                .0
                .pop_front()
                .ok_or_else(|| ArrowError::IpcError("IPC stream ended inside a message".into()))?;
            if b.len() <= n {
                n -= b.len();
                out.push(b);
            } else {
                out.push(b.slice_with_length(0, n));
                self.0.push_front(b.slice(n));
                n = 0;
            }
        }
        Ok(out)
    }

    /// The next `n` bytes, copied.
    fn copy(&mut self, n: usize) -> Result<Vec<u8>, ArrowError> {
        Ok(self
            .take(n)?
            .iter()
            .flat_map(|b| b.as_slice())
            .copied()
            .collect())
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|b| b.is_empty())
    }
}

/// Encodes a DoGet stream's messages with the gateway's layout: the schema message, then one
/// record batch message per batch of at most `max_body` bytes of buffers (bigger batches are
/// split by rows as arrow-flight's encoder splits them), each body aligned by zero
/// app_metadata, with the batch's large buffers lent to the transport rather than copied
/// (arrow-ipc's [`StreamEncoder`] hands them out as they are). No dictionaries: the served
/// schema has none.
pub struct MessageEncoder {
    options: IpcWriteOptions,
    stream: Option<StreamEncoder>,
    max_body: usize,
}

impl MessageEncoder {
    /// An encoder splitting batches above `max_body` bytes.
    pub fn new(max_body: usize) -> Self {
        MessageEncoder {
            options: IpcWriteOptions::default(),
            stream: None,
            max_body: max_body.max(1),
        }
    }

    /// The schema message.
    pub fn schema(&self, schema: &Schema) -> WireMessage {
        WireMessage::from_flight_data(&SchemaAsIpc::new(schema, &self.options).into())
    }

    /// The record batch messages of `batch` (none for a batch without rows).
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<WireMessage>, ArrowError> {
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
        let stream = match &mut self.stream {
            Some(s) => s,
            None => self.stream.insert(StreamEncoder::try_new_with_options(
                &batch.schema(),
                self.options.clone(),
            )?),
        };
        let mut out = Vec::with_capacity(parts);
        let mut at = 0;
        while at < batch.num_rows() {
            let part = batch.slice(at, rows.min(batch.num_rows() - at));
            let mut ipc = IpcCursor(stream.encode(&part)?.into());
            // Framed IPC messages: continuation marker, header length, header, body (the first
            // call also yields the schema message, which the Flight stream sent already).
            while !ipc.is_empty() {
                let prefix = ipc.copy(8)?;
                if prefix[..4] != [0xff; 4] {
                    return Err(ArrowError::IpcError(
                        "IPC message without continuation".into(),
                    ));
                }
                let len = i32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
                let header = ipc.copy(usize::try_from(len).unwrap_or(0))?;
                let message = arrow::ipc::root_as_message(&header)
                    .map_err(|e| ArrowError::IpcError(format!("IPC message header: {e}")))?;
                let body_len = usize::try_from(message.bodyLength()).unwrap_or(0);
                let body = ipc.take(body_len)?;
                match message.header_type() {
                    MessageHeader::Schema => {}
                    MessageHeader::RecordBatch => {
                        out.push(WireMessage::record_batch(&header, body, body_len)?)
                    }
                    _ => {
                        return Err(ArrowError::IpcError(
                            "served batches carry no dictionaries".into(),
                        ));
                    }
                }
            }
            at += part.num_rows();
        }
        Ok(out)
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
pub(crate) mod tests {
    use super::*;
    use arrow::array::{Float32Array, Int64Array};
    use arrow::datatypes::{DataType, Field};
    use arrow_flight::SchemaAsIpc;
    use arrow_flight::encode::FlightDataEncoderBuilder;

    /// Rows `from..from + rows`: an id and a float column with some nulls, so that a validity
    /// bitmap travels too (shared with `route`'s tests).
    pub(crate) fn batch(rows: usize, from: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("x", DataType::Float32, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(from..from + rows as i64)),
                Arc::new(Float32Array::from_iter(
                    (0..rows).map(|i| (i % 7 != 3).then_some(i as f32 / 3.0)),
                )),
            ],
        )
        .unwrap()
    }

    /// What arrow-flight's encoder sends for `b`, split at `max_body`.
    fn encoded_at(b: &RecordBatch, max_body: usize) -> Vec<FlightData> {
        let enc = FlightDataEncoderBuilder::new()
            .with_max_flight_data_size(max_body)
            .build(futures::stream::iter([Ok(b.clone())]));
        futures::executor::block_on_stream(enc)
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    }

    fn encoded(b: &RecordBatch) -> Vec<FlightData> {
        encoded_at(b, 2 << 20)
    }

    /// What the gateway's encoder sends for `b`: schema message, then batch messages.
    fn ours(b: &RecordBatch, max_body: usize) -> Vec<WireMessage> {
        let mut enc = MessageEncoder::new(max_body);
        let mut got = vec![enc.schema(&b.schema())];
        got.extend(enc.batch(b).unwrap());
        got
    }

    fn wire_bytes(m: &WireMessage) -> Vec<u8> {
        m.pieces().iter().flat_map(|p| p.iter()).copied().collect()
    }

    #[test]
    fn the_gateway_encoder_sends_what_arrow_flight_sends_with_aligned_bodies() {
        for (rows, max_body) in [(0, 1 << 20), (1, 1 << 20), (5_000, 1 << 20), (5_000, 7_000)] {
            let b = batch(rows, 0);
            let got = ours(&b, max_body);
            let theirs = encoded_at(&b, max_body);
            assert_eq!(got.len(), theirs.len(), "rows {rows} max {max_body}");
            let mut d = BatchDecoder::new();
            let mut back = Vec::new();
            for (m, t) in got.iter().zip(&theirs) {
                let bytes = wire_bytes(m);
                assert_eq!(bytes.len(), m.len());
                // The gRPC prefix: not compressed, then the protobuf length.
                assert_eq!(bytes[0], 0);
                let n = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
                assert_eq!(n, m.len() - GRPC_PREFIX);
                let o = m.to_flight_data().unwrap();
                // The header is arrow-flight's, then the zero padding of an IPC stream header.
                assert!(o.data_header.starts_with(&t.data_header), "rows {rows}");
                assert!(o.data_header[t.data_header.len()..].iter().all(|&b| b == 0));
                assert_eq!(o.data_body, t.data_body);
                assert_eq!(m.arrow_bytes(), o.data_header.len() + o.data_body.len());
                if o.data_body.is_empty() {
                    assert!(o.app_metadata.is_empty());
                } else {
                    let start = bytes.len() - o.data_body.len();
                    assert_eq!(&bytes[start..], &o.data_body[..]);
                    assert_eq!(start % BODY_ALIGNMENT, 0, "rows {rows}");
                    assert!(o.app_metadata.len() <= BODY_ALIGNMENT);
                    assert!(o.app_metadata.iter().all(|&b| b == 0));
                }
                back.extend(d.decode(&o).unwrap());
            }
            assert_eq!(
                arrow::compute::concat_batches(&b.schema(), &back).unwrap(),
                b
            );
        }
    }

    #[test]
    fn bodies_start_on_the_boundary_for_every_size() {
        // Sizes that move the header and body lengths across varint boundaries.
        for rows in [1, 7, 100, 2_000, 40_000, 300_000] {
            for m in ours(&batch(rows, 0), 64 << 20).iter().skip(1) {
                let o = m.to_flight_data().unwrap();
                let start = m.len() - o.data_body.len();
                assert_eq!(start % BODY_ALIGNMENT, 0, "rows {rows}");
                assert!(o.app_metadata.len() <= BODY_ALIGNMENT, "rows {rows}");
            }
        }
    }

    #[test]
    fn large_buffers_are_lent_not_copied() {
        let b = batch(300_000, 0);
        let m = ours(&b, 64 << 20).pop().unwrap();
        let values = b.column(1).to_data().buffers()[0].clone();
        assert!(values.len() >= SHARED_FROM);
        // The float column's values are a piece of their own, in the batch's memory.
        let lent = m
            .pieces()
            .iter()
            .find(|p| p.as_ptr() == values.as_ptr())
            .expect("values buffer sent from the batch");
        assert_eq!(lent.len(), values.len());
        // Small buffers are copied: a 3-row batch is one piece.
        assert_eq!(ours(&batch(3, 0), 64 << 20)[1].pieces().len(), 1);
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
    fn decodes_in_place_when_the_prefix_lands_aligned() {
        let b = batch(5_000, 0);
        // The gRPC prefix at a 64- or 16-byte boundary, and elsewhere.
        for (at, in_place) in [(0, true), (16, true), (1, false)] {
            let mut d = BatchDecoder::new();
            let mut got = Vec::new();
            for m in ours(&b, 1 << 20) {
                let landed = land(&wire_bytes(&m), at);
                let received = FlightData::decode(landed.slice(GRPC_PREFIX..)).unwrap();
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
        let msgs = encoded(&batch(3, 0));
        let e = d.decode(&msgs[1]).unwrap_err().to_string();
        assert!(e.contains("before the schema"), "{e}");
        let opts = arrow::ipc::writer::IpcWriteOptions::default();
        let schema_msg: FlightData = SchemaAsIpc::new(&batch(1, 0).schema(), &opts).into();
        assert!(d.decode(&schema_msg).unwrap().is_none());
    }
}
