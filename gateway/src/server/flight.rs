//! The Arrow Flight data plane on the gateway's port: `GetFlightInfo` (slice metadata, for
//! the granted scientist and regulators) and `DoGet(ticket)` (the slice's rows, for the
//! granted scientist only). A completed DoGet is recorded as `DataServed` on the ledger before
//! the stream ends. The gateway's server answers DoGet through [`DoGetRoute`], which sends the
//! Arrow buffers of each batch without copying them (docs/flight.md "Message layout").

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
#[cfg(feature = "fault-injection")]
use arrow::array::{ArrayRef, AsArray, Float32Array, ListArray};
#[cfg(feature = "fault-injection")]
use arrow::datatypes::Float32Type;
use arrow::datatypes::SchemaRef;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use tonic::{Request, Status};

use crate::error::GatewayError;
use crate::protocol::{
    FLIGHT_PATH, MAX_FLIGHT_DATA_BYTES, MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES, meta, parse_ticket,
    served_schema, ticket,
};
use ecgfed_ledger::log::Hash32;

use crate::server::catalog::Catalog;
use crate::server::gateway::{Gateway, ServePlan, ServedSlice};
use crate::server::rows::{ErasedLeaf, SliceRecord, serve_batch};
use crate::server::served::SliceKeys;
use crate::server::service::caller;
use crate::transport::Limits;
use crate::transport::route::{DoGetRoute, FlightCalls, MessageStream, WireDoGet};
use crate::transport::wire::{GRPC_PREFIX, MessageEncoder, WireMessage};

/// The message limits of the gateway's Flight service.
pub const FLIGHT_LIMITS: Limits = Limits {
    max_request: MAX_REQUEST_BYTES,
    max_message: MAX_MESSAGE_BYTES,
};

/// Logs a DoGet stream dropped before its end that no error ended: the client left, and no
/// DataServed is recorded.
struct Unfinished {
    slice_id: String,
    done: Arc<AtomicBool>,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.done.load(Ordering::Relaxed) {
            tracing::warn!(slice = %self.slice_id, "client left before the end of the slice");
        }
    }
}

/// The Flight service of a gateway.
#[derive(Clone)]
pub(super) struct GatewayFlight {
    gw: Arc<Gateway>,
}

impl GatewayFlight {
    /// A Flight service over `gw`.
    pub(super) fn new(gw: Arc<Gateway>) -> Self {
        GatewayFlight { gw }
    }

    /// The tonic service with limits sized for ECG batches, DoGet answered by [`DoGetRoute`]
    /// (Arrow buffers sent without a copy).
    pub(super) fn into_service(self) -> DoGetRoute<GatewayFlight> {
        DoGetRoute::new(Arc::new(self), FLIGHT_LIMITS)
    }
}

fn stream_metadata(s: &SliceRecord, site: &str, erased: &[ErasedLeaf]) -> HashMap<String, String> {
    // Proofs of erased leaves only; the tree is built when there are any.
    let tree = (!erased.is_empty()).then(|| s.tree());
    let erased: Vec<(u64, Hash32, Vec<String>, String)> = erased
        .iter()
        .map(|e| {
            (
                e.index,
                e.commitment,
                tree.as_ref()
                    .map(|t| t.proof(e.index).iter().map(hex::encode).collect())
                    .unwrap_or_default(),
                e.salt.map(|x| x.to_hex()).unwrap_or_default(),
            )
        })
        .collect();
    HashMap::from([
        (meta::SLICE_ID.to_string(), s.slice_id.clone()),
        (meta::COHORT_ID.to_string(), s.cohort_id.clone()),
        (meta::SITE.to_string(), site.to_string()),
        (meta::SLICE_ROOT.to_string(), s.root.to_hex()),
        (meta::SLICE_SIZE.to_string(), s.segments.len().to_string()),
        (meta::LEDGER_INDEX.to_string(), s.ledger_index.to_string()),
        (
            meta::ERASED.to_string(),
            serde_json::to_string(&erased).unwrap_or_else(|_| "[]".into()),
        ),
    ])
}

