//! A federation of real processes for the end-to-end tests: one `ecgfed ledger serve` and two
//! `ecgfed gateway serve` over different sites ([`crate::shared::two_sites`]), with member
//! keys for two hospitals (`hosp-a`, `hosp-b`), two scientists (`sci`, `sci2`) and a
//! regulator (`reg`), all made by the `ecgfed` commands a person would run. Test kit: a
//! failure to set up panics with the reason.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use ecgfed_gateway::client::GatewayClient;
use ecgfed_gateway::client::RequestSigner;
use ecgfed_ledger::client::LedgerClient;
use ecgfed_ledger::keys::KeyPair;
use ecgfed_ledger::trust::TrustFile;
use ecgfed_proto::v1::DatasetInfo;

use crate::procs::{self, spawn_listening, terminate};

/// The sites of the federation's two gateways, in order.
pub const SITES: [&str; 2] = ["site-a", "site-b"];

/// The members, in genesis order after the ledger.
const MEMBERS: [&str; 6] = ["ledger", "hosp-a", "hosp-b", "sci", "sci2", "reg"];

/// A path as `&str` (test folders are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Runs `exe ARGS`, which must succeed; returns its standard output.
pub fn run(exe: &Path, args: &[&str]) -> String {
    procs::output(exe, args, &[]).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Runs `exe ARGS`, which must fail; returns its standard error.
pub fn run_fails(exe: &Path, args: &[&str]) -> String {
    let o = Command::new(exe)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {} {args:?}: {e}", exe.display()));
    assert!(!o.status.success(), "{} {args:?} succeeded", exe.display());
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Starts the server `exe ARGS` with `env` added, its standard error inherited; returns the
/// child and the address it listens on.
pub fn serve(exe: &Path, args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stderr(Stdio::inherit())
        .envs(env.iter().copied());
    spawn_listening(&mut cmd).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Stops a server with SIGTERM and waits for it.
pub fn stop(mut c: Child) {
    terminate(c.id());
    let _ = c.wait();
}

/// The running federation; dropping it stops every process.
pub struct Fed {
    /// The binary the processes run.
    pub exe: PathBuf,
    /// Keeps the federation's folder until the end.
    pub _tmp: tempfile::TempDir,
    /// The federation's folder: `<member>.key`, `genesis.toml`, `ledger/` (with
    /// `trust.json`), `store-a`, `store-b`, `gateway-a.toml`, `gateway-b.toml`, `gw-a`, `gw-b`.
    pub dir: PathBuf,
    /// The ledger's process, while running.
    pub ledger: Option<Child>,
    /// The ledger's address.
    pub ledger_addr: String,
    /// Per gateway: its process while running, its address, its config file.
    pub gateways: Vec<(Option<Child>, String, PathBuf)>,
    /// The gateways' k.
    pub k: u64,
}

impl Fed {
    /// Keys, genesis, ledger, both stores ingested and both gateways serving, from `exe`
    /// (the `ecgfed` binary under test).
    pub fn start(exe: &Path) -> Fed {
        let tmp = tempfile::tempdir().expect("a temporary folder");
        let dir = tmp.path().to_path_buf();
        let (site_a, site_b, k) = crate::shared::two_sites();
        let key = |m: &str| dir.join(format!("{m}.key")).display().to_string();
        for m in MEMBERS {
            run(exe, &["keys", "generate", "--out", &key(m)]);
        }
        let genesis = dir.join("genesis.toml");
        let mut args = vec![
            "ledger".to_string(),
            "genesis".into(),
            "--origin".into(),
            "ecgfed.test/e2e".into(),
            "--out".into(),
            s(&genesis).into(),
            // Two hospitals would both be needed to witness; these tests stop gateways.
            "--no-witnesses".into(),
        ];
        for (m, role) in MEMBERS.iter().zip([
            "ledger",
            "hospital:site-a",
            "hospital:site-b",
            "scientist",
            "scientist",
            "regulator",
        ]) {
            args.push("--member".into());
            args.push(format!("{m}:{role}={}", key(m)));
        }
        run(exe, &args.iter().map(String::as_str).collect::<Vec<_>>());
        let ldir = dir.join("ledger");
        let (ledger_key, data) = (key("ledger"), s(&ldir).to_string());
        run(
            exe,
            &[
                "ledger",
                "init",
                "--genesis",
                s(&genesis),
                "--data",
                &data,
                "--key",
                &ledger_key,
            ],
        );
        let (ledger, ledger_addr) = serve(
            exe,
            &[
                "ledger",
                "serve",
                "--data",
                &data,
                "--listen",
                "127.0.0.1:0",
                "--key",
                &ledger_key,
            ],
            &[],
        );
        let mut gateways = Vec::new();
        for (name, input) in [("a", &site_a), ("b", &site_b)] {
            let store = dir.join(format!("store-{name}"));
            let site = format!("site-{name}");
            run(
                exe,
                &[
                    "datasets",
                    "ingest",
                    s(input),
                    "--site",
                    &site,
                    "--out",
                    s(&store),
                ],
            );
            let cfg = dir.join(format!("gateway-{name}.toml"));
            std::fs::write(
                &cfg,
                format!(
                    "site = \"site-{name}\"\nmember = \"hosp-{name}\"\nkey_file = \"hosp-{name}.key\"\nstore = \"store-{name}\"\ndata = \"gw-{name}\"\nlisten = \"127.0.0.1:0\"\nk = {k}\n[ledger]\naddress = \"{ledger_addr}\"\ntrust = \"ledger/trust.json\"\n"
                ),
            )
            .expect("writing a gateway config");
            let (child, addr) = serve(exe, &["gateway", "serve", "--config", s(&cfg)], &[]);
            gateways.push((Some(child), addr, cfg));
        }
        Fed {
            exe: exe.to_path_buf(),
            _tmp: tmp,
            dir,
            ledger: Some(ledger),
            ledger_addr,
            gateways,
            k,
        }
    }

    /// Member `name`'s key file.
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }

    /// A request signer for `member`.
    pub fn signer(&self, member: &str) -> Arc<RequestSigner> {
        let key = KeyPair::read_file(&self.key(member)).expect("a member key");
        Arc::new(RequestSigner::new(member, key))
    }

    /// A verifying ledger client trusting the genesis checkpoint, brought up to date; its
    /// calls carry the ledger operator's call token (entries are signed by their signers).
    pub async fn ledger_client(&self) -> LedgerClient {
        let (_, cp, key) =
            TrustFile::read(&self.dir.join("ledger/trust.json")).expect("the trust file");
        let mut c = LedgerClient::connect(&self.ledger_addr, &cp.origin.clone(), key, Some(cp))
            .await
            .expect("connecting to the ledger");
        let op = KeyPair::read_file(&self.key(MEMBERS[0])).expect("the operator's key");
        c.act_as(MEMBERS[0], op);
        c.update_checkpoint()
            .await
            .expect("updating the checkpoint");
        c
    }

    /// A client of gateway `i` signing as `member`.
    pub async fn gateway(&self, i: usize, member: &str) -> GatewayClient {
        GatewayClient::connect(&self.gateways[i].1, SITES[i], self.signer(member))
            .await
            .expect("connecting to the gateway")
    }

    /// The dataset gateway `i` serves, as `member` sees it.
    pub async fn dataset(&self, i: usize, member: &str) -> DatasetInfo {
        let list = self
            .gateway(i, member)
            .await
            .list_datasets()
            .await
            .expect("listing datasets");
        list.datasets[0].clone()
    }

    /// The ledger's size at its latest verified checkpoint.
    pub async fn ledger_size(&self) -> u64 {
        self.ledger_client()
            .await
            .trusted()
            .expect("a trusted checkpoint")
            .size
    }

    /// Stops gateway `i` (if running) and starts it again with `env` added.
    pub fn restart_gateway(&mut self, i: usize, env: &[(&str, &str)]) {
        if let Some(c) = self.gateways[i].0.take() {
            stop(c);
        }
        let cfg = self.gateways[i].2.clone();
        let (child, addr) = serve(&self.exe, &["gateway", "serve", "--config", s(&cfg)], env);
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
