//! # bee-capi — skynet C service modules inside a bee node
//!
//! A native service is a skynet C service module (`NAME.so` exporting `NAME_create`,
//! `NAME_init`, `NAME_release`, optionally `NAME_signal`). This crate loads such modules
//! into a bee [`Node`] and implements, as `extern "C"` functions with skynet v1.6.0's
//! names, the part of skynet's C API they use (`docs/native.md` §2 is the contract):
//! `skynet_send`, `skynet_sendname`, `skynet_callback`, `skynet_context_newsession`,
//! `skynet_command`, `skynet_error`, `skynet_getenv`, `skynet_setenv`, `skynet_timeout`,
//! `skynet_context_handle`, `skynet_current_handle`, `skynet_handle_retire`,
//! `skynet_context_new`, `skynet_queryname`, `skynet_now`.
//!
//! It also hosts skynet's Lua layer (`docs/lua.md`): [`load_lua`] loads a skynet tree's
//! own Lua library for `snlua.so` and the Lua C modules, and the `lua` module adds the
//! kernel functions they need beyond the C service API. A Lua service's request to a
//! Rust service becomes a bee call whose answer returns to Lua as skynet's response.
//!
//! Each loaded module instance is an ordinary bee service ([`bee_runtime::Service`]):
//! its handler runs the module's C callback for one message at a time. The bridge to
//! bee's own calls:
//!
//! - A Rust caller that **waits** (`node.call(addr, …)`: the message has a reply slot)
//!   gets a fresh session of the C service; the session is remembered with the reply
//!   slot, and the C service's `PTYPE_RESPONSE` (or `PTYPE_ERROR`) with that session to
//!   that source completes the call instead of being posted as a message.
//! - A `ptype::LUA` message whose skynet.pack values are `("text", bytes)` reaches the C
//!   callback as `PTYPE_TEXT` with the bytes (how a cluster peer pushes a game frame); a
//!   reply to such a call is packed back as one string value. `("rpc_response", bytes)`
//!   reaches it as `PTYPE_RESPONSE` with session 0. Every other message reaches the
//!   callback with its own type, session and bytes.
//! - An rpc request frame (sub_type 18) whose caller **waits** on the call (e.g. `bee
//!   call --rpc` through a master): the module's reply frame (sub_type 17, the same
//!   frame session, names swapped, sent to CServiceProxy as usual) completes that call
//!   as one string value instead of travelling to the request's source node.
//! - `skynet_current_handle()` inside `NAME_create`/`NAME_init` is the launching
//!   service's handle (0 when the node starts the module from its config), as skynet.
//! - Sends from C use [`Node::post`] (never blocking inside a callback): a dead address
//!   or a full mailbox makes `skynet_send` return -1, and is logged.
//!
//! This is the only crate of the workspace with `unsafe` code: it is the C ABI. Every
//! `unsafe` block says why it is sound.
//!
//! The host executable must export the `skynet_*` functions to the modules it loads: link
//! it with `-Wl,--export-dynamic-symbol=skynet_*` (a build script line
//! `cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol=skynet_*`; `-rdynamic` works
//! too but exports everything) and call
//! [`link_exports`] somewhere the program always reaches, so the linker keeps them.
#![allow(unsafe_code)]

mod bridge;
mod context;
mod ffi;
mod lalloc;
mod lua;
mod monitor;
mod protobuf;
mod skynet_config;
pub mod socket;
mod timer;

use std::collections::HashMap;
use std::ffi::CString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bee_runtime::{Addr, Node};

pub use bridge::LuaServiceFactory;
pub use context::{start, start_reporting, CurrentGuard, SkynetContext, Started};
pub use ffi::link_exports;
pub use lua::load_lua;
pub use skynet_config::read_skynet_config;

