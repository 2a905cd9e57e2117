//! Lineage queries over the ledger's subject indexes: a model down to its cohort, slices,
//! transfers, dataset versions and sites (with erasures since), and the reverse — every cohort
//! and model that used a site, a dataset, a record commitment, or data erased afterwards.
//! Every step is an index lookup; nothing is capped.

use std::collections::{BTreeMap, BTreeSet};

use ecgfed_proto::v1::SubjectKind;
use ecgfed_proto::v1::entry_body::Payload;
use serde::{Deserialize, Serialize};

use crate::disclosure::Disclosures;
use crate::error::{AuditError, Result};
use crate::source::{Source, VerifiedEntry, entry_time};

/// Where an entry sits and who signed it when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRef {
    /// Ledger index.
    pub index: u64,
    /// Signing time, RFC 3339 UTC.
    pub time: String,
    /// Signing member.
    pub signer: String,
}

impl From<&VerifiedEntry> for EntryRef {
    fn from(e: &VerifiedEntry) -> Self {
        EntryRef {
            index: e.index,
            time: entry_time(e),
            signer: e.body.signer.clone(),
        }
    }
}

/// A trained model (`ModelTrained`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelNode {
    /// Model id.
    pub model_id: String,
    /// The entry.
    pub entry: EntryRef,
    /// SHA-256 of the weights, hex.
    pub weights_sha256: String,
    /// Code version (git commit) of the trainer.
    pub code_version: String,
    /// Cohort trained on.
    pub cohort_id: String,
    /// Hyper-parameters as recorded.
    pub hyperparameters: serde_json::Value,
    /// Metric table as recorded.
    pub metrics: serde_json::Value,
    /// `pull` or `federated` (trained in rounds at the gateways).
    #[serde(default = "pull")]
    pub mode: String,
    /// Federated mode: the ledger indexes of the LocalRoundTrained entries the model names as
    /// its inputs.
    #[serde(default)]
    pub round_entries: Vec<u64>,
}

fn pull() -> String {
    "pull".into()
}

/// One federated round served by a site (`LocalRoundTrained`): the model trained at home on
/// the site's slice; only its masked update left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundNode {
    /// The entry (signed by the site's hospital).
    pub entry: EntryRef,
    /// Round (from 1).
    pub round: u32,
    /// Attempt of the round.
    pub attempt: u32,
    /// Site.
    pub site: String,
    /// The slice trained on.
    pub slice_id: String,
    /// Rows trained on.
    pub rows: u64,
    /// The round's participants.
    pub participants: Vec<String>,
    /// SHA-256 of the global model the site received, hex.
    pub model_sha256: String,
    /// SHA-256 of the masked update that left the site, hex.
    pub update_sha256: String,
    /// The local training as run (epochs, steps, learning rate, aggregation, μ, DP).
    pub training: serde_json::Value,
}

/// One planned cell of a cohort: site × label × sex × age band.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    /// Site.
    pub site: String,
    /// Normalised label.
    pub label: String,
    /// `M`, `F` or `unknown`.
    pub sex: String,
    /// Age band, or `unknown`.
    pub age_band: String,
    /// Segments allocated.
    pub count: u64,
}

/// A cohort (`CohortCreated`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohortNode {
    /// Cohort id.
    pub cohort_id: String,
    /// The entry.
    pub entry: EntryRef,
    /// Requesting data scientist.
    pub requester: String,
    /// Stated purpose.
    pub purpose: String,
    /// Selection seed.
    pub seed: u64,
    /// SHA-256 of the cohort spec, hex.
    pub spec_sha256: String,
    /// The allocation, cell by cell.
    pub cells: Vec<Cell>,
}

/// A transfer of a slice (`DataServed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedNode {
    /// The entry (signed by the serving hospital).
    pub entry: EntryRef,
    /// Who received the data.
    pub requester: String,
    /// Rows sent.
    pub rows: u64,
    /// Bytes sent.
    pub bytes: u64,
}

