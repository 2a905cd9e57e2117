//! Crash test: a real `ecgfed ledger serve` process under concurrent load is killed with
//! SIGKILL at random moments, 20 times; after each restart every acknowledged entry is present
//! with the same leaf hash, and `ecgfed audit verify` passes at the end. Also: SIGTERM stops
//! the server cleanly, and `audit verify --remote` checks the live server against the trust
//! file written by `ledger init`.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ecgfed_ledger::entry::{self, EntrySigner};
use ecgfed_ledger::genesis::{GenesisFile, GenesisMember};
use ecgfed_ledger::keys::KeyPair;
use ecgfed_ledger::log::leaf_hash;
use ecgfed_proto::v1::ledger_service_client::LedgerServiceClient;
use ecgfed_proto::v1::{GetEntryRequest, ModelTrained, entry_body::Payload};
use rand::{Rng, SeedableRng};

const BIN: &str = env!("CARGO_BIN_EXE_ecgfed");
const CLIENTS: usize = 4;
const IN_FLIGHT: usize = 8;

fn start(data: &Path) -> (Child, String) {
    common::spawn_listening(
        Command::new(BIN)
            .args(["ledger", "serve", "--data"])
            .arg(data)
            .args(["--listen", "127.0.0.1:0"])
            .stderr(Stdio::null()),
    )
}

fn model(i: u64) -> Payload {
    Payload::ModelTrained(ModelTrained {
        model_id: format!("model-{i}"),
        cohort_id: "cohort".into(),
        weights_sha256: vec![7; 32],
        code_version: "crash-test".into(),
        hyperparameters_json: "{}".into(),
        metrics_json: "{}".into(),
        ..Default::default()
    })
}

type Acked = Arc<Mutex<Vec<(u64, [u8; 32])>>>;

