//! Request signing (docs/flight.md "Request signatures"): a member's [`RequestSigner`] and the
//! headers it puts on a call to the gateway of one site.

use arrow_flight::Ticket;
use ecgfed_ledger::entry::now_ms;
use ecgfed_ledger::keys::KeyPair;
use tonic::metadata::MetadataMap;

use crate::protocol::{
    FLIGHT_PATH, H_MEMBER, H_NONCE, H_SIGNATURE, H_TIMESTAMP, signing_bytes, ticket,
};

/// Signs requests for one member.
#[derive(Debug)]
pub struct RequestSigner {
    member: String,
    key: KeyPair,
    next_nonce: std::sync::atomic::AtomicU64,
}

impl RequestSigner {
    /// A signer for `member`; nonces start at the current time in nanoseconds.
    pub fn new(member: &str, key: KeyPair) -> Self {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        RequestSigner {
            member: member.to_string(),
            key,
            next_nonce: start.into(),
        }
    }

    /// The member id.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// The key pair.
    pub fn key(&self) -> &KeyPair {
        &self.key
    }

    /// The four headers for a call of `method` at the gateway of `site` with the encoded
    /// `request`, signed now.
    pub fn headers(&self, site: &str, method: &str, request: &[u8]) -> [(&'static str, String); 4] {
        let nonce = self
            .next_nonce
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.headers_at(site, method, request, now_ms(), nonce)
    }

    /// The headers with a given timestamp and nonce (tests of freshness and replay use it).
    pub fn headers_at(
        &self,
        site: &str,
        method: &str,
        request: &[u8],
        ts_ms: i64,
        nonce: u64,
    ) -> [(&'static str, String); 4] {
        let sig = self.key.sign(&signing_bytes(
            &self.member,
            site,
            method,
            request,
            ts_ms,
            nonce,
        ));
        [
            (H_MEMBER, self.member.clone()),
            (H_TIMESTAMP, ts_ms.to_string()),
            (H_NONCE, nonce.to_string()),
            (H_SIGNATURE, hex::encode(sig.to_bytes())),
        ]
    }

    /// Wraps `msg` in a request to the gateway of `site` carrying its signature headers.
    pub fn request<T: prost::Message>(
        &self,
        site: &str,
        method: &str,
        msg: T,
    ) -> tonic::Request<T> {
        let bytes = msg.encode_to_vec();
        let mut r = tonic::Request::new(msg);
        add_headers(r.metadata_mut(), &self.headers(site, method, &bytes));
        r
    }
}

/// Inserts signature headers into gRPC metadata.
pub fn add_headers(md: &mut MetadataMap, headers: &[(&'static str, String)]) {
    for (k, v) in headers {
        if let Ok(v) = v.parse() {
            md.insert(*k, v);
        }
    }
}

/// Signature headers for a plain Flight client's DoGet of `slice_id` at the gateway of `site`
/// (docs/flight.md).
pub fn do_get_headers(
    signer: &RequestSigner,
    site: &str,
    slice_id: &str,
) -> [(&'static str, String); 4] {
    use prost::Message;
    let t = Ticket::new(ticket(slice_id));
    signer.headers(site, &format!("{FLIGHT_PATH}DoGet"), &t.encode_to_vec())
}

/// Adds signature headers for the gateway of `site` to a raw request (for callers building
/// their own requests).
pub fn sign_into<T: prost::Message>(
    signer: &RequestSigner,
    site: &str,
    method: &str,
    r: &mut tonic::Request<T>,
) {
    let bytes = r.get_ref().encode_to_vec();
    add_headers(r.metadata_mut(), &signer.headers(site, method, &bytes));
}
