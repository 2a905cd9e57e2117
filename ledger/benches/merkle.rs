//! Criterion benchmarks of the Merkle log: appends, inclusion-proof build and verify,
//! consistency-proof build and verify, on a log of 2^20 entries.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ecgfed_ledger::log::{
    MemoryLog, consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency,
    verify_inclusion,
};

fn merkle(c: &mut Criterion) {
    let n = 1u64 << 20;
    let mut log = MemoryLog::new();
    for i in 0..n {
        log.append(&i.to_le_bytes());
    }
    let size = n - 12_345;
    let rt = root(&log, size).unwrap();
    let idx: u64 = 777_777;
    let leaf = leaf_hash(&idx.to_le_bytes());
    let proof = inclusion_proof(&log, idx, size).unwrap();
    c.bench_function("inclusion_proof_build_1m", |b| {
        b.iter(|| inclusion_proof(&log, black_box(idx), size).unwrap())
    });
    c.bench_function("inclusion_proof_verify_1m", |b| {
        b.iter(|| verify_inclusion(black_box(idx), size, &leaf, &proof, &rt).unwrap())
    });
    let first = 600_001;
    let r1 = root(&log, first).unwrap();
    let cp = consistency_proof(&log, first, size).unwrap();
    c.bench_function("consistency_proof_build_1m", |b| {
        b.iter(|| consistency_proof(&log, black_box(first), size).unwrap())
    });
    c.bench_function("consistency_proof_verify_1m", |b| {
        b.iter(|| verify_consistency(black_box(first), size, &r1, &rt, &cp).unwrap())
    });
    c.bench_function("append", |b| {
        let mut l = log.clone();
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            l.append(&i.to_le_bytes())
        })
    });
}

criterion_group!(benches, merkle);
criterion_main!(benches);