/// Records of a slice erased after the slice was committed (`RecordsErased`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureNode {
    /// The entry (signed by the hospital).
    pub entry: EntryRef,
    /// Site.
    pub site: String,
    /// Dataset.
    pub dataset_id: String,
    /// Commitments the entry erased.
    pub erased: u64,
    /// How many of them were in this slice: by the commitments the entry names (slices
    /// reserved before leaves were per slice) and by the hospital's disclosure, when given.
    pub in_slice: u64,
    /// Stated reason.
    pub reason: String,
    /// An erasure of the slice's dataset whose erased leaves are tokens only its hospital's
    /// disclosure can open, and no disclosure of it was given: the slice may have held the
    /// patient (`in_slice` is then 0).
    #[serde(default)]
    pub undisclosed: bool,
}

/// A site's committed share of a cohort (`CohortSliceCommitted`) and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceNode {
    /// Slice id.
    pub slice_id: String,
    /// Site.
    pub site: String,
    /// Dataset the rows came from.
    pub dataset_id: String,
    /// Version of the dataset in force when the slice was committed.
    pub dataset_version: u32,
    /// The entry (signed by the hospital).
    pub entry: EntryRef,
    /// Requester the slice is granted to.
    pub requester: String,
    /// Rows.
    pub rows: u64,
    /// Merkle root over the rows' commitments, hex.
    pub slice_root: String,
    /// Transfers of this slice.
    pub served: Vec<ServedNode>,
    /// Erasures of its records since it was committed.
    pub erased_since: Vec<ErasureNode>,
}

/// A dataset version (`DatasetRegistered`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetNode {
    /// Dataset id.
    pub dataset_id: String,
    /// Version.
    pub version: u32,
    /// Site.
    pub site: String,
    /// The entry.
    pub entry: EntryRef,
    /// Records.
    pub records: u64,
    /// Segments.
    pub segments: u64,
    /// Merkle root over the record commitments, hex.
    pub commitment_root: String,
}

/// A site and the hospital member that speaks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteNode {
    /// Site name.
    pub site: String,
    /// Hospital member id (signer of the site's entries).
    pub hospital: String,
    /// Rows the site contributed to the model's cohort.
    pub rows: u64,
}

/// The full lineage of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelLineage {
    /// The model.
    pub model: ModelNode,
    /// Its cohort.
    pub cohort: CohortNode,
    /// The cohort's slices, by ledger index.
    pub slices: Vec<SliceNode>,
    /// The dataset versions the slices came from.
    pub datasets: Vec<DatasetNode>,
    /// The sites.
    pub sites: Vec<SiteNode>,
    /// Federated mode: the rounds whose updates built the model, by ledger index (empty for
    /// a pulled model).
    #[serde(default)]
    pub rounds: Vec<RoundNode>,
    /// Federated mode with differential privacy: each site's guarantee, recomputed here from
    /// every round the site recorded for the cohort before the model.
    #[serde(default)]
    pub privacy: Vec<SitePrivacy>,
}

/// A site's differential-privacy guarantee over a federated cohort, from its rounds on the
/// ledger (`training_json.dp` of each `LocalRoundTrained`), composed by the accountant of
/// [`crate::privacy`]: every round counts, those of abandoned attempts too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SitePrivacy {
    /// Site.
    pub site: String,
    /// Rounds (entries) composed.
    pub rounds: u64,
    /// DP-SGD steps in all.
    pub steps: u64,
    /// Clipping norms used (one value unless the spec changed, which it cannot for a cohort).
    pub clip_norm: f64,
    /// Noise multiplier σ.
    pub noise_multiplier: f64,
    /// δ.
    pub delta: f64,
    /// ε at δ; `None` when it is not bounded: a round of the site recorded no DP, or DP
    /// fields that are missing or out of range.
    pub epsilon: Option<f64>,
    /// The LocalRoundTrained entries composed.
    pub entries: Vec<u64>,
}

