//! Member keys and a genesis that names them: the set-up every in-process test and bench
//! starts from. Keys are generated fresh for each [`Members`]; none is ever reused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use ecgfed_gateway::client::RequestSigner;
use ecgfed_ledger::checkpoint::Checkpoint;
use ecgfed_ledger::entry::EntrySigner;
use ecgfed_ledger::genesis::{GenesisFile, GenesisMember};
use ecgfed_ledger::keys::KeyPair;
use ecgfed_ledger::trust::TrustFile;

/// The members of a test federation with their key pairs: a ledger member `ledger` first,
/// then those added, in order.
pub struct Members {
    origin: String,
    max_clock_skew_ms: u64,
    witnesses: Vec<String>,
    witness_quorum: u32,
    list: Vec<(GenesisMember, KeyPair)>,
}

impl Members {
    /// A federation of origin `origin` with only its ledger member, `ledger`, and no clock
    /// skew check (0).
    pub fn new(origin: &str) -> Members {
        let key = KeyPair::generate();
        Members {
            origin: origin.into(),
            max_clock_skew_ms: 0,
            witnesses: Vec::new(),
            witness_quorum: 0,
            list: vec![(GenesisMember::for_key("ledger", "ledger", "", &key), key)],
        }
    }

    /// Adds member `id` of `role` (`hospital` with its `site`; `scientist` or `regulator`
    /// with an empty site).
    pub fn with(mut self, id: &str, role: &str, site: &str) -> Members {
        let key = KeyPair::generate();
        self.list
            .push((GenesisMember::for_key(id, role, site, &key), key));
        self
    }

    /// Adds hospital `id` of `site`.
    pub fn hospital(self, id: &str, site: &str) -> Members {
        self.with(id, "hospital", site)
    }

    /// Adds scientist `id`.
    pub fn scientist(self, id: &str) -> Members {
        self.with(id, "scientist", "")
    }

    /// Adds regulator `id`.
    pub fn regulator(self, id: &str) -> Members {
        self.with(id, "regulator", "")
    }

    /// Sets the genesis's clock skew bound (milliseconds; 0: not checked).
    pub fn max_clock_skew_ms(mut self, ms: u64) -> Members {
        self.max_clock_skew_ms = ms;
        self
    }

    /// Makes the ledger witnessed by `ids` (in bitmap order) with `quorum`.
    pub fn witnessed_by(mut self, ids: &[&str], quorum: u32) -> Members {
        self.witnesses = ids.iter().map(|s| s.to_string()).collect();
        self.witness_quorum = quorum;
        self
    }

    /// The origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The key pair of member `id`; panics on an id never added (a mistake in the test).
    pub fn key(&self, id: &str) -> &KeyPair {
        match self.list.iter().find(|(m, _)| m.id == id) {
            Some((_, k)) => k,
            None => panic!("no member {id:?} in this test federation"),
        }
    }

    /// The ledger's key pair.
    pub fn ledger_key(&self) -> &KeyPair {
        self.key("ledger")
    }

    /// An entry signer for member `id`, its nonces from 1.
    pub fn signer(&self, id: &str) -> EntrySigner {
        EntrySigner::new(id, self.key(id).clone())
    }

    /// Member `id`'s identity for ledger calls (its call tokens).
    pub fn call_identity(&self, id: &str) -> Arc<ecgfed_ledger::access::CallIdentity> {
        Arc::new(ecgfed_ledger::access::CallIdentity::new(
            &self.origin,
            id,
            self.key(id).clone(),
        ))
    }

    /// A gateway request signer for member `id`.
    pub fn request_signer(&self, id: &str) -> Arc<RequestSigner> {
        Arc::new(RequestSigner::new(id, self.key(id).clone()))
    }

    /// The genesis naming every member.
    pub fn genesis(&self) -> GenesisFile {
        GenesisFile {
            origin: self.origin.clone(),
            max_clock_skew_ms: self.max_clock_skew_ms,
            witnesses: self.witnesses.clone(),
            witness_quorum: self.witness_quorum,
            members: self.list.iter().map(|(m, _)| m.clone()).collect(),
        }
    }

    /// Writes member `id`'s key to `dir/<id>.key` (0600); returns the path.
    pub fn write_key(&self, id: &str, dir: &Path) -> Result<PathBuf> {
        let p = dir.join(format!("{id}.key"));
        self.key(id)
            .write_file(&p)
            .with_context(|| format!("writing {}", p.display()))?;
        Ok(p)
    }

    /// Writes the trust file of checkpoint `cp` (signed by the ledger's key) to `path`.
    pub fn write_trust(&self, cp: &Checkpoint, path: &Path) -> Result<()> {
        TrustFile {
            origin: cp.origin.clone(),
            ledger_public_key: self.ledger_key().public().to_hex(),
            checkpoint: cp.sign(self.ledger_key()),
            distrusted: None,
            tls_ca: None,
            tls_domain: None,
        }
        .write(path)
        .with_context(|| format!("writing {}", path.display()))
    }
}
