//! The federation of real processes (`ecgfed_testkit::federation`) with this package's
//! `ecgfed` binary: one ledger and two gateways over different sites, member keys for two
//! hospitals, two scientists and a regulator.

use std::path::{Path, PathBuf};
use std::process::Child;

use ecgfed_gateway::client::GatewayClient;
use ecgfed_ledger::client::LedgerClient;
use ecgfed_ledger::entry::EntrySigner;
use ecgfed_ledger::keys::KeyPair;
use ecgfed_proto::v1::entry_body::Payload;
use ecgfed_proto::v1::{
    AllocationCell, CohortCreated, ReserveSliceRequest, StrataDimension, Subject, SubjectKind,
};
use tonic::Code;

#[allow(unused_imports)]
pub(crate) use ecgfed_testkit::federation::{Fed, SITES, s, stop};

/// The `ecgfed` binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_ecgfed");

/// Runs `ecgfed ARGS`, which must succeed; returns its standard output.
pub(crate) fn run(args: &[&str]) -> String {
    ecgfed_testkit::federation::run(Path::new(BIN), args)
}

/// Runs `ecgfed ARGS`, which must fail; returns its standard error.
pub(crate) fn run_fails(args: &[&str]) -> String {
    ecgfed_testkit::federation::run_fails(Path::new(BIN), args)
}

/// Starts the server `ecgfed ARGS` with `env` added; the child and its address.
pub(crate) fn serve(args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    ecgfed_testkit::federation::serve(Path::new(BIN), args, env)
}

/// The two sites' input folders and k.
pub(crate) fn sites() -> (PathBuf, PathBuf, u64) {
    ecgfed_testkit::shared::two_sites()
}

/// The federation, started with this package's binary.
pub(crate) fn federation() -> Fed {
    Fed::start(Path::new(BIN))
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

/// Gateway `i`'s strata by label, sex and age band, as `who` sees them.
pub(crate) async fn strata_cells(fed: &Fed, i: usize, who: &str) -> ecgfed_proto::v1::StrataTable {
    fed.gateway(i, who)
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
        .unwrap()
}

/// Creates a cohort for `who` taking `take` segments from each of the first `cells` visible
/// (label, sex, age band) strata of each site, in `mode` ("" for pull, or "federated").
pub(crate) async fn create_cohort(
    fed: &Fed,
    who: &str,
    cohort: &str,
    cells: usize,
    take: u64,
    mode: &str,
) -> Vec<AllocationCell> {
    create_cohort_of(fed, who, cohort, cells, take, mode, [1; 32]).await
}

/// [`create_cohort`] for the spec of SHA-256 `spec_sha256`.
pub(crate) async fn create_cohort_of(
    fed: &Fed,
    who: &str,
    cohort: &str,
    cells: usize,
    take: u64,
    mode: &str,
    spec_sha256: [u8; 32],
) -> Vec<AllocationCell> {
    let mut allocation = Vec::new();
    for (i, site) in ["site-a", "site-b"].iter().enumerate() {
        let t = strata_cells(fed, i, who).await;
        for c in t.cells.iter().filter(|c| c.segments >= take).take(cells) {
            allocation.push(AllocationCell {
                site: site.to_string(),
                label: c.key[0].clone(),
                sex: c.key[1].clone(),
                age_band: c.key[2].clone(),
                count: take,
            });
        }
    }
    let mut signer = EntrySigner::new(who, KeyPair::read_file(&fed.key(who)).unwrap());
    let e = signer.sign(Payload::CohortCreated(CohortCreated {
        cohort_id: cohort.into(),
        spec_sha256: spec_sha256.to_vec(),
        allocation: allocation.clone(),
        seed: 42,
        purpose: "e2e test".into(),
        requester: who.into(),
        mode: mode.into(),
    }));
    fed.ledger_client().await.submit(e).await.unwrap();
    allocation
}

pub(crate) fn code(e: ecgfed_gateway::GatewayError) -> Code {
    match e {
        ecgfed_gateway::GatewayError::Refused { code, .. } => code,
        other => panic!("expected a refusal, got {other}"),
    }
}

/// The status of a reservation of `cohort` that must be refused.
pub(crate) async fn reserve_refused(g: &mut GatewayClient, cohort: &str) -> Code {
    let q = ReserveSliceRequest {
        cohort_id: cohort.into(),
        ..Default::default()
    };
    code(g.reserve(q).await.unwrap_err())
}

/// The status of a DoGet of `slice_id` that must be refused.
pub(crate) async fn do_get_refused(g: &mut GatewayClient, slice_id: &str) -> Code {
    match g.do_get_raw(slice_id).await {
        Err(e) => code(e),
        Ok(_) => panic!("DoGet of {slice_id} was not refused"),
    }
}
