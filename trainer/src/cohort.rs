//! The data scientist's side of the federation: strata from every gateway, the
//! `CohortCreated` entry (created once; re-planning the same spec reuses it), the
//! reservations and the verified pulls.

use std::sync::Arc;

use arrow::array::RecordBatch;
use ecgfed_gateway::client::GatewayClient;
use ecgfed_gateway::client::RequestSigner;
use ecgfed_ledger::client::{LedgerClient, Memory};
use ecgfed_ledger::entry::EntrySigner;
use ecgfed_ledger::keys::KeyPair;
use ecgfed_proto::v1::entry_body::Payload;
use ecgfed_proto::v1::{AllocationCell, CohortCreated, ReserveSliceRequest, StrataDimension};
use serde::{Deserialize, Serialize};

use crate::error::{CohortTaken, GatewayProblem, Result, TrainerError};
use crate::plan::Stratum;
use crate::spec::{Federation, GatewayEntry, LoadedSpec};
use ecgfed_ledger::log::Hash32;

/// Connections to the ledger and the gateways, as one member.
pub struct Session {
    /// The federation file.
    pub federation: Federation,
    /// Verifying ledger client.
    pub ledger: LedgerClient,
    signer: Arc<RequestSigner>,
    entry_signer: EntrySigner,
}

/// One gateway's dataset and age edges, as the planner saw them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteInfo {
    /// Site.
    pub site: String,
    /// Dataset id at the gateway.
    pub dataset_id: String,
    /// The gateway's age edges.
    pub age_edges: Vec<u32>,
    /// The gateway's k.
    pub k: u64,
    /// Cells the gateway suppressed.
    pub suppressed_cells: u64,
}

/// A cohort as recorded on the ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerCohort {
    /// The entry.
    pub entry: CohortCreated,
    /// Its ledger index.
    pub index: u64,
    /// True when this call wrote it.
    pub created: bool,
}

/// One site's verified slice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceReport {
    /// Site.
    pub site: String,
    /// Slice id.
    pub slice_id: String,
    /// Rows verified.
    pub rows: u64,
    /// Leaves announced erased since the reservation.
    pub erased: u64,
    /// Slice root (hex), as on the ledger.
    pub root: String,
    /// Ledger index of the CohortSliceCommitted entry.
    pub ledger_index: u64,
}

impl Session {
    /// Opens the federation: reads the member key, connects to the ledger with the trust file
    /// and brings its checkpoint up to date.
    pub async fn open(federation: Federation) -> Result<Session> {
        let key = KeyPair::read_file(&federation.key_file)?;
        let memory = federation
            .trust_state
            .clone()
            .map(|p| Memory::beside(p, &federation.member));
        let mut ledger = LedgerClient::open(&federation.ledger, &federation.trust, memory).await?;
        ledger.act_as(&federation.member, key.clone());
        ledger.update_checkpoint().await?;
        let signer = Arc::new(RequestSigner::new(&federation.member, key.clone()));
        let entry_signer = EntrySigner::new(&federation.member, key);
        Ok(Session {
            federation,
            ledger,
            signer,
            entry_signer,
        })
    }

    /// The member id.
    pub fn member(&self) -> &str {
        &self.federation.member
    }

    fn gateway_entry(&self, site: &str) -> Result<&GatewayEntry> {
        self.federation
            .gateways
            .iter()
            .find(|g| g.site == site)
            .ok_or_else(|| TrainerError::NotInFederation {
                site: site.into(),
                cohort: None,
            })
    }

    /// A signed client of `site`'s gateway.
    pub async fn gateway(&self, site: &str) -> Result<GatewayClient> {
        let g = self.gateway_entry(site)?;
        let signer = self.signer.clone();
        let r = match &g.ca {
            Some(ca) => {
                let pem = std::fs::read(ca).map_err(|e| TrainerError::io(ca, e))?;
                GatewayClient::connect_tls(&g.address, &g.site, signer, &pem, None).await
            }
            None => GatewayClient::connect(&g.address, &g.site, signer).await,
        };
        r.map_err(|e| TrainerError::gateway(site, e))
    }

    /// Visible strata (label × sex × age band) of every gateway, and each site's dataset.
    pub async fn strata(&self) -> Result<(Vec<Stratum>, Vec<SiteInfo>)> {
        let mut out = Vec::new();
        let mut sites = Vec::new();
        for g in &self.federation.gateways {
            let mut c = self.gateway(&g.site).await?;
            let ds = c
                .list_datasets()
                .await
                .map_err(|e| TrainerError::gateway(&g.site, e))?;
            let problem = |problem| TrainerError::GatewayAnswer {
                site: g.site.clone(),
                problem,
            };
            let d = ds
                .datasets
                .first()
                .ok_or_else(|| problem(GatewayProblem::NoDataset))?;
            if d.site != g.site {
                return Err(problem(GatewayProblem::OtherSite {
                    address: g.address.clone(),
                    served: d.site.clone(),
                }));
            }
            let t = c
                .strata(
                    &d.dataset_id,
                    &[
                        StrataDimension::Label,
                        StrataDimension::Sex,
                        StrataDimension::AgeBand,
                    ],
                )
                .await
                .map_err(|e| TrainerError::gateway(&g.site, e))?;
            for cell in &t.cells {
                let [label, sex, age_band] = cell.key.as_slice() else {
                    return Err(problem(GatewayProblem::StrataKeys {
                        keys: cell.key.len(),
                    }));
                };
                out.push(Stratum {
                    site: g.site.clone(),
                    label: label.clone(),
                    sex: sex.clone(),
                    age_band: age_band.clone(),
                    segments: cell.segments,
                    patients: cell.patients,
                });
            }
            sites.push(SiteInfo {
                site: g.site.clone(),
                dataset_id: d.dataset_id.clone(),
                age_edges: t.age_edges.clone(),
                k: t.k,
                suppressed_cells: t.suppressed_cells,
            });
        }
        Ok((out, sites))
    }

