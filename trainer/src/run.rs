//! The data scientist's whole path: plan → `CohortCreated` → reserve and verified pull →
//! windows → train → evaluate → weights, model card, metrics and plots → `ModelTrained`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ecgfed_proto::v1::entry_body::Payload;
use ecgfed_proto::v1::{CohortCreated, ModelTrained};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::Device;

use crate::cohort::{Session, SiteInfo, SliceReport, cohort_sites};
use crate::data::{CohortData, Part, split_with, windows_from_batch};
use crate::datasheet::Datasheet;
use crate::error::{Result, TrainerError};
use crate::evaluation::{Evaluation, evaluate_cohort};
use crate::model::Arch;
use crate::plan::{Plan, solve};
use crate::spec::{ClassDef, Federation, LoadedSpec, SignalSpec, TrainSpec};
use crate::train::{EpochStats, predict, train};

/// The code version built into this binary (git commit, `-dirty` when the tree differed).
pub const CODE_VERSION: &str = env!("ECGFED_CODE_VERSION");

/// What `cohort plan` produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanOutcome {
    /// Cohort id.
    pub cohort_id: String,
    /// SHA-256 of the spec file (hex).
    pub spec_sha256: String,
    /// The solved plan (this run's strata).
    pub plan: Plan,
    /// The gateways' datasets.
    pub sites: Vec<SiteInfo>,
    /// Index of the CohortCreated entry (null for a dry run).
    pub ledger_index: Option<u64>,
    /// True when this run wrote the entry; false when it already existed or for a dry run.
    pub created: bool,
    /// The planned datasheet.
    pub datasheet: Datasheet,
    /// The entry on the ledger (the allocation that counts).
    #[serde(skip)]
    pub entry: Option<CohortCreated>,
}

/// The federation of a spec: `--federation` if given, else the spec's `federation` file.
pub fn federation_of(spec: &LoadedSpec, explicit: Option<&Path>) -> Result<Federation> {
    let path = explicit
        .map(Path::to_path_buf)
        .or_else(|| spec.federation_path())
        .ok_or_else(|| {
            TrainerError::spec(
                &spec.path,
                "no federation file: set `federation` in the spec or pass --federation",
            )
        })?;
    Federation::read(&path)
}

/// Collects strata, solves the allocation and (unless `dry_run`) writes `CohortCreated`, or
/// reuses the entry this spec already wrote.
pub async fn plan(spec: &LoadedSpec, session: &mut Session, dry_run: bool) -> Result<PlanOutcome> {
    let (strata, sites) = session.strata().await?;
    let train = &spec.spec.train;
    if let Some(s) = train
        .train_sites
        .iter()
        .find(|s| !sites.iter().any(|i| i.site == **s))
    {
        return Err(TrainerError::spec(
            &spec.path,
            format!("train.train_sites: {s:?} is not a site of the federation"),
        ));
    }
    let plan = solve(&spec.spec, &strata)?;
    let cohort_id = spec.cohort_id();
    let mut out = PlanOutcome {
        datasheet: Datasheet::planned(&cohort_id, &plan),
        cohort_id,
        spec_sha256: hex::encode(spec.sha256),
        plan,
        sites,
        ledger_index: None,
        created: false,
        entry: None,
    };
    if out.plan.cells.is_empty() {
        return Err(TrainerError::NothingToAllocate {
            shortfalls: out.plan.shortfalls.clone(),
        });
    }
    if dry_run {
        return Ok(out);
    }
    let c = session.create_cohort(spec, out.plan.allocation()).await?;
    out.ledger_index = Some(c.index);
    out.created = c.created;
    out.entry = Some(c.entry);
    Ok(out)
}

