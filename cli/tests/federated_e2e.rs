//! Federated mode end to end with real processes on loopback (issue 26):
//! - `ecgfed demo --mode federated`: a ledger and three gateways over the embedded sample, the
//!   demo's cohort trained in rounds at the gateways with secure aggregation; one gateway
//!   dies mid-round (SIGABRT, the `die-in-round` fault hook) and the round is attempted again
//!   without it. No row leaves a site: no DataServed, no slice served; one LocalRoundTrained
//!   per site, round and attempt, with the participants of its attempt; `audit verify` passes
//!   and `audit lineage` lists the model's rounds.
//! - Hospital policy and the round protocol against two gateways: `allow_federated = false`
//!   and `allow_pull = false` refuse with PERMISSION_DENIED, a federated slice is never served
//!   by DoGet, and every malformed or premature round call is refused.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use common::fed::*;
use common::{assert_valid, schema};
use ecgfed_audit::source::{Source, StoreSource};
use ecgfed_gateway::federated::round_key_message;
use ecgfed_gateway::server::{KeyStore, SliceRecord};
use ecgfed_ledger::keys::{AgreementKey, KeyPair};
use ecgfed_proto::v1::entry_body::Payload;
use ecgfed_proto::v1::{
    EvaluateRequest, OpenRoundRequest, ReserveSliceRequest, RevealMaskRequest, RoundKey,
    SubjectKind, TrainRoundRequest,
};
use serde_json::Value;
use sha2::Digest;
use tonic::Code;

const SITES3: [&str; 3] = ["site-a", "site-b", "site-c"];

/// `ecgfed audit lineage --data LEDGER --model MODEL --json`, parsed.
fn lineage_json(ledger: &Path, model: &str) -> Value {
    serde_json::from_str(&run(&[
        "audit",
        "lineage",
        "--data",
        s(ledger),
        "--model",
        model,
        "--json",
    ]))
    .unwrap()
}

