//! Tamper test: one byte flipped anywhere in a stored entry, block, Merkle node or
//! checkpoint, directly in RocksDB, makes `audit verify` fail and name exactly that entry,
//! block, node or checkpoint.

mod common;

use common::*;
use ecgfed_ledger::store::{self, Store, node_key};
use ecgfed_ledger::verify::verify_store;
use rand::{Rng, SeedableRng};

/// A ledger of 1 + 3×20 entries in several blocks, closed.
fn build() -> Fixture {
    let mut f = Fixture::new();
    let ledger = f.open();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for round in 0..20 {
            // Three concurrent submissions per round, so blocks hold one to three entries.
            let a = f.hospitals[0].sign(dataset("site-0", &format!("a{round}")));
            let b = f.scientist.sign(model(&format!("m{round}")));
            let c = f.hospitals[2].sign(dataset("site-2", &format!("c{round}")));
            let (x, y, z) = tokio::join!(ledger.submit(a), ledger.submit(b), ledger.submit(c));
            x.unwrap();
            y.unwrap();
            z.unwrap();
        }
    });
    ledger.shutdown();
    drop(ledger);
    f
}

fn flip(store: &Store, cf: &str, key: &[u8], pos: usize) -> Vec<u8> {
    let rows = store.scan(cf).unwrap();
    let orig = rows.iter().find(|(k, _)| k == key).unwrap().1.clone();
    let mut v = orig.clone();
    let p = pos % v.len();
    v[p] ^= 1 << (pos % 8);
    store.put_raw(cf, key, &v).unwrap();
    orig
}

#[test]
fn any_flipped_byte_is_found_and_named_exactly() {
    let f = build();
    let store = Store::open(&f.db).unwrap();
    let clean = verify_store(&store).unwrap();
    assert!(clean.ok, "{:?}", clean.problems);
    assert_eq!(clean.entries, 61);
    assert!(clean.blocks >= 21, "blocks: {}", clean.blocks);
    assert_eq!(clean.checkpoints, clean.blocks);
    let head = store.head().unwrap().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(6962);

    // Every entry, one random byte each.
    for i in 0..head.tree_size {
        let key = i.to_be_bytes();
        let len = store.entry(i).unwrap().unwrap().len();
        let orig = flip(&store, store::CF_ENTRIES, &key, rng.gen_range(0..len * 8));
        let r = verify_store(&store).unwrap();
        assert!(!r.ok, "entry {i} tampered but verify passed");
        let p = &r.problems[0];
        assert_eq!(
            (p.what.as_str(), p.at.as_str()),
            ("entry", i.to_string().as_str()),
            "{p:?}"
        );
        store.put_raw(store::CF_ENTRIES, &key, &orig).unwrap();
    }
    // Every block, one random byte each (every field of the 104 bytes is covered over the
    // blocks, and byte 40..48, the timestamp, is tried explicitly below).
    for h in 0..head.blocks {
        let key = h.to_be_bytes();
        for pos in [rng.gen_range(0..104 * 8), 40 * 8 + (h as usize % 64)] {
            let orig = flip(&store, store::CF_BLOCKS, &key, pos);
            let r = verify_store(&store).unwrap();
            assert!(
                !r.ok,
                "block {h} byte {} tampered but verify passed",
                pos / 8
            );
            let p = &r.problems[0];
            assert_eq!(
                (p.what.as_str(), p.at.as_str()),
                ("block", h.to_string().as_str()),
                "{p:?}"
            );
            store.put_raw(store::CF_BLOCKS, &key, &orig).unwrap();
        }
    }
    // Merkle nodes at every level.
    let nodes = store.scan(store::CF_NODES).unwrap();
    for (k, _) in nodes.iter().step_by(7) {
        let level = k[0] as u32;
        let index = u64::from_be_bytes(k[1..].try_into().unwrap());
        assert_eq!(k.as_slice(), node_key(level, index));
        let orig = flip(&store, store::CF_NODES, k, rng.gen_range(0..256));
        let r = verify_store(&store).unwrap();
        let p = &r.problems[0];
        assert_eq!(
            (p.what.as_str(), p.at.clone()),
            ("merkle_node", format!("level {level} index {index}")),
            "{p:?}"
        );
        store.put_raw(store::CF_NODES, k, &orig).unwrap();
    }
    // A checkpoint.
    let cps = store.checkpoints().unwrap();
    let (size, _) = cps[cps.len() / 2].clone();
    let orig = flip(
        &store,
        store::CF_CHECKPOINTS,
        &size.to_be_bytes(),
        3 * 8 + 1,
    );
    let r = verify_store(&store).unwrap();
    assert_eq!(
        (r.problems[0].what.as_str(), r.problems[0].at.clone()),
        ("checkpoint", size.to_string())
    );
    store
        .put_raw(store::CF_CHECKPOINTS, &size.to_be_bytes(), &orig)
        .unwrap();
    // An index row that names the wrong entry.
    // The first row whose key, with its entry index's low bit flipped, is not a row already
    // (two neighbouring entries may name the same subject, which makes a valid row).
    let rows = store.scan(store::CF_SUBJECTS).unwrap();
    let existing: std::collections::HashSet<&Vec<u8>> = rows.iter().map(|(k, _)| k).collect();
    let k = rows
        .iter()
        .skip(5)
        .map(|(k, _)| {
            let mut k = k.clone();
            let n = k.len();
            k[n - 1] ^= 1;
            k
        })
        .find(|k| !existing.contains(k))
        .expect("a subject row whose neighbour index is not indexed");
    store.put_raw(store::CF_SUBJECTS, &k, &[]).unwrap();
    let r = verify_store(&store).unwrap();
    assert_eq!(r.problems[0].what, "subject_index");

    // Restored except the extra index row: the rest of the ledger still checks out.
    assert_eq!(r.problem_count, 1, "{:?}", r.problems);
}
