//! The cohort spec (TOML, docs/cohorts.md) and the federation file it names: what a data
//! scientist asks for, and where the ledger and the gateways are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ecgfed_datasets::labels;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, TrainerError};

/// The default rhythm task, as in PhysioNet/CinC 2017: normal sinus rhythm, AF, other, noisy.
pub const TASK_RHYTHM: &str = "rhythm";
/// The AAMI beat task over beat-centred windows: N, S, V, F.
pub const TASK_BEATS: &str = "aami-beats";

/// One class of the task: a name and the store labels it gathers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassDef {
    /// Class name (`N`, `A`, `O`, `~`, ...).
    pub name: String,
    /// Normalised store labels (SNOMED CT codes, `other`, `noisy`, AAMI classes).
    pub labels: Vec<String>,
}

/// How many segments each class should have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Targets {
    /// The same number for every class.
    Each(u64),
    /// `"balanced"` (as many as class balance allows) or `"all"` (every selectable segment).
    Mode(String),
    /// Per class name.
    PerClass(BTreeMap<String, u64>),
}

/// Balance dimensions and the cap on one site's share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Balance {
    /// Dimensions balanced within each class: any of `sex`, `age_band`.
    pub by: Vec<String>,
    /// Largest share (0–1] of the training cohort any one site may supply.
    pub site_cap: f64,
}

impl Default for Balance {
    fn default() -> Self {
        Balance {
            by: vec!["sex".into(), "age_band".into()],
            site_cap: 1.0,
        }
    }
}

/// Signal settings: all sites are brought to this lead, rate and window length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalSpec {
    /// Lead name (case-insensitive; `II` also matches `MLII`; single-lead records use their lead).
    pub lead: String,
    /// Common sampling rate in Hz (every site's segments are resampled to it).
    pub sample_rate: u32,
    /// Window length in seconds (longer segments are cut at the centre, shorter ones zero-padded).
    pub window_secs: f64,
}

impl Default for SignalSpec {
    fn default() -> Self {
        SignalSpec {
            lead: "II".into(),
            sample_rate: 250,
            window_secs: 10.0,
        }
    }
}

/// Training hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSpec {
    /// Largest number of epochs.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Peak learning rate (AdamW).
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// `cosine` or `step` (halve every `step_epochs`).
    pub schedule: String,
    /// Epochs between halvings for the `step` schedule.
    pub step_epochs: usize,
    /// Epochs without a better validation macro-F1 before stopping.
    pub patience: usize,
    /// Share of patients (records where no patient id) kept for validation: the epoch (or
    /// round) kept is chosen on it.
    pub val_fraction: f64,
    /// Share of patients (records where no patient id) kept for test: scored once at the
    /// end, with the kept weights; nothing is chosen on it.
    pub test_fraction: f64,
    /// Channels of the residual stages; empty (with `beat_features`): no convolutional
    /// path, a linear classifier over the beat features.
    pub channels: Vec<i64>,
    /// Residual blocks per stage.
    pub blocks_per_stage: usize,
    /// Convolution kernel size.
    pub kernel: i64,
    /// Dropout before the classifier.
    pub dropout: f64,
    /// Class weights of the cross-entropy are (rows / class rows)^power, normalised to a
    /// row-weighted mean of 1: 1 = inverse frequency, 0.5 (default) = its square root, 0 = none.
    pub class_weight_power: f64,
    /// Augment training windows: amplitude × U(0.85, 1.15) and a shift of up to a tenth of
    /// the window (zero-filled), drawn from the seeded stream.
    pub augment: bool,
    /// Early stopping on the validation macro-F1 of `records` (mean probability per record,
    /// the CinC 2017 scoring) or of `windows`; default `records` for rhythm, `windows` for
    /// beats.
    pub select_on: String,
    /// Records (record ids) that form the validation set instead of the patient split, e.g.
    /// the DS2 test records of de Chazal et al. 2004 for `aami-beats`.
    pub val_records: Vec<String>,
    /// Records left out of training and evaluation (e.g. paced MIT-BIH records).
    pub exclude_records: Vec<String>,
    /// Pull mode only: the sites whose training and validation parts are used (empty: every
    /// site of `sites`); the other sites contribute their test part only. One hospital's model
    /// is then scored on the same test parts as the pooled and federated ones (bench/README.md,
    /// "Federated training: quality").
    pub train_sites: Vec<String>,
    /// Stop each epoch after this many steps (0: no limit; for smoke tests).
    pub max_steps_per_epoch: usize,
    /// Threads libtorch may use (0: its default).
    pub threads: i32,
    /// Give the network each beat's features (`aami-beats` only): RR intervals and the beat's
    /// morphology against its record's template beat (docs/training.md, "Beat features").
    /// (It replaced `rr_features`, 8 record-normalised RR values, which is no longer accepted.)
    pub beat_features: bool,
    /// Which beat features the network gets: `all` (default, 62), `rr+template` (the RR
    /// intervals and the beat against its template, 60: not the other lead's fit) or `rr` (4);
    /// the others are set to 0.
    pub beat_feature_set: String,
}

