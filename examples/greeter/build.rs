//! Compiles `proto/greeter.proto` with protox (pure Rust, no `protoc` needed) into prost
//! types, as `crates/bee-proto` does for the demo.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "proto/greeter.proto";
    println!("cargo:rerun-if-changed={file}");
    let fds = protox::compile([file], ["proto"])?;
    // Type names give each message its protobuf full name (`greeter.Greet`): the name
    // a game frame carries and a "text" handler is picked by.
    prost_build::Config::new()
        .enable_type_names()
        .compile_fds(fds)?;
    Ok(())
}
