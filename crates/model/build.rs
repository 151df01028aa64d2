//! Compiles `proto/` with protox (pure Rust): no system `protoc` needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = root.join("bowline/v1/config.proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile([&file], [&root])?;
    // Boxed: a weighted cluster rarely has header changes of its own, and a 1,000-route config
    // would otherwise carry two empty header-mod structs inline per cluster while it is decoded.
    tonic_prost_build::configure()
        .boxed(".bowline.v1.WeightedCluster.headers")
        .compile_fds(fds)?;
    Ok(())
}