impl Default for TrainSpec {
    fn default() -> Self {
        TrainSpec {
            epochs: 30,
            batch_size: 64,
            lr: 2e-3,
            weight_decay: 1e-2,
            schedule: "cosine".into(),
            step_epochs: 10,
            patience: 6,
            val_fraction: 0.2,
            test_fraction: 0.2,
            channels: vec![32, 64, 128, 128],
            blocks_per_stage: 1,
            kernel: 9,
            dropout: 0.3,
            class_weight_power: 0.5,
            augment: true,
            select_on: String::new(),
            val_records: Vec::new(),
            exclude_records: Vec::new(),
            train_sites: Vec::new(),
            max_steps_per_epoch: 0,
            threads: 0,
            beat_features: false,
            beat_feature_set: BEAT_SET_ALL.into(),
        }
    }
}

/// A cohort spec as written by the data scientist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohortSpec {
    /// Cohort id on the ledger; default `cohort-` + the first 16 hex digits of the spec's SHA-256.
    #[serde(default)]
    pub cohort_id: Option<String>,
    /// Why the cohort is drawn (recorded on the ledger).
    pub purpose: String,
    /// Seed of the gateways' selection, the split and the training.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// `rhythm` (default) or `aami-beats`.
    #[serde(default = "default_task")]
    pub task: String,
    /// Label map; default per task (docs/cohorts.md).
    #[serde(default)]
    pub classes: Vec<ClassDef>,
    /// Classes averaged in macro-F1; default N, A, O for rhythm and every class for beats.
    #[serde(default)]
    pub scored: Vec<String>,
    /// Per-class targets.
    #[serde(default = "default_targets")]
    pub targets: Targets,
    /// Balance settings.
    #[serde(default)]
    pub balance: Balance,
    /// Sites trained on (default: every site of the federation not held out).
    #[serde(default)]
    pub sites: Vec<String>,
    /// Sites used for evaluation only.
    #[serde(default)]
    pub held_out: Vec<String>,
    /// How many of each class a held-out site contributes: a number, or `all` (default).
    #[serde(default = "default_held_out_targets")]
    pub held_out_targets: Targets,
    /// Smallest number of distinct patients a stratum must have to be allocated.
    #[serde(default = "default_k")]
    pub k: u64,
    /// Signal settings.
    #[serde(default)]
    pub signal: SignalSpec,
    /// Training settings.
    #[serde(default)]
    pub train: TrainSpec,
    /// Federation file (ledger, identity, gateways), relative to the spec's folder.
    #[serde(default)]
    pub federation: Option<PathBuf>,
    /// How the cohort is trained: `pull` (default: the rows are pulled, verified, and trained
    /// on here) or `federated` (the model travels to the gateways, the rows stay home).
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Federated training settings (`mode = "federated"`).
    #[serde(default)]
    pub federated: Option<FederatedSpec>,
}

/// Shares of the groups that go to validation and to test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fractions {
    /// Validation share.
    pub val: f64,
    /// Test share.
    pub test: f64,
}

