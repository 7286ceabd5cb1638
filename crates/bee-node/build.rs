//! Exports the `skynet_*` functions (defined by bee-capi) from the node binary's dynamic
//! symbol table, so the skynet C service modules it loads (`kind = "cservice"`) find them.
//! Only those: `-rdynamic` would export every symbol of the binary (tens of thousands).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol=skynet_*");
    // What skynet's Lua C modules (luaclib/skynet.so) also need from their host.
    for sym in [
        "socket_info_release",
        "malloc_*",
        "mallctl_*",
        "memory_info_dump",
        "dump_c_mem",
        "dump_mem_lua",
        // bee's `luaL_openlibs` (the Lua library's, then `require "protobuf"`).
        "luaL_openlibs",
    ] {
        println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol={sym}");
    }
}
