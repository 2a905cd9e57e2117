//! Criterion benchmarks of the readers: format 212 and 16 decoding, MATLAB v4 records, header
//! parsing, and reading the whole embedded sample. Throughput is in bytes of signal file.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ecgfed_datasets::header::parse_header;
use ecgfed_datasets::load::load_record;
use ecgfed_datasets::record::Verification;
use ecgfed_datasets::signal::decode;

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../datasets/sample")
}

fn readers(c: &mut Criterion) {
    // Format 212: one MIT-BIH-sized record (650,000 frames × 2 signals) of pseudo-random bytes.
    let frames = 650_000u64;
    let bytes: Vec<u8> = (0..frames * 3)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("format212_mitdb_sized", |b| {
        b.iter(|| {
            decode(
                212,
                black_box(&bytes),
                &[1, 1],
                frames,
                &[],
                Path::new("x.dat"),
            )
            .unwrap()
        })
    });
    let b16: Vec<u8> = bytes[..(5000 * 12 * 2) as usize].to_vec();
    g.throughput(Throughput::Bytes(b16.len() as u64));
    g.bench_function("format16_12lead_10s", |b| {
        b.iter(|| decode(16, black_box(&b16), &[1; 12], 5000, &[], Path::new("x.dat")).unwrap())
    });
    g.finish();

    let hea = std::fs::read_to_string(sample().join("ludb/data/1.hea")).unwrap();
    c.bench_function("header_ludb_12_lead", |b| {
        b.iter(|| parse_header(black_box(&hea), Path::new("1.hea")).unwrap())
    });

    let mut g = c.benchmark_group("record");
    for (name, rel, bytes) in [
        ("ludb_1_load_and_mv", "ludb/data/1.hea", 120_000),
        (
            "georgia_mat_load_and_mv",
            "cinc2021/georgia/E00271.hea",
            120_024,
        ),
    ] {
        let hea = sample().join(rel);
        g.throughput(Throughput::Bytes(bytes));
        g.bench_function(name, |b| {
            b.iter(|| {
                load_record(&hea, Verification::Strict)
                    .unwrap()
                    .physical()
                    .unwrap()
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("sample");
    g.sample_size(10);
    let probe = ecgfed_bench::read::read_all(&[sample()]);
    g.throughput(Throughput::Bytes(probe.bytes));
    g.bench_function("read_all_embedded_sample", |b| {
        b.iter(|| ecgfed_bench::read::read_all(&[sample()]))
    });
    g.finish();
}

criterion_group!(benches, readers);
criterion_main!(benches);
