//! `ecgfed train` for a federated cohort: plan and `CohortCreated` (mode `federated`), each
//! site's slice reserved (never pulled), then rounds. A round's attempt asks every chosen site
//! at once for a key (OpenRound), then for its masked update (TrainRound, carrying every
//! participant's signed key), then, once every update arrived, for its self mask
//! (RevealMask); the sum of the masked updates less the self masks is the sum of the sites'
//! row-weighted updates, and no single site's update is ever seen. A site that fails or times
//! out is reported and the round is attempted again without it (`on_failure = "restart"`)
//! or training stops (`"stop"`). After each round every site scores the model on its
//! evaluation rows (only metrics leave); the best round on the validation parts is kept and
//! recorded as `ModelTrained`, its inputs the rounds' `LocalRoundTrained` entries.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ecgfed_gateway::GatewayClient;
use ecgfed_gateway::federated::{
    add_into, bytes_to_words, from_fixed, params_to_bytes, remove_self_masks, sha256,
};
use ecgfed_proto::v1::entry_body::Payload;
use ecgfed_proto::v1::{
    EvaluateRequest, ModelTrained, OpenRoundRequest, RevealMaskRequest, RoundKey, TrainRoundRequest,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::nn::VarStore;

use crate::cohort::{Session, SliceReport, cohort_sites};
use crate::error::{Result, TrainerError};
use crate::evaluation::{Evaluation, Scores};
use crate::federated::site::SiteScores;
use crate::federated::{flatten, load_flat};
use crate::model::ResNet1d;
use crate::run::{CODE_VERSION, ModelCard, TrainOptions, federation_of, metrics_table, plan};
use crate::spec::{FederatedSpec, LoadedSpec, MODE_FEDERATED, ON_FAILURE_STOP};
use crate::train::arch_of;

/// Times a RevealMask that failed is asked again before the attempt fails.
const REVEAL_TRIES: usize = 3;

/// One round as the coordinator saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundStats {
    /// Round (from 1).
    pub round: usize,
    /// Attempts it took.
    pub attempts: u32,
    /// The sites whose updates were aggregated.
    pub sites: Vec<String>,
    /// Rows they trained on.
    pub rows: u64,
    /// Mean local training loss, weighted by rows; none under differential privacy (sites
    /// withhold it).
    pub train_loss: Option<f64>,
    /// Validation macro-F1 per window, the training sites' validation parts pooled.
    pub val_macro_f1: Option<f64>,
    /// Validation macro-F1 per record.
    pub val_macro_f1_records: Option<f64>,
    /// The LocalRoundTrained entries of the aggregated updates.
    pub entries: Vec<u64>,
    /// Sites that failed or timed out in training or evaluation, with why (`site (Call): why`).
    pub failures: Vec<String>,
    /// Bytes of model sent to the sites (training and evaluation).
    pub bytes_to_sites: u64,
    /// Bytes of masked updates, seeds and scores received.
    pub bytes_from_sites: u64,
    /// Wall time of the round with its evaluation, seconds.
    pub secs: f64,
}

/// What a federated run produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FederatedOutcome {
    /// The model card.
    pub card: ModelCard,
    /// The evaluation of the kept round.
    pub evaluation: Evaluation,
    /// Every round.
    pub rounds: Vec<RoundStats>,
    /// Files written.
    pub files: Vec<String>,
}

/// One aggregated round.
struct Aggregated {
    /// Sum of the sites' row-weighted updates.
    sum: Vec<f64>,
    rows: u64,
    sites: Vec<String>,
    entries: Vec<u64>,
    loss: f64,
    attempts: u32,
    failures: Vec<String>,
    bytes_to: u64,
    bytes_from: u64,
}

/// The sites asked in round `round`: all of `training` when `fraction` is 1, otherwise the
/// first `max(min, ceil(fraction · n))` in order of SHA-256(seed ‖ round ‖ site).
pub fn choose_sites(
    training: &[String],
    fraction: f64,
    min: usize,
    seed: u64,
    round: usize,
) -> Vec<String> {
    let n = training.len();
    let want = ((fraction * n as f64).ceil() as usize).max(min).min(n);
    let mut keyed: Vec<([u8; 32], &String)> = training
        .iter()
        .map(|s| {
            let mut h = Sha256::new();
            h.update(seed.to_be_bytes());
            h.update((round as u64).to_be_bytes());
            h.update(s.as_bytes());
            (h.finalize().into(), s)
        })
        .collect();
    keyed.sort();
    let mut out: Vec<String> = keyed
        .into_iter()
        .take(want)
        .map(|(_, s)| s.clone())
        .collect();
    out.sort();
    out
}

