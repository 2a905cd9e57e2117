//! The `ecgfed-bench` commands end to end at small sizes: real binaries (`ecgfed-bench`, and
//! the `ecgfed` it starts as servers, built beside it by the workspace's test run), real
//! RocksDB, real gRPC on loopback, figures checked against counts known in advance.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `ecgfed-bench ARGS`, with the product binary it starts named explicitly.
fn bench(args: &[&str]) -> Output {
    let me = Path::new(env!("CARGO_BIN_EXE_ecgfed-bench"));
    let ecgfed = me.with_file_name("ecgfed");
    assert!(
        ecgfed.is_file(),
        "{} missing: build the workspace (cargo test --workspace builds it)",
        ecgfed.display()
    );
    Command::new(me)
        .args(args)
        .env("ECGFED_BIN", &ecgfed)
        .output()
        .expect("ecgfed-bench runs")
}

fn json(o: &Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("JSON on standard output")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `audit` end to end at a small size: fills a ledger through the service, times the
/// lineage queries against `ledger serve` in its own process, and times a kept folder again
/// without filling.
#[test]
fn audit_bench_fills_times_and_reuses_a_kept_ledger() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let keep = tmp.path().join("bench");
    let run = || {
        json(&bench(&[
            "audit",
            "--entries",
            "100",
            "--queries",
            "20",
            "--keep",
            s(&keep),
            "--json",
        ]))
    };
    let first = run();
    // Genesis and three registrations, then (100 - 4) / 8 = 12 cohorts of eight entries.
    assert_eq!(first["entries"], 100);
    assert_eq!(first["queries"], 20);
    let (p50, p99) = (
        first["remote_p50_ms"].as_f64().unwrap(),
        first["remote_p99_ms"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p99 >= p50, "p50 {p50} p99 {p99}");
    assert!(first["store_p50_ms"].as_f64().unwrap() > 0.0);
    let key = std::fs::metadata(keep.join("ledger.key")).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    assert!(
        std::fs::read_to_string(keep.join("serve.log"))
            .unwrap()
            .contains("serving 100 entries"),
        "the queries went to a separate ledger serve process"
    );
    // The kept ledger is timed again, not filled again.
    let again = run();
    assert_eq!(again["entries"], 100);
    assert_eq!(again["fill_seconds"], first["fill_seconds"]);
}

/// `ledger`: every submitted entry acknowledged, none rejected, and the offline audit of the
/// resulting store counts them all (plus the genesis).
#[test]
fn ledger_bench_acknowledges_every_entry_and_audits_the_store() {
    let v = json(&bench(&[
        "ledger",
        "--entries",
        "300",
        "--clients",
        "3",
        "--window",
        "16",
        "--json",
    ]));
    assert_eq!(v["accepted"], 300);
    assert_eq!(v["rejected"], 0);
    assert_eq!(v["audit"]["entries"], 301);
    let p50 = v["submit_latency_ms"]["p50"].as_f64().unwrap();
    assert!(p50 > 0.0, "{v}");
}

/// `datasets`: the reader decodes every record of the embedded sample's CinC 2017 folder (its
/// `.hea` files counted here) and the ingest reads as many.
#[test]
fn datasets_bench_reads_every_record_of_a_folder() {
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../datasets/sample/cinc2017");
    let headers = std::fs::read_dir(&folder)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "hea")
        })
        .count() as u64;
    assert!(headers > 0);
    let v = json(&bench(&["datasets", s(&folder), "--json"]));
    assert_eq!(v["rust_read"]["records"], headers, "{v}");
    assert_eq!(v["rust_read"]["failed"], 0, "{v}");
    assert_eq!(v["rust_ingest"]["records"], headers, "{v}");
}

/// `witnesses` at a small size: every entry accepted and witnessed, with and without witnesses,
/// in one run.
#[test]
fn witness_bench_accepts_and_witnesses_every_entry() {
    let v = json(&bench(&[
        "witnesses",
        "--entries",
        "400",
        "--clients",
        "2",
        "--window",
        "32",
        "--low-load",
        "10",
        "--counts",
        "0,3",
        "--json",
    ]));
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for (r, (n, quorum)) in runs.iter().zip([(0, 0), (3, 2)]) {
        assert_eq!(r["witnesses"], n);
        assert_eq!(r["quorum"], quorum);
        assert_eq!(r["accepted"], 400, "{r}");
        assert_eq!(r["never_witnessed"], 0, "{r}");
        assert!(r["entries_per_second"].as_f64().unwrap() > 0.0);
    }
}

/// `ledger --adversary` at a small size: both phases accept every honest entry, the forged
/// ones are all refused (the bench fails if one is in the log), the ratio is reported.
#[test]
fn adversary_bench_refuses_every_forged_entry() {
    let v = json(&bench(&[
        "ledger",
        "--adversary",
        "--entries",
        "200",
        "--clients",
        "2",
        "--window",
        "16",
        "--json",
    ]));
    assert_eq!(v["alone"]["accepted"], 200, "{v}");
    assert_eq!(v["with_adversary"]["accepted"], 200, "{v}");
    assert_eq!(v["with_adversary"]["unread_streams"], 1000);
    assert!(
        v["with_adversary"]["forged_refused"].as_u64().unwrap() >= 1,
        "{v}"
    );
    assert!(v["ratio"].as_f64().unwrap() > 0.0);
}
