//! Training-throughput benchmark: the real training loop ([`crate::train::train`], with the
//! Rust batch assembly from a [`CohortData`]) on synthetic windows, against
//! `bench/torch_baseline.py` (the same architecture in PyTorch on the same libtorch) run in
//! the same invocation.

use std::path::Path;

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::data::{CohortData, Part, RowMeta};
use crate::error::{Result, TrainerError};
use crate::spec::CohortSpec;

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
        toml::from_str("purpose = \"bench\"\n").map_err(|e| TrainerError::Plan(e.to_string()))?;
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
    let trained = crate::train::train(&data, &parts, &spec, tch::Device::Cpu, false)?;
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
    let out = std::process::Command::new(py)
        .arg(script)
        .args(["--rows", &o.rows.to_string()])
        .args(["--window", &o.window.to_string()])
        .args(["--batch", &o.batch.to_string()])
        .args(["--steps", &o.steps.to_string()])
        .args(["--warmup", &o.steps.to_string()])
        .args(["--channels", &channels.join(",")])
        .args(["--kernel", &o.kernel.to_string()])
        .arg("--json")
        .output()
        .map_err(|e| TrainerError::io(py, e))?;
    if !out.status.success() {
        return Err(TrainerError::io(
            script,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| TrainerError::io(script, format!("output is not JSON: {e}")))?;
    Ok(BenchSide {
        framework: v["framework"].as_str().unwrap_or("pytorch").to_string(),
        windows_per_sec: v["windows_per_sec"].as_f64().unwrap_or(0.0),
    })
}
