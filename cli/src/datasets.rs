//! `ecgfed datasets ...` subcommands.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use ecgfed_datasets::store::{Manifest, read_record};
use ecgfed_datasets::strata::{Dimension, StrataOptions, strata};
use ecgfed_datasets::{IngestOptions, Progress, Segmentation, ingest, labels};
use indicatif::{ProgressBar, ProgressStyle};

/// Site-store subcommands.
#[derive(Subcommand)]
pub(crate) enum DatasetsCommand {
    /// Ingest folders of ECG records (WFDB, MATLAB v4) into a new site store.
    Ingest(IngestArgs),
    /// Summarise a site store (records, labels, demographics, warnings, errors).
    Summary {
        /// Store folder.
        store: PathBuf,
        /// Print the manifest as JSON (format in docs/datasets.md).
        #[arg(long)]
        json: bool,
    },
    /// Show the segments of one record (`<record>` or `<source>/<record>`).
    Inspect {
        /// Store folder.
        store: PathBuf,
        /// Record id, or `<source>/<record>` when several sources share record ids.
        record: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Include every sample in the JSON output (large).
        #[arg(long)]
        samples: bool,
    },
    /// Count segments, records and patients by label × sex × age band × source × site.
    Strata {
        /// Store folder.
        store: PathBuf,
        /// Dimensions, comma-separated: label, sex, age_band, source, site.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "label,sex,age_band,source,site"
        )]
        by: Vec<String>,
        /// Age band edges, comma-separated (default 20,40,60,80: 0-19, 20-39, ..., 80+).
        #[arg(long, value_delimiter = ',', default_value = "20,40,60,80")]
        age_bands: Vec<u8>,
        /// Suppress cells with fewer distinct patients than this.
        #[arg(long, default_value_t = 10)]
        k: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Segmentation modes.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum SegmentationMode {
    /// Fixed windows labelled by the rhythm in force.
    Windows,
    /// Beat-centred windows labelled with the AAMI class (records without beat annotations
    /// fall back to fixed windows).
    Beats,
}

/// Arguments of `ecgfed datasets ingest`.
#[derive(Args)]
pub(crate) struct IngestArgs {
    /// Folders to ingest (a source folder, or a folder of source folders).
    #[arg(required = true)]
    folders: Vec<PathBuf>,
    /// Site name recorded in every row.
    #[arg(long)]
    site: String,
    /// Store folder to create.
    #[arg(long)]
    out: PathBuf,
    /// Replace an existing store (atomically, only once the new one is complete).
    #[arg(long)]
    force: bool,
    /// Segmentation.
    #[arg(long, value_enum, default_value = "windows")]
    segmentation: SegmentationMode,
    /// Window length in seconds for fixed windows (0 = whole record).
    #[arg(long, default_value_t = 10.0)]
    window_secs: f64,
    /// Window length in seconds for beat-centred windows.
    #[arg(long, default_value_t = 1.0)]
    beat_secs: f64,
    /// Resample every record to this rate (Hz).
    #[arg(long)]
    resample: Option<u32>,
    /// Keep only these leads (comma-separated, case-insensitive), in this order.
    #[arg(long, value_delimiter = ',')]
    leads: Option<Vec<String>>,
    /// Print the summary as JSON at the end.
    #[arg(long)]
    json: bool,
}

