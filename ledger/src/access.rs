//! Member call tokens (docs/ledger.md "Connections"): a call that writes (Submit,
//! SubmitStream) carries the calling member's id and a BLS signature over the ledger's origin,
//! that id and a time, so that the ledger takes writes only from known, unrevoked members and
//! bounds what each has in flight; readers may send one too, so that their streams count
//! against their member rather than their network address.

use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ecgfed_proto::v1::ledger_service_client::LedgerServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::keys::{KeyPair, PublicKey, Signature};
use crate::protocol::MAX_MESSAGE_BYTES;

/// Tag that starts a token's signed message.
pub const CALL_TAG: &[u8] = b"ecgfed/v1/ledger-call\n";
/// gRPC metadata key of the calling member's id.
pub const MEMBER_HEADER: &str = "x-ecgfed-member";
/// gRPC metadata key of the token: `<time ms, decimal>.<base64 signature>`.
pub const TOKEN_HEADER: &str = "x-ecgfed-call-token";
/// How far a token's time may be from the ledger's clock, ms.
pub const TOKEN_LIFETIME_MS: i64 = 10 * 60 * 1000;
/// How old a client lets its token get before it signs a new one, ms.
pub const TOKEN_REFRESH_MS: i64 = 5 * 60 * 1000;

/// The message a token signs: `CALL_TAG ‖ origin ‖ 0x0A ‖ member ‖ 0x0A ‖ time` (time in ms
/// since the Unix epoch, decimal ASCII).
pub fn token_message(origin: &str, member: &str, time_ms: i64) -> Vec<u8> {
    let mut m = Vec::with_capacity(CALL_TAG.len() + origin.len() + member.len() + 24);
    m.extend_from_slice(CALL_TAG);
    m.extend_from_slice(origin.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(member.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(time_ms.to_string().as_bytes());
    m
}

/// Why a token could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The call carries no token.
    #[error(
        "the call carries no member call token ({MEMBER_HEADER}, {TOKEN_HEADER}): writes are taken from members only (docs/ledger.md, \"Connections\")"
    )]
    Missing,
    /// The token is not `<time>.<base64 signature>` of a valid signature.
    #[error("the member call token is malformed: {0}")]
    Malformed(String),
}

/// A call token as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct CallToken {
    /// The calling member.
    pub member: String,
    /// When it was signed, ms since the Unix epoch.
    pub time_ms: i64,
    /// The member's signature over [`token_message`].
    pub signature: Signature,
}

impl CallToken {
    /// A token of `member` signed with `key` for the ledger `origin` at `time_ms`.
    pub fn mint(origin: &str, member: &str, key: &KeyPair, time_ms: i64) -> Self {
        CallToken {
            member: member.to_string(),
            time_ms,
            signature: key.sign(&token_message(origin, member, time_ms)),
        }
    }

    /// The value of the [`TOKEN_HEADER`] metadata.
    pub fn header_value(&self) -> String {
        format!("{}.{}", self.time_ms, B64.encode(self.signature.to_bytes()))
    }

    /// Reads a token from its two metadata values.
    pub fn parse(member: Option<&str>, token: Option<&str>) -> Result<Self, TokenError> {
        let (Some(member), Some(token)) = (member, token) else {
            return Err(TokenError::Missing);
        };
        let (time, sig) = token
            .split_once('.')
            .ok_or_else(|| TokenError::Malformed("expected <time>.<signature>".into()))?;
        let time_ms = time
            .parse()
            .map_err(|_| TokenError::Malformed(format!("time {time:?}")))?;
        let sig = B64
            .decode(sig)
            .map_err(|e| TokenError::Malformed(format!("signature: {e}")))?;
        let signature = Signature::from_bytes(&sig)
            .map_err(|e| TokenError::Malformed(format!("signature: {e}")))?;
        Ok(CallToken {
            member: member.to_string(),
            time_ms,
            signature,
        })
    }

    /// Whether the signature is `key`'s over this token's message for `origin`.
    pub fn verify(&self, origin: &str, key: &PublicKey) -> bool {
        key.verify(
            &token_message(origin, &self.member, self.time_ms),
            &self.signature,
        )
    }
}