/// What can go wrong when a module is loaded and started.
#[derive(Debug, thiserror::Error)]
pub enum CapiError {
    /// A skynet config file could not be read (see [`read_skynet_config`]).
    #[error("skynet config {path}: {reason}")]
    Config {
        /// The config's path.
        path: PathBuf,
        /// What went wrong (the Lua error, or the missing variable).
        reason: String,
    },
    /// The shared object could not be opened (missing file, unresolved symbol, …).
    #[error("cannot load C service module {path}: {reason}")]
    Load {
        /// The module's path.
        path: PathBuf,
        /// What the loader said.
        reason: String,
    },
    /// The module lacks `NAME_init`.
    #[error(
        "C service module {path} has no function {symbol} (a module NAME.so must export NAME_init)"
    )]
    MissingInit {
        /// The module's path.
        path: PathBuf,
        /// The symbol looked for.
        symbol: String,
    },
    /// The file name gives no module name.
    #[error("C service module {path}: cannot tell the module name from the file name (expected NAME.so or libNAME.so)")]
    BadName {
        /// The module's path.
        path: PathBuf,
    },
    /// `NAME_init` returned non-zero: the service did not start (and was released).
    #[error("C service module {path}: {name}_init({args:?}) failed (returned {code})")]
    InitFailed {
        /// The module's path.
        path: PathBuf,
        /// The module name.
        name: String,
        /// The init parameter.
        args: String,
        /// What init returned.
        code: i32,
    },
    /// `skynet_context_new` found no module of that name.
    #[error("no C service module {name:?} in the module path ({dirs})")]
    NotFound {
        /// The module name asked for.
        name: String,
        /// Where it was looked for.
        dirs: String,
    },
    /// A text handed to C contains a NUL byte.
    #[error("{what} contains a NUL byte")]
    Nul {
        /// Which text.
        what: &'static str,
    },
    /// Modules can only start inside a tokio runtime.
    #[error("C services must be started from inside the node's tokio runtime")]
    NoRuntime,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while a lock was held cannot leave these maps half-updated in a way that
    // matters (single inserts/removes); keep serving rather than poison every C call.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The C side of one node: its environment (`skynet_getenv`), the directories modules
/// are loaded from (`skynet_context_new`), its start time (`skynet_now`). One per node,
/// attached to it as an extension; created by the first module started on the node.
pub struct Host {
    node: bee_runtime::service::WeakNode,
    node_name: String,
    runtime: tokio::runtime::Handle,
    started: Instant,
    started_unix: u64,
    env: Mutex<HashMap<String, CString>>,
    // Values replaced by skynet_setenv stay allocated: a module may still hold the
    // pointer skynet_getenv gave it.
    replaced_env: Mutex<Vec<CString>>,
    module_dirs: Mutex<Vec<PathBuf>>,
    /// Every module instance of the node by handle (SIGNAL, and telling C/Lua services
    /// from Rust ones).
    contexts: Mutex<HashMap<Addr, Weak<SkynetContext>>>,
    /// The exit monitor (skynet's `MONITOR` command), 0 for none.
    monitor: AtomicU32,
    /// skynet's C harbor service (`skynet_harbor_start`), 0 for none: global names.
    harbor: AtomicU32,
    /// Where `skynet_error` lines go when the node hosts skynet's Lua layer: skynet's
    /// logger format on stdout or in a file, instead of the node's own log.
    skynet_log: Mutex<Option<SkynetLog>>,
    timers: timer::Timers,
    monitor_started: std::sync::atomic::AtomicBool,
    /// The node's socket I/O (its epoll sets and the tasks that drive them), made by the
    /// first socket the node opens.
    sockets: std::sync::OnceLock<Vec<Arc<socket::Poller>>>,
    /// Lua service names the program serves itself (`crate::bridge`).
    replaced: Mutex<HashMap<String, LuaServiceFactory>>,
    /// Addresses that take `(pointer, size)` blocks from Lua as strings (`crate::bridge`).
    buffer_takers: Mutex<std::collections::HashSet<Addr>>,
}

/// The destination of skynet-format log lines.
enum SkynetLog {
    Stdout,
    File(std::fs::File),
}

static HOSTS: Mutex<Vec<Weak<Host>>> = Mutex::new(Vec::new());

