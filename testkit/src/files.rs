//! Files of test federations: copying a closed store's folder (a ledger's RocksDB, to fork it,
//! roll it back or restore it from a mirror).

use std::path::Path;

use anyhow::{Context, Result};

/// Copies the folder `from` (recursively) to `to`, creating it.
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for e in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()))?;
        } else {
            std::fs::copy(e.path(), to.join(e.file_name()))
                .with_context(|| format!("copying {}", e.path().display()))?;
        }
    }
    Ok(())
}