/// Federated training settings (docs/training.md "Federated mode").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederatedSpec {
    /// Rounds.
    pub rounds: usize,
    /// Passes over its training rows a site makes per round.
    pub local_epochs: usize,
    /// At most this many optimiser steps per round at a site (0: no limit).
    pub local_steps: usize,
    /// `fedavg` (updates averaged, weighted by rows) or `fedprox` (the same, with the
    /// proximal term `mu/2 · ‖w − w_global‖²` in each site's loss).
    pub aggregation: String,
    /// FedProx's μ (ignored by `fedavg`).
    pub mu: f64,
    /// Share of the training sites asked in each round (at least `min_sites`).
    pub client_fraction: f64,
    /// Fewest sites a round may have (at least 2: secure aggregation needs two).
    pub min_sites: usize,
    /// What a round does when a site fails or times out: `restart` (again without it, as long
    /// as `min_sites` remain) or `stop` (training stops with the error).
    pub on_failure: String,
    /// Seconds a site may take to answer a round before it counts as failed.
    pub round_timeout_secs: u64,
    /// Attempts of one round before training stops.
    pub max_attempts: u32,
    /// Differential privacy per site (DP-SGD at every site), when set.
    pub dp: Option<DpSpec>,
}

/// Per-site differential privacy of federated training: every site trains with DP-SGD and
/// reports its ε at `delta` (docs/training.md "Differential privacy").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpSpec {
    /// Each row's gradient is clipped to this L2 norm (over every trainable weight).
    pub clip_norm: f64,
    /// Noise standard deviation, in units of the clipping norm.
    pub noise_multiplier: f64,
    /// δ of the reported (ε, δ).
    pub delta: f64,
}

impl Default for DpSpec {
    fn default() -> Self {
        DpSpec {
            clip_norm: 1.0,
            noise_multiplier: 1.0,
            delta: 1e-5,
        }
    }
}

impl Default for FederatedSpec {
    fn default() -> Self {
        FederatedSpec {
            rounds: 10,
            local_epochs: 1,
            local_steps: 0,
            aggregation: AGGREGATION_FEDAVG.into(),
            mu: 0.01,
            client_fraction: 1.0,
            min_sites: 2,
            on_failure: ON_FAILURE_RESTART.into(),
            round_timeout_secs: 600,
            max_attempts: 3,
            dp: None,
        }
    }
}

/// `mode` of a pulled cohort.
pub const MODE_PULL: &str = "pull";
/// `mode` of a federated cohort.
pub const MODE_FEDERATED: &str = "federated";

/// Most rounds a federated spec may ask for.
pub const MAX_ROUNDS: usize = 1000;
/// Most local epochs a round may ask of a site.
pub const MAX_LOCAL_EPOCHS: usize = 100;
/// Most libtorch threads a spec may ask for.
pub const MAX_THREADS: i32 = 256;

/// `beat_feature_set`: all 62 beat features.
pub const BEAT_SET_ALL: &str = "all";
/// `beat_feature_set`: the RR intervals and the beat against its template (60).
pub const BEAT_SET_RR_TEMPLATE: &str = "rr+template";
/// `beat_feature_set`: the RR intervals only (4).
pub const BEAT_SET_RR: &str = "rr";
/// FedAvg (McMahan et al. 2017).
pub const AGGREGATION_FEDAVG: &str = "fedavg";
/// FedProx (Li et al. 2020).
pub const AGGREGATION_FEDPROX: &str = "fedprox";
/// A failed site is left out and its round attempted again.
pub const ON_FAILURE_RESTART: &str = "restart";
/// A failed site stops training.
pub const ON_FAILURE_STOP: &str = "stop";

fn default_mode() -> String {
    MODE_PULL.into()
}

fn default_seed() -> u64 {
    42
}
fn default_task() -> String {
    TASK_RHYTHM.into()
}
fn default_targets() -> Targets {
    Targets::Mode("balanced".into())
}
fn default_held_out_targets() -> Targets {
    Targets::Mode("all".into())
}
fn default_k() -> u64 {
    1
}

/// A loaded spec: the parsed file, its bytes' SHA-256 and its folder.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    /// The spec.
    pub spec: CohortSpec,
    /// SHA-256 of the file's bytes (CohortCreated.spec_sha256).
    pub sha256: [u8; 32],
    /// The spec file.
    pub path: PathBuf,
    /// The file's bytes (a federated round carries them to the gateways).
    pub bytes: Vec<u8>,
}

impl LoadedSpec {
    /// Reads and checks a spec file.
    pub fn read(path: &Path) -> Result<LoadedSpec> {
        let bytes = std::fs::read(path).map_err(|e| TrainerError::io(path, e))?;
        Self::from_bytes(path, &bytes)
    }

