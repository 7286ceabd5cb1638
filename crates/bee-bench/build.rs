//! Exports the `skynet_*` functions (defined by bee-capi) from `bee-bench` and its test
//! binaries, so the C service module `cpp-rpc` loads (`bench.so`) finds them.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol=skynet_*");
    println!("cargo:rustc-link-arg-tests=-Wl,--export-dynamic-symbol=skynet_*");
}
