//! Fault injection for tests (cargo feature `fault-injection`, off by default): stops
//! [`crate::store::delete_patients`] with an error at a named step, leaving the store as a
//! crash at that point would (temporary files included). Settings are per thread, so tests
//! running in parallel do not disturb each other.

use std::cell::RefCell;

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
