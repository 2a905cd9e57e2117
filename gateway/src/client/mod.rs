//! The gateway client used by the trainer and the CLI: signed calls, and Flight pulls in which
//! every row is verified against the slice root recorded on the ledger before the caller sees
//! it. A row that does not verify stops the pull with an error naming it.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightDescriptor, FlightInfo, Ticket};
use ecgfed_ledger::client::LedgerClient;
use ecgfed_ledger::log::Hash32;
use ecgfed_proto::v1::entry_body::Payload;
use ecgfed_proto::v1::gateway_service_client::GatewayServiceClient;
use ecgfed_proto::v1::training_service_client::TrainingServiceClient;
use ecgfed_proto::v1::{
    CohortSliceCommitted, EraseRequest, EraseResponse, EvaluateRequest, EvaluateResponse,
    ListDatasetsRequest, ListDatasetsResponse, OpenRoundRequest, OpenRoundResponse,
    ReserveSliceRequest, ReserveSliceResponse, RevealMaskRequest, RevealMaskResponse, Role,
    StrataDimension, StrataRequest, StrataTable, SubjectKind, TrainRoundRequest,
    TrainRoundResponse,
};
use futures::{StreamExt, TryStreamExt};
use tonic::transport::Channel;

mod signing;
mod verify;

pub use signing::{RequestSigner, add_headers, do_get_headers, sign_into};
pub use verify::{SliceVerifier, VerifiedRows};

use crate::commitment::verify_leaf;
use crate::error::{GatewayError, Result, VerificationError};
use crate::federated::{MAX_TRAINING_REQUEST_BYTES, TRAINING_PATH};
use crate::protocol::{FLIGHT_PATH, MAX_MESSAGE_BYTES, SERVICE_PATH, meta, ticket};
use crate::transport::wire::BatchDecoder;

/// A signed client of one gateway.
#[derive(Clone)]
pub struct GatewayClient {
    addr: String,
    /// The site of the gateway: requests are signed for it, slices pulled must be its.
    site: String,
    signer: Arc<RequestSigner>,
    svc: GatewayServiceClient<Channel>,
    training: TrainingServiceClient<Channel>,
    flight: FlightServiceClient<Channel>,
    channel: Channel,
}

/// What a verified pull delivered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PullReport {
    /// Slice id.
    pub slice_id: String,
    /// Rows received and verified.
    pub rows: u64,
    /// Float32 sample bytes received and verified.
    pub signal_bytes: u64,
    /// Record batches received.
    pub batches: u64,
    /// Leaves the gateway announced as erased since the reservation (each checked against a
    /// RecordsErased entry of the site on the ledger).
    pub erased: u64,
    /// The slice root from the ledger.
    pub root: [u8; 32],
}

fn transport(addr: &str, e: impl Into<crate::error::Source>) -> GatewayError {
    GatewayError::Transport {
        peer: addr.to_string(),
        source: e.into(),
    }
}

fn status(s: tonic::Status) -> GatewayError {
    GatewayError::refused(s.code(), s.message().to_string())
}

impl GatewayClient {
    /// Connects to the gateway of `site` at `addr` (`host:port` or a URL), signing as
    /// `signer` (requests are signed for `site` and verify at no other gateway).
    pub async fn connect(addr: &str, site: &str, signer: Arc<RequestSigner>) -> Result<Self> {
        Self::connect_with(addr, site, signer, None, None).await
    }

    /// Connects over TLS, trusting the PEM certificate authority `ca_pem` for the gateway's
    /// certificate (whose name must be the host of `addr`, or `domain` when given).
    pub async fn connect_tls(
        addr: &str,
        site: &str,
        signer: Arc<RequestSigner>,
        ca_pem: &[u8],
        domain: Option<&str>,
    ) -> Result<Self> {
        Self::connect_with(addr, site, signer, Some(ca_pem), domain).await
    }

