//! `ecgfed gateway bench`: throughput of a verified cohort pull over loopback against a plain
//! Arrow Flight server sending the same record batches with no authentication and no
//! verification, in the same run (bench/README.md).
//!
//! Set-up (not timed): a ledger, a site store ingested from `--input`, a gateway with k = 2,
//! a scientist and a cohort taking every selectable segment of the site. Timed, alternating
//! `--rounds` times: (a) the verified pull (signed DoGet; the gateway reads the rows from
//! Parquet and adds commitments and proofs; the client recomputes every content hash and
//! commitment and checks every inclusion proof before handing a batch over; a DataServed entry
//! is recorded), (b) the baseline: the batches of (a), held in memory by a plain Flight server,
//! streamed to a plain client that decodes them and looks at nothing.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use arrow::array::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use ecgfed_datasets::ingest::{IngestOptions, ingest};
use ecgfed_gateway::auth::RequestSigner;
use ecgfed_gateway::client::GatewayClient;
use ecgfed_gateway::config::{GatewayConfig, LedgerConfig, Policy};
use ecgfed_gateway::server::{CONNECTION_WINDOW, STREAM_WINDOW};
use ecgfed_gateway::service::MAX_MESSAGE_BYTES;
use ecgfed_ledger::Ledger;
use ecgfed_ledger::client::LedgerClient;
use ecgfed_ledger::entry::EntrySigner;
use ecgfed_ledger::genesis::{GenesisFile, GenesisMember};
use ecgfed_ledger::keys::KeyPair;
use ecgfed_ledger::trust::TrustFile;
use ecgfed_proto::v1::entry_body::Payload;
use ecgfed_proto::v1::{AllocationCell, CohortCreated, ReserveSliceRequest, StrataDimension};
use futures::{Stream, StreamExt, TryStreamExt};
use tonic::{Request, Response, Status, Streaming};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A plain Flight server: DoGet streams the batches it holds; nothing is checked.
#[derive(Clone)]
struct PlainFlight {
    batches: Arc<Vec<RecordBatch>>,
}

