//! `ecgfed-bench gateway`: throughput of a verified cohort pull over loopback against a plain
//! Arrow Flight server sending the same record batches with no authentication and no
//! verification, in the same run (bench/README.md).
//!
//! Set-up (not timed): a ledger, a site store ingested from `--input`, a gateway with k = 2,
//! a scientist and a cohort taking every selectable segment of the site. Timed, alternating
//! `--rounds` times: (a) the verified pull (signed DoGet; the gateway reads the rows from
//! Parquet and adds commitments and proofs; the client recomputes every content hash and
//! commitment and checks every inclusion proof before handing a batch over; a DataServed entry
//! is recorded), (b) the baseline: the batches of (a), held in memory by a plain Flight server
//! (arrow-flight's encoder through tonic), streamed to a plain client that decodes them with
//! arrow-flight and looks at nothing, and (c) the same batches from the same plain server
//! answered by the gateway's DoGet route (`route::DoGetRoute`, Arrow buffers sent without a
//! copy), received and decoded in place as the gateway client does (`route::do_get`). (b) is the reference the target
//! is set against; (c) is the gateway's transport without authentication or verification, so
//! (a) against (c) is what verification costs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use arrow_flight::Ticket;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use ecgfed_datasets::ingest::{IngestOptions, ingest};
use ecgfed_gateway::client::GatewayClient;
use ecgfed_gateway::protocol::MAX_MESSAGE_BYTES;
use ecgfed_gateway::server::FLIGHT_LIMITS;
use ecgfed_gateway::server::{GatewayConfig, LedgerConfig, Policy};
use ecgfed_gateway::transport::route::{DoGetRoute, MemoryFlight, flight_server};
use ecgfed_gateway::transport::wire::BatchDecoder;
use ecgfed_gateway::transport::{http2_endpoint, http2_server};
use futures::{StreamExt, TryStreamExt};

use crate::site_ledger::BenchLedger;

