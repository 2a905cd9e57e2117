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