/// Adds 0.001 to the first sample of the first row (fault-injection hook).
#[cfg(feature = "fault-injection")]
fn alter_first_sample(b: &RecordBatch) -> Result<RecordBatch, FlightError> {
    let idx = b.schema().index_of("signal")?;
    let list = b.column(idx).as_list::<i32>();
    let mut values: Vec<f32> = list
        .values()
        .as_primitive::<Float32Type>()
        .values()
        .to_vec();
    if let Some(v) = values.get_mut(list.value_offsets()[0] as usize) {
        *v += 0.001;
    }
    let field = match b.schema().field(idx).data_type() {
        arrow::datatypes::DataType::List(f) => f.clone(),
        _ => return Err(FlightError::ProtocolError("signal is not a list".into())),
    };
    let new_list = ListArray::try_new(
        field,
        list.offsets().clone(),
        Arc::new(Float32Array::from(values)),
        None,
    )?;
    let mut cols: Vec<ArrayRef> = b.columns().to_vec();
    cols[idx] = Arc::new(new_list);
    Ok(RecordBatch::try_new(b.schema(), cols)?)
}

/// Where a DoGet's rows come from.
enum Source {
    /// The batches of an earlier serve of the slice.
    Cached(Arc<ServedSlice>),
    /// The store, through this catalog: sorted row positions per store file.
    Store(Arc<Catalog>, HashMap<usize, Vec<usize>>),
}

/// What the serving thread hands to the response stream.
enum Produced {
    /// A served batch.
    Batch(RecordBatch),
    /// Every batch was produced.
    Done,
    /// An erasure began: the serving thread stopped.
    Fenced,
    /// Serving failed.
    Failed(FlightError),
}

type Batches = Box<dyn Iterator<Item = Result<RecordBatch, FlightError>> + Send>;

/// The served batches of a slice read from the store, file by file and lazily (one row group
/// at a time): each store row of the slice with its commitment, leaf index and inclusion proof.
fn store_batches(
    gw: &Gateway,
    slice: &SliceRecord,
    catalog: &Arc<Catalog>,
    per_file: HashMap<usize, Vec<usize>>,
    schema: &SchemaRef,
    keys: SliceKeys,
) -> impl Iterator<Item = Result<RecordBatch, FlightError>> + Send + 'static {
    let tree = slice.tree();
    let leaf_of: HashMap<String, u64> = slice
        .segments
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), i as u64))
        .collect();
    let ctx = Arc::new((Arc::clone(catalog), tree, leaf_of, schema.clone(), keys));
    let batch_rows = gw.cfg.policy.batch_rows;
    let mut files: Vec<_> = per_file.into_iter().collect();
    files.sort_by_key(|(f, _)| *f);
    let external = |e: GatewayError| FlightError::ExternalError(Box::new(e));
    files
        .into_iter()
        .flat_map(move |(file, positions)| -> Batches {
            let ctx = Arc::clone(&ctx);
            // One row group of the file at a time: a DoGet holds a few batches, whatever the
            // slice's size.
            match ecgfed_datasets::store::read_file_batches(
                &ctx.0.dir,
                &ctx.0.files[file],
                None,
                Some(&positions),
                batch_rows,
            ) {
                Err(e) => Box::new(std::iter::once(Err(external(e.into())))),
                Ok(read) => Box::new(read.map(move |b| {
                    let b = b.map_err(|e| external(e.into()))?;
                    let (catalog, tree, leaf_of, schema, keys) = &*ctx;
                    let proof_of = |id: &str| leaf_of.get(id).map(|&i| (i, tree.proof(i)));
                    serve_batch(&b, catalog, schema, &proof_of, keys).map_err(external)
                })),
            }
        })
}

/// Every served batch of slice `s`, read from the store as a DoGet would send them, for the
/// gateway's own use (federated rounds train on them here), and the number of leaves erased
/// since the reservation. Refused while an erasure runs or when one began during the read.
pub(super) fn slice_batches(
    gw: &Gateway,
    s: &SliceRecord,
) -> Result<(Vec<RecordBatch>, u64), Status> {
    let fence = gw.fence();
    let busy = || Status::unavailable("an erasure is running at this gateway; retry in a moment");
    if !fence.is_multiple_of(2) {
        return Err(busy());
    }
    let keys = gw.slice_keys(s)?;
    let ServePlan {
        catalog,
        per_file,
        erased,
    } = gw.plan(s, &keys);
    let schema = served_schema(HashMap::new());
    let batches = store_batches(gw, s, &catalog, per_file, &schema, keys)
        .collect::<Result<Vec<_>, FlightError>>()
        .map_err(|e| Status::internal(format!("reading slice {}: {e}", s.slice_id)))?;
    if !gw.fence_ok(fence) {
        return Err(busy());
    }
    Ok((batches, erased.len() as u64))
}

/// Why a transfer stops when an erasure begins while it runs.
const FENCED: &str = "an erasure began at the gateway during this transfer, which was stopped before its next batch; pull the slice again";