/// One pull from a plain server: decoded by arrow-flight, or (`in_place`) by the gateway
/// client's in-place decoder. Returns its timing, rows and Arrow bytes.
async fn plain_pull(
    channel: &mut tonic::transport::Channel,
    in_place: bool,
) -> Result<(Pull, u64, u64)> {
    let mut timer = PullTimer::start();
    let (mut rows, mut wire) = (0u64, 0u64);
    if in_place {
        let request = tonic::Request::new(Ticket::new("all"));
        let mut s =
            ecgfed_gateway::transport::route::do_get(channel, request, MAX_MESSAGE_BYTES).await?;
        let mut d = BatchDecoder::new();
        while let Some(m) = s.next().await {
            let m = m?;
            wire += (m.data_header.len() + m.data_body.len()) as u64;
            if let Some(b) = d.decode(&m)? {
                rows += b.num_rows() as u64;
                timer.batch();
            }
        }
    } else {
        let mut client =
            FlightServiceClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
        let s = client.do_get(Ticket::new("all")).await?.into_inner();
        let w = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let wc = Arc::clone(&w);
        let s = s
            .inspect_ok(move |fd| {
                wc.fetch_add(
                    (fd.data_header.len() + fd.data_body.len()) as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
            })
            .map_err(|e| FlightError::Tonic(Box::new(e)));
        let mut st = FlightRecordBatchStream::new_from_flight_data(s);
        while let Some(b) = st.next().await {
            rows += b?.num_rows() as u64;
            timer.batch();
        }
        wire = w.load(std::sync::atomic::Ordering::Relaxed);
    }
    Ok((timer.finish(), rows, wire))
}

/// Starts `svc` on a loopback port with the gateway's transport settings; a channel to it.
async fn plain_server<S>(svc: S) -> Result<tonic::transport::Channel>
where
    S: tonic::codegen::Service<
            tonic::codegen::http::Request<tonic::body::Body>,
            Response = tonic::codegen::http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let (l, addr) = ecgfed_ledger::service::bind("127.0.0.1:0".parse()?).await?;
    tokio::spawn(
        http2_server(tonic::transport::Server::builder())
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    Ok(
        http2_endpoint(tonic::transport::Channel::from_shared(format!(
            "http://{addr}"
        ))?)
        .connect()
        .await?,
    )
}

/// `ecgfed-bench gateway`: verified cohort pull over loopback against a plain Flight server
/// sending the same batches, in the same run.
#[derive(clap::Args)]
pub struct GatewayArgs {
    /// Folder of ECG records to ingest as the bench site.
    #[arg(long, default_value = "datasets/sample")]
    input: PathBuf,
    /// Timed rounds of each (medians are reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Rows per Arrow record batch served by the gateway.
    #[arg(long, default_value_t = 256)]
    batch_rows: usize,
    /// Then the load phase: this many verified pulls at once of one slice from a gateway in
    /// its own process, with its peak memory (0: skip).
    #[arg(long, default_value_t = 0)]
    concurrent: usize,
    /// Rows of the load phase's slice (the input is repeated until there are enough).
    #[arg(long, default_value_t = 100_000)]
    slice_rows: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `ecgfed-bench gateway`.
pub fn command(a: GatewayArgs) -> Result<()> {
    crate::runtime()?.block_on(run(
        a.input,
        a.rounds.max(1),
        a.batch_rows.max(1),
        a.concurrent,
        a.slice_rows,
        a.json,
    ))
}

/// Runs the benchmark; with `concurrent` > 0, then the load phase (crate::gateway_load):
/// `concurrent` verified pulls at once of a `slice_rows`-row slice from a gateway process.
async fn run(
    input: PathBuf,
    rounds: usize,
    batch_rows: usize,
    concurrent: usize,
    slice_rows: u64,
    json: bool,
) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let mut site = Site::start(&input, batch_rows, dir).await?;
    let (first, mut plain) = site.first_pull().await?;
    eprintln!(
        "bench: slice of {} rows of the {} segments in the store; {rounds} rounds",
        site.slice.rows, site.segments
    );
    let timed = site.time_rounds(&mut plain, rounds).await?;
    let load = if concurrent > 0 {
        let rows = site.slice.rows;
        Some(crate::gateway_load::run(&input, rows, slice_rows, concurrent, dir).await?)
    } else {
        None
    };
    let f = Figures::new(timed, site.slice.rows, first, rounds, load);
    if json {
        println!("{}", f.json());
    } else {
        f.print();
    }
    Ok(())
}

/// The bench site: a store ingested from the input, its gateway served in this process with
/// a ledger, a scientist's client and verifying ledger client, and the reserved slice of a
/// cohort taking every selectable segment.
struct Site {
    segments: u64,
    client: GatewayClient,
    ledger: ecgfed_ledger::client::LedgerClient,
    slice: ecgfed_proto::v1::ReserveSliceResponse,
    _fed: BenchLedger,
}

/// The plain Flight server holding the slice's batches, reached twice: through arrow-flight's
/// DoGet on tonic (the baseline), and through the gateway's DoGet route (the gateway's
/// transport with no authentication and no verification).
struct Plain {
    tonic: tonic::transport::Channel,
    route: tonic::transport::Channel,
}

/// The timed rounds: per pull kind, one [`Pull`] per round; the slice's signal and Arrow bytes.
struct Timed {
    verified: Vec<Pull>,
    baseline: Vec<Pull>,
    route: Vec<Pull>,
    signal_bytes: u64,
    wire: u64,
}

impl Site {
    /// Ingests `input`, starts the ledger and the gateway (`batch_rows` rows per batch) in
    /// `dir`, and reserves the cohort's slice (not timed).
    async fn start(
        input: &std::path::Path,
        batch_rows: usize,
        dir: &std::path::Path,
    ) -> Result<Site> {
        eprintln!("bench: ingesting {} ...", input.display());
        let store = dir.join("store");
        let opts = IngestOptions {
            site: "bench-site".into(),
            ..Default::default()
        };
        let m = ingest(
            std::slice::from_ref(&input.to_path_buf()),
            &store,
            &opts,
            &|_| {},
        )
        .with_context(|| format!("ingesting {}", input.display()))?;
        let fed = BenchLedger::start(dir, "ecgfed.bench/gateway", "bench-site").await?;
        let cfg = GatewayConfig {
            site: "bench-site".into(),
            member: "hosp".into(),
            key_file: fed.hosp_file.clone(),
            store,
            data: dir.join("gw"),
            dataset_id: None,
            listen: "127.0.0.1:0".parse()?,
            ledger: LedgerConfig {
                address: fed.addr.clone(),
                trust: fed.trust.clone(),
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
        let signer = fed.members.request_signer("sci");
        let mut client = GatewayClient::connect(&gaddr.to_string(), "bench-site", signer).await?;
        let mut ledger = fed.client().await?;
        let slice = fed
            .cohort(&mut client, &mut ledger, "bench", u64::MAX)
            .await
            .with_context(|| input.display().to_string())?;
        Ok(Site {
            segments: m.segments,
            client,
            ledger,
            slice,
            _fed: fed,
        })
    }

    /// The warm-up pull (rows read from the Parquet store), timed, with its batches kept for
    /// the plain server. Each is copied into buffers of its own: a decoded batch's columns are
    /// views into the whole received message, which makes the Flight encoder overstate its
    /// size and split it into many small messages, so the baseline would not send the same
    /// messages as the gateway.
    async fn first_pull(&mut self) -> Result<(f64, Plain)> {
        let mut kept = Vec::new();
        let t = Instant::now();
        self.client
            .pull(&self.slice.slice_id, &mut self.ledger, |b| {
                kept.push(b.clone())
            })
            .await?;
        let kept = kept
            .iter()
            .map(|b| {
                let all = arrow::array::UInt32Array::from_iter_values(0..b.num_rows() as u32);
                arrow::compute::take_record_batch(b, &all)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let first = t.elapsed().as_secs_f64();
        let plain = Arc::new(MemoryFlight::new(
            kept,
            ecgfed_gateway::protocol::MAX_FLIGHT_DATA_BYTES,
        ));
        let tonic = plain_server(flight_server(Arc::clone(&plain), FLIGHT_LIMITS)).await?;
        let route = plain_server(DoGetRoute::new(plain, FLIGHT_LIMITS)).await?;
        Ok((first, Plain { tonic, route }))
    }

    /// `rounds` rounds of: the verified pull, the baseline pull, the pull through the route;
    /// each plain pull must deliver the verified pull's rows.
    async fn time_rounds(&mut self, plain: &mut Plain, rounds: usize) -> Result<Timed> {
        let mut t = Timed {
            verified: Vec::new(),
            baseline: Vec::new(),
            route: Vec::new(),
            signal_bytes: 0,
            wire: 0,
        };
        for _ in 0..rounds {
            let mut timer = PullTimer::start();
            let rep = self
                .client
                .pull(&self.slice.slice_id, &mut self.ledger, |_| timer.batch())
                .await?;
            t.verified.push(timer.finish());
            t.signal_bytes = rep.signal_bytes;
            for (through_route, out) in [(false, &mut t.baseline), (true, &mut t.route)] {
                let c = if through_route {
                    &mut plain.route
                } else {
                    &mut plain.tonic
                };
                let (p, rows, w) = plain_pull(c, through_route).await?;
                if rows != rep.rows {
                    bail!(
                        "baseline delivered {rows} rows, the verified pull {}",
                        rep.rows
                    );
                }
                out.push(p);
                t.wire = w;
            }
        }
        Ok(t)
    }
}

/// What the bench reports: the medians of each pull kind, the ratios and the bound on them,
/// the first pull, and the load phase's figures.
struct Figures {
    rows: u64,
    rounds: usize,
    signal_bytes: u64,
    wire: u64,
    /// Medians: verified pull, baseline, plain pull through the route.
    v: Pull,
    b: Pull,
    a: Pull,
    /// Baseline time over verified time, and route time over verified time.
    ratio: f64,
    ratio_route: f64,
    /// One core's BLAKE3 rate on rows of this slice's size, and the least CPU hashing takes.
    hash_rate: f64,
    hash_floor: f64,
    /// The most the ratio can be on this machine.
    bound: f64,
    /// Seconds of the first pull (rows read from the store).
    first: f64,
    load: Option<crate::gateway_load::Load>,
}

impl Figures {
    fn new(
        t: Timed,
        rows: u64,
        first: f64,
        rounds: usize,
        load: Option<crate::gateway_load::Load>,
    ) -> Figures {
        let (v, b, a) = (
            Pull::median(&t.verified),
            Pull::median(&t.baseline),
            Pull::median(&t.route),
        );
        // The least CPU that verification can take: hashing every sample byte at the rate
        // one core of this machine hashes rows of this slice's size.
        let hash_rate = signal_hash_rate((t.signal_bytes / rows.max(1)) as usize);
        let hash_floor = t.signal_bytes as f64 / hash_rate;
        // The verified pull needs at least the CPU of the same transport without
        // verification plus the hashing, spread at best over every core: the ratio cannot
        // exceed this bound.
        let bound = b.seconds * cores() as f64 / (a.cpu + hash_floor);
        Figures {
            rows,
            rounds,
            signal_bytes: t.signal_bytes,
            wire: t.wire,
            ratio: b.seconds / v.seconds,
            ratio_route: a.seconds / v.seconds,
            v,
            b,
            a,
            hash_rate,
            hash_floor,
            bound,
            first,
            load,
        }
    }

    /// The load phase's throughputs: one pull alone, all pulls together (MB/s of signal).
    fn load_rates(l: &crate::gateway_load::Load) -> (f64, f64) {
        (
            mb_per_s(l.signal_bytes, l.alone),
            mb_per_s(l.signal_bytes * l.concurrent as u64, l.together),
        )
    }

    fn json(&self) -> serde_json::Value {
        let (sb, w, rows) = (self.signal_bytes, self.wire, self.rows);
        let v_mb = mb_per_s(sb, self.v.seconds);
        let first_mb = mb_per_s(sb, self.first);
        let load = self.load.as_ref().map(|l| {
            let (alone, together) = Self::load_rates(l);
            serde_json::json!({
                "slice_rows": l.rows, "copies": l.copies, "store_segments": l.segments,
                "signal_bytes_per_pull": l.signal_bytes, "concurrent": l.concurrent,
                "alone": {"seconds": l.alone, "signal_mb_per_s": alone, "gateway_peak_rss_bytes": l.peak_alone},
                "together": {"seconds": l.together, "signal_mb_per_s": together, "gateway_peak_rss_bytes": l.peak_together},
                "together_over_alone": together / alone,
                "together_over_verified_pull": together / v_mb,
                "alone_over_first_pull_from_store": alone / first_mb,
            })
        });
        serde_json::json!({
            "rows": rows, "signal_bytes": sb, "arrow_bytes": w, "rounds": self.rounds,
            "cores": cores(),
            "verified": self.v.json(sb, w, rows),
            "baseline": self.b.json(sb, w, rows),
            "verified_over_baseline": self.ratio,
            "plain_gateway_route": self.a.json(sb, w, rows),
            "verified_over_plain_gateway_route": self.ratio_route,
            "signal_hash_bytes_per_s": self.hash_rate,
            "hash_floor_cpu_seconds": self.hash_floor,
            "verified_over_baseline_bound": self.bound,
            "first_pull_from_store": {"seconds": self.first, "signal_mb_per_s": first_mb},
            "load": load,
        })
    }

    fn print(&self) {
        let (sb, rows) = (self.signal_bytes, self.rows);
        println!(
            "gateway bench: slice of {rows} rows, {:.1} MB of signal, {:.1} MB of Arrow data; median of {} rounds; {} cores",
            sb as f64 / 1e6,
            self.wire as f64 / 1e6,
            self.rounds,
            cores()
        );
        for (name, p, what) in [
            ("verified pull", &self.v, ""),
            (
                "plain Flight ",
                &self.b,
                " (same batches, no auth, no verification)",
            ),
            (
                "plain, route ",
                &self.a,
                " (the same, sent by the gateway's DoGet route, decoded in place)",
            ),
        ] {
            println!(
                "  {name}   {:.3} s = {:.0} MB/s signal ({:.0} MB/s Arrow), {:.0} rows/s{what}\n                  CPU {:.3} core-s ({:.2} cores busy); first batch after {:.1} ms; stream end {:.1} ms after the last batch",
                p.seconds,
                mb_per_s(sb, p.seconds),
                mb_per_s(self.wire, p.seconds),
                rows as f64 / p.seconds,
                p.cpu,
                p.cpu / p.seconds,
                p.first * 1e3,
                p.tail * 1e3,
            );
        }
        println!(
            "  verified / plain Flight throughput: {:.2}× (against the plain pull through the gateway's route: {:.2}×)",
            self.ratio, self.ratio_route
        );
        println!(
            "  verification: +{:.3} core-s over the same transport without it, of which ≥ {:.3} core-s is hashing the signal (BLAKE3, {:.2} GB/s on one core); with {} cores the ratio cannot exceed {:.2}",
            self.v.cpu - self.a.cpu,
            self.hash_floor,
            self.hash_rate / 1e9,
            cores(),
            self.bound
        );
        println!(
            "  first verified pull, rows read from the Parquet store: {:.3} s = {:.0} MB/s signal",
            self.first,
            mb_per_s(sb, self.first)
        );
        if let Some(l) = &self.load {
            self.print_load(l);
        }
    }

    fn print_load(&self, l: &crate::gateway_load::Load) {
        let (alone, together) = Self::load_rates(l);
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        println!(
            "load: a {}-row slice ({:.1} MB of signal) from a store of {} copies of the input ({} segments), gateway in its own process (1 GiB cache budget)",
            l.rows,
            l.signal_bytes as f64 / 1e6,
            l.copies,
            l.segments
        );
        println!(
            "  one verified pull alone       {:.3} s = {alone:.0} MB/s signal; gateway peak RSS {:.2} GiB",
            l.alone,
            gib(l.peak_alone)
        );
        println!(
            "  {} verified pulls at once      {:.3} s = {together:.0} MB/s signal in all; gateway peak RSS {:.2} GiB",
            l.concurrent,
            l.together,
            gib(l.peak_together)
        );
        println!(
            "  together / alone: {:.2}×; together / the verified pull above: {:.2}×; alone / the first pull from the store above: {:.2}×",
            together / alone,
            together / mb_per_s(self.signal_bytes, self.v.seconds),
            alone / mb_per_s(self.signal_bytes, self.first)
        );
    }
}

/// CPU time (user + system) of this process so far, in seconds: server, client and ledger of
/// the bench all run in it.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given and reads nothing else.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is a valid `who`.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Megabytes (10^6 bytes) per second.
fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / seconds / 1e6
}

/// Cores this process may run on.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Throughput of one core hashing the samples of rows of `row_bytes` bytes as the content
/// hash does (BLAKE3 of each row's samples, docs/datasets.md), over 64 MiB, best of three;
/// bytes per second.
fn signal_hash_rate(row_bytes: usize) -> f64 {
    let buf = vec![0.5f32; 16 << 20];
    let per_row = (row_bytes / 4).clamp(1, buf.len());
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        for row in buf.chunks(per_row) {
            std::hint::black_box(ecgfed_datasets::segment::signal_digest(row));
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    (buf.len() * 4) as f64 / best
}

/// Times one pull: wall time, process CPU time, time to the first batch, and the wait between
/// the last batch and the end of the stream.
struct PullTimer {
    started: Instant,
    cpu: f64,
    first: Option<f64>,
    last: f64,
}

impl PullTimer {
    fn start() -> Self {
        PullTimer {
            started: Instant::now(),
            cpu: cpu_seconds(),
            first: None,
            last: 0.0,
        }
    }

    /// A batch was handed over.
    fn batch(&mut self) {
        let e = self.started.elapsed().as_secs_f64();
        self.first.get_or_insert(e);
        self.last = e;
    }

    fn finish(self) -> Pull {
        let seconds = self.started.elapsed().as_secs_f64();
        Pull {
            seconds,
            cpu: cpu_seconds() - self.cpu,
            first: self.first.unwrap_or(seconds),
            tail: seconds - self.last,
        }
    }
}

/// One pull's figures (seconds).
#[derive(Debug, Clone, Copy)]
struct Pull {
    seconds: f64,
    cpu: f64,
    first: f64,
    tail: f64,
}

impl Pull {
    /// Field by field medians.
    fn median(v: &[Pull]) -> Pull {
        let m = |f: fn(&Pull) -> f64| {
            let mut x: Vec<f64> = v.iter().map(f).collect();
            x.sort_by(f64::total_cmp);
            crate::percentile(&x, 0.5)
        };
        Pull {
            seconds: m(|p| p.seconds),
            cpu: m(|p| p.cpu),
            first: m(|p| p.first),
            tail: m(|p| p.tail),
        }
    }

    fn json(&self, signal: u64, wire: u64, rows: u64) -> serde_json::Value {
        serde_json::json!({
            "seconds": self.seconds, "signal_mb_per_s": mb_per_s(signal, self.seconds),
            "arrow_mb_per_s": mb_per_s(wire, self.seconds), "rows_per_s": rows as f64 / self.seconds,
            "cpu_seconds": self.cpu, "cores_busy": self.cpu / self.seconds,
            "first_batch_seconds": self.first, "end_after_last_batch_seconds": self.tail,
        })
    }
}
