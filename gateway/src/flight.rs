//! The Arrow Flight data plane on the gateway's port: `GetFlightInfo` (slice metadata, for
//! the granted scientist and regulators) and `DoGet(ticket)` (the slice's rows, for the
//! granted scientist only). A completed DoGet is recorded as `DataServed` on the ledger before
//! the stream ends.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arrow::array::{ArrayRef, AsArray, Float32Array, ListArray, RecordBatch};
use arrow::datatypes::Float32Type;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::gateway::Gateway;
use crate::service::{MAX_MESSAGE_BYTES, caller};
use crate::slice::{SliceRecord, meta, parse_ticket, serve_batch, served_schema, ticket};

/// gRPC path prefix of Arrow Flight.
pub const FLIGHT_PATH: &str = "/arrow.flight.protocol.FlightService/";

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

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
pub struct GatewayFlight {
    gw: Arc<Gateway>,
}

impl GatewayFlight {
    /// A Flight service over `gw`.
    pub fn new(gw: Arc<Gateway>) -> Self {
        GatewayFlight { gw }
    }

    /// The tonic service with limits sized for ECG batches.
    pub fn into_service(self) -> FlightServiceServer<GatewayFlight> {
        FlightServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

fn stream_metadata(
    s: &SliceRecord,
    site: &str,
    erased: &[(u64, String)],
) -> HashMap<String, String> {
    // Proofs of erased leaves only; the tree is built when there are any.
    let tree = (!erased.is_empty()).then(|| s.tree());
    let erased: Vec<(u64, &str, Vec<String>)> = erased
        .iter()
        .map(|(i, c)| {
            (
                *i,
                c.as_str(),
                tree.as_ref()
                    .map(|t| t.proof(*i).iter().map(hex::encode).collect())
                    .unwrap_or_default(),
            )
        })
        .collect();
    HashMap::from([
        (meta::SLICE_ID.to_string(), s.slice_id.clone()),
        (meta::COHORT_ID.to_string(), s.cohort_id.clone()),
        (meta::SITE.to_string(), site.to_string()),
        (meta::SLICE_ROOT.to_string(), s.root.clone()),
        (meta::SLICE_SIZE.to_string(), s.segments.len().to_string()),
        (meta::LEDGER_INDEX.to_string(), s.ledger_index.to_string()),
        (
            meta::ERASED.to_string(),
            serde_json::to_string(&erased).unwrap_or_else(|_| "[]".into()),
        ),
    ])
}

/// Adds 0.001 to the first sample of the first row (fault-injection hook).
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

#[tonic::async_trait]
impl FlightService for GatewayFlight {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoExchangeStream = BoxStream<FlightData>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;

    async fn handshake(
        &self,
        _r: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented(
            "no handshake: every call is signed in its metadata (docs/flight.md)",
        ))
    }

    async fn list_flights(
        &self,
        _r: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented(
            "slices are reserved with GatewayService.ReserveSlice",
        ))
    }

