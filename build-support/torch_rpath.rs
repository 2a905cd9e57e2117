// Shared by the build scripts of the crates that link libtorch (trainer, cli): records the
// libtorch library folder as the binaries' run path, so `ecgfed` and the test binaries start
// without LD_LIBRARY_PATH. LIBTORCH comes from .cargo/config.toml (or the caller's environment).
fn torch_rpath() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(dir) = std::env::var("LIBTORCH") {
        let lib = std::path::Path::new(&dir).join("lib");
        let lib = lib.canonicalize().unwrap_or(lib);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}
