//! Helpers shared by the CLI's process tests.
#![allow(dead_code)]

pub(crate) mod fed;

use std::process::{Child, Command};

/// Spawns `cmd` (a server printing "listening on ADDR" as its first line of standard output)
/// and returns the child and ADDR.
pub(crate) fn spawn_listening(cmd: &mut Command) -> (Child, String) {
    ecgfed_testkit::procs::spawn_listening(cmd).unwrap()
}

/// The JSON schema at `path` under audit/schemas.
pub(crate) fn schema(path: &str) -> jsonschema::Validator {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../audit/schemas")
        .join(path);
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&v)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Fails with every error when `doc` does not validate against `v`.
pub(crate) fn assert_valid(v: &jsonschema::Validator, doc: &serde_json::Value, what: &str) {
    let errors: Vec<String> = v
        .iter_errors(doc)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{what} does not validate: {errors:?}");
}

/// What `erase_after_demo` started: the demo's ledger again and two hospitals' witnesses.
pub(crate) struct Restarted {
    ledger: Child,
    witnesses: Vec<Child>,
}

impl Restarted {
    /// Stops them.
    pub(crate) fn stop(self) {
        fed::stop(self.ledger);
        for w in self.witnesses {
            fed::stop(w);
        }
    }
}

/// After a demo in `data` (every process stopped): restarts its ledger on `addr` with the
/// witness roles of site-a and site-c run standalone on their gateways' witness state (a
/// quorum of 2 of 3), and erases, at site-b's stopped gateway (`ecgfed gateway erase`, which
/// works on its folders and records RecordsErased), the patient of the first row of
/// `slice`, site-b's slice.
pub(crate) fn erase_after_demo(
    data: &std::path::Path,
    addr: &str,
    slice: &ecgfed_gateway::server::SliceRecord,
) -> Restarted {
    use fed::{run, s, serve};
    let ledger = data.join("ledger");
    let seg = &slice.segments[0];
    let record = seg.split_once('/').unwrap().1.split_once('@').unwrap().0;
    let store = data.join("site-b/store");
    let patient = ecgfed_datasets::store::read_record(&store, record).unwrap()[0]
        .segment
        .patient
        .clone();
    let mut witnesses = Vec::new();
    let mut witness_args = Vec::new();
    for (site, member) in [("site-a", "hosp-a"), ("site-c", "hosp-c")] {
        let dir = data.join(site);
        let (child, waddr) = serve(
            &[
                "witness",
                "serve",
                "--member",
                member,
                "--key",
                s(&dir.join(format!("{member}.key"))),
                "--trust",
                s(&dir.join("trust.json")),
                "--data",
                s(&dir.join("gw")),
                "--listen",
                "127.0.0.1:0",
            ],
            &[],
        );
        witnesses.push(child);
        witness_args.push(format!("{member}={waddr}"));
    }
    let (lcert, lkey) = (ledger.join("tls-cert.pem"), ledger.join("tls-key.pem"));
    let mut args = vec![
        "ledger",
        "serve",
        "--data",
        s(&ledger),
        "--listen",
        addr,
        "--tls-cert",
        s(&lcert),
        "--tls-key",
        s(&lkey),
    ];
    for w in &witness_args {
        args.push("--witness");
        args.push(w);
    }
    let (ledger_proc, _) = serve(&args, &[]);
    run(&[
        "gateway",
        "erase",
        "--config",
        s(&data.join("site-b/gateway.toml")),
        "--patient",
        &patient,
    ]);
    Restarted {
        ledger: ledger_proc,
        witnesses,
    }
}

/// Fails unless `erased` (`audit lineage --erased --json` lines) lists an erasure at `site`
/// whose cohort fed `model`.
pub(crate) fn assert_erasure_reaches(erased: &str, site: &str, model: &str) {
    let hits: Vec<serde_json::Value> = erased
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        hits.iter().any(|h| h["erasure"]["site"] == site
            && h["usage"]["models"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["model_id"] == model)),
        "--erased does not list model {model}: {erased}"
    );
}