/// The round's calls to the sites, each in its own task, each bounded by the round timeout.
struct Calls<'a> {
    clients: &'a BTreeMap<String, GatewayClient>,
    timeout: Duration,
}

impl Calls<'_> {
    /// Runs `call` against each of `sites` at once; answers in site order, an error or a
    /// timeout as a message naming the site.
    async fn each<T, F, Fut>(
        &self,
        sites: &[String],
        call: F,
    ) -> Vec<(String, std::result::Result<T, String>)>
    where
        T: Send + 'static,
        F: Fn(GatewayClient, String) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, ecgfed_gateway::GatewayError>>
            + Send
            + 'static,
    {
        let mut set = tokio::task::JoinSet::new();
        for (i, s) in sites.iter().enumerate() {
            let Some(c) = self.clients.get(s).cloned() else {
                continue;
            };
            let fut = call(c, s.clone());
            let limit = self.timeout;
            set.spawn(async move { (i, tokio::time::timeout(limit, fut).await) });
        }
        let mut out: Vec<(usize, String, std::result::Result<T, String>)> = Vec::new();
        while let Some(joined) = set.join_next().await {
            let Ok((i, r)) = joined else { continue };
            let r = match r {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {} s", self.timeout.as_secs())),
            };
            out.push((i, sites[i].clone(), r));
        }
        for (i, s) in sites.iter().enumerate() {
            if !out.iter().any(|(j, _, _)| *j == i) {
                out.push((i, s.clone(), Err("the call's task failed".into())));
            }
        }
        out.sort_by_key(|(i, _, _)| *i);
        out.into_iter().map(|(_, s, r)| (s, r)).collect()
    }
}

/// Splits answers into values and failures (`site: why`).
fn sort_out<T>(
    answers: Vec<(String, std::result::Result<T, String>)>,
    what: &str,
) -> (Vec<(String, T)>, Vec<String>) {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for (s, r) in answers {
        match r {
            Ok(v) => ok.push((s, v)),
            Err(e) => failed.push(format!("{s} ({what}): {e}")),
        }
    }
    (ok, failed)
}

/// What one attempt of a round needs.
struct RoundPlan<'a> {
    calls: Calls<'a>,
    cohort_id: &'a str,
    spec: &'a [u8],
    model: &'a [u8],
    params: usize,
    round: usize,
    settings: &'a FederatedSpec,
}

/// The end of one attempt: aggregated, or the sites that failed it.
enum Attempted {
    Done(Aggregated),
    Failed(Vec<String>),
}