/// Sends `batches` to the response stream, then [`Produced::Done`]; with `alter`, the first
/// batch is altered (fault injection, `fault-injection` builds only). `fenced` is asked before
/// each batch: once it is true the stream fails. True when every batch and `Done` were handed
/// over.
fn produce(
    tx: &tokio::sync::mpsc::Sender<Produced>,
    batches: Batches,
    alter: bool,
    fenced: &dyn Fn() -> bool,
) -> bool {
    #[cfg(feature = "fault-injection")]
    let mut first = alter;
    #[cfg(not(feature = "fault-injection"))]
    let _ = alter;
    for b in batches {
        if fenced() {
            let _ = tx.blocking_send(Produced::Fenced);
            return false;
        }
        #[cfg(feature = "fault-injection")]
        let b = match b {
            Ok(b) if std::mem::take(&mut first) => alter_first_sample(&b),
            other => other,
        };
        let out = match b {
            Ok(b) => Produced::Batch(b),
            Err(e) => {
                let _ = tx.blocking_send(Produced::Failed(e));
                return false;
            }
        };
        if tx.blocking_send(out).is_err() {
            return false;
        }
    }
    tx.blocking_send(Produced::Done).is_ok()
}

/// Gathers the batches of a DoGet to keep for later pulls, within the gateway's cache budget:
/// each batch's bytes are reserved before it is held; the first that does not fit releases
/// everything and ends the gathering (that slice is read from the store next time).
struct Gather {
    gw: Arc<Gateway>,
    batches: Vec<RecordBatch>,
    bytes: u64,
    full: bool,
    /// Rows of the slice to serve (to foresee, from the first batch, a slice that cannot fit).
    rows: u64,
}

impl Gather {
    fn push(&mut self, b: &RecordBatch) {
        if self.full {
            return;
        }
        let n = b.get_array_memory_size() as u64;
        if self.batches.is_empty() && b.num_rows() > 0 {
            let foreseen = n / b.num_rows() as u64 * self.rows;
            if foreseen > self.gw.cfg.policy.cache_mb.saturating_mul(1 << 20) {
                self.full = true;
                return;
            }
        }
        if self.gw.reserve_cache(n) {
            self.bytes += n;
            self.batches.push(b.clone());
        } else {
            self.full = true;
            self.gw.release_cache(std::mem::take(&mut self.bytes));
            self.batches = Vec::new();
        }
    }

    /// The gathered batches and their reserved bytes, unless the budget ran out.
    fn take(mut self) -> Option<(Vec<RecordBatch>, u64)> {
        if self.full {
            return None;
        }
        let bytes = std::mem::take(&mut self.bytes);
        Some((std::mem::take(&mut self.batches), bytes))
    }
}

impl Drop for Gather {
    fn drop(&mut self) {
        self.gw.release_cache(self.bytes);
    }
}

/// The DoGet response stream: the schema message, the messages of the serving thread's
/// batches (encoded here, as the transport takes them), then the DataServed record. Recording
/// starts as soon as the transport takes the last message (every message of the slice was
/// released) and runs while that message is sent; the stream ends only once the ledger has
/// acknowledged the entry. An error, or a client that leaves before the last message is
/// taken, ends it with no DataServed.
struct Respond {
    rx: tokio::sync::mpsc::Receiver<Produced>,
    /// Taken from the channel while looking for `Done`.
    held: Option<Produced>,
    encoder: MessageEncoder,
    schema: Option<SchemaRef>,
    /// Messages of the current batch not yet taken.
    queue: std::collections::VecDeque<WireMessage>,
    /// The current batch is the slice's last.
    last: bool,
    rows: u64,
    bytes: u64,
    recording: Option<tokio::task::JoinHandle<crate::error::Result<u64>>>,
    finished: bool,
    left: Unfinished,
    gw: Arc<Gateway>,
    slice: Arc<SliceRecord>,
    /// The erasure fence noted at the start ([`Gateway::fence_ok`]).
    fence: u64,
    /// This transfer's turn ([`Gateway::transfer_turn`]), given back when the stream ends.
    _turn: tokio::sync::OwnedSemaphorePermit,
}