    /// The CohortCreated entry of `cohort_id` on the ledger, if any: proven, signed by its
    /// requester (a scientist the client replayed), and the only one for that id.
    pub async fn find_cohort(&mut self, cohort_id: &str) -> Result<Option<(u64, CohortCreated)>> {
        self.ledger
            .cohort(cohort_id)
            .await
            .map_err(|source| TrainerError::CohortLookup {
                cohort: cohort_id.into(),
                source,
            })
    }

    /// Writes `CohortCreated` for `spec` with `allocation`, or returns the existing entry when
    /// this cohort id is already on the ledger with the same spec hash and requester (the
    /// ledger's allocation is then the one that counts). A different spec under the same id is
    /// refused.
    pub async fn create_cohort(
        &mut self,
        spec: &LoadedSpec,
        allocation: Vec<AllocationCell>,
    ) -> Result<LedgerCohort> {
        let id = spec.cohort_id();
        if let Some((index, c)) = self.find_cohort(&id).await? {
            if c.spec_sha256 != spec.sha256 || c.requester != self.member() {
                return Err(TrainerError::CohortTaken(Box::new(CohortTaken {
                    cohort: id,
                    index,
                    ledger_spec: Hash32(c.spec_sha256.as_slice().try_into().unwrap_or_default()),
                    ledger_requester: c.requester,
                    spec: Hash32(spec.sha256),
                    requester: self.member().into(),
                })));
            }
            return Ok(LedgerCohort {
                entry: c,
                index,
                created: false,
            });
        }
        let entry = CohortCreated {
            cohort_id: id,
            spec_sha256: spec.sha256.to_vec(),
            allocation,
            seed: spec.spec.seed,
            purpose: spec.spec.purpose.clone(),
            requester: self.member().to_string(),
            // Pull cohorts keep the empty mode their entries always had.
            mode: if spec.spec.is_federated() {
                crate::spec::MODE_FEDERATED.into()
            } else {
                String::new()
            },
        };
        let index = self.record(Payload::CohortCreated(entry.clone())).await?;
        Ok(LedgerCohort {
            entry,
            index,
            created: true,
        })
    }

    /// Submits an entry signed by this member; returns its ledger index.
    pub async fn record(&mut self, payload: Payload) -> Result<u64> {
        let signed = self.entry_signer.sign(payload);
        Ok(self.ledger.submit(signed).await?.index)
    }

    /// Reserves `site`'s slice of `cohort` (idempotent at the gateway), checking that the
    /// gateway names this cohort's slice of this site.
    pub async fn reserve_site(
        &mut self,
        cohort: &CohortCreated,
        site: &SiteInfo,
    ) -> Result<(GatewayClient, ecgfed_proto::v1::ReserveSliceResponse)> {
        let mut c = self.gateway(&site.site).await?;
        let cells: Vec<AllocationCell> = cohort
            .allocation
            .iter()
            .filter(|a| a.site == site.site && a.count > 0)
            .cloned()
            .collect();
        let r = c
            .reserve(ReserveSliceRequest {
                cohort_id: cohort.cohort_id.clone(),
                dataset_id: site.dataset_id.clone(),
                seed: cohort.seed,
                allocation: cells,
            })
            .await
            .map_err(|e| TrainerError::gateway(&site.site, e))?;
        // The gateway names the slice; it must be this cohort's slice of this site (the pull
        // then checks its ledger entry with the ledger's rules).
        let want = ecgfed_ledger::state::slice_id(&cohort.cohort_id, &site.site);
        if r.slice_id != want {
            return Err(TrainerError::gateway(
                &site.site,
                ecgfed_gateway::error::VerificationError::WrongSlice {
                    reserved: r.slice_id,
                    expected: want,
                }
                .into(),
            ));
        }
        Ok((c, r))
    }

    /// Reserves `site`'s slice of `cohort` (idempotent at the gateway) and pulls it with every
    /// row verified against the ledger; `on_batch` sees verified batches only.
    pub async fn pull_site(
        &mut self,
        cohort: &CohortCreated,
        site: &SiteInfo,
        on_batch: impl FnMut(&RecordBatch),
    ) -> Result<SliceReport> {
        let (mut c, r) = self.reserve_site(cohort, site).await?;
        self.ledger.update_checkpoint().await?;
        let report = c
            .pull(&r.slice_id, &mut self.ledger, on_batch)
            .await
            .map_err(|e| TrainerError::gateway(&site.site, e))?;
        Ok(SliceReport {
            site: site.site.clone(),
            slice_id: report.slice_id,
            rows: report.rows,
            erased: report.erased,
            root: hex::encode(report.root),
            ledger_index: r.ledger_index,
        })
    }
}

/// Sites of a cohort's allocation, in order of first appearance.
pub fn cohort_sites(c: &CohortCreated) -> Vec<String> {
    let mut sites: Vec<String> = Vec::new();
    for a in &c.allocation {
        if !sites.contains(&a.site) {
            sites.push(a.site.clone());
        }
    }
    sites
}