    async fn connect_with(
        addr: &str,
        site: &str,
        signer: Arc<RequestSigner>,
        ca_pem: Option<&[u8]>,
        domain: Option<&str>,
    ) -> Result<Self> {
        let bare = addr.split("://").last().unwrap_or(addr);
        let url = match ca_pem {
            Some(_) => format!("https://{bare}"),
            None if addr.contains("://") => addr.to_string(),
            None => format!("http://{addr}"),
        };
        let mut ep = Channel::from_shared(url).map_err(|e| transport(addr, e))?;
        if let Some(ca) = ca_pem {
            let host =
                domain.unwrap_or_else(|| bare.rsplit_once(':').map(|(h, _)| h).unwrap_or(bare));
            ep = ep
                .tls_config(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                        .domain_name(host.to_string()),
                )
                .map_err(|e| transport(addr, e))?;
        }
        let ch = crate::transport::http2_endpoint(ep)
            .connect()
            .await
            .map_err(|e| transport(addr, e))?;
        Ok(GatewayClient {
            addr: addr.to_string(),
            site: site.to_string(),
            signer,
            svc: GatewayServiceClient::new(ch.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            training: TrainingServiceClient::new(ch.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_TRAINING_REQUEST_BYTES),
            flight: FlightServiceClient::new(ch.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            channel: ch,
        })
    }

    /// The gateway address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The site of the gateway, as the caller named it.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// Datasets served by the gateway.
    pub async fn list_datasets(&mut self) -> Result<ListDatasetsResponse> {
        let r = self.signer.request(
            &self.site,
            &format!("{SERVICE_PATH}ListDatasets"),
            ListDatasetsRequest {},
        );
        Ok(self
            .svc
            .list_datasets(r)
            .await
            .map_err(status)?
            .into_inner())
    }

    /// k-anonymous counts grouped by `by` (empty: label × sex × age band × source).
    pub async fn strata(
        &mut self,
        dataset_id: &str,
        by: &[StrataDimension],
    ) -> Result<StrataTable> {
        let q = StrataRequest {
            dataset_id: dataset_id.to_string(),
            by: by.iter().map(|d| *d as i32).collect(),
        };
        let r = self
            .signer
            .request(&self.site, &format!("{SERVICE_PATH}Strata"), q);
        Ok(self.svc.strata(r).await.map_err(status)?.into_inner())
    }

    /// TrainingService.OpenRound: the gateway's signed key-agreement key of one attempt.
    pub async fn open_round(&mut self, q: OpenRoundRequest) -> Result<OpenRoundResponse> {
        let r = self
            .signer
            .request(&self.site, &format!("{TRAINING_PATH}OpenRound"), q);
        Ok(self
            .training
            .open_round(r)
            .await
            .map_err(status)?
            .into_inner())
    }

    /// TrainingService.TrainRound: one round trained at the gateway; its masked update.
    pub async fn train_round(&mut self, q: TrainRoundRequest) -> Result<TrainRoundResponse> {
        let r = self
            .signer
            .request(&self.site, &format!("{TRAINING_PATH}TrainRound"), q);
        Ok(self
            .training
            .train_round(r)
            .await
            .map_err(status)?
            .into_inner())
    }

    /// TrainingService.RevealMask: the gateway's self-mask seed of an attempt whose updates
    /// all arrived.
    pub async fn reveal_mask(&mut self, q: RevealMaskRequest) -> Result<RevealMaskResponse> {
        let r = self
            .signer
            .request(&self.site, &format!("{TRAINING_PATH}RevealMask"), q);
        Ok(self
            .training
            .reveal_mask(r)
            .await
            .map_err(status)?
            .into_inner())
    }

    /// TrainingService.Evaluate: a model's scores on the gateway's evaluation rows.
    pub async fn evaluate(&mut self, q: EvaluateRequest) -> Result<EvaluateResponse> {
        let r = self
            .signer
            .request(&self.site, &format!("{TRAINING_PATH}Evaluate"), q);
        Ok(self
            .training
            .evaluate(r)
            .await
            .map_err(status)?
            .into_inner())
    }

    /// Reserves this site's slice of a cohort on the ledger.
    pub async fn reserve(&mut self, q: ReserveSliceRequest) -> Result<ReserveSliceResponse> {
        let r = self
            .signer
            .request(&self.site, &format!("{SERVICE_PATH}ReserveSlice"), q);
        Ok(self
            .svc
            .reserve_slice(r)
            .await
            .map_err(status)?
            .into_inner())
    }

    /// Erases a patient (the site's own hospital key only).
    pub async fn erase(&mut self, patient: &str, reason: &str) -> Result<EraseResponse> {
        let q = EraseRequest {
            patient: patient.to_string(),
            reason: reason.to_string(),
        };
        let r = self
            .signer
            .request(&self.site, &format!("{SERVICE_PATH}Erase"), q);
        Ok(self.svc.erase(r).await.map_err(status)?.into_inner())
    }

    /// Slice metadata (schema, rows) without signals.
    pub async fn flight_info(&mut self, slice_id: &str) -> Result<FlightInfo> {
        let d = FlightDescriptor::new_cmd(ticket(slice_id));
        let r = self
            .signer
            .request(&self.site, &format!("{FLIGHT_PATH}GetFlightInfo"), d);
        Ok(self
            .flight
            .get_flight_info(r)
            .await
            .map_err(status)?
            .into_inner())
    }

    /// The raw DoGet stream of a slice (no verification; [`GatewayClient::pull`] verifies).
    pub async fn do_get_raw(&mut self, slice_id: &str) -> Result<FlightRecordBatchStream> {
        let s = self.do_get_messages(slice_id).await?;
        Ok(FlightRecordBatchStream::new_from_flight_data(
            s.map_err(|e| FlightError::Tonic(Box::new(e))),
        ))
    }

    /// The signed DoGet call: the slice's Flight messages as they arrive, each in an aligned
    /// buffer of its own (`route::do_get`).
    async fn do_get_messages(
        &mut self,
        slice_id: &str,
    ) -> Result<crate::transport::route::Received> {
        let t = Ticket::new(ticket(slice_id));
        let r = self
            .signer
            .request(&self.site, &format!("{FLIGHT_PATH}DoGet"), t);
        crate::transport::route::do_get(&mut self.channel, r, MAX_MESSAGE_BYTES)
            .await
            .map_err(status)
    }

    /// Pulls a slice and verifies every row against the slice root of its
    /// CohortSliceCommitted entry on `ledger` (a verifying client). `on_batch` sees each batch
    /// only after all of its rows verified and the ledger confirmed the root they verified
    /// against; the first bad row ends the pull with an error naming it. At the end every
    /// leaf must have been served exactly once or be announced as erased with an inclusion
    /// proof and a RecordsErased entry of the site.
    pub async fn pull(
        &mut self,
        slice_id: &str,
        ledger: &mut LedgerClient,
        mut on_batch: impl FnMut(&RecordBatch),
    ) -> Result<PullReport> {
        // The slice entry is looked up on the ledger while the gateway starts sending. Rows
        // are verified from the first batch on against the root the stream announces; no
        // batch is handed over before the ledger's root is known to be that root.
        let mut lookup = Box::pin(ledger.slice(slice_id));
        let mut committed: Option<(u64, CohortSliceCommitted)> = None;
        let mut stream = {
            let call = self.do_get_messages(slice_id);
            tokio::pin!(call);
            loop {
                tokio::select! {
                    c = &mut lookup, if committed.is_none() => committed = Some(c?),
                    s = &mut call => break s?,
                }
            }
        };
        let mut decoder = BatchDecoder::new();
        // Verification runs on one thread of its own while the next batches arrive (with every
        // core busy serving and decoding, more verifier threads only spin).
        let (rtx, mut rrx) = tokio::sync::mpsc::unbounded_channel::<Result<RecordBatch>>();
        let mut rtx = Some(rtx);
        let mut verifier: Option<Verifier> = None;
        let mut confirmed = false;
        let mut held = Vec::new();
        let mut batches = 0u64;
        loop {
            if !confirmed && let (Some((_, c)), Some(v)) = (&committed, &verifier) {
                same_as_ledger(c, &v.root, v.size, slice_id)?;
                confirmed = true;
                for b in held.drain(..) {
                    batches += 1;
                    on_batch(&b);
                }
            }
            tokio::select! {
                c = &mut lookup, if committed.is_none() => committed = Some(c?),
                r = rrx.recv() => match r {
                    Some(Ok(b)) if confirmed => {
                        batches += 1;
                        on_batch(&b);
                    }
                    Some(Ok(b)) => held.push(b),
                    Some(Err(e)) => return Err(e),
                    None => break,
                },
                m = stream.next(), if rtx.is_some() || verifier.as_ref().is_some_and(|v| v.tx.is_some()) => {
                    let Some(m) = m else {
                        // End of stream: the verifier finishes what it has.
                        rtx = None;
                        if let Some(v) = &mut verifier {
                            v.tx = None;
                        }
                        continue;
                    };
                    let m = m.map_err(status)?;
                    let Some(b) = decoder.decode(&m).map_err(|e| transport(&self.addr, e))? else {
                        continue;
                    };
                    if verifier.is_none() {
                        let (root, size) = announced(b.schema().metadata(), slice_id)?;
                        let Some(out) = rtx.take() else { continue };
                        verifier = Some(Verifier::spawn(root, size, out));
                    }
                    if let Some(tx) = verifier.as_ref().and_then(|v| v.tx.as_ref())
                        && tx.send(b).await.is_err()
                    {
                        // The verifier stopped on an error, which rrx delivers.
                        if let Some(v) = &mut verifier {
                            v.tx = None;
                        }
                    }
                }
            }
        }
        let committed = match committed {
            Some(c) => c,
            None => (&mut lookup).await?,
        };
        drop(lookup);
        let ended = Ended {
            schema: decoder.schema().cloned(),
            verifier,
            held: (!confirmed).then_some(held),
            batches,
        };
        self.conclude(ledger, slice_id, committed, ended, on_batch)
            .await
    }

    /// The end of a pull: the slice's ledger entry (`committed`, at its index) must be this
    /// gateway's site's, its root the one the rows verified against (checked now if the
    /// stream ended before it was, then the held batches are handed over), and every leaf
    /// served or announced erased.
    async fn conclude(
        &self,
        ledger: &mut LedgerClient,
        slice_id: &str,
        (entry_index, committed): (u64, CohortSliceCommitted),
        ended: Ended,
        mut on_batch: impl FnMut(&RecordBatch),
    ) -> Result<PullReport> {
        let Ended {
            schema,
            verifier,
            held,
            mut batches,
        } = ended;
        if committed.site != self.site {
            return Err(VerificationError::OtherSite {
                slice: slice_id.into(),
                ledger_site: committed.site,
                gateway_site: self.site.clone(),
            }
            .into());
        }
        let root: [u8; 32] = committed.slice_root.as_slice().try_into().map_err(|_| {
            VerificationError::LedgerHash {
                index: entry_index,
                what: "slice_root",
                len: committed.slice_root.len(),
            }
        })?;
        let size = committed.row_count;
        if let Some(held) = held {
            match (&verifier, &schema) {
                (Some(v), _) => {
                    same_as_ledger(&committed, &v.root, v.size, slice_id)?;
                    for b in held {
                        batches += 1;
                        on_batch(&b);
                    }
                }
                // No batch arrived: the announcement is checked against the ledger all the same.
                (None, Some(s)) => {
                    let (r, n) = announced(s.metadata(), slice_id)?;
                    same_as_ledger(&committed, &r, n, slice_id)?;
                }
                (None, None) if size == 0 => {}
                (None, None) => {
                    return Err(VerificationError::NoSchema {
                        slice: slice_id.into(),
                    }
                    .into());
                }
            }
        }
        let (seen, total) = match verifier {
            Some(v) => v.finish().await?,
            None => (vec![false; size as usize], Default::default()),
        };
        let erased = account_for_every_leaf(
            ledger,
            slice_id,
            &committed,
            &root,
            schema.as_ref().map(|s| s.metadata()),
            seen,
        )
        .await?;
        Ok(PullReport {
            slice_id: slice_id.to_string(),
            root,
            rows: total.rows,
            signal_bytes: total.signal_bytes,
            batches,
            erased,
        })
    }
}

/// A pull's stream after its end: its schema, the verifier, the batches held back while the
/// ledger's root was not yet known to be the one they verified against (`None` once it
/// was), and the batches handed over.
struct Ended {
    schema: Option<arrow::datatypes::SchemaRef>,
    verifier: Option<Verifier>,
    held: Option<Vec<RecordBatch>>,
    batches: u64,
}

/// The pull's verifier thread: batches in, verified batches (or the first error) out.
struct Verifier {
    root: [u8; 32],
    size: u64,
    tx: Option<tokio::sync::mpsc::Sender<RecordBatch>>,
    done: tokio::task::JoinHandle<(Vec<bool>, VerifiedRows)>,
}

impl Verifier {
    fn spawn(
        root: [u8; 32],
        size: u64,
        out: tokio::sync::mpsc::UnboundedSender<Result<RecordBatch>>,
    ) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<RecordBatch>(4);
        let done = tokio::task::spawn_blocking(move || {
            let mut check = SliceVerifier::new(root, size);
            let mut total = VerifiedRows::default();
            while let Some(b) = rx.blocking_recv() {
                let r = check.verify_batch(&b);
                match r {
                    Ok(v) => {
                        total.rows += v.rows;
                        total.signal_bytes += v.signal_bytes;
                        if out.send(Ok(b)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = out.send(Err(e));
                        break;
                    }
                }
            }
            (check.into_seen(), total)
        });
        Verifier {
            root,
            size,
            tx: Some(tx),
            done,
        }
    }

    async fn finish(self) -> Result<(Vec<bool>, VerifiedRows)> {
        drop(self.tx);
        self.done
            .await
            .map_err(|e| VerificationError::Stopped(e).into())
    }
}

/// Checks that the root and size a stream announced are those of the slice's entry.
fn same_as_ledger(
    c: &CohortSliceCommitted,
    root: &[u8; 32],
    size: u64,
    slice_id: &str,
) -> Result<()> {
    if c.slice_root[..] != root[..] || c.row_count != size {
        return Err(VerificationError::NotTheLedgers {
            slice: slice_id.into(),
            announced_root: Hash32(*root),
            announced_size: size,
            ledger_root: Hash32(c.slice_root.as_slice().try_into().unwrap_or_default()),
            ledger_size: c.row_count,
        }
        .into());
    }
    Ok(())
}

/// The slice root and size a stream announces in its schema metadata, for `slice_id`.
fn announced(m: &arrow::datatypes::Metadata, slice_id: &str) -> Result<([u8; 32], u64)> {
    let get = |k: &str| m.get(k).map(String::as_str).unwrap_or("");
    let bad = |key: &'static str| VerificationError::Announcement {
        slice: slice_id.into(),
        key,
        value: get(key).into(),
    };
    if get(meta::SLICE_ID) != slice_id {
        return Err(bad(meta::SLICE_ID).into());
    }
    let root =
        crate::commitment::hash32(get(meta::SLICE_ROOT)).ok_or_else(|| bad(meta::SLICE_ROOT))?;
    let size = get(meta::SLICE_SIZE)
        .parse()
        .map_err(|_| bad(meta::SLICE_SIZE))?;
    Ok((root, size))
}

/// An erased leaf as announced: index, leaf commitment, inclusion proof, and the leaf's salt
/// (`None` for slices reserved before leaves were per slice).
type ErasedLeaf = (u64, [u8; 32], Vec<[u8; 32]>, Option<[u8; 32]>);

fn parse_erased(m: &arrow::datatypes::Metadata) -> Result<Vec<ErasedLeaf>> {
    let raw = m.get(meta::ERASED).map(String::as_str).unwrap_or("[]");
    let v: Vec<(u64, String, Vec<String>, String)> =
        serde_json::from_str(raw).map_err(|e| VerificationError::ErasedList {
            key: meta::ERASED,
            reason: e.to_string(),
        })?;
    let h = |s: &str| -> Result<[u8; 32]> {
        crate::commitment::hash32(s).ok_or_else(|| {
            VerificationError::ErasedList {
                key: meta::ERASED,
                reason: format!("bad hash {s:?}"),
            }
            .into()
        })
    };
    v.into_iter()
        .map(|(i, c, p, salt)| {
            let salt = if salt.is_empty() {
                None
            } else {
                Some(h(&salt)?)
            };
            Ok((
                i,
                h(&c)?,
                p.iter().map(|x| h(x)).collect::<Result<_>>()?,
                salt,
            ))
        })
        .collect()
}

/// Checks that every leaf of the slice committed on the ledger (of root `root`) was either
/// served (`seen`) or announced erased in the stream's metadata with a valid inclusion proof
/// and a `RecordsErased` entry of the site's hospital naming it. Returns the erased count.
async fn account_for_every_leaf(
    ledger: &mut LedgerClient,
    slice_id: &str,
    committed: &CohortSliceCommitted,
    root: &[u8; 32],
    metadata: Option<&arrow::datatypes::Metadata>,
    mut seen: Vec<bool>,
) -> Result<u64> {
    let size = committed.row_count;
    let erased = match metadata {
        Some(m) => parse_erased(m)?,
        None => vec![],
    };
    for (index, c, proof, salt) in &erased {
        if seen.get(*index as usize).copied().unwrap_or(true) {
            return Err(VerificationError::ErasedButServed {
                slice: slice_id.into(),
                leaf: *index,
            }
            .into());
        }
        verify_leaf(*index, size, c, proof, root).map_err(|source| {
            VerificationError::ErasedNotInSlice {
                slice: slice_id.into(),
                leaf: *index,
                source,
            }
        })?;
        check_erased_on_ledger(ledger, &committed.site, c, salt.as_ref()).await?;
        seen[*index as usize] = true;
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(VerificationError::Incomplete {
            slice: slice_id.into(),
            leaf: missing as u64,
            size,
        }
        .into());
    }
    Ok(erased.len() as u64)
}

/// Checks that a `RecordsErased` entry of the site's hospital erased leaf `c`: it lists the
/// leaf's token (made with its `salt`), or, for a slice reserved before leaves were per slice
/// (no salt), the commitment itself.
async fn check_erased_on_ledger(
    ledger: &mut LedgerClient,
    site: &str,
    c: &[u8; 32],
    salt: Option<&[u8; 32]>,
) -> Result<()> {
    let name = match salt {
        Some(s) => ecgfed_ledger::erasure::leaf_token(s, c),
        None => *c,
    };
    for e in ledger
        .entries_naming(SubjectKind::Commitment, &hex::encode(name), 0, 0)
        .await?
    {
        if let Some(Payload::RecordsErased(r)) = &e.entry.body.payload
            && r.site == site
            && e.signer.role == Role::Hospital
            && e.signer.site == site
        {
            let listed = if salt.is_some() {
                &r.erased_leaves
            } else {
                &r.commitments
            };
            if listed.iter().any(|x| x[..] == name[..]) {
                return Ok(());
            }
        }
    }
    Err(VerificationError::ErasureNotOnLedger {
        commitment: Hash32(*c),
        site: site.into(),
    }
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(slice: &str, root: &str, size: &str) -> arrow::datatypes::Metadata {
        [
            (meta::SLICE_ID, slice),
            (meta::SLICE_ROOT, root),
            (meta::SLICE_SIZE, size),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn the_announced_root_must_be_the_ledger_root() {
        let root = [7u8; 32];
        let m = metadata("c/site", &hex::encode(root), "12");
        assert_eq!(announced(&m, "c/site").unwrap(), (root, 12));
        let entry = CohortSliceCommitted {
            slice_id: "c/site".into(),
            slice_root: root.to_vec(),
            row_count: 12,
            ..Default::default()
        };
        same_as_ledger(&entry, &root, 12, "c/site").unwrap();
        let e = same_as_ledger(&entry, &[8u8; 32], 12, "c/site").unwrap_err();
        assert!(e.to_string().contains(&hex::encode([8u8; 32])), "{e}");
        assert!(e.to_string().contains(&hex::encode(root)), "{e}");
        // Callers match on the evidence, not on the message.
        let GatewayError::Verification(v) = e else {
            panic!("not a verification error: {e}")
        };
        let VerificationError::NotTheLedgers {
            announced_root,
            ledger_root,
            ..
        } = *v
        else {
            panic!("not a root mismatch: {v}")
        };
        assert_eq!((announced_root.0, ledger_root.0), ([8u8; 32], root));
        assert!(same_as_ledger(&entry, &root, 13, "c/site").is_err());
    }

    #[test]
    fn a_stream_for_another_slice_or_without_a_root_is_refused() {
        let root = hex::encode([7u8; 32]);
        for (m, what) in [
            (metadata("other/site", &root, "12"), meta::SLICE_ID),
            (metadata("c/site", "beef", "12"), meta::SLICE_ROOT),
            (metadata("c/site", &root, "twelve"), meta::SLICE_SIZE),
        ] {
            let e = announced(&m, "c/site").unwrap_err();
            assert!(e.to_string().contains(what), "{e}");
            assert!(
                matches!(&e, GatewayError::Verification(v)
                    if matches!(**v, VerificationError::Announcement { key, .. } if key == what)),
                "{e:?}"
            );
        }
    }
}