impl Respond {
    fn record(&mut self) {
        if self.recording.is_some() {
            return;
        }
        self.left.done.store(true, Ordering::Relaxed);
        let (gw, s, rows, bytes) = (
            Arc::clone(&self.gw),
            Arc::clone(&self.slice),
            self.rows,
            self.bytes,
        );
        self.recording = Some(tokio::spawn(async move {
            let index = gw.served(&s, rows, bytes).await?;
            tracing::info!(slice = %s.slice_id, rows, bytes, index, "slice served");
            Ok(index)
        }));
    }

    /// Ends the stream because an erasure began: `ABORTED`, no DataServed.
    fn fenced(mut self) -> Option<(Result<WireMessage, Status>, Self)> {
        self.finished = true;
        self.left.done.store(true, Ordering::Relaxed);
        let m = format!("slice {}: {FENCED}", self.slice.slice_id);
        Some((Err(Status::aborted(m)), self))
    }

    fn fail(mut self, m: String) -> Option<(Result<WireMessage, Status>, Self)> {
        self.finished = true;
        self.left.done.store(true, Ordering::Relaxed);
        let m = format!("serving slice {}: {m}", self.slice.slice_id);
        Some((Err(Status::internal(m)), self))
    }

    async fn next(mut self) -> Option<(Result<WireMessage, Status>, Self)> {
        if let Some(schema) = self.schema.take() {
            return Some((Ok(self.encoder.schema(&schema)), self));
        }
        loop {
            if self.finished {
                return None;
            }
            if !self.queue.is_empty() && !self.gw.fence_ok(self.fence) {
                return self.fenced();
            }
            if let Some(fd) = self.queue.pop_front() {
                if self.last && self.queue.is_empty() {
                    self.record();
                }
                return Some((Ok(fd), self));
            }
            let next = match self.held.take() {
                Some(p) => Some(p),
                None => self.rx.recv().await,
            };
            match next {
                Some(Produced::Batch(b)) => {
                    let messages = match self.encoder.batch(&b) {
                        Ok(m) => m,
                        Err(e) => return self.fail(e.to_string()),
                    };
                    self.rows += b.num_rows() as u64;
                    // tonic's limit on the protobuf message, gRPC prefix not counted.
                    let too_big = |m: &&WireMessage| m.len() - GRPC_PREFIX > MAX_MESSAGE_BYTES;
                    if let Some(m) = messages.iter().find(too_big) {
                        let n = m.len() - GRPC_PREFIX;
                        return self.fail(format!(
                            "a message of {n} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit"
                        ));
                    }
                    self.bytes += messages.iter().map(|m| m.arrow_bytes() as u64).sum::<u64>();
                    self.queue.extend(messages);
                    match self.rx.try_recv() {
                        // A last batch without rows has no message to wait for.
                        Ok(Produced::Done) if self.queue.is_empty() => self.record(),
                        Ok(Produced::Done) => self.last = true,
                        Ok(other) => self.held = Some(other),
                        Err(_) => {}
                    }
                }
                Some(Produced::Done) => self.record(),
                Some(Produced::Failed(e)) => return self.fail(e.to_string()),
                Some(Produced::Fenced) => return self.fenced(),
                None => {
                    self.finished = true;
                    let id = &self.slice.slice_id;
                    let failed = match self.recording.take() {
                        None => format!("serving slice {id} stopped before its end"),
                        Some(h) => match h.await {
                            Ok(Ok(_)) => return None,
                            Ok(Err(e)) => format!(
                                "slice {id} was sent but DataServed could not be recorded: {e}"
                            ),
                            Err(e) => format!("recording DataServed of slice {id}: {e}"),
                        },
                    };
                    return Some((Err(Status::unavailable(failed)), self));
                }
            }
        }
    }
}

