//! Known-answer vector of a witnessed checkpoint (docs/ledger.md, "Witnessed checkpoint"):
//! fixed secret keys, a fixed checkpoint, two of three witnesses cosigning. The note, keys and
//! aggregate are compared byte for byte with `tests/vectors/witnessed-checkpoint.json`, which
//! `scripts/verify_witnessed.py` checks independently with py_ecc. BLS signatures are
//! deterministic, so any change of a byte format changes the vector and fails here.

use ecgfed_ledger::checkpoint::Checkpoint;
use ecgfed_ledger::cosign::{WitnessKey, WitnessPolicy, cosign, cosign_message};
use ecgfed_ledger::keys::KeyPair;

fn key(seed: u8) -> KeyPair {
    // Small scalars (well below the group order), little-endian.
    let mut s = [0u8; 32];
    s[0] = seed;
    s[1] = 0x5a;
    KeyPair::from_secret_bytes(&s).unwrap()
}

fn vector() -> serde_json::Value {
    let ledger = key(1);
    let ws = [key(2), key(3), key(4)];
    let policy = WitnessPolicy {
        witnesses: ws
            .iter()
            .enumerate()
            .map(|(i, k)| WitnessKey {
                id: format!("hospital-{}", i + 1),
                key: k.public(),
            })
            .collect(),
        quorum: 2,
    };
    let cp = Checkpoint {
        origin: "ecgfed.example/ledger".into(),
        size: 1234,
        root: core::array::from_fn(|i| i as u8),
        timestamp_ms: 1_764_100_000_000,
    };
    let signers = [0usize, 2];
    let cosigs: Vec<_> = signers.iter().map(|&i| (i, cosign(&ws[i], &cp))).collect();
    let note = policy
        .witness_note(&cp.sign(&ledger), &cp.origin, &cosigs)
        .unwrap();
    let w = policy.verify(&note, &cp.origin, &ledger.public()).unwrap();
    assert_eq!(w.cosigners, ["hospital-1", "hospital-3"]);
    serde_json::json!({
        "origin": cp.origin,
        "ledger_public_key": ledger.public().to_hex(),
        "witnesses": policy.witnesses.iter().map(|w| serde_json::json!({"id": w.id, "public_key": w.key.to_hex()})).collect::<Vec<_>>(),
        "quorum": policy.quorum,
        "body": cp.body(),
        "cosign_message_hex": hex::encode(cosign_message(&cp)),
        "witness_key_id_hex": hex::encode(policy.key_id(&cp.origin)),
        "signers": signers,
        "note": note,
    })
}

#[test]
fn witnessed_checkpoint_matches_the_known_answer_vector() {
    let got = vector();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors/witnessed-checkpoint.json");
    if std::env::var_os("ECGFED_WRITE_VECTORS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
    }
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(got, want);
}

/// The same vector checked by py_ecc from docs/ledger.md's recipe (scripts/verify_witnessed.py),
/// and a one-digit change of the size refused there too.
#[test]
fn py_ecc_verifies_the_vector() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv-test/bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/setup.sh (it installs py_ecc for this test)",
        python.display()
    );
    let out = std::process::Command::new(python)
        .arg(root.join("scripts/verify_witnessed.py"))
        .arg(root.join("ledger/tests/vectors/witnessed-checkpoint.json"))
        .arg("--tamper")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("OK: ledger signature and aggregate of hospital-1, hospital-3"),
        "{text}"
    );
    assert!(text.contains("tampered size: refused"), "{text}");
}