/// Each site's DP guarantee from its rounds' recorded DP-SGD (sites whose rounds record none
/// are left out).
fn site_privacy(rounds: &[RoundNode], before: u64) -> Vec<SitePrivacy> {
    let mut by_site: BTreeMap<&str, Vec<&RoundNode>> = BTreeMap::new();
    for r in rounds.iter().filter(|r| r.entry.index < before) {
        by_site.entry(&r.site).or_default().push(r);
    }
    let mut out = Vec::new();
    for (site, rs) in by_site {
        let dp: Vec<&serde_json::Value> = rs.iter().filter_map(|r| r.training.get("dp")).collect();
        if dp.is_empty() {
            continue;
        }
        let num = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_f64);
        // A round without DP, or with a DP field missing or out of range, leaves ε unbounded.
        let runs: Option<Vec<crate::privacy::DpSteps>> = (dp.len() == rs.len())
            .then(|| {
                dp.iter()
                    .map(|d| {
                        let q = num(d, "sample_rate").filter(|q| (0.0..=1.0).contains(q))?;
                        let sigma = num(d, "noise_multiplier").filter(|s| *s > 0.0)?;
                        let steps = d.get("steps").and_then(serde_json::Value::as_u64)?;
                        Some(crate::privacy::DpSteps {
                            sample_rate: q,
                            noise_multiplier: sigma,
                            steps,
                        })
                    })
                    .collect()
            })
            .flatten();
        let delta = dp
            .iter()
            .map(|d| num(d, "delta").unwrap_or(0.0))
            .fold(0.0, f64::max);
        let epsilon = runs
            .as_ref()
            .map(|runs| crate::privacy::epsilon(runs, delta).0)
            .filter(|e| e.is_finite());
        let runs = runs.unwrap_or_default();
        out.push(SitePrivacy {
            site: site.to_string(),
            rounds: rs.len() as u64,
            steps: runs.iter().map(|r| r.steps).sum(),
            clip_norm: dp
                .iter()
                .map(|d| num(d, "clip_norm").unwrap_or(0.0))
                .fold(0.0, f64::max),
            noise_multiplier: dp
                .iter()
                .map(|d| num(d, "noise_multiplier").unwrap_or(0.0))
                .fold(f64::INFINITY, f64::min),
            delta,
            epsilon,
            entries: rs.iter().map(|r| r.entry.index).collect(),
        });
    }
    out
}

impl ModelLineage {
    /// Every ledger entry the lineage rests on, ascending.
    pub fn entry_indexes(&self) -> Vec<u64> {
        let mut v = BTreeSet::new();
        v.insert(self.model.entry.index);
        v.insert(self.cohort.entry.index);
        for s in &self.slices {
            v.insert(s.entry.index);
            v.extend(s.served.iter().map(|d| d.entry.index));
            v.extend(s.erased_since.iter().map(|e| e.entry.index));
        }
        v.extend(self.datasets.iter().map(|d| d.entry.index));
        v.extend(self.rounds.iter().map(|r| r.entry.index));
        v.extend(self.privacy.iter().flat_map(|p| p.entries.iter().copied()));
        v.into_iter().collect()
    }

    /// Whether any of the model's records were erased after its slices were committed, or
    /// may have been (an erasure of one of its datasets not disclosed to this audit).
    pub fn has_erasures(&self) -> bool {
        self.slices.iter().any(|s| !s.erased_since.is_empty())
    }
}

fn not_found(what: String) -> AuditError {
    AuditError::NotFound(what)
}

/// The model's `ModelTrained` entry.
async fn model_entry<S: Source>(src: &mut S, model_id: &str) -> Result<(VerifiedEntry, ModelNode)> {
    for e in src.by_subject(SubjectKind::Model, model_id).await? {
        if let Some(Payload::ModelTrained(m)) = e.payload()
            && m.model_id == model_id
        {
            let node = ModelNode {
                model_id: m.model_id.clone(),
                entry: (&e).into(),
                weights_sha256: hex::encode(&m.weights_sha256),
                code_version: m.code_version.clone(),
                cohort_id: m.cohort_id.clone(),
                hyperparameters: serde_json::from_str(&m.hyperparameters_json)
                    .unwrap_or(serde_json::Value::String(m.hyperparameters_json.clone())),
                metrics: serde_json::from_str(&m.metrics_json)
                    .unwrap_or(serde_json::Value::String(m.metrics_json.clone())),
                mode: if m.mode.is_empty() {
                    pull()
                } else {
                    m.mode.clone()
                },
                round_entries: m.round_entries.clone(),
            };
            return Ok((e, node));
        }
    }
    Err(not_found(format!(
        "model {model_id}: no ModelTrained entry on the ledger"
    )))
}

/// Commitments of a slice entry as a set.
fn slice_commitments(e: &VerifiedEntry) -> BTreeSet<&[u8]> {
    match e.payload() {
        Some(Payload::CohortSliceCommitted(s)) => {
            s.commitments.iter().map(|c| c.as_slice()).collect()
        }
        _ => BTreeSet::new(),
    }
}

