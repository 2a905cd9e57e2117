//! Helpers shared by the CLI's process tests.
#![allow(dead_code)]

pub(crate) mod fed;

use std::process::{Child, Command};

/// Spawns `cmd` (a server printing "listening on ADDR" as its first line of standard output)
/// and returns the child and ADDR.
pub(crate) fn spawn_listening(cmd: &mut Command) -> (Child, String) {
    ecgfed_testkit::procs::spawn_listening(cmd).unwrap()
}
