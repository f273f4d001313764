//! Compiles `proto/` with the pure-Rust `protox` compiler, so a build needs no
//! `protoc`, and keeps the descriptor set (with comments) for reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "grym/orchestrator/v1/orchestrator.proto",
    "grym/worker/v1/worker.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());

    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("grym_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        // Audio payloads are carried as `Bytes`, so passing them on copies nothing.
        .bytes(".")
        // Smaller per-call buffers than tonic's 8 KiB (src/codec.rs).
        .codec_path("crate::codec::GrymCodec")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