/// The lineage of model `model_id`: cohort → slices (with transfers and later erasures) →
/// dataset versions → sites.
pub async fn model_lineage<S: Source>(
    src: &mut S,
    model_id: &str,
    disclosures: &Disclosures,
) -> Result<ModelLineage> {
    let (_, model) = model_entry(src, model_id).await?;
    let cohort_entries = src
        .by_subject(SubjectKind::Cohort, &model.cohort_id)
        .await?;
    let CohortEntries {
        cohort,
        mut slices,
        served,
        rounds,
    } = read_cohort_entries(&cohort_entries, &model.cohort_id);
    let privacy = site_privacy(&rounds, model.entry.index);
    let rounds = model_rounds(&model, rounds)?;
    let cohort = cohort.ok_or_else(|| {
        not_found(format!(
            "model {model_id}: cohort {} has no CohortCreated entry",
            model.cohort_id
        ))
    })?;
    // Only the slices committed before the model was trained are its sources.
    slices.retain(|(e, _)| e.index < model.entry.index);
    let mut datasets: BTreeMap<(String, u32), DatasetNode> = BTreeMap::new();
    // Every dataset's history in one batch of lookups (concurrent against a live ledger).
    let mut ids: Vec<String> = slices.iter().map(|(_, n)| n.dataset_id.clone()).collect();
    ids.sort();
    ids.dedup();
    let queries: Vec<(SubjectKind, &str)> = ids
        .iter()
        .map(|id| (SubjectKind::DatasetHistory, id.as_str()))
        .collect();
    let histories: BTreeMap<String, Vec<VerifiedEntry>> = ids
        .iter()
        .cloned()
        .zip(src.by_subjects(&queries).await?)
        .collect();
    for (e, node) in &mut slices {
        node.served = served
            .iter()
            .filter(|(id, s)| *id == node.slice_id && s.entry.index < model.entry.index)
            .map(|(_, s)| s.clone())
            .collect();
        let history = histories
            .get(&node.dataset_id)
            .map_or(&[][..], Vec::as_slice);
        attach_dataset_history(e, node, history, &mut datasets, disclosures);
    }
    let slices: Vec<SliceNode> = slices.into_iter().map(|(_, n)| n).collect();
    // Only the version in force at each slice (the last registration before it) is a source.
    let used: BTreeSet<(String, u32)> = slices
        .iter()
        .map(|s| (s.dataset_id.clone(), s.dataset_version))
        .collect();
    let datasets: Vec<DatasetNode> = datasets
        .into_iter()
        .filter(|(k, _)| used.contains(k))
        .map(|(_, d)| d)
        .collect();
    let sites = sites_of(&slices);
    Ok(ModelLineage {
        model,
        cohort,
        slices,
        datasets,
        sites,
        rounds,
        privacy,
    })
}

/// The rounds a model names as its inputs, each found among its cohort's LocalRoundTrained
/// entries before the model; a named entry that is not one of them fails the lineage.
fn model_rounds(model: &ModelNode, mut rounds: Vec<RoundNode>) -> Result<Vec<RoundNode>> {
    rounds.retain(|r| model.round_entries.contains(&r.entry.index));
    for i in &model.round_entries {
        let found = rounds
            .iter()
            .any(|r| r.entry.index == *i && r.entry.index < model.entry.index);
        if !found {
            return Err(AuditError::Entry {
                index: model.entry.index,
                reason: format!(
                    "model {} names entry {i} as a round it was built from, which is not a LocalRoundTrained entry of cohort {} before it",
                    model.model_id, model.cohort_id
                ),
            });
        }
    }
    Ok(rounds)
}

/// What a cohort's entries say: the cohort, its slices (with their entries) and the transfers
/// of its slices (slice id, transfer).
struct CohortEntries {
    cohort: Option<CohortNode>,
    slices: Vec<(VerifiedEntry, SliceNode)>,
    served: Vec<(String, ServedNode)>,
    rounds: Vec<RoundNode>,
}

