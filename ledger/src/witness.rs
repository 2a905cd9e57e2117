//! A witness: cosigns the ledger's checkpoints, each only after checking the ledger's
//! signature and a consistency proof from the last checkpoint it cosigned, which it keeps in a
//! file written durably before any cosignature leaves (docs/ledger.md, "Witnesses"). So it
//! never cosigns a checkpoint smaller than, or inconsistent with, one it cosigned before: not
//! across restarts, not when killed between checking and answering.
//!
//! The role runs in every gateway (a hospital) and in `ecgfed witness serve` (a regulator).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ecgfed_proto::v1::witness_service_server::{WitnessService, WitnessServiceServer};
use ecgfed_proto::v1::{
    AddCheckpointRequest, AddCheckpointResponse, GetLatestCosignedRequest, LatestCosigned,
};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::cosign::cosign;
use crate::evidence::Evidence;
use crate::keys::{KeyPair, PublicKey, Signature};
use crate::log::{Hash, verify_consistency};
use crate::protocol::MAX_MESSAGE_BYTES;

/// Most hashes a consistency proof may carry (a tree of 2^64 leaves needs fewer than 128).
const MAX_PROOF: usize = 128;

/// Why a witness does not cosign.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// The state file cannot be read, parsed or written.
    #[error("witness state {}: {reason}", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The checkpoint does not parse or its ledger signature does not verify.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Smaller than the one cosigned last.
    #[error("checkpoint of size {presented} is smaller than size {held}, cosigned before")]
    Smaller {
        /// The size cosigned last.
        held: u64,
        /// The size presented.
        presented: u64,
    },
    /// Same size as the one cosigned last, another root: the ledger forked.
    #[error("checkpoint of size {size} has another root than the one cosigned before: a fork (evidence: {})", evidence.as_deref().map_or("not written".into(), |p| p.display().to_string()))]
    Fork {
        /// The size.
        size: u64,
        /// Where the evidence was written.
        evidence: Option<PathBuf>,
    },
    /// The consistency proof does not show the new checkpoint extends the held one.
    #[error(
        "checkpoint of size {new} is not proven to extend size {old}, cosigned before: {reason}"
    )]
    Inconsistent {
        /// The size cosigned last.
        old: u64,
        /// The size presented.
        new: u64,
        /// Why the proof fails.
        reason: String,
    },
    /// The checkpoint's time is before the held one's, or too far ahead of this clock.
    #[error("checkpoint time {timestamp_ms} ms: {reason}")]
    Time {
        /// Its timestamp.
        timestamp_ms: i64,
        /// What is wrong.
        reason: String,
    },
}

/// The state file: the last checkpoint this witness cosigned.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StateFile {
    origin: String,
    ledger_public_key: String,
    witness: String,
    /// The ledger's signed note.
    note: String,
    /// Hex of this witness's cosignature of it.
    cosignature: String,
}

struct Held {
    note: String,
    checkpoint: Checkpoint,
    cosignature: Signature,
}

/// What [`Cosigner::add`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// The cosignature of the new checkpoint (held from now on).
    Cosigned(Signature),
    /// The caller's old size is not the held one: retry from this size.
    Conflict {
        /// The size of the checkpoint held.
        known_size: u64,
    },
}

/// A witness's key and durable state.
pub struct Cosigner {
    member: String,
    key: KeyPair,
    origin: String,
    ledger_key: PublicKey,
    max_skew_ms: u64,
    path: PathBuf,
    held: Mutex<Held>,
    /// Conflicting notes already written as evidence (a ledger retrying one fork writes one
    /// file, not one per attempt).
    reported: Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cosigner({} at {})", self.member, self.path.display())
    }
}