#[tonic::async_trait]
impl WireDoGet for GatewayFlight {
    /// DoGet: the granted requester's slice, from memory when served before, otherwise read
    /// from the store; DataServed is recorded once the last message was taken.
    async fn do_get_wire(&self, r: Request<Ticket>) -> Result<MessageStream, Status> {
        let who = caller(&self.gw, &format!("{FLIGHT_PATH}DoGet"), &r).await?;
        let slice_id = parse_ticket(&r.get_ref().ticket)?;
        let s = self.gw.granted_slice(&who, &slice_id, true)?;
        // At most `max_transfers` DoGets read and send at once; this one waits its turn.
        let turn = self.gw.transfer_turn().await?;
        // The erasure fence, noted before anything is read: no row of a patient whose erasure
        // began is sent after that.
        let fence = self.gw.fence();
        if !fence.is_multiple_of(2) {
            return Err(Status::unavailable(
                "an erasure is running at this gateway; retry in a moment",
            ));
        }
        // A slice served before is sent from memory, with the erasures it was built with (an
        // erasure empties the cache); otherwise its rows are read from the store.
        let keys = self.gw.slice_keys(&s)?;
        let (source, erased) = match self.gw.cached(&s.slice_id) {
            Some(c) => {
                let erased = c.erased.clone();
                (Source::Cached(c), erased)
            }
            None => {
                let ServePlan {
                    catalog,
                    per_file,
                    erased,
                } = self.gw.plan(&s, &keys);
                (Source::Store(catalog, per_file), erased)
            }
        };
        let schema = served_schema(stream_metadata(&s, &self.gw.cfg.site, &erased));
        let (tx, rx) = tokio::sync::mpsc::channel::<Produced>(4);
        let (gw, slice, sch) = (Arc::clone(&self.gw), Arc::clone(&s), schema.clone());
        tokio::task::spawn_blocking(move || {
            let alter = gw.alter_sample;
            let fenced = || !gw.fence_ok(fence);
            match source {
                Source::Cached(c) => {
                    let batches = c.batches.clone().into_iter().map(Ok);
                    produce(&tx, Box::new(batches), alter, &fenced);
                }
                Source::Store(catalog, per_file) => {
                    let gather = Arc::new(Mutex::new(Gather {
                        gw: Arc::clone(&gw),
                        batches: Vec::new(),
                        bytes: 0,
                        full: false,
                        rows: slice.segments.len() as u64,
                    }));
                    let into = Arc::clone(&gather);
                    let batches = store_batches(&gw, &slice, &catalog, per_file, &sch, keys)
                        .inspect(move |b| {
                            if let (Ok(b), Ok(mut g)) = (b, into.lock()) {
                                g.push(b);
                            }
                        });
                    if produce(&tx, Box::new(batches), alter, &fenced) {
                        let kept = Arc::into_inner(gather)
                            .and_then(|m| m.into_inner().ok())
                            .and_then(Gather::take);
                        if let Some((batches, bytes)) = kept {
                            let served = ServedSlice {
                                record: slice,
                                batches,
                                erased,
                                bytes,
                            };
                            gw.keep(&served.record.slice_id.clone(), &catalog, fence, served);
                        }
                    }
                }
            }
        });
        let state = Respond {
            rx,
            held: None,
            encoder: MessageEncoder::new(MAX_FLIGHT_DATA_BYTES),
            schema: Some(schema),
            queue: Default::default(),
            last: false,
            rows: 0,
            bytes: 0,
            recording: None,
            finished: false,
            left: Unfinished {
                slice_id: s.slice_id.clone(),
                done: Arc::new(AtomicBool::new(false)),
            },
            gw: Arc::clone(&self.gw),
            slice: s,
            fence,
            _turn: turn,
        };
        Ok(Box::pin(futures::stream::unfold(state, Respond::next)))
    }
}

#[tonic::async_trait]
impl FlightCalls for GatewayFlight {
    /// GetFlightInfo: the slice's schema, ticket and row count, for the granted scientist and
    /// regulators.
    async fn flight_info(&self, r: Request<FlightDescriptor>) -> Result<FlightInfo, Status> {
        let who = caller(&self.gw, &format!("{FLIGHT_PATH}GetFlightInfo"), &r).await?;
        let d = r.into_inner();
        let slice_id = match d.path.first() {
            Some(p) => p.clone(),
            None => parse_ticket(&d.cmd)?,
        };
        let s = self.gw.granted_slice(&who, &slice_id, false)?;
        let keys = self.gw.slice_keys(&s)?;
        let erased = self.gw.plan(&s, &keys).erased;
        let schema = served_schema(stream_metadata(&s, &self.gw.cfg.site, &erased));
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket(&s.slice_id))))
            .with_descriptor(d)
            .with_total_records((s.segments.len() - erased.len()) as i64);
        Ok(info)
    }

    fn refused(&self, method: &str) -> Status {
        match method {
            "Handshake" => Status::unimplemented(
                "no handshake: every call is signed in its metadata (docs/flight.md)",
            ),
            "ListFlights" => {
                Status::unimplemented("slices are reserved with GatewayService.ReserveSlice")
            }
            "PollFlightInfo" | "GetSchema" => Status::unimplemented("use GetFlightInfo"),
            "DoPut" => Status::permission_denied("a gateway's data is read-only over Flight"),
            "DoAction" | "ListActions" => Status::unimplemented("no actions"),
            other => Status::unimplemented(format!("no {other}")),
        }
    }
}
