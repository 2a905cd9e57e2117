//! A federation in one process for the gateway's security tests: a ledger (RocksDB, served by
//! its real tonic service on a loopback port) built with the ledger's `test-kit` (so that a
//! test can play a compromised ledger host), two hospital gateways (real RocksDB key stores,
//! real site stores ingested from the embedded sample, real tonic servers on loopback) and two
//! scientists.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ecgfed_datasets::ingest::{IngestOptions, ingest};
use ecgfed_gateway::Gateway;
use ecgfed_gateway::client::GatewayClient;
use ecgfed_gateway::client::RequestSigner;
use ecgfed_gateway::server::{GatewayConfig, LedgerConfig, Policy};
use ecgfed_ledger::Ledger;
use ecgfed_ledger::client::LedgerClient;
use ecgfed_ledger::entry::EntrySigner;
use ecgfed_proto::v1::entry_body::Payload;
use ecgfed_proto::v1::{AllocationCell, CohortCreated, StrataDimension};
use ecgfed_testkit::local::TestLedger;
use ecgfed_testkit::members::Members;

pub(crate) const ORIGIN: &str = "ecgfed.test/gateway";
pub(crate) const SITES: [&str; 2] = ["site-a", "site-b"];

/// The embedded sample's CinC 2017 folder (single-lead, about 70 records).
pub(crate) fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../datasets/sample/cinc2017")
}

/// One running gateway: its address, its state and how to stop it.
pub(crate) struct Running {
    pub addr: String,
    pub gw: Arc<Gateway>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

pub(crate) struct Fed {
    pub tmp: tempfile::TempDir,
    pub ledger: Arc<Ledger>,
    pub ledger_addr: String,
    pub members: Members,
    pub trust: PathBuf,
    pub cfgs: Vec<GatewayConfig>,
    pub gateways: Vec<Option<Running>>,
    served: TestLedger,
}

impl Fed {
    /// Ledger, stores and both gateways running, with `policy` at both gateways.
    pub(crate) async fn start(policy: Policy) -> Fed {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let members = Members::new(ORIGIN)
            .hospital("hosp-a", "site-a")
            .hospital("hosp-b", "site-b")
            .scientist("sci")
            .scientist("sci2");
        let served = TestLedger::start(dir, &members).await.unwrap();
        let mut cfgs = Vec::new();
        for (site, member) in SITES.iter().zip(["hosp-a", "hosp-b"]) {
            let store = dir.join(format!("store-{site}"));
            let opts = IngestOptions {
                site: site.to_string(),
                ..Default::default()
            };
            ingest(&[sample()], &store, &opts, &|_| {}).unwrap();
            cfgs.push(GatewayConfig {
                site: site.to_string(),
                member: member.into(),
                key_file: members.write_key(member, dir).unwrap(),
                store,
                data: dir.join(format!("gw-{site}")),
                dataset_id: None,
                listen: "127.0.0.1:0".parse().unwrap(),
                ledger: LedgerConfig {
                    address: served.addr(),
                    trust: served.trust.clone(),
                },
                k: 2,
                age_edges: vec![20, 40, 60, 80],
                policy: policy.clone(),
                tls: None,
            });
        }
        let mut fed = Fed {
            tmp,
            ledger: Arc::clone(&served.served.ledger),
            ledger_addr: served.addr(),
            trust: served.trust.clone(),
            members,
            cfgs,
            gateways: vec![None, None],
            served,
        };
        for i in 0..2 {
            fed.start_gateway(i).await.unwrap();
        }
        fed
    }

    /// Starts gateway `i` (after a stop).
    pub(crate) async fn start_gateway(
        &mut self,
        i: usize,
    ) -> Result<(), ecgfed_gateway::GatewayError> {
        let gw = Gateway::start(self.cfgs[i].clone()).await?;
        let (l, addr) = ecgfed_ledger::service::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let served = Arc::clone(&gw);
        let task = tokio::spawn(async move {
            let _ = ecgfed_gateway::server::serve(served, l, async {
                let _ = rx.await;
            })
            .await;
        });
        self.gateways[i] = Some(Running {
            addr: addr.to_string(),
            gw,
            stop,
            task,
        });
        Ok(())
    }

    /// Stops gateway `i` and waits until its key store is closed (a crash of the process,
    /// as far as its folders are concerned).
    pub(crate) async fn stop_gateway(&mut self, i: usize) {
        let Some(r) = self.gateways[i].take() else {
            return;
        };
        let _ = r.stop.send(());
        let _ = r.task.await;
        let weak = Arc::downgrade(&r.gw);
        drop(r.gw);
        for _ in 0..200 {
            if weak.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("gateway {i} still referenced after its server stopped");
    }

    pub(crate) fn gw(&self, i: usize) -> &Arc<Gateway> {
        &self.gateways[i].as_ref().expect("running").gw
    }

    pub(crate) fn addr(&self, i: usize) -> String {
        self.gateways[i].as_ref().expect("running").addr.clone()
    }

    pub(crate) fn signer(&self, member: &str) -> Arc<RequestSigner> {
        self.members.request_signer(member)
    }

    pub(crate) async fn client(&self, i: usize, member: &str) -> GatewayClient {
        GatewayClient::connect(&self.addr(i), SITES[i], self.signer(member))
            .await
            .unwrap()
    }

    pub(crate) async fn ledger_client(&self) -> LedgerClient {
        self.served.client(&self.members).await.unwrap()
    }

    pub(crate) fn entry_signer(&self, member: &str) -> EntrySigner {
        self.members.signer(member)
    }

    /// Creates cohort `id` for `who`, taking `take` segments (0: all) of each of the first
    /// `cells` visible strata cells of each site in `sites`; returns the allocation.
    pub(crate) async fn cohort(
        &self,
        who: &str,
        id: &str,
        sites: &[usize],
        cells: usize,
        take: u64,
    ) -> Vec<AllocationCell> {
        let mut allocation = Vec::new();
        for &i in sites {
            let t = self
                .client(i, who)
                .await
                .strata(
                    "",
                    &[
                        StrataDimension::Label,
                        StrataDimension::Sex,
                        StrataDimension::AgeBand,
                    ],
                )
                .await
                .unwrap();
            for c in t.cells.iter().filter(|c| c.segments >= take).take(cells) {
                allocation.push(AllocationCell {
                    site: SITES[i].to_string(),
                    label: c.key[0].clone(),
                    sex: c.key[1].clone(),
                    age_band: c.key[2].clone(),
                    count: if take == 0 { c.segments } else { take },
                });
            }
        }
        assert!(
            !allocation.is_empty(),
            "no strata cell with {take} segments"
        );
        let e = self
            .entry_signer(who)
            .sign(Payload::CohortCreated(CohortCreated {
                cohort_id: id.into(),
                spec_sha256: vec![1; 32],
                allocation: allocation.clone(),
                seed: 42,
                purpose: "security test".into(),
                requester: who.into(),
                ..Default::default()
            }));
        self.ledger_client().await.submit(e).await.unwrap();
        allocation
    }

    /// Every file under `dir`, recursively.
    pub(crate) fn files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p);
                }
            }
        }
        out
    }
}

/// True when `needle` occurs in `hay`.
pub(crate) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