/// Reads the entries naming cohort `cohort_id`: its first `CohortCreated`, its slices and
/// their transfers.
fn read_cohort_entries(cohort_entries: &[VerifiedEntry], cohort_id: &str) -> CohortEntries {
    let mut cohort = None;
    let mut slices: Vec<(VerifiedEntry, SliceNode)> = Vec::new();
    let mut served: Vec<(String, ServedNode)> = Vec::new();
    let mut rounds: Vec<RoundNode> = Vec::new();
    for e in cohort_entries {
        match e.payload() {
            Some(Payload::CohortCreated(c)) if c.cohort_id == cohort_id && cohort.is_none() => {
                cohort = Some(CohortNode {
                    cohort_id: c.cohort_id.clone(),
                    entry: e.into(),
                    requester: c.requester.clone(),
                    purpose: c.purpose.clone(),
                    seed: c.seed,
                    spec_sha256: hex::encode(&c.spec_sha256),
                    cells: c
                        .allocation
                        .iter()
                        .map(|a| Cell {
                            site: a.site.clone(),
                            label: a.label.clone(),
                            sex: a.sex.clone(),
                            age_band: a.age_band.clone(),
                            count: a.count,
                        })
                        .collect(),
                });
            }
            Some(Payload::CohortSliceCommitted(s)) if s.cohort_id == cohort_id => {
                slices.push((
                    e.clone(),
                    SliceNode {
                        slice_id: s.slice_id.clone(),
                        site: s.site.clone(),
                        dataset_id: s.dataset_id.clone(),
                        dataset_version: 0,
                        entry: e.into(),
                        requester: s.requester.clone(),
                        rows: s.row_count,
                        slice_root: hex::encode(&s.slice_root),
                        served: Vec::new(),
                        erased_since: Vec::new(),
                    },
                ));
            }
            Some(Payload::LocalRoundTrained(r)) if r.cohort_id == cohort_id => {
                rounds.push(RoundNode {
                    entry: e.into(),
                    round: r.round,
                    attempt: r.attempt,
                    site: r.site.clone(),
                    slice_id: r.slice_id.clone(),
                    rows: r.rows_used,
                    participants: r.participants.clone(),
                    model_sha256: hex::encode(&r.model_sha256),
                    update_sha256: hex::encode(&r.update_sha256),
                    training: serde_json::from_str(&r.training_json)
                        .unwrap_or(serde_json::Value::String(r.training_json.clone())),
                });
            }
            Some(Payload::DataServed(d)) if d.cohort_id == cohort_id => {
                served.push((
                    d.slice_id.clone(),
                    ServedNode {
                        entry: e.into(),
                        requester: d.requester.clone(),
                        rows: d.rows,
                        bytes: d.bytes,
                    },
                ));
            }
            _ => {}
        }
    }
    CohortEntries {
        cohort,
        slices,
        served,
        rounds,
    }
}

/// Sets the dataset version a slice (entry `e`) was drawn from, the last registration of its
/// site before it (recorded in `datasets`), and the erasures since that touch its rows, from
/// the dataset's history.
fn attach_dataset_history(
    e: &VerifiedEntry,
    node: &mut SliceNode,
    history: &[VerifiedEntry],
    datasets: &mut BTreeMap<(String, u32), DatasetNode>,
    disclosures: &Disclosures,
) {
    let commitments = slice_commitments(e);
    for h in history {
        match h.payload() {
            Some(Payload::DatasetRegistered(d)) if h.index < e.index && d.site == node.site => {
                node.dataset_version = d.version;
                datasets.insert(
                    (d.dataset_id.clone(), d.version),
                    DatasetNode {
                        dataset_id: d.dataset_id.clone(),
                        version: d.version,
                        site: d.site.clone(),
                        entry: h.into(),
                        records: d.record_count,
                        segments: d.segment_count,
                        commitment_root: hex::encode(&d.commitment_root),
                    },
                );
            }
            Some(Payload::RecordsErased(r)) if h.index > e.index && r.site == node.site => {
                let in_slice = r
                    .commitments
                    .iter()
                    .filter(|c| commitments.contains(c.as_slice()))
                    .count() as u64
                    + disclosures.in_slice(h.index, &node.slice_id);
                let undisclosed = in_slice == 0
                    && !r.erased_leaves.is_empty()
                    && r.dataset_id == node.dataset_id
                    && !disclosures.covers(h.index);
                if in_slice > 0 || undisclosed {
                    node.erased_since.push(ErasureNode {
                        entry: h.into(),
                        site: r.site.clone(),
                        dataset_id: r.dataset_id.clone(),
                        erased: r.commitments.len() as u64,
                        in_slice,
                        reason: r.reason.clone(),
                        undisclosed,
                    });
                }
            }
            _ => {}
        }
    }
}

