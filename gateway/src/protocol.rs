//! The gateway protocol as both halves speak it, outside the protobuf schema (docs/flight.md):
//! gRPC paths, message limits, the signed-request headers and the bytes a request signs, the
//! Flight ticket, the schema and metadata keys of a served slice. A leaf: client and server
//! import it, it imports neither.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use sha2::{Digest, Sha256};

use crate::error::{GatewayError, Result};

/// gRPC path prefix of the service.
pub const SERVICE_PATH: &str = "/ecgfed.v1.GatewayService/";
/// Largest gRPC message sent (answers, Flight data) or accepted by a client.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Largest request message a gateway decodes. Requests are decoded before their signature is
/// checked, so anyone who can connect may send one: every legitimate request is far smaller
/// (a reservation lists a site's allocation cells).
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// gRPC path prefix of Arrow Flight.
pub const FLIGHT_PATH: &str = "/arrow.flight.protocol.FlightService/";

/// Largest Flight message body the gateway builds (bigger batches are split); under
/// [`MAX_MESSAGE_BYTES`].
pub const MAX_FLIGHT_DATA_BYTES: usize = 8 << 20;

/// Domain-separation tag of request signatures (v2: the gateway's site is signed).
pub const REQUEST_TAG: &[u8] = b"ecgfed/v2/request\n";
/// Header: member id.
pub const H_MEMBER: &str = "x-ecgfed-member";
/// Header: timestamp (ms).
pub const H_TIMESTAMP: &str = "x-ecgfed-timestamp";
/// Header: nonce.
pub const H_NONCE: &str = "x-ecgfed-nonce";
/// Header: signature (hex).
pub const H_SIGNATURE: &str = "x-ecgfed-signature";

/// The bytes a request signature covers; `site` is the site of the gateway addressed.
pub fn signing_bytes(
    member: &str,
    site: &str,
    method: &str,
    request: &[u8],
    ts_ms: i64,
    nonce: u64,
) -> Vec<u8> {
    let mut b =
        Vec::with_capacity(REQUEST_TAG.len() + member.len() + site.len() + method.len() + 51);
    b.extend_from_slice(REQUEST_TAG);
    b.extend_from_slice(member.as_bytes());
    b.push(b'\n');
    b.extend_from_slice(site.as_bytes());
    b.push(b'\n');
    b.extend_from_slice(method.as_bytes());
    b.push(b'\n');
    b.extend_from_slice(&Sha256::digest(request));
    b.extend_from_slice(&ts_ms.to_be_bytes());
    b.extend_from_slice(&nonce.to_be_bytes());
    b
}

/// Flight ticket prefix: a ticket is `"ecgfed-slice:" + slice_id` in UTF-8.
pub const TICKET_PREFIX: &str = "ecgfed-slice:";

/// Schema metadata keys of a served stream.
pub mod meta {
    /// Slice id.
    pub const SLICE_ID: &str = "ecgfed.slice_id";
    /// Cohort id.
    pub const COHORT_ID: &str = "ecgfed.cohort_id";
    /// Site.
    pub const SITE: &str = "ecgfed.site";
    /// Hex of the slice root.
    pub const SLICE_ROOT: &str = "ecgfed.slice_root";
    /// Leaves of the slice tree (decimal).
    pub const SLICE_SIZE: &str = "ecgfed.slice_size";
    /// Index of the CohortSliceCommitted entry (decimal).
    pub const LEDGER_INDEX: &str = "ecgfed.ledger_index";
    /// JSON list of `[leaf index, hex commitment]` of leaves not served because erased.
    pub const ERASED: &str = "ecgfed.erased";
}

/// The ticket of a slice.
pub fn ticket(slice_id: &str) -> Vec<u8> {
    format!("{TICKET_PREFIX}{slice_id}").into_bytes()
}

/// The slice id of a ticket.
pub fn parse_ticket(t: &[u8]) -> Result<String> {
    std::str::from_utf8(t)
        .ok()
        .and_then(|s| s.strip_prefix(TICKET_PREFIX))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            GatewayError::refused(
                tonic::Code::InvalidArgument,
                format!("ticket is not \"{TICKET_PREFIX}<slice id>\""),
            )
        })
}

/// The Arrow schema of served rows: the store schema (`ecgfed_datasets::store::schema`) with
/// `patient` replaced by `pseudonym`, plus `salt`, `commitment`, `leaf_index` and `proof`.
pub fn served_schema(metadata: HashMap<String, String>) -> SchemaRef {
    let h32 = DataType::FixedSizeBinary(32);
    let mut fields: Vec<Field> = ecgfed_datasets::store::schema()
        .fields()
        .iter()
        .map(|f| match f.name().as_str() {
            "patient" => Field::new("pseudonym", f.data_type().clone(), f.is_nullable()),
            _ => f.as_ref().clone(),
        })
        .collect();
    fields.extend([
        Field::new("salt", h32.clone(), false),
        Field::new("commitment", h32.clone(), false),
        Field::new("leaf_index", DataType::UInt64, false),
        Field::new(
            "proof",
            DataType::List(Arc::new(Field::new_list_field(h32, false))),
            false,
        ),
    ]);
    Arc::new(Schema::new(fields).with_metadata(metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The served columns, in order, as docs/flight.md "Served rows" lists them: the store's
    /// with `patient` replaced by `pseudonym`, then the four proof columns.
    #[test]
    fn served_schema_is_the_documented_one() {
        let s = served_schema(HashMap::new());
        let names: Vec<&str> = s.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "segment_id",
                "record_id",
                "pseudonym",
                "site",
                "source",
                "fs",
                "leads",
                "start_sample",
                "n_samples",
                "signal",
                "label",
                "label_raw",
                "age",
                "sex",
                "content_hash",
                "salt",
                "commitment",
                "leaf_index",
                "proof"
            ]
        );
        let pseudonym = s.field_with_name("pseudonym").unwrap();
        assert_eq!(pseudonym.data_type(), &DataType::Utf8);
        assert!(!pseudonym.is_nullable());
        assert!(s.field_with_name("age").unwrap().is_nullable());
        assert_eq!(
            s.field_with_name("commitment").unwrap().data_type(),
            &DataType::FixedSizeBinary(32)
        );
    }
}