    /// Checks a spec file's bytes (`path` names it in errors).
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<LoadedSpec> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| TrainerError::spec(path, "the file is not UTF-8"))?;
        let mut spec: CohortSpec =
            toml::from_str(text).map_err(|e| TrainerError::spec(path, e.to_string()))?;
        spec.fill_defaults();
        spec.check().map_err(|m| TrainerError::spec(path, m))?;
        Ok(LoadedSpec {
            spec,
            sha256: Sha256::digest(bytes).into(),
            path: path.to_path_buf(),
            bytes: bytes.to_vec(),
        })
    }

    /// The cohort id: the spec's, or `cohort-` + 16 hex digits of the spec hash.
    pub fn cohort_id(&self) -> String {
        self.spec
            .cohort_id
            .clone()
            .unwrap_or_else(|| format!("cohort-{}", &hex::encode(self.sha256)[..16]))
    }

    /// The federation file named by the spec (relative to the spec's folder).
    pub fn federation_path(&self) -> Option<PathBuf> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        self.spec.federation.as_ref().map(|f| dir.join(f))
    }
}

impl CohortSpec {
    /// Fills the per-task defaults of the label map and the scored classes.
    pub fn fill_defaults(&mut self) {
        if self.classes.is_empty() {
            self.classes = default_classes(&self.task);
        }
        if self.train.select_on.is_empty() {
            self.train.select_on = if self.task == TASK_RHYTHM {
                "records".into()
            } else {
                "windows".into()
            };
        }
        if self.scored.is_empty() {
            self.scored = if self.task == TASK_RHYTHM {
                vec!["N".into(), "A".into(), "O".into()]
            } else {
                self.classes.iter().map(|c| c.name.clone()).collect()
            };
        }
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.task != TASK_RHYTHM && self.task != TASK_BEATS {
            return Err(format!(
                "task {:?}: expected {TASK_RHYTHM:?} or {TASK_BEATS:?}",
                self.task
            ));
        }
        if self.classes.len() < 2 {
            return Err("classes: at least two classes are needed".into());
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.classes {
            if c.labels.is_empty() {
                return Err(format!("class {:?} has no labels", c.name));
            }
            if !seen.insert(&c.name) {
                return Err(format!("class {:?} is defined twice", c.name));
            }
        }
        let mut labels_seen = std::collections::HashSet::new();
        for l in self.classes.iter().flat_map(|c| &c.labels) {
            if !labels_seen.insert(l) {
                return Err(format!("label {l:?} is mapped to two classes"));
            }
        }
        for s in &self.scored {
            if !seen.contains(s) {
                return Err(format!("scored class {s:?} is not a class"));
            }
        }
        for t in [&self.targets, &self.held_out_targets] {
            match t {
                Targets::Mode(m) if m != "balanced" && m != "all" => {
                    return Err(format!(
                        "targets {m:?}: expected a number, \"balanced\", \"all\" or a table per class"
                    ));
                }
                Targets::PerClass(m) => {
                    if let Some(c) = m.keys().find(|c| !seen.contains(c)) {
                        return Err(format!("targets name {c:?}, which is not a class"));
                    }
                }
                _ => {}
            }
        }
        for d in &self.balance.by {
            if d != "sex" && d != "age_band" {
                return Err(format!(
                    "balance.by {d:?}: expected \"sex\" or \"age_band\""
                ));
            }
        }
        if !(self.balance.site_cap > 0.0 && self.balance.site_cap <= 1.0) {
            return Err(format!(
                "balance.site_cap {} must be in (0, 1]",
                self.balance.site_cap
            ));
        }
        if let Some(s) = self.sites.iter().find(|s| self.held_out.contains(s)) {
            return Err(format!("site {s:?} is both trained on and held out"));
        }
        let sig = &self.signal;
        if sig.sample_rate < 50 || sig.sample_rate > 2000 {
            return Err(format!(
                "signal.sample_rate {} must be within 50–2000 Hz",
                sig.sample_rate
            ));
        }
        if !(sig.window_secs > 0.1 && sig.window_secs <= 120.0) {
            return Err(format!(
                "signal.window_secs {} must be within 0.1–120 s",
                sig.window_secs
            ));
        }
        self.check_mode()?;
        let t = &self.train;
        if let Some(s) = t.train_sites.iter().find(|s| {
            self.held_out.contains(s) || !(self.sites.is_empty() || self.sites.contains(s))
        }) {
            return Err(format!(
                "train.train_sites: {s:?} is not one of the sites trained on"
            ));
        }
        if !t.train_sites.is_empty() && self.mode == MODE_FEDERATED {
            return Err(
                "train.train_sites is for pull mode: a federated cohort trains at all its sites"
                    .into(),
            );
        }
        if t.batch_size == 0 || t.epochs == 0 || t.blocks_per_stage == 0 {
            return Err("train: epochs, batch_size and blocks_per_stage must be > 0".into());
        }
        if t.channels.is_empty() && !t.beat_features {
            return Err(
                "train.channels is empty: a network without convolutions needs beat_features"
                    .into(),
            );
        }
        if t.channels.iter().any(|&c| c < 1) {
            return Err(format!("train.channels {:?} must be > 0", t.channels));
        }
        if t.schedule != "cosine" && t.schedule != "step" {
            return Err(format!(
                "train.schedule {:?}: expected \"cosine\" or \"step\"",
                t.schedule
            ));
        }
        if !(0.0..0.9).contains(&t.val_fraction) {
            return Err(format!(
                "train.val_fraction {} must be within [0, 0.9)",
                t.val_fraction
            ));
        }
        if !(0.0..0.9).contains(&t.test_fraction) || t.val_fraction + t.test_fraction >= 0.9 {
            return Err(format!(
                "train.test_fraction {} must be within [0, 0.9), and with val_fraction {} below 0.9",
                t.test_fraction, t.val_fraction
            ));
        }
        if t.select_on != "records" && t.select_on != "windows" {
            return Err(format!(
                "train.select_on {:?}: expected \"records\" or \"windows\"",
                t.select_on
            ));
        }
        if t.beat_features && self.task != TASK_BEATS {
            return Err(format!(
                "train.beat_features needs task {TASK_BEATS:?} (beat-centred windows), not {:?}",
                self.task
            ));
        }
        if ![BEAT_SET_ALL, BEAT_SET_RR_TEMPLATE, BEAT_SET_RR].contains(&t.beat_feature_set.as_str())
        {
            return Err(format!(
                "train.beat_feature_set {:?}: expected {BEAT_SET_ALL:?}, {BEAT_SET_RR_TEMPLATE:?} or {BEAT_SET_RR:?}",
                t.beat_feature_set
            ));
        }
        if !(0..=MAX_THREADS).contains(&t.threads) {
            return Err(format!(
                "train.threads {} must be within 0–{MAX_THREADS} (0: libtorch's default)",
                t.threads
            ));
        }
        if t.kernel < 1 || t.kernel % 2 == 0 {
            return Err(format!("train.kernel {} must be odd", t.kernel));
        }
        Ok(())
    }

    fn check_mode(&self) -> std::result::Result<(), String> {
        match (self.mode.as_str(), &self.federated) {
            (MODE_PULL, None) => return Ok(()),
            (MODE_PULL, Some(_)) => {
                return Err(format!(
                    "[federated] is set but mode is {MODE_PULL:?}: set mode = {MODE_FEDERATED:?}"
                ));
            }
            (MODE_FEDERATED, _) => {}
            (other, _) => {
                return Err(format!(
                    "mode {other:?}: expected {MODE_PULL:?} or {MODE_FEDERATED:?}"
                ));
            }
        }
        let f = self.federated.clone().unwrap_or_default();
        if f.rounds == 0 || f.local_epochs == 0 {
            return Err("federated: rounds and local_epochs must be > 0".into());
        }
        // Every site checks the spec before it trains: bounds on the work a round asks of it.
        if f.rounds > MAX_ROUNDS || f.local_epochs > MAX_LOCAL_EPOCHS || f.max_attempts > 100 {
            return Err(format!(
                "federated: rounds {} (at most {MAX_ROUNDS}), local_epochs {} (at most {MAX_LOCAL_EPOCHS}), max_attempts {} (at most 100)",
                f.rounds, f.local_epochs, f.max_attempts
            ));
        }
        if f.aggregation != AGGREGATION_FEDAVG && f.aggregation != AGGREGATION_FEDPROX {
            return Err(format!(
                "federated.aggregation {:?}: expected {AGGREGATION_FEDAVG:?} or {AGGREGATION_FEDPROX:?}",
                f.aggregation
            ));
        }
        if !(f.mu >= 0.0 && f.mu.is_finite()) {
            return Err(format!("federated.mu {} must be ≥ 0", f.mu));
        }
        if !(f.client_fraction > 0.0 && f.client_fraction <= 1.0) {
            return Err(format!(
                "federated.client_fraction {} must be in (0, 1]",
                f.client_fraction
            ));
        }
        if f.min_sites < 2 {
            return Err(format!(
                "federated.min_sites {}: secure aggregation needs at least 2 sites a round",
                f.min_sites
            ));
        }
        if f.on_failure != ON_FAILURE_RESTART && f.on_failure != ON_FAILURE_STOP {
            return Err(format!(
                "federated.on_failure {:?}: expected {ON_FAILURE_RESTART:?} or {ON_FAILURE_STOP:?}",
                f.on_failure
            ));
        }
        if f.round_timeout_secs == 0 || f.max_attempts == 0 {
            return Err("federated: round_timeout_secs and max_attempts must be > 0".into());
        }
        if let Some(dp) = f.dp {
            let positive = |v: f64| v > 0.0 && v.is_finite();
            if !positive(dp.clip_norm) || !positive(dp.noise_multiplier) {
                return Err(format!(
                    "federated.dp: clip_norm {} and noise_multiplier {} must be > 0",
                    dp.clip_norm, dp.noise_multiplier
                ));
            }
            if !(dp.delta > 0.0 && dp.delta < 1.0) {
                return Err(format!("federated.dp.delta {} must be in (0, 1)", dp.delta));
            }
        }
        Ok(())
    }

    /// The federated settings (defaults where the spec has no `[federated]`).
    pub fn federated_settings(&self) -> FederatedSpec {
        self.federated.clone().unwrap_or_default()
    }

    /// Whether the cohort is trained in federated mode.
    pub fn is_federated(&self) -> bool {
        self.mode == MODE_FEDERATED
    }

    /// The validation and test shares of the split.
    pub fn fractions(&self) -> Fractions {
        Fractions {
            val: self.train.val_fraction,
            test: self.train.test_fraction,
        }
    }

    /// Samples per window.
    pub fn window_samples(&self) -> usize {
        (self.signal.window_secs * self.signal.sample_rate as f64).round() as usize
    }

    /// The class index of a store label, if the task uses it.
    pub fn class_of(&self, label: &str) -> Option<usize> {
        self.classes
            .iter()
            .position(|c| c.labels.iter().any(|l| l == label))
    }

    /// Class names in index order.
    pub fn class_names(&self) -> Vec<String> {
        self.classes.iter().map(|c| c.name.clone()).collect()
    }
}

/// The default label map of a task (docs/cohorts.md).
pub fn default_classes(task: &str) -> Vec<ClassDef> {
    let c = |name: &str, labels: &[&str]| ClassDef {
        name: name.into(),
        labels: labels.iter().map(|s| s.to_string()).collect(),
    };
    if task == TASK_BEATS {
        return vec![
            c("N", &["N"]),
            c("S", &["S"]),
            c("V", &["V"]),
            c("F", &["F"]),
        ];
    }
    vec![
        c("N", &[labels::SINUS_RHYTHM]),
        c("A", &[labels::ATRIAL_FIBRILLATION]),
        c(
            "O",
            &[
                labels::OTHER,
                labels::ATRIAL_FLUTTER,
                labels::SINUS_TACHYCARDIA,
                labels::SINUS_BRADYCARDIA,
                labels::SINUS_ARRHYTHMIA,
            ],
        ),
        c("~", &[labels::NOISY]),
    ]
}

/// One gateway of the federation file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayEntry {
    /// Site name (as on the ledger).
    pub site: String,
    /// Gateway address (`host:port`).
    pub address: String,
    /// CA certificate (PEM) when the gateway serves TLS.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

/// Where the ledger and the gateways are, and who is asking (TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Federation {
    /// Ledger address.
    pub ledger: String,
    /// The ledger's trust file (origin, key, checkpoint).
    pub trust: PathBuf,
    /// The data scientist's member id.
    pub member: String,
    /// The member's key file.
    pub key_file: PathBuf,
    /// Where this member remembers the newest ledger checkpoint it accepted, across runs
    /// (default `<member>.ledger-trust.json` beside the federation file; evidence of a split
    /// view goes to `evidence/` beside it).
    #[serde(default)]
    pub trust_state: Option<PathBuf>,
    /// The gateways.
    pub gateways: Vec<GatewayEntry>,
}