impl RoundPlan<'_> {
    /// One attempt with `sites`: keys, masked updates, self masks, sum.
    async fn attempt(
        &self,
        session: &mut Session,
        sites: &[String],
        attempt: u32,
    ) -> Result<Attempted> {
        let round = self.round as u32;
        let cohort_id = self.cohort_id.to_string();
        let mut bytes_to = 0u64;
        let mut bytes_from = 0u64;
        let q = OpenRoundRequest {
            cohort_id: cohort_id.clone(),
            round,
            attempt,
        };
        let answers = self
            .calls
            .each(sites, |mut c, _| {
                let q = q.clone();
                async move { c.open_round(q).await }
            })
            .await;
        let (opened, failed) = sort_out(answers, "OpenRound");
        if !failed.is_empty() {
            return Ok(Attempted::Failed(failed));
        }
        let mut keys: Vec<RoundKey> = Vec::new();
        for (s, r) in opened {
            match r.key {
                Some(k) if k.site == s => keys.push(k),
                _ => {
                    return Ok(Attempted::Failed(vec![format!(
                        "{s} (OpenRound): answered no key of its own site"
                    )]));
                }
            }
        }
        let q = TrainRoundRequest {
            cohort_id: cohort_id.clone(),
            round,
            attempt,
            keys: keys.clone(),
            spec: self.spec.to_vec(),
            model: self.model.to_vec(),
        };
        bytes_to += (self.model.len() + self.spec.len()) as u64 * sites.len() as u64;
        let answers = self
            .calls
            .each(sites, |mut c, _| {
                let q = q.clone();
                async move { c.train_round(q).await }
            })
            .await;
        let (trained, failed) = sort_out(answers, "TrainRound");
        if !failed.is_empty() {
            return Ok(Attempted::Failed(failed));
        }
        let mut sum = vec![0u64; self.params];
        let (mut rows, mut loss, mut entries) = (0u64, 0.0, Vec::new());
        let mut commitments: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (s, t) in &trained {
            bytes_from += t.masked_update.len() as u64;
            let words = bytes_to_words(&t.masked_update)
                .filter(|w| w.len() == self.params)
                .ok_or_else(|| TrainerError::RoundAnswer {
                    round: self.round,
                    site: s.clone(),
                    problem: format!(
                        "a masked update of {} bytes; the model has {} parameters (8 bytes each)",
                        t.masked_update.len(),
                        self.params
                    ),
                })?;
            let commitment = self
                .check_entry(
                    session,
                    s,
                    t.ledger_index,
                    attempt,
                    sites,
                    &t.masked_update,
                    t.rows,
                )
                .await?;
            commitments.insert(s.clone(), commitment);
            add_into(&mut sum, &words);
            rows += t.rows;
            loss += t.train_loss * t.rows as f64;
            entries.push(t.ledger_index);
        }
        let q = RevealMaskRequest {
            cohort_id,
            round,
            attempt,
            survivors: sites.to_vec(),
        };
        // A reveal that failed is asked again (a site answers the same seed for the attempt
        // it revealed): once a site revealed, no other attempt of the round can complete.
        let mut seeds = Vec::new();
        let mut pending: Vec<String> = sites.to_vec();
        let mut failed = Vec::new();
        for _ in 0..REVEAL_TRIES {
            let answers = self
                .calls
                .each(&pending, |mut c, _| {
                    let q = q.clone();
                    async move { c.reveal_mask(q).await }
                })
                .await;
            let (revealed, f) = sort_out(answers, "RevealMask");
            for (s, r) in revealed {
                bytes_from += r.self_mask_seed.len() as u64;
                let seed: [u8; 32] = r.self_mask_seed.as_slice().try_into().map_err(|_| {
                    TrainerError::RoundAnswer {
                        round: self.round,
                        site: s.clone(),
                        problem: format!(
                            "a self-mask seed of {} bytes, not 32",
                            r.self_mask_seed.len()
                        ),
                    }
                })?;
                if commitments.get(&s).map(Vec::as_slice) != Some(sha256(&seed).as_slice()) {
                    return Err(TrainerError::RoundAnswer {
                        round: self.round,
                        site: s.clone(),
                        problem: "the self-mask seed it revealed does not hash to the commitment of its LocalRoundTrained entry".into(),
                    });
                }
                seeds.push(seed);
                pending.retain(|p| *p != s);
            }
            failed = f;
            if pending.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if !pending.is_empty() {
            return Ok(Attempted::Failed(failed));
        }
        remove_self_masks(&mut sum, &seeds);
        entries.sort_unstable();
        Ok(Attempted::Done(Aggregated {
            sum: from_fixed(&sum),
            rows,
            sites: sites.to_vec(),
            entries,
            loss: if rows > 0 { loss / rows as f64 } else { 0.0 },
            attempts: attempt,
            failures: Vec::new(),
            bytes_to,
            bytes_from,
        }))
    }

    /// The site's LocalRoundTrained entry, proven on the ledger, is this round as answered:
    /// its site, round, attempt, participants, rows, the model sent and the update received.
    #[allow(clippy::too_many_arguments)]
    async fn check_entry(
        &self,
        session: &mut Session,
        site: &str,
        index: u64,
        attempt: u32,
        sites: &[String],
        masked: &[u8],
        rows: u64,
    ) -> Result<Vec<u8>> {
        let wrong = |problem: String| TrainerError::RoundAnswer {
            round: self.round,
            site: site.to_string(),
            problem,
        };
        let next = index
            .checked_add(1)
            .ok_or_else(|| wrong(format!("ledger index {index}")))?;
        session.ledger.update_to(next).await?;
        let e = session.ledger.entry(index).await?;
        let Some(Payload::LocalRoundTrained(r)) = e.payload() else {
            return Err(wrong(format!(
                "entry {index} is not a LocalRoundTrained entry"
            )));
        };
        let ok = r.site == site
            && r.cohort_id == self.cohort_id
            && r.round == self.round as u32
            && r.attempt == attempt
            && r.participants == sites
            && r.rows_used == rows
            && r.model_sha256 == sha256(self.model)
            && r.update_sha256 == sha256(masked);
        if !ok {
            return Err(wrong(format!(
                "entry {index} does not record this round as answered (site, round, attempt, participants, rows, model or update hash differ)"
            )));
        }
        Ok(r.self_mask_sha256.clone())
    }

    /// The round: attempts until one aggregates, leaving failed sites out as the spec says.
    async fn run(&self, session: &mut Session, mut sites: Vec<String>) -> Result<Aggregated> {
        let f = self.settings;
        let mut failures = Vec::new();
        let mut extra_to = 0u64;
        for attempt in 1..=f.max_attempts {
            if sites.len() < f.min_sites {
                return Err(TrainerError::TooFewSites {
                    round: self.round,
                    sites,
                    min: f.min_sites,
                    failures,
                });
            }
            match self.attempt(session, &sites, attempt).await? {
                Attempted::Done(mut a) => {
                    a.failures = failures;
                    a.bytes_to += extra_to;
                    return Ok(a);
                }
                Attempted::Failed(failed) => {
                    extra_to += (self.model.len() * sites.len()) as u64;
                    if f.on_failure == ON_FAILURE_STOP || attempt == f.max_attempts {
                        failures.extend(failed);
                        return Err(TrainerError::RoundFailed {
                            round: self.round,
                            attempt,
                            failures,
                        });
                    }
                    tracing::warn!(
                        round = self.round,
                        attempt,
                        "round restarted without: {failed:?}"
                    );
                    sites.retain(|s| !failed.iter().any(|f| f.starts_with(&format!("{s} ("))));
                    failures.extend(failed);
                }
            }
        }
        Err(TrainerError::RoundFailed {
            round: self.round,
            attempt: f.max_attempts,
            failures,
        })
    }
}

