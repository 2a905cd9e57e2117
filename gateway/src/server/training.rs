//! TrainingService: federated rounds at the hospital (docs/training.md "Federated mode"). The
//! cohort's requester asks for a key (`OpenRound`), then for a round (`TrainRound`): the
//! gateway checks the cohort, the spec and every participant's signed key, trains the global
//! model on its own slice's rows (verified against the slice root first) with the
//! [`LocalTrainer`] it was given, records `LocalRoundTrained` and answers the update masked
//! (pairwise masks cancel in the sum; its self mask is revealed by `RevealMask` only when
//! every participant's update arrived). `Evaluate` answers metrics only. No row ever leaves.

use std::sync::Arc;

use ecgfed_ledger::keys::{AgreementKey, PublicKey, Signature};
use ecgfed_ledger::state::{MODE_FEDERATED, MemberInfo};
use ecgfed_proto::v1::entry_body::Payload;
use ecgfed_proto::v1::training_service_server::{TrainingService, TrainingServiceServer};
use ecgfed_proto::v1::{
    CohortCreated, EvaluateRequest, EvaluateResponse, LocalRoundTrained, OpenRoundRequest,
    OpenRoundResponse, RevealMaskRequest, RevealMaskResponse, Role, RoundKey, TrainRoundRequest,
    TrainRoundResponse,
};
use rand::RngCore;
use tonic::{Code, Request, Response, Status};

use crate::federated::{
    DpSpent, EvalPart, LocalJob, LocalTrainer, LocalTrainingError, MAX_PARTICIPANTS,
    MAX_TRAINING_REQUEST_BYTES, MIN_PARTICIPANTS, SliceRows, TRAINING_PATH, apply_masks,
    bytes_to_params, pair_seed, round_key_message, sha256, to_fixed, words_to_bytes,
};
use crate::protocol::MAX_MESSAGE_BYTES;
use crate::server::gateway::Gateway;
use crate::server::rounds::{Attempt, MAX_OPEN_ATTEMPTS};
use crate::server::rows::SliceRecord;
use crate::server::service::caller;

/// Where the key store notes that a site revealed its self mask for a round: a later attempt
/// of that round is refused (its sum and a sum without a site would tell that site's update).
fn revealed_key(cohort_id: &str, round: u32) -> String {
    format!("round-revealed/{cohort_id}/{round}")
}

/// The TrainingService of a gateway.
#[derive(Clone)]
pub(super) struct TrainingServer {
    gw: Arc<Gateway>,
}

fn status(code: Code, m: impl Into<String>) -> Status {
    Status::new(code, m.into())
}

/// A round's model: f32 little-endian parameters.
fn model_of(bytes: &[u8]) -> Result<Vec<f32>, Status> {
    bytes_to_params(bytes).ok_or_else(|| {
        status(
            Code::InvalidArgument,
            format!("the model is {} bytes, not f32 values", bytes.len()),
        )
    })
}

/// A task that failed (a panic in the trainer): its first line, at most 300 characters.
fn task_failed(what: &str, e: tokio::task::JoinError) -> Status {
    let full = e.to_string();
    let line: String = full
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    tracing::error!("{what}: {full}");
    status(Code::Internal, format!("{what} failed: {line}"))
}

fn local_error(site: &str, e: LocalTrainingError) -> Status {
    match &e {
        LocalTrainingError::Invalid(m) => {
            status(Code::InvalidArgument, format!("site {site}: {m}"))
        }
        LocalTrainingError::Verification(src) => status(
            Code::DataLoss,
            format!("site {site}: a row of the slice does not verify against its root: {src}"),
        ),
        LocalTrainingError::Failed(src) => {
            tracing::error!(site, "local training failed: {src}");
            status(
                Code::Internal,
                format!("site {site}: local training failed: {src}"),
            )
        }
    }
}

impl TrainingServer {
    /// A server over `gw`.
    pub(super) fn new(gw: Arc<Gateway>) -> Self {
        TrainingServer { gw }
    }

