//! The README's first command, end to end: `ecgfed demo --data DIR` (ledger + three gateways
//! as real processes on loopback, over the embedded sample), then the regulator's side:
//! - the lineage of the demo's model names exactly the slices, dataset versions and sites the
//!   gateways themselves recorded as served (read from each gateway's own key store);
//! - the proof bundle verifies offline and fails after any single-byte change;
//! - the PROV-JSON and OpenLineage exports validate against the official JSON schemas shipped
//!   in audit/schemas (and our facets against their own schemas);
//! - the report page is self-contained;
//! - after one patient is erased at one gateway, `audit lineage --erased` lists the model and
//!   `--record` traces the erased record to it;
//! - Ctrl-C during the demo stops every process it started.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::fed::{BIN, run, run_fails, s};
use common::{assert_valid, schema};
use ecgfed_gateway::server::KeyStore;
use ecgfed_gateway::server::SliceRecord;
use serde_json::Value;

/// What each gateway recorded for the demo cohort's slice, from its own key store.
fn served_by_gateways(data: &Path) -> Vec<SliceRecord> {
    let mut v = Vec::new();
    for site in ["site-a", "site-b", "site-c"] {
        let ks = KeyStore::open(&data.join(site).join("gw")).unwrap();
        let raw = ks
            .slice(&format!("demo-rhythm/{site}"))
            .unwrap()
            .unwrap_or_else(|| panic!("{site} recorded no slice of the demo cohort"));
        v.push(serde_json::from_slice(&raw).unwrap());
    }
    v
}

