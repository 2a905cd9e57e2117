//! Compiles the ecgfed v1 protocol buffers with tonic's build tooling. protoc comes from the
//! project's set-up script (scripts/setup.sh); `PROTOC` may point at another one.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "ecgfed/v1/datasets.proto",
        "ecgfed/v1/ledger.proto",
        "ecgfed/v1/gateway.proto",
        "ecgfed/v1/witness.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&protos, &["."])
        .map_err(|e| {
            format!("compiling {protos:?} (is protoc installed? run scripts/setup.sh): {e}")
        })?;
    Ok(())
}
