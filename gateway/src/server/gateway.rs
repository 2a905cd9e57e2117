//! The gateway itself: start-up checks against the ledger, dataset registration, slice
//! reservation, served streams and erasure. [`crate::server::service`] and [`crate::server::flight`] put
//! gRPC in front of it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::federated::LocalTrainer;
use ecgfed_ledger::client::{LedgerClient, Memory};
use ecgfed_ledger::entry::EntrySigner;
use ecgfed_ledger::keys::KeyPair;
use ecgfed_ledger::log::{Hash, Hash32};
use ecgfed_ledger::state::{MODE_FEDERATED, MemberInfo};
use ecgfed_ledger::trust::TrustFile;
use ecgfed_ledger::witness::Cosigner;
use ecgfed_proto::v1::entry_body::Payload;
use ecgfed_proto::v1::{
    AllocationCell, CohortCreated, CohortSliceCommitted, DataServed, DatasetRegistered,
    RecordsErased, Role, SubjectKind,
};
use tonic::Code;

use crate::commitment::CommitmentTree;
use crate::error::{GatewayError, IdentityProblem, Result, VerificationError};
use crate::server::authenticate::Members;
use crate::server::catalog::Catalog;
use crate::server::config::GatewayConfig;
use crate::server::keystore::KeyStore;
use crate::server::rows::{ErasedLeaf, SliceRecord};
use crate::server::select::select;
use crate::server::served::SliceKeys;

/// Environment variable of the fault-injection hooks used by the tamper tests: when set to
/// `alter-sample`, the gateway adds 0.001 mV to the first sample of the first row it serves
/// on every DoGet; with `withhold-row`, it announces a row erased that was not (lying gateways
/// the client must catch). Compiled only with the
/// `fault-injection` feature, which only tests turn on.
#[cfg(feature = "fault-injection")]
pub const FAULT_ENV: &str = "ECGFED_GATEWAY_FAULT";

/// The test machinery compiled into this build (empty in a shipped binary): `ecgfed --version`
/// prints it.
pub const TEST_KIT: &[&str] = &[
    #[cfg(feature = "fault-injection")]
    "fault-injection",
    #[cfg(feature = "bench-kit")]
    "bench-kit",
];

/// The dataset registration in force.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Registration {
    /// Dataset id.
    pub dataset_id: String,
    /// Version on the ledger.
    pub version: u32,
    /// Index of the DatasetRegistered entry.
    pub ledger_index: u64,
    /// Hex commitment root.
    pub root: String,
}

/// A pending erasure, queued in the key store until every step is done (resumed at start, in
/// order; a second erasure never replaces a pending one).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct PendingErasure {
    source: String,
    patient: String,
    commitments: Vec<Hash32>,
    reason: String,
    ledger_index: Option<u64>,
    /// The entry's erased-leaf tokens (padding included, sorted).
    #[serde(default)]
    tokens: Vec<Hash32>,
    /// The disclosure (JSON), kept in `DATA/erasures/` once the entry is written.
    #[serde(default)]
    disclosure: String,
}

/// What an erasure did.
#[derive(Debug, Clone)]
pub struct Erasure {
    /// Segments (rows) erased.
    pub segments: u64,
    /// The patient's dataset commitments, as `RecordsErased` lists them.
    pub commitments: Vec<[u8; 32]>,
    /// Index of the `RecordsErased` entry.
    pub ledger_index: u64,
    /// The erasure disclosure (JSON, docs/flight.md "Erasure"), for the hospital's auditor.
    pub disclosure: Vec<u8>,
    /// Where the gateway keeps it (mode 0600).
    pub disclosure_file: std::path::PathBuf,
}

/// Folder of the gateway's data folder where erasure disclosures are kept.
pub const ERASURES_DIR: &str = "erasures";

/// Meta key of the single pending erasure of the earlier format (moved into the queue at start).
const META_ERASING_V1: &str = "erasing";

/// What a DoGet will read.
#[derive(Debug, Clone)]
pub struct ServePlan {
    /// The catalog the row positions refer to.
    pub catalog: Arc<Catalog>,
    /// Sorted row positions to read, per store file (its index in the catalog).
    pub per_file: HashMap<usize, Vec<usize>>,
    /// The leaves erased since the reservation.
    pub erased: Vec<ErasedLeaf>,
}

/// A slice as served before, kept for later pulls: its reservation, its record batches and
/// the leaves that were erased when it was built (an erasure empties the cache, so all stay
/// true).
#[derive(Debug)]
pub struct ServedSlice {
    /// The reservation, as read from the key store.
    pub record: Arc<SliceRecord>,
    /// The served record batches, in order.
    pub batches: Vec<arrow::array::RecordBatch>,
    /// Every erased leaf.
    pub erased: Vec<ErasedLeaf>,
    /// Bytes of the batches reserved from the cache budget ([`Gateway::reserve_cache`]).
    pub bytes: u64,
}

