//! End-to-end test of the trainer with real processes on loopback: a ledger and two gateways
//! (LUDB and CinC 2021 Georgia from `../shared/ecg`), a data scientist running
//! `ecgfed cohort plan` and `ecgfed train` (a few steps), then `ecgfed predict` on a record
//! from disk. Checks: sex balance of the plan (equal per class unless a shortfall is
//! explained), achieved counts equal to the plan per cell, ModelTrained on the ledger with the
//! SHA-256 of the weights file, the same spec and seed rebuilding identical slice roots and
//! identical data, a different spec under the same cohort id refused, `audit verify` passing.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::fed::{Fed, federation, payloads, run, run_fails, s, sites};
use ecgfed_proto::v1::SubjectKind;
use ecgfed_proto::v1::entry_body::Payload;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn write_federation(fed: &Fed) {
    let mut t = format!(
        "ledger = \"{}\"\ntrust = \"ledger/trust.json\"\nmember = \"sci\"\nkey_file = \"sci.key\"\n",
        fed.ledger_addr
    );
    for (i, (_, addr, _)) in fed.gateways.iter().enumerate() {
        let site = if i == 0 { "site-a" } else { "site-b" };
        t.push_str(&format!(
            "[[gateways]]\nsite = \"{site}\"\naddress = \"{addr}\"\n"
        ));
    }
    std::fs::write(fed.dir.join("federation.toml"), t).unwrap();
}

const SPEC: &str = r#"
purpose = "trainer end-to-end test: sex-balanced rhythm cohort"
cohort_id = "e2e-rhythm"
seed = 7
federation = "federation.toml"
targets = "balanced"

[balance]
by = ["sex"]

[signal]
lead = "II"
sample_rate = 100
window_secs = 10

[train]
epochs = 2
max_steps_per_epoch = 3
batch_size = 8
channels = [8, 16]
kernel = 5
val_fraction = 0.25
"#;

/// The rows of an `--export-windows` folder.
fn exported(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("rows.jsonl"))
        .unwrap()
        .lines()
        .map(json)
        .collect()
}

