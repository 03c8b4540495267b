//! Compiles every `.proto` under `bosun/` with protox (pure Rust: no `protoc` needed) and
//! writes the encoded descriptor set that reflection and HTTP transcoding read at run time.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let mut files = Vec::new();
    collect_protos(&root.join("bosun"), &mut files)?;
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    // Directories too, so a new .proto file (not only an edited one) reruns this script.
    println!("cargo:rerun-if-changed={}", root.join("bosun").display());
    println!("cargo:rerun-if-changed={}", root.join("google").display());

    let mut compiler = protox::Compiler::new([root.clone()])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(&files)?;

    // protox's `file_descriptor_set()` round-trips through prost-types and drops the
    // google.api.http options; the runtime copy must be encoded directly (STACK.md trap 2).
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("bosun_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // No `XClient::connect(url)` constructors: callers build their own `Channel` (TLS,
        // timeouts), and `AgentChannel.Connect` would clash with it.
        .build_transport(false)
        .compile_fds(compiler.file_descriptor_set())?;

    // The agent channel again, over the first pass's output, with the lean codec: a gateway
    // holds one of its streams per node for days (see src/codec.rs).
    let mut agent = compiler.file_descriptor_set();
    agent.file.retain(|file| {
        file.name() == "bosun/agent/v1/agent.proto" || file.name().starts_with("google/protobuf/")
    });
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .codec_path("crate::codec::LeanCodec")
        .compile_fds(agent)?;
    Ok(())
}

fn collect_protos(dir: &std::path::Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
