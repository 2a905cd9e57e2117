//! Crash test of a witness (issue 25): a real `ecgfed witness serve` process is asked, by
//! four concurrent callers, to cosign checkpoints of two forks of one log (both signed by the
//! real ledger key), and is killed with SIGKILL at random moments, 20 times. Every cosignature
//! it ever returned is collected: none may be of a checkpoint inconsistent with another it
//! returned, across all restarts (the state file is durable before a cosignature leaves).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ecgfed_ledger::checkpoint::Checkpoint;
use ecgfed_ledger::cosign::cosign_message;
use ecgfed_ledger::keys::{KeyPair, Signature};
use ecgfed_ledger::log::{Hash, MemoryLog, consistency_proof, root};
use ecgfed_ledger::trust::TrustFile;
use ecgfed_proto::v1::AddCheckpointRequest;
use ecgfed_proto::v1::witness_service_client::WitnessServiceClient;
use rand::{Rng, SeedableRng};

const BIN: &str = env!("CARGO_BIN_EXE_ecgfed");
const ORIGIN: &str = "ecgfed.test/witness-crash";
const BASE: u64 = 3;
const LEAVES: u64 = 60;

/// A fork: the shared first BASE leaves, then leaves of its own.
fn fork(tag: u8) -> MemoryLog {
    let mut log = MemoryLog::new();
    for i in 0..LEAVES {
        let data = if i < BASE {
            vec![0, i as u8]
        } else {
            vec![tag, i as u8]
        };
        log.append(&data);
    }
    log
}

fn note(log: &MemoryLog, size: u64, ledger: &KeyPair) -> (Checkpoint, String) {
    let cp = Checkpoint {
        origin: ORIGIN.into(),
        size,
        root: root(log, size).unwrap(),
        timestamp_ms: 1_700_000_000_000 + size as i64,
    };
    let n = cp.sign(ledger);
    (cp, n)
}

fn start(dir: &Path, key: &Path, trust: &Path) -> (Child, String) {
    common::spawn_listening(
        Command::new(BIN)
            .args(["witness", "serve", "--member", "w", "--key"])
            .arg(key)
            .arg("--trust")
            .arg(trust)
            .arg("--data")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .stderr(Stdio::null()),
    )
}

type Cosigned = Arc<Mutex<Vec<(char, Checkpoint)>>>;

/// Asks the witness to cosign random checkpoints of both forks until it dies; records every
/// cosignature returned (checked against the witness key).
async fn load(
    addr: String,
    forks: Arc<[(char, MemoryLog); 2]>,
    ledger: KeyPair,
    wkey: ecgfed_ledger::keys::PublicKey,
    got: Cosigned,
    seed: u64,
) {
    let Ok(mut c) = WitnessServiceClient::connect(format!("http://{addr}")).await else {
        return;
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut known = 0u64;
    loop {
        let (tag, log) = &forks[rng.gen_range(0..2)];
        let size = rng.gen_range(BASE..=LEAVES).max(known);
        let (cp, n) = note(log, size, &ledger);
        let proof: Vec<Vec<u8>> = if known > 0 && known < size {
            consistency_proof(log, known, size)
                .unwrap()
                .into_iter()
                .map(|h: Hash| h.to_vec())
                .collect()
        } else {
            Vec::new()
        };
        let r = match c
            .add_checkpoint(AddCheckpointRequest {
                old_size: known,
                note: n,
                consistency: proof,
            })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::Unknown => {
                return;
            }
            Err(_) => continue,
        };
        if r.cosignature.is_empty() {
            known = r.known_size;
            continue;
        }
        let sig = Signature::from_bytes(&r.cosignature).unwrap();
        assert!(wkey.verify(&cosign_message(&cp), &sig));
        known = size;
        got.lock().unwrap().push((*tag, cp));
    }
}

