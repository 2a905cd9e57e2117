//! A ledger in this process: RocksDB in a folder, its real tonic service on a loopback port
//! chosen at run time, stopped on request (feature `server`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use ecgfed_ledger::Ledger;
use ecgfed_ledger::checkpoint::Checkpoint;
use ecgfed_ledger::client::LedgerClient;

use crate::members::Members;

/// The ledger service of `ledger` on a loopback port of this process, until
/// [`LocalLedger::stop`] (or the end of the runtime).
pub struct LocalLedger {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The ledger served.
    pub ledger: Arc<Ledger>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl LocalLedger {
    /// Serves `ledger` on a free loopback port.
    pub async fn start(ledger: &Arc<Ledger>) -> Result<LocalLedger> {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let (listener, addr) = ecgfed_ledger::service::bind(loopback)
            .await
            .context("binding a loopback port for the ledger")?;
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(ecgfed_ledger::service::serve(
            Arc::clone(ledger),
            listener,
            async {
                let _ = stop_rx.await;
            },
        ));
        Ok(LocalLedger {
            addr,
            ledger: Arc::clone(ledger),
            stop,
            task,
        })
    }

    /// Stops accepting calls, lets running ones finish, and reports how serving ended.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }
}

/// A new ledger for `members` in `dir` (RocksDB in `dir/ledger`, the trust file of its
/// genesis checkpoint in `dir/trust.json`), served in this process.
pub struct TestLedger {
    /// The running service.
    pub served: LocalLedger,
    /// The genesis checkpoint.
    pub genesis: Checkpoint,
    /// The trust file of the genesis checkpoint.
    pub trust: PathBuf,
}

impl TestLedger {
    /// Initialises, opens and serves the ledger.
    pub async fn start(dir: &Path, members: &Members) -> Result<TestLedger> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let db = dir.join("ledger");
        let genesis = Ledger::init(&db, &members.genesis(), members.ledger_key())?;
        let trust = dir.join("trust.json");
        members.write_trust(&genesis, &trust)?;
        let ledger = Ledger::open(&db, members.ledger_key().clone())?;
        let served = LocalLedger::start(&ledger).await?;
        Ok(TestLedger {
            served,
            genesis,
            trust,
        })
    }

    /// The ledger's address.
    pub fn addr(&self) -> String {
        self.served.addr.to_string()
    }

    /// A verifying client trusting the genesis checkpoint, brought up to date; its calls carry
    /// the ledger operator's call token.
    pub async fn client(&self, members: &Members) -> Result<LedgerClient> {
        let mut c = LedgerClient::connect(
            &self.addr(),
            &self.genesis.origin,
            members.ledger_key().public(),
            Some(self.genesis.clone()),
        )
        .await?;
        c.act_as("ledger", members.ledger_key().clone());
        c.update_checkpoint().await?;
        Ok(c)
    }
}

/// A witness served in this process (its state in `dir/<id>/witness.json`), until
/// [`LocalWitness::stop`].
pub struct LocalWitness {
    /// Its member id.
    pub id: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its key and state.
    pub cosigner: Arc<ecgfed_ledger::witness::Cosigner>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl LocalWitness {
    /// Starts witness `id` of `members`' ledger on a free loopback port; a new one starts from
    /// the signed note `initial`.
    pub async fn start(dir: &Path, members: &Members, id: &str, initial: &str) -> Result<Self> {
        let d = dir.join(id);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        let cosigner = Arc::new(ecgfed_ledger::witness::Cosigner::open(
            &d.join("witness.json"),
            id,
            members.key(id).clone(),
            members.origin(),
            members.ledger_key().public(),
            initial,
        )?);
        let (listener, addr) =
            ecgfed_ledger::service::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(ecgfed_ledger::witness::serve(
            Arc::clone(&cosigner),
            listener,
            async {
                let _ = stop_rx.await;
            },
        ));
        Ok(LocalWitness {
            id: id.to_string(),
            addr,
            cosigner,
            stop,
            task,
        })
    }

    /// What a ledger needs to ask this witness.
    pub fn peer(&self) -> ecgfed_ledger::WitnessPeer {
        ecgfed_ledger::WitnessPeer {
            id: self.id.clone(),
            address: self.addr.to_string(),
        }
    }

    /// Stops serving.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }
}
