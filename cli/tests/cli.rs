//! The `ecgfed datasets` commands (and keys) as a user runs them: real
//! binary, real files, exit codes and documented JSON.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ecgfed(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ecgfed"))
        .args(args)
        .output()
        .expect("ecgfed runs")
}

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../datasets/sample")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ingest_into(from: &Path, out: &Path) -> Output {
    ecgfed(&[
        "datasets",
        "ingest",
        s(from),
        "--site",
        "demo",
        "--out",
        s(out),
    ])
}

fn ingest_sample(out: &Path) -> Output {
    ingest_into(&sample(), out)
}

fn json(o: &Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("stdout is JSON")
}

#[test]
fn ingest_summary_inspect_strata_on_the_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("store");
    let o = ingest_sample(&out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("99 records") && text.contains("initial_value_mismatch"),
        "{text}"
    );

    let m = json(&ecgfed(&["datasets", "summary", s(&out), "--json"]));
    assert_eq!(m["schema_version"], 2);
    assert_eq!(m["records"], 99);
    assert_eq!(m["site"], "demo");
    assert_eq!(m["settings"]["segmentation"]["mode"], "windows");
    let cinc = m["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "cinc2017")
        .unwrap();
    assert_eq!(cinc["records_by_raw_label"]["A"], 25);
    assert!(cinc["license"].as_str().unwrap().contains("PhysioNet"));

    let rows = json(&ecgfed(&[
        "datasets",
        "inspect",
        s(&out),
        "ludb/1",
        "--json",
    ]));
    let r = &rows[0];
    assert_eq!(
        (
            r["segment_id"].as_str(),
            r["label"].as_str(),
            r["age"].as_u64(),
            r["sex"].as_str()
        ),
        (Some("ludb/1@0"), Some("426177001"), Some(51), Some("F"))
    );
    assert_eq!(r["hash_verified"], true);
    assert_eq!(r["leads"].as_array().unwrap().len(), 12);

    let t = json(&ecgfed(&[
        "datasets",
        "strata",
        s(&out),
        "--by",
        "source,label",
        "--k",
        "3",
        "--json",
    ]));
    let af = t["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == serde_json::json!(["cinc2017", "164889003"]))
        .unwrap();
    assert_eq!(
        (af["records"].as_u64(), af["patients"].as_u64()),
        (Some(25), Some(25))
    );
    assert!(
        t["suppressed_cells"].as_u64().unwrap() > 0,
        "LUDB cells of 1-3 patients are withheld"
    );

    // Re-running into the same folder is refused; the store stays readable.
    let again = ingest_sample(&out);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert!(ecgfed(&["datasets", "summary", s(&out)]).status.success());

    // Unknown record: a clear error and non-zero exit.
    let missing = ecgfed(&["datasets", "inspect", s(&out), "nope"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no record `nope`"));
}

#[test]
fn bad_files_are_reported_and_exit_is_non_zero_only_when_nothing_ingested() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mixed");
    std::fs::create_dir(&dir).unwrap();
    for f in ["HR03961.hea", "HR03961.mat"] {
        std::fs::copy(sample().join("cinc2021/ptb-xl").join(f), dir.join(f)).unwrap();
    }
    let hea = std::fs::read_to_string(dir.join("HR03961.hea")).unwrap();
    std::fs::write(dir.join("HR99999.hea"), hea.replace("HR03961", "HR99999")).unwrap(); // no .mat
    let out = tmp.path().join("store");
    let o = ingest_into(&dir, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(all.contains("HR99999.mat: No such file"), "{all}");
    assert!(
        all.contains("1 records") && all.contains("1 skipped"),
        "{all}"
    );

    std::fs::remove_file(dir.join("HR03961.hea")).unwrap();
    let o = ingest_into(&dir, &tmp.path().join("s2"));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("nothing could be ingested") && err.contains("HR99999.mat"),
        "{err}"
    );
    assert!(!tmp.path().join("s2").exists());
}

/// Acceptance: `ecgfed datasets ingest ../shared/ecg/cinc2017` → 1,200 records, N 727 / A 118 /
/// O 351 / ~ 4, and the 57 initial-value warnings in `summary --json`.
#[test]
fn cinc2017_acceptance() {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/ecg/cinc2017");
    if !d.is_dir() {
        assert!(
            std::env::var_os("ECGFED_REQUIRE_SHARED").is_none(),
            "{} missing",
            d.display()
        );
        eprintln!("shared ECG data not present: test not run");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("store");
    assert!(
        ecgfed(&["datasets", "ingest", s(&d), "--site", "s", "--out", s(&out)])
            .status
            .success()
    );
    let m = json(&ecgfed(&["datasets", "summary", s(&out), "--json"]));
    let c = &m["sources"][0];
    assert_eq!(c["records"], 1200);
    for (k, v) in [("N", 727), ("A", 118), ("O", 351), ("~", 4)] {
        assert_eq!(c["records_by_raw_label"][k], v, "{k}");
    }
    assert_eq!(c["warnings"]["initial_value_mismatch"]["count"], 57);
    assert_eq!(
        c["warnings"]["initial_value_mismatch"]["records"]
            .as_array()
            .unwrap()
            .len(),
        57
    );
}

#[test]
fn keys_generate_writes_a_0600_file_once() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("hospital-a.key");
    let v = json(&ecgfed(&["keys", "generate", "--out", s(&key), "--json"]));
    assert_eq!(v["public_key"].as_str().unwrap().len(), 96);
    assert_eq!(v["proof_of_possession"].as_str().unwrap().len(), 192);
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let shown = json(&ecgfed(&["keys", "show", s(&key), "--json"]));
    assert_eq!(shown["public_key"], v["public_key"]);
    let again = ecgfed(&["keys", "generate", "--out", s(&key)]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("File exists"));
}

/// Issue 23, item 9: `ecgfed --version` names the test machinery a build contains. This test
/// binary is built with the gateway's fault hook (the tamper test needs it), so it must say
/// so; the shipped build must name none, which `scripts/check-release.sh` (run by `.ci/run`)
/// checks on a plain `cargo build --release`, with the binary's bytes.
#[test]
fn the_version_names_the_test_machinery_built_in() {
    let o = ecgfed(&["--version"]);
    assert!(o.status.success());
    let v = String::from_utf8_lossy(&o.stdout);
    assert!(
        v.starts_with(&format!("ecgfed {}", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    assert!(
        v.contains("test build: fault-injection") && v.contains("not for deployment"),
        "{v}"
    );
}
