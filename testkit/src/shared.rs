//! Where the data of the tests is: the workspace's embedded sample and the shared ECG
//! folders beside the project (`../shared/ecg`), which must be present, not skipped, when
//! `ECGFED_REQUIRE_SHARED` is set (CI sets it wherever the folder exists).

use std::path::PathBuf;

/// The workspace's root folder (the source tree this kit was built from).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The embedded sample (`datasets/sample`): a few records of each public database.
pub fn sample() -> PathBuf {
    workspace_root().join("datasets/sample")
}

/// The shared ECG folder, if it holds every one of `subs` (e.g. `["mitdb"]`). Panics when it
/// does not and `ECGFED_REQUIRE_SHARED` is set, so that a run meant to use the real data
/// cannot quietly fall back to the sample.
pub fn shared_ecg(subs: &[&str]) -> Option<PathBuf> {
    let shared = workspace_root().join("../shared/ecg");
    let missing: Vec<&str> = subs
        .iter()
        .copied()
        .filter(|s| !shared.join(s).exists())
        .collect();
    if missing.is_empty() {
        return Some(shared);
    }
    assert!(
        std::env::var_os("ECGFED_REQUIRE_SHARED").is_none(),
        "{}: {missing:?} missing (ECGFED_REQUIRE_SHARED is set)",
        shared.display()
    );
    eprintln!("shared ECG data not present: using the embedded sample");
    None
}

/// Two sites' input folders and the k that suits them: LUDB and CinC 2021 Georgia from the
/// shared folder (k = 5), else the embedded sample's LUDB and CinC 2021 (k = 2).
pub fn two_sites() -> (PathBuf, PathBuf, u64) {
    match shared_ecg(&["ludb", "cinc2021/georgia"]) {
        Some(shared) => (shared.join("ludb"), shared.join("cinc2021/georgia"), 5),
        None => {
            let sample = sample();
            (sample.join("ludb"), sample.join("cinc2021"), 2)
        }
    }
}
