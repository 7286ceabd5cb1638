//! Compiles `proto/*.proto` and the demo C++ mail service's `cservices/proto/mail.proto`
//! with protox (a pure-Rust protobuf compiler, so no `protoc` binary is needed on the
//! machine) and generates Rust types with prost-build.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&root)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "proto") {
            println!("cargo:rerun-if-changed={}", path.display());
            files.push(path);
        }
    }
    files.sort();
    let cservices = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../cservices/proto");
    let mail = cservices.join("mail.proto");
    println!("cargo:rerun-if-changed={}", mail.display());
    files.push(mail);
    let fds = protox::compile(&files, [&root, &cservices])?;
    // Type names give every message `prost::Name` (its full name, e.g. `game.LoginReq`),
    // which is the message name carried in game frames.
    // The descriptor set itself (`protoc -o` output) for code that registers types at
    // run time, such as Lua's `protobuf.register`.
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("descriptors.pb"),
        prost::Message::encode_to_vec(&fds),
    )?;
    prost_build::Config::new()
        .enable_type_names()
        .compile_fds(fds)?;
    Ok(())
}