/// Reserves and pulls every site of `cohort`, each row verified, and assembles the windows
/// in (site, segment id) order.
pub async fn pull(
    spec: &LoadedSpec,
    session: &mut Session,
    cohort: &CohortCreated,
    sites: &[SiteInfo],
    progress: bool,
) -> Result<(CohortData, Vec<SliceReport>)> {
    let mut data = CohortData {
        window: spec.spec.window_samples(),
        ..Default::default()
    };
    let mut reports = Vec::new();
    for site in cohort_sites(cohort) {
        let info =
            sites
                .iter()
                .find(|s| s.site == site)
                .ok_or_else(|| TrainerError::NotInFederation {
                    site: site.clone(),
                    cohort: Some(cohort.cohort_id.clone()),
                })?;
        let held_out = spec.spec.held_out.contains(&site);
        let pb = if progress {
            indicatif::ProgressBar::new_spinner()
        } else {
            indicatif::ProgressBar::hidden()
        };
        pb.set_message(format!("pulling {site}"));
        let mut err = None;
        let mut rows = 0u64;
        let report = session
            .pull_site(cohort, info, |b| {
                if err.is_some() {
                    return;
                }
                match windows_from_batch(b, &spec.spec, &info.age_edges, held_out) {
                    Ok(a) => {
                        rows += a.meta.len() as u64;
                        data.meta.extend(a.meta);
                        data.windows.extend(a.windows);
                        data.other_lead.extend(a.other_lead);
                        pb.set_message(format!("pulling {site}: {rows} rows verified"));
                        pb.tick();
                    }
                    Err(e) => err = Some(e),
                }
            })
            .await?;
        pb.finish_and_clear();
        if let Some(e) = err {
            return Err(e);
        }
        reports.push(report);
    }
    data.sort();
    data.add_spec_features(&spec.spec);
    Ok((data, reports))
}

/// Options of a training run.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Output folder.
    pub out: PathBuf,
    /// `cpu` or `cuda`.
    pub device: String,
    /// Show progress bars.
    pub progress: bool,
    /// Federation file overriding the spec's.
    pub federation: Option<PathBuf>,
    /// Pull mode: a folder to write the verified windows and their parts to
    /// ([`CohortData::export`]); refused in federated mode.
    pub export_windows: Option<PathBuf>,
}

/// The model card (model-card.json): everything needed to use and to audit the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Model id (`model-` + 16 hex digits of the weights' SHA-256).
    pub model_id: String,
    /// SHA-256 of model.safetensors (hex).
    pub weights_sha256: String,
    /// Cohort id.
    pub cohort_id: String,
    /// SHA-256 of the cohort spec file (hex).
    pub spec_sha256: String,
    /// Ledger index of the CohortCreated entry.
    pub cohort_ledger_index: u64,
    /// Ledger index of the ModelTrained entry.
    pub ledger_index: u64,
    /// Requester (member id).
    pub requester: String,
    /// Code version (git commit at build time).
    pub code_version: String,
    /// Task.
    pub task: String,
    /// Label map.
    pub classes: Vec<ClassDef>,
    /// Classes averaged in macro-F1.
    pub scored: Vec<String>,
    /// Input: lead, rate, window.
    pub signal: SignalSpec,
    /// Samples per window.
    pub window_samples: usize,
    /// Architecture.
    pub arch: Arch,
    /// Hyper-parameters.
    pub train: TrainSpec,
    /// Seed.
    pub seed: u64,
    /// Device trained on.
    pub device: String,
    /// SHA-256 of the assembled cohort data (hex; `CohortData::data_hash`).
    pub data_sha256: String,
    /// The verified slices.
    pub slices: Vec<SliceReport>,
    /// Rows per part: train, validation, test, held-out.
    pub rows: BTreeMap<String, u64>,
    /// Epoch whose weights were kept.
    pub best_epoch: usize,
    /// Headline metrics (the ModelTrained metrics table).
    pub metrics: serde_json::Value,
    /// Federated mode: rounds, the round kept (`best_epoch` holds it too), settings, sites and
    /// the LocalRoundTrained entries; absent for pulled cohorts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federated: Option<serde_json::Value>,
}

/// What `train` produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOutcome {
    /// The model card.
    pub card: ModelCard,
    /// Full evaluation.
    pub evaluation: Evaluation,
    /// Per-epoch history.
    pub history: Vec<EpochStats>,
    /// Datasheet with achieved counts.
    pub datasheet: Datasheet,
    /// Files written.
    pub files: Vec<String>,
}

/// The device named by `name`.
pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        other => Err(TrainerError::Device {
            requested: other.into(),
        }),
    }
}

