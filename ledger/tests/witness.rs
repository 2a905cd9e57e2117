//! Witnessed ledger (issue 25): real RocksDB ledgers and real witness services on loopback.
//!
//! - A witnessed ledger serves checkpoints cosigned by a quorum; clients accept nothing less,
//!   remember what they trusted across restarts and refuse a rollback.
//! - Split view: one ledger key, two forks of one log served by two ledgers. Fork A gets a
//!   quorum; fork B cannot, whatever witnesses it asks; a client shown fork B refuses it,
//!   compares with a witness, writes evidence and stops trusting the ledger.

use std::path::Path;
use std::time::Duration;

use ecgfed_ledger::Ledger;
use ecgfed_ledger::client::{ClientError, LedgerClient, Memory};
use ecgfed_ledger::evidence::Evidence;
use ecgfed_proto::v1::entry_body::Payload;
use ecgfed_proto::v1::{GetCheckpointRequest, ModelTrained};
use ecgfed_testkit::local::{LocalLedger, LocalWitness};
use ecgfed_testkit::members::Members;

const HOSPITALS: [&str; 3] = ["h1", "h2", "h3"];

fn members() -> Members {
    Members::new("ecgfed.test/witnessed")
        .hospital("h1", "s1")
        .hospital("h2", "s2")
        .hospital("h3", "s3")
        .scientist("sci")
        .witnessed_by(&HOSPITALS, 2)
}

fn model(id: &str) -> Payload {
    Payload::ModelTrained(ModelTrained {
        model_id: id.into(),
        cohort_id: "c".into(),
        weights_sha256: vec![1; 32],
        code_version: "t".into(),
        hyperparameters_json: "{}".into(),
        metrics_json: "{}".into(),
        ..Default::default()
    })
}

/// A new ledger in `dir/db` (trust file `dir/trust.json`), not opened.
fn init(dir: &Path, m: &Members) -> String {
    let db = dir.join("db");
    let cp = Ledger::init(&db, &m.genesis(), m.ledger_key()).unwrap();
    m.write_trust(&cp, &dir.join("trust.json")).unwrap();
    cp.sign(m.ledger_key())
}

async fn witnesses(dir: &Path, m: &Members, initial: &str) -> Vec<LocalWitness> {
    let mut v = Vec::new();
    for h in HOSPITALS {
        v.push(LocalWitness::start(dir, m, h, initial).await.unwrap());
    }
    v
}