fn write_spec(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Planned segments per (class, sex) from the plan's cells.
fn by_class_sex(cells: &[Value]) -> BTreeMap<(String, String), u64> {
    let mut m = BTreeMap::new();
    for c in cells {
        *m.entry((
            c["class"].as_str().unwrap().to_string(),
            c["sex"].as_str().unwrap().to_string(),
        ))
        .or_insert(0) += c["count"].as_u64().unwrap();
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_train_record_and_rebuild() {
    let fed = federation();
    write_federation(&fed);
    let spec = fed.dir.join("spec.toml");
    std::fs::write(&spec, SPEC).unwrap();

    // Dry run: nothing on the ledger; the plan is sex-balanced per class where counts allow.
    let size0 = fed.ledger_size().await;
    let dry = json(&run(&[
        "cohort",
        "plan",
        "--spec",
        s(&spec),
        "--dry-run",
        "--json",
    ]));
    assert_eq!(fed.ledger_size().await, size0);
    assert_eq!(dry["created"], false);
    let cells = dry["plan"]["cells"].as_array().unwrap().clone();
    assert!(!cells.is_empty());
    let shortfalls: Vec<String> = dry["plan"]["shortfalls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let per = by_class_sex(&cells);
    let classes: std::collections::BTreeSet<&String> = per.keys().map(|k| &k.0).collect();
    assert!(classes.len() >= 2, "{per:?}");
    let mut balanced_classes = 0;
    for class in classes {
        let m = per.get(&(class.clone(), "M".into())).copied().unwrap_or(0);
        let f = per.get(&(class.clone(), "F".into())).copied().unwrap_or(0);
        if m.abs_diff(f) <= 1 {
            balanced_classes += 1;
        } else {
            let short = if m < f { "M" } else { "F" };
            assert!(
                shortfalls
                    .iter()
                    .any(|l| l.contains(&format!("class {class} sex={short}"))),
                "class {class}: M {m} F {f} without a shortfall explaining it: {shortfalls:?}"
            );
        }
    }
    assert!(balanced_classes >= 1, "{per:?}");
    // "balanced": every class with supply gets the same total.
    let targets = dry["plan"]["targets"].as_array().unwrap();
    let planned: Vec<u64> = targets
        .iter()
        .filter(|t| t[2].as_u64().unwrap() > 0)
        .map(|t| t[1].as_u64().unwrap())
        .collect();
    assert!(planned.windows(2).all(|w| w[0] == w[1]), "{targets:?}");

    // Train: plan → CohortCreated → pulls → a few steps → ModelTrained.
    let out1 = fed.dir.join("model-1");
    let r1 = json(&run(&[
        "train",
        "--spec",
        s(&spec),
        "--out",
        s(&out1),
        "--json",
    ]));
    let card = &r1["card"];
    let sheet = r1["datasheet"]["cells"].as_array().unwrap();
    for c in sheet {
        let (p, a) = (
            c["planned"].as_u64().unwrap(),
            c["achieved"].as_u64().unwrap(),
        );
        assert!(p.abs_diff(a) <= 1, "datasheet cell {c}");
    }
    let sheet_total: u64 = sheet.iter().map(|c| c["planned"].as_u64().unwrap()).sum();
    let plan_total: u64 = cells.iter().map(|c| c["count"].as_u64().unwrap()).sum();
    assert_eq!(sheet_total, plan_total);
    let rows: u64 = card["rows"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(rows, plan_total);
    let weights = std::fs::read(out1.join("model.safetensors")).unwrap();
    let wsha = hex::encode(Sha256::digest(&weights));
    assert_eq!(card["weights_sha256"], wsha.as_str());
    for f in [
        "model-card.json",
        "metrics.json",
        "datasheet.md",
        "learning-curves.svg",
    ] {
        assert!(out1.join(f).is_file(), "{f} missing");
    }
    let model_id = card["model_id"].as_str().unwrap();
    assert_eq!(model_id, format!("model-{}", &wsha[..16]));

    // ModelTrained is on the ledger, proven, with the weights' hash and the cohort.
    let mut ledger = fed.ledger_client().await;
    let trained: Vec<_> = payloads(&mut ledger, SubjectKind::Model, model_id)
        .await
        .into_iter()
        .filter_map(|p| match p {
            Payload::ModelTrained(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(trained.len(), 1);
    let m = &trained[0];
    assert_eq!(m.weights_sha256, Sha256::digest(&weights).to_vec());
    assert_eq!(m.cohort_id, "e2e-rhythm");
    assert!(!m.code_version.is_empty());
    let metrics: Value = serde_json::from_str(&m.metrics_json).unwrap();
    assert!(metrics["validation"]["windows"]["classes"].is_array());
    // The protocol: a test part, scored once, as many rows as the card counts for it.
    assert_eq!(
        metrics["test"]["windows"]["n"].as_u64(),
        card["rows"]["test"].as_u64(),
        "{metrics}"
    );
    assert!(card["rows"]["test"].as_u64().unwrap() > 0, "{card}");
    let hyper: Value = serde_json::from_str(&m.hyperparameters_json).unwrap();
    assert_eq!(hyper["data_sha256"], card["data_sha256"]);

    // Same spec and seed again: the cohort is reused, the slices are the same (roots on the
    // ledger) and the assembled data is byte-identical.
    let out2 = fed.dir.join("model-2");
    let export = fed.dir.join("export-2");
    let r2 = json(&run(&[
        "train",
        "--spec",
        s(&spec),
        "--out",
        s(&out2),
        "--json",
        "--export-windows",
        s(&export),
    ]));
    // The exported windows are the run's rows, part by part, 1,000 samples each (100 Hz × 10 s).
    let rows = exported(&export);
    for part in ["train", "validation", "test"] {
        let n = rows.iter().filter(|r| r["part"] == part).count() as u64;
        assert_eq!(Some(n), r2["card"]["rows"][part].as_u64(), "{part}");
    }
    let meta = std::fs::metadata(export.join("windows.f32")).unwrap();
    assert_eq!(meta.len(), rows.len() as u64 * 1000 * 4);
    // Pulled rows on disk: the owner's only.
    use std::os::unix::fs::PermissionsExt;
    for f in ["windows.f32", "rows.jsonl"] {
        let mode = std::fs::metadata(export.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }

    // train_sites: one site's training and validation parts train; the other gives its test
    // part only. The other is the site with test rows in the pooled run: test groups are
    // counted per site and class, so another cohort of the same plan has as many.
    let test_rows = |site: &str| {
        rows.iter()
            .filter(|r| r["site"] == site && r["part"] == "test")
            .count()
    };
    let (trains, other) = if test_rows("site-b") >= test_rows("site-a") {
        ("site-a", "site-b")
    } else {
        ("site-b", "site-a")
    };
    assert!(test_rows(other) > 0, "no test rows at either site");
    let alone = fed.dir.join("alone.toml");
    std::fs::write(
        &alone,
        SPEC.replace("e2e-rhythm", "e2e-rhythm-alone").replace(
            "[train]\n",
            &format!("[train]\ntrain_sites = [\"{trains}\"]\n"),
        ),
    )
    .unwrap();
    let export_a = fed.dir.join("export-alone");
    run(&[
        "train",
        "--spec",
        s(&alone),
        "--out",
        s(&fed.dir.join("model-alone")),
        "--json",
        "--export-windows",
        s(&export_a),
    ]);
    let rows_a = exported(&export_a);
    let of = |site: &str, part: &str| {
        rows_a
            .iter()
            .filter(|r| r["site"] == site && r["part"] == part)
            .count()
    };
    assert!(of(trains, "train") > 0);
    assert!(of(other, "test") > 0);
    assert_eq!((of(other, "train"), of(other, "validation")), (0, 0));
    let err = run_fails(&[
        "cohort",
        "plan",
        "--spec",
        s(&write_spec(
            &fed.dir,
            "bad-sites.toml",
            &SPEC.replace("[train]\n", "[train]\ntrain_sites = [\"site-z\"]\n"),
        )),
    ]);
    assert!(
        err.contains("train_sites") && err.contains("site-z"),
        "{err}"
    );
    assert_eq!(
        r2["card"]["cohort_ledger_index"],
        card["cohort_ledger_index"]
    );
    assert_eq!(r2["card"]["slices"], card["slices"]);
    assert_eq!(r2["card"]["data_sha256"], card["data_sha256"]);
    let roots: Vec<&str> = card["slices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["root"].as_str().unwrap())
        .collect();
    assert_eq!(roots.len(), 2);

    // Another spec under the same cohort id is refused, naming the cohort.
    let other = fed.dir.join("other.toml");
    std::fs::write(&other, SPEC.replace("seed = 7", "seed = 8")).unwrap();
    let err = run_fails(&["cohort", "plan", "--spec", s(&other)]);
    assert!(
        err.contains("e2e-rhythm") && err.contains("already on the ledger"),
        "{err}"
    );

    // Predict a record from disk with the saved model.
    let (ludb, _, _) = sites();
    let rec = first_header(&ludb.join("data"));
    let p = json(&run(&["predict", "--model", s(&out1), "--json", s(&rec)]));
    let probs: Vec<f64> = p[0]["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(probs.len(), 4);
    assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-4);
    assert!(["N", "A", "O", "~"].contains(&p[0]["class"].as_str().unwrap()));
    assert_eq!(p[0]["windows"], 1);
    // Every reader's files, and a record whose other signals are not ECG (a103l: II and V next
    // to PLETH in NU, which failed the whole record before): the model's lead II is read.
    let testdata = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/testdata");
    for f in [
        "wfdb-python/a103l.hea",
        "pydicom/waveform_ecg.dcm",
        "hl7-aecg/Example aECG.xml",
    ] {
        let p = json(&run(&[
            "predict",
            "--model",
            s(&out1),
            "--json",
            s(&testdata.join(f)),
        ]));
        let sum: f64 = p[0]["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!((sum - 1.0).abs() < 1e-4, "{f}: {p}");
        assert_eq!(p[0]["lead"], "II", "{f}");
    }
    // A tampered weights file is refused.
    let mut bad = weights.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    std::fs::write(out1.join("model.safetensors"), bad).unwrap();
    let err = run_fails(&["predict", "--model", s(&out1), s(&rec)]);
    assert!(err.contains("differs from the model card"), "{err}");

    // The ledger verifies as a whole.
    let audit = json(&run(&[
        "audit",
        "verify",
        "--remote",
        &fed.ledger_addr,
        "--checkpoint",
        s(&fed.dir.join("ledger/trust.json")),
        "--json",
    ]));
    assert_eq!(audit["ok"], true, "{audit}");
}

fn first_header(dir: &Path) -> std::path::PathBuf {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "hea"))
        .collect();
    v.sort();
    v.into_iter().next().unwrap()
}