/// Runs a datasets subcommand.
pub(crate) fn run(cmd: DatasetsCommand) -> Result<()> {
    match cmd {
        DatasetsCommand::Ingest(a) => run_ingest(a),
        DatasetsCommand::Summary { store, json } => {
            let m = Manifest::read(&store)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                print_summary(&m);
            }
            Ok(())
        }
        DatasetsCommand::Inspect {
            store,
            record,
            json,
            samples,
        } => inspect(&store, &record, json, samples),
        DatasetsCommand::Strata {
            store,
            by,
            age_bands,
            k,
            json,
        } => {
            let by = by
                .iter()
                .map(|d| {
                    Dimension::parse(d).with_context(|| {
                        format!("unknown dimension `{d}` (use label, sex, age_band, source, site)")
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let t = strata(
                &store,
                &StrataOptions {
                    by,
                    age_edges: age_bands,
                    k,
                },
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                println!("{}  segments  records  patients", t.dimensions.join("  "));
                for c in &t.cells {
                    println!(
                        "{}  {}  {}  {}",
                        c.key.join("  "),
                        c.segments,
                        c.records,
                        c.patients
                    );
                }
                println!(
                    "{} cell(s) with fewer than {} patients suppressed",
                    t.suppressed_cells, t.k
                );
            }
            Ok(())
        }
    }
}

fn run_ingest(a: IngestArgs) -> Result<()> {
    if !(a.window_secs >= 0.0 && a.window_secs.is_finite()) {
        bail!("--window-secs must be 0 (whole record) or a positive number of seconds");
    }
    if !(a.beat_secs > 0.0 && a.beat_secs.is_finite()) {
        bail!("--beat-secs must be a positive number of seconds");
    }
    let segmentation = match a.segmentation {
        SegmentationMode::Windows => Segmentation::Windows {
            secs: a.window_secs,
        },
        SegmentationMode::Beats => Segmentation::Beats {
            secs: a.beat_secs,
            fallback_secs: a.window_secs,
        },
    };
    let opts = IngestOptions {
        site: a.site.clone(),
        segmentation,
        resample_hz: a.resample,
        leads: a.leads.clone(),
        force: a.force,
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} records {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let progress = |p: Progress<'_>| match p {
        Progress::Discovered { records } => bar.set_length(records),
        Progress::Record {
            source,
            record,
            error,
        } => {
            bar.inc(1);
            bar.set_message(format!("{source}/{record}"));
            if let Some(e) = error {
                bar.suspend(|| eprintln!("skipped: {e}"));
            }
        }
    };
    let result = ingest(&a.folders, &a.out, &opts, &progress);
    bar.finish_and_clear();
    let m = result?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&m)?);
    } else {
        print_summary(&m);
        println!(
            "store written to {} in {:.1} s",
            a.out.display(),
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn counts<K: AsRef<str>>(
    m: impl IntoIterator<Item = (K, u64)>,
    name: impl Fn(&str) -> String,
) -> String {
    m.into_iter()
        .map(|(k, v)| format!("{} {v}", name(k.as_ref())))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn print_summary(m: &Manifest) {
    println!(
        "site {} — {} records, {} segments, {} skipped ({}; written by {} at {})",
        m.site,
        m.records,
        m.segments,
        m.skipped,
        match m.settings.segmentation {
            Segmentation::Windows { secs } => format!("windows of {secs} s"),
            Segmentation::Beats { secs, .. } => format!("beat windows of {secs} s"),
        },
        m.tool,
        m.created
    );
    for s in &m.sources {
        println!();
        println!(
            "{} ({}): {} records, {} segments, {} skipped, {:.1} MB of signal",
            s.id,
            s.layout,
            s.records,
            s.segments,
            s.skipped,
            s.signal_bytes as f64 / 1e6
        );
        println!(
            "  labels (records):  {}",
            counts(s.records_by_label.iter().map(|(k, v)| (k, *v)), |k| {
                labels::short_name(k).to_string()
            })
        );
        if s.records_by_raw_label.len() <= 12 && !s.records_by_raw_label.is_empty() {
            println!(
                "  source labels:     {}",
                counts(s.records_by_raw_label.iter().map(|(k, v)| (k, *v)), |k| k
                    .to_string())
            );
        }
        println!(
            "  segments by label: {}",
            counts(s.segments_by_label.iter().map(|(k, v)| (k, *v)), |k| {
                labels::short_name(k).to_string()
            })
        );
        if !s.segments_by_label_origin.is_empty() {
            println!(
                "  labels taken from: {}",
                counts(
                    s.segments_by_label_origin.iter().map(|(k, v)| (k, *v)),
                    |k| k.replace('_', " ")
                )
            );
        }
        println!(
            "  sex:               {}",
            counts(s.sex.iter().map(|(k, v)| (k, *v)), |k| k.to_string())
        );
        let a = &s.age;
        match (a.min, a.median, a.max) {
            (Some(lo), Some(med), Some(hi)) => println!(
                "  age:               min {lo}, median {med}, max {hi}, unknown {}",
                a.unknown
            ),
            _ => println!("  age:               unknown for all {} records", a.unknown),
        }
        if let Some(an) = &s.annotations {
            if an.beats > 0 {
                println!(
                    "  beats:             {} ({})",
                    an.beats,
                    counts(an.beats_by_aami.iter().map(|(k, v)| (k, *v)), |k| k
                        .to_string())
                );
            }
            if an.wave_annotations > 0 {
                println!("  wave annotations:  {}", an.wave_annotations);
            }
        }
        if !s.unmapped_codes.is_empty() {
            println!(
                "  unmapped codes:    {} distinct, kept in label_raw ({})",
                s.unmapped_codes.len(),
                counts(s.unmapped_codes.iter().take(8).map(|(k, v)| (k, *v)), |k| k
                    .to_string())
            );
        }
        for (kind, w) in &s.warnings {
            println!(
                "  warning: {kind}: {} record(s) — {}",
                w.records.len(),
                w.meaning
            );
        }
        for e in &s.errors {
            println!("  skipped: {}: {}", e.file, e.reason);
        }
        if s.license.is_some() {
            println!("  licence and attribution: kept in manifest.json");
        }
    }
    for e in &m.errors {
        println!("folder not ingested: {}: {}", e.file, e.reason);
    }
}

fn inspect(store: &Path, record: &str, json: bool, samples: bool) -> Result<()> {
    let segs = read_record(store, record)?;
    if segs.is_empty() {
        bail!("{}: no record `{record}` in this store", store.display());
    }
    let mut rows = Vec::new();
    for s in &segs {
        let g = &s.segment;
        let ok = g.content_hash() == s.content_hash;
        let per_lead = g.signal.len() / g.leads.len().max(1);
        let leads: Vec<serde_json::Value> = g.leads.iter().enumerate().map(|(i, name)| {
            let x = &g.signal[i * per_lead..(i + 1) * per_lead];
            let finite: Vec<f32> = x.iter().copied().filter(|v| v.is_finite()).collect();
            let min = finite.iter().copied().fold(f32::INFINITY, f32::min);
            let max = finite.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut o = serde_json::json!({"lead": name, "min_mv": min, "max_mv": max, "first_mv": &x[..x.len().min(5)]});
            if samples {
                o["samples_mv"] = serde_json::json!(x);
            }
            o
        }).collect();
        rows.push(serde_json::json!({
            "segment_id": g.segment_id(), "record_id": g.record_id, "patient": g.patient, "site": g.site,
            "source": g.source, "fs": g.fs, "start_sample": g.start_sample, "n_samples": g.n_samples,
            "samples_per_lead": per_lead, "label": g.label, "label_raw": g.label_raw, "age": g.age,
            "sex": g.sex.map(|s| s.code()), "content_hash": hex::encode(s.content_hash), "hash_verified": ok,
            "leads": leads,
        }));
        if !json {
            println!(
                "{}  {} samples @ {} Hz  label {} ({})  raw [{}]  age {}  sex {}  hash {}…{}",
                g.segment_id(),
                per_lead,
                g.fs,
                labels::short_name(&g.label),
                g.label,
                g.label_raw.join(","),
                g.age.map_or("unknown".into(), |a| a.to_string()),
                g.sex.map_or("unknown", |s| s.code()),
                &hex::encode(s.content_hash)[..16],
                if ok { " verified" } else { " MISMATCH" }
            );
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    if segs
        .iter()
        .any(|s| s.segment.content_hash() != s.content_hash)
    {
        bail!("content hash mismatch: the store was modified after ingest");
    }
    Ok(())
}