/// A running gateway's state.
pub struct Gateway {
    /// Configuration.
    pub cfg: GatewayConfig,
    /// Key store.
    pub keys: KeyStore,
    /// Members directory (and the verifying ledger client behind it).
    pub members: Members,
    /// The hospital's witness of the ledger's checkpoints.
    pub witness: Arc<Cosigner>,
    signer: tokio::sync::Mutex<EntrySigner>,
    catalog: RwLock<Arc<Catalog>>,
    registration: RwLock<Option<Registration>>,
    /// Serialises reservations and erasures.
    writes: tokio::sync::Mutex<()>,
    /// Fault-injection hook (`FAULT_ENV`, `fault-injection` feature only).
    pub alter_sample: bool,
    /// Fault-injection hook `withhold-row`: the first row of every plan is announced erased
    /// (with its salt) though it was not, as a gateway withholding data would.
    withhold_row: bool,
    /// Recently served slices, kept for repeated pulls (an erasure empties it).
    cache: std::sync::Mutex<HashMap<String, Arc<ServedSlice>>>,
    /// Bytes of served batches held for the cache: those in it and those being gathered by
    /// running DoGets; never above the cache budget.
    cache_bytes: std::sync::atomic::AtomicU64,
    /// Erasure fence: odd while an erasure runs, bumped at its start and its end. A DoGet
    /// notes it when it starts and stops if it changed or was odd (an erased patient's rows
    /// are never sent once the erasure began).
    epoch: std::sync::atomic::AtomicU64,
    /// DoGets reading and sending now, at most `policy.max_transfers`.
    transfers: Arc<tokio::sync::Semaphore>,
    /// The hospital's key (round keys are signed with it).
    key: KeyPair,
    /// Fault-injection hook `die-in-round:<site>:<round>` (`fault-injection` feature only):
    /// the gateway of `<site>` exits abruptly when asked to train round `<round>` (a site
    /// dropping out mid-round).
    #[cfg(feature = "fault-injection")]
    pub(crate) die_in_round: Option<u32>,
    /// The training federated rounds run here ([`Gateway::set_trainer`]).
    trainer: std::sync::OnceLock<Arc<dyn LocalTrainer>>,
    /// Federated rounds open here.
    pub(crate) rounds: crate::server::rounds::Rounds,
}

/// The gateway's trust state in its data folder: the newest ledger checkpoint it accepted.
pub const LEDGER_TRUST_FILE: &str = "ledger-trust.json";
/// The gateway's witness state in its data folder: the last checkpoint it cosigned.
pub const WITNESS_FILE: &str = "witness.json";

/// The round of fault `die-in-round:<site>:<round>` when `<site>` is `site`.
#[cfg(feature = "fault-injection")]
fn die_in_round(site: &str) -> Option<u32> {
    let v = std::env::var(FAULT_ENV).ok()?;
    let rest = v.strip_prefix("die-in-round:")?;
    let (s, round) = rest.rsplit_once(':')?;
    (s == site).then(|| round.parse().ok()).flatten()
}

fn refused(code: Code, m: impl Into<String>) -> GatewayError {
    GatewayError::refused(code, m)
}

impl Gateway {
    /// Opens the key store, connects to the ledger, checks that the configured key is the
    /// hospital member of this site, finishes an interrupted erasure, loads the catalog and
    /// registers the dataset (a new version only when it changed).
    pub async fn start(cfg: GatewayConfig) -> Result<Arc<Gateway>> {
        let keys = KeyStore::open(&cfg.data)?;
        let key = KeyPair::read_file(&cfg.key_file)?;
        let (trust, _, ledger_key) =
            TrustFile::read(&cfg.ledger.trust).map_err(|source| GatewayError::Trust {
                path: cfg.ledger.trust.clone(),
                source,
            })?;
        // The newest checkpoint this gateway trusted survives restarts: a ledger rolled back
        // or forked since is refused (and a fork recorded as evidence).
        let memory = Memory::beside(cfg.data.join(LEDGER_TRUST_FILE), &cfg.member);
        let mut ledger =
            LedgerClient::open(&cfg.ledger.address, &cfg.ledger.trust, Some(memory)).await?;
        ledger.update_checkpoint().await?;

        let members = Members::new(ledger).await?;
        let me = members
            .get(&cfg.member)
            .await
            .map_err(|s| GatewayError::Ledger(ecgfed_ledger::client::ClientError::Refused(s)))?
            .ok_or_else(|| GatewayError::Identity {
                member: cfg.member.clone(),
                problem: IdentityProblem::NotOnLedger,
            })?;
        check_self(&cfg, &me, &key)?;
        // Its identity checked, the gateway's calls carry its call token: the ledger takes
        // writes only from members.
        members
            .ledger()
            .lock()
            .await
            .act_as(&cfg.member, key.clone());
        // The hospital's witness role: cosigns checkpoints that extend the last it cosigned.
        let witness = Arc::new(
            Cosigner::open(
                &cfg.data.join(WITNESS_FILE),
                &cfg.member,
                key.clone(),
                &trust.origin,
                ledger_key,
                &trust.checkpoint,
            )
            .map_err(|e| GatewayError::Witness(Box::new(e)))?,
        );
        let catalog = Catalog::load(&cfg.store, &cfg.dataset_id(), &keys, &cfg.age_edges, cfg.k)?;
        let transfers = Arc::new(tokio::sync::Semaphore::new(cfg.policy.max_transfers));
        let gw = Arc::new(Gateway {
            signer: tokio::sync::Mutex::new(EntrySigner::new(&cfg.member, key.clone())),
            #[cfg(feature = "fault-injection")]
            die_in_round: die_in_round(&cfg.site),
            key,
            trainer: std::sync::OnceLock::new(),
            rounds: Default::default(),
            #[cfg(feature = "fault-injection")]
            alter_sample: std::env::var(FAULT_ENV).is_ok_and(|v| v == "alter-sample"),
            #[cfg(not(feature = "fault-injection"))]
            alter_sample: false,
            #[cfg(feature = "fault-injection")]
            withhold_row: std::env::var(FAULT_ENV).is_ok_and(|v| v == "withhold-row"),
            #[cfg(not(feature = "fault-injection"))]
            withhold_row: false,
            cfg,
            keys,
            members,
            witness,
            catalog: RwLock::new(Arc::new(catalog)),
            registration: RwLock::new(None),
            writes: tokio::sync::Mutex::new(()),
            cache: std::sync::Mutex::new(HashMap::new()),
            cache_bytes: Default::default(),
            epoch: Default::default(),
            transfers,
        });
        gw.resume_erasure().await?;
        gw.register().await?;
        Ok(gw)
    }

    /// Gives the gateway the training its federated rounds run (once; later calls are
    /// ignored). Without one, TrainingService calls are refused.
    pub fn set_trainer(&self, trainer: Arc<dyn LocalTrainer>) {
        let _ = self.trainer.set(trainer);
    }

    /// The training federated rounds run here, if any.
    pub fn trainer(&self) -> Option<Arc<dyn LocalTrainer>> {
        self.trainer.get().cloned()
    }

