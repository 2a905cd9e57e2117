//! The federation of real processes (`ecgfed_testkit::federation`) with this package's
//! `ecgfed` binary: one ledger and two gateways over different sites, member keys for two
//! hospitals, two scientists and a regulator.

use std::path::{Path, PathBuf};
use std::process::Child;

use ecgfed_ledger::client::LedgerClient;
use ecgfed_proto::v1::entry_body::Payload;
use ecgfed_proto::v1::{Subject, SubjectKind};

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
