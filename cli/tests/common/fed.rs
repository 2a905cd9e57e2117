//! A federation of real processes for the end-to-end tests: one `ecgfed ledger serve` and
//! two `ecgfed gateway serve` over different sites of `../shared/ecg` (LUDB and CinC 2021
//! Georgia; the embedded sample's folders when the shared data is absent), with member keys
//! for two hospitals, two scientists and a regulator.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use ecgfed_gateway::client::GatewayClient;
use ecgfed_gateway::client::signing::RequestSigner;
use ecgfed_ledger::client::LedgerClient;
use ecgfed_ledger::keys::KeyPair;
use ecgfed_ledger::trust::TrustFile;
use ecgfed_proto::v1::entry_body::Payload;
use ecgfed_proto::v1::{DatasetInfo, Subject, SubjectKind};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_ecgfed");
/// The sites of the federation's two gateways, in order.
pub(crate) const SITES: [&str; 2] = ["site-a", "site-b"];

pub(crate) fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub(crate) fn run(args: &[&str]) -> String {
    let o = Command::new(BIN).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "ecgfed {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Starts `ecgfed ARGS` and waits for its "listening on ADDR" line.
/// Runs `ecgfed ARGS`, which must fail; returns its standard error.
pub(crate) fn run_fails(args: &[&str]) -> String {
    let o = Command::new(BIN).args(args).output().unwrap();
    assert!(!o.status.success(), "ecgfed {args:?} succeeded");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Payloads of the ledger entries naming a subject, in log order.
pub(crate) async fn payloads(l: &mut LedgerClient, kind: SubjectKind, id: &str) -> Vec<Payload> {
    l.query_subject(
        Subject {
            kind: kind as i32,
            id: id.into(),
        },
        0,
        0,
    )
    .await
    .unwrap()
    .into_iter()
    .filter_map(|e| e.body.payload)
    .collect()
}

pub(crate) fn serve(args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    super::spawn_listening(&mut cmd)
}

pub(crate) fn stop(mut c: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status();
    let _ = c.wait();
}

/// The two sites' input folders and k.
pub(crate) fn sites() -> (PathBuf, PathBuf, u64) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let shared = root.join("../shared/ecg");
    if shared.join("ludb").is_dir() && shared.join("cinc2021/georgia").is_dir() {
        return (shared.join("ludb"), shared.join("cinc2021/georgia"), 5);
    }
    assert!(
        std::env::var_os("ECGFED_REQUIRE_SHARED").is_none(),
        "{} missing",
        shared.display()
    );
    eprintln!("shared ECG data not present: using the embedded sample");
    let sample = root.join("datasets/sample");
    (sample.join("ludb"), sample.join("cinc2021"), 2)
}

pub(crate) struct Fed {
    pub _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub ledger: Option<Child>,
    pub ledger_addr: String,
    pub gateways: Vec<(Option<Child>, String, PathBuf)>,
    pub k: u64,
}

impl Fed {
    pub(crate) fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }
    pub(crate) fn signer(&self, member: &str) -> Arc<RequestSigner> {
        Arc::new(RequestSigner::new(
            member,
            KeyPair::read_file(&self.key(member)).unwrap(),
        ))
    }
    pub(crate) async fn ledger_client(&self) -> LedgerClient {
        let (_, cp, key) = TrustFile::read(&self.dir.join("ledger/trust.json")).unwrap();
        let mut c = LedgerClient::connect(&self.ledger_addr, &cp.origin.clone(), key, Some(cp))
            .await
            .unwrap();
        c.update_checkpoint().await.unwrap();
        c
    }
    pub(crate) async fn gateway(&self, i: usize, member: &str) -> GatewayClient {
        GatewayClient::connect(&self.gateways[i].1, SITES[i], self.signer(member))
            .await
            .unwrap()
    }
    /// The dataset gateway `i` serves, as `member` sees it.
    pub(crate) async fn dataset(&self, i: usize, member: &str) -> DatasetInfo {
        self.gateway(i, member)
            .await
            .list_datasets()
            .await
            .unwrap()
            .datasets[0]
            .clone()
    }
    pub(crate) async fn ledger_size(&self) -> u64 {
        self.ledger_client().await.trusted().unwrap().size
    }
    pub(crate) fn restart_gateway(&mut self, i: usize, env: &[(&str, &str)]) {
        if let Some(c) = self.gateways[i].0.take() {
            stop(c);
        }
        let cfg = self.gateways[i].2.clone();
        let (child, addr) = serve(&["gateway", "serve", "--config", s(&cfg)], env);
        self.gateways[i].0 = Some(child);
        self.gateways[i].1 = addr;
    }
}

impl Drop for Fed {
    fn drop(&mut self) {
        for g in self.gateways.iter_mut() {
            if let Some(c) = g.0.take() {
                stop(c);
            }
        }
        if let Some(c) = self.ledger.take() {
            stop(c);
        }
    }
}

pub(crate) fn federation() -> Fed {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let (site_a, site_b, k) = sites();
    for m in ["ledger", "hosp-a", "hosp-b", "sci", "sci2", "reg"] {
        run(&[
            "keys",
            "generate",
            "--out",
            s(&dir.join(format!("{m}.key"))),
        ]);
    }
    let key = |m: &str| dir.join(format!("{m}.key")).display().to_string();
    let genesis = dir.join("genesis.toml");
    run(&[
        "ledger",
        "genesis",
        "--origin",
        "ecgfed.test/e2e",
        "--member",
        &format!("ledger:ledger={}", key("ledger")),
        "--member",
        &format!("hosp-a:hospital:site-a={}", key("hosp-a")),
        "--member",
        &format!("hosp-b:hospital:site-b={}", key("hosp-b")),
        "--member",
        &format!("sci:scientist={}", key("sci")),
        "--member",
        &format!("sci2:scientist={}", key("sci2")),
        "--member",
        &format!("reg:regulator={}", key("reg")),
        "--out",
        s(&genesis),
    ]);
    let ldir = dir.join("ledger");
    run(&[
        "ledger",
        "init",
        "--genesis",
        s(&genesis),
        "--data",
        s(&ldir),
        "--key",
        &key("ledger"),
    ]);
    let (ledger, ledger_addr) = serve(
        &[
            "ledger",
            "serve",
            "--data",
            s(&ldir),
            "--listen",
            "127.0.0.1:0",
            "--key",
            &key("ledger"),
        ],
        &[],
    );
    let mut gateways = Vec::new();
    for (name, input) in [("a", &site_a), ("b", &site_b)] {
        let store = dir.join(format!("store-{name}"));
        run(&[
            "datasets",
            "ingest",
            s(input),
            "--site",
            &format!("site-{name}"),
            "--out",
            s(&store),
        ]);
        let cfg = dir.join(format!("gateway-{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "site = \"site-{name}\"\nmember = \"hosp-{name}\"\nkey_file = \"hosp-{name}.key\"\nstore = \"store-{name}\"\ndata = \"gw-{name}\"\nlisten = \"127.0.0.1:0\"\nk = {k}\n[ledger]\naddress = \"{ledger_addr}\"\ntrust = \"ledger/trust.json\"\n"
            ),
        )
        .unwrap();
        let (child, addr) = serve(&["gateway", "serve", "--config", s(&cfg)], &[]);
        gateways.push((Some(child), addr, cfg));
    }
    Fed {
        _tmp: tmp,
        dir,
        ledger: Some(ledger),
        ledger_addr,
        gateways,
        k,
    }
}
