//! What skynet's Lua layer needs from its host beyond the C service API: the tree's own
//! patched Lua loaded as a process-wide shared library (so `snlua.so` and
//! `luaclib/skynet.so` resolve their `lua_*` symbols, including the patch's
//! `lua_sharefunction`/`lua_sharestring`/`lua_clonetable`),
//! `skynet_isremote`, `skynet_harbor_start`, the allocator-statistics functions of
//! skynet's no-jemalloc build. The `skynet_socket_*` entry points are in `crate::socket`,
//! Lua's allocator (`skynet_lalloc`) in `crate::lalloc`.
//!
//! See `docs/lua.md`.

use std::ffi::{c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};

use crate::context::SkynetContext;
use crate::{lock, CapiError};

/// The Lua library loaded into this process (one per process: every Lua state and every
/// Lua C module shares it), kept open for the life of the process.
static LUA: Mutex<Option<(PathBuf, Library)>> = Mutex::new(None);

/// Load `path` (a skynet tree's `liblua.so`) with `RTLD_NOW | RTLD_GLOBAL`, once per
/// process, and initialise its code cache. Loading a second, different library is an
/// error: two Lua runtimes in one process would mix their states.
pub fn load_lua(path: &Path) -> Result<(), CapiError> {
    let path = path.canonicalize().map_err(|e| CapiError::Load {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut slot = lock(&LUA);
    if let Some((loaded, _)) = slot.as_ref() {
        if *loaded == path {
            return Ok(());
        }
        return Err(CapiError::Load {
            path,
            reason: format!(
                "this process already runs the Lua library {}; one Lua per process",
                loaded.display()
            ),
        });
    }
    // SAFETY: loading the operator-configured Lua library runs its (trivial) initialisers;
    // RTLD_GLOBAL so that snlua.so and the Lua C modules opened later resolve `lua_*` from it.
    let lib = unsafe { Library::open(Some(&path), RTLD_NOW | RTLD_GLOBAL) }.map_err(|e| {
        CapiError::Load {
            path: path.clone(),
            reason: e.to_string(),
        }
    })?;
    type InitCache = unsafe extern "C" fn();
    // SAFETY: the symbol, when present, is skynet's patched `void luaL_initcodecache(void)`;
    // the library stays loaded (kept in `LUA`), so the fn pointer stays valid.
    let init = unsafe { lib.get::<InitCache>(b"luaL_initcodecache\0") }
        .map(|s| *s)
        .map_err(|_| CapiError::Load {
            path: path.clone(),
            reason: "no luaL_initcodecache: not skynet's patched Lua (build liblua.so from the skynet tree's 3rd/lua)".to_string(),
        })?;
    // SAFETY: called once per process, before any Lua state uses the code cache.
    unsafe { init() };
    tracing::info!(path = %path.display(), "Lua library loaded");
    *slot = Some((path, lib));
    Ok(())
}

/// `f` with the loaded Lua library, or `None` when none is loaded.
pub(crate) fn with_lua<R>(f: impl FnOnce(&Library) -> R) -> Option<R> {
    lock(&LUA).as_ref().map(|(_, lib)| f(lib))
}

/// The harbor byte of `handle` into `*harbor`; remote when it is non-zero (a bee node is
/// skynet's single-node mode, harbor 0).
#[no_mangle]
pub extern "C" fn skynet_isremote(_ctx: *mut c_void, handle: u32, harbor: *mut c_int) -> c_int {
    let h = (handle >> 24) as c_int;
    if !harbor.is_null() {
        // SAFETY: a non-null out-parameter points at an int the caller owns.
        unsafe { *harbor = h };
    }
    c_int::from(h != 0)
}

/// skynet's C `harbor` service registers itself with this. A bee node has no other
/// harbors: the service (which the bootstrap of single-node mode starts) only resolves
/// the node's global names (`DATACENTER`, `SERVICE`, …), which `skynet_sendname` hands it.
#[no_mangle]
pub extern "C" fn skynet_harbor_start(ctx: *mut SkynetContext) {
    // SAFETY: a context pointer this crate gave the harbor module (or NULL).
    if let Some(c) = unsafe { ctx.as_ref() } {
        c.host.set_harbor(c.handle());
    }
}

// The allocator statistics of skynet's build without jemalloc: nothing is counted.

/// Bytes allocated (not counted by bee: 0, as skynet without jemalloc).
#[no_mangle]
pub extern "C" fn malloc_used_memory() -> usize {
    0
}
/// Blocks allocated (0, as above).
#[no_mangle]
pub extern "C" fn malloc_memory_block() -> usize {
    0
}
/// Bytes of the current service (0, as above).
#[no_mangle]
pub extern "C" fn malloc_current_memory() -> usize {
    0
}
/// jemalloc statistics dump: none.
#[no_mangle]
pub extern "C" fn memory_info_dump(_opts: *const c_char) {
    tracing::info!(target: "skynet", "No jemalloc");
}
/// A jemalloc integer control: none (0).
#[no_mangle]
pub extern "C" fn mallctl_int64(_name: *const c_char, _newval: *mut usize) -> usize {
    tracing::info!(target: "skynet", "No jemalloc : mallctl_int64");
    0
}
/// A jemalloc command: none (0).
#[no_mangle]
pub extern "C" fn mallctl_cmd(_name: *const c_char) -> c_int {
    tracing::info!(target: "skynet", "No jemalloc : mallctl_cmd");
    0
}
/// A jemalloc boolean control: none (false).
#[no_mangle]
pub extern "C" fn mallctl_bool(_name: *const c_char, _newval: *mut bool) -> bool {
    tracing::info!(target: "skynet", "No jemalloc : mallctl_bool");
    false
}
/// Per-service C memory dump: nothing counted.
#[no_mangle]
pub extern "C" fn dump_c_mem() {}
/// Per-service memory as a Lua table (handle → bytes), a Lua C function: pushes an empty
/// table (nothing is counted).
#[no_mangle]
pub extern "C" fn dump_mem_lua(l: *mut c_void) -> c_int {
    type CreateTable = unsafe extern "C" fn(*mut c_void, c_int, c_int);
    let slot = lock(&LUA);
    let Some((_, lib)) = slot.as_ref() else {
        return 0;
    };
    // SAFETY: `lua_createtable(lua_State*, int, int)` of the loaded Lua, which stays loaded.
    let Ok(create) = (unsafe { lib.get::<CreateTable>(b"lua_createtable\0") }).map(|s| *s) else {
        return 0;
    };
    drop(slot);
    // SAFETY: called by Lua as a C function with its own state `l`; pushing one table is
    // within the stack space Lua guarantees a C function.
    unsafe { create(l, 0, 0) };
    1
}

/// The functions of this module, for [`crate::link_exports`].
pub(crate) fn exports() -> [*const c_void; 12] {
    [
        crate::lalloc::skynet_lalloc as *const c_void,
        skynet_isremote as *const c_void,
        skynet_harbor_start as *const c_void,
        malloc_used_memory as *const c_void,
        malloc_memory_block as *const c_void,
        malloc_current_memory as *const c_void,
        memory_info_dump as *const c_void,
        mallctl_int64 as *const c_void,
        mallctl_cmd as *const c_void,
        mallctl_bool as *const c_void,
        dump_c_mem as *const c_void,
        dump_mem_lua as *const c_void,
    ]
}
