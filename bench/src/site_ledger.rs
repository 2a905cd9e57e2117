//! The ledger the gateway benches run against: in this process, RocksDB in a folder, served on
//! a loopback port, with a genesis of one hospital `hosp` for one site and one scientist `sci`.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use ecgfed_gateway::client::GatewayClient;
use ecgfed_ledger::client::LedgerClient;
use ecgfed_proto::v1::entry_body::Payload;
use ecgfed_proto::v1::{AllocationCell, CohortCreated, ReserveSliceRequest, StrataDimension};
use ecgfed_testkit::local::TestLedger;
use ecgfed_testkit::members::Members;

/// A bench ledger in this process whose genesis has a hospital `hosp` for one site and a
/// scientist `sci`.
pub(crate) struct BenchLedger {
    /// The members and their keys.
    pub(crate) members: Members,
    /// The hospital's key file.
    pub(crate) hosp_file: PathBuf,
    /// The trust file.
    pub(crate) trust: PathBuf,
    /// The ledger's address.
    pub(crate) addr: String,
    /// The site.
    pub(crate) site: String,
    ledger: TestLedger,
}

impl BenchLedger {
    /// Keys, genesis, trust file and the served ledger, in `dir`.
    pub(crate) async fn start(dir: &Path, origin: &str, site: &str) -> Result<BenchLedger> {
        let members = Members::new(origin).hospital("hosp", site).scientist("sci");
        let ledger = TestLedger::start(dir, &members).await?;
        let hosp_file = members.write_key("hosp", dir)?;
        Ok(BenchLedger {
            hosp_file,
            trust: ledger.trust.clone(),
            addr: ledger.addr(),
            site: site.into(),
            members,
            ledger,
        })
    }

    /// A verifying client of the ledger.
    pub(crate) async fn client(&self) -> Result<LedgerClient> {
        self.ledger.client(&self.members).await
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
        let mut es = self.members.signer("sci");
        ledger
            .submit(es.sign(Payload::CohortCreated(CohortCreated {
                cohort_id: id.into(),
                spec_sha256: vec![0; 32],
                allocation,
                seed: 1,
                purpose: "gateway bench".into(),
                requester: "sci".into(),
                ..Default::default()
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
