//! Shared set-up of the ledger tests: a ledger with three hospitals, a scientist and a
//! regulator, served by a real tonic server on a loopback port chosen at run time.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ecgfed_ledger::Ledger;
use ecgfed_ledger::entry::EntrySigner;
use ecgfed_ledger::genesis::GenesisFile;
use ecgfed_ledger::keys::KeyPair;
use ecgfed_testkit::members::Members;

/// A fresh ledger and its members' signers.
pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub ledger_key: KeyPair,
    pub genesis: GenesisFile,
    pub hospitals: Vec<EntrySigner>,
    pub scientist: EntrySigner,
    pub regulator: EntrySigner,
}

pub(crate) const ORIGIN: &str = "ecgfed.test/ledger";

impl Fixture {
    pub(crate) fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let members = (0..3)
            .fold(Members::new(ORIGIN), |m, i| {
                m.hospital(&format!("hospital-{i}"), &format!("site-{i}"))
            })
            .scientist("scientist")
            .regulator("regulator")
            .max_clock_skew_ms(60_000);
        let genesis = members.genesis();
        let ledger_key = members.ledger_key().clone();
        Ledger::init(&db, &genesis, &ledger_key).unwrap();
        Fixture {
            dir,
            db,
            ledger_key,
            genesis,
            hospitals: (0..3)
                .map(|i| members.signer(&format!("hospital-{i}")))
                .collect(),
            scientist: members.signer("scientist"),
            regulator: members.signer("regulator"),
        }
    }

    /// A raw service client at `addr` whose calls carry the regulator's call token (the
    /// ledger takes writes only from members; the entries are signed by their own signers).
    pub(crate) async fn raw(&self, addr: SocketAddr) -> ecgfed_ledger::access::Client {
        let id = ecgfed_ledger::access::CallIdentity::new(
            ORIGIN,
            "regulator",
            self.regulator.key().clone(),
        );
        ecgfed_ledger::access::connect(format!("http://{addr}"), Some(Arc::new(id)))
            .await
            .unwrap()
    }

    pub(crate) fn open(&self) -> Arc<Ledger> {
        Ledger::open(&self.db, self.ledger_key.clone()).unwrap()
    }
}

#[allow(unused_imports)]
pub(crate) use ecgfed_testkit::payloads::{cohort, dataset, model};

/// Serves `ledger` on 127.0.0.1 with a free port; returns the address and a stopper.
pub(crate) async fn serve(ledger: Arc<Ledger>) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    serve_limited(ledger, ecgfed_ledger::gate::Limits::default()).await
}

/// [`serve`] with per-peer `limits`.
pub(crate) async fn serve_limited(
    ledger: Arc<Ledger>,
    limits: ecgfed_ledger::gate::Limits,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (l, addr) = ecgfed_ledger::service::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ecgfed_ledger::service::serve_with(
        ledger,
        l,
        limits,
        async {
            let _ = rx.await;
        },
    ));
    (addr, tx)
}
