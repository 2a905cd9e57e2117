//! `ecgfed-bench datasets`: read throughput of every record under some folders (signals in
//! mV and annotations, all cores), a full ingest of the same folders, and given `--python`
//! the Python `wfdb` reader on the same folders (bench/wfdb_read.py), in the same run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use ecgfed_datasets::{IngestOptions, ingest};

/// `ecgfed-bench datasets`: read throughput and a full ingest; optionally the Python `wfdb`
/// reader too.
#[derive(clap::Args)]
pub struct DatasetsArgs {
    /// Folders to read.
    #[arg(required = true)]
    folders: Vec<PathBuf>,
    /// Python interpreter with `wfdb` installed (`scripts/setup.sh --bench` makes
    /// `.venv-bench/bin/python`); runs `bench/wfdb_read.py` on the same folders.
    #[arg(long)]
    python: Option<PathBuf>,
    /// The Python reader script (run from the repository root by default).
    #[arg(long, default_value = "bench/wfdb_read.py")]
    script: PathBuf,
    /// Skip the full ingest measurement.
    #[arg(long)]
    no_ingest: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `ecgfed-bench datasets`.
pub fn command(a: DatasetsArgs) -> Result<()> {
    run(
        &a.folders,
        a.python.as_deref(),
        &a.script,
        a.no_ingest,
        a.json,
    )
}

fn run(
    folders: &[PathBuf],
    python: Option<&Path>,
    script: &Path,
    no_ingest: bool,
    json: bool,
) -> Result<()> {
    let read = crate::read::read_all(folders);
    let mut report = serde_json::json!({
        "rust_read": {"records": read.records, "failed": read.failed, "bytes": read.bytes, "annotations": read.annotations,
                      "seconds": read.seconds, "mb_per_s": read.mb_per_s(), "records_per_s": read.records_per_s(),
                      "threads": rayon::current_num_threads()},
    });
    for (f, why) in &read.failures {
        eprintln!("read failed: {f}: {why}");
    }
    if !no_ingest {
        let dir = tempfile::tempdir().context("temporary folder for the ingest benchmark")?;
        let out = dir.path().join("store");
        let t = Instant::now();
        let m = ingest(
            folders,
            &out,
            &IngestOptions {
                site: "bench".into(),
                ..Default::default()
            },
            &|_| {},
        )?;
        let secs = t.elapsed().as_secs_f64();
        let bytes: u64 = m.sources.iter().map(|s| s.signal_bytes).sum();
        report["rust_ingest"] = serde_json::json!({"records": m.records, "segments": m.segments, "skipped": m.skipped,
            "seconds": secs, "mb_per_s": bytes as f64 / 1e6 / secs, "records_per_s": m.records as f64 / secs});
    }
    if let Some(py) = python {
        let mut args = vec!["--json".to_string()];
        args.extend(folders.iter().map(|f| f.display().to_string()));
        let v = crate::python_json(py, script, &args)?;
        let py_mbs = v["mb_per_s"].as_f64().unwrap_or(0.0);
        let py_rps = v["records_per_s"].as_f64().unwrap_or(0.0);
        report["ratio_read_mb_per_s"] = serde_json::json!(read.mb_per_s() / py_mbs.max(1e-9));
        report["ratio_read_records_per_s"] =
            serde_json::json!(read.records_per_s() / py_rps.max(1e-9));
        report["python_read"] = v;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{:<22} {:>8} {:>8} {:>10} {:>9} {:>10}",
        "run", "records", "failed", "seconds", "MB/s", "records/s"
    );
    let line = |name: &str, v: &serde_json::Value| {
        println!(
            "{:<22} {:>8} {:>8} {:>10.3} {:>9.1} {:>10.1}",
            name,
            v["records"],
            v.get("failed")
                .or(v.get("skipped"))
                .cloned()
                .unwrap_or_default(),
            v["seconds"].as_f64().unwrap_or(0.0),
            v["mb_per_s"].as_f64().unwrap_or(0.0),
            v["records_per_s"].as_f64().unwrap_or(0.0)
        );
    };
    line("rust read (ecgfed)", &report["rust_read"]);
    if !report["rust_ingest"].is_null() {
        line("rust full ingest", &report["rust_ingest"]);
    }
    if !report["python_read"].is_null() {
        line("python wfdb read", &report["python_read"]);
        println!(
            "read throughput ratio (rust / python): {:.1}x MB/s, {:.1}x records/s",
            report["ratio_read_mb_per_s"].as_f64().unwrap_or(0.0),
            report["ratio_read_records_per_s"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}
