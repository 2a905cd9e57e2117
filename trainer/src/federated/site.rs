//! The training a gateway runs at home in a federated round ([`SiteTrainer`], its
//! `LocalTrainer`): the rows the gateway read from its own store are verified against the slice
//! root first, exactly as a pulling scientist verifies them, then windowed and split by patient
//! with the spec's own rules, and the global model is trained on the training part or scored
//! on the evaluation part.

use std::path::Path;

use ecgfed_gateway::client::SliceVerifier;
use ecgfed_gateway::federated::{
    DpSpent, EvalPart, LocalJob, LocalScores, LocalTrainer, LocalTrainingError, LocalUpdate,
    SliceRows,
};
use sha2::{Digest, Sha256};
use tch::Device;
use tch::nn::VarStore;

use crate::data::RowMeta;
use crate::data::{CohortData, Part, split_with, windows_from_batch};
use crate::evaluation::{Scores, scores, scores_by};
use crate::federated::{flatten, load_flat};
use crate::model::ResNet1d;
use crate::spec::{AGGREGATION_FEDPROX, CohortSpec, LoadedSpec};
use crate::train::{
    LocalRun, LocalStats, arch_of, class_weights_of, dp_schedule, predict, round_lr,
};
use ecgfed_audit::privacy::{DpSteps, epsilon};

/// What a gateway's Evaluate answers (as JSON): a model's scores on the site's evaluation
/// rows, overall, per sex and per age band. Only these counts and rates leave.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SiteScores {
    /// `validation` or `test` (a training site's part) or `held_out` (every row).
    pub part: String,
    /// Per window and per record.
    pub scores: Scores,
    /// Per sex.
    pub by_sex: std::collections::BTreeMap<String, Scores>,
    /// Per age band.
    pub by_age_band: std::collections::BTreeMap<String, Scores>,
}

/// A gateway's local trainer (libtorch, on `cpu` or `cuda`).
#[derive(Debug, Clone)]
pub struct SiteTrainer {
    device: Device,
    device_name: String,
}

fn failed(e: impl std::error::Error + Send + Sync + 'static) -> LocalTrainingError {
    LocalTrainingError::Failed(Box::new(e))
}

impl SiteTrainer {
    /// A trainer on `device` (`cpu` or `cuda`).
    pub fn new(device: &str) -> crate::error::Result<SiteTrainer> {
        Ok(SiteTrainer {
            device: crate::run::device(device)?,
            device_name: device.to_string(),
        })
    }

    /// The cohort spec the rows came with (its hash was checked by the gateway against the
    /// cohort's on the ledger).
    fn spec(rows: &SliceRows) -> Result<CohortSpec, LocalTrainingError> {
        let label = Path::new("cohort spec of the round");
        LoadedSpec::from_bytes(label, &rows.spec)
            .map(|s| s.spec)
            .map_err(|e| LocalTrainingError::Invalid(e.to_string()))
    }

    /// The site's rows, each verified against the slice root, as windows in segment order.
    fn assemble(
        rows: &SliceRows,
        spec: &CohortSpec,
        held_out: bool,
    ) -> Result<CohortData, LocalTrainingError> {
        let mut verifier = SliceVerifier::new(rows.slice_root.0, rows.slice_size);
        let mut data = CohortData {
            window: spec.window_samples(),
            ..Default::default()
        };
        let mut verified = 0u64;
        for b in &rows.batches {
            verified += verifier
                .verify_batch(b)
                .map_err(LocalTrainingError::Verification)?
                .rows;
            let a = windows_from_batch(b, spec, &rows.age_edges, held_out).map_err(failed)?;
            data.meta.extend(a.meta);
            data.windows.extend(a.windows);
            data.other_lead.extend(a.other_lead);
        }
        if verified + rows.erased != rows.slice_size {
            return Err(LocalTrainingError::Failed(
                format!(
                    "slice of {} at {}: {verified} rows verified and {} erased, of {} leaves",
                    rows.cohort_id, rows.site, rows.erased, rows.slice_size
                )
                .into(),
            ));
        }
        data.sort();
        data.add_spec_features(spec);
        if !spec.train.exclude_records.is_empty() {
            data.retain(|m| !spec.train.exclude_records.contains(&m.record_id));
        }
        Ok(data)
    }