    /// Signs `msg` with the hospital's key.
    pub(crate) fn sign(&self, msg: &[u8]) -> ecgfed_ledger::keys::Signature {
        self.key.sign(msg)
    }

    /// The catalog in force.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog
            .read()
            .map(|c| Arc::clone(&c))
            .unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    /// The registration in force.
    pub fn registration(&self) -> Option<Registration> {
        self.registration.read().ok().and_then(|r| r.clone())
    }

    /// Signs `payload` with the hospital key and submits it; returns the entry index once the
    /// entry is durable and proven in the ledger's log.
    pub async fn record(&self, payload: Payload) -> Result<u64> {
        let entry = self.signer.lock().await.sign(payload);
        let mut ledger = self.members.ledger().lock().await;
        Ok(ledger.submit(entry).await?.index)
    }

    /// Like [`Gateway::record`], but answers once the entry is durable and proves it in the
    /// background (an entry the ledger does not prove is logged): registration at start uses
    /// it, since the checkpoint that covers it is witnessed by the gateways themselves, this
    /// one among them, once they serve.
    async fn record_durable(&self, payload: Payload) -> Result<u64> {
        let entry = self.signer.lock().await.sign(payload);
        let mut ledger = self.members.ledger().lock().await;
        let (receipt, stored) = ledger.submit_acknowledged(entry).await?;
        let mut prover = ledger.clone();
        drop(ledger);
        tokio::spawn(async move {
            if let Err(e) = prover.prove(receipt.index, &stored).await {
                tracing::error!(
                    index = receipt.index,
                    "the ledger acknowledged an entry it does not prove: {e}"
                );
            }
        });
        Ok(receipt.index)
    }

    async fn entries_of(&self, kind: SubjectKind, id: &str) -> Result<Vec<(u64, Payload)>> {
        let mut ledger = self.members.ledger().lock().await;
        Ok(ledger.payloads_naming(kind, id, 0, 0).await?)
    }

    /// Registers the catalog's dataset unless the ledger already has this exact version.
    pub async fn register(&self) -> Result<Registration> {
        let c = self.catalog();
        let mut last: Option<(u64, DatasetRegistered)> = None;
        for (i, p) in self
            .entries_of(SubjectKind::DatasetHistory, &c.dataset_id)
            .await?
        {
            if let Payload::DatasetRegistered(d) = p
                && d.site == self.cfg.site
            {
                last = Some((i, d));
            }
        }
        let reg = match last {
            Some((i, d))
                if d.commitment_root == c.root && d.manifest_sha256 == c.manifest_sha256 =>
            {
                Registration {
                    dataset_id: c.dataset_id.clone(),
                    version: d.version,
                    ledger_index: i,
                    root: hex::encode(c.root),
                }
            }
            prev => {
                let version = prev.map(|(_, d)| d.version + 1).unwrap_or(1);
                let summary = serde_json::json!({
                    "sources": c.sources,
                    "age_bands": c.age_bands(),
                    "k": c.k,
                });
                let index = self
                    .record_durable(Payload::DatasetRegistered(DatasetRegistered {
                        dataset_id: c.dataset_id.clone(),
                        site: self.cfg.site.clone(),
                        version,
                        record_count: c.records,
                        segment_count: c.rows.len() as u64,
                        commitment_root: c.root.to_vec(),
                        manifest_sha256: c.manifest_sha256.to_vec(),
                        summary_json: summary.to_string(),
                    }))
                    .await?;
                tracing::info!(dataset = %c.dataset_id, version, index, "dataset registered");
                Registration {
                    dataset_id: c.dataset_id.clone(),
                    version,
                    ledger_index: index,
                    root: hex::encode(c.root),
                }
            }
        };
        if let Ok(mut r) = self.registration.write() {
            *r = Some(reg.clone());
        }
        Ok(reg)
    }

    fn check_dataset(&self, dataset_id: &str) -> Result<Arc<Catalog>> {
        let c = self.catalog();
        if !dataset_id.is_empty() && dataset_id != c.dataset_id {
            return Err(refused(
                Code::NotFound,
                format!(
                    "dataset {dataset_id:?} is not served here (this gateway serves {:?})",
                    c.dataset_id
                ),
            ));
        }
        Ok(c)
    }