/// A member's identity for ledger calls: signs a token and signs again once it is
/// [`TOKEN_REFRESH_MS`] old.
pub struct CallIdentity {
    origin: String,
    member: String,
    key: KeyPair,
    current: Mutex<Option<CallToken>>,
}

impl std::fmt::Debug for CallIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallIdentity")
            .field("member", &self.member)
            .finish_non_exhaustive()
    }
}

impl CallIdentity {
    /// The identity of `member` with `key` at the ledger `origin`.
    pub fn new(origin: &str, member: &str, key: KeyPair) -> Self {
        CallIdentity {
            origin: origin.to_string(),
            member: member.to_string(),
            key,
            current: Mutex::new(None),
        }
    }

    /// The member id.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// A token fresh enough to send now.
    pub fn token(&self) -> CallToken {
        let now = crate::entry::now_ms();
        let mut g = self.current.lock().unwrap_or_else(|e| e.into_inner());
        match &*g {
            Some(t) if (now - t.time_ms).abs() < TOKEN_REFRESH_MS => t.clone(),
            _ => {
                let t = CallToken::mint(&self.origin, &self.member, &self.key, now);
                *g = Some(t.clone());
                t
            }
        }
    }

    /// Adds the member id and a fresh token to a request's metadata.
    pub fn attach<T>(&self, req: &mut tonic::Request<T>) {
        let t = self.token();
        let md = req.metadata_mut();
        if let (Ok(m), Ok(v)) = (
            self.member.parse::<tonic::metadata::MetadataValue<_>>(),
            t.header_value()
                .parse::<tonic::metadata::MetadataValue<_>>(),
        ) {
            md.insert(MEMBER_HEADER, m);
            md.insert(TOKEN_HEADER, v);
        }
    }

    /// `msg` as a request carrying a fresh token.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        self.attach(&mut r);
        r
    }
}

/// The interceptor that adds a member's call token to every call of a raw service client
/// (nothing when it has no identity).
#[derive(Debug, Clone, Default)]
pub struct Tokens(pub Option<Arc<CallIdentity>>);

impl tonic::service::Interceptor for Tokens {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(id) = &self.0 {
            id.attach(&mut r);
        }
        Ok(r)
    }
}

/// A raw ledger service client whose calls carry a member's call token.
pub type Client = LedgerServiceClient<InterceptedService<Channel, Tokens>>;

/// [`Client`] over `channel` with the ledger's message limits, sending `identity`'s tokens.
pub fn client(channel: Channel, identity: Option<Arc<CallIdentity>>) -> Client {
    LedgerServiceClient::with_interceptor(channel, Tokens(identity))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Connects a [`Client`] to `url` (`http://host:port`) as `identity`.
pub async fn connect(
    url: String,
    identity: Option<Arc<CallIdentity>>,
) -> Result<Client, Box<dyn std::error::Error + Send + Sync>> {
    let ch = Channel::from_shared(url)?
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok(client(ch, identity))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_sign_the_documented_message_and_round_trip() {
        assert_eq!(
            token_message("ecgfed.test/x", "hosp-a", 1_700_000_000_000),
            b"ecgfed/v1/ledger-call\necgfed.test/x\nhosp-a\n1700000000000".to_vec()
        );
        let k = KeyPair::generate();
        let t = CallToken::mint("o", "hosp-a", &k, 42);
        let back = CallToken::parse(Some("hosp-a"), Some(&t.header_value())).unwrap();
        assert_eq!(back, t);
        assert!(back.verify("o", &k.public()));
        assert!(!back.verify("other-origin", &k.public()));
        let other = CallToken::parse(Some("hosp-b"), Some(&t.header_value())).unwrap();
        assert!(!other.verify("o", &k.public()), "a token names its member");
        assert_eq!(
            CallToken::parse(None, Some("1.x")),
            Err(TokenError::Missing)
        );
        assert!(matches!(
            CallToken::parse(Some("m"), Some("nodot")),
            Err(TokenError::Malformed(_))
        ));
    }
}
