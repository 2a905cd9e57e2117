//! Mirrors (issue 25): a mirror copies and verifies a witnessed ledger live, refuses what does
//! not verify, serves the read RPCs, and restores a ledger whose folder was lost: the restored
//! ledger passes `audit verify`, and a client's remembered checkpoint is consistent with it.

use std::sync::Arc;
use std::time::Duration;

use ecgfed_ledger::client::{LedgerClient, Memory};
use ecgfed_ledger::mirror;
use ecgfed_ledger::{Ledger, MirrorRefusal, verify};
use ecgfed_proto::v1::entry_body::Payload;
use ecgfed_proto::v1::{GetBlockRequest, GetCheckpointRequest, GetEntryRequest, ModelTrained};
use ecgfed_testkit::local::{LocalLedger, LocalWitness};
use ecgfed_testkit::members::Members;

fn members() -> Members {
    Members::new("ecgfed.test/mirror")
        .hospital("h1", "s1")
        .hospital("h2", "s2")
        .hospital("h3", "s3")
        .scientist("sci")
        .witnessed_by(&["h1", "h2", "h3"], 2)
}

fn model(id: &str) -> Payload {
    Payload::ModelTrained(ModelTrained {
        model_id: id.into(),
        cohort_id: "c".into(),
        weights_sha256: vec![2; 32],
        code_version: "t".into(),
        hyperparameters_json: "{}".into(),
        metrics_json: "{}".into(),
        ..Default::default()
    })
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let done = tokio::time::timeout(Duration::from_secs(20), async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(done.is_ok(), "timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_ledger_is_restored_from_its_mirror() {
    let tmp = tempfile::tempdir().unwrap();
    let m = members();
    let db = tmp.path().join("ledger/db");
    let genesis = Ledger::init(&db, &m.genesis(), m.ledger_key()).unwrap();
    let trust = tmp.path().join("trust.json");
    m.write_trust(&genesis, &trust).unwrap();
    let note = genesis.sign(m.ledger_key());
    let mut ws = Vec::new();
    for h in ["h1", "h2", "h3"] {
        ws.push(
            LocalWitness::start(&tmp.path().join("w"), &m, h, &note)
                .await
                .unwrap(),
        );
    }
    let peers: Vec<_> = ws.iter().map(LocalWitness::peer).collect();
    let ledger = Ledger::open(&db, m.ledger_key().clone()).unwrap();
    ledger.start_witnessing(&peers).unwrap();
    let served = LocalLedger::start(&ledger).await.unwrap();
    let addr = served.addr.to_string();

    // The mirror, following from the genesis on.
    let mdb = tmp.path().join("mirror/db");
    let mut src = mirror::connect(&addr, None).await.unwrap();
    let mirrored = mirror::open(&mdb, &mut src, &addr, m.origin(), &m.ledger_key().public())
        .await
        .unwrap();
    let follower = tokio::spawn(mirror::follow(Arc::clone(&mirrored), src, addr.clone()));
    let mirror_served = LocalLedger::start(&mirrored).await.unwrap();

    // A client that remembers what it trusted.
    let memory = Memory::beside(tmp.path().join("client/trust-state.json"), "client");
    let mut c = LedgerClient::open(&addr, &trust, Some(memory.clone()))
        .await
        .unwrap();
    let mut sci = m.signer("sci");
    c.act_as("sci", sci.key().clone());
    for i in 0..30 {
        c.submit(sci.sign(model(&format!("m{i}")))).await.unwrap();
    }
    let head = ledger.head();
    let trusted = c.trusted().unwrap().clone();
    until("the mirror to copy every block", || mirrored.head() == head).await;
    until("the mirror to copy the newest witnessed checkpoint", || {
        mirrored.witnessed().size == ledger.witnessed().size
    })
    .await;
    // The mirror serves the same reads, verified by an ordinary client.
    let mut via_mirror = LedgerClient::open(&mirror_served.addr.to_string(), &trust, None)
        .await
        .unwrap();
    let e = via_mirror.entry(head.tree_size - 1).await.unwrap();
    assert_eq!(e.kind(), "ModelTrained");
    assert!(!via_mirror.cosigners().is_empty());
    // Submissions to a mirror are refused.
    let refused = via_mirror.submit(sci.sign(model("to-the-mirror"))).await;
    assert!(refused.is_err());

    // The ledger dies with its folder.
    drop(c);
    served.stop().await.unwrap();
    ledger.shutdown();
    drop(ledger);
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::remove_dir_all(tmp.path().join("ledger")).unwrap();
    // Restore: the mirror stops, its folder becomes the ledger's, the ledger key is put back.
    mirror_served.stop().await.unwrap();
    follower.abort();
    let _ = follower.await;
    mirrored.shutdown();
    drop(mirrored);
    drop(via_mirror);
    tokio::time::sleep(Duration::from_millis(300)).await;
    ecgfed_testkit::files::copy_dir(&mdb, &db).unwrap();
    let store = ecgfed_ledger::store::Store::open(&db).unwrap();
    let report = verify::verify_store(&store).unwrap();
    assert!(report.ok, "{:?}", report.problems.first());
    assert_eq!(report.entries, head.tree_size);
    drop(store);
    let restored = Ledger::open(&db, m.ledger_key().clone()).unwrap();
    restored.start_witnessing(&peers).unwrap();
    let served = LocalLedger::start(&restored).await.unwrap();
    // The client's remembered checkpoint is consistent with the restored log, and it goes on.
    let mut c = LedgerClient::open(&served.addr.to_string(), &trust, Some(memory))
        .await
        .unwrap();
    c.act_as("sci", sci.key().clone());
    assert_eq!(c.trusted().unwrap(), &trusted);
    c.update_checkpoint().await.unwrap();
    c.submit(sci.sign(model("after-restore"))).await.unwrap();
    assert!(c.trusted().unwrap().size > head.tree_size);
    served.stop().await.unwrap();
    for w in ws {
        w.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_refuses_an_altered_block_and_keeps_its_verified_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Members::new("ecgfed.test/mirror-refuses").scientist("sci");
    let db = tmp.path().join("ledger");
    Ledger::init(&db, &m.genesis(), m.ledger_key()).unwrap();
    let ledger = Ledger::open(&db, m.ledger_key().clone()).unwrap();
    let mut sci = m.signer("sci");
    ledger.submit(sci.sign(model("one"))).await.unwrap();
    let served = LocalLedger::start(&ledger).await.unwrap();
    let addr = served.addr.to_string();
    let mut src = mirror::connect(&addr, None).await.unwrap();
    let mirrored = mirror::open(
        &tmp.path().join("mirror"),
        &mut src,
        &addr,
        m.origin(),
        &m.ledger_key().public(),
    )
    .await
    .unwrap();
    assert_eq!(mirrored.head().blocks, 1, "only the genesis block at first");
    let pb = src
        .get_block(GetBlockRequest { height: 1 })
        .await
        .unwrap()
        .into_inner();
    let block = ecgfed_ledger_block(&pb);
    let stored = src
        .get_entry(GetEntryRequest { index: 1 })
        .await
        .unwrap()
        .into_inner()
        .stored;
    let note = src
        .get_checkpoint(GetCheckpointRequest { size: 2 })
        .await
        .unwrap()
        .into_inner()
        .note;
    // A source claiming a block of more entries than a block can hold is refused before any
    // entry is fetched.
    let mut huge = block;
    huge.entry_count = 10_000;
    huge.tree_size = huge.first_index + huge.entry_count;
    let e = mirrored.check_next_block(&huge).unwrap_err();
    assert!(e.to_string().contains("is not 1 to 8192 entries"), "{e}");
    mirrored.check_next_block(&block).unwrap();
    // One bit of the entry flipped: refused, naming entry 1; nothing written.
    let mut bad = stored.clone();
    let last = bad.len() - 100;
    bad[last] ^= 1;
    let e = mirrored
        .append_mirrored(vec![bad], block, note.clone())
        .unwrap_err();
    assert!(
        matches!(
            e,
            MirrorRefusal::Invalid {
                what: "entry",
                at: 1,
                ..
            } | MirrorRefusal::Invalid {
                what: "block",
                at: 1,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(mirrored.head().blocks, 1);
    // A checkpoint of another size: refused.
    let one = ledger.checkpoint_at(1).unwrap().unwrap();
    assert!(
        mirrored
            .append_mirrored(vec![stored.clone()], block, one)
            .is_err()
    );
    // The real block: accepted.
    mirrored.append_mirrored(vec![stored], block, note).unwrap();
    assert_eq!(mirrored.head(), ledger.head());
    served.stop().await.unwrap();
}

fn ecgfed_ledger_block(pb: &ecgfed_proto::v1::Block) -> ecgfed_ledger::block::Block {
    ecgfed_ledger::block::Block::from_proto(pb).unwrap()
}