    /// The tonic service: requests up to [`MAX_TRAINING_REQUEST_BYTES`] (a round carries the
    /// model).
    pub(super) fn into_service(self) -> TrainingServiceServer<TrainingServer> {
        TrainingServiceServer::new(self)
            .max_decoding_message_size(MAX_TRAINING_REQUEST_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// A training call's caller (authenticated for `method`), its request and the trainer.
    async fn begin<T: prost::Message>(
        &self,
        method: &str,
        r: Request<T>,
    ) -> Result<(MemberInfo, T, Arc<dyn LocalTrainer>), Status> {
        let who = caller(&self.gw, &format!("{TRAINING_PATH}{method}"), &r).await?;
        Ok((who, r.into_inner(), self.trainer()?))
    }

    /// This gateway's turn to train or evaluate (one at a time).
    async fn turn(&self) -> Result<tokio::sync::SemaphorePermit<'_>, Status> {
        self.gw
            .rounds
            .turn
            .acquire()
            .await
            .map_err(|_| status(Code::Unavailable, "the gateway is stopping"))
    }

    fn trainer(&self) -> Result<Arc<dyn LocalTrainer>, Status> {
        self.gw.trainer().ok_or_else(|| {
            status(
                Code::FailedPrecondition,
                format!("site {} runs no local trainer", self.gw.cfg.site),
            )
        })
    }

    /// The caller's slice of a federated cohort at this site, and the cohort: the caller is
    /// the scientist the slice is granted to, the cohort is federated on the ledger and this
    /// hospital serves federated cohorts.
    async fn round_slice(
        &self,
        who: &MemberInfo,
        cohort_id: &str,
    ) -> Result<(Arc<SliceRecord>, CohortCreated), Status> {
        if who.role != Role::Scientist {
            return Err(status(
                Code::PermissionDenied,
                format!(
                    "member {} ({:?}) may not ask for rounds: scientists only",
                    who.id, who.role
                ),
            ));
        }
        let site = &self.gw.cfg.site;
        let slice_id = ecgfed_ledger::state::slice_id(cohort_id, site);
        let s = self.gw.granted_slice(who, &slice_id, false)?;
        if !s.federated {
            return Err(status(
                Code::FailedPrecondition,
                format!("cohort {cohort_id} is not federated: it is pulled, not trained in rounds"),
            ));
        }
        self.gw.check_mode(cohort_id, true)?;
        let cohort = {
            let mut ledger = self.gw.members.ledger().lock().await;
            ledger.cohort(cohort_id).await.map_err(|e| {
                status(
                    Code::Unavailable,
                    format!("reading cohort {cohort_id} from the ledger: {e}"),
                )
            })?
        }
        .map(|(_, c)| c)
        .ok_or_else(|| {
            status(
                Code::NotFound,
                format!("cohort {cohort_id} is not on the ledger"),
            )
        })?;
        if cohort.mode != MODE_FEDERATED {
            return Err(status(
                Code::FailedPrecondition,
                format!("cohort {cohort_id} is not federated on the ledger"),
            ));
        }
        Ok((s, cohort))
    }

    /// The rows of `s` as served, for the local trainer, with the spec after its hash is
    /// checked against the cohort's.
    async fn slice_rows(
        &self,
        s: &Arc<SliceRecord>,
        cohort: &CohortCreated,
        spec: Vec<u8>,
    ) -> Result<SliceRows, Status> {
        if sha256(&spec).as_slice() != cohort.spec_sha256.as_slice() {
            return Err(status(
                Code::InvalidArgument,
                format!(
                    "the spec sent has SHA-256 {}; cohort {} was created from {}",
                    hex::encode(sha256(&spec)),
                    cohort.cohort_id,
                    hex::encode(&cohort.spec_sha256)
                ),
            ));
        }
        let gw = Arc::clone(&self.gw);
        let slice = Arc::clone(s);
        let (batches, erased) =
            tokio::task::spawn_blocking(move || crate::server::flight::slice_batches(&gw, &slice))
                .await
                .map_err(|e| status(Code::Internal, format!("reading the slice: {e}")))??;
        Ok(SliceRows {
            cohort_id: s.cohort_id.clone(),
            site: self.gw.cfg.site.clone(),
            batches,
            slice_root: s.root,
            slice_size: s.segments.len() as u64,
            erased,
            age_edges: self.gw.cfg.age_edges.iter().map(|&e| e as u32).collect(),
            k: self.gw.cfg.k,
            min_noise_multiplier: self.gw.cfg.policy.min_noise_multiplier,
            max_epsilon: self.gw.cfg.policy.max_epsilon,
            epsilon_delta: self.gw.cfg.policy.epsilon_delta,
            dp_spent: self.dp_spent(&s.cohort_id)?,
            spec,
        })
    }

    /// The DP-SGD rounds this site trained for `cohort_id` (key store `dp-spent/<cohort>`, a
    /// JSON array of [`DpSpent`]).
    fn dp_spent(&self, cohort_id: &str) -> Result<Vec<DpSpent>, Status> {
        match self.gw.keys.meta(&format!("dp-spent/{cohort_id}"))? {
            None => Ok(Vec::new()),
            Some(b) => serde_json::from_slice(&b).map_err(|e| {
                status(
                    Code::Internal,
                    format!("the key store's DP account of {cohort_id} does not parse: {e}"),
                )
            }),
        }
    }

    /// Adds a trained round's DP-SGD to the site's account of the cohort, before its update
    /// leaves (only a sent update spends privacy).
    fn spend(&self, cohort_id: &str, round: DpSpent) -> Result<(), Status> {
        let mut all = self.dp_spent(cohort_id)?;
        all.push(round);
        let bytes = serde_json::to_vec(&all)
            .map_err(|e| status(Code::Internal, format!("DP account: {e}")))?;
        self.gw
            .keys
            .set_meta(&format!("dp-spent/{cohort_id}"), &bytes)?;
        Ok(())
    }

    /// Checks the participants' keys of a round: 2 to 64 distinct sites, this one among them
    /// with the key it made for the attempt, each key signed by its site's hospital member on
    /// the ledger. Returns the sites in ascending order and the pairwise mask seeds.
    async fn participants(
        &self,
        q: &TrainRoundRequest,
        own: &AgreementKey,
        cohort_sites: &[&str],
    ) -> Result<(Vec<String>, Vec<(String, [u8; 32])>), Status> {
        let site = &self.gw.cfg.site;
        let bad = |m: String| status(Code::InvalidArgument, m);
        let mut sites: Vec<String> = q.keys.iter().map(|k| k.site.clone()).collect();
        sites.sort();
        sites.dedup();
        if sites.len() != q.keys.len() {
            return Err(bad("a site is named twice among the round keys".into()));
        }
        if !(MIN_PARTICIPANTS..=MAX_PARTICIPANTS).contains(&sites.len()) {
            return Err(bad(format!(
                "{} participants; a round has {MIN_PARTICIPANTS} to {MAX_PARTICIPANTS}",
                sites.len()
            )));
        }
        let mut pairs = Vec::new();
        let mut mine = false;
        for k in &q.keys {
            if !cohort_sites.iter().any(|c| *c == k.site) {
                return Err(bad(format!(
                    "site {} is not a site of cohort {}: only the cohort's sites take part",
                    k.site, q.cohort_id
                )));
            }
            let member = self.gw.members.get(&k.member).await?.ok_or_else(|| {
                bad(format!(
                    "round key of {}: {} is not a member",
                    k.site, k.member
                ))
            })?;
            if member.role != Role::Hospital || member.site != k.site {
                return Err(bad(format!(
                    "round key of {}: {} is not that site's hospital",
                    k.site, k.member
                )));
            }
            let msg = round_key_message(&q.cohort_id, q.round, q.attempt, &k.site, &k.public_key);
            let signed = Signature::from_bytes(&k.signature)
                .is_ok_and(|sig| PublicKey::verify(&member.key, &msg, &sig));
            if !signed {
                return Err(bad(format!(
                    "round key of {}: the signature of {} does not verify",
                    k.site, k.member
                )));
            }
            if k.site == *site {
                if k.public_key != own.public() {
                    return Err(bad(format!(
                        "the round key named for {site} is not the one it made for attempt {}",
                        q.attempt
                    )));
                }
                mine = true;
                continue;
            }
            let shared = own
                .agree(&k.public_key)
                .map_err(|e| bad(format!("round key of {}: {e}", k.site)))?;
            let seed = pair_seed(&shared, &q.cohort_id, q.round, q.attempt, site, &k.site);
            pairs.push((k.site.clone(), seed));
        }
        if !mine {
            return Err(bad(format!(
                "site {site} is not among the round's participants"
            )));
        }
        Ok((sites, pairs))
    }

    /// Binds a round to the model it trains, in the key store, before training: rounds only
    /// go forward (no round before the last one trained here), and a model is trained in one
    /// round only (the same model in two rounds, with and without a site, would tell that
    /// site's update). Attempts of one round share its model.
    fn bind_round(&self, cohort_id: &str, round: u32, model: &[u8; 32]) -> Result<(), Status> {
        let last_key = format!("round-last/{cohort_id}");
        let as_round = |b: Option<Vec<u8>>| {
            b.and_then(|b| <[u8; 4]>::try_from(b.as_slice()).ok())
                .map(u32::from_be_bytes)
        };
        if let Some(last) = as_round(self.gw.keys.meta(&last_key)?).filter(|l| *l > round) {
            return Err(status(
                Code::FailedPrecondition,
                format!(
                    "round {round} of {cohort_id}: this site trained round {last} already; rounds only go forward"
                ),
            ));
        }
        let model_key = format!("round-model/{cohort_id}/{}", hex::encode(model));
        if let Some(r) = as_round(self.gw.keys.meta(&model_key)?).filter(|r| *r != round) {
            return Err(status(
                Code::FailedPrecondition,
                format!(
                    "round {round} of {cohort_id}: this site trained this model in round {r}; a model is trained in one round"
                ),
            ));
        }
        self.gw.keys.set_meta(&model_key, &round.to_be_bytes())?;
        self.gw.keys.set_meta(&last_key, &round.to_be_bytes())?;
        Ok(())
    }

    /// Binds the cohort's test part at this site to the first model scored on it, in the key
    /// store: the test part (a held-out site's rows included) is scored for one model only —
    /// the same model again is answered (a retry), any other refused — so that no one can
    /// choose among models on it.
    fn bind_test(&self, cohort_id: &str, model: &[u8]) -> Result<(), Status> {
        let key = format!("test-model/{cohort_id}");
        let sha = sha256(model);
        match self.gw.keys.meta(&key)? {
            Some(first) if first != sha => Err(status(
                Code::FailedPrecondition,
                format!(
                    "the test part of {cohort_id} at this site was scored for model {} already; a cohort's test part is scored once",
                    &hex::encode(first)[..16]
                ),
            )),
            Some(_) => Ok(()),
            None => {
                self.gw.keys.set_meta(&key, &sha)?;
                Ok(())
            }
        }
    }

    fn revealed(&self, cohort_id: &str, round: u32) -> Result<Option<u32>, Status> {
        let v = self.gw.keys.meta(&revealed_key(cohort_id, round))?;
        Ok(v.and_then(|b| <[u8; 4]>::try_from(b.as_slice()).ok())
            .map(u32::from_be_bytes))
    }
}

#[tonic::async_trait]
impl TrainingService for TrainingServer {
    async fn open_round(
        &self,
        r: Request<OpenRoundRequest>,
    ) -> Result<Response<OpenRoundResponse>, Status> {
        let who = caller(&self.gw, &format!("{TRAINING_PATH}OpenRound"), &r).await?;
        let q = r.into_inner();
        self.trainer()?;
        if q.round == 0 || q.attempt == 0 {
            return Err(status(
                Code::InvalidArgument,
                "round and attempt count from 1",
            ));
        }
        self.round_slice(&who, &q.cohort_id).await?;
        if let Some(a) = self.revealed(&q.cohort_id, q.round)? {
            return Err(status(
                Code::FailedPrecondition,
                format!(
                    "round {} of {} was completed here (attempt {a})",
                    q.round, q.cohort_id
                ),
            ));
        }
        let rounds = &self.gw.rounds;
        let public = {
            let mut open = rounds
                .open
                .lock()
                .map_err(|_| status(Code::Internal, "rounds lock"))?;
            let id = (q.cohort_id.clone(), q.round, q.attempt);
            if let Some(a) = open.get(&id) {
                // A retried OpenRound gets the same key (until the attempt trained).
                if a.participants.is_some() {
                    return Err(status(
                        Code::FailedPrecondition,
                        format!(
                            "attempt {} of round {} was trained here already",
                            q.attempt, q.round
                        ),
                    ));
                }
                a.key.public()
            } else {
                if open.len() >= MAX_OPEN_ATTEMPTS
                    && let Some(oldest) = open
                        .iter()
                        .min_by_key(|(_, a)| a.opened)
                        .map(|(k, _)| k.clone())
                {
                    open.remove(&oldest);
                }
                let mut self_seed = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut self_seed);
                let a = Attempt {
                    key: Arc::new(AgreementKey::generate()),
                    self_seed,
                    participants: None,
                    trained: false,
                    opened: rounds
                        .counter
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                };
                let p = a.key.public();
                open.insert(id, a);
                p
            }
        };
        let site = &self.gw.cfg.site;
        let msg = round_key_message(&q.cohort_id, q.round, q.attempt, site, &public);
        Ok(Response::new(OpenRoundResponse {
            key: Some(RoundKey {
                site: site.clone(),
                member: self.gw.cfg.member.clone(),
                public_key: public.to_vec(),
                signature: self.gw.sign(&msg).to_bytes(),
            }),
        }))
    }