    /// Reserves this site's slice of `cohort_id` for `caller` (a scientist who is the cohort's
    /// requester). Idempotent: the same requester gets the slice reserved before.
    pub async fn reserve(
        &self,
        caller: &MemberInfo,
        cohort_id: &str,
        dataset_id: &str,
        seed: u64,
        allocation: &[AllocationCell],
    ) -> Result<SliceRecord> {
        if caller.role != Role::Scientist {
            return Err(refused(
                Code::PermissionDenied,
                format!(
                    "member {} ({:?}) may not reserve slices: scientists only",
                    caller.id, caller.role
                ),
            ));
        }
        let c = self.check_dataset(dataset_id)?;
        let _w = self.writes.lock().await;
        let slice_id = ecgfed_ledger::state::slice_id(cohort_id, &self.cfg.site);
        if let Some(s) = self.stored_slice(&slice_id)? {
            if s.requester != caller.id {
                return Err(refused(
                    Code::PermissionDenied,
                    format!("slice {slice_id} is granted to {}", s.requester),
                ));
            }
            self.check_mode(cohort_id, s.federated)?;
            return Ok(s);
        }
        let (_, cohort) = {
            let mut ledger = self.members.ledger().lock().await;
            ledger.cohort(cohort_id).await?
        }
        .ok_or_else(|| {
            refused(
                Code::NotFound,
                format!("cohort {cohort_id:?} is not on the ledger (CohortCreated)"),
            )
        })?;
        if cohort.requester != caller.id {
            return Err(refused(
                Code::PermissionDenied,
                format!(
                    "cohort {cohort_id} was created for {}, not {}",
                    cohort.requester, caller.id
                ),
            ));
        }
        let federated = cohort.mode == MODE_FEDERATED;
        self.check_mode(cohort_id, federated)?;
        // A reservation recorded on the ledger but not stored here (the gateway stopped in
        // between) is rebuilt from its entry: committing a second one would be refused, and
        // a selection made now may differ (erasures since).
        if let Some(rec) = self.slice_from_ledger(&slice_id, &c).await? {
            self.store_slice(&rec)?;
            tracing::warn!(slice = %slice_id, index = rec.ledger_index, "reservation rebuilt from its ledger entry");
            return Ok(rec);
        }
        let cells = self.site_cells(cohort_id, &cohort, seed, allocation)?;
        let rows: u64 = cells.iter().map(|c| c.count).sum();
        self.check_quota(caller, cohort_id, rows)?;
        if self.cfg.policy.require_approval {
            self.check_approved(cohort_id).await?;
        }
        let picked = select(&c, cohort_id, cohort.seed, &cells)?;
        // Leaves in ascending order of their commitments, which depend on the slice's own
        // keys: the order reveals no allocation cell.
        let keys = self.new_slice_keys(&slice_id)?;
        let mut leaves: Vec<([u8; 32], usize)> = picked
            .iter()
            .map(|&i| (keys.row(&c.rows[i]).commitment, i))
            .collect();
        leaves.sort_unstable();
        let tree = CommitmentTree::new(leaves.iter().map(|(l, _)| l));
        let root = tree.root();
        let index = self
            .record(Payload::CohortSliceCommitted(CohortSliceCommitted {
                slice_id: slice_id.clone(),
                cohort_id: cohort_id.to_string(),
                site: self.cfg.site.clone(),
                dataset_id: c.dataset_id.clone(),
                requester: caller.id.clone(),
                row_count: leaves.len() as u64,
                slice_root: root.to_vec(),
                seed: cohort.seed,
                commitments: leaves.iter().map(|(l, _)| l.to_vec()).collect(),
            }))
            .await?;
        crate::server::fault!("reserve:after-ledger");
        let rec = SliceRecord {
            slice_id: slice_id.clone(),
            cohort_id: cohort_id.to_string(),
            requester: caller.id.clone(),
            dataset_id: c.dataset_id.clone(),
            seed: cohort.seed,
            segments: leaves
                .iter()
                .map(|&(_, i)| c.rows[i].segment_id.clone())
                .collect(),
            commitments: leaves.iter().map(|&(l, _)| Hash32(l)).collect(),
            root: Hash32(root),
            ledger_index: index,
            reserved_at_ms: ecgfed_ledger::entry::now_ms(),
            rows: leaves
                .iter()
                .map(|&(_, i)| Hash32(c.rows[i].commitment))
                .collect(),
            federated,
        };
        self.store_slice(&rec)?;
        tracing::info!(slice = %slice_id, rows = picked.len(), index, "slice reserved");
        Ok(rec)
    }

    /// Refuses a cohort whose mode this hospital's policy does not serve
    /// (`policy.allow_pull`, `policy.allow_federated`).
    pub(crate) fn check_mode(&self, cohort_id: &str, federated: bool) -> Result<()> {
        let p = &self.cfg.policy;
        let (allowed, mode, key) = if federated {
            (p.allow_federated, "federated", "allow_federated")
        } else {
            (p.allow_pull, "pull", "allow_pull")
        };
        if allowed {
            return Ok(());
        }
        Err(refused(
            Code::PermissionDenied,
            format!(
                "cohort {cohort_id} is in {mode} mode, which site {}'s policy refuses ({key} = false)",
                self.cfg.site
            ),
        ))
    }

    /// This site's cells of the cohort on the ledger, checked against what the scientist sent
    /// (`seed` and `allocation`, when given) and against the gateway's slice limit.
    fn site_cells(
        &self,
        cohort_id: &str,
        cohort: &CohortCreated,
        seed: u64,
        allocation: &[AllocationCell],
    ) -> Result<Vec<AllocationCell>> {
        let cells: Vec<AllocationCell> = cohort
            .allocation
            .iter()
            .filter(|a| a.site == self.cfg.site && a.count > 0)
            .cloned()
            .collect();
        if cells.is_empty() {
            return Err(refused(
                Code::FailedPrecondition,
                format!(
                    "cohort {cohort_id} allocates nothing to site {}",
                    self.cfg.site
                ),
            ));
        }
        if seed != 0 && seed != cohort.seed {
            return Err(refused(
                Code::InvalidArgument,
                format!(
                    "seed {seed} differs from the cohort's seed {} on the ledger",
                    cohort.seed
                ),
            ));
        }
        if !allocation.is_empty() && allocation != cells.as_slice() {
            return Err(refused(
                Code::InvalidArgument,
                format!(
                    "allocation differs from this site's cells of cohort {cohort_id} on the ledger"
                ),
            ));
        }
        let total = cells
            .iter()
            .try_fold(0u64, |t, a| t.checked_add(a.count))
            .unwrap_or(u64::MAX);
        if total > self.cfg.policy.max_slice_rows {
            return Err(refused(
                Code::ResourceExhausted,
                format!(
                    "slice of {total} rows exceeds this gateway's limit of {}",
                    self.cfg.policy.max_slice_rows
                ),
            ));
        }
        Ok(cells)
    }