/// Every site's scores of `model` on its `part` (`validation` or `test`; a held-out site scores
/// every row); only metrics leave. A site that fails or does not answer is left out and
/// reported (`site (Evaluate): why`); the bytes received are counted.
async fn evaluate_sites(
    calls: &Calls<'_>,
    sites: &[String],
    cohort_id: &str,
    spec: &LoadedSpec,
    model: &[u8],
    part: &str,
) -> (BTreeMap<String, SiteScores>, u64, Vec<String>) {
    let q = EvaluateRequest {
        cohort_id: cohort_id.to_string(),
        spec: spec.bytes.clone(),
        model: model.to_vec(),
        part: part.to_string(),
    };
    let answers = calls
        .each(sites, |mut c, _| {
            let q = q.clone();
            async move { c.evaluate(q).await }
        })
        .await;
    let (answered, mut failures) = sort_out(answers, "Evaluate");
    let mut by_site: BTreeMap<String, SiteScores> = BTreeMap::new();
    let mut bytes = 0u64;
    for (s, r) in answered {
        bytes += r.scores_json.len() as u64;
        match serde_json::from_str::<SiteScores>(&r.scores_json) {
            Ok(scores) => {
                by_site.insert(s, scores);
            }
            Err(e) => failures.push(format!("{s} (Evaluate): scores that do not parse: {e}")),
        }
    }
    (by_site, bytes, failures)
}