    async fn train_round(
        &self,
        r: Request<TrainRoundRequest>,
    ) -> Result<Response<TrainRoundResponse>, Status> {
        let (who, q, trainer) = self.begin("TrainRound", r).await?;
        let site = self.gw.cfg.site.clone();
        let (s, cohort) = self.round_slice(&who, &q.cohort_id).await?;
        if let Some(a) = self.revealed(&q.cohort_id, q.round)? {
            return Err(status(
                Code::FailedPrecondition,
                format!(
                    "round {} of {} was completed here (attempt {a})",
                    q.round, q.cohort_id
                ),
            ));
        }
        let id = (q.cohort_id.clone(), q.round, q.attempt);
        let key = {
            let open = self
                .gw
                .rounds
                .open
                .lock()
                .map_err(|_| status(Code::Internal, "rounds lock"))?;
            let a = open.get(&id).ok_or_else(|| {
                status(
                    Code::FailedPrecondition,
                    format!(
                        "attempt {} of round {} was not opened here (OpenRound first)",
                        q.attempt, q.round
                    ),
                )
            })?;
            if a.participants.is_some() {
                return Err(status(
                    Code::FailedPrecondition,
                    format!(
                        "attempt {} of round {} was trained here already",
                        q.attempt, q.round
                    ),
                ));
            }
            Arc::clone(&a.key)
        };
        let sites: Vec<&str> = cohort
            .allocation
            .iter()
            .filter(|a| a.count > 0)
            .map(|a| a.site.as_str())
            .collect();
        let (participants, pairs) = self.participants(&q, &key, &sites).await?;
        let model = model_of(&q.model)?;
        // The spec checked and the rows read before the attempt is taken.
        let rows = self.slice_rows(&s, &cohort, q.spec).await?;
        // The attempt is taken before training: a second TrainRound of it is refused (two
        // updates under the same masks would tell their difference).
        let self_seed = {
            let mut open = self
                .gw
                .rounds
                .open
                .lock()
                .map_err(|_| status(Code::Internal, "rounds lock"))?;
            let a = open
                .get_mut(&id)
                .filter(|a| a.participants.is_none())
                .ok_or_else(|| {
                    status(
                        Code::FailedPrecondition,
                        format!("attempt {} of round {} is taken", q.attempt, q.round),
                    )
                })?;
            a.participants = Some(participants.clone());
            a.self_seed
        };
        // Fault injection (test builds only): the site drops out mid-round, as a crash.
        #[cfg(feature = "fault-injection")]
        if self.gw.die_in_round == Some(q.round) {
            tracing::error!(
                round = q.round,
                "fault injected: the gateway dies in this round"
            );
            std::process::abort();
        }
        let mut job = LocalJob {
            rows,
            round: q.round,
            model: model.clone(),
            allocation: cohort.allocation.clone(),
            participants: participants.clone(),
        };
        let _turn = self.turn().await?;
        // The privacy account as it stands now, under the turn: concurrent calls cannot both
        // spend the budget's last room.
        job.rows.dp_spent = self.dp_spent(&q.cohort_id)?;
        self.bind_round(&q.cohort_id, q.round, &sha256(&q.model))?;
        let started = std::time::Instant::now();
        let update = tokio::task::spawn_blocking(move || trainer.train(job))
            .await
            .map_err(|e| task_failed("local training", e))?
            .map_err(|e| local_error(&site, e))?;
        if update.delta.len() != model.len() {
            return Err(status(
                Code::Internal,
                format!(
                    "the local trainer returned {} values for {} parameters",
                    update.delta.len(),
                    model.len()
                ),
            ));
        }
        if let Some(spent) = DpSpent::of_training(&update.training) {
            self.spend(&q.cohort_id, spent)?;
        }
        let mut words = to_fixed(&update.delta, update.rows as f64);
        apply_masks(&mut words, &site, &self_seed, &pairs);
        let masked = words_to_bytes(&words);
        let ledger_index = self
            .gw
            .record(Payload::LocalRoundTrained(LocalRoundTrained {
                cohort_id: q.cohort_id.clone(),
                slice_id: s.slice_id.clone(),
                site: site.clone(),
                round: q.round,
                attempt: q.attempt,
                slice_root: s.root.0.to_vec(),
                rows_used: update.rows,
                model_sha256: sha256(&q.model).to_vec(),
                update_sha256: sha256(&masked).to_vec(),
                participants,
                round_key: key.public().to_vec(),
                self_mask_sha256: sha256(&self_seed).to_vec(),
                requester: who.id.clone(),
                training_json: update.training.to_string(),
            }))
            .await?;
        if let Ok(mut open) = self.gw.rounds.open.lock()
            && let Some(a) = open.get_mut(&id)
        {
            a.trained = true;
        }
        tracing::info!(
            cohort = %q.cohort_id, round = q.round, attempt = q.attempt, rows = update.rows,
            secs = started.elapsed().as_secs_f64(), index = ledger_index, "round trained"
        );
        Ok(Response::new(TrainRoundResponse {
            masked_update: masked,
            rows: update.rows,
            ledger_index,
            train_loss: update.train_loss,
        }))
    }