impl Cosigner {
    /// Opens the witness state in `path`; a new one starts from `initial` (a signed note the
    /// operator trusts, as in its trust file), which it cosigns.
    pub fn open(
        path: &Path,
        member: &str,
        key: KeyPair,
        origin: &str,
        ledger_key: PublicKey,
        initial: &str,
    ) -> Result<Cosigner, WitnessError> {
        let serr = |reason: String| WitnessError::State {
            path: path.to_path_buf(),
            reason,
        };
        let held = match std::fs::read_to_string(path) {
            Ok(text) => {
                let s: StateFile = serde_json::from_str(&text)
                    .map_err(|e| serr(format!("not a witness state: {e}")))?;
                if s.origin != origin || s.ledger_public_key != ledger_key.to_hex() {
                    return Err(serr("it belongs to another ledger (origin or key)".into()));
                }
                if s.witness != member {
                    return Err(serr(format!("it belongs to witness {}", s.witness)));
                }
                let checkpoint = Checkpoint::verify(&s.note, origin, &ledger_key)?;
                let cosignature = hex::decode(&s.cosignature)
                    .ok()
                    .and_then(|b| Signature::from_bytes(&b).ok())
                    .ok_or_else(|| serr("cosignature is not a signature".into()))?;
                Held {
                    note: s.note,
                    checkpoint,
                    cosignature,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let checkpoint = Checkpoint::verify(initial, origin, &ledger_key)?;
                Held {
                    note: initial.to_string(),
                    cosignature: cosign(&key, &checkpoint),
                    checkpoint,
                }
            }
            Err(e) => return Err(serr(e.to_string())),
        };
        let c = Cosigner {
            member: member.to_string(),
            key,
            origin: origin.to_string(),
            ledger_key,
            max_skew_ms: crate::state::DEFAULT_MAX_SKEW_MS,
            path: path.to_path_buf(),
            held: Mutex::new(held),
            reported: Mutex::default(),
        };
        c.persist(&c.lock())?;
        Ok(c)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn persist(&self, h: &Held) -> Result<(), WitnessError> {
        let s = StateFile {
            origin: self.origin.clone(),
            ledger_public_key: self.ledger_key.to_hex(),
            witness: self.member.clone(),
            note: h.note.clone(),
            cosignature: hex::encode(h.cosignature.to_bytes()),
        };
        let text = serde_json::to_string_pretty(&s).unwrap_or_default() + "\n";
        crate::trust::write_durable(&self.path, text.as_bytes()).map_err(|e| WitnessError::State {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }

    /// The witness's member id.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// The size of the last checkpoint cosigned.
    pub fn held_size(&self) -> u64 {
        self.lock().checkpoint.size
    }

    /// The last checkpoint cosigned: its note and cosignature.
    pub fn latest(&self) -> (String, Signature) {
        let h = self.lock();
        (h.note.clone(), h.cosignature)
    }

    /// Cosigns `note` if it extends the held checkpoint: `old_size` must be the held size
    /// (else [`Added::Conflict`]), the ledger's signature must verify, and `proof` must prove
    /// consistency from the held checkpoint. The new state is durable before the cosignature
    /// is returned. A same-size checkpoint with another root is a fork: refused, and its
    /// evidence written beside the state file.
    pub fn add(&self, old_size: u64, note: &str, proof: &[Hash]) -> Result<Added, WitnessError> {
        let new = Checkpoint::verify(note, &self.origin, &self.ledger_key)?;
        let mut h = self.lock();
        let held = h.checkpoint.clone();
        if old_size != held.size {
            return Ok(Added::Conflict {
                known_size: held.size,
            });
        }
        if new.size < held.size {
            return Err(WitnessError::Smaller {
                held: held.size,
                presented: new.size,
            });
        }
        if new.size == held.size {
            if new.root != held.root {
                let evidence = self.evidence(&h.note, note, "fork", &[]);
                return Err(WitnessError::Fork {
                    size: new.size,
                    evidence,
                });
            }
            if new == held {
                return Ok(Added::Cosigned(h.cosignature));
            }
        } else if held.size > 0 {
            verify_consistency(held.size, new.size, &held.root, &new.root, proof).map_err(|e| {
                self.evidence(&h.note, note, "inconsistent", proof);
                WitnessError::Inconsistent {
                    old: held.size,
                    new: new.size,
                    reason: e.to_string(),
                }
            })?;
        }
        let now = crate::entry::now_ms();
        if new.timestamp_ms < held.timestamp_ms {
            return Err(WitnessError::Time {
                timestamp_ms: new.timestamp_ms,
                reason: format!("before the held checkpoint's {}", held.timestamp_ms),
            });
        }
        if new.timestamp_ms > now + self.max_skew_ms as i64 {
            return Err(WitnessError::Time {
                timestamp_ms: new.timestamp_ms,
                reason: format!(
                    "more than {} ms ahead of this clock ({now})",
                    self.max_skew_ms
                ),
            });
        }
        let cosignature = cosign(&self.key, &new);
        let next = Held {
            note: note.to_string(),
            checkpoint: new,
            cosignature,
        };
        self.persist(&next)?;
        *h = next;
        Ok(Added::Cosigned(cosignature))
    }

    /// Writes evidence of a conflict next to the state file; returns where, if it could.
    fn evidence(&self, held: &str, presented: &str, kind: &str, proof: &[Hash]) -> Option<PathBuf> {
        let fresh = self
            .reported
            .lock()
            .map(|mut r| r.insert(format!("{held}{presented}")))
            .unwrap_or(true);
        if !fresh {
            return None;
        }
        let dir = self
            .path
            .parent()
            .unwrap_or(Path::new("."))
            .join("evidence");
        let e = Evidence {
            kind: kind.into(),
            origin: self.origin.clone(),
            ledger_public_key: self.ledger_key.to_hex(),
            source: "AddCheckpoint".into(),
            detected_by: self.member.clone(),
            detected_at_ms: crate::entry::now_ms(),
            first: held.to_string(),
            second: presented.to_string(),
            consistency_proof: proof.iter().map(hex::encode).collect(),
        };
        match e.write(&dir) {
            Ok(p) => {
                tracing::error!(evidence = %p.display(), "the ledger presented a conflicting checkpoint");
                Some(p)
            }
            Err(err) => {
                tracing::error!("the ledger presented a conflicting checkpoint; {err}");
                None
            }
        }
    }
}

/// The WitnessService over a [`Cosigner`].
#[derive(Debug, Clone)]
pub struct WitnessServer {
    cosigner: Arc<Cosigner>,
}

impl WitnessServer {
    /// A service over `cosigner`.
    pub fn new(cosigner: Arc<Cosigner>) -> Self {
        WitnessServer { cosigner }
    }

    /// The tonic service with the ledger's message limits.
    pub fn into_service(self) -> WitnessServiceServer<WitnessServer> {
        WitnessServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

#[tonic::async_trait]
impl WitnessService for WitnessServer {
    async fn add_checkpoint(
        &self,
        req: Request<AddCheckpointRequest>,
    ) -> Result<Response<AddCheckpointResponse>, Status> {
        let r = req.into_inner();
        if r.consistency.len() > MAX_PROOF {
            return Err(Status::invalid_argument("consistency proof too long"));
        }
        let proof: Vec<Hash> = r
            .consistency
            .iter()
            .map(|h| h.as_slice().try_into())
            .collect::<Result<_, _>>()
            .map_err(|_| Status::invalid_argument("a proof hash is not 32 bytes"))?;
        let c = Arc::clone(&self.cosigner);
        let out = tokio::task::spawn_blocking(move || c.add(r.old_size, &r.note, &proof))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let witness = self.cosigner.member().to_string();
        match out {
            Ok(Added::Cosigned(sig)) => Ok(Response::new(AddCheckpointResponse {
                cosignature: sig.to_bytes(),
                known_size: self.cosigner.held_size(),
                witness,
            })),
            Ok(Added::Conflict { known_size }) => Ok(Response::new(AddCheckpointResponse {
                cosignature: Vec::new(),
                known_size,
                witness,
            })),
            Err(e @ WitnessError::State { .. }) => {
                tracing::error!("{e}");
                Err(Status::internal("the witness cannot write its state"))
            }
            Err(e @ (WitnessError::Checkpoint(_) | WitnessError::Inconsistent { .. })) => {
                Err(Status::invalid_argument(e.to_string()))
            }
            Err(e) => Err(Status::failed_precondition(e.to_string())),
        }
    }

    async fn get_latest_cosigned(
        &self,
        _req: Request<GetLatestCosignedRequest>,
    ) -> Result<Response<LatestCosigned>, Status> {
        let (note, sig) = self.cosigner.latest();
        Ok(Response::new(LatestCosigned {
            witness: self.cosigner.member().to_string(),
            note,
            cosignature: sig.to_bytes(),
        }))
    }
}

/// Serves the WitnessService of `cosigner` on `listener` until `shutdown` resolves.
pub async fn serve(
    cosigner: Arc<Cosigner>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = crate::service::incoming(listener);
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(WitnessServer::new(cosigner).into_service())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