    /// The spec's network with `model`'s weights.
    fn network(
        &self,
        spec: &CohortSpec,
        model: &[f32],
    ) -> Result<(VarStore, ResNet1d), LocalTrainingError> {
        if spec.train.threads > 0 {
            tch::set_num_threads(spec.train.threads);
        }
        let vs = VarStore::new(self.device);
        let net = ResNet1d::new(&vs.root(), &arch_of(spec));
        load_flat(&vs, model).map_err(|e| LocalTrainingError::Invalid(e.to_string()))?;
        Ok((vs, net))
    }
}

/// The parts of the site's rows: the spec's split by patient (validation records when named).
fn parts(data: &CohortData, spec: &CohortSpec) -> Vec<Part> {
    let t = &spec.train;
    split_with(
        &data.meta,
        &t.val_records,
        spec.fractions(),
        spec.seed,
        spec.classes.len(),
    )
}

/// Class weights every site uses: from the rows per class of the cohort's training sites (its
/// allocation on the ledger), not from the site's own rows.
fn cohort_class_weights(spec: &CohortSpec, job: &LocalJob) -> Vec<f32> {
    let mut counts = vec![0f64; spec.classes.len()];
    for a in &job.allocation {
        if spec.held_out.contains(&a.site) {
            continue;
        }
        if let Some(c) = spec.class_of(&a.label) {
            counts[c] += a.count as f64;
        }
    }
    class_weights_of(&counts, spec.train.class_weight_power)
}

/// Refuses round `round` when its `planned` DP-SGD would take the site's ε for the cohort (at
/// the hospital's δ, over every round it spent) past the hospital's budget.
fn within_budget(rows: &SliceRows, planned: DpSteps, round: u32) -> Result<(), LocalTrainingError> {
    let (before, after) = epsilon_with(&rows.dp_spent, planned, rows.epsilon_delta);
    if rows.max_epsilon > 0.0 && after > rows.max_epsilon {
        return Err(LocalTrainingError::Invalid(format!(
            "site {} would exceed its privacy budget for cohort {}: ε = {after:.3} at δ = {} with round {round} (ε = {before:.3} over the {} rounds it trained so far); its budget is ε ≤ {}",
            rows.site,
            rows.cohort_id,
            rows.epsilon_delta,
            rows.dp_spent.len(),
            rows.max_epsilon
        )));
    }
    Ok(())
}

/// A site's ε (at `delta`) over the rounds it `spent`, and with `planned` added.
fn epsilon_with(spent: &[DpSpent], planned: DpSteps, delta: f64) -> (f64, f64) {
    let mut runs: Vec<DpSteps> = spent
        .iter()
        .map(|s| DpSteps {
            sample_rate: s.sample_rate,
            noise_multiplier: s.noise_multiplier,
            steps: s.steps,
        })
        .collect();
    let before = if runs.is_empty() {
        0.0
    } else {
        epsilon(&runs, delta).0
    };
    runs.push(planned);
    (before, epsilon(&runs, delta).0)
}