    async fn reveal_mask(
        &self,
        r: Request<RevealMaskRequest>,
    ) -> Result<Response<RevealMaskResponse>, Status> {
        let who = caller(&self.gw, &format!("{TRAINING_PATH}RevealMask"), &r).await?;
        let q = r.into_inner();
        self.round_slice(&who, &q.cohort_id).await?;
        let id = (q.cohort_id.clone(), q.round, q.attempt);
        // Checked and decided under one lock, the decision persisted before the lock is left:
        // of all the attempts of a round, a site reveals the self mask of one only (two
        // unmasked sums of one round, with and without a site, would give its update). A
        // repeated call for that attempt gets the same seed.
        let seed = {
            let mut open = self
                .gw
                .rounds
                .open
                .lock()
                .map_err(|_| status(Code::Internal, "rounds lock"))?;
            let marker = self.revealed(&q.cohort_id, q.round)?;
            if let Some(a) = marker.filter(|a| *a != q.attempt) {
                return Err(status(
                    Code::FailedPrecondition,
                    format!(
                        "round {} of {}: this site revealed the self mask of attempt {a}; it reveals one attempt of a round",
                        q.round, q.cohort_id
                    ),
                ));
            }
            let a = open.get_mut(&id).ok_or_else(|| {
                status(
                    Code::FailedPrecondition,
                    format!(
                        "attempt {} of round {} is not open here{}",
                        q.attempt,
                        q.round,
                        if marker.is_some() {
                            " (its self mask was revealed before this gateway restarted)"
                        } else {
                            ""
                        }
                    ),
                )
            })?;
            let (Some(p), true) = (&a.participants, a.trained) else {
                return Err(status(
                    Code::FailedPrecondition,
                    format!(
                        "attempt {} of round {} was not trained here",
                        q.attempt, q.round
                    ),
                ));
            };
            let mut survivors = q.survivors.clone();
            survivors.sort();
            if &survivors != p {
                return Err(status(
                    Code::FailedPrecondition,
                    format!(
                        "the self mask is revealed only when every participant's update arrived: participants {p:?}, survivors {survivors:?}; restart the round without the missing site"
                    ),
                ));
            }
            let seed = a.self_seed;
            if marker.is_none() {
                self.gw.keys.set_meta(
                    &revealed_key(&q.cohort_id, q.round),
                    &q.attempt.to_be_bytes(),
                )?;
            }
            open.retain(|(c, r, at), _| !(c == &q.cohort_id && *r == q.round && *at != q.attempt));
            seed
        };
        Ok(Response::new(RevealMaskResponse {
            self_mask_seed: seed.to_vec(),
        }))
    }

    async fn evaluate(
        &self,
        r: Request<EvaluateRequest>,
    ) -> Result<Response<EvaluateResponse>, Status> {
        let (who, q, trainer) = self.begin("Evaluate", r).await?;
        let site = self.gw.cfg.site.clone();
        let (s, cohort) = self.round_slice(&who, &q.cohort_id).await?;
        let part = EvalPart::parse(&q.part).ok_or_else(|| {
            status(
                Code::InvalidArgument,
                format!("part {:?}: expected \"validation\" or \"test\"", q.part),
            )
        })?;
        let model = model_of(&q.model)?;
        let rows = self.slice_rows(&s, &cohort, q.spec).await?;
        let _turn = self.turn().await?;
        if part == EvalPart::Test {
            self.bind_test(&q.cohort_id, &q.model)?;
        }
        let scores = tokio::task::spawn_blocking(move || trainer.evaluate(rows, model, part))
            .await
            .map_err(|e| task_failed("evaluation", e))?
            .map_err(|e| local_error(&site, e))?;
        Ok(Response::new(EvaluateResponse {
            scores_json: scores.scores.to_string(),
            rows: scores.rows,
        }))
    }
}
