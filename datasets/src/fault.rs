//! Fault injection for tests (cargo feature `fault-injection`, off by default): stops
//! [`crate::store::delete_patients`] with an error at a named step, leaving the store as a
//! crash at that point would (temporary files included); makes the reader of a named file
//! panic, as a bug in a third party's parser would. Erasure settings are per thread, so tests
//! running in parallel do not disturb each other; reader panics are per file path (ingest
//! reads on rayon's threads).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A point in [`crate::store::delete_patients`] where a test may stop it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErasureStep {
    /// The rewritten copy of this store file was written and synced, not yet renamed.
    FileTmpWritten(String),
    /// The rewritten copy was renamed over this store file; the folder is not yet synced.
    FileRenamed(String),
    /// Every file is rewritten; the manifest is not yet recomputed or written.
    BeforeManifest,
    /// The new manifest's temporary file was written and synced, not yet renamed.
    ManifestTmpWritten,
    /// The new manifest was renamed into place; the folder is not yet synced.
    ManifestRenamed,
}

thread_local! {
    static STOP_AT: RefCell<Option<ErasureStep>> = const { RefCell::new(None) };
    static REACHED: RefCell<Vec<ErasureStep>> = const { RefCell::new(Vec::new()) };
}

/// Stops the next erasure on this thread when it reaches `step` (`None`: never stop).
pub fn stop_erasure_at(step: Option<ErasureStep>) {
    STOP_AT.with(|s| *s.borrow_mut() = step);
}

/// The steps erasures on this thread reached since the last call, in order (then forgotten).
pub fn reached_steps() -> Vec<ErasureStep> {
    REACHED.with(|r| std::mem::take(&mut *r.borrow_mut()))
}

/// Records `step`; true when the erasure must stop there (the stop is then disarmed).
pub(crate) fn reached(step: ErasureStep) -> bool {
    REACHED.with(|r| r.borrow_mut().push(step.clone()));
    STOP_AT.with(|s| {
        let mut s = s.borrow_mut();
        if s.as_ref() == Some(&step) {
            *s = None;
            true
        } else {
            false
        }
    })
}

/// Record files whose reading panics.
static PANIC_READING: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Makes every later [`crate::load::load_record`] of the file `path` panic, on any thread.
pub fn panic_when_reading(path: &Path) {
    PANIC_READING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(path.to_path_buf());
}

/// Panics when a test armed [`panic_when_reading`] for `path`.
pub(crate) fn reading(path: &Path) {
    let armed = PANIC_READING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(path);
    if armed {
        panic!("fault injection: reader panic on {}", path.display());
    }
}
