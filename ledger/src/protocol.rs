//! What client and server of the LedgerService agree on, outside the protobuf schema: message
//! size limits and the submission window (docs/ledger.md). A leaf: it imports nothing.

/// Largest gRPC message accepted or sent (entries are at most 1 MiB; answers are small).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// Submissions in flight per SubmitStream before the server stops reading it.
pub const STREAM_WINDOW: usize = 4096;