/// The headline metrics recorded in ModelTrained (JSON): validation and test per class and
/// macro-F1, per window and per record; held-out sites likewise; subgroups (on the test part).
pub fn metrics_table(e: &Evaluation) -> serde_json::Value {
    let brief = |r: &crate::metrics::Report| {
        serde_json::json!({
            "n": r.n,
            "macro_f1": r.macro_f1,
            "accuracy": r.accuracy,
            "ece": r.ece,
            "classes": r.classes.iter().map(|c| serde_json::json!({
                "class": c.class, "support": c.support, "precision": c.precision,
                "recall": c.recall, "f1": c.f1, "auroc": c.auroc
            })).collect::<Vec<_>>(),
        })
    };
    let scores = |s: &crate::evaluation::Scores| serde_json::json!({ "windows": brief(&s.windows), "records": brief(&s.records) });
    serde_json::json!({
        "validation": e.validation.as_ref().map(scores),
        "test": e.test.as_ref().map(scores),
        "held_out": e.held_out.iter().map(|(k, v)| (k.clone(), scores(v))).collect::<BTreeMap<_, _>>(),
        "by_sex_macro_f1": e.by_sex.iter().map(|(k, v)| (k.clone(), v.windows.macro_f1)).collect::<BTreeMap<_, _>>(),
        "by_age_band_macro_f1": e.by_age_band.iter().map(|(k, v)| (k.clone(), v.windows.macro_f1)).collect::<BTreeMap<_, _>>(),
        "by_site_macro_f1": e.by_site.iter().map(|(k, v)| (k.clone(), v.windows.macro_f1)).collect::<BTreeMap<_, _>>(),
    })
}

fn write(out: &Path, name: &str, bytes: &[u8], files: &mut Vec<String>) -> Result<()> {
    let p = out.join(name);
    std::fs::write(&p, bytes).map_err(|e| TrainerError::io(&p, e))?;
    files.push(name.to_string());
    Ok(())
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    let mut s = serde_json::to_vec_pretty(v).unwrap_or_default();
    s.push(b'\n');
    s
}