/// Waits (up to `secs`) until `ledger` has witnessed a checkpoint of at least `size` entries.
async fn witnessed(ledger: &Ledger, size: u64, secs: u64) -> bool {
    tokio::time::timeout(Duration::from_secs(secs), async {
        while ledger.witnessed().size < size {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_accept_quorum_checkpoints_only_and_remember_them_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let m = members();
    let genesis = init(tmp.path(), &m);
    let ws = witnesses(&tmp.path().join("w"), &m, &genesis).await;
    let ledger = Ledger::open(&tmp.path().join("db"), m.ledger_key().clone()).unwrap();
    // Only two of the three witnesses are reachable: still a quorum.
    ledger
        .start_witnessing(&[ws[0].peer(), ws[2].peer()])
        .unwrap();
    let served = LocalLedger::start(&ledger).await.unwrap();
    let addr = served.addr.to_string();
    let trust = tmp.path().join("trust.json");
    let memory = Memory::beside(tmp.path().join("client/state.json"), "client");

    let mut c = LedgerClient::open(&addr, &trust, Some(memory.clone()))
        .await
        .unwrap();
    let mut sci = m.signer("sci");
    c.act_as("sci", sci.key().clone());
    for i in 0..5 {
        // submit proves the entry: only against a witnessed checkpoint covering it.
        let r = c.submit(sci.sign(model(&format!("m{i}")))).await.unwrap();
        assert!(c.trusted().unwrap().size > r.index);
        assert_eq!(c.cosigners(), ["h1", "h3"], "h2 was never asked");
    }
    let size = c.trusted().unwrap().size;
    // Past checkpoints: served with their cosignatures and proven consistent.
    let (past, cosigners) = c.checkpoint_at(2).await.unwrap();
    assert_eq!(past.size, 2);
    assert_eq!(cosigners, ["h1", "h3"]);
    // The ledger-signed note of a size never witnessed is refused by a client.
    let mut raw = c.raw();
    let last = raw
        .get_checkpoint(GetCheckpointRequest { size })
        .await
        .unwrap()
        .into_inner()
        .note;
    assert!(last.contains("/witnesses "), "{last}");
    let stripped: String = last
        .lines()
        .filter(|l| !l.contains("/witnesses "))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut fresh = LedgerClient::open(&addr, &trust, None).await.unwrap();
    let e = fresh.accept(&stripped, "test", true).await.unwrap_err();
    assert!(matches!(e, ClientError::Unwitnessed { .. }), "{e}");
    // A witness keeps what it cosigned; h2 was never asked and still holds the genesis.
    assert!(ws[0].cosigner.held_size() >= size);
    assert_eq!(ws[1].cosigner.held_size(), 1);

    // The remembered checkpoint survives the client: a new client starts from it, not from
    // the trust file's genesis checkpoint.
    drop(c);
    let c2 = LedgerClient::open(&addr, &trust, Some(memory.clone()))
        .await
        .unwrap();
    assert_eq!(c2.trusted().unwrap().size, size);

    // Rollback: the ledger's folder replaced by an older copy (taken here at size `size`
    // after one more entry is written to the live one).
    served.stop().await.unwrap();
    ledger.shutdown();
    drop(ledger);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let old = tmp.path().join("db-old");
    ecgfed_testkit::files::copy_dir(&tmp.path().join("db"), &old).unwrap();
    let ledger = Ledger::open(&tmp.path().join("db"), m.ledger_key().clone()).unwrap();
    ledger
        .start_witnessing(&[ws[0].peer(), ws[2].peer()])
        .unwrap();
    let served = LocalLedger::start(&ledger).await.unwrap();
    let addr = served.addr.to_string();
    let mut c3 = LedgerClient::open(&addr, &trust, Some(memory.clone()))
        .await
        .unwrap();
    c3.act_as("sci", sci.key().clone());
    c3.submit(sci.sign(model("after"))).await.unwrap();
    let grown = c3.trusted().unwrap().size;
    assert!(grown > size);
    drop(c3);
    served.stop().await.unwrap();
    ledger.shutdown();
    drop(ledger);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rolled = Ledger::open(&old, m.ledger_key().clone()).unwrap();
    let served = LocalLedger::start(&rolled).await.unwrap();
    let mut c4 = LedgerClient::open(&served.addr.to_string(), &trust, Some(memory))
        .await
        .unwrap();
    let e = c4.update_checkpoint().await.unwrap_err();
    assert!(matches!(e, ClientError::RolledBack { .. }), "{e}");
    served.stop().await.unwrap();
    for w in ws {
        w.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_view_cannot_be_witnessed_twice_and_leaves_evidence() {
    let tmp = tempfile::tempdir().unwrap();
    let m = members();
    let genesis = init(tmp.path(), &m);
    // One log, then two copies of its folder: two ledgers under one key.
    let (dir_a, dir_b) = (tmp.path().join("db"), tmp.path().join("db-b"));
    ecgfed_testkit::files::copy_dir(&dir_a, &dir_b).unwrap();
    let ws = witnesses(&tmp.path().join("w"), &m, &genesis).await;
    let a = Ledger::open(&dir_a, m.ledger_key().clone()).unwrap();
    let b = Ledger::open(&dir_b, m.ledger_key().clone()).unwrap();
    // Fork A and fork B: same size, different entries.
    let mut sci = m.signer("sci");
    a.submit(sci.sign(model("fork-a"))).await.unwrap();
    let mut sci_b = m.signer("sci");
    b.submit(sci_b.sign(model("fork-b"))).await.unwrap();
    assert_eq!(a.head().tree_size, b.head().tree_size);
    assert_ne!(a.checkpoint(), b.checkpoint());

    // Fork A is shown to h1 and h3 first: witnessed.
    a.start_witnessing(&[ws[0].peer(), ws[2].peer()]).unwrap();
    assert!(witnessed(&a, 2, 10).await, "fork A gathers its quorum");
    // Fork B asks every witness, for as long as it likes: h2 alone cosigns it.
    b.start_witnessing(&[ws[0].peer(), ws[1].peer(), ws[2].peer()])
        .unwrap();
    assert!(
        !witnessed(&b, 2, 2).await,
        "fork B must not gather a quorum"
    );
    assert_eq!(b.witnessed().size, 1);
    assert_eq!(ws[1].cosigner.held_size(), 2, "h2 cosigned fork B");
    // h1 and h3 refused fork B and wrote evidence of it.
    for w in [&ws[0], &ws[2]] {
        let ev = Evidence::list(&tmp.path().join("w").join(&w.id).join("evidence")).unwrap();
        assert!(!ev.is_empty(), "witness {} kept evidence", w.id);
        Evidence::read(&ev[0])
            .unwrap()
            .check(&m.ledger_key().public())
            .unwrap();
    }

    // Gateway 2 is served by ledger B: B's own signed checkpoint lacks a quorum.
    let served_b = LocalLedger::start(&b).await.unwrap();
    let trust = tmp.path().join("trust.json");
    let memory = Memory::beside(tmp.path().join("gw2/ledger-trust.json"), "gw2");
    let mut gw2 = LedgerClient::open(&served_b.addr.to_string(), &trust, Some(memory.clone()))
        .await
        .unwrap();
    let shown = b.checkpoint();
    let e = gw2.accept(&shown, "ledger B", true).await.unwrap_err();
    assert!(matches!(e, ClientError::Unwitnessed { .. }), "{e}");
    // Comparing with witness h1 (what fork A showed it): a fork, recorded as evidence.
    let e = gw2.cross_check(&ws[0].addr.to_string()).await.unwrap_err();
    assert!(matches!(e, ClientError::Forked { .. }), "{e}");
    let files = Evidence::list(&tmp.path().join("gw2/evidence")).unwrap();
    assert_eq!(files.len(), 1);
    let ev = Evidence::read(&files[0]).unwrap();
    assert_eq!(ev.kind, "fork");
    let (x, y) = ev.check(&m.ledger_key().public()).unwrap();
    assert_eq!((x.size, y.size), (2, 2));
    assert_ne!(x.root, y.root);
    // The client now refuses the ledger, also after a restart.
    assert!(matches!(
        gw2.update_checkpoint().await.unwrap_err(),
        ClientError::Distrusted { .. }
    ));
    drop(gw2);
    let e = LedgerClient::open(&served_b.addr.to_string(), &trust, Some(memory))
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Distrusted { .. }), "{e}");
    served_b.stop().await.unwrap();
    a.shutdown();
    b.shutdown();
    for w in ws {
        w.stop().await.unwrap();
    }
}
