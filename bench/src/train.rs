//! `ecgfed-bench train`, training throughput: the trainer's real training loop
//! (`ecgfed_trainer::train::train`, with the Rust batch assembly from a [`CohortData`]) on
//! synthetic windows, against
//! `bench/torch_baseline.py` (the same architecture in PyTorch on the same libtorch) run in
//! the same invocation.

use std::path::Path;

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use anyhow::{Context, Result};
use ecgfed_trainer::CohortSpec;
use ecgfed_trainer::data::{CohortData, Part, RowMeta};

/// Benchmark settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchOptions {
    /// Synthetic rows.
    pub rows: usize,
    /// Samples per window.
    pub window: usize,
    /// Batch size.
    pub batch: usize,
    /// Timed steps (after as many untimed warm-up steps).
    pub steps: usize,
    /// Channels per stage.
    pub channels: Vec<i64>,
    /// Kernel size.
    pub kernel: i64,
}

/// Figures of one side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchSide {
    /// `tch` or `pytorch …`.
    pub framework: String,
    /// Training windows per second over the timed steps.
    pub windows_per_sec: f64,
}

/// The comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Settings.
    pub options: BenchOptions,
    /// libtorch threads.
    pub threads: i32,
    /// The Rust loop.
    pub rust: BenchSide,
    /// The PyTorch loop (null without a Python).
    pub python: Option<BenchSide>,
    /// rust / python windows per second.
    pub ratio: Option<f64>,
}

/// Runs the Rust loop, then (given `python`) the PyTorch baseline script.
pub fn run(opts: &BenchOptions, python: Option<&Path>, script: &Path) -> Result<BenchReport> {
    let mut spec: CohortSpec =
        toml::from_str("purpose = \"bench\"\n").context("the bench's cohort spec")?;
    spec.fill_defaults();
    spec.train.epochs = 2;
    spec.train.max_steps_per_epoch = opts.steps;
    spec.train.batch_size = opts.batch;
    spec.train.channels = opts.channels.clone();
    spec.train.kernel = opts.kernel;
    spec.train.val_fraction = 0.0;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let x: Vec<f32> = (0..opts.rows * opts.window)
        .map(|_| rng.gen_range(-2.0f32..2.0))
        .collect();
    let meta: Vec<RowMeta> = (0..opts.rows)
        .map(|i| RowMeta {
            site: "bench".into(),
            source: "bench".into(),
            segment_id: format!("bench/{i}@0"),
            record_id: i.to_string(),
            group: i.to_string(),
            sex: "unknown".into(),
            age_band: "unknown".into(),
            label: String::new(),
            class: i % spec.classes.len(),
            held_out: false,
            centre_ms: 0,
        })
        .collect();
    let data = CohortData {
        window: opts.window,
        meta,
        windows: x,
        ..Default::default()
    };
    let parts = vec![Part::Train; opts.rows];
    let trained = ecgfed_trainer::train::train(&data, &parts, &spec, tch::Device::Cpu, false)?;
    let rust = BenchSide {
        framework: "tch".into(),
        windows_per_sec: trained.history.last().map_or(0.0, |h| h.windows_per_sec),
    };
    let python = match python {
        Some(py) => Some(run_python(py, script, opts)?),
        None => None,
    };
    Ok(BenchReport {
        options: opts.clone(),
        threads: tch::get_num_threads(),
        ratio: python
            .as_ref()
            .map(|p| rust.windows_per_sec / p.windows_per_sec.max(1e-9)),
        rust,
        python,
    })
}

fn run_python(py: &Path, script: &Path, o: &BenchOptions) -> Result<BenchSide> {
    let channels: Vec<String> = o.channels.iter().map(|c| c.to_string()).collect();
    let args = [
        ("--rows", o.rows.to_string()),
        ("--window", o.window.to_string()),
        ("--batch", o.batch.to_string()),
        ("--steps", o.steps.to_string()),
        ("--warmup", o.steps.to_string()),
        ("--channels", channels.join(",")),
        ("--kernel", o.kernel.to_string()),
    ];
    let mut args: Vec<String> = args
        .into_iter()
        .flat_map(|(k, v)| [k.to_string(), v])
        .collect();
    args.push("--json".into());
    let v = crate::python_json(py, script, &args)?;
    Ok(BenchSide {
        framework: v["framework"].as_str().unwrap_or("pytorch").to_string(),
        windows_per_sec: v["windows_per_sec"].as_f64().unwrap_or(0.0),
    })
}

/// `ecgfed-bench train`: the trainer's training loop against the same network in PyTorch
/// (bench/torch_baseline.py, same libtorch), in the same invocation.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// Synthetic windows.
    #[arg(long, default_value_t = 4096)]
    rows: usize,
    /// Samples per window.
    #[arg(long, default_value_t = 1250)]
    window: usize,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Timed steps (after as many warm-up steps).
    #[arg(long, default_value_t = 40)]
    steps: usize,
    /// Channels per stage.
    #[arg(long, default_value = "32,64,128,128", value_delimiter = ',')]
    channels: Vec<i64>,
    /// Kernel size.
    #[arg(long, default_value_t = 9)]
    kernel: i64,
    /// Python with torch 2.13.0 for the baseline (omit to time the Rust loop only).
    #[arg(long)]
    python: Option<std::path::PathBuf>,
    /// The baseline script.
    #[arg(long, default_value = "bench/torch_baseline.py")]
    script: std::path::PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `ecgfed-bench train` and prints its report.
pub fn command(a: TrainArgs) -> Result<()> {
    let opts = BenchOptions {
        rows: a.rows,
        window: a.window,
        batch: a.batch,
        steps: a.steps,
        channels: a.channels,
        kernel: a.kernel,
    };
    let r = run(&opts, a.python.as_deref(), &a.script)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "training throughput, {} steps of {} windows of {} samples, {} libtorch threads:",
        opts.steps, opts.batch, opts.window, r.threads
    );
    println!(
        "  tch (Rust data path):  {:>8.1} windows/s",
        r.rust.windows_per_sec
    );
    if let Some(p) = &r.python {
        println!(
            "  {:<22} {:>8.1} windows/s",
            format!("{}:", p.framework),
            p.windows_per_sec
        );
    }
    if let Some(x) = r.ratio {
        println!("  ratio tch / PyTorch:   {x:>8.2}x");
    }
    Ok(())
}