impl Federation {
    /// Reads a federation file; relative paths are taken from its folder.
    pub fn read(path: &Path) -> Result<Federation> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainerError::io(path, e))?;
        let mut f: Federation =
            toml::from_str(&text).map_err(|e| TrainerError::spec(path, e.to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        f.trust = dir.join(&f.trust);
        f.key_file = dir.join(&f.key_file);
        let state = f
            .trust_state
            .take()
            .unwrap_or_else(|| PathBuf::from(ecgfed_ledger::client::state_file_name(&f.member)));
        f.trust_state = Some(dir.join(state));
        for g in &mut f.gateways {
            g.ca = g.ca.as_ref().map(|c| dir.join(c));
        }
        if f.gateways.is_empty() {
            return Err(TrainerError::spec(path, "no gateways"));
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_defaults_and_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("spec.toml");
        std::fs::write(&p, "purpose = \"t\"\n").unwrap();
        let s = LoadedSpec::read(&p).unwrap();
        assert_eq!(s.spec.class_names(), ["N", "A", "O", "~"]);
        assert_eq!(s.spec.scored, ["N", "A", "O"]);
        assert_eq!(s.spec.class_of("164889003"), Some(1));
        assert_eq!(s.spec.class_of("unknown"), None);
        assert_eq!(s.spec.window_samples(), 2500);
        let hash = hex::encode(Sha256::digest(b"purpose = \"t\"\n"));
        assert_eq!(s.cohort_id(), format!("cohort-{}", &hash[..16]));
        std::fs::write(&p, "purpose = \"t\"\ntargets = \"most\"\n").unwrap();
        let e = LoadedSpec::read(&p).unwrap_err().to_string();
        assert!(e.contains("spec.toml") && e.contains("\"most\""), "{e}");
        std::fs::write(&p, "purpose = \"t\"\nsites = [\"a\"]\nheld_out = [\"a\"]\n").unwrap();
        let e = LoadedSpec::read(&p).unwrap_err().to_string();
        assert!(e.contains("both trained on and held out"), "{e}");
        // Beat features: beats task only; no convolutions only with them; the old name is
        // refused by name.
        for (body, want) in [
            (
                "[train]\nbeat_features = true\n",
                "needs task \"aami-beats\"",
            ),
            (
                "task = \"aami-beats\"\n[train]\nchannels = []\n",
                "needs beat_features",
            ),
            (
                "task = \"aami-beats\"\n[train]\nrr_features = true\n",
                "rr_features",
            ),
            (
                "sites = [\"a\", \"b\"]\n[train]\ntrain_sites = [\"c\"]\n",
                "train_sites: \"c\" is not one of the sites trained on",
            ),
            (
                "held_out = [\"c\"]\n[train]\ntrain_sites = [\"c\"]\n",
                "train_sites: \"c\"",
            ),
            (
                "mode = \"federated\"\nsites = [\"a\", \"b\"]\n[train]\ntrain_sites = [\"a\"]\n",
                "train_sites is for pull mode",
            ),
            (
                "mode = \"federated\"\n[federated]\nlocal_epochs = 1000000\n",
                "local_epochs 1000000 (at most 100)",
            ),
            ("[train]\nthreads = 100000\n", "train.threads 100000"),
        ] {
            std::fs::write(&p, format!("purpose = \"t\"\n{body}")).unwrap();
            let e = LoadedSpec::read(&p).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        std::fs::write(
            &p,
            "purpose = \"t\"\ntask = \"aami-beats\"\n[train]\nchannels = []\nbeat_features = true\n",
        )
        .unwrap();
        assert!(LoadedSpec::read(&p).unwrap().spec.train.channels.is_empty());
        std::fs::write(&p, "purpose = \"t\"\n[balance]\nby = [\"race\"]\n").unwrap();
        assert!(LoadedSpec::read(&p).is_err());
        std::fs::write(
            &p,
            "purpose = \"t\"\ntask = \"aami-beats\"\ntargets = { S = 5 }\n",
        )
        .unwrap();
        let s = LoadedSpec::read(&p).unwrap();
        assert_eq!(s.spec.scored, ["N", "S", "V", "F"]);
        assert_eq!(s.spec.targets, Targets::PerClass([("S".into(), 5)].into()));
    }
}
