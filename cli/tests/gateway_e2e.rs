//! End-to-end test of the gateway with real processes on loopback: one `ecgfed ledger serve`,
//! two `ecgfed gateway serve` over different sites of `../shared/ecg` (LUDB and CinC 2021
//! Georgia; the embedded sample's folders when the shared data is absent), and a scientist:
//! register → strata → CohortCreated → reserve → DoGet → every row verified → DataServed on
//! the ledger → `audit verify` passes. Also: access refusals (unsigned, replayed, expired,
//! unknown member, wrong role, wrong requester, erased records) leave nothing on the ledger;
//! no strata query recovers a suppressed cell; a gateway that alters one served sample is
//! caught by the client; erasure through the running gateway.

mod common;

use common::fed::*;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use arrow::array::AsArray;
use ecgfed_gateway::client::GatewayClient;
use ecgfed_gateway::client::{RequestSigner, add_headers};
use ecgfed_gateway::protocol::FLIGHT_PATH;
use ecgfed_gateway::protocol::SERVICE_PATH;
use ecgfed_ledger::entry::EntrySigner;
use ecgfed_ledger::keys::KeyPair;
use ecgfed_proto::v1::entry_body::Payload;
use ecgfed_proto::v1::gateway_service_client::GatewayServiceClient;
use ecgfed_proto::v1::{
    AllocationCell, CohortCreated, ListDatasetsRequest, ReserveSliceRequest, StrataDimension,
    SubjectKind,
};
use prost::Message;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_end_to_end() {
    let mut fed = federation();
    let mut ledger = fed.ledger_client().await;

    // Registration: one DatasetRegistered per site, with the catalog's root.
    for (i, site) in ["site-a", "site-b"].iter().enumerate() {
        let ds = fed
            .gateway(i, "sci")
            .await
            .list_datasets()
            .await
            .unwrap()
            .datasets;
        assert_eq!(ds.len(), 1);
        let d = &ds[0];
        assert_eq!(d.site, *site);
        let regs = payloads(&mut ledger, SubjectKind::Dataset, &d.dataset_id).await;
        let Some(Payload::DatasetRegistered(r)) = regs.last() else {
            panic!("no registration")
        };
        assert_eq!(
            (r.version, &r.commitment_root, r.segment_count),
            (1, &d.commitment_root, d.segments)
        );
    }
    // A restart registers nothing new (idempotent).
    let size = fed.ledger_size().await;
    fed.restart_gateway(0, &[]);
    assert_eq!(
        fed.ledger_size().await,
        size,
        "restart re-registered an unchanged dataset"
    );

    // Cohort, reservation, verified pull at both sites: 3 segments a cell (k on the embedded
    // sample, whose visible cells may hold only k patients of one segment each).
    let allocation = create_cohort(&fed, "sci", "cohort-1", 2, fed.k.min(3), "").await;
    assert!(allocation.len() >= 3, "{allocation:?}");
    let mut slices = Vec::new();
    for i in 0..2 {
        let mut g = fed.gateway(i, "sci").await;
        let r = g
            .reserve(ReserveSliceRequest {
                cohort_id: "cohort-1".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let site = ["site-a", "site-b"][i];
        let want: u64 = allocation
            .iter()
            .filter(|a| a.site == site)
            .map(|a| a.count)
            .sum();
        assert_eq!(r.rows, want);
        // Reserving again gives the same slice (no second ledger entry).
        let again = g
            .reserve(ReserveSliceRequest {
                cohort_id: "cohort-1".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            (again.slice_id.as_str(), again.ledger_index),
            (r.slice_id.as_str(), r.ledger_index)
        );
        let mut labels = BTreeMap::new();
        let mut ids = HashSet::new();
        let report = g
            .pull(&r.slice_id, &mut ledger, |b| {
                let l = b.column_by_name("label").unwrap().as_string::<i32>();
                let sid = b.column_by_name("segment_id").unwrap().as_string::<i32>();
                let p = b.column_by_name("pseudonym").unwrap().as_string::<i32>();
                for j in 0..b.num_rows() {
                    *labels.entry(l.value(j).to_string()).or_insert(0u64) += 1;
                    ids.insert(sid.value(j).to_string());
                    assert_eq!(p.value(j).len(), 64, "pseudonym is a keyed hash");
                }
                assert!(b.column_by_name("patient").is_none());
            })
            .await
            .unwrap();
        assert_eq!((report.rows, report.erased), (want, 0));
        assert!(report.signal_bytes > 0);
        for a in allocation.iter().filter(|a| a.site == site) {
            assert!(
                labels.get(&a.label).copied().unwrap_or(0) >= a.count,
                "{labels:?}"
            );
        }
        assert_eq!(ids.len() as u64, want);
        let served = payloads(&mut ledger, SubjectKind::Slice, &r.slice_id).await;
        let ds: Vec<_> = served
            .iter()
            .filter_map(|p| match p {
                Payload::DataServed(d) => Some(d),
                _ => None,
            })
            .collect();
        assert_eq!(ds.len(), 1, "one DataServed per completed DoGet");
        assert_eq!(
            (ds[0].rows, ds[0].requester.as_str(), &ds[0].slice_root),
            (want, "sci", &r.slice_root)
        );
        assert!(ds[0].bytes >= report.signal_bytes);
        slices.push(r);
    }

    plain_flight_client(
        &fed,
        &slices[1].slice_id,
        slices[1].rows,
        &slices[1].slice_root,
    );
    access_refusals(&fed, &slices[0].slice_id).await;
    k_anonymity(&fed).await;

    // Tamper: gateway A restarted with the fault hook alters one served sample.
    fed.restart_gateway(0, &[("ECGFED_GATEWAY_FAULT", "alter-sample")]);
    let err = fed
        .gateway(0, "sci")
        .await
        .pull(&slices[0].slice_id, &mut ledger, |_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("do not hash to its content hash") && err.contains("segment "),
        "{err}"
    );
    // A gateway that withholds a row, announcing it erased (with its salt) though no erasure
    // of its site lists the leaf's token, is caught.
    fed.restart_gateway(0, &[("ECGFED_GATEWAY_FAULT", "withhold-row")]);
    let err = fed
        .gateway(0, "sci")
        .await
        .pull(&slices[0].slice_id, &mut ledger, |_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("announced erased but no RecordsErased entry"),
        "{err}"
    );
    fed.restart_gateway(0, &[]);

    minimised_rows(&fed, &mut ledger).await;

    // Erasure through the running gateway: a patient of slice A. Served rows name no record
    // or patient of the store; the test finds them in the store by their samples.
    let store_a = store_rows(&fed.dir.join("store-a"));
    let (mut first, mut second) = (None, None);
    fed.gateway(0, "sci")
        .await
        .pull(&slices[0].slice_id, &mut ledger, |b| {
            for seg in originals(b, &store_a) {
                let r = format!("{}/{}", seg.source, seg.patient);
                match &first {
                    None => first = Some(r),
                    Some(f) if second.is_none() && *f != r => second = Some(r),
                    _ => {}
                }
            }
        })
        .await
        .unwrap();
    let patient = first.unwrap();
    let size_before = fed.ledger_size().await;
    let out = run(&[&erase_cmd(&fed.gateways[0].2, &patient)[..], &["--json"]].concat());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["segments"].as_u64().unwrap() >= 1);
    assert!(
        fed.ledger_size().await >= size_before + 2,
        "RecordsErased and a new dataset version"
    );
    let report = fed
        .gateway(0, "sci")
        .await
        .pull(&slices[0].slice_id, &mut ledger, |b| {
            for seg in originals(b, &store_a) {
                let p = format!("{}/{}", seg.source, seg.patient);
                assert_ne!(p, patient, "an erased patient's row was served");
            }
        })
        .await
        .unwrap();
    assert!(report.erased >= 1);
    assert_eq!(report.rows + report.erased, slices[0].rows);
    erasure_is_private(&fed, &mut ledger, v["ledger_index"].as_u64().unwrap()).await;
    // Erasing again: nothing left to erase.
    let err = run_fails(&erase_cmd(&fed.gateways[0].2, &patient));
    assert!(err.contains("no records"), "{err}");
    offline_erasure(&mut fed, &second.unwrap()).await;

    approval_and_quota(&mut fed).await;
    revocation(&mut fed).await;
    tls_switch(&mut fed).await;

    // Everything on the ledger verifies offline.
    let ldir = fed.dir.join("ledger");
    for g in fed.gateways.iter_mut() {
        if let Some(c) = g.0.take() {
            stop(c);
        }
    }
    if let Some(c) = fed.ledger.take() {
        stop(c);
    }
    let out = run(&["audit", "verify", "--data", s(&ldir), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true, "{out}");
}

/// Gateway policy (issue 25): with `require_approval` a cohort gets no slice until its
/// hospital approved it (`ecgfed gateway approve`, CohortApproved on the ledger); over the
/// per-scientist quota, no slice either. Gateway 0 is restarted with each policy, then with
/// its own configuration again.
async fn approval_and_quota(fed: &mut Fed) {
    let cfg = fed.gateways[0].2.clone();
    let original = std::fs::read_to_string(&cfg).unwrap();
    let with_policy = |policy: &str| {
        std::fs::write(&cfg, format!("{original}\n[policy]\n{policy}\n")).unwrap();
    };
    with_policy("require_approval = true");
    fed.restart_gateway(0, &[]);
    create_cohort(fed, "sci", "needs-approval", 1, 2, "").await;
    let mut g = fed.gateway(0, "sci").await;
    assert_eq!(
        reserve_refused(&mut g, "needs-approval").await,
        Code::FailedPrecondition
    );
    let approve = [
        "gateway",
        "approve",
        "--config",
        s(&cfg),
        "--cohort",
        "needs-approval",
    ];
    let out = run(&approve);
    assert!(out.contains("CohortApproved at ledger entry"), "{out}");
    let r = g
        .reserve(ReserveSliceRequest {
            cohort_id: "needs-approval".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.rows, 2);
    // A second approval of the same cohort is refused by the ledger.
    let err = run_fails(&approve);
    assert!(err.contains("already approved"), "{err}");
    // sci holds slices here already: a quota of one slice per period leaves no room.
    with_policy("quota_cohorts = 1");
    fed.restart_gateway(0, &[]);
    create_cohort(fed, "sci", "over-quota", 1, 2, "").await;
    let mut g = fed.gateway(0, "sci").await;
    assert_eq!(
        reserve_refused(&mut g, "over-quota").await,
        Code::ResourceExhausted
    );
    // Rows: 2 more rows than a quota of 3 allows once 2 are taken.
    with_policy("quota_rows = 3");
    fed.restart_gateway(0, &[]);
    let mut g = fed.gateway(0, "sci").await;
    assert_eq!(
        reserve_refused(&mut g, "over-quota").await,
        Code::ResourceExhausted
    );
    std::fs::write(&cfg, original).unwrap();
    fed.restart_gateway(0, &[]);
}

/// A member revoked by the hospitals (`ecgfed ledger revoke`, issue 25) is refused by both
/// gateways (within their member refresh interval), and by a restarted gateway; one hospital's
/// approval alone revokes nobody.
async fn revocation(fed: &mut Fed) {
    let ledger = fed.ledger_addr.clone();
    let trust = fed.dir.join("ledger/trust.json");
    let key = |m: &str| format!("{m}={}", fed.key(m).display());
    assert_eq!(
        strata(fed, 0, "sci2").await,
        None,
        "sci2 is a member before"
    );
    // One of two hospitals is not a majority.
    let err = run_fails(&[
        "ledger",
        "revoke",
        "--ledger",
        &ledger,
        "--trust",
        s(&trust),
        "--member",
        "sci2",
        "--signer",
        &key("hosp-a"),
        "--approver",
        &key("hosp-a"),
    ]);
    assert!(err.contains("majority"), "{err}");
    // hosp-b's approval made apart and handed over as a signature.
    let approval = run(&[
        "ledger",
        "approve-revocation",
        "--trust",
        s(&trust),
        "--member",
        "sci2",
        "--key",
        s(&fed.key("hosp-b")),
    ]);
    let out = run(&[
        "ledger",
        "revoke",
        "--ledger",
        &ledger,
        "--trust",
        s(&trust),
        "--member",
        "sci2",
        "--reason",
        "key lost",
        "--signer",
        &key("hosp-a"),
        "--approver",
        &key("hosp-a"),
        "--approver",
        &format!("hosp-b:{}", approval.trim()),
    ]);
    assert!(out.contains("member sci2 revoked"), "{out}");
    // Both gateways refuse sci2 once their members are refreshed (2 s at most).
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    for i in 0..2 {
        assert_eq!(
            strata(fed, i, "sci2").await,
            Some(Code::Unauthenticated),
            "gateway {i}"
        );
    }
    // sci is untouched; a restarted gateway still refuses sci2.
    assert_eq!(strata(fed, 0, "sci").await, None);
    fed.restart_gateway(1, &[]);
    assert_eq!(strata(fed, 1, "sci2").await, Some(Code::Unauthenticated));
}

/// The refusal code of a strata query by `who` at gateway `i` (None: answered).
async fn strata(fed: &Fed, i: usize, who: &str) -> Option<Code> {
    fed.gateway(i, who)
        .await
        .strata("", &[])
        .await
        .err()
        .map(code)
}

/// A plain Arrow Flight client (pyarrow, from scripts/setup.sh's .venv-test) reads a granted
/// slice with the ticket and headers of `ecgfed gateway sign-do-get` (docs/flight.md).
fn plain_flight_client(fed: &Fed, slice_id: &str, rows: u64, root: &[u8]) {
    let root_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root_dir.join(".venv-test/bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/setup.sh (it installs pyarrow for this test)",
        python.display()
    );
    let headers = run(&[
        "gateway",
        "sign-do-get",
        "--member",
        "sci",
        "--key",
        s(&fed.key("sci")),
        "--site",
        "site-b",
        "--slice",
        slice_id,
    ]);
    let hfile = fed.dir.join("headers.json");
    std::fs::write(&hfile, headers).unwrap();
    let pull = || {
        Command::new(&python)
            .arg(root_dir.join("scripts/flight_pull.py"))
            .arg(&fed.gateways[1].1)
            .arg(&hfile)
            .output()
            .unwrap()
    };
    let o = pull();
    assert!(
        o.status.success(),
        "pyarrow: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["rows"].as_u64(), Some(rows), "{v}");
    assert_eq!(v["slice_root"].as_str(), Some(hex::encode(root).as_str()));
    assert!(
        v["columns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "commitment")
    );
    assert!(v["signal_values"].as_u64().unwrap() > 0);
    // The same headers again: a replay, refused.
    let o = pull();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("replayed"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `ecgfed gateway erase` of `patient` at the gateway configured by `cfg`.
/// The rows of a site store, by their samples' digest, window start and length.
type StoreRows = std::collections::HashMap<([u8; 32], u64, u32), ecgfed_datasets::segment::Segment>;

fn store_rows(dir: &std::path::Path) -> StoreRows {
    let m = ecgfed_datasets::store::Manifest::read(dir).unwrap();
    let mut out = StoreRows::new();
    for f in &m.files {
        for b in ecgfed_datasets::store::read_file(dir, &f.name, None, None, 1024).unwrap() {
            for s in ecgfed_datasets::store::from_batch(&b, &dir.join(&f.name)).unwrap() {
                let seg = s.segment;
                let key = (
                    ecgfed_datasets::segment::signal_digest(&seg.signal),
                    seg.start_sample,
                    seg.n_samples,
                );
                out.insert(key, seg);
            }
        }
    }
    out
}

/// The store rows behind the rows of a served batch (found by their samples).
fn originals<'a>(
    b: &arrow::array::RecordBatch,
    rows: &'a StoreRows,
) -> Vec<&'a ecgfed_datasets::segment::Segment> {
    use arrow::datatypes::{Float32Type, UInt32Type, UInt64Type};
    let sig = b.column_by_name("signal").unwrap().as_list::<i32>();
    let start = b
        .column_by_name("start_sample")
        .unwrap()
        .as_primitive::<UInt64Type>();
    let n = b
        .column_by_name("n_samples")
        .unwrap()
        .as_primitive::<UInt32Type>();
    (0..b.num_rows())
        .map(|j| {
            let v = sig.value(j);
            let d =
                ecgfed_datasets::segment::signal_digest(v.as_primitive::<Float32Type>().values());
            rows.get(&(d, start.value(j), n.value(j)))
                .expect("a served row is a store row")
        })
        .collect()
}

/// One served row's identifiers and leaf, by its store row's segment id.
#[derive(Debug, Clone, PartialEq)]
struct Leaf {
    record_id: String,
    pseudonym: String,
    salt: Vec<u8>,
    commitment: Vec<u8>,
}

/// What leaves with a row (docs/flight.md "Served columns"): two cohorts of the very same rows
/// at site A get record ids, pseudonyms, salts and leaves of their own, none the store's and
/// none shared; segment ids are made of the served record id; ages are 90 at most; the slice
/// entries list their leaves in ascending order and share none.
async fn minimised_rows(fed: &Fed, ledger: &mut ecgfed_ledger::client::LedgerClient) {
    let t = strata_cells(fed, 0, "sci").await;
    // A whole visible cell, so that both cohorts hold every one of its rows.
    let cell = t
        .cells
        .iter()
        .filter(|c| c.segments <= 60)
        .max_by_key(|c| c.segments)
        .unwrap();
    let store = store_rows(&fed.dir.join("store-a"));
    let mut seen: Vec<BTreeMap<String, Leaf>> = Vec::new();
    let mut entries = Vec::new();
    for cohort in ["link-1", "link-2"] {
        let mut signer = EntrySigner::new("sci", KeyPair::read_file(&fed.key("sci")).unwrap());
        let e = signer.sign(Payload::CohortCreated(CohortCreated {
            cohort_id: cohort.into(),
            spec_sha256: vec![1; 32],
            allocation: vec![AllocationCell {
                site: "site-a".into(),
                label: cell.key[0].clone(),
                sex: cell.key[1].clone(),
                age_band: cell.key[2].clone(),
                count: cell.segments,
            }],
            seed: 42,
            purpose: "linkage test".into(),
            requester: "sci".into(),
            ..Default::default()
        }));
        fed.ledger_client().await.submit(e).await.unwrap();
        let mut g = fed.gateway(0, "sci").await;
        let r = g
            .reserve(ReserveSliceRequest {
                cohort_id: cohort.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut rows = BTreeMap::new();
        g.pull(&r.slice_id, ledger, |b| {
            let col = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
            let bin = |n: &str| b.column_by_name(n).unwrap().as_fixed_size_binary().clone();
            let (sid, rid, pseudo) = (col("segment_id"), col("record_id"), col("pseudonym"));
            let (salt, comm) = (bin("salt"), bin("commitment"));
            let age = b
                .column_by_name("age")
                .unwrap()
                .as_primitive::<arrow::datatypes::UInt8Type>()
                .clone();
            for (j, seg) in originals(b, &store).into_iter().enumerate() {
                let rid_j = rid.value(j);
                assert!(
                    rid_j.len() == 32 && rid_j.bytes().all(|c| c.is_ascii_hexdigit()),
                    "{rid_j}"
                );
                assert_ne!(
                    rid_j, seg.record_id,
                    "the store's record id left the gateway"
                );
                assert_eq!(
                    sid.value(j),
                    format!("{}/{rid_j}@{}", seg.source, seg.start_sample)
                );
                if let Some(a) = seg.age {
                    assert_eq!(age.value(j), a.min(90), "{}", seg.segment_id());
                }
                rows.insert(
                    seg.segment_id(),
                    Leaf {
                        record_id: rid_j.into(),
                        pseudonym: pseudo.value(j).into(),
                        salt: salt.value(j).to_vec(),
                        commitment: comm.value(j).to_vec(),
                    },
                );
            }
        })
        .await
        .unwrap();
        assert_eq!(rows.len() as u64, cell.segments);
        seen.push(rows);
        let Some(Payload::CohortSliceCommitted(c)) =
            payloads(ledger, SubjectKind::Slice, &r.slice_id)
                .await
                .into_iter()
                .next()
        else {
            panic!("no slice entry")
        };
        assert!(
            c.commitments.windows(2).all(|w| w[0] < w[1]),
            "slice leaves are not in ascending order"
        );
        entries.push(c);
    }
    assert_eq!(
        seen[0].keys().collect::<Vec<_>>(),
        seen[1].keys().collect::<Vec<_>>(),
        "both cohorts hold the same rows"
    );
    for (seg, a) in &seen[0] {
        let b = &seen[1][seg];
        assert_ne!(
            a.record_id, b.record_id,
            "{seg}: record ids link the cohorts"
        );
        assert_ne!(
            a.pseudonym, b.pseudonym,
            "{seg}: pseudonyms link the cohorts"
        );
        assert_ne!(a.salt, b.salt, "{seg}: salts link the cohorts");
        assert_ne!(a.commitment, b.commitment, "{seg}: leaves link the cohorts");
    }
    let other: HashSet<&Vec<u8>> = entries[1].commitments.iter().collect();
    assert!(entries[0].commitments.iter().all(|c| !other.contains(c)));
}

/// The erasure's entry names the patient's dataset commitments, which no slice lists, and
/// erased-leaf tokens padded to a power of two; the gateway's disclosure (0600) opens the
/// tokens for an auditor, and one that leaves a slice out is refused.
async fn erasure_is_private(
    fed: &Fed,
    ledger: &mut ecgfed_ledger::client::LedgerClient,
    index: u64,
) {
    let on_ledger = payloads(ledger, SubjectKind::Site, "site-a").await;
    let Some(Payload::RecordsErased(r)) = on_ledger
        .iter()
        .rev()
        .find(|p| matches!(p, Payload::RecordsErased(_)))
    else {
        panic!("no RecordsErased")
    };
    let n = r.erased_leaves.len();
    assert!(n >= 8 && n.is_power_of_two(), "{n} tokens");
    for p in &on_ledger {
        if let Payload::CohortSliceCommitted(c) = p {
            assert!(
                r.commitments.iter().all(|x| !c.commitments.contains(x)),
                "slice {} lists an erased dataset commitment",
                c.slice_id
            );
        }
    }
    let file = fed.dir.join(format!("gw-a/erasures/{index}.json"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let d: ecgfed_ledger::erasure::Disclosure =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(
        d.slices.iter().any(|s| s.slice_id == "cohort-1/site-a"),
        "{d:?}"
    );
    let trust = fed.dir.join("ledger/trust.json");
    let audit = |f: &std::path::Path| {
        let mut c = Command::new(BIN);
        c.args([
            "audit",
            "lineage",
            "--remote",
            &fed.ledger_addr,
            "--checkpoint",
            s(&trust),
            "--disclosures",
            s(f),
            "--site",
            "site-a",
            "--json",
        ]);
        c.output().unwrap()
    };
    let ok = audit(&file);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // One with a slice cut out, or a leaf listed twice (its rows counted twice), is refused.
    let mut cut = d.clone();
    cut.slices.retain(|s| s.slice_id != "cohort-1/site-a");
    let mut twice = d.clone();
    let leaf = twice.slices[0].leaves[0].clone();
    twice.slices[0].leaves.push(leaf);
    for (forged, needle) in [(cut, "leaves out"), (twice, "listed twice")] {
        let bad = fed.dir.join("forged-disclosure.json");
        std::fs::write(&bad, serde_json::to_vec(&forged).unwrap()).unwrap();
        let refused = audit(&bad);
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && err.contains(needle),
            "{needle}: {err}"
        );
    }
}

fn erase_cmd<'a>(cfg: &'a std::path::Path, patient: &'a str) -> [&'a str; 6] {
    ["gateway", "erase", "--config", s(cfg), "--patient", patient]
}

/// Erasure with the gateway stopped works on its folders directly; the restarted gateway
/// serves the new dataset version (one fewer patient) and registers nothing more.
async fn offline_erasure(fed: &mut Fed, patient: &str) {
    let before = fed.dataset(0, "sci").await;
    if let Some(c) = fed.gateways[0].0.take() {
        stop(c);
    }
    assert!(
        !fed.dir.join("gw-a/listening").exists(),
        "address file left behind"
    );
    let out = run(&[&erase_cmd(&fed.gateways[0].2, patient)[..], &["--json"]].concat());
    let e: serde_json::Value = serde_json::from_str(&out).unwrap();
    let erased = e["segments"].as_u64().unwrap();
    assert!(erased >= 1, "{out}");
    fed.restart_gateway(0, &[]);
    let size = fed.ledger_size().await;
    let after = fed.dataset(0, "sci").await;
    assert_eq!(after.version, before.version + 1);
    assert_eq!(after.segments + erased, before.segments);
    assert_ne!(after.commitment_root, before.commitment_root);
    fed.restart_gateway(0, &[]);
    assert_eq!(
        fed.ledger_size().await,
        size,
        "an unchanged dataset was registered again"
    );
}

/// TLS is a configuration switch: gateway B restarted with `[tls]` answers a client that
/// trusts its certificate, and refuses plain HTTP/2.
async fn tls_switch(fed: &mut Fed) {
    let (cert, key) = (fed.dir.join("gw-cert.pem"), fed.dir.join("gw-key.pem"));
    let o = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args(["-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (installed by scripts/setup.sh)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg = fed.gateways[1].2.clone();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text = text.replace(
        "[ledger]",
        "[tls]\ncert = \"gw-cert.pem\"\nkey = \"gw-key.pem\"\n[ledger]",
    );
    std::fs::write(&cfg, &text).unwrap();
    // A private key that others may read is refused (issue 23, item 10).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    if let Some(c) = fed.gateways[1].0.take() {
        stop(c);
    }
    let err = run_fails(&["gateway", "serve", "--config", s(&cfg)]);
    assert!(
        err.contains("gw-key.pem") && err.contains("too open"),
        "{err}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    fed.restart_gateway(1, &[]);
    let ca = std::fs::read(&cert).unwrap();
    let mut g =
        GatewayClient::connect_tls(&fed.gateways[1].1, "site-b", fed.signer("sci"), &ca, None)
            .await
            .unwrap();
    assert_eq!(g.list_datasets().await.unwrap().datasets.len(), 1);
    if let Ok(mut plain) =
        GatewayClient::connect(&fed.gateways[1].1, "site-b", fed.signer("sci")).await
    {
        assert!(
            plain.list_datasets().await.is_err(),
            "plain HTTP/2 answered on a TLS port"
        );
    }
    // `gateway erase` reaches the running gateway over TLS (issue 23, item 10): a record of
    // site B's input (in CinC 2021 a record is one patient, its id the record id).
    let (_, input_b, _) = sites();
    let mut stems: Vec<String> = std::fs::read_dir(&input_b)
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            let stem = p.file_stem()?.to_string_lossy().into_owned();
            (p.extension()? == "hea").then_some(stem)
        })
        .collect();
    stems.sort();
    let out = run(&[&erase_cmd(&cfg, &stems[0])[..], &["--json"]].concat());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["segments"].as_u64().unwrap() >= 1, "{v}");
}

/// Each refused request leaves the ledger as it was.
async fn access_refusals(fed: &Fed, slice_id: &str) {
    let before = fed.ledger_size().await;
    let addr = format!("http://{}", fed.gateways[0].1);
    let mut raw = GatewayServiceClient::connect(addr.clone()).await.unwrap();
    let method = format!("{SERVICE_PATH}ListDatasets");
    // Unsigned.
    let e = raw.list_datasets(ListDatasetsRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("not signed"), "{e:?}");
    // Replayed.
    let sci = fed.signer("sci");
    let body = ListDatasetsRequest {}.encode_to_vec();
    let h = sci.headers("site-a", &method, &body);
    let mut r = tonic::Request::new(ListDatasetsRequest {});
    add_headers(r.metadata_mut(), &h);
    raw.list_datasets(r).await.unwrap();
    let mut r = tonic::Request::new(ListDatasetsRequest {});
    add_headers(r.metadata_mut(), &h);
    assert_eq!(
        raw.list_datasets(r).await.unwrap_err().code(),
        Code::AlreadyExists
    );
    // Expired (10 minutes old).
    let old = ecgfed_ledger::entry::now_ms() - 600_000;
    let mut r = tonic::Request::new(ListDatasetsRequest {});
    add_headers(
        r.metadata_mut(),
        &sci.headers_at("site-a", &method, &body, old, 1),
    );
    let e = raw.list_datasets(r).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("expired"), "{e:?}");
    // Signed for another method (signature does not verify).
    let mut r = tonic::Request::new(ListDatasetsRequest {});
    add_headers(
        r.metadata_mut(),
        &sci.headers("site-a", &format!("{SERVICE_PATH}Strata"), &body),
    );
    assert_eq!(
        raw.list_datasets(r).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    // Unknown member.
    let stranger = Arc::new(RequestSigner::new("stranger", KeyPair::generate()));
    let mut g = GatewayClient::connect(&fed.gateways[0].1, "site-a", stranger)
        .await
        .unwrap();
    assert_eq!(
        code(g.list_datasets().await.unwrap_err()),
        Code::Unauthenticated
    );
    // Wrong role: a regulator may read strata and slice metadata, not reserve or read signals.
    let mut reg = fed.gateway(0, "reg").await;
    reg.strata("", &[]).await.unwrap();
    let info = reg.flight_info(slice_id).await.unwrap();
    assert!(info.total_records > 0);
    assert_eq!(
        reserve_refused(&mut reg, "cohort-1").await,
        Code::PermissionDenied
    );
    assert_eq!(
        do_get_refused(&mut reg, slice_id).await,
        Code::PermissionDenied
    );
    // A hospital cannot erase at another site.
    let mut other = fed.gateway(0, "hosp-b").await;
    assert_eq!(
        code(other.erase("anyone", "test").await.unwrap_err()),
        Code::PermissionDenied
    );
    // Wrong requester: sci2 may not read sci's slice, nor reserve sci's cohort.
    let mut sci2 = fed.gateway(0, "sci2").await;
    assert_eq!(
        do_get_refused(&mut sci2, slice_id).await,
        Code::PermissionDenied
    );
    assert_eq!(
        reserve_refused(&mut sci2, "cohort-1").await,
        Code::PermissionDenied
    );
    // A cohort that is not on the ledger.
    let mut sci_client = fed.gateway(0, "sci").await;
    assert_eq!(
        reserve_refused(&mut sci_client, "no-such-cohort").await,
        Code::NotFound
    );
    // A plain DoGet with a bad ticket.
    let ch = tonic::transport::Channel::from_shared(addr)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut flight = arrow_flight::flight_service_client::FlightServiceClient::new(ch);
    let t = arrow_flight::Ticket::new("not-a-ticket");
    let mut r = tonic::Request::new(t.clone());
    add_headers(
        r.metadata_mut(),
        &sci.headers("site-a", &format!("{FLIGHT_PATH}DoGet"), &t.encode_to_vec()),
    );
    assert_eq!(
        flight.do_get(r).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        fed.ledger_size().await,
        before,
        "a refused request wrote to the ledger"
    );
}

/// No strata query recovers a suppressed cell: every answer, for every subset of the four
/// dimensions, equals the projection of the visible finest cells computed independently from
/// the store (`ecgfed datasets strata --k 1`), so suppressed rows never enter any count.
async fn k_anonymity(fed: &Fed) {
    let store = fed.dir.join("store-a");
    let out = run(&[
        "datasets",
        "strata",
        s(&store),
        "--by",
        "label,sex,age_band,source",
        "--k",
        "1",
        "--json",
    ]);
    let full: serde_json::Value = serde_json::from_str(&out).unwrap();
    let cells = full["cells"].as_array().unwrap();
    let visible: Vec<(Vec<String>, u64)> = cells
        .iter()
        .filter(|c| c["patients"].as_u64().unwrap() >= fed.k)
        .map(|c| {
            let key = c["key"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            (key, c["segments"].as_u64().unwrap())
        })
        .collect();
    let suppressed = cells.len() - visible.len();
    assert!(
        suppressed > 0,
        "the test needs at least one suppressed cell"
    );
    let dims = [
        StrataDimension::Label,
        StrataDimension::Sex,
        StrataDimension::AgeBand,
        StrataDimension::Source,
    ];
    let mut g = fed.gateway(0, "sci").await;
    for mask in 1u32..16 {
        let by: Vec<StrataDimension> = (0..4)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| dims[i])
            .collect();
        let idx: Vec<usize> = (0..4).filter(|i| mask & (1 << i) != 0).collect();
        let t = g.strata("", &by).await.unwrap();
        let mut want: BTreeMap<Vec<String>, u64> = BTreeMap::new();
        for (key, n) in &visible {
            *want
                .entry(idx.iter().map(|&i| key[i].clone()).collect())
                .or_default() += n;
        }
        let got: BTreeMap<Vec<String>, u64> = t
            .cells
            .iter()
            .map(|c| (c.key.clone(), c.segments))
            .collect();
        assert_eq!(got, want, "grouping {by:?}");
        assert!(
            t.cells.iter().all(|c| c.patients >= fed.k),
            "a shown cell under k"
        );
        assert_eq!(t.suppressed_cells as usize, suppressed);
    }
}