/// Submits until the server dies; records every acknowledged (index, leaf hash).
async fn load(addr: String, signer: Arc<Mutex<EntrySigner>>, acked: Acked) {
    // The signer's own call token: the ledger takes writes from members only.
    let id = {
        let s = signer.lock().unwrap();
        ecgfed_ledger::access::CallIdentity::new(
            "ecgfed.test/crash",
            s.member_id(),
            s.key().clone(),
        )
    };
    let Ok(c) = ecgfed_ledger::access::connect(format!("http://{addr}"), Some(Arc::new(id))).await
    else {
        return;
    };
    let mut tasks = Vec::new();
    for _ in 0..IN_FLIGHT {
        let (mut c, signer, acked) = (c.clone(), signer.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let e = signer.lock().unwrap().sign(model(i));
                let leaf = leaf_hash(&entry::encode_stored(&e.body, &e.signature));
                match c.submit(e).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        assert_eq!(r.leaf_hash, leaf, "receipt leaf hash");
                        acked.lock().unwrap().push((r.index, leaf));
                    }
                    Err(s) => {
                        assert!(
                            matches!(
                                s.code(),
                                tonic::Code::Unavailable
                                    | tonic::Code::Unknown
                                    | tonic::Code::Cancelled
                                    | tonic::Code::Internal
                            ),
                            "only transport failures are expected, got {s:?}"
                        );
                        return;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn check_present(addr: &str, acked: &[(u64, [u8; 32])]) {
    let mut c = LedgerServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    for (index, leaf) in acked {
        let e = c
            .get_entry(GetEntryRequest { index: *index })
            .await
            .unwrap_or_else(|s| panic!("acknowledged entry {index} lost: {s}"))
            .into_inner();
        assert_eq!(&leaf_hash(&e.stored), leaf, "entry {index} changed");
    }
}

#[test]
fn acknowledged_entries_survive_sigkill_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ledger");
    std::fs::create_dir_all(&data).unwrap();
    let lk = KeyPair::generate();
    lk.write_file(&data.join("ledger.key")).unwrap();
    let keys: Vec<KeyPair> = (0..CLIENTS).map(|_| KeyPair::generate()).collect();
    let mut members = vec![GenesisMember::for_key("ledger", "ledger", "", &lk)];
    for (i, k) in keys.iter().enumerate() {
        members.push(GenesisMember::for_key(&format!("s{i}"), "scientist", "", k));
    }
    let g = GenesisFile {
        origin: "ecgfed.test/crash".into(),
        max_clock_skew_ms: 0,
        witnesses: Vec::new(),
        witness_quorum: 0,
        members,
    };
    let gpath = dir.path().join("genesis.toml");
    std::fs::write(&gpath, toml::to_string(&g).unwrap()).unwrap();
    let out = Command::new(BIN)
        .args(["ledger", "init", "--genesis"])
        .arg(&gpath)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let signers: Vec<Arc<Mutex<EntrySigner>>> = keys
        .into_iter()
        .enumerate()
        .map(|(i, k)| Arc::new(Mutex::new(EntrySigner::new(&format!("s{i}"), k))))
        .collect();
    let acked: Acked = Arc::new(Mutex::new(Vec::new()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut last_round_start = 0;
    for round in 0..20 {
        let (mut child, addr) = start(&data);
        // Everything acknowledged before this round is still there.
        let before: Vec<_> = acked.lock().unwrap()[last_round_start..].to_vec();
        rt.block_on(check_present(&addr, &before));
        last_round_start = acked.lock().unwrap().len();
        let loads: Vec<_> = signers
            .iter()
            .map(|s| rt.spawn(load(addr.clone(), s.clone(), acked.clone())))
            .collect();
        std::thread::sleep(Duration::from_millis(rng.gen_range(50..400)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for l in loads {
            rt.block_on(l).unwrap();
        }
        eprintln!(
            "round {round}: {} acknowledged so far",
            acked.lock().unwrap().len()
        );
    }
    let all = acked.lock().unwrap().clone();
    assert!(
        all.len() > 100,
        "the load produced too few entries ({})",
        all.len()
    );
    let mut idx: Vec<u64> = all.iter().map(|a| a.0).collect();
    idx.sort_unstable();
    idx.dedup();
    assert_eq!(idx.len(), all.len(), "two acknowledgements for one index");

    // Final restart: every acknowledged entry, then a clean SIGTERM shutdown.
    let (child, addr) = start(&data);
    rt.block_on(check_present(&addr, &all));
    // Remote audit against the trust file written by init, updating it.
    let trust = data.join("trust.json");
    let out = Command::new(BIN)
        .args(["audit", "verify", "--remote", &addr, "--checkpoint"])
        .arg(&trust)
        .args(["--update", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ok"], true);
    assert!(r["entries"].as_u64().unwrap() > *idx.last().unwrap());
    let saved = std::fs::read_to_string(&trust).unwrap();
    assert!(
        saved.contains(&format!("\\n{}\\n", r["tree_size"])),
        "trust file updated to the checked size"
    );
    let st = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "SIGTERM must stop the server cleanly: {:?}",
        out.status
    );

    // Offline audit passes.
    let out = Command::new(BIN)
        .args(["audit", "verify", "--json", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{r}");
    assert_eq!(r["ok"], true);
    assert_eq!(r["problem_count"], 0);
}

/// Issue 25: a federation's ledger process is killed with SIGKILL and its folder lost; the
/// `ecgfed ledger mirror` process that followed it restores it. `audit verify` passes on the
/// restored ledger, remotely against the trust file and offline, and both gateways (whose trust
/// states remember the newest checkpoint they accepted) start against it.
#[test]
fn a_killed_ledger_is_restored_from_its_mirror_process() {
    use common::fed::{Fed, run, s, serve, stop};
    let mut fed = Fed::start(Path::new(BIN));
    let trust = fed.dir.join("ledger/trust.json");
    let (mirror, mirror_addr) = serve(
        &[
            "ledger",
            "mirror",
            "--from",
            &fed.ledger_addr,
            "--trust",
            s(&trust),
            "--data",
            s(&fed.dir.join("mirror")),
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (size, mirrored) = rt.block_on(async {
        // More entries, then wait for the mirror to hold all of them.
        let key = KeyPair::read_file(&fed.key("sci")).unwrap();
        let mut signer = EntrySigner::new("sci", key);
        let mut c = fed.ledger_client().await;
        for i in 0..20 {
            c.submit(signer.sign(model(i))).await.unwrap();
        }
        let size = c.trusted().unwrap().size;
        let mut m = LedgerServiceClient::connect(format!("http://{mirror_addr}"))
            .await
            .unwrap();
        let mut mirrored = 0;
        for _ in 0..200 {
            let note = m
                .latest_checkpoint(ecgfed_proto::v1::LatestCheckpointRequest { at_least: 0 })
                .await
                .unwrap()
                .into_inner()
                .note;
            mirrored = note.lines().nth(1).unwrap().parse::<u64>().unwrap();
            if mirrored >= size {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (size, mirrored)
    });
    assert_eq!(mirrored, size, "the mirror caught up");
    // SIGKILL, and the folder is gone.
    let mut ledger = fed.ledger.take().unwrap();
    ledger.kill().unwrap();
    ledger.wait().unwrap();
    let ldir = fed.dir.join("ledger");
    std::fs::remove_dir_all(ldir.join("db")).unwrap();
    // Restore: stop the mirror, copy its folder, serve with the ledger's key at the same address.
    stop(mirror);
    ecgfed_testkit::files::copy_dir(&fed.dir.join("mirror/db"), &ldir.join("db")).unwrap();
    let (restored, _) = serve(
        &[
            "ledger",
            "serve",
            "--data",
            s(&ldir),
            "--listen",
            &fed.ledger_addr,
            "--key",
            s(&fed.key("ledger")),
        ],
        &[],
    );
    let out = run(&[
        "audit",
        "verify",
        "--remote",
        &fed.ledger_addr,
        "--checkpoint",
        s(&trust),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true, "{out}");
    assert_eq!(v["entries"], size, "{out}");
    // Both gateways start from their remembered checkpoints against the restored ledger.
    for i in 0..2 {
        let state = std::fs::read_to_string(
            fed.dir
                .join(format!("gw-{}", ["a", "b"][i]))
                .join("ledger-trust.json"),
        )
        .unwrap();
        assert!(state.contains("checkpoint"), "{state}");
        fed.restart_gateway(i, &[]);
    }
    for g in fed.gateways.iter_mut() {
        if let Some(c) = g.0.take() {
            stop(c);
        }
    }
    stop(restored);
    let out = run(&["audit", "verify", "--data", s(&ldir), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true, "{out}");

    // Rollback across a gateway restart: the ledger grows and gateway a starts against the
    // grown log (its trust state remembers it); then the ledger's folder is put back to the
    // older copy, and gateway a refuses to start.
    ecgfed_testkit::files::copy_dir(&ldir.join("db"), &fed.dir.join("old-db")).unwrap();
    let (laddr, lkey) = (fed.ledger_addr.clone(), fed.key("ledger"));
    let serve_ledger = || {
        serve(
            &[
                "ledger",
                "serve",
                "--data",
                s(&ldir),
                "--listen",
                &laddr,
                "--key",
                s(&lkey),
            ],
            &[],
        )
        .0
    };
    let grown = serve_ledger();
    rt.block_on(async {
        let key = KeyPair::read_file(&fed.key("sci")).unwrap();
        let mut signer = EntrySigner::new("sci", key);
        let mut c = fed.ledger_client().await;
        for i in 100..105 {
            c.submit(signer.sign(model(i))).await.unwrap();
        }
    });
    fed.restart_gateway(0, &[]);
    if let Some(c) = fed.gateways[0].0.take() {
        stop(c);
    }
    stop(grown);
    std::fs::remove_dir_all(ldir.join("db")).unwrap();
    ecgfed_testkit::files::copy_dir(&fed.dir.join("old-db"), &ldir.join("db")).unwrap();
    let rolled = serve_ledger();
    let out = Command::new("timeout")
        .arg("60")
        .arg(BIN)
        .args(["gateway", "serve", "--config"])
        .arg(&fed.gateways[0].2)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the gateway started against a rolled-back ledger"
    );
    assert!(err.contains("rolled-back"), "{err}");
    stop(rolled);
}
