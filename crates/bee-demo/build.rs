//! Exports the `skynet_*` functions (defined by bee-capi) from the node binary's dynamic
//! symbol table, so the skynet C service modules it loads (`kind = "cservice"`) find them.
//! Only those: `-rdynamic` would export every symbol of the binary (tens of thousands).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol=skynet_*");
}