    /// Refuses a reservation of `rows` that would take `caller` over the gateway's quota:
    /// slices or rows reserved here within the quota period (ResourceExhausted).
    fn check_quota(&self, caller: &MemberInfo, cohort_id: &str, rows: u64) -> Result<()> {
        let p = &self.cfg.policy;
        if p.quota_cohorts == 0 && p.quota_rows == 0 {
            return Ok(());
        }
        let since = ecgfed_ledger::entry::now_ms()
            .saturating_sub((p.quota_period_days * 86_400_000).min(i64::MAX as u64) as i64);
        let (mut slices, mut taken) = (0u64, 0u64);
        for raw in self.keys.slices()? {
            let rec: SliceRecord = serde_json::from_slice(&raw)
                .map_err(|e| self.keys.err(format!("stored slice: {e}")))?;
            if rec.requester == caller.id && rec.reserved_at_ms >= since {
                slices += 1;
                taken += rec.segments.len() as u64;
            }
        }
        let days = p.quota_period_days;
        if p.quota_cohorts > 0 && slices + 1 > p.quota_cohorts {
            return Err(refused(
                Code::ResourceExhausted,
                format!(
                    "{} reserved {slices} slices here in the last {days} days; the quota is {} (cohort {cohort_id} refused)",
                    caller.id, p.quota_cohorts
                ),
            ));
        }
        if p.quota_rows > 0 && taken + rows > p.quota_rows {
            return Err(refused(
                Code::ResourceExhausted,
                format!(
                    "{} reserved {taken} rows here in the last {days} days; {rows} more would pass the quota of {} (cohort {cohort_id} refused)",
                    caller.id, p.quota_rows
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a cohort this hospital has not approved: its `CohortApproved` entry for this
    /// site, signed with this gateway's member key, must be on the ledger
    /// (FailedPrecondition).
    async fn check_approved(&self, cohort_id: &str) -> Result<()> {
        let entries = {
            let mut ledger = self.members.ledger().lock().await;
            ledger
                .entries_naming(SubjectKind::Cohort, cohort_id, 0, 0)
                .await?
        };
        let approved = entries.iter().any(|e| {
            e.signer.id == self.cfg.member
                && matches!(
                    e.entry.payload(),
                    Some(Payload::CohortApproved(a)) if a.cohort_id == cohort_id && a.site == self.cfg.site
                )
        });
        if !approved {
            return Err(refused(
                Code::FailedPrecondition,
                format!(
                    "cohort {cohort_id} awaits the approval of {} (site {}): `ecgfed gateway approve --cohort {cohort_id}` records it",
                    self.cfg.member, self.cfg.site
                ),
            ));
        }
        Ok(())
    }

    fn stored_slice(&self, slice_id: &str) -> Result<Option<SliceRecord>> {
        self.keys
            .slice(slice_id)?
            .map(|raw| {
                serde_json::from_slice(&raw)
                    .map_err(|e| self.keys.err(format!("stored slice {slice_id}: {e}")))
            })
            .transpose()
    }

    fn store_slice(&self, rec: &SliceRecord) -> Result<()> {
        self.keys.put_slice(
            &rec.slice_id,
            &serde_json::to_vec(rec).map_err(|e| self.keys.err(e))?,
        )
    }

    /// This gateway's own `CohortSliceCommitted` entry of `slice_id` on the ledger (signed
    /// with its key, checked as every client checks it), as a reservation: each leaf's segment
    /// found in the catalog by its commitment; a leaf whose row is gone (erased since) gets an
    /// empty segment id and is announced erased when served.
    async fn slice_from_ledger(&self, slice_id: &str, c: &Catalog) -> Result<Option<SliceRecord>> {
        let mut ledger = self.members.ledger().lock().await;
        let found = ledger
            .entries_naming(ecgfed_proto::v1::SubjectKind::Slice, slice_id, 0, 0)
            .await?
            .into_iter()
            .any(|e| e.signer.id == self.cfg.member);
        if !found {
            return Ok(None);
        }
        let (index, s) = ledger.slice(slice_id).await?;
        let federated = ledger
            .cohort(&s.cohort_id)
            .await?
            .is_some_and(|(_, c)| c.mode == MODE_FEDERATED);
        drop(ledger);
        // Each leaf's row: found by the leaf it makes under the slice's keys, or, for a slice
        // reserved before leaves were per slice, by its dataset commitment.
        let keys = self.new_slice_keys(slice_id)?;
        let by_leaf: HashMap<[u8; 32], usize> = c
            .rows
            .iter()
            .enumerate()
            .map(|(i, r)| (keys.row(r).commitment, i))
            .collect();
        let by_dataset: HashMap<[u8; 32], usize> = c
            .rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.commitment, i))
            .collect();
        let leaf = |x: &Vec<u8>| <[u8; 32]>::try_from(x.as_slice()).unwrap_or_default();
        let legacy = !s.commitments.iter().any(|x| by_leaf.contains_key(&leaf(x)))
            && s.commitments
                .iter()
                .any(|x| by_dataset.contains_key(&leaf(x)));
        let map = if legacy { &by_dataset } else { &by_leaf };
        let found: Vec<Option<usize>> = s
            .commitments
            .iter()
            .map(|x| map.get(&leaf(x)).copied())
            .collect();
        let segments = found
            .iter()
            .map(|f| f.map_or_else(String::new, |i| c.rows[i].segment_id.clone()))
            .collect();
        let rows = if legacy {
            Vec::new()
        } else {
            found
                .iter()
                .map(|f| Hash32(f.map_or([0; 32], |i| c.rows[i].commitment)))
                .collect()
        };
        let h = |v: &[u8]| {
            Hash::try_from(v).map(Hash32).map_err(|_| {
                GatewayError::from(VerificationError::LedgerHash {
                    index,
                    what: "commitment",
                    len: v.len(),
                })
            })
        };
        let commitments = s
            .commitments
            .iter()
            .map(|c| h(c))
            .collect::<Result<Vec<_>>>()?;
        let root = h(&s.slice_root)?;
        Ok(Some(SliceRecord {
            slice_id: s.slice_id,
            cohort_id: s.cohort_id,
            requester: s.requester,
            dataset_id: s.dataset_id,
            seed: s.seed,
            segments,
            commitments,
            root,
            ledger_index: index,
            reserved_at_ms: 0,
            rows,
            federated,
        }))
    }

    /// The leaf commitment the store row `segment_id` makes in the slice `slice_id` (reserved
    /// with leaves per slice), for the hospital's own checks; `None` when no such row is in the
    /// catalog.
    pub fn leaf(&self, slice_id: &str, segment_id: &str) -> Result<Option<[u8; 32]>> {
        let c = self.catalog();
        let keys = self.new_slice_keys(slice_id)?;
        Ok(c.row(segment_id).map(|r| keys.row(r).commitment))
    }

    /// The keys of a slice reserved now (its leaves per slice).
    fn new_slice_keys(&self, slice_id: &str) -> Result<SliceKeys> {
        Ok(SliceKeys::new(
            &self.keys.pseudonym_key()?,
            slice_id,
            &self.cfg.policy,
            &self.cfg.age_edges,
        ))
    }

    /// The keys the rows of `s` are served under.
    pub(crate) fn slice_keys(&self, s: &SliceRecord) -> Result<SliceKeys> {
        Ok(SliceKeys::of(
            &self.keys.pseudonym_key()?,
            s,
            &self.cfg.policy,
            &self.cfg.age_edges,
        ))
    }

    /// The slice behind a ticket, checked to be granted to `caller` (from the served-slice
    /// cache when it is there, otherwise from the key store).
    pub fn granted_slice(
        &self,
        caller: &MemberInfo,
        slice_id: &str,
        signals: bool,
    ) -> Result<Arc<SliceRecord>> {
        let allowed = match caller.role {
            Role::Scientist => true,
            Role::Regulator => !signals,
            _ => false,
        };
        if !allowed {
            return Err(refused(
                Code::PermissionDenied,
                format!(
                    "member {} ({:?}) may not {}",
                    caller.id,
                    caller.role,
                    if signals {
                        "read signals (data minimisation: only the granted scientist may)"
                    } else {
                        "read slice metadata"
                    }
                ),
            ));
        }
        let s = match self.cached(slice_id) {
            Some(c) => Arc::clone(&c.record),
            None => {
                let raw = self.keys.slice(slice_id)?.ok_or_else(|| {
                    refused(
                        Code::NotFound,
                        format!("no slice {slice_id:?} was reserved here"),
                    )
                })?;
                Arc::new(
                    serde_json::from_slice(&raw)
                        .map_err(|e| self.keys.err(format!("stored slice {slice_id}: {e}")))?,
                )
            }
        };
        if caller.role == Role::Scientist && s.requester != caller.id {
            return Err(refused(
                Code::PermissionDenied,
                format!(
                    "slice {slice_id} is granted to {}; {} may not read it",
                    s.requester, caller.id
                ),
            ));
        }
        if signals && s.federated {
            return Err(refused(
                Code::PermissionDenied,
                format!(
                    "slice {slice_id} is of a federated cohort: its rows never leave site {} (train it with rounds)",
                    self.cfg.site
                ),
            ));
        }
        if signals {
            self.check_mode(&s.cohort_id, false)?;
        }
        Ok(s)
    }

    /// Records a completed transfer: returns the entry index once the ledger has
    /// acknowledged the DataServed entry. The entry is then proven in the ledger's signed log
    /// off the client's path; a failed proof is logged as an error.
    pub async fn served(self: &Arc<Self>, s: &SliceRecord, rows: u64, bytes: u64) -> Result<u64> {
        let root = s.root.0.to_vec();
        let entry = self
            .signer
            .lock()
            .await
            .sign(Payload::DataServed(DataServed {
                slice_id: s.slice_id.clone(),
                cohort_id: s.cohort_id.clone(),
                site: self.cfg.site.clone(),
                requester: s.requester.clone(),
                rows,
                bytes,
                slice_root: root,
            }));
        let (receipt, stored) = self
            .members
            .ledger()
            .lock()
            .await
            .submit_acknowledged(entry)
            .await?;
        let gw = Arc::clone(self);
        tokio::spawn(async move {
            let mut ledger = gw.members.ledger().lock().await;
            if let Err(e) = ledger.prove(receipt.index, &stored).await {
                tracing::error!(
                    index = receipt.index,
                    "the ledger acknowledged a DataServed entry it does not prove: {e}"
                );
            }
        });
        Ok(receipt.index)
    }

    /// Erases a patient: RecordsErased on the ledger (commitments only), salt destroyed (and
    /// purged from the key store's files), rows deleted from the site store, catalog reloaded
    /// and the dataset re-registered. The erasure is queued in the key store first and every
    /// step is idempotent, so that an interrupted erasure completes at the next start or the
    /// next erasure; queued erasures run in order and none replaces another. DoGets running
    /// when it starts are stopped before their next message.
    pub async fn erase(&self, patient: &str, reason: &str) -> Result<Erasure> {
        let _w = self.writes.lock().await;
        let c = self.catalog();
        let (key, rows) = c.patient_rows(patient)?;
        let sep = key.iter().position(|&b| b == 0).unwrap_or(key.len());
        let commitments: Vec<[u8; 32]> = rows.iter().map(|r| r.commitment).collect();
        let (tokens, disclosure) = self.disclose(&c, &commitments).await?;
        let pending = PendingErasure {
            source: String::from_utf8_lossy(&key[..sep]).into_owned(),
            patient: String::from_utf8_lossy(key.get(sep + 1..).unwrap_or_default()).into_owned(),
            commitments: commitments.iter().copied().map(Hash32).collect(),
            reason: reason.to_string(),
            ledger_index: None,
            tokens,
            disclosure,
        };
        let n = rows.len() as u64;
        let queued = self.queued_erasures()?;
        let mine = match queued
            .iter()
            .find(|(_, q)| q.source == pending.source && q.patient == pending.patient)
        {
            // The same patient is queued already (an earlier erasure was interrupted).
            Some((k, _)) => k.clone(),
            None => self
                .keys
                .queue_erasure(&serde_json::to_vec(&pending).map_err(|e| self.keys.err(e))?)?,
        };
        let mut done = None;
        for (k, p) in self.queued_erasures()? {
            let disclosure = p.disclosure.clone().into_bytes();
            let i = self.finish_erasure(&k, p).await?;
            if k == mine {
                done = Some((i, disclosure));
            }
        }
        let (ledger_index, disclosure) = done.ok_or_else(|| {
            self.keys
                .err(format!("erasure {mine} left the queue unfinished"))
        })?;
        Ok(Erasure {
            segments: n,
            commitments,
            ledger_index,
            disclosure,
            disclosure_file: self.disclosure_file(ledger_index),
        })
    }

    fn disclosure_file(&self, index: u64) -> std::path::PathBuf {
        self.cfg
            .data
            .join(ERASURES_DIR)
            .join(format!("{index}.json"))
    }

    /// The erased-leaf tokens and the disclosure of erasing the rows with dataset
    /// `commitments`: every slice of the dataset this gateway committed is looked at (those
    /// on the ledger but not in the key store, after a crash between the two, are rebuilt
    /// first), each leaf made from one of the rows gives its token, and the list is padded.
    async fn disclose(
        &self,
        c: &Catalog,
        commitments: &[[u8; 32]],
    ) -> Result<(Vec<Hash32>, String)> {
        use ecgfed_ledger::erasure::{self, DisclosedLeaf, DisclosedSlice, Disclosure};
        use rand::RngCore;
        let committed: Vec<String> = {
            let mut ledger = self.members.ledger().lock().await;
            ledger
                .entries_naming(SubjectKind::Dataset, &c.dataset_id, 0, 0)
                .await?
                .into_iter()
                .filter(|e| e.signer.id == self.cfg.member)
                .filter_map(|e| match e.entry.body.payload {
                    Some(Payload::CohortSliceCommitted(s)) => Some(s.slice_id),
                    _ => None,
                })
                .collect()
        };
        let gone: std::collections::HashSet<[u8; 32]> = commitments.iter().copied().collect();
        let mut real = Vec::new();
        let mut slices = Vec::new();
        for slice_id in committed {
            let s = match self.stored_slice(&slice_id)? {
                Some(s) => s,
                None => match self.slice_from_ledger(&slice_id, c).await? {
                    Some(s) => {
                        self.store_slice(&s)?;
                        s
                    }
                    None => continue,
                },
            };
            if s.legacy() {
                // Its leaves are dataset commitments: the entry's commitments name them.
                continue;
            }
            let keys = self.slice_keys(&s)?;
            let mut leaves = Vec::new();
            for (i, seg) in s.segments.iter().enumerate() {
                if !seg.is_empty() && s.rows.get(i).is_some_and(|r| gone.contains(&r.0)) {
                    let salt = keys.salt(seg);
                    real.push(erasure::leaf_token(&salt, &s.commitments[i].0));
                    leaves.push(DisclosedLeaf {
                        index: i as u64,
                        salt: hex::encode(salt),
                    });
                }
            }
            if !leaves.is_empty() {
                slices.push(DisclosedSlice { slice_id, leaves });
            }
        }
        let mut pad_key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut pad_key);
        let tokens = erasure::token_list(real, &pad_key);
        let mut d = Disclosure {
            format: erasure::DISCLOSURE_FORMAT.into(),
            site: self.cfg.site.clone(),
            dataset_id: c.dataset_id.clone(),
            commitments: commitments.iter().map(hex::encode).collect(),
            pad_key: hex::encode(pad_key),
            slices,
        };
        d.commitments.sort();
        let text = serde_json::to_string_pretty(&d).map_err(|e| self.keys.err(e))? + "\n";
        Ok((tokens.into_iter().map(Hash32).collect(), text))
    }

    fn queued_erasures(&self) -> Result<Vec<(String, PendingErasure)>> {
        self.keys
            .queued_erasures()?
            .into_iter()
            .map(|(k, raw)| {
                let p = serde_json::from_slice(&raw)
                    .map_err(|e| self.keys.err(format!("queued erasure {k}: {e}")))?;
                Ok((k, p))
            })
            .collect()
    }

    /// Runs the steps of the queued erasure `key` not done yet, then removes it from the
    /// queue. Each step may be repeated: the ledger entry is written once (its index is kept
    /// in the record), destroying a salt and deleting rows again change nothing.
    async fn finish_erasure(&self, key: &str, mut p: PendingErasure) -> Result<u64> {
        use std::sync::atomic::Ordering;
        // The fence: running DoGets stop before their next message, new ones wait it out.
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let r = self.erasure_steps(key, &mut p).await;
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let index = r?;
        self.keys.delete_meta(key)?;
        tracing::info!(segments = p.commitments.len(), index, "patient erased");
        self.register().await?;
        Ok(index)
    }

    async fn erasure_steps(&self, key: &str, p: &mut PendingErasure) -> Result<u64> {
        let c = self.catalog();
        let commitments: Vec<[u8; 32]> = p.commitments.iter().map(|h| h.0).collect();
        let index = match p.ledger_index {
            Some(i) => i,
            None => {
                let i = self
                    .record(Payload::RecordsErased(RecordsErased {
                        site: self.cfg.site.clone(),
                        dataset_id: c.dataset_id.clone(),
                        commitments: commitments.iter().map(|c| c.to_vec()).collect(),
                        reason: p.reason.clone(),
                        erased_leaves: p.tokens.iter().map(|t| t.0.to_vec()).collect(),
                    }))
                    .await?;
                p.ledger_index = Some(i);
                self.keys
                    .set_meta(key, &serde_json::to_vec(&p).map_err(|e| self.keys.err(e))?)?;
                i
            }
        };
        if !p.disclosure.is_empty() {
            let file = self.disclosure_file(index);
            let write = std::fs::create_dir_all(file.parent().unwrap_or(&self.cfg.data))
                .and_then(|_| ecgfed_ledger::trust::write_private(&file, p.disclosure.as_bytes()));
            write.map_err(|source| GatewayError::File { path: file, source })?;
        }
        crate::server::fault!("erase:after-ledger");
        let patient = crate::server::keystore::patient_key(&p.source, &p.patient);
        self.keys.erase(&patient, &commitments)?;
        crate::server::fault!("erase:after-salt");
        ecgfed_datasets::store::delete_patients(
            &self.cfg.store,
            &[(p.source.clone(), p.patient.clone())],
        )?;
        let fresh = Catalog::load(
            &self.cfg.store,
            &c.dataset_id,
            &self.keys,
            &self.cfg.age_edges,
            self.cfg.k,
        )?;
        crate::server::fault!("erase:after-store");
        // The catalog is replaced and the cache emptied under the cache lock, which `keep`
        // holds while it checks that its batches were built from the current catalog: no
        // slice built before the erasure can be kept after it.
        {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Ok(mut w) = self.catalog.write() {
                *w = Arc::new(fresh);
            }
            for (_, v) in cache.drain() {
                self.release_cache(v.bytes);
            }
        }
        Ok(index)
    }

    async fn resume_erasure(&self) -> Result<()> {
        if let Some(raw) = self.keys.meta(META_ERASING_V1)? {
            self.keys.queue_erasure(&raw)?;
            self.keys.delete_meta(META_ERASING_V1)?;
        }
        for (k, p) in self.queued_erasures()? {
            tracing::warn!(source = %p.source, erasure = %k, "finishing an interrupted erasure");
            self.finish_erasure(&k, p).await?;
        }
        Ok(())
    }

    /// Waits for a turn to read and send a slice (at most `policy.max_transfers` at once); the
    /// turn ends when the permit is dropped.
    pub async fn transfer_turn(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.transfers)
            .acquire_owned()
            .await
            .map_err(|_| refused(Code::Unavailable, "the gateway is shutting down"))
    }

    /// The erasure fence's value now: a DoGet notes it when it starts ([`Gateway::fence_ok`]).
    pub fn fence(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// True when no erasure started since the fence value `at` was noted (and none was
    /// running then).
    pub fn fence_ok(&self, at: u64) -> bool {
        at.is_multiple_of(2) && self.fence() == at
    }

    /// Row positions to read per store file for the leaves of `s` still present, and the
    /// leaves erased since the reservation (leaf index, commitment).
    pub(crate) fn plan(&self, s: &SliceRecord, keys: &SliceKeys) -> ServePlan {
        let c = self.catalog();
        let mut per_file: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut erased = Vec::new();
        let mut withhold = self.withhold_row;
        for (i, (seg, com)) in s.segments.iter().zip(&s.commitments).enumerate() {
            match (c.row(seg), s.row_commitment(i)) {
                (Some(r), Some(rc)) if r.commitment == rc.0 && !std::mem::take(&mut withhold) => {
                    per_file.entry(r.file).or_default().push(r.pos)
                }
                _ => erased.push(ErasedLeaf {
                    index: i as u64,
                    commitment: *com,
                    salt: (!s.legacy() && !seg.is_empty()).then(|| Hash32(keys.salt(seg))),
                }),
            }
        }
        for v in per_file.values_mut() {
            v.sort_unstable();
        }
        ServePlan {
            catalog: c,
            per_file,
            erased,
        }
    }
}

impl Gateway {
    /// The served slice `slice_id` as built before, if still valid.
    pub fn cached(&self, slice_id: &str) -> Option<Arc<ServedSlice>> {
        self.cache.lock().ok()?.get(slice_id).cloned()
    }

    /// Bytes of served batches held for the cache now (kept and being gathered).
    pub fn cache_bytes(&self) -> u64 {
        self.cache_bytes.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The cache budget in bytes (`policy.cache_mb`).
    fn cache_budget(&self) -> u64 {
        self.cfg.policy.cache_mb.saturating_mul(1 << 20)
    }

    /// Reserves `n` bytes of the cache budget for batches a DoGet gathers to keep; when the
    /// budget is spent, the cache is emptied once to make room. False when they do not fit:
    /// the DoGet then keeps nothing. Batches held for the cache, kept or being gathered, never
    /// exceed the budget, whatever the number of DoGets.
    pub fn reserve_cache(&self, n: u64) -> bool {
        use std::sync::atomic::Ordering;
        let budget = self.cache_budget();
        let take = || {
            self.cache_bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                    used.checked_add(n).filter(|&t| t <= budget)
                })
                .is_ok()
        };
        if take() {
            return true;
        }
        if n > budget {
            return false;
        }
        if let Ok(mut c) = self.cache.lock() {
            for (_, v) in c.drain() {
                self.release_cache(v.bytes);
            }
        }
        take()
    }

    /// Returns `n` reserved bytes to the cache budget.
    pub fn release_cache(&self, n: u64) {
        use std::sync::atomic::Ordering;
        let _ = self
            .cache_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(n))
            });
    }

    /// Keeps the served slice `slice_id` for later pulls (its bytes were reserved with
    /// [`Gateway::reserve_cache`]). `catalog` is the catalog its batches were built from and
    /// `fence` the erasure fence noted when the DoGet started: if an erasure ran since,
    /// nothing is kept and the bytes are released.
    pub fn keep(&self, slice_id: &str, catalog: &Arc<Catalog>, fence: u64, slice: ServedSlice) {
        let bytes = slice.bytes;
        if let Ok(mut c) = self.cache.lock()
            && Arc::ptr_eq(catalog, &self.catalog())
            && self.fence_ok(fence)
        {
            if let Some(old) = c.insert(slice_id.to_string(), Arc::new(slice)) {
                self.release_cache(old.bytes);
            }
            return;
        }
        self.release_cache(bytes);
    }
}

fn check_self(cfg: &GatewayConfig, me: &MemberInfo, key: &KeyPair) -> Result<()> {
    let problem = if me.role != Role::Hospital {
        IdentityProblem::NotAHospital(me.role)
    } else if me.site != cfg.site {
        IdentityProblem::OtherSite {
            ledger: me.site.clone(),
            configured: cfg.site.clone(),
        }
    } else if me.key != key.public() {
        IdentityProblem::OtherKey {
            key_file: cfg.key_file.clone(),
        }
    } else {
        return Ok(());
    };
    Err(GatewayError::Identity {
        member: me.id.clone(),
        problem,
    })
}
