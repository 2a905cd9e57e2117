//! Build script: lets the `ecgfed-bench` binary find libtorch at run time (rpath;
//! build-support/torch_rpath.rs).

include!("../build-support/torch_rpath.rs");

fn main() {
    torch_rpath();
}