/// The local seed of a site's round: the first 8 bytes (big-endian) of SHA-256(spec seed ‖
/// site ‖ round).
fn local_seed(seed: u64, site: &str, round: u32) -> u64 {
    let mut h = Sha256::new();
    h.update(seed.to_be_bytes());
    h.update(site.as_bytes());
    h.update(round.to_be_bytes());
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

impl LocalTrainer for SiteTrainer {
    fn train(&self, job: LocalJob) -> Result<LocalUpdate, LocalTrainingError> {
        let spec = Self::spec(&job.rows)?;
        let site = job.rows.site.clone();
        if spec.held_out.contains(&site) {
            return Err(LocalTrainingError::Invalid(format!(
                "site {site} is held out of cohort {}: it evaluates, it does not train",
                job.rows.cohort_id
            )));
        }
        if !spec.is_federated() {
            return Err(LocalTrainingError::Invalid(format!(
                "the spec of cohort {} is not in federated mode",
                job.rows.cohort_id
            )));
        }
        let f = spec.federated_settings();
        let floor = job.rows.min_noise_multiplier;
        if floor > 0.0 && f.dp.is_none_or(|d| d.noise_multiplier < floor) {
            return Err(LocalTrainingError::Invalid(format!(
                "site {site} trains only with differential privacy of noise multiplier at least {floor} (its policy); the spec of cohort {} asks for {}",
                job.rows.cohort_id,
                f.dp.map_or("none".to_string(), |d| format!(
                    "σ = {}",
                    d.noise_multiplier
                ))
            )));
        }
        let budget = job.rows.max_epsilon;
        if budget > 0.0 && f.dp.is_none() {
            return Err(LocalTrainingError::Invalid(format!(
                "site {site} has a privacy budget (ε ≤ {budget} at δ = {}, its policy): it trains only with differential privacy; the spec of cohort {} has none",
                job.rows.epsilon_delta, job.rows.cohort_id
            )));
        }
        if job.round as usize > f.rounds {
            return Err(LocalTrainingError::Invalid(format!(
                "round {} of cohort {}: its spec has {} rounds",
                job.round, job.rows.cohort_id, f.rounds
            )));
        }
        if let Some(h) = job.participants.iter().find(|p| spec.held_out.contains(p)) {
            return Err(LocalTrainingError::Invalid(format!(
                "participant {h} is held out of cohort {}: held-out sites do not train",
                job.rows.cohort_id
            )));
        }
        if job.participants.len() < f.min_sites {
            return Err(LocalTrainingError::Invalid(format!(
                "{} participants; the spec of cohort {} asks for at least {} a round",
                job.participants.len(),
                job.rows.cohort_id,
                f.min_sites
            )));
        }
        let data = Self::assemble(&job.rows, &spec, false)?;
        let parts = parts(&data, &spec);
        let train_idx: Vec<usize> = (0..data.len())
            .filter(|&i| parts[i] == Part::Train)
            .collect();
        if let Some(d) = f.dp.filter(|_| budget > 0.0) {
            let (q, steps) = dp_schedule(
                train_idx.len(),
                spec.train.batch_size,
                f.local_epochs,
                f.local_steps,
            );
            let planned = DpSteps {
                sample_rate: q,
                noise_multiplier: d.noise_multiplier,
                steps: steps as u64,
            };
            within_budget(&job.rows, planned, job.round)?;
        }
        let (vs, net) = self.network(&spec, &job.model)?;
        let weights = cohort_class_weights(&spec, &job);
        let lr = round_lr(&spec, job.round as usize, f.rounds);
        let mu = if f.aggregation == AGGREGATION_FEDPROX {
            f.mu
        } else {
            0.0
        };
        let seed = local_seed(spec.seed, &site, job.round);
        let dp = f.dp.map(|d| (d.clip_norm, d.noise_multiplier));
        let stats = if train_idx.is_empty() {
            LocalStats {
                loss: 0.0,
                steps: 0,
                sample_rate: 0.0,
            }
        } else {
            LocalRun {
                data: &data,
                train_idx: &train_idx,
                spec: &spec,
                class_weights: &weights,
                lr,
                epochs: f.local_epochs,
                max_steps: f.local_steps,
                mu,
                seed,
                device: self.device,
                dp,
            }
            .run(&net, &vs)
            .map_err(failed)?
        };
        let delta: Vec<f32> = flatten(&vs)
            .iter()
            .zip(&job.model)
            .map(|(l, g)| l - g)
            .collect();
        let mut training = serde_json::json!({
            "round": job.round,
            "aggregation": f.aggregation,
            "mu": mu,
            "local_epochs": f.local_epochs,
            "local_steps": f.local_steps,
            "steps": stats.steps,
            "lr": lr,
            "batch_size": spec.train.batch_size,
            "device": self.device_name,
        });
        if let Some(d) = f.dp {
            // This round's DP-SGD; the site's ε over the cohort is the composition of every
            // round it recorded (an auditor recomputes it from the ledger).
            let round = DpSteps {
                sample_rate: stats.sample_rate,
                noise_multiplier: d.noise_multiplier,
                steps: stats.steps as u64,
            };
            let (eps, order) = epsilon(&[round], d.delta);
            training["dp"] = serde_json::json!({
                "clip_norm": d.clip_norm,
                "noise_multiplier": d.noise_multiplier,
                "sample_rate": stats.sample_rate,
                "steps": stats.steps,
                "delta": d.delta,
                "round_epsilon": eps,
                "order": order,
                "accountant": "rdp-poisson-subsampled-gaussian",
            });
        }
        Ok(LocalUpdate {
            delta,
            rows: train_idx.len() as u64,
            // Under DP the loss over the site's rows is withheld: it is not covered by the
            // noise and would tell about them.
            train_loss: if dp.is_some() { f64::NAN } else { stats.loss },
            training,
        })
    }

    fn evaluate(
        &self,
        rows: SliceRows,
        model: Vec<f32>,
        part: EvalPart,
    ) -> Result<LocalScores, LocalTrainingError> {
        let spec = Self::spec(&rows)?;
        let held_out = spec.held_out.contains(&rows.site);
        let data = Self::assemble(&rows, &spec, held_out)?;
        let parts = parts(&data, &spec);
        let (want, name) = match (held_out, part) {
            (true, EvalPart::Test) => (Part::HeldOut, "held_out"),
            (true, EvalPart::Validation) => {
                return Err(LocalTrainingError::Invalid(format!(
                    "site {} is held out of cohort {}: its rows are scored once, as part \"test\", not per round",
                    rows.site, rows.cohort_id
                )));
            }
            (false, EvalPart::Validation) => (Part::Val, "validation"),
            (false, EvalPart::Test) => (Part::Test, "test"),
        };
        let idx: Vec<usize> = (0..data.len()).filter(|&i| parts[i] == want).collect();
        let (_vs, net) = self.network(&spec, &model)?;
        let probs = predict(&net, &data, &idx, self.device);
        let classes = spec.class_names();
        // A subgroup of fewer than k distinct patients is not answered (as the strata).
        let k = rows.k.max(1) as usize;
        let by = |key: &dyn Fn(&RowMeta) -> String| {
            let mut groups = scores_by(&idx, &data.meta, &probs, &classes, &spec.scored, key);
            groups.retain(|g, _| {
                let patients: std::collections::HashSet<&str> = idx
                    .iter()
                    .map(|&i| &data.meta[i])
                    .filter(|m| key(m) == *g)
                    .map(|m| m.group.as_str())
                    .collect();
                patients.len() >= k
            });
            groups
        };
        let report = SiteScores {
            part: name.into(),
            scores: scores(
                &idx,
                &data.meta,
                &probs,
                classes.len(),
                &classes,
                &spec.scored,
            ),
            by_sex: by(&|m| m.sex.clone()),
            by_age_band: by(&|m| m.age_band.clone()),
        };
        Ok(LocalScores {
            rows: idx.len() as u64,
            scores: serde_json::to_value(&report).map_err(failed)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_counts_every_round_spent_and_the_planned_one() {
        let round = DpSteps {
            sample_rate: 0.01,
            noise_multiplier: 1.1,
            steps: 100,
        };
        let spent = |n: usize| {
            vec![
                DpSpent {
                    sample_rate: 0.01,
                    noise_multiplier: 1.1,
                    steps: 100,
                };
                n
            ]
        };
        assert_eq!(epsilon_with(&[], round, 1e-5).0, 0.0);
        let (b0, a0) = epsilon_with(&spent(0), round, 1e-5);
        let (b3, a3) = epsilon_with(&spent(3), round, 1e-5);
        // With the planned round: exactly the accountant's ε of all rounds together.
        assert_eq!(a3, epsilon(&[round; 4], 1e-5).0);
        assert_eq!(b3, epsilon(&[round; 3], 1e-5).0);
        assert_eq!(a0, epsilon(&[round], 1e-5).0);
        assert!(b0 == 0.0 && a0 < b3 && b3 < a3, "{a0} {b3} {a3}");
        // A larger δ gives a smaller ε: the budget's δ is the hospital's, not the spec's.
        assert!(epsilon_with(&spent(3), round, 1e-2).1 < a3);
        // The guard: a budget between ε before and after the round refuses it, naming both;
        // one above lets it train.
        let mut rows = SliceRows {
            cohort_id: "c".into(),
            site: "s".into(),
            batches: Vec::new(),
            slice_root: Default::default(),
            slice_size: 0,
            erased: 0,
            age_edges: Vec::new(),
            k: 2,
            min_noise_multiplier: 0.0,
            max_epsilon: (b3 + a3) / 2.0,
            epsilon_delta: 1e-5,
            dp_spent: spent(3),
            spec: Vec::new(),
        };
        let err = within_budget(&rows, round, 4).unwrap_err().to_string();
        assert!(
            err.contains("would exceed its privacy budget for cohort c")
                && err.contains(&format!("ε = {a3:.3}"))
                && err.contains(&format!("ε = {b3:.3} over the 3 rounds")),
            "{err}"
        );
        rows.max_epsilon = a3 * 1.01;
        within_budget(&rows, round, 4).unwrap();
    }
}