/// The sites' scores pooled as an [`Evaluation`]: the training sites' validation parts
/// together (and, given, their test parts together), per site, per sex and per age band (on the
/// test parts when given); each held-out site alone.
fn pooled_evaluation(
    spec: &LoadedSpec,
    validation: &BTreeMap<String, SiteScores>,
    test: Option<&BTreeMap<String, SiteScores>>,
) -> Evaluation {
    let classes = spec.spec.class_names();
    let scored = &spec.spec.scored;
    let pool = |all: Vec<&Scores>| -> Option<Scores> {
        (!all.is_empty()).then(|| Scores {
            windows: crate::metrics::pooled(
                &all.iter().map(|s| &s.windows).collect::<Vec<_>>(),
                &classes,
                scored,
            ),
            records: crate::metrics::pooled(
                &all.iter().map(|s| &s.records).collect::<Vec<_>>(),
                &classes,
                scored,
            ),
        })
    };
    let of_part = |m: &BTreeMap<String, SiteScores>, part: &str| -> Vec<(String, SiteScores)> {
        m.iter()
            .filter(|(_, s)| s.part == part && s.scores.windows.n > 0)
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect()
    };
    let val = of_part(validation, "validation");
    let tested = test.map(|t| of_part(t, "test")).unwrap_or_default();
    let sub = if tested.is_empty() { &val } else { &tested };
    let group = |pick: &dyn Fn(&SiteScores) -> &BTreeMap<String, Scores>| {
        let mut keys: Vec<&String> = sub.iter().flat_map(|(_, s)| pick(s).keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter_map(|k| {
                pool(sub.iter().filter_map(|(_, s)| pick(s).get(k)).collect())
                    .map(|p| (k.clone(), p))
            })
            .collect::<BTreeMap<_, _>>()
    };
    let held_from = test.unwrap_or(validation);
    Evaluation {
        validation: pool(val.iter().map(|(_, s)| &s.scores).collect()),
        test: pool(tested.iter().map(|(_, s)| &s.scores).collect()),
        by_sex: group(&|s| &s.by_sex),
        by_age_band: group(&|s| &s.by_age_band),
        by_site: sub
            .iter()
            .map(|(k, s)| (k.clone(), s.scores.clone()))
            .collect(),
        held_out: held_from
            .iter()
            .filter(|(_, s)| s.part == "held_out")
            .map(|(k, s)| (k.clone(), s.scores.clone()))
            .collect(),
    }
}

/// The validation score a round is chosen by (`select_on`): per record or per window.
fn selection_score(e: &Evaluation, on: &str) -> Option<f64> {
    let v = e.validation.as_ref()?;
    if on == "records" {
        v.records.macro_f1
    } else {
        v.windows.macro_f1
    }
}

/// Plans (mode `federated`), reserves every site's slice, trains the spec's rounds at the
/// gateways with secure aggregation, keeps the round best on validation, records
/// `ModelTrained` and writes the model, its card, the rounds and the metrics into `opts.out`.
pub async fn run_federated(spec: &LoadedSpec, opts: &TrainOptions) -> Result<FederatedOutcome> {
    let f = spec.spec.federated_settings();
    if opts.export_windows.is_some() {
        return Err(TrainerError::spec(
            &spec.path,
            "windows are exported in pull mode only: a federated cohort's rows never leave its sites",
        ));
    }
    let fed = federation_of(spec, opts.federation.as_deref())?;
    let mut session = Session::open(fed).await?;
    std::fs::create_dir_all(&opts.out).map_err(|e| TrainerError::io(&opts.out, e))?;
    let planned = plan(spec, &mut session, false).await?;
    let cohort = planned.entry.clone().ok_or(TrainerError::NoLedgerEntry)?;
    let cohort_id = cohort.cohort_id.clone();
    if opts.progress {
        eprintln!(
            "federated cohort {cohort_id} ({} at ledger index {})",
            if planned.created {
                "created"
            } else {
                "already on the ledger"
            },
            planned.ledger_index.unwrap_or(0)
        );
    }
    // Every site's slice reserved (never pulled): rounds train on it at the site.
    let mut clients = BTreeMap::new();
    let mut slices = Vec::new();
    for site in cohort_sites(&cohort) {
        let info = planned
            .sites
            .iter()
            .find(|s| s.site == site)
            .ok_or_else(|| TrainerError::NotInFederation {
                site: site.clone(),
                cohort: Some(cohort_id.clone()),
            })?;
        let (c, r) = session.reserve_site(&cohort, info).await?;
        slices.push(SliceReport {
            site: site.clone(),
            slice_id: r.slice_id,
            rows: r.rows,
            erased: 0,
            root: hex::encode(&r.slice_root),
            ledger_index: r.ledger_index,
        });
        clients.insert(site, c);
    }
    let all_sites: Vec<String> = clients.keys().cloned().collect();
    let training: Vec<String> = all_sites
        .iter()
        .filter(|s| !spec.spec.held_out.contains(s))
        .cloned()
        .collect();
    // The initial model, from the spec's seed.
    tch::manual_seed(spec.spec.seed as i64);
    let arch = arch_of(&spec.spec);
    let vs = VarStore::new(tch::Device::Cpu);
    let _net = ResNet1d::new(&vs.root(), &arch);
    let mut global = flatten(&vs);
    let calls = Calls {
        clients: &clients,
        timeout: Duration::from_secs(f.round_timeout_secs),
    };
    let pb = if opts.progress {
        indicatif::ProgressBar::new(f.rounds as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] round {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut rounds: Vec<RoundStats> = Vec::new();
    let mut best: Option<(f64, usize, Vec<f32>, Evaluation)> = None;
    for round in 1..=f.rounds {
        let started = Instant::now();
        let model = params_to_bytes(&global);
        let sites = choose_sites(
            &training,
            f.client_fraction,
            f.min_sites,
            spec.spec.seed,
            round,
        );
        pb.set_message(format!("training at {}", sites.join(", ")));
        let plan = RoundPlan {
            calls: Calls {
                clients: &clients,
                timeout: calls.timeout,
            },
            cohort_id: &cohort_id,
            spec: &spec.bytes,
            model: &model,
            params: global.len(),
            round,
            settings: &f,
        };
        let agg = plan.run(&mut session, sites).await?;
        if agg.rows > 0 {
            for (g, s) in global.iter_mut().zip(&agg.sum) {
                *g += (s / agg.rows as f64) as f32;
            }
        }
        pb.set_message("evaluating at the training sites".to_string());
        let model = params_to_bytes(&global);
        // Validation parts only: held-out sites, like the test parts, are scored once at the end.
        let (scores, eval_bytes, eval_failures) =
            evaluate_sites(&calls, &training, &cohort_id, spec, &model, "validation").await;
        let evaluation = pooled_evaluation(spec, &scores, None);
        let mut failures = agg.failures;
        failures.extend(eval_failures);
        let stats = RoundStats {
            round,
            attempts: agg.attempts,
            sites: agg.sites,
            rows: agg.rows,
            train_loss: agg.loss.is_finite().then_some(agg.loss),
            val_macro_f1: evaluation
                .validation
                .as_ref()
                .and_then(|v| v.windows.macro_f1),
            val_macro_f1_records: evaluation
                .validation
                .as_ref()
                .and_then(|v| v.records.macro_f1),
            entries: agg.entries,
            failures,
            bytes_to_sites: agg.bytes_to + (model.len() * training.len()) as u64,
            bytes_from_sites: agg.bytes_from + eval_bytes,
            secs: started.elapsed().as_secs_f64(),
        };
        let fmt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.4}"));
        if opts.progress {
            pb.suspend(|| {
                eprintln!(
                    "round {:>3}  sites {}  rows {}  train loss {}  val macro-F1 windows {} records {}  {:.1} s{}",
                    round,
                    stats.sites.len(),
                    stats.rows,
                    fmt(stats.train_loss),
                    fmt(stats.val_macro_f1),
                    fmt(stats.val_macro_f1_records),
                    stats.secs,
                    if stats.failures.is_empty() {
                        String::new()
                    } else {
                        format!("  left out: {}", stats.failures.join("; "))
                    }
                )
            });
        }
        pb.inc(1);
        let score =
            selection_score(&evaluation, &spec.spec.train.select_on).unwrap_or(f64::NEG_INFINITY);
        if best.as_ref().is_none_or(|b| score > b.0) {
            best = Some((score, round, global.clone(), evaluation));
        }
        rounds.push(stats);
    }
    pb.finish_and_clear();
    let Some((_, best_round, weights, round_eval)) = best else {
        return Err(TrainerError::NoTrainingRows);
    };
    load_flat(&vs, &weights)?;
    // The test parts are scored once, now, with the kept weights; held-out sites again.
    let kept = params_to_bytes(&weights);
    let (validation, _, _) =
        evaluate_sites(&calls, &training, &cohort_id, spec, &kept, "validation").await;
    let (tested, _, test_failures) =
        evaluate_sites(&calls, &all_sites, &cohort_id, spec, &kept, "test").await;
    for f in &test_failures {
        tracing::warn!("final test evaluation: {f}");
    }
    let mut evaluation = pooled_evaluation(spec, &validation, Some(&tested));
    if evaluation.validation.is_none() {
        evaluation.validation = round_eval.validation;
    }
    let mut files = Vec::new();
    let path = opts.out.join("model.safetensors");
    vs.save(&path)?;
    files.push("model.safetensors".to_string());
    let wbytes = std::fs::read(&path).map_err(|e| TrainerError::io(&path, e))?;
    let wsha: [u8; 32] = Sha256::digest(&wbytes).into();
    let model_id = format!("model-{}", &hex::encode(wsha)[..16]);
    let metrics = metrics_table(&evaluation);
    let round_entries: Vec<u64> = rounds
        .iter()
        .take(best_round)
        .flat_map(|r| r.entries.iter().copied())
        .collect();
    let summary = serde_json::json!({
        "rounds": f.rounds,
        "best_round": best_round,
        "settings": f,
        "sites": training,
        "held_out": spec.spec.held_out,
        "round_entries": round_entries,
        "history": rounds.iter().map(|r| serde_json::json!({
            "round": r.round,
            "attempts": r.attempts,
            "sites": r.sites,
            "rows": r.rows,
            "train_loss": r.train_loss,
            "val_macro_f1": r.val_macro_f1,
            "val_macro_f1_records": r.val_macro_f1_records,
        })).collect::<Vec<_>>(),
    });
    let hyper = serde_json::json!({
        "task": spec.spec.task,
        "classes": spec.spec.classes,
        "signal": spec.spec.signal,
        "arch": arch,
        "train": spec.spec.train,
        "seed": spec.spec.seed,
        "mode": MODE_FEDERATED,
        "federated": summary,
    });
    let index = session
        .record(Payload::ModelTrained(ModelTrained {
            model_id: model_id.clone(),
            cohort_id: cohort_id.clone(),
            weights_sha256: wsha.to_vec(),
            code_version: CODE_VERSION.to_string(),
            hyperparameters_json: hyper.to_string(),
            metrics_json: metrics.to_string(),
            mode: MODE_FEDERATED.to_string(),
            round_entries: round_entries.clone(),
        }))
        .await?;
    let rows: BTreeMap<String, u64> = BTreeMap::from([
        (
            "train".to_string(),
            rounds.get(best_round - 1).map_or(0, |r| r.rows),
        ),
        (
            "validation".to_string(),
            evaluation.validation.as_ref().map_or(0, |v| v.windows.n),
        ),
        (
            "test".to_string(),
            evaluation.test.as_ref().map_or(0, |v| v.windows.n),
        ),
        (
            "held_out".to_string(),
            evaluation.held_out.values().map(|v| v.windows.n).sum(),
        ),
    ]);
    let card = ModelCard {
        model_id,
        weights_sha256: hex::encode(wsha),
        cohort_id: cohort_id.clone(),
        spec_sha256: planned.spec_sha256.clone(),
        cohort_ledger_index: planned.ledger_index.unwrap_or(0),
        ledger_index: index,
        requester: session.member().to_string(),
        code_version: CODE_VERSION.to_string(),
        task: spec.spec.task.clone(),
        classes: spec.spec.classes.clone(),
        scored: spec.spec.scored.clone(),
        signal: spec.spec.signal.clone(),
        window_samples: spec.spec.window_samples(),
        arch,
        train: spec.spec.train.clone(),
        seed: spec.spec.seed,
        device: "gateways".to_string(),
        data_sha256: String::new(),
        slices,
        rows,
        best_epoch: best_round,
        metrics,
        federated: Some(summary),
    };
    for (name, bytes) in [
        ("model-card.json", pretty(&card)),
        ("metrics.json", pretty(&evaluation)),
        ("rounds.json", pretty(&rounds)),
    ] {
        let p = opts.out.join(name);
        std::fs::write(&p, bytes).map_err(|e| TrainerError::io(&p, e))?;
        files.push(name.to_string());
    }
    Ok(FederatedOutcome {
        card,
        evaluation,
        rounds,
        files,
    })
}

fn pretty<T: Serialize>(v: &T) -> Vec<u8> {
    let mut s = serde_json::to_vec_pretty(v).unwrap_or_default();
    s.push(b'\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_are_chosen_by_fraction_with_the_minimum_and_vary_by_round() {
        let t: Vec<String> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(choose_sites(&t, 1.0, 2, 7, 1), t);
        let two = choose_sites(&t, 0.2, 2, 7, 1);
        assert_eq!(
            two.len(),
            2,
            "ceil(0.2 · 5) = 1, raised to the minimum of 2"
        );
        let three = choose_sites(&t, 0.5, 2, 7, 1);
        assert_eq!(three.len(), 3);
        assert!(three.windows(2).all(|w| w[0] < w[1]));
        let rounds: std::collections::HashSet<Vec<String>> =
            (1..=20).map(|r| choose_sites(&t, 0.5, 2, 7, r)).collect();
        assert!(rounds.len() > 1, "the chosen sites change between rounds");
    }
}