#[test]
fn a_witness_never_cosigns_two_forks_across_sigkills() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = KeyPair::generate();
    let witness = KeyPair::generate();
    let key = tmp.path().join("w.key");
    witness.write_file(&key).unwrap();
    let forks: Arc<[(char, MemoryLog); 2]> = Arc::new([('a', fork(1)), ('b', fork(2))]);
    // Both forks share the first BASE leaves: the trust file's checkpoint.
    let (_, base) = note(&forks[0].1, BASE, &ledger);
    let trust = tmp.path().join("trust.json");
    TrustFile {
        origin: ORIGIN.into(),
        ledger_public_key: ledger.public().to_hex(),
        checkpoint: base,
        distrusted: None,
        tls_ca: None,
        tls_domain: None,
    }
    .write(&trust)
    .unwrap();
    let data = tmp.path().join("w");
    let got: Cosigned = Arc::default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(25);
    for round in 0..20u64 {
        let (mut child, addr) = start(&data, &key, &trust);
        let tasks: Vec<_> = (0..4)
            .map(|i| {
                rt.spawn(load(
                    addr.clone(),
                    Arc::clone(&forks),
                    ledger.clone(),
                    witness.public(),
                    Arc::clone(&got),
                    round * 10 + i,
                ))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..200)));
        child.kill().unwrap();
        child.wait().unwrap();
        for t in tasks {
            rt.block_on(t).unwrap();
        }
    }
    let got = got.lock().unwrap();
    assert!(
        got.len() >= 20,
        "only {} cosignatures in 20 rounds",
        got.len()
    );
    // Every cosigned checkpoint beyond the shared prefix is of one fork.
    let forked: Vec<char> = got
        .iter()
        .filter(|(_, cp)| cp.size > BASE)
        .map(|(t, _)| *t)
        .collect();
    assert!(!forked.is_empty());
    assert!(
        forked.iter().all(|t| *t == forked[0]),
        "the witness cosigned both forks: {forked:?}"
    );
    // And sizes never went down between what it held.
    let state = std::fs::read_to_string(data.join("witness.json")).unwrap();
    assert!(state.contains(ORIGIN));
}

/// `ecgfed audit evidence` shows a fork recorded as evidence (both notes signed by the trust
/// file's ledger key, one size, two roots), exits with status 1, exports it; a file whose second
/// note is signed by another key, or that does not conflict, holds nothing.
#[test]
fn audit_evidence_shows_a_fork_and_ignores_what_does_not_hold() {
    use ecgfed_ledger::evidence::Evidence;
    let tmp = tempfile::tempdir().unwrap();
    let ledger = KeyPair::generate();
    let (cp_a, note_a) = note(&fork(1), 20, &ledger);
    let (cp_b, note_b) = note(&fork(2), 20, &ledger);
    assert_ne!(cp_a.root, cp_b.root);
    let trust = tmp.path().join("trust.json");
    TrustFile {
        origin: ORIGIN.into(),
        ledger_public_key: ledger.public().to_hex(),
        checkpoint: note(&fork(1), BASE, &ledger).1,
        distrusted: None,
        tls_ca: None,
        tls_domain: None,
    }
    .write(&trust)
    .unwrap();
    let ev = |first: &str, second: &str, at: i64| Evidence {
        kind: "fork".into(),
        origin: ORIGIN.into(),
        ledger_public_key: ledger.public().to_hex(),
        source: "test".into(),
        detected_by: "hosp-b".into(),
        detected_at_ms: at,
        first: first.into(),
        second: second.into(),
        consistency_proof: Vec::new(),
    };
    let dir = tmp.path().join("evidence");
    ev(&note_a, &note_b, 1).write(&dir).unwrap();
    // Another key's note, and a non-conflict.
    let (_, forged) = note(&fork(2), 20, &KeyPair::generate());
    ev(&note_a, &forged, 2).write(&dir).unwrap();
    ev(&note_a, &note_a, 3).write(&dir).unwrap();
    let export = tmp.path().join("export.json");
    let out = Command::new(BIN)
        .args(["audit", "evidence", "--trust"])
        .arg(&trust)
        .arg("--export")
        .arg(&export)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("fork found by hosp-b"), "{stdout}");
    assert!(stdout.contains(&hex::encode(cp_a.root)) && stdout.contains(&hex::encode(cp_b.root)));
    assert!(stderr.contains("does not hold"), "{stderr}");
    let exported: Vec<Evidence> =
        serde_json::from_str(&std::fs::read_to_string(&export).unwrap()).unwrap();
    assert_eq!(exported.len(), 1);
    assert_eq!(exported[0].second, note_b);
}