/// The sites of the slices, with their hospital and rows.
fn sites_of(slices: &[SliceNode]) -> Vec<SiteNode> {
    let mut sites: BTreeMap<String, SiteNode> = BTreeMap::new();
    for s in slices {
        let n = sites.entry(s.site.clone()).or_insert_with(|| SiteNode {
            site: s.site.clone(),
            hospital: s.entry.signer.clone(),
            rows: 0,
        });
        n.rows += s.rows;
    }
    sites.into_values().collect()
}

/// What a usage query looks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every cohort and model that used a site.
    Site(String),
    /// ... a dataset (any version).
    Dataset(String),
    /// ... a record, by its commitment (64 hex digits).
    Record(String),
}

/// A model trained on a cohort (brief).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRef {
    /// Model id.
    pub model_id: String,
    /// Its entry.
    pub entry: EntryRef,
}

/// A slice that matched a usage query (brief).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceRef {
    /// Slice id.
    pub slice_id: String,
    /// Site.
    pub site: String,
    /// Dataset.
    pub dataset_id: String,
    /// Rows.
    pub rows: u64,
    /// Its entry.
    pub entry: EntryRef,
    /// Matching records in the slice (record and erasure queries; else 0).
    pub matching_records: u64,
}

/// One cohort that used the target, with its models.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Cohort id.
    pub cohort_id: String,
    /// Purpose stated in CohortCreated.
    pub purpose: String,
    /// Requester.
    pub requester: String,
    /// The CohortCreated entry, if found.
    pub created: Option<EntryRef>,
    /// The matching slices of the cohort.
    pub slices: Vec<SliceRef>,
    /// Models trained on the cohort.
    pub models: Vec<ModelRef>,
}

/// A model trained on records that were erased afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasedUse {
    /// The erasure.
    pub erasure: ErasureNode,
    /// The cohort whose slices held erased records, with the models trained on it before
    /// the erasure.
    pub usage: Usage,
}

/// The cohort's CohortCreated data and the models trained on it before `before` (any model
/// when `before` is None).
async fn cohort_usage<S: Source>(
    src: &mut S,
    cohort_id: &str,
    slices: Vec<SliceRef>,
    before: Option<u64>,
) -> Result<Usage> {
    let mut u = Usage {
        cohort_id: cohort_id.to_string(),
        purpose: String::new(),
        requester: String::new(),
        created: None,
        slices,
        models: Vec::new(),
    };
    for e in src.by_subject(SubjectKind::Cohort, cohort_id).await? {
        match e.payload() {
            Some(Payload::CohortCreated(c)) if c.cohort_id == cohort_id && u.created.is_none() => {
                u.purpose = c.purpose.clone();
                u.requester = c.requester.clone();
                u.created = Some((&e).into());
            }
            // A model's sources are the slices committed before it.
            Some(Payload::ModelTrained(m))
                if m.cohort_id == cohort_id
                    && before.is_none_or(|b| e.index < b)
                    && u.slices.iter().any(|s| s.entry.index < e.index) =>
            {
                u.models.push(ModelRef {
                    model_id: m.model_id.clone(),
                    entry: (&e).into(),
                });
            }
            _ => {}
        }
    }
    Ok(u)
}

fn slice_ref(e: &VerifiedEntry, matching: u64) -> Option<(String, SliceRef)> {
    let Some(Payload::CohortSliceCommitted(s)) = e.payload() else {
        return None;
    };
    Some((
        s.cohort_id.clone(),
        SliceRef {
            slice_id: s.slice_id.clone(),
            site: s.site.clone(),
            dataset_id: s.dataset_id.clone(),
            rows: s.row_count,
            entry: e.into(),
            matching_records: matching,
        },
    ))
}

/// Groups slice refs by cohort, keeping first-seen order.
fn by_cohort(refs: Vec<(String, SliceRef)>) -> Vec<(String, Vec<SliceRef>)> {
    let mut order: Vec<(String, Vec<SliceRef>)> = Vec::new();
    for (c, r) in refs {
        match order.iter_mut().find(|(k, _)| *k == c) {
            Some((_, v)) => v.push(r),
            None => order.push((c, vec![r])),
        }
    }
    order
}