/// Plan → pull → train → evaluate → record. Writes model.safetensors, model-card.json,
/// metrics.json, history.json, datasheet.md/.json and the plots into `opts.out`.
pub async fn run_train(spec: &LoadedSpec, opts: &TrainOptions) -> Result<TrainOutcome> {
    let dev = device(&opts.device)?;
    let fed = federation_of(spec, opts.federation.as_deref())?;
    let mut session = Session::open(fed).await?;
    std::fs::create_dir_all(&opts.out).map_err(|e| TrainerError::io(&opts.out, e))?;
    let planned = plan(spec, &mut session, false).await?;
    let cohort = planned.entry.clone().ok_or(TrainerError::NoLedgerEntry)?;
    if opts.progress {
        eprintln!(
            "cohort {} ({} at ledger index {})",
            cohort.cohort_id,
            if planned.created {
                "created"
            } else {
                "already on the ledger"
            },
            planned.ledger_index.unwrap_or(0)
        );
    }
    let (mut data, slices) =
        pull(spec, &mut session, &cohort, &planned.sites, opts.progress).await?;
    let classes = spec.spec.class_names();
    let datasheet = planned
        .datasheet
        .clone()
        .with_achieved(&data.meta, &classes);
    let data_sha256 = hex::encode(data.data_hash());
    let t = &spec.spec.train;
    if !t.exclude_records.is_empty() {
        data.retain(|m| !t.exclude_records.contains(&m.record_id));
    }
    let mut parts = split_with(
        &data.meta,
        &t.val_records,
        spec.spec.fractions(),
        spec.spec.seed,
        classes.len(),
    );
    if !t.train_sites.is_empty() {
        // Other sites keep their test part (and held-out sites their rows) only.
        let keep: Vec<usize> = (0..data.len())
            .filter(|&i| {
                matches!(parts[i], Part::Test | Part::HeldOut)
                    || t.train_sites.contains(&data.meta[i].site)
            })
            .collect();
        data.take(&keep);
        parts = keep.iter().map(|&i| parts[i]).collect();
    }
    if let Some(dir) = &opts.export_windows {
        data.export(&parts, dir)?;
    }
    let trained = train(&data, &parts, &spec.spec, dev, opts.progress)?;
    // Only validation and held-out rows are evaluated: training rows are not run again.
    let eval_rows: Vec<usize> = (0..data.len())
        .filter(|&i| parts[i] != Part::Train)
        .collect();
    let probs = predict(&trained.model, &data, &eval_rows, dev);
    let evaluation = evaluate_cohort(&data, &parts, &probs, &classes, &spec.spec.scored);
    let mut files = Vec::new();
    let weights = opts.out.join("model.safetensors");
    trained.vs.save(&weights)?;
    files.push("model.safetensors".into());
    let wbytes = std::fs::read(&weights).map_err(|e| TrainerError::io(&weights, e))?;
    let wsha: [u8; 32] = Sha256::digest(&wbytes).into();
    let model_id = format!("model-{}", &hex::encode(wsha)[..16]);
    let metrics = metrics_table(&evaluation);
    let mut rows = BTreeMap::new();
    for p in [Part::Train, Part::Val, Part::Test, Part::HeldOut] {
        rows.insert(
            p.name().to_string(),
            parts.iter().filter(|x| **x == p).count() as u64,
        );
    }
    let hyper = serde_json::json!({
        "task": spec.spec.task,
        "classes": spec.spec.classes,
        "signal": spec.spec.signal,
        "arch": trained.arch,
        "train": spec.spec.train,
        "seed": spec.spec.seed,
        "device": opts.device,
        "best_epoch": trained.best_epoch,
        "steps": trained.steps,
        "data_sha256": data_sha256,
    });
    let index = session
        .record(Payload::ModelTrained(ModelTrained {
            model_id: model_id.clone(),
            cohort_id: cohort.cohort_id.clone(),
            weights_sha256: wsha.to_vec(),
            code_version: CODE_VERSION.to_string(),
            hyperparameters_json: hyper.to_string(),
            metrics_json: metrics.to_string(),
            ..Default::default()
        }))
        .await?;
    let card = ModelCard {
        model_id,
        weights_sha256: hex::encode(wsha),
        cohort_id: cohort.cohort_id.clone(),
        spec_sha256: planned.spec_sha256.clone(),
        cohort_ledger_index: planned.ledger_index.unwrap_or(0),
        ledger_index: index,
        requester: session.member().to_string(),
        code_version: CODE_VERSION.to_string(),
        task: spec.spec.task.clone(),
        classes: spec.spec.classes.clone(),
        scored: spec.spec.scored.clone(),
        signal: spec.spec.signal.clone(),
        window_samples: data.window,
        arch: trained.arch.clone(),
        train: spec.spec.train.clone(),
        seed: spec.spec.seed,
        device: opts.device.clone(),
        data_sha256,
        slices,
        rows,
        best_epoch: trained.best_epoch,
        metrics,
        federated: None,
    };
    write(&opts.out, "model-card.json", &json(&card), &mut files)?;
    write(&opts.out, "metrics.json", &json(&evaluation), &mut files)?;
    write(
        &opts.out,
        "history.json",
        &json(&trained.history),
        &mut files,
    )?;
    write(&opts.out, "datasheet.json", &json(&datasheet), &mut files)?;
    write(
        &opts.out,
        "datasheet.md",
        datasheet.render().as_bytes(),
        &mut files,
    )?;
    for (name, svg) in crate::plots::all(&trained.history, &evaluation, &classes) {
        write(&opts.out, &name, svg.as_bytes(), &mut files)?;
    }
    Ok(TrainOutcome {
        card,
        evaluation,
        history: trained.history,
        datasheet,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cuda` is the first GPU where libtorch sees one and a clear refusal elsewhere (what a
    /// gateway started with `--device cuda` stops on); anything else is refused everywhere.
    #[test]
    fn devices_are_cpu_or_a_cuda_that_libtorch_sees() {
        assert_eq!(device("cpu").unwrap(), Device::Cpu);
        match device("cuda") {
            Ok(d) => assert!(tch::Cuda::is_available() && d == Device::Cuda(0), "{d:?}"),
            Err(e) => {
                assert!(!tch::Cuda::is_available());
                assert_eq!(
                    e.to_string(),
                    "--device \"cuda\": libtorch sees no CUDA device on this machine"
                );
            }
        }
        let e = device("gpu").unwrap_err().to_string();
        assert_eq!(e, "--device \"gpu\": expected cpu or cuda");
    }
}