#[tonic::async_trait]
impl FlightService for PlainFlight {
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
        Err(Status::unimplemented("baseline"))
    }
    async fn list_flights(
        &self,
        _r: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn get_flight_info(
        &self,
        _r: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn poll_flight_info(
        &self,
        _r: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn get_schema(
        &self,
        _r: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn do_get(&self, _r: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        let batches = Arc::clone(&self.batches);
        let schema = batches[0].schema();
        let input = futures::stream::iter((0..batches.len()).map(move |i| Ok(batches[i].clone())));
        let s = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_max_flight_data_size(8 << 20)
            .build(input)
            .map_err(|e: FlightError| Status::internal(e.to_string()));
        Ok(Response::new(Box::pin(s)))
    }
    async fn do_put(
        &self,
        _r: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn do_exchange(
        &self,
        _r: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn do_action(
        &self,
        _r: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn list_actions(
        &self,
        _r: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(Status::unimplemented("baseline"))
    }
}

fn write_key(dir: &Path, name: &str) -> Result<(KeyPair, PathBuf)> {
    let k = KeyPair::generate();
    let p = dir.join(format!("{name}.key"));
    k.write_file(&p)?;
    Ok((k, p))
}

/// Runs the benchmark.
pub async fn run(input: PathBuf, rounds: usize, batch_rows: usize, json: bool) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    eprintln!("bench: ingesting {} ...", input.display());
    let store = dir.join("store");
    let opts = IngestOptions {
        site: "bench-site".into(),
        ..Default::default()
    };
    let m = ingest(std::slice::from_ref(&input), &store, &opts, &|_| {})
        .with_context(|| format!("ingesting {}", input.display()))?;
    let (ledger_key, _) = write_key(dir, "ledger")?;
    let (hosp, hosp_file) = write_key(dir, "hosp")?;
    let (sci, _) = write_key(dir, "sci")?;
    let g = GenesisFile {
        origin: "ecgfed.bench/gateway".into(),
        max_clock_skew_ms: 0,
        members: vec![
            GenesisMember::for_key("ledger", "ledger", "", &ledger_key),
            GenesisMember::for_key("hosp", "hospital", "bench-site", &hosp),
            GenesisMember::for_key("sci", "scientist", "", &sci),
        ],
    };
    let ldb = dir.join("ledger");
    let cp = Ledger::init(&ldb, &g, &ledger_key)?;
    let trust = dir.join("trust.json");
    TrustFile {
        origin: cp.origin.clone(),
        ledger_public_key: ledger_key.public().to_hex(),
        checkpoint: cp.sign(&ledger_key),
    }
    .write(&trust)?;
    let ledger = Ledger::open(&ldb, ledger_key.clone())?;
    let (ll, laddr) = ecgfed_ledger::service::bind("127.0.0.1:0".parse()?).await?;
    tokio::spawn(ecgfed_ledger::service::serve(
        Arc::clone(&ledger),
        ll,
        std::future::pending(),
    ));
    let cfg = GatewayConfig {
        site: "bench-site".into(),
        member: "hosp".into(),
        key_file: hosp_file,
        store: store.clone(),
        data: dir.join("gw"),
        dataset_id: None,
        listen: "127.0.0.1:0".parse()?,
        ledger: LedgerConfig {
            address: laddr.to_string(),
            trust: trust.clone(),
        },
        k: 2,
        age_edges: vec![20, 40, 60, 80],
        policy: Policy {
            batch_rows,
            ..Default::default()
        },
        tls: None,
    };
    let gw = ecgfed_gateway::Gateway::start(cfg).await?;
    let (gl, gaddr) = ecgfed_ledger::service::bind("127.0.0.1:0".parse()?).await?;
    tokio::spawn(ecgfed_gateway::server::serve(
        gw,
        gl,
        std::future::pending(),
    ));

    // A cohort taking every selectable segment of the site.
    let signer = Arc::new(RequestSigner::new("sci", sci.clone()));
    let mut client = GatewayClient::connect(&gaddr.to_string(), Arc::clone(&signer)).await?;
    let t = client
        .strata(
            "",
            &[
                StrataDimension::Label,
                StrataDimension::Sex,
                StrataDimension::AgeBand,
            ],
        )
        .await?;
    let allocation: Vec<AllocationCell> = t
        .cells
        .iter()
        .map(|c| AllocationCell {
            site: "bench-site".into(),
            label: c.key[0].clone(),
            sex: c.key[1].clone(),
            age_band: c.key[2].clone(),
            count: c.segments,
        })
        .collect();
    if allocation.is_empty() {
        bail!(
            "no strata cell of {} reaches k = 2 patients",
            input.display()
        );
    }
    let mut es = EntrySigner::new("sci", sci);
    let mut lc = LedgerClient::connect(
        &laddr.to_string(),
        &cp.origin.clone(),
        ledger_key.public(),
        Some(cp),
    )
    .await?;
    lc.submit(es.sign(Payload::CohortCreated(CohortCreated {
        cohort_id: "bench".into(),
        spec_sha256: vec![0; 32],
        allocation,
        seed: 1,
        purpose: "gateway bench".into(),
        requester: "sci".into(),
    })))
    .await?;
    let r = client
        .reserve(ReserveSliceRequest {
            cohort_id: "bench".into(),
            ..Default::default()
        })
        .await?;

    // Warm-up pull, keeping the batches for the baseline server.
    let mut kept = Vec::new();
    let t = Instant::now();
    client
        .pull(&r.slice_id, &mut lc, |b| kept.push(b.clone()))
        .await?;
    let first = t.elapsed().as_secs_f64();
    let (pl, paddr) = ecgfed_ledger::service::bind("127.0.0.1:0".parse()?).await?;
    let plain = PlainFlight {
        batches: Arc::new(kept),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .add_service(
                FlightServiceServer::new(plain)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(pl)),
    );
    let ch = tonic::transport::Channel::from_shared(format!("http://{paddr}"))?
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .connect()
        .await?;
    let mut plain_client = FlightServiceClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    eprintln!(
        "bench: slice of {} rows of the {} segments in the store; {rounds} rounds",
        r.rows, m.segments
    );
    let (mut verified, mut baseline) = (Vec::new(), Vec::new());
    let (mut signal_bytes, mut wire) = (0u64, 0u64);
    for _ in 0..rounds {
        let t = Instant::now();
        let rep = client.pull(&r.slice_id, &mut lc, |_| {}).await?;
        verified.push(t.elapsed().as_secs_f64());
        signal_bytes = rep.signal_bytes;
        let t = Instant::now();
        let w = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let wc = Arc::clone(&w);
        let s = plain_client
            .do_get(Ticket::new("x"))
            .await?
            .into_inner()
            .inspect_ok(move |fd| {
                wc.fetch_add(
                    (fd.data_header.len() + fd.data_body.len()) as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
            })
            .map_err(|e| FlightError::Tonic(Box::new(e)));
        let mut st = FlightRecordBatchStream::new_from_flight_data(s);
        let mut rows = 0u64;
        while let Some(b) = st.next().await {
            rows += b?.num_rows() as u64;
        }
        baseline.push(t.elapsed().as_secs_f64());
        wire = w.load(std::sync::atomic::Ordering::Relaxed);
        if rows != rep.rows {
            bail!(
                "baseline delivered {rows} rows, the verified pull {}",
                rep.rows
            );
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (tv, tb) = (median(&mut verified), median(&mut baseline));
    let mb = |bytes: u64, secs: f64| bytes as f64 / secs / 1e6;
    let ratio = tb / tv;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "rows": r.rows, "signal_bytes": signal_bytes, "arrow_bytes": wire, "rounds": rounds,
                "verified": {"seconds": tv, "signal_mb_per_s": mb(signal_bytes, tv), "arrow_mb_per_s": mb(wire, tv), "rows_per_s": r.rows as f64 / tv},
                "baseline": {"seconds": tb, "signal_mb_per_s": mb(signal_bytes, tb), "arrow_mb_per_s": mb(wire, tb), "rows_per_s": r.rows as f64 / tb},
                "verified_over_baseline": ratio,
                "first_pull_from_store": {"seconds": first, "signal_mb_per_s": mb(signal_bytes, first)},
            })
        );
    } else {
        println!(
            "gateway bench: slice of {} rows, {:.1} MB of signal, {:.1} MB of Arrow data; median of {rounds} rounds",
            r.rows,
            signal_bytes as f64 / 1e6,
            wire as f64 / 1e6
        );
        println!(
            "  verified pull   {:.3} s = {:.0} MB/s signal ({:.0} MB/s Arrow), {:.0} rows/s",
            tv,
            mb(signal_bytes, tv),
            mb(wire, tv),
            r.rows as f64 / tv
        );
        println!(
            "  plain Flight    {:.3} s = {:.0} MB/s signal ({:.0} MB/s Arrow), {:.0} rows/s (same batches, no auth, no verification)",
            tb,
            mb(signal_bytes, tb),
            mb(wire, tb),
            r.rows as f64 / tb
        );
        println!("  verified / plain throughput: {ratio:.2}×");
        println!(
            "  first verified pull, rows read from the Parquet store: {first:.3} s = {:.0} MB/s signal",
            mb(signal_bytes, first)
        );
    }
    Ok(())
}
