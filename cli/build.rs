include!("../build-support/torch_rpath.rs");

fn main() {
    torch_rpath();
}
