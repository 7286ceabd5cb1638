//! Compiles the `skynet_error` shim (C: stable Rust cannot define a C-variadic
//! function), and exports the `skynet_*` functions from bee-capi's own test binaries so
//! the modules they load find them.

fn main() {
    println!("cargo:rerun-if-changed=csrc/skynet_error.c");
    cc::Build::new()
        .file("csrc/skynet_error.c")
        .std("c99")
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .flag("-Wall")
        .flag("-Wextra")
        .flag("-Werror")
        .compile("bee_capi_shim");
    println!("cargo:rustc-link-arg-tests=-Wl,--export-dynamic-symbol=skynet_*");
}
