//! The ledger the gateway benches run against: in this process, RocksDB in a folder, served on
//! a loopback port, with a genesis of one hospital and one scientist (`bench` feature).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Result, bail};
use ecgfed_gateway::client::GatewayClient;
use ecgfed_ledger::Ledger;
use ecgfed_ledger::client::LedgerClient;
use ecgfed_ledger::entry::EntrySigner;
use ecgfed_ledger::genesis::{GenesisFile, GenesisMember};
use ecgfed_ledger::keys::KeyPair;
use ecgfed_ledger::trust::TrustFile;
use ecgfed_proto::v1::entry_body::Payload;
use ecgfed_proto::v1::{AllocationCell, CohortCreated, ReserveSliceRequest, StrataDimension};

/// A new key pair, written to `dir/<name>.key`.
fn write_key(dir: &Path, name: &str) -> Result<(KeyPair, PathBuf)> {
    let k = KeyPair::generate();
    let p = dir.join(format!("{name}.key"));
    k.write_file(&p)?;
    Ok((k, p))
}

/// A bench ledger in this process (RocksDB in `dir`, served on a loopback port) whose genesis
/// has a hospital `hosp` for one site and a scientist `sci`, with their keys.
pub(crate) struct BenchLedger {
    /// The ledger's key.
    pub ledger_key: KeyPair,
    /// The hospital's key file.
    pub hosp_file: PathBuf,
    /// The scientist's key.
    pub sci: KeyPair,
    /// The genesis checkpoint.
    pub cp: ecgfed_ledger::checkpoint::Checkpoint,
    /// The trust file.
    pub trust: PathBuf,
    /// The ledger's address.
    pub addr: String,
    /// The site.
    pub site: String,
    _ledger: Arc<Ledger>,
}

impl BenchLedger {
    /// Keys, genesis, trust file and the served ledger, in `dir`.
    pub(crate) async fn start(dir: &Path, origin: &str, site: &str) -> Result<BenchLedger> {
        std::fs::create_dir_all(dir)?;
        let (ledger_key, _) = write_key(dir, "ledger")?;
        let (hosp, hosp_file) = write_key(dir, "hosp")?;
        let (sci, _) = write_key(dir, "sci")?;
        let g = GenesisFile {
            origin: origin.into(),
            max_clock_skew_ms: 0,
            members: vec![
                GenesisMember::for_key("ledger", "ledger", "", &ledger_key),
                GenesisMember::for_key("hosp", "hospital", site, &hosp),
                GenesisMember::for_key("sci", "scientist", "", &sci),
            ],
        };
        let ldb = dir.join("ledger");
        let cp = Ledger::init(&ldb, &g, &ledger_key)?;
        let trust = dir.join("trust.json");
        TrustFile {
            origin: cp.origin.clone(),
            ledger_public_key: ledger_key.public().to_hex(),
            checkpoint: cp.sign(&ledger_key),
        }
        .write(&trust)?;
        let ledger = Ledger::open(&ldb, ledger_key.clone())?;
        let (ll, laddr) = ecgfed_ledger::service::bind("127.0.0.1:0".parse()?).await?;
        tokio::spawn(ecgfed_ledger::service::serve(
            Arc::clone(&ledger),
            ll,
            std::future::pending(),
        ));
        Ok(BenchLedger {
            ledger_key,
            hosp_file,
            sci,
            cp,
            trust,
            addr: laddr.to_string(),
            site: site.into(),
            _ledger: ledger,
        })
    }

    /// A verifying client of the ledger.
    pub(crate) async fn client(&self) -> Result<LedgerClient> {
        Ok(LedgerClient::connect(
            &self.addr,
            &self.cp.origin.clone(),
            self.ledger_key.public(),
            Some(self.cp.clone()),
        )
        .await?)
    }

    /// Creates cohort `id` taking the site's selectable segments, cell by cell, up to `rows`
    /// (all of them with `u64::MAX`; exactly `rows` otherwise), and reserves its slice.
    pub(crate) async fn cohort(
        &self,
        gateway: &mut GatewayClient,
        ledger: &mut LedgerClient,
        id: &str,
        rows: u64,
    ) -> Result<ecgfed_proto::v1::ReserveSliceResponse> {
        let t = gateway
            .strata(
                "",
                &[
                    StrataDimension::Label,
                    StrataDimension::Sex,
                    StrataDimension::AgeBand,
                ],
            )
            .await?;
        let mut allocation = Vec::new();
        let mut left = rows;
        for c in &t.cells {
            if left == 0 {
                break;
            }
            let n = c.segments.min(left);
            left -= n;
            allocation.push(AllocationCell {
                site: self.site.clone(),
                label: c.key[0].clone(),
                sex: c.key[1].clone(),
                age_band: c.key[2].clone(),
                count: n,
            });
        }
        if allocation.is_empty() {
            bail!("no strata cell reaches k = 2 patients");
        }
        if rows != u64::MAX && left > 0 {
            bail!(
                "the store has {} selectable rows, fewer than {rows}",
                rows - left
            );
        }
        let mut es = EntrySigner::new("sci", self.sci.clone());
        ledger
            .submit(es.sign(Payload::CohortCreated(CohortCreated {
                cohort_id: id.into(),
                spec_sha256: vec![0; 32],
                allocation,
                seed: 1,
                purpose: "gateway bench".into(),
                requester: "sci".into(),
            })))
            .await?;
        Ok(gateway
            .reserve(ReserveSliceRequest {
                cohort_id: id.into(),
                ..Default::default()
            })
            .await?)
    }
}
