//! The federated rounds open at a gateway: each attempt's agreement key and self-mask seed,
//! its participants once trained, and the gateway's turn to train (one round at a time). The
//! TrainingService ([`crate::server::training`]) keeps them here, in the gateway's state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ecgfed_ledger::keys::AgreementKey;

/// Most attempts a gateway keeps open (keys made, round not revealed); the oldest are
/// forgotten past it, and their rounds must be attempted again.
pub(crate) const MAX_OPEN_ATTEMPTS: usize = 256;

/// One attempt of a round at this site.
pub(crate) struct Attempt {
    /// The site's key-agreement key of the attempt.
    pub(crate) key: Arc<AgreementKey>,
    /// The seed of its self mask.
    pub(crate) self_seed: [u8; 32],
    /// Set by TrainRound: the participants, in ascending order.
    pub(crate) participants: Option<Vec<String>>,
    /// Set once the update was recorded and sent: only then may the self mask be revealed.
    pub(crate) trained: bool,
    /// Order of opening (the oldest is forgotten first).
    pub(crate) opened: u64,
}

/// The attempts open at this gateway, and its turn to train (one round at a time).
pub(crate) struct Rounds {
    /// Attempts by (cohort, round, attempt).
    pub(crate) open: Mutex<HashMap<(String, u32, u32), Attempt>>,
    /// Attempts opened so far.
    pub(crate) counter: std::sync::atomic::AtomicU64,
    /// One local training or evaluation at a time.
    pub(crate) turn: tokio::sync::Semaphore,
}

impl Default for Rounds {
    fn default() -> Self {
        Rounds {
            open: Mutex::new(HashMap::new()),
            counter: Default::default(),
            turn: tokio::sync::Semaphore::new(1),
        }
    }
}