impl Host {
    /// The host of `node`, created (with the default environment `harbor = "0"`,
    /// `node = <node name>`) on first use. Must run inside a tokio runtime the first time.
    pub fn of(node: &Node) -> Result<Arc<Host>, CapiError> {
        link_exports();
        if let Some(h) = node.extension::<Host>() {
            return Ok(h);
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| CapiError::NoRuntime)?;
        let host = node.extension_or_insert_with(|| {
            let mut env = HashMap::new();
            env.insert("harbor".to_string(), c"0".to_owned());
            if let Ok(n) = CString::new(node.name()) {
                env.insert("node".to_string(), n);
            }
            Arc::new(Host {
                node: node.downgrade(),
                node_name: node.name().to_string(),
                runtime,
                started: Instant::now(),
                started_unix: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                env: Mutex::new(env),
                replaced_env: Mutex::new(Vec::new()),
                module_dirs: Mutex::new(Vec::new()),
                contexts: Mutex::new(HashMap::new()),
                monitor: AtomicU32::new(0),
                harbor: AtomicU32::new(0),
                skynet_log: Mutex::new(None),
                timers: timer::Timers::default(),
                monitor_started: std::sync::atomic::AtomicBool::new(false),
                sockets: std::sync::OnceLock::new(),
                replaced: Mutex::new(HashMap::new()),
                buffer_takers: Mutex::new(std::collections::HashSet::new()),
            })
        });
        let mut hosts = lock(&HOSTS);
        hosts.retain(|w| w.strong_count() > 0);
        if !hosts.iter().any(|w| w.as_ptr() == Arc::as_ptr(&host)) {
            hosts.push(Arc::downgrade(&host));
        }
        Ok(host)
    }

    /// The node, while it exists.
    pub fn node(&self) -> Option<Node> {
        self.node.upgrade()
    }

    /// The node's name.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Set an environment value (what `skynet_getenv(key)` returns). `harbor` cannot be
    /// changed: bee has no harbors and modules rely on it being a number.
    pub fn set_env(&self, key: &str, value: &str) -> Result<(), CapiError> {
        if key == "harbor" {
            return Ok(());
        }
        let v = CString::new(value).map_err(|_| CapiError::Nul { what: "env value" })?;
        let mut env = lock(&self.env);
        if env.get(key).is_some_and(|old| *old == v) {
            return Ok(());
        }
        if let Some(old) = env.insert(key.to_string(), v) {
            lock(&self.replaced_env).push(old);
        }
        Ok(())
    }

    /// An environment value.
    pub fn env(&self, key: &str) -> Option<String> {
        lock(&self.env)
            .get(key)
            .map(|v| v.to_string_lossy().into_owned())
    }

    /// Add a directory `skynet_context_new(name, …)` looks for `name.so` in (the
    /// directory of every module started is added too).
    pub fn add_module_dir(&self, dir: &Path) {
        let mut dirs = lock(&self.module_dirs);
        if !dirs.iter().any(|d| d == dir) {
            dirs.push(dir.to_path_buf());
        }
    }