/// Every cohort (with its models) that used `target`; each is handed to `emit` as soon as it is
/// complete, in order of the first matching slice. Returns how many were emitted.
pub async fn usage<S: Source>(
    src: &mut S,
    target: &Target,
    mut emit: impl FnMut(Usage) -> Result<()>,
) -> Result<u64> {
    let refs: Vec<(String, SliceRef)> = match target {
        Target::Site(site) => src
            .by_subject(SubjectKind::Site, site)
            .await?
            .iter()
            .filter(|e| matches!(e.payload(), Some(Payload::CohortSliceCommitted(s)) if s.site == *site))
            .filter_map(|e| slice_ref(e, 0))
            .collect(),
        Target::Dataset(id) => src
            .by_subject(SubjectKind::Dataset, id)
            .await?
            .iter()
            .filter(|e| matches!(e.payload(), Some(Payload::CohortSliceCommitted(s)) if s.dataset_id == *id))
            .filter_map(|e| slice_ref(e, 0))
            .collect(),
        Target::Record(hex_c) => {
            let c = hex::decode(hex_c)
                .ok()
                .filter(|c| c.len() == 32)
                .ok_or_else(|| {
                    AuditError::NotFound(format!(
                        "record commitment {hex_c:?} is not 64 hex digits"
                    ))
                })?;
            let mut refs = Vec::new();
            for id in dataset_ids(src).await? {
                for e in src.by_subject(SubjectKind::Dataset, &id).await? {
                    if slice_commitments(&e).contains(c.as_slice()) {
                        refs.extend(slice_ref(&e, 1));
                    }
                }
            }
            refs
        }
    };
    let mut n = 0;
    for (cohort, slices) in by_cohort(refs) {
        emit(cohort_usage(src, &cohort, slices, None).await?)?;
        n += 1;
    }
    Ok(n)
}

/// Every dataset id registered on the ledger, in order of first registration.
async fn dataset_ids<S: Source>(src: &mut S) -> Result<Vec<String>> {
    let mut ids: Vec<String> = Vec::new();
    for e in src
        .by_subject(SubjectKind::EntryKind, "DatasetRegistered")
        .await?
    {
        if let Some(Payload::DatasetRegistered(d)) = e.payload()
            && !ids.contains(&d.dataset_id)
        {
            ids.push(d.dataset_id.clone());
        }
    }
    Ok(ids)
}

/// Every model trained on records erased afterwards: for each `RecordsErased`, the slices
/// committed before it that held erased records (named by the entry's commitments for slices
/// reserved before leaves were per slice, otherwise by the hospital's disclosure), their cohorts and the models trained on those
/// cohorts before the erasure. Each is handed to `emit`; returns how many.
pub async fn erased<S: Source>(
    src: &mut S,
    disclosures: &Disclosures,
    mut emit: impl FnMut(ErasedUse) -> Result<()>,
) -> Result<u64> {
    let mut n = 0;
    for er in src
        .by_subject(SubjectKind::EntryKind, "RecordsErased")
        .await?
    {
        let Some(Payload::RecordsErased(r)) = er.payload() else {
            continue;
        };
        let gone: BTreeSet<&[u8]> = r.commitments.iter().map(|c| c.as_slice()).collect();
        let mut refs = Vec::new();
        for e in src.by_subject(SubjectKind::Dataset, &r.dataset_id).await? {
            if e.index >= er.index {
                break;
            }
            let Some(Payload::CohortSliceCommitted(s)) = e.payload() else {
                continue;
            };
            if s.site != r.site {
                continue;
            }
            let hit = s
                .commitments
                .iter()
                .filter(|c| gone.contains(c.as_slice()))
                .count() as u64
                + disclosures.in_slice(er.index, &s.slice_id);
            if hit > 0 {
                refs.extend(slice_ref(&e, hit));
            }
        }
        for (cohort, slices) in by_cohort(refs) {
            let in_slice = slices.iter().map(|s| s.matching_records).sum();
            let usage = cohort_usage(src, &cohort, slices, Some(er.index)).await?;
            if usage.models.is_empty() {
                continue;
            }
            emit(ErasedUse {
                erasure: ErasureNode {
                    entry: (&er).into(),
                    site: r.site.clone(),
                    dataset_id: r.dataset_id.clone(),
                    erased: r.commitments.len() as u64,
                    in_slice,
                    reason: r.reason.clone(),
                    undisclosed: false,
                },
                usage,
            })?;
            n += 1;
        }
    }
    Ok(n)
}
