//! Helpers shared by the CLI's process tests.
#![allow(dead_code)]

pub(crate) mod fed;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Spawns `cmd` (a server printing "listening on ADDR" as its first line of standard output)
/// and returns the child and ADDR.
pub(crate) fn spawn_listening(cmd: &mut Command) -> (Child, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{cmd:?}: unexpected first line {line:?}"))
        .to_string();
    (child, addr)
}