    /// Write `skynet_error` lines as skynet's logger does (`[:0000000a] text`), to
    /// `file` (appended) or, without one, to stdout, instead of the node's log.
    pub fn log_like_skynet(&self, file: Option<&Path>) -> Result<(), CapiError> {
        let sink = match file {
            None => SkynetLog::Stdout,
            Some(p) => SkynetLog::File(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| CapiError::Load {
                        path: p.to_path_buf(),
                        reason: format!("cannot open the log file: {e}"),
                    })?,
            ),
        };
        *lock(&self.skynet_log) = Some(sink);
        Ok(())
    }

    /// One `skynet_error` line from `source`: true if written in skynet's format.
    pub(crate) fn write_skynet_log(&self, source: Addr, line: &str) -> bool {
        let mut slot = lock(&self.skynet_log);
        let text = format!("[:{source:08x}] {line}\n");
        match slot.as_mut() {
            None => false,
            Some(SkynetLog::Stdout) => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
                true
            }
            Some(SkynetLog::File(f)) => {
                let _ = f.write_all(text.as_bytes());
                true
            }
        }
    }

    pub(crate) fn add_context(self: &Arc<Self>, addr: Addr, ctx: &Arc<SkynetContext>) {
        {
            let mut map = lock(&self.contexts);
            map.retain(|_, w| w.strong_count() > 0);
            map.insert(addr, Arc::downgrade(ctx));
        }
        monitor::ensure_started(self, &self.monitor_started);
    }

    pub(crate) fn remove_context(&self, addr: Addr) {
        lock(&self.contexts).remove(&addr);
    }

    /// Whether `addr` is a live C service of this host (a skynet module: `snlua`,
    /// `gate`, a team's `NAME.so`), for status pages and for a Lua service's sends
    /// (checked without taking a reference).
    pub fn is_c_service(&self, addr: Addr) -> bool {
        lock(&self.contexts)
            .get(&addr)
            .is_some_and(|w| w.strong_count() > 0)
    }

    /// The live module instance at `addr`, if that address is one.
    pub(crate) fn context(&self, addr: Addr) -> Option<Arc<SkynetContext>> {
        lock(&self.contexts).get(&addr).and_then(Weak::upgrade)
    }

    pub(crate) fn monitor(&self) -> Addr {
        self.monitor.load(Ordering::Acquire)
    }

    pub(crate) fn harbor(&self) -> Addr {
        self.harbor.load(Ordering::Acquire)
    }

    pub(crate) fn set_harbor(&self, addr: Addr) {
        self.harbor.store(addr, Ordering::Release);
    }

    pub(crate) fn set_monitor(&self, addr: Addr) {
        self.monitor.store(addr, Ordering::Release);
    }

    /// Where `skynet_context_new(name, …)` finds `name`: the templates of the env value
    /// `cpath` (skynet's `;`-separated list, `?` standing for the name), then the
    /// directories of `cservice_path` (`;`-separated), then those of the modules loaded
    /// so far.
    pub fn find_module(&self, name: &str) -> Result<PathBuf, CapiError> {
        let safe = !name.is_empty() && !name.contains('/') && name != "." && name != "..";
        let templates: Vec<String> = self
            .env("cpath")
            .map(|p| {
                p.split(';')
                    .filter(|s| s.contains('?'))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if safe {
            for t in &templates {
                let p = PathBuf::from(t.replacen('?', name, 1));
                if p.is_file() {
                    return Ok(p);
                }
            }
        }
        let mut dirs: Vec<PathBuf> = self
            .env("cservice_path")
            .map(|p| {
                p.split(';')
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        dirs.extend(lock(&self.module_dirs).iter().cloned());
        if safe {
            for d in &dirs {
                let p = d.join(format!("{name}.so"));
                if p.is_file() {
                    return Ok(p);
                }
            }
        }
        Err(CapiError::NotFound {
            name: name.to_string(),
            dirs: templates
                .into_iter()
                .chain(dirs.iter().map(|d| d.display().to_string()))
                .collect::<Vec<_>>()
                .join(";"),
        })
    }

    /// Microseconds since the host started.
    pub(crate) fn now_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Hundredths of a second since the host started.
    pub fn now_cs(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis() / 10).unwrap_or(u64::MAX)
    }

    fn getenv_ptr(&self, key: &str) -> *const std::ffi::c_char {
        lock(&self.env)
            .get(key)
            // The CString's heap block does not move when the map rehashes and is never
            // freed while the host lives (replaced values are kept): the pointer stays valid.
            .map_or(std::ptr::null(), |v| v.as_ptr())
    }

    /// The host a C call without a context argument acts on when no service runs on
    /// this thread: the most recently created host still alive.
    fn fallback() -> Option<Arc<Host>> {
        lock(&HOSTS).iter().rev().find_map(Weak::upgrade)
    }
}

/// The address printed as skynet does (`:0000000a`).
pub fn fmt_handle(addr: Addr) -> String {
    bee_runtime::service::fmt_addr(addr)
}