    async fn get_flight_info(
        &self,
        r: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let who = caller(&self.gw, &format!("{FLIGHT_PATH}GetFlightInfo"), &r).await?;
        let d = r.into_inner();
        let slice_id = match d.path.first() {
            Some(p) => p.clone(),
            None => parse_ticket(&d.cmd)?,
        };
        let s = self.gw.granted_slice(&who, &slice_id, false)?;
        let (_, _, erased) = self.gw.plan(&s);
        let schema = served_schema(stream_metadata(&s, &self.gw.cfg.site, &erased));
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket(&s.slice_id))))
            .with_descriptor(d)
            .with_total_records((s.segments.len() - erased.len()) as i64);
        Ok(Response::new(info))
    }

    async fn poll_flight_info(
        &self,
        _r: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("use GetFlightInfo"))
    }

    async fn get_schema(
        &self,
        _r: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("use GetFlightInfo"))
    }

    async fn do_get(&self, r: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        let who = caller(&self.gw, &format!("{FLIGHT_PATH}DoGet"), &r).await?;
        let slice_id = parse_ticket(&r.get_ref().ticket)?;
        let s = self.gw.granted_slice(&who, &slice_id, true)?;
        // A slice served before is sent from memory, with the erasures it was built with (an
        // erasure empties the cache); otherwise its rows are read from the store.
        let cached = self.gw.cached(&s.slice_id);
        let (plan, erased) = match &cached {
            Some(c) => (None, c.erased.clone()),
            None => {
                let (catalog, per_file, erased) = self.gw.plan(&s);
                (Some((catalog, per_file)), erased)
            }
        };
        let schema = served_schema(stream_metadata(&s, &self.gw.cfg.site, &erased));
        let rows_sent = Arc::new(AtomicU64::new(0));
        let (btx, brx) = tokio::sync::mpsc::channel::<Result<RecordBatch, FlightError>>(4);
        let (gw, sch, sent) = (Arc::clone(&self.gw), schema.clone(), Arc::clone(&rows_sent));
        let slice = s.clone();
        tokio::task::spawn_blocking(move || {
            let mut first = true;
            let mut send = |out: Result<RecordBatch, FlightError>| -> bool {
                let out = match out {
                    Ok(b) if first && gw.alter_sample => alter_first_sample(&b),
                    other => other,
                };
                first = false;
                if let Ok(b) = &out {
                    sent.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                }
                btx.blocking_send(out).is_ok()
            };
            let Some((catalog, per_file)) = plan else {
                for b in cached.iter().flat_map(|c| c.batches.iter()) {
                    if !send(Ok(b.clone())) {
                        return;
                    }
                }
                return;
            };
            let tree = slice.tree();
            let leaf_of: HashMap<&str, u64> = slice
                .segments
                .iter()
                .enumerate()
                .map(|(i, id)| (id.as_str(), i as u64))
                .collect();
            let proof_of = |id: &str| leaf_of.get(id).map(|&i| (i, tree.proof(i)));
            let mut files: Vec<_> = per_file.into_iter().collect();
            files.sort_by_key(|(f, _)| *f);
            let mut built = Vec::new();
            for (file, positions) in files {
                let batches = match ecgfed_datasets::store::read_file(
                    &catalog.dir,
                    &catalog.files[file],
                    None,
                    Some(&positions),
                    gw.cfg.policy.batch_rows,
                ) {
                    Ok(b) => b,
                    Err(e) => {
                        send(Err(FlightError::ExternalError(Box::new(e))));
                        return;
                    }
                };
                for b in batches {
                    let out = serve_batch(&b, &catalog, &sch, &proof_of)
                        .map_err(|e| FlightError::ExternalError(Box::new(e)));
                    if let Ok(b) = &out {
                        built.push(b.clone());
                    }
                    let ok = out.is_ok();
                    if !send(out) || !ok {
                        return;
                    }
                }
            }
            gw.keep(
                &slice.slice_id,
                &catalog,
                crate::gateway::ServedSlice {
                    batches: built,
                    erased,
                },
            );
        });
        // The encoder's messages go straight to tonic; once the last one is taken, DataServed
        // is recorded, and only then does the stream end (an error, or a client that leaves,
        // ends it before: no DataServed).
        let bytes = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&bytes);
        let id = s.slice_id.clone();
        let left = Unfinished {
            slice_id: s.slice_id.clone(),
            done: Arc::new(AtomicBool::new(false)),
        };
        let failed = Arc::clone(&left.done);
        let data = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_max_flight_data_size(8 << 20)
            .build(ReceiverStream::new(brx))
            .map(move |fd| match fd {
                Ok(fd) => {
                    counted.fetch_add(
                        (fd.data_header.len() + fd.data_body.len()) as u64,
                        Ordering::Relaxed,
                    );
                    Ok(fd)
                }
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    Err(Status::internal(format!("serving slice {id}: {e}")))
                }
            });
        let gw = Arc::clone(&self.gw);
        let end = futures::stream::once(async move {
            left.done.store(true, Ordering::Relaxed);
            let (rows, bytes) = (
                rows_sent.load(Ordering::Relaxed),
                bytes.load(Ordering::Relaxed),
            );
            match gw.served(&s, rows, bytes).await {
                Ok(index) => {
                    tracing::info!(slice = %s.slice_id, rows, bytes, index, "slice served");
                    None
                }
                Err(e) => Some(Err(Status::unavailable(format!(
                    "slice {} was sent but DataServed could not be recorded: {e}",
                    s.slice_id
                )))),
            }
        })
        .filter_map(futures::future::ready);
        Ok(Response::new(Box::pin(data.chain(end))))
    }

    async fn do_put(
        &self,
        _r: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::permission_denied(
            "a gateway's data is read-only over Flight",
        ))
    }

    async fn do_exchange(
        &self,
        _r: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("no DoExchange"))
    }

    async fn do_action(
        &self,
        _r: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("no actions"))
    }

    async fn list_actions(
        &self,
        _r: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(Status::unimplemented("no actions"))
    }
}
