//! Build script: lets the trainer find libtorch at run time (rpath; build-support/torch_rpath.rs) and
//! records the code version for ModelTrained.

include!("../build-support/torch_rpath.rs");

/// The code version recorded in ModelTrained: `git describe --always --dirty --abbrev=40` of
/// the source tree at build time, or `unknown` outside a git checkout.
fn main() {
    torch_rpath();
    for p in ["../.git/HEAD", "../.git/refs/heads", "../.git/packed-refs"] {
        if std::path::Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    let v = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=40"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=ECGFED_CODE_VERSION={v}");
}