/// Entries of `kind` in the ledger store under `ledger`, read offline.
async fn entries_of_kind(ledger: &Path, kind: &str) -> Vec<ecgfed_audit::source::VerifiedEntry> {
    let mut src = StoreSource::open(&ledger.join("db")).unwrap();
    src.by_subject(SubjectKind::EntryKind, kind).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_demo_trains_at_the_gateways_and_survives_a_dropout() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("demo");
    // site-b's gateway aborts when asked to train round 2.
    let out = Command::new(BIN)
        .args(["demo", "--mode", "federated", "--data", s(&data), "--json"])
        .env("ECGFED_GATEWAY_FAULT", "die-in-round:site-b:2")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["mode"], "federated", "{summary}");
    let model = summary["model_id"].as_str().unwrap().to_string();
    let ledger = data.join("ledger");

    // The whole ledger verifies offline with the rules, rounds included.
    let v: Value =
        serde_json::from_str(&run(&["audit", "verify", "--data", s(&ledger), "--json"])).unwrap();
    assert_eq!(v["ok"], true, "{v}");

    // No row left a site: no transfer on the ledger, and every gateway holds its slice as a
    // federated one.
    assert!(entries_of_kind(&ledger, "DataServed").await.is_empty());
    for site in SITES3 {
        let ks = KeyStore::open(&data.join(site).join("gw")).unwrap();
        let raw = ks
            .slice(&format!("demo-rhythm-federated/{site}"))
            .unwrap()
            .unwrap_or_else(|| panic!("{site} holds no slice of the federated cohort"));
        let rec: SliceRecord = serde_json::from_slice(&raw).unwrap();
        assert!(rec.federated, "{site}");
    }

    // The rounds on the ledger: (round, attempt) → sites, each entry naming its attempt's
    // participants.
    let mut attempts: BTreeMap<(u32, u32), BTreeSet<String>> = BTreeMap::new();
    let mut participants: BTreeMap<(u32, u32), Vec<String>> = BTreeMap::new();
    for e in entries_of_kind(&ledger, "LocalRoundTrained").await {
        let Some(Payload::LocalRoundTrained(r)) = e.payload() else {
            panic!("entry {} is not a round", e.index)
        };
        assert_eq!(r.cohort_id, "demo-rhythm-federated");
        assert!(r.rows_used > 0, "{r:?}");
        assert!(
            attempts
                .entry((r.round, r.attempt))
                .or_default()
                .insert(r.site.clone()),
            "two entries of {} for round {} attempt {}",
            r.site,
            r.round,
            r.attempt
        );
        let p = participants
            .entry((r.round, r.attempt))
            .or_insert_with(|| r.participants.clone());
        assert_eq!(*p, r.participants, "one attempt, one set of participants");
    }
    let all: BTreeSet<String> = SITES3.iter().map(|s| s.to_string()).collect();
    let survivors: BTreeSet<String> = ["site-a", "site-c"].iter().map(|s| s.to_string()).collect();
    // Round 1 with everyone; in round 2 site-b died while training (the others trained
    // attempt 1, which was never unmasked) and attempt 2 went on without it; in round 3 site-b
    // was gone before training.
    assert_eq!(attempts[&(1, 1)], all, "{attempts:?}");
    assert!(attempts[&(2, 1)].is_subset(&survivors), "{attempts:?}");
    assert_eq!(
        participants[&(2, 1)].len(),
        3,
        "attempt 1 of round 2 had site-b"
    );
    assert_eq!(attempts[&(2, 2)], survivors, "{attempts:?}");
    assert_eq!(attempts[&(3, 2)], survivors, "{attempts:?}");
    assert!(!attempts.contains_key(&(3, 1)), "{attempts:?}");

    // The coordinator's account of the rounds says the same.
    let rounds: Value = serde_json::from_str(
        &std::fs::read_to_string(data.join("trainer/model/rounds.json")).unwrap(),
    )
    .unwrap();
    let rounds = rounds.as_array().unwrap();
    assert_eq!(rounds.len(), 3);
    assert_eq!(rounds[0]["attempts"], 1);
    for r in &rounds[1..] {
        assert_eq!(r["attempts"], 2, "{r}");
        assert_eq!(r["sites"], serde_json::json!(["site-a", "site-c"]), "{r}");
        let failures = r["failures"].to_string();
        assert!(failures.contains("site-b"), "{r}");
    }

    // The kept model was scored once on the sites' test parts, pooled; the rounds were chosen
    // on validation.
    let metrics: Value = serde_json::from_str(
        &std::fs::read_to_string(data.join("trainer/model/metrics.json")).unwrap(),
    )
    .unwrap();
    let (val_n, test_n) = (
        metrics["validation"]["windows"]["n"].as_u64().unwrap(),
        metrics["test"]["windows"]["n"].as_u64().unwrap(),
    );
    assert!(val_n > 0 && test_n > 0, "{metrics}");
    let confusion_total: u64 = metrics["test"]["windows"]["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()))
        .sum();
    assert_eq!(confusion_total, test_n);

    // The model names the aggregated attempts' entries of the rounds up to the one it kept,
    // and lineage lists them.
    let card: Value = serde_json::from_str(
        &std::fs::read_to_string(data.join("trainer/model/model-card.json")).unwrap(),
    )
    .unwrap();
    let kept = card["best_epoch"].as_u64().unwrap() as usize;
    let want: Vec<u64> = rounds[..kept]
        .iter()
        .flat_map(|r| {
            r["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_u64().unwrap())
        })
        .collect();
    let l = lineage_json(&ledger, &model);
    assert_eq!(l["model"]["mode"], "federated");
    let listed: Vec<u64> = l["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["entry"]["index"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, want);
    for sl in l["slices"].as_array().unwrap() {
        assert_eq!(sl["served"], serde_json::json!([]), "{sl}");
    }
    let text = run(&["audit", "lineage", "--data", s(&ledger), "--model", &model]);
    assert!(
        text.contains("federated:") && text.contains("round 1"),
        "{text}"
    );

    // The exports name every round: PROV (valid against the official schema) has one update
    // entity per round entry, derived from its slice, the model derived from each; OpenLineage
    // one run per round, its update an input of the training run.
    let prov: Value = serde_json::from_str(&run(&[
        "audit",
        "export",
        "--data",
        s(&ledger),
        "--format",
        "prov-json",
        "--model",
        &model,
    ]))
    .unwrap();
    assert_valid(&schema("prov-json.schema.json"), &prov, "PROV-JSON export");
    for i in &want {
        let u = &prov["entity"][format!("ecgfed:update-{i}")];
        assert_eq!(u["prov:type"], "ecgfed:RoundUpdate", "{i}: {u}");
        assert!(prov["activity"][format!("ecgfed:localTraining-{i}")].is_object());
    }
    let ol_text = run(&[
        "audit",
        "export",
        "--data",
        s(&ledger),
        "--format",
        "openlineage",
        "--model",
        &model,
    ]);
    let ol = schema("openlineage/OpenLineage.json");
    let events: Vec<Value> = ol_text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for e in &events {
        assert_valid(&ol, e, "OpenLineage event");
    }
    let round_runs = events
        .iter()
        .filter(|e| e["job"]["name"].as_str().unwrap().starts_with("round/"))
        .count();
    assert_eq!(round_runs, want.len(), "{ol_text}");
    let training = events
        .iter()
        .find(|e| e["job"]["name"].as_str().unwrap().starts_with("training/"))
        .unwrap();
    let updates = training["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["namespace"] == "ecgfed://updates")
        .count();
    assert_eq!(updates, want.len());
    // The regulator's report has the rounds, with their plot.
    let html = std::fs::read_to_string(summary["report"].as_str().unwrap()).unwrap();
    let at = html
        .find("<h2>Federated rounds</h2>")
        .expect("a rounds section");
    assert!(html[at..].contains("<svg") && html[at..].contains("validation macro-F1"));

    // Erasing a patient of site-b's slice flags the federated model exactly as a pulled one:
    // site-b's rows trained round 1, from which every later model descends.
    let ks = KeyStore::open(&data.join("site-b/gw")).unwrap();
    let raw = ks.slice("demo-rhythm-federated/site-b").unwrap().unwrap();
    drop(ks);
    let site_b: SliceRecord = serde_json::from_slice(&raw).unwrap();
    let addr = summary["ledger_addr"].as_str().unwrap();
    let restarted = common::erase_after_demo(&data, addr, &site_b);
    let disclosures = data.join("site-b/gw/erasures");
    let trust = data.join("regulator/trust.json");
    let erased = run(&[
        "audit",
        "lineage",
        "--remote",
        addr,
        "--checkpoint",
        s(&trust),
        "--disclosures",
        s(&disclosures),
        "--erased",
        "--json",
    ]);
    restarted.stop();
    common::assert_erasure_reaches(&erased, "site-b", &model);
}

/// The status of a call that must be refused.
fn refused<T>(r: Result<T, ecgfed_gateway::GatewayError>) -> Code {
    match r {
        Err(e) => code(e),
        Ok(_) => panic!("not refused"),
    }
}

/// A round key of `site` for attempt 1 of round 1 of `cohort`, signed with `signer`'s key
/// file in the federation's folder.
fn round_key(fed: &Fed, cohort: &str, site: &str, member: &str, signer: &str) -> RoundKey {
    let public = AgreementKey::generate().public();
    let key = KeyPair::read_file(&fed.key(signer)).unwrap();
    RoundKey {
        site: site.into(),
        member: member.into(),
        public_key: public.to_vec(),
        signature: key
            .sign(&round_key_message(cohort, 1, 1, site, &public))
            .to_bytes(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hospital_policy_and_the_round_protocol() {
    let mut fed = federation();
    // site-a refuses pull cohorts, site-b federated ones.
    for (i, policy) in [(0, "allow_pull = false"), (1, "allow_federated = false")] {
        let cfg = fed.gateways[i].2.clone();
        let text = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(&cfg, format!("{text}\n[policy]\n{policy}\n")).unwrap();
        fed.restart_gateway(i, &[]);
    }
    create_cohort(&fed, "sci", "fed-1", 1, 2, "federated").await;
    create_cohort(&fed, "sci", "pull-1", 1, 2, "").await;
    let mut a = fed.gateway(0, "sci").await;
    let mut b = fed.gateway(1, "sci").await;
    assert_eq!(
        reserve_refused(&mut b, "fed-1").await,
        Code::PermissionDenied
    );
    assert_eq!(
        reserve_refused(&mut a, "pull-1").await,
        Code::PermissionDenied
    );
    let reserve = |cohort: &str| ReserveSliceRequest {
        cohort_id: cohort.into(),
        ..Default::default()
    };
    let pulled = b.reserve(reserve("pull-1")).await.unwrap();
    let slice = a.reserve(reserve("fed-1")).await.unwrap();
    assert_eq!(slice.rows, 2);
    // A federated slice is never served, to anyone.
    assert_eq!(
        do_get_refused(&mut a, &slice.slice_id).await,
        Code::PermissionDenied
    );

    // Round calls: only the grantee, only once opened, only with every key signed by its
    // site's hospital, only the cohort's spec.
    let open = OpenRoundRequest {
        cohort_id: "fed-1".into(),
        round: 1,
        attempt: 1,
    };
    let train = |keys: Vec<RoundKey>, spec: Vec<u8>| TrainRoundRequest {
        cohort_id: "fed-1".into(),
        round: 1,
        attempt: 1,
        keys,
        spec,
        model: vec![0; 16],
    };
    let other_b = round_key(&fed, "fed-1", "site-b", "hosp-b", "hosp-b");
    assert_eq!(
        refused(a.train_round(train(vec![other_b.clone()], vec![])).await),
        Code::FailedPrecondition,
        "a round not opened here"
    );
    for who in ["sci2", "reg"] {
        let mut g = fed.gateway(0, who).await;
        assert_eq!(
            refused(g.open_round(open.clone()).await),
            Code::PermissionDenied,
            "{who}"
        );
    }
    assert_eq!(
        refused(
            b.open_round(OpenRoundRequest {
                cohort_id: "pull-1".into(),
                ..open.clone()
            })
            .await
        ),
        Code::FailedPrecondition,
        "a pull cohort has no rounds"
    );
    let mine = a.open_round(open.clone()).await.unwrap().key.unwrap();
    assert_eq!(
        (mine.site.as_str(), mine.member.as_str()),
        ("site-a", "hosp-a")
    );
    let hosp_a = KeyPair::read_file(&fed.key("hosp-a")).unwrap().public();
    let sig = ecgfed_ledger::keys::Signature::from_bytes(&mine.signature).unwrap();
    assert!(hosp_a.verify(
        &round_key_message("fed-1", 1, 1, "site-a", &mine.public_key),
        &sig
    ));
    // Asked again, the same key.
    assert_eq!(a.open_round(open.clone()).await.unwrap().key.unwrap(), mine);
    let cases: Vec<(Vec<RoundKey>, &str)> = vec![
        (vec![mine.clone()], "participants"),
        (
            vec![
                mine.clone(),
                round_key(&fed, "fed-1", "site-b", "hosp-b", "sci"),
            ],
            "does not verify",
        ),
        (
            vec![
                mine.clone(),
                round_key(&fed, "fed-1", "site-b", "hosp-a", "hosp-a"),
            ],
            "not that site's hospital",
        ),
        (
            vec![
                round_key(&fed, "fed-1", "site-a", "hosp-a", "hosp-a"),
                other_b.clone(),
            ],
            "not the one it made",
        ),
        (
            vec![
                mine.clone(),
                round_key(&fed, "fed-1", "site-x", "hosp-b", "hosp-b"),
            ],
            "not a site of cohort",
        ),
        (vec![mine.clone(), other_b.clone()], "SHA-256"),
    ];
    for (keys, needle) in cases {
        match a.train_round(train(keys, b"not the spec".to_vec())).await {
            Err(ecgfed_gateway::GatewayError::Refused { code, message, .. }) => {
                assert_eq!(code, Code::InvalidArgument, "{message}");
                assert!(message.contains(needle), "{needle}: {message}");
            }
            other => panic!("{needle}: {other:?}"),
        }
    }
    // Nothing trained: the self mask is not revealed, whatever the survivors.
    let reveal = RevealMaskRequest {
        cohort_id: "fed-1".into(),
        round: 1,
        attempt: 1,
        survivors: vec!["site-a".into(), "site-b".into()],
    };
    assert_eq!(
        refused(a.reveal_mask(reveal).await),
        Code::FailedPrecondition
    );
    // The pull slice at site-b is served as before; nothing of a round reached the ledger.
    assert_eq!(pulled.rows, 2);
    let mut l = fed.ledger_client().await;
    let rounds = payloads(&mut l, SubjectKind::EntryKind, "LocalRoundTrained").await;
    assert!(rounds.is_empty(), "{rounds:?}");

    // A real round at site-a (site-b's key signed with its hospital's key, as its gateway
    // would): then the coordinator's tricks that would unmask it are refused.
    let spec = b"purpose = \"rounds test\"\ncohort_id = \"fed-2\"\nmode = \"federated\"\n[signal]\nlead = \"II\"\nsample_rate = 100\nwindow_secs = 2\n[train]\nchannels = [4]\nkernel = 3\nbatch_size = 4\n[federated]\nrounds = 3\n".to_vec();
    let spec_sha: [u8; 32] = sha2::Sha256::digest(&spec).into();
    create_cohort_of(&fed, "sci", "fed-2", 1, 2, "federated", spec_sha).await;
    a.reserve(reserve("fed-2")).await.unwrap();
    let model = |fill: f32, n: usize| {
        vec![fill; n]
            .iter()
            .flat_map(|v: &f32| v.to_le_bytes())
            .collect::<Vec<u8>>()
    };
    let open_at = |round: u32, attempt: u32| OpenRoundRequest {
        cohort_id: "fed-2".into(),
        round,
        attempt,
    };
    let hosp_b = KeyPair::read_file(&fed.key("hosp-b")).unwrap();
    let key_b = |round: u32, attempt: u32| {
        let public = AgreementKey::generate().public();
        let k = &hosp_b;
        RoundKey {
            site: "site-b".into(),
            member: "hosp-b".into(),
            public_key: public.to_vec(),
            signature: k
                .sign(&round_key_message(
                    "fed-2", round, attempt, "site-b", &public,
                ))
                .to_bytes(),
        }
    };
    // The network's parameter count, from a first refusal naming it.
    let mine = a.open_round(open_at(1, 1)).await.unwrap().key.unwrap();
    let train_at =
        |round: u32, attempt: u32, keys: Vec<RoundKey>, model: Vec<u8>| TrainRoundRequest {
            cohort_id: "fed-2".into(),
            round,
            attempt,
            keys,
            spec: spec.clone(),
            model,
        };
    let err = a
        .train_round(train_at(
            1,
            1,
            vec![mine.clone(), key_b(1, 1)],
            model(0.0, 1),
        ))
        .await
        .unwrap_err()
        .to_string();
    let n: usize = err
        .split("network of ")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    // That attempt is taken (it failed at the site): a fresh one trains.
    let mine = a.open_round(open_at(1, 2)).await.unwrap().key.unwrap();
    let m1 = model(0.01, n);
    let t = a
        .train_round(train_at(1, 2, vec![mine.clone(), key_b(1, 2)], m1.clone()))
        .await
        .unwrap();
    assert_eq!(t.masked_update.len(), n * 8);
    let reveal = |attempt: u32, survivors: &[&str]| RevealMaskRequest {
        cohort_id: "fed-2".into(),
        round: 1,
        attempt,
        survivors: survivors.iter().map(|s| s.to_string()).collect(),
    };
    // A second attempt of round 1 trained too (same model): once attempt 2 is revealed, its
    // self mask is never given (two unmasked sums of one round would tell a site's update).
    let mine3 = a.open_round(open_at(1, 3)).await.unwrap().key.unwrap();
    a.train_round(train_at(1, 3, vec![mine3, key_b(1, 3)], m1.clone()))
        .await
        .unwrap();
    // Not every participant: no seed. Then all: the seed, which hashes to the entry's
    // commitment; asked again, the same seed.
    assert_eq!(
        refused(a.reveal_mask(reveal(2, &["site-a"])).await),
        Code::FailedPrecondition
    );
    let seed = a
        .reveal_mask(reveal(2, &["site-a", "site-b"]))
        .await
        .unwrap()
        .self_mask_seed;
    assert_eq!(
        a.reveal_mask(reveal(2, &["site-a", "site-b"]))
            .await
            .unwrap()
            .self_mask_seed,
        seed
    );
    let e = l.entry(t.ledger_index).await.unwrap();
    let Some(Payload::LocalRoundTrained(r)) = e.payload() else {
        panic!("entry {} is not a round", t.ledger_index)
    };
    assert_eq!(r.self_mask_sha256, sha2::Sha256::digest(&seed).to_vec());
    assert_eq!(
        r.participants,
        vec!["site-a".to_string(), "site-b".to_string()]
    );
    let other = a
        .reveal_mask(reveal(3, &["site-a", "site-b"]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        other.contains("revealed the self mask of attempt 2"),
        "{other}"
    );
    // Round 1 is complete here: no other attempt of it opens.
    assert_eq!(
        refused(a.open_round(open_at(1, 4)).await),
        Code::FailedPrecondition
    );
    // The same model in another round is refused; a later round with a new model trains; an
    // earlier round is refused after it.
    let mine = a.open_round(open_at(2, 1)).await.unwrap().key.unwrap();
    let err = a
        .train_round(train_at(2, 1, vec![mine, key_b(2, 1)], m1.clone()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("trained this model in round 1"), "{err}");
    let mine = a.open_round(open_at(3, 1)).await.unwrap().key.unwrap();
    a.train_round(train_at(3, 1, vec![mine, key_b(3, 1)], model(0.02, n)))
        .await
        .unwrap();
    let mine = a.open_round(open_at(2, 2)).await.unwrap().key.unwrap();
    let err = a
        .train_round(train_at(2, 2, vec![mine, key_b(2, 2)], model(0.03, n)))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("rounds only go forward"), "{err}");
    // Past the spec's rounds: refused by the site's trainer.
    let mine = a.open_round(open_at(4, 1)).await.unwrap().key.unwrap();
    let err = a
        .train_round(train_at(4, 1, vec![mine, key_b(4, 1)], model(0.04, n)))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("its spec has 3 rounds"), "{err}");

    // The test part is scored for one model: the first one asked (again on a retry).
    let evaluate = |m: Vec<u8>, part: &str| EvaluateRequest {
        cohort_id: "fed-2".into(),
        spec: spec.clone(),
        model: m,
        part: part.into(),
    };
    let first = a.evaluate(evaluate(model(0.1, n), "test")).await.unwrap();
    let again = a.evaluate(evaluate(model(0.1, n), "test")).await.unwrap();
    assert_eq!(first.scores_json, again.scores_json);

    // A hospital whose policy asks for differential privacy, or keeps a privacy budget (which
    // needs it), refuses a round without it, naming its floor, or its budget and δ.
    let cfg = fed.gateways[0].2.clone();
    let text = std::fs::read_to_string(&cfg).unwrap();
    for (attempt, policy, needle) in [
        (
            2,
            "min_noise_multiplier = 1.0",
            "only with differential privacy of noise multiplier at least 1",
        ),
        (
            3,
            "max_epsilon = 2.0\nepsilon_delta = 1e-6",
            "privacy budget (ε ≤ 2 at δ = 0.000001",
        ),
    ] {
        let with = format!("allow_pull = false\n{policy}");
        std::fs::write(&cfg, text.replace("allow_pull = false", &with)).unwrap();
        fed.restart_gateway(0, &[]);
        let mut a = fed.gateway(0, "sci").await;
        let mine = a
            .open_round(open_at(4, attempt))
            .await
            .unwrap()
            .key
            .unwrap();
        let keys = vec![mine, key_b(4, attempt)];
        let err = a
            .train_round(train_at(4, attempt, keys, model(0.05, n)))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{err}");
    }
    // After the restarts the binding holds: another model's test scores are refused, naming
    // the first model; validation scores of any model are still answered.
    let mut a = fed.gateway(0, "sci").await;
    let first_sha = hex::encode(sha2::Sha256::digest(model(0.1, n)));
    match a.evaluate(evaluate(model(0.2, n), "test")).await {
        Err(ecgfed_gateway::GatewayError::Refused { code, message, .. }) => {
            assert_eq!(code, Code::FailedPrecondition, "{message}");
            assert!(
                message.contains("scored once") && message.contains(&first_sha[..16]),
                "{message}"
            );
        }
        other => panic!("a second model's test scores: {other:?}"),
    }
    a.evaluate(evaluate(model(0.2, n), "validation"))
        .await
        .unwrap();
    a.evaluate(evaluate(model(0.1, n), "test")).await.unwrap();
}

/// A topology folder in `dir` with the demo's topology and its cohort as `cohort_id`, in
/// federated mode, with `federated` (the spec's federated tables) appended.
fn topology_with(dir: &Path, cohort_id: &str, federated: &str) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let topo = dir.join("topology");
    std::fs::create_dir_all(&topo).unwrap();
    std::fs::copy(
        root.join("deploy/topology.toml"),
        topo.join("topology.toml"),
    )
    .unwrap();
    let cohort = std::fs::read_to_string(root.join("deploy/cohort.toml")).unwrap();
    let cohort = cohort.replace(
        "cohort_id = \"demo-rhythm\"",
        &format!("cohort_id = \"{cohort_id}\""),
    );
    std::fs::write(
        topo.join("cohort.toml"),
        format!("mode = \"federated\"\n{cohort}\n{federated}"),
    )
    .unwrap();
    topo
}

/// `ecgfed demo --topology TOPO --sample <the embedded sample> --data DATA --json`.
fn demo_args<'a>(topo: &'a Path, data: &'a Path) -> [&'a str; 8] {
    static SAMPLE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let sample =
        SAMPLE.get_or_init(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/sample"));
    [
        "demo",
        "--topology",
        s(topo),
        "--sample",
        s(sample),
        "--data",
        s(data),
        "--json",
    ]
}

/// A temporary folder with a topology of `cohort_id` and `federated` ([`topology_with`]) and
/// the demo's data folder path in it.
fn demo_dirs(
    cohort_id: &str,
    federated: &str,
) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let topo = topology_with(tmp.path(), cohort_id, federated);
    let data = tmp.path().join("demo");
    (tmp, topo, data)
}

/// `on_failure = "stop"`: a site dying mid-round stops training with an error naming the
/// round, the attempt and the site; no model is recorded.
#[test]
fn a_failed_site_stops_training_when_the_spec_says_stop() {
    let (_tmp, topo, data) = demo_dirs(
        "demo-stop",
        "[federated]\nrounds = 3\non_failure = \"stop\"\n",
    );
    let out = Command::new(BIN)
        .args(demo_args(&topo, &data))
        .env("ECGFED_GATEWAY_FAULT", "die-in-round:site-c:2")
        .output()
        .unwrap();
    assert!(!out.status.success(), "training went on");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("round 2 attempt 1") && err.contains("site-c (TrainRound)"),
        "{err}"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ledger = data.join("ledger");
    assert!(
        rt.block_on(entries_of_kind(&ledger, "ModelTrained"))
            .is_empty()
    );
    // Round 1 was recorded by all three sites; nothing of round 2 was unmasked.
    let rounds = rt.block_on(entries_of_kind(&ledger, "LocalRoundTrained"));
    let first = rounds
        .iter()
        .filter(|e| matches!(e.payload(), Some(Payload::LocalRoundTrained(r)) if r.round == 1))
        .count();
    assert_eq!(first, 3);
}

/// Differential privacy per site: the demo's cohort with `[federated.dp]`, run from a topology
/// folder. Every round at every site records its DP-SGD (clipping norm, σ, sampling rate,
/// steps, δ); lineage recomputes each site's ε from those entries alone, which composes every
/// round the site recorded and so exceeds any one round's.
#[test]
fn differential_privacy_is_recorded_per_round_and_composed_by_the_auditor() {
    let (_tmp, topo, data) = demo_dirs(
        "demo-dp",
        "[federated]\nrounds = 2\n\n[federated.dp]\nclip_norm = 1.0\nnoise_multiplier = 1.3\ndelta = 1e-5\n",
    );
    let summary: Value = serde_json::from_str(&run(&demo_args(&topo, &data))).unwrap();
    assert_eq!(summary["mode"], "federated", "{summary}");
    let model = summary["model_id"].as_str().unwrap().to_string();
    let ledger = data.join("ledger");
    // Each site's rounds, as recorded.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut per_site: BTreeMap<String, Vec<ecgfed_audit::privacy::DpSteps>> = BTreeMap::new();
    let mut single = 0f64;
    for e in rt.block_on(entries_of_kind(&ledger, "LocalRoundTrained")) {
        let Some(Payload::LocalRoundTrained(r)) = e.payload() else {
            unreachable!()
        };
        let t: Value = serde_json::from_str(&r.training_json).unwrap();
        let dp = &t["dp"];
        assert_eq!(dp["clip_norm"], 1.0, "{t}");
        assert_eq!(dp["noise_multiplier"], 1.3, "{t}");
        assert_eq!(dp["delta"], 1e-5, "{t}");
        let q = dp["sample_rate"].as_f64().unwrap();
        // The demo's batch of 16 over a site's training rows.
        assert!(q > 0.0 && q <= 1.0, "{t}");
        assert_eq!(
            dp["sample_rate"].as_f64().unwrap(),
            (16.0 / r.rows_used as f64).min(1.0),
            "{t}"
        );
        single = single.max(dp["round_epsilon"].as_f64().unwrap());
        per_site
            .entry(r.site.clone())
            .or_default()
            .push(ecgfed_audit::privacy::DpSteps {
                sample_rate: q,
                noise_multiplier: 1.3,
                steps: dp["steps"].as_u64().unwrap(),
            });
    }
    assert_eq!(per_site.len(), 3, "{per_site:?}");
    let l = lineage_json(&ledger, &model);
    let privacy = l["privacy"].as_array().unwrap();
    assert_eq!(privacy.len(), 3, "{l}");
    for p in privacy {
        let site = p["site"].as_str().unwrap();
        let runs = &per_site[site];
        let (want, _) = ecgfed_audit::privacy::epsilon(runs, 1e-5);
        let eps = p["epsilon"].as_f64().unwrap();
        assert!((eps - want).abs() < 1e-9, "{site}: {eps} vs {want}");
        assert!(eps.is_finite() && eps > 0.0);
        assert_eq!(p["rounds"].as_u64().unwrap(), runs.len() as u64);
        assert!(runs.len() >= 2);
        let steps: u64 = runs.iter().map(|r| r.steps).sum();
        assert_eq!(p["steps"].as_u64().unwrap(), steps);
        // The gateway's own account of its privacy spending (what a budget is checked
        // against) holds the same rounds as its ledger entries.
        let ks = KeyStore::open(&data.join(site).join("gw")).unwrap();
        let spent: Vec<ecgfed_gateway::federated::DpSpent> =
            serde_json::from_slice(&ks.meta("dp-spent/demo-dp").unwrap().unwrap()).unwrap();
        let spent: Vec<(f64, u64)> = spent.iter().map(|s| (s.sample_rate, s.steps)).collect();
        let recorded: Vec<(f64, u64)> = runs.iter().map(|r| (r.sample_rate, r.steps)).collect();
        assert_eq!(spent, recorded, "{site}");
    }
    let most = privacy
        .iter()
        .map(|p| p["epsilon"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(most > single, "composition: {most} ≤ one round's {single}");
}