#[test]
fn demo_then_audit() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("demo");
    let summary: Value =
        serde_json::from_str(&run(&["demo", "--data", s(&data), "--json"])).unwrap();
    let model = summary["model_id"].as_str().unwrap().to_string();
    // The regulator's report verified a checkpoint cosigned by a quorum of the hospitals.
    let cosigners = summary["witnessed_checkpoint"]["cosigners"]
        .as_array()
        .unwrap_or_else(|| panic!("no witnessed checkpoint in {summary}"));
    assert!(cosigners.len() >= 2, "{summary}");
    assert!(
        cosigners
            .iter()
            .all(|c| ["hosp-a", "hosp-b", "hosp-c"].contains(&c.as_str().unwrap())),
        "{summary}"
    );
    // Every gateway served TLS only (its certificate made by the demo), so the ledger reached
    // the cosigners above, and the scientist its slices, over TLS.
    for site in ["site-a", "site-b", "site-c"] {
        let cfg = std::fs::read_to_string(data.join(site).join("gateway.toml")).unwrap();
        assert!(cfg.contains("[tls]"), "{site}: {cfg}");
        use std::os::unix::fs::PermissionsExt;
        let key = std::fs::metadata(data.join(site).join("gw-key.pem")).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o600, "{site}");
    }
    let report = Path::new(summary["report"].as_str().unwrap()).to_path_buf();
    let bundle_path = report.with_file_name("bundle.json");
    let ledger = data.join("ledger");

    // Lineage = what the gateways recorded as served.
    let served = served_by_gateways(&data);
    let l: Value = serde_json::from_str(&run(&[
        "audit",
        "lineage",
        "--data",
        s(&ledger),
        "--model",
        &model,
        "--json",
    ]))
    .unwrap();
    let got: BTreeSet<(String, String, u64, String)> = l["slices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["slice_id"].as_str().unwrap().to_string(),
                x["dataset_id"].as_str().unwrap().to_string(),
                x["rows"].as_u64().unwrap(),
                x["slice_root"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String, u64, String)> = served
        .iter()
        .map(|r| {
            (
                r.slice_id.clone(),
                r.dataset_id.clone(),
                r.segments.len() as u64,
                r.root.to_hex(),
            )
        })
        .collect();
    assert_eq!(
        got, want,
        "lineage slices differ from what the gateways served"
    );
    for x in l["slices"].as_array().unwrap() {
        let served = x["served"].as_array().unwrap();
        assert_eq!(served.len(), 1, "{x}");
        assert_eq!(served[0]["rows"], x["rows"]);
        assert_eq!(served[0]["requester"], "sci");
    }
    let sites: BTreeSet<&str> = l["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["site"].as_str().unwrap())
        .collect();
    assert_eq!(sites, BTreeSet::from(["site-a", "site-b", "site-c"]));
    let datasets: BTreeSet<String> = l["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["dataset_id"].as_str().unwrap().to_string())
        .collect();
    let want_ds: BTreeSet<String> = served.iter().map(|r| r.dataset_id.clone()).collect();
    assert_eq!(datasets, want_ds);

    // The bundle verifies offline, pinned to the regulator's trust file ...
    let out = run(&[
        "audit",
        "verify-bundle",
        s(&bundle_path),
        "--trust",
        s(&data.join("regulator/trust.json")),
    ]);
    assert!(out.contains("OK"), "{out}");
    // ... and any single-byte change breaks it (every 7th byte, and every byte of the first
    // and last 512: format, key, checkpoint, the final lineage and newline).
    let bytes = std::fs::read(&bundle_path).unwrap();
    ecgfed_audit::bundle::verify(&bytes, None).unwrap();
    let n = bytes.len();
    let positions: BTreeSet<usize> = (0..n)
        .step_by(7)
        .chain(0..512.min(n))
        .chain(n.saturating_sub(512)..n)
        .collect();
    for &i in &positions {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        assert!(
            ecgfed_audit::bundle::verify(&b, None).is_err(),
            "bundle still verifies after flipping byte {i} ({:?})",
            bytes[i] as char
        );
    }

    // Exports against the official schemas.
    let prov: Value = serde_json::from_str(&run(&[
        "audit",
        "export",
        "--data",
        s(&ledger),
        "--format",
        "prov-json",
    ]))
    .unwrap();
    assert_valid(&schema("prov-json.schema.json"), &prov, "PROV-JSON export");
    for kind in [
        "entity",
        "activity",
        "agent",
        "wasGeneratedBy",
        "used",
        "wasDerivedFrom",
    ] {
        assert!(
            prov[kind].as_object().is_some_and(|m| !m.is_empty()),
            "PROV export lacks {kind}"
        );
    }
    let ol_text = run(&[
        "audit",
        "export",
        "--data",
        s(&ledger),
        "--format",
        "openlineage",
    ]);
    let ol = schema("openlineage/OpenLineage.json");
    let facets = [
        (
            "ecgfed_demographics",
            schema("facets/EcgfedDemographicsDatasetFacet.json"),
        ),
        (
            "ecgfed_consent",
            schema("facets/EcgfedConsentDatasetFacet.json"),
        ),
    ];
    let run_facet = schema("facets/EcgfedLedgerEntryRunFacet.json");
    let events: Vec<Value> = ol_text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // 3 registrations + 3 selections + 3 transfers + 1 training.
    assert_eq!(events.len(), 10, "{ol_text}");
    for e in &events {
        assert_valid(&ol, e, "OpenLineage event");
        assert_valid(
            &run_facet,
            &e["run"]["facets"]["ecgfed_ledgerEntry"],
            "ledger entry facet",
        );
        for ds in e["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .chain(e["outputs"].as_array().unwrap())
        {
            for (name, v) in &facets {
                if let Some(f) = ds["facets"].get(*name) {
                    assert_valid(v, f, name);
                }
            }
        }
    }

    // The report: self-contained, verified, names the model and every slice.
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.contains(&model) && html.contains("Verified."));
    assert!(
        html.contains("witnessed: cosigned by"),
        "the report names the cosigners"
    );
    for r in &served {
        assert!(html.contains(&r.slice_id), "report lacks {}", r.slice_id);
    }
    assert!(
        !html.contains("<script")
            && !html.contains("src=\"http")
            && !html.contains("href=\"http")
            && !html.contains("url(http")
    );

    // Erase one patient of site-b's slice at that gateway (stopped: it works on its folders
    // and writes RecordsErased through the restarted ledger).
    let site_b = served
        .iter()
        .find(|r| r.slice_id.ends_with("site-b"))
        .unwrap();
    let addr = summary["ledger_addr"].as_str().unwrap();
    let restarted = common::erase_after_demo(&data, addr, site_b);
    let trust = data.join("regulator/trust.json");
    // The ledger serves TLS only, its certificate in every party's trust file: the same trust
    // file without it gets nowhere.
    let mut plain: Value = serde_json::from_str(&std::fs::read_to_string(&trust).unwrap()).unwrap();
    assert!(
        plain["tls_ca"]
            .as_str()
            .is_some_and(|c| c.contains("BEGIN CERTIFICATE")),
        "{plain}"
    );
    plain.as_object_mut().unwrap().remove("tls_ca");
    let plain_path = tmp.path().join("plain-trust.json");
    std::fs::write(&plain_path, plain.to_string()).unwrap();
    run_fails(&[
        "audit",
        "verify",
        "--remote",
        addr,
        "--checkpoint",
        s(&plain_path),
    ]);
    // `ecgfed audit lineage --remote ADDR --checkpoint TRUST ARGS... --json`.
    let audit_lineage = |extra: &[&str]| {
        let mut args = vec![
            "audit",
            "lineage",
            "--remote",
            addr,
            "--checkpoint",
            s(&trust),
        ];
        args.extend_from_slice(extra);
        args.push("--json");
        run(&args)
    };
    // The public ledger does not tell which slices held the erased patient: without the
    // hospital's disclosure the erasure reaches no model, and the model's lineage says that
    // an erasure of its site-b dataset was not disclosed.
    let public = audit_lineage(&["--erased"]);
    assert!(public.trim().is_empty(), "{public}");
    let undisclosed: Value = serde_json::from_str(&audit_lineage(&["--model", &model])).unwrap();
    let b = undisclosed["slices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["site"] == "site-b")
        .unwrap();
    assert_eq!(
        (
            &b["erased_since"][0]["undisclosed"],
            &b["erased_since"][0]["in_slice"]
        ),
        (&Value::Bool(true), &Value::from(0)),
        "{b}"
    );
    // With the disclosure site-b's gateway wrote (`gw/erasures/`), checked against the ledger.
    let disclosures = data.join("site-b/gw/erasures");
    assert_eq!(std::fs::read_dir(&disclosures).unwrap().count(), 1);
    let lineage = |query: &[&str]| {
        let mut args = vec!["--disclosures", s(&disclosures)];
        args.extend_from_slice(query);
        audit_lineage(&args)
    };
    let erased = lineage(&["--erased"]);
    common::assert_erasure_reaches(&erased, "site-b", &model);
    let commitment = &site_b.commitments[0].to_hex();
    let by_record = lineage(&["--record", commitment]);
    assert!(
        by_record.contains(&model),
        "--record {commitment}: {by_record}"
    );
    let after: Value = serde_json::from_str(&lineage(&["--model", &model])).unwrap();
    let b_slice = after["slices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["site"] == "site-b")
        .unwrap();
    assert!(
        b_slice["erased_since"][0]["in_slice"].as_u64().unwrap() >= 1,
        "{b_slice}"
    );
    restarted.stop();
    run(&["audit", "verify", "--data", s(&ledger)]);
}

/// Ctrl-C in the middle of the demo (while it trains) stops every process it started: the
/// demo exits with 130 and the ledger's store and every gateway's key store can be opened
/// again (their processes released the RocksDB locks).
#[test]
fn demo_stops_everything_on_interrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("demo");
    let mut child = Command::new(BIN)
        .args(["demo", "--data", s(&data)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the demo's standard error on a thread for as long as it runs (a closed pipe would
    // make its messages fail), and wait here until it says it is training.
    let err = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in err.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut said = Vec::new();
    while let Ok(line) = rx.recv() {
        let training = line.contains("planning the balanced cohort");
        said.push(line);
        if training {
            break;
        }
    }
    assert!(
        said.iter()
            .any(|l| l.contains("planning the balanced cohort")),
        "the demo never reached training: {said:?}"
    );
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    said.extend(rx.try_iter());
    assert_eq!(status.code(), Some(130), "{said:?}");
    ecgfed_audit::source::StoreSource::open(&data.join("ledger/db"))
        .unwrap_or_else(|e| panic!("the ledger still holds its store: {e}"));
    for site in ["site-a", "site-b", "site-c"] {
        KeyStore::open(&data.join(site).join("gw"))
            .unwrap_or_else(|e| panic!("gateway {site} still holds its key store: {e}"));
    }
}
