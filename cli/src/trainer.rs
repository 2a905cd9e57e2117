//! `ecgfed cohort plan`, `ecgfed train` and `ecgfed predict` (docs/cohorts.md,
//! docs/training.md).

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use ecgfed_trainer::cohort::Session;
use ecgfed_trainer::evaluation::class_table;
use ecgfed_trainer::predict::Model;
use ecgfed_trainer::run::{TrainOptions, federation_of, plan, run_train};
use ecgfed_trainer::spec::LoadedSpec;

use crate::ledger::runtime;

/// `ecgfed cohort` subcommands.
#[derive(Subcommand)]
pub(crate) enum CohortCommand {
    /// Collect strata from every gateway, solve the allocation, write CohortCreated (or reuse
    /// the entry this spec wrote before) and print the cohort datasheet.
    Plan {
        /// Cohort spec (TOML, docs/cohorts.md).
        #[arg(long)]
        spec: PathBuf,
        /// Federation file (ledger, identity, gateways); default: the spec's `federation`.
        #[arg(long)]
        federation: Option<PathBuf>,
        /// Plan without writing anything to the ledger.
        #[arg(long)]
        dry_run: bool,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `ecgfed cohort ...`.
pub(crate) fn run_cohort(cmd: CohortCommand) -> Result<()> {
    let CohortCommand::Plan {
        spec,
        federation,
        dry_run,
        json,
    } = cmd;
    let spec = LoadedSpec::read(&spec)?;
    let fed = federation_of(&spec, federation.as_deref())?;
    let out = runtime()?.block_on(async {
        let mut s = Session::open(fed).await?;
        plan(&spec, &mut s, dry_run).await
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    print!("{}", out.datasheet.render());
    println!();
    for (c, t, p) in &out.plan.targets {
        println!("class {c}: target {t}, planned {p}");
    }
    match out.ledger_index {
        Some(i) if out.created => println!("CohortCreated {} at ledger index {i}", out.cohort_id),
        Some(i) => println!(
            "cohort {} is already on the ledger (index {i}); its allocation stands",
            out.cohort_id
        ),
        None => println!("dry run: cohort {} not written", out.cohort_id),
    }
    Ok(())
}

/// Runs `ecgfed train`.
pub(crate) fn run_train_cmd(
    spec: PathBuf,
    out: PathBuf,
    device: String,
    federation: Option<PathBuf>,
    json: bool,
    export_windows: Option<PathBuf>,
) -> Result<()> {
    let spec = LoadedSpec::read(&spec)?;
    let opts = TrainOptions {
        out: out.clone(),
        device,
        progress: !json,
        federation,
        export_windows,
    };
    if spec.spec.is_federated() {
        return run_federated_cmd(&spec, &opts, json);
    }
    let r = runtime()?.block_on(run_train(&spec, &opts))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let c = &r.card;
    println!(
        "model {} trained on cohort {} ({} train / {} validation / {} held-out rows), best epoch {}",
        c.model_id,
        c.cohort_id,
        c.rows.get("train").unwrap_or(&0),
        c.rows.get("validation").unwrap_or(&0),
        c.rows.get("held_out").unwrap_or(&0),
        c.best_epoch
    );
    print_evaluation(&r.evaluation);
    print_recorded(c, &out, &r.files);
    Ok(())
}

/// `ecgfed train` of a federated cohort: rounds at the gateways, no row pulled.
fn run_federated_cmd(spec: &LoadedSpec, opts: &TrainOptions, json: bool) -> Result<()> {
    let r = runtime()?.block_on(ecgfed_trainer::federated::run_federated(spec, opts))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let c = &r.card;
    println!(
        "model {} trained on federated cohort {} in {} rounds at the gateways (no row left a site), kept round {}",
        c.model_id,
        c.cohort_id,
        r.rounds.len(),
        c.best_epoch
    );
    print_evaluation(&r.evaluation);
    print_recorded(c, &opts.out, &r.files);
    Ok(())
}

/// Where the model was recorded and written.
fn print_recorded(c: &ecgfed_trainer::run::ModelCard, out: &std::path::Path, files: &[String]) {
    println!(
        "ModelTrained at ledger index {} (weights SHA-256 {}); files in {}: {}",
        c.ledger_index,
        c.weights_sha256,
        out.display(),
        files.join(", ")
    );
}

/// The validation and held-out tables of an evaluation.
fn print_evaluation(e: &ecgfed_trainer::evaluation::Evaluation) {
    if let Some(v) = &e.validation {
        print!("{}", class_table("validation, windows", &v.windows));
        print!("{}", class_table("validation, records", &v.records));
    }
    if let Some(t) = &e.test {
        print!("{}", class_table("test (scored once), windows", &t.windows));
        print!("{}", class_table("test (scored once), records", &t.records));
    }
    for (site, s) in &e.held_out {
        print!(
            "{}",
            class_table(&format!("held-out {site}, windows"), &s.windows)
        );
        print!(
            "{}",
            class_table(&format!("held-out {site}, records"), &s.records)
        );
    }
}

/// Runs `ecgfed predict`.
pub(crate) fn run_predict(model: PathBuf, records: Vec<PathBuf>, json: bool) -> Result<()> {
    let m = Model::load(&model)?;
    let mut failed = 0;
    let mut out = Vec::new();
    for r in &records {
        match m.predict_record(r) {
            Ok(p) => {
                if !json {
                    let probs: Vec<String> = m
                        .card
                        .classes
                        .iter()
                        .zip(&p.probabilities)
                        .map(|(c, v)| format!("{}={v:.3}", c.name))
                        .collect();
                    println!(
                        "{}: {} ({}; {} windows of lead {})",
                        p.record,
                        p.class,
                        probs.join(" "),
                        p.windows,
                        p.lead
                    );
                }
                out.push(serde_json::to_value(&p)?);
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
                out.push(serde_json::json!({ "record": r.display().to_string(), "error": e.to_string() }));
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} records could not be classified",
            records.len()
        );
    }
    Ok(())
}
