//! Module loading and the service behind each module instance: `struct skynet_context`
//! as bee defines it, the bee [`Service`] that runs the C callback one message at a
//! time, the session → reply-slot bridge, and release when the service stops.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
use std::sync::{Arc, Mutex};

use bee_codec::kkt::{KktHeader, SUBTYPE_RPC_CLIENT, SUBTYPE_RPC_SERVER};
use bee_codec::seri::{self, Value};
use bee_runtime::service::ptype;
use bee_runtime::{Addr, Context, HandleResult, Message, Node, Responder, Service};
use bytes::Bytes;
use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
use tokio::sync::oneshot;

use crate::{lock, CapiError, Host};

/// `NAME_create`.
type CreateFn = unsafe extern "C" fn() -> *mut c_void;
/// `NAME_init`.
type InitFn = unsafe extern "C" fn(*mut c_void, *mut SkynetContext, *const c_char) -> c_int;
/// `NAME_release`.
type ReleaseFn = unsafe extern "C" fn(*mut c_void);
/// `NAME_signal`.
type SignalFn = unsafe extern "C" fn(*mut c_void, c_int);
/// The callback a module installs with `skynet_callback`.
pub(crate) type CallbackFn = unsafe extern "C" fn(
    *mut SkynetContext,
    *mut c_void,
    c_int,
    c_int,
    u32,
    *const c_void,
    usize,
) -> c_int;

/// The queue length past which skynet first warns `May overload` (then at twice the
/// length that warned, and so on, until the queue is found empty again).
const OVERLOAD_FIRST: usize = 1024;

/// Messages a C or Lua service's mailbox holds (a Rust service's: the node's
/// `RuntimeConfig::mailbox`, 4096). skynet's queues are unbounded and its programs count
/// on long ones: its overload test sends 107,520 messages to one service in twenty
/// bursts (10,240 in the last), which all fit here even if the receiver handled none of
/// them meanwhile. A send past the bound fails (`skynet_send` returns -1, logged). Each
/// waiting message holds its payload and about 64 bytes (16 MiB for a full mailbox of
/// empty messages); room is taken only as messages arrive.
pub(crate) const MODULE_MAILBOX: usize = 262_144;

/// Rust calls waiting on a C service at once, at most. Beyond that a new call is refused
/// with an error (a module that never answers must not grow memory without bound).
const MAX_PENDING_CALLS: usize = 65_536;

/// A loaded shared object and its module functions. Modules are never unloaded (as in
/// skynet): a module's code may still be referenced (its protobuf descriptors, its
/// threads), so the library stays open for the life of the process.
pub(crate) struct Module {
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    create: Option<CreateFn>,
    init: InitFn,
    release: Option<ReleaseFn>,
    signal: Option<SignalFn>,
    _lib: Library,
}

static MODULES: Mutex<Vec<Arc<Module>>> = Mutex::new(Vec::new());

/// The module name of a file: `shop.so` → `shop`, `libfoo.so` → `foo`.
fn module_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = file.split('.').next()?;
    let stem = stem
        .strip_prefix("lib")
        .filter(|s| !s.is_empty())
        .unwrap_or(stem);
    (!stem.is_empty()).then(|| stem.to_string())
}

impl Module {
    /// Open `path` with `RTLD_NOW | RTLD_GLOBAL` (once per process) and find its
    /// functions.
    fn open(path: &Path) -> Result<Arc<Module>, CapiError> {
        let path = path.canonicalize().map_err(|e| CapiError::Load {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if let Some(m) = lock(&MODULES).iter().find(|m| m.path == path) {
            return Ok(m.clone());
        }
        let name = module_name(&path).ok_or_else(|| CapiError::BadName { path: path.clone() })?;
        // SAFETY: loading a shared object runs its initialisers; the module is code the
        // node's operator configured to run in this process, which is the whole point.
        // RTLD_GLOBAL as skynet: modules share symbols (a logger, protobuf descriptors).
        let lib = unsafe { Library::open(Some(&path), RTLD_NOW | RTLD_GLOBAL) }.map_err(|e| {
            CapiError::Load {
                path: path.clone(),
                reason: e.to_string(),
            }
        })?;
        let sym = |suffix: &str| format!("{name}_{suffix}\0").into_bytes();
        // SAFETY: the symbols are looked up by the module contract's names, whose C
        // signatures are the fn types asked for; the fn pointers are copied out and stay
        // valid because the library is never closed (it lives in `MODULES`).
        let (create, init, release, signal) = unsafe {
            (
                lib.get::<CreateFn>(&sym("create")).ok().map(|s| *s),
                lib.get::<InitFn>(&sym("init")).ok().map(|s| *s),
                lib.get::<ReleaseFn>(&sym("release")).ok().map(|s| *s),
                lib.get::<SignalFn>(&sym("signal")).ok().map(|s| *s),
            )
        };
        let init = init.ok_or_else(|| CapiError::MissingInit {
            path: path.clone(),
            symbol: format!("{name}_init"),
        })?;
        let module = Arc::new(Module {
            name,
            path,
            create,
            init,
            release,
            signal,
            _lib: lib,
        });
        let mut modules = lock(&MODULES);
        // Another thread may have opened it meanwhile: keep the first (dlopen counted
        // both; the extra reference is harmless since nothing is ever closed).
        if let Some(m) = modules.iter().find(|m| m.path == module.path) {
            return Ok(m.clone());
        }
        modules.push(module.clone());
        tracing::info!(module = %module.name, path = %module.path.display(), "C service module loaded");
        Ok(module)
    }
}

/// A Rust caller waiting for a C service's answer to `session`.
struct Pending {
    caller: Addr,
    responder: Responder,
    /// The request came as `("text", bytes)`: pack the answer as one string value.
    pack: bool,
    /// The request is an rpc frame (sub_type 18): its session and source node/service,
    /// which the module's reply frame (sub_type 17, names swapped, sent through
    /// CServiceProxy) carries back.
    rpc: Option<RpcRequest>,
}

/// The identity of an rpc request frame a waiting caller sent.
struct RpcRequest {
    session: u64,
    node: Bytes,
    service: Bytes,
}

impl RpcRequest {
    fn of(frame: &[u8]) -> Option<RpcRequest> {
        let h = KktHeader::peek(frame).ok()?;
        (h.sub_type == SUBTYPE_RPC_SERVER && h.session > 0).then(|| RpcRequest {
            session: h.session,
            node: Bytes::copy_from_slice(h.source_node),
            service: Bytes::copy_from_slice(h.source_service),
        })
    }

    /// Whether `frame` is the rpc reply to this request.
    fn answered_by(&self, h: &KktHeader<'_>) -> bool {
        h.sub_type == SUBTYPE_RPC_CLIENT
            && h.session == self.session
            && h.remote_node == self.node
            && h.remote_service == self.service
    }
}

/// `struct skynet_context` as bee defines it: one module instance. C holds pointers to
/// it; it lives (in an `Arc`) as long as its service, and until every C call that
/// started while the service lived has returned.
pub struct SkynetContext {
    pub(crate) host: Arc<Host>,
    pub(crate) module: Arc<Module>,
    pub(crate) handle: AtomicU32,
    instance: AtomicPtr<c_void>,
    callback: Mutex<Option<(CallbackFn, usize)>>,
    session: AtomicI32,
    command_result: Mutex<Option<CString>>,
    pending: Mutex<HashMap<i32, Pending>>,
    retire_self: AtomicBool,
    released: AtomicBool,
    /// Messages dispatched to the callback (skynet's `STAT message`).
    messages: AtomicU64,
    /// What the endless-loop monitor reads.
    pub(crate) probe: crate::monitor::Probe,
    /// The next queue length that warns `May overload` (skynet's rule, see
    /// [`SkynetContext::check_overload`]). Touched only by the service's own task.
    overload_threshold: AtomicUsize,
    /// Whether callbacks are timed (skynet's `profile` config key: on when absent).
    profile: bool,
    /// CPU time spent in callbacks so far, ns (`STAT cpu`).
    cpu_cost_ns: AtomicU64,
    /// The running thread's CPU clock when the current callback started, ns (`STAT time`).
    cpu_start_ns: AtomicU64,
    /// Who waits for this Lua service's start report ([`start_reporting`]).
    start_report: Mutex<Option<oneshot::Sender<bool>>>,
}

/// The calling thread's CPU time in nanoseconds (`CLOCK_THREAD_CPUTIME_ID`, a system
/// call), 0 if the clock cannot be read.
pub(crate) fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// This thread's CPU clock, read as cheaply as skynet's accounting allows. skynet reads
/// the thread CPU clock before and after every callback (`profile`, on by default); on
/// Linux that is a system call, a few hundred ns on a VM, two per message. Here a
/// reading less than [`FRESH`] old (in wall time) is carried forward by the wall clock
/// (which the vDSO reads without a system call): while a thread runs, its CPU clock
/// advances as the wall clock does. Only a thread descheduled inside that window makes
/// a figure too high, by at most the window. Services that pass messages back and forth
/// (a callback of a few µs) then make one system call every few messages.
pub(crate) mod callback_clock {
    use std::cell::Cell;
    use std::time::{Duration, Instant};

    /// How long a reading is carried forward by the wall clock.
    pub(crate) const FRESH: Duration = Duration::from_micros(20);

    thread_local! {
        /// The last system-call reading on this thread (ns), and when it was made.
        static LAST: Cell<Option<(u64, Instant)>> = const { Cell::new(None) };
    }

    /// This thread's CPU clock now, ns.
    pub(crate) fn now_ns() -> u64 {
        let now = Instant::now();
        if let Some((cpu, at)) = LAST.get() {
            let gap = now.saturating_duration_since(at);
            if gap < FRESH {
                return cpu + u64::try_from(gap.as_nanos()).unwrap_or(0);
            }
        }
        let cpu = super::thread_cpu_ns();
        LAST.set(Some((cpu, now)));
        cpu
    }
}

/// What runs on this thread: the service whose code runs (C API calls without a context
/// argument act on its node), and the handle `skynet_current_handle()` answers — the
/// service's own, except inside `NAME_create`/`NAME_init`, where skynet answers the
/// handle of the service that launched it (0 for the node's own start-up).
type Current = Option<(Arc<SkynetContext>, Addr)>;

thread_local! {
    /// The service whose create, init, callback or release runs on this thread.
    static CURRENT: RefCell<Current> = const { RefCell::new(None) };
}

/// Marks a service as running on this thread until dropped (then the previous one again).
pub struct CurrentGuard(Current);

impl CurrentGuard {
    pub(crate) fn enter(ctx: &Arc<SkynetContext>) -> CurrentGuard {
        Self::enter_as(ctx, ctx.handle())
    }

    /// `ctx` runs, but `skynet_current_handle()` answers `shown` (a launch).
    pub(crate) fn enter_as(ctx: &Arc<SkynetContext>, shown: Addr) -> CurrentGuard {
        CurrentGuard(CURRENT.with(|c| c.replace(Some((ctx.clone(), shown)))))
    }
}

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        let prev = self.0.take();
        CURRENT.with(|c| *c.borrow_mut() = prev);
    }
}

/// The service running on this thread, if any.
pub(crate) fn current() -> Option<Arc<SkynetContext>> {
    CURRENT.with(|c| c.borrow().as_ref().map(|(ctx, _)| ctx.clone()))
}

/// What `skynet_current_handle()` answers on this thread (0 when no service runs).
pub(crate) fn current_handle() -> Addr {
    CURRENT.with(|c| c.borrow().as_ref().map_or(0, |(_, shown)| *shown))
}

/// A message payload owned by a `malloc`ed block (a `PTYPE_TAG_DONTCOPY` send): freed
/// with `free` when the last `Bytes` referring to it is dropped.
pub(crate) struct MallocBlock {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the block is plain bytes owned exclusively by this value (the C sender gave up
// ownership with DONTCOPY); reading it from any thread and freeing it once is sound.
unsafe impl Send for MallocBlock {}
// SAFETY: as above; the bytes are never written through this value.
unsafe impl Sync for MallocBlock {}

impl MallocBlock {
    /// Take ownership of `len` bytes at `ptr`, allocated with `malloc`.
    ///
    /// # Safety
    /// `ptr` must come from `malloc` (or be null), hold `len` readable bytes, and not be
    /// used or freed by anyone else afterwards.
    pub(crate) unsafe fn from_raw(ptr: *mut c_void, len: usize) -> MallocBlock {
        MallocBlock {
            ptr: ptr.cast(),
            len,
        }
    }
}

impl AsRef<[u8]> for MallocBlock {
    fn as_ref(&self) -> &[u8] {
        if self.ptr.is_null() || self.len == 0 {
            return &[];
        }
        // SAFETY: `from_raw`'s contract: `len` readable bytes at `ptr`, owned by us.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for MallocBlock {
    fn drop(&mut self) {
        // SAFETY: the block came from malloc (or is null, which free accepts) and is freed once.
        unsafe { libc::free(self.ptr.cast()) }
    }
}

impl SkynetContext {
    fn new(host: Arc<Host>, module: Arc<Module>) -> SkynetContext {
        // As skynet reads `profile`: on when absent, else on only for "true".
        let profile = host.env("profile").is_none_or(|v| v == "true");
        SkynetContext {
            host,
            module,
            handle: AtomicU32::new(0),
            instance: AtomicPtr::new(std::ptr::null_mut()),
            callback: Mutex::new(None),
            session: AtomicI32::new(0),
            command_result: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            retire_self: AtomicBool::new(false),
            released: AtomicBool::new(false),
            messages: AtomicU64::new(0),
            probe: crate::monitor::Probe::default(),
            overload_threshold: AtomicUsize::new(OVERLOAD_FIRST),
            profile,
            cpu_cost_ns: AtomicU64::new(0),
            cpu_start_ns: AtomicU64::new(0),
            start_report: Mutex::new(None),
        }
    }

    /// A message this service sends to the local name `.launcher`: when someone waits
    /// for its start report ([`start_reporting`]) and it is skynet's `"lua"` message
    /// `LAUNCHOK` (its start function returned) or `ERROR` (it failed), tell them.
    pub(crate) fn note_launcher_message(&self, type_: c_int, payload: &[u8]) {
        let mut slot = lock(&self.start_report);
        if slot.is_none() || type_ & 0xff != c_int::from(ptype::LUA) {
            return;
        }
        let ok = match seri::unpack(&Bytes::copy_from_slice(payload))
            .ok()
            .as_deref()
        {
            Some([Value::String(cmd), ..]) if cmd.as_ref() == b"LAUNCHOK" => true,
            Some([Value::String(cmd), ..]) if cmd.as_ref() == b"ERROR" => false,
            _ => return,
        };
        if let Some(tx) = slot.take() {
            let _ = tx.send(ok);
        }
    }

    /// The pointer C sees (`struct skynet_context *`), valid while the service lives.
    pub fn as_ptr(self: &Arc<Self>) -> *mut SkynetContext {
        Arc::as_ptr(self).cast_mut()
    }

    /// Make this service the current one on this thread until the guard drops: C API
    /// calls without a context argument (`skynet_timeout`, `skynet_getenv`,
    /// `skynet_context_new`, …) made from Rust code then act on this service's node
    /// (inside callbacks this is automatic).
    pub fn enter(self: &Arc<Self>) -> CurrentGuard {
        CurrentGuard::enter(self)
    }

    /// This service's handle (its bee address).
    pub fn handle(&self) -> Addr {
        self.handle.load(Ordering::Acquire)
    }

    /// The module's name.
    pub fn module_name(&self) -> &str {
        &self.module.name
    }

    pub(crate) fn node(&self) -> Option<Node> {
        self.host.node()
    }

    /// The next session: 1, 2, … 2^31−1, then 1 again.
    pub(crate) fn new_session(&self) -> i32 {
        let mut cur = self.session.load(Ordering::Relaxed);
        loop {
            let next = if (0..i32::MAX).contains(&cur) {
                cur + 1
            } else {
                1
            };
            match self.session.compare_exchange_weak(
                cur,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(now) => cur = now,
            }
        }
    }

    /// Whether this is an instance of skynet's Lua service module.
    pub(crate) fn is_lua(&self) -> bool {
        self.module.name == "snlua"
    }

    /// Messages dispatched so far (the one being handled included).
    pub(crate) fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    /// `STAT cpu`: seconds of CPU time spent in callbacks, as skynet prints it (`%lf`).
    pub(crate) fn stat_cpu(&self) -> String {
        let ns = self.cpu_cost_ns.load(Ordering::Relaxed);
        format!("{:.6}", (ns / 1_000) as f64 / 1e6)
    }

    /// `STAT time`: seconds of CPU time the current callback has used so far, asked from
    /// inside it (as skynet: the calling thread's clock minus the callback's start); `0`
    /// when profiling is off.
    pub(crate) fn stat_time(&self) -> String {
        if !self.profile {
            return "0".to_string();
        }
        let ns = callback_clock::now_ns().saturating_sub(self.cpu_start_ns.load(Ordering::Relaxed));
        format!("{:.6}", (ns / 1_000) as f64 / 1e6)
    }

    /// skynet's overload rule for the message just taken out of the mailbox (see
    /// [`overload_step`]); the length to report, if any.
    fn check_overload(&self, queued: usize, found_empty: bool) -> Option<usize> {
        let mut threshold = self.overload_threshold.load(Ordering::Relaxed);
        let report = overload_step(&mut threshold, queued, found_empty);
        self.overload_threshold.store(threshold, Ordering::Relaxed);
        report
    }

    /// `NAME_signal(inst, n)`, on the calling thread (as skynet's SIGNAL command, which
    /// runs it concurrently with the service). False when the module has none.
    pub(crate) fn signal(&self, n: c_int) -> bool {
        let Some(signal) = self.module.signal else {
            return false;
        };
        if self.released.load(Ordering::Acquire) {
            return false;
        }
        // SAFETY: the module's own signal function with its own instance; the module
        // contract (as in skynet) is that signal may run concurrently with the callback.
        unsafe { signal(self.instance.load(Ordering::Acquire), n) };
        true
    }

    pub(crate) fn set_callback(&self, cb: Option<CallbackFn>, ud: *mut c_void) {
        *lock(&self.callback) = cb.map(|f| (f, ud as usize));
    }

    /// Keep `text` as the answer of the last `skynet_command` and return its pointer
    /// (valid until the next command of this context, as in skynet).
    pub(crate) fn command_result(&self, text: String) -> *const c_char {
        let Ok(c) = CString::new(text) else {
            return std::ptr::null();
        };
        let mut slot = lock(&self.command_result);
        *slot = Some(c);
        // The CString now lives in the slot until the next command replaces it.
        slot.as_ref().map_or(std::ptr::null(), |c| c.as_ptr())
    }

    pub(crate) fn mark_retire_self(&self) {
        self.retire_self.store(true, Ordering::Release);
    }

    /// A response from this C service: if it answers a waiting Rust caller, complete
    /// that call and return true.
    pub(crate) fn answer_pending(
        &self,
        dest: Addr,
        session: i32,
        is_error: bool,
        payload: Bytes,
    ) -> bool {
        let mut pending = lock(&self.pending);
        match pending.get(&session) {
            Some(p) if p.caller == dest => {}
            _ => return false,
        }
        let Some(p) = pending.remove(&session) else {
            return false;
        };
        drop(pending);
        if is_error {
            let text = if payload.is_empty() {
                format!("C service {} answered with an error", self.module.name)
            } else {
                String::from_utf8_lossy(&payload).into_owned()
            };
            p.responder.err(text);
        } else if p.pack {
            match seri::pack(&[Value::String(payload)]) {
                Ok(b) => p.responder.ok(b),
                Err(e) => p
                    .responder
                    .err(format!("cannot pack the C service's answer: {e}")),
            }
        } else {
            p.responder.ok(payload);
        }
        true
    }

    /// A frame this C service sends (to CServiceProxy, as PTYPE_TEXT): if it is the rpc
    /// reply to a request whose caller waits on the cluster call itself (it called the
    /// master instead of pushing), hand the frame to that caller and return true; the
    /// frame then does not travel on to the request's source node.
    pub(crate) fn answer_rpc(&self, frame: &Bytes) -> bool {
        let Ok(h) = KktHeader::peek(frame) else {
            return false;
        };
        if h.sub_type != SUBTYPE_RPC_CLIENT {
            return false;
        }
        let mut pending = lock(&self.pending);
        let Some(session) = pending
            .iter()
            .find(|(_, p)| p.rpc.as_ref().is_some_and(|r| r.answered_by(&h)))
            .map(|(s, _)| *s)
        else {
            return false;
        };
        let Some(p) = pending.remove(&session) else {
            return false;
        };
        drop(pending);
        match seri::pack(&[Value::String(frame.clone())]) {
            Ok(b) => p.responder.ok(b),
            Err(e) => p
                .responder
                .err(format!("cannot pack the C service's rpc reply: {e}")),
        }
        true
    }

    /// Run the C callback for one message (the service's handler).
    fn deliver(self: &Arc<Self>, cx: &mut Context, msg: Message) {
        if let Some(len) = self.check_overload(cx.queued(), cx.found_empty()) {
            // The service's own log line, as skynet writes it.
            let line = format!("May overload, message queue length = {len}");
            if !self.host.write_skynet_log(self.handle(), &line) {
                tracing::warn!(target: "skynet", node = %self.host.node_name(), service = %crate::fmt_handle(self.handle()), module = %self.module.name, "{line}");
            }
        }
        // A Lua service takes `("text", frame)` as skynet's cluster delivers it: a "lua"
        // message whose first value is "text" (its dispatch branches on it).
        let (ty, payload, pack) = if self.is_lua() {
            (msg.ptype, msg.payload, false)
        } else {
            translate(msg.ptype, msg.payload)
        };
        let session = match cx.take_reply() {
            Some(responder) => {
                let mut pending = lock(&self.pending);
                if pending.len() >= MAX_PENDING_CALLS {
                    drop(pending);
                    responder.err(format!(
                        "C service {} has {MAX_PENDING_CALLS} calls unanswered; call refused",
                        self.module.name
                    ));
                    return;
                }
                let s = self.new_session();
                // A frame arrives as TEXT, pushed as ("text", frame) or handed over by
                // a master (which already made it TEXT).
                let rpc = if ty == ptype::TEXT {
                    RpcRequest::of(&payload)
                } else {
                    None
                };
                pending.insert(
                    s,
                    Pending {
                        caller: msg.source,
                        responder,
                        pack,
                        rpc,
                    },
                );
                s
            }
            None => msg.session,
        };
        let cb = *lock(&self.callback);
        self.messages.fetch_add(1, Ordering::Relaxed);
        let Some((cb, ud)) = cb else {
            tracing::warn!(service = %crate::fmt_handle(self.handle()), module = %self.module.name, "message dropped: the module installed no callback");
            if let Some(p) = lock(&self.pending).remove(&session) {
                p.responder
                    .err(format!("C service {} has no callback", self.module.name));
            }
            return;
        };
        // The callback may keep the message (non-zero return) and free it later with
        // skynet_free: hand it a malloc'ed copy.
        let (data, len) = if payload.is_empty() {
            (std::ptr::null_mut(), 0)
        } else {
            // SAFETY: plain malloc of a non-zero size; null is checked below.
            let p = unsafe { libc::malloc(payload.len()) };
            if p.is_null() {
                tracing::error!(service = %crate::fmt_handle(self.handle()), bytes = payload.len(), "out of memory: message dropped");
                return;
            }
            // SAFETY: `p` has payload.len() writable bytes; the regions cannot overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(payload.as_ptr(), p.cast::<u8>(), payload.len())
            };
            (p, payload.len())
        };
        self.probe.enter(msg.source);
        if self.profile {
            self.cpu_start_ns
                .store(callback_clock::now_ns(), Ordering::Relaxed);
        }
        let keep = {
            let _current = CurrentGuard::enter(self);
            // SAFETY: `cb` and `ud` were installed by this module with skynet_callback;
            // the context pointer is valid (we hold an Arc); `data` is `len` bytes from
            // malloc (or null with 0). One callback at a time: this runs inside the
            // service's handler, which the runtime never runs concurrently with itself.
            unsafe {
                cb(
                    self.as_ptr(),
                    ud as *mut c_void,
                    c_int::from(ty),
                    session,
                    msg.source,
                    data.cast_const(),
                    len,
                )
            }
        };
        if self.profile {
            let took =
                callback_clock::now_ns().saturating_sub(self.cpu_start_ns.load(Ordering::Relaxed));
            self.cpu_cost_ns.fetch_add(took, Ordering::Relaxed);
        }
        self.probe.leave();
        if keep == 0 {
            // SAFETY: `data` is ours again (the callback returned 0); freed once.
            unsafe { libc::free(data) };
        }
    }

    /// `NAME_release`, once.
    fn release(self: &Arc<Self>) {
        if self.released.swap(true, Ordering::AcqRel) {
            return;
        }
        *lock(&self.callback) = None;
        self.host.remove_context(self.handle());
        let gone: Vec<Pending> = lock(&self.pending).drain().map(|(_, p)| p).collect();
        for p in gone {
            p.responder.err(format!(
                "C service {} stopped before answering",
                self.module.name
            ));
        }
        if let Some(release) = self.module.release {
            let _current = CurrentGuard::enter(self);
            // SAFETY: the instance came from this module's create (or is the sentinel
            // skynet passes when there is none); release runs once, after the last
            // callback returned (the service task has ended).
            unsafe { release(self.instance.load(Ordering::Acquire)) };
        }
        tracing::info!(service = %crate::fmt_handle(self.handle()), module = %self.module.name, "C service released");
    }
}

/// skynet's overload rule, applied when a message is taken out of a mailbox with `queued`
/// messages left behind it: a mailbox found empty since the previous message starts
/// again at 1024; a queue longer than `threshold` doubles it (until it is not) and is
/// reported once, with its length.
fn overload_step(threshold: &mut usize, queued: usize, found_empty: bool) -> Option<usize> {
    if found_empty {
        *threshold = OVERLOAD_FIRST;
    }
    let mut report = None;
    while queued > *threshold {
        report = Some(queued);
        *threshold = threshold.saturating_mul(2);
    }
    report
}

/// What the C callback sees of a bee message: `("text", bytes)` → TEXT bytes,
/// `("rpc_response", bytes)` → RESPONSE bytes, anything else as it came.
fn translate(ty: u8, payload: Bytes) -> (u8, Bytes, bool) {
    if ty == ptype::LUA {
        if let Ok(values) = seri::unpack(&payload) {
            if let [Value::String(kind), Value::String(body)] = values.as_slice() {
                match kind.as_ref() {
                    b"text" => return (ptype::TEXT, body.clone(), true),
                    b"rpc_response" => return (ptype::RESPONSE, body.clone(), true),
                    _ => {}
                }
            }
        }
    }
    (ty, payload, false)
}

/// The bee service of one module instance.
struct CService {
    ctx: Arc<SkynetContext>,
    /// Fires when NAME_init succeeded; messages wait for it.
    ready: Option<oneshot::Receiver<()>>,
}

impl Service for CService {
    async fn handle(&mut self, cx: &mut Context, msg: Message) -> HandleResult {
        if let Some(ready) = self.ready.take() {
            if ready.await.is_err() {
                cx.exit();
                return Err(bee_runtime::ServiceError::msg(format!(
                    "C service {} did not start",
                    self.ctx.module.name
                )));
            }
        }
        self.ctx.deliver(cx, msg);
        if self.ctx.retire_self.load(Ordering::Acquire) {
            cx.exit();
        }
        Ok(None)
    }
}

impl Drop for CService {
    fn drop(&mut self) {
        self.ctx.release();
    }
}

/// A started module instance.
#[derive(Clone)]
pub struct Started {
    /// Its address on the node (its skynet handle).
    pub addr: Addr,
    /// Its context.
    pub ctx: Arc<SkynetContext>,
}

/// Load the module at `path` (once per process) and start an instance on `node` with
/// the init parameter `args`: `NAME_create`, then `NAME_init(inst, ctx, args)`. A
/// non-zero init is [`CapiError::InitFailed`] (the instance is released). The directory
/// of `path` is added to the node's module path for `skynet_context_new`.
pub fn start(node: &Node, path: &Path, args: &str) -> Result<Started, CapiError> {
    start_inner(node, path, args, None)
}

/// [`start`] for a service running skynet's Lua (`snlua NAME`), with the report of its
/// start: like skynet's launcher, which answers `skynet.newservice` only when the new
/// service's start function has returned, the receiver gets `true` when the service
/// tells `.launcher` `LAUNCHOK`, `false` when it tells `ERROR` (its start function
/// raised; skynet's log has why). Dropped unanswered if the service ends first.
pub fn start_reporting(
    node: &Node,
    path: &Path,
    args: &str,
) -> Result<(Started, oneshot::Receiver<bool>), CapiError> {
    let (tx, rx) = oneshot::channel();
    let started = start_inner(node, path, args, Some(tx))?;
    Ok((started, rx))
}

fn start_inner(
    node: &Node,
    path: &Path,
    args: &str,
    report: Option<oneshot::Sender<bool>>,
) -> Result<Started, CapiError> {
    let host = Host::of(node)?;
    let module = Module::open(path)?;
    if let Some(dir) = module.path.parent() {
        host.add_module_dir(dir);
    }
    let parm = CString::new(args).map_err(|_| CapiError::Nul {
        what: "the init parameter",
    })?;
    // As skynet: create and init run on the launcher's thread, which stays the
    // launcher's (`skynet_current_handle()` is its handle; 0 at the node's start-up).
    let launcher = current_handle();
    let ctx = Arc::new(SkynetContext::new(host.clone(), module.clone()));
    *lock(&ctx.start_report) = report;
    let (ready_tx, ready_rx) = oneshot::channel();
    let _rt = host.runtime.enter();
    let addr = node.spawn_boxed_on_runners(
        &module.name,
        Box::new(CService {
            ctx: ctx.clone(),
            ready: Some(ready_rx),
        }),
        MODULE_MAILBOX,
    );
    ctx.handle.store(addr, Ordering::Release);
    host.add_context(addr, &ctx);
    let code = {
        let _current = CurrentGuard::enter_as(&ctx, launcher);
        let inst = match module.create {
            // SAFETY: NAME_create takes nothing and returns the instance pointer.
            Some(create) => unsafe { create() },
            // skynet's convention for a module without create: an all-ones pointer.
            None => usize::MAX as *mut c_void,
        };
        ctx.instance.store(inst, Ordering::Release);
        // SAFETY: the module contract's init signature; `ctx` stays alive (the service
        // holds it) and `parm` outlives the call.
        unsafe { (module.init)(inst, ctx.as_ptr(), parm.as_ptr()) }
    };
    if code != 0 {
        // The service task ends (its mailbox closes) and releases the instance.
        drop(ready_tx);
        node.kill(addr);
        return Err(CapiError::InitFailed {
            path: module.path.clone(),
            name: module.name.clone(),
            args: args.to_string(),
            code,
        });
    }
    // skynet's kernel line for every started service, written before the service handles
    // its first message (where skynet's log goes to its logger format).
    host.write_skynet_log(addr, &format!("LAUNCH {} {args}", module.name));
    let _ = ready_tx.send(());
    if ctx.retire_self.load(Ordering::Acquire) {
        node.kill(addr);
    }
    tracing::info!(node = %node.name(), service = %crate::fmt_handle(addr), module = %module.name, args, "C service started");
    Ok(Started { addr, ctx })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The carried-forward clock agrees with the system call while the thread runs, and
    /// does not count time the thread spent asleep.
    #[test]
    fn the_callback_clock_counts_running_time_not_sleep() {
        let spin = |d: std::time::Duration| {
            let t = std::time::Instant::now();
            while t.elapsed() < d {
                std::hint::spin_loop();
            }
        };
        // Many short steps (each under the carry-forward window), 20 ms in all.
        let (c0, t0) = (callback_clock::now_ns(), thread_cpu_ns());
        for _ in 0..4000 {
            spin(std::time::Duration::from_micros(5));
            callback_clock::now_ns();
        }
        let (c1, t1) = (callback_clock::now_ns(), thread_cpu_ns());
        let (carried, called) = (c1 - c0, t1 - t0);
        assert!(
            carried.abs_diff(called) < called / 10 + 200_000,
            "carried forward {carried} ns, system call {called} ns"
        );
        // A sleep between two readings is not CPU time.
        let before = callback_clock::now_ns();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let slept = callback_clock::now_ns() - before;
        assert!(
            slept < 10_000_000,
            "30 ms asleep counted as {slept} ns of CPU"
        );
    }

    #[test]
    fn module_names_come_from_file_names() {
        assert_eq!(
            module_name(Path::new("/a/shop.so")).as_deref(),
            Some("shop")
        );
        assert_eq!(module_name(Path::new("libfoo.so")).as_deref(), Some("foo"));
        assert_eq!(
            module_name(Path::new("hello.so.1")).as_deref(),
            Some("hello")
        );
        assert_eq!(module_name(Path::new("lib.so")).as_deref(), Some("lib"));
        assert_eq!(module_name(Path::new(".so")), None);
    }

    #[test]
    fn overload_is_reported_past_1024_then_at_each_doubling_until_idle() {
        let mut t = OVERLOAD_FIRST;
        let lengths = [
            (1024, false),
            (1025, false),
            (1500, false),
            (2047, false),
            (2049, false),
            (5000, false),
            (9000, false),
            (100, false),
            (3000, false),
            (0, true),
            (3000, false),
        ];
        let got: Vec<_> = lengths
            .iter()
            .map(|&(q, empty)| overload_step(&mut t, q, empty))
            .collect();
        assert_eq!(
            got,
            [
                None,
                Some(1025),
                None,
                None,
                Some(2049),
                Some(5000),
                Some(9000),
                None,
                None,
                None,
                Some(3000)
            ]
        );
        // Found empty: back to 1024; 3000 passed it and 2048 at once (one report).
        assert_eq!(t, 4096);
    }

    #[test]
    fn text_and_rpc_response_pushes_become_c_types() {
        let text = seri::pack(&[Value::from("text"), Value::from("frame")]).unwrap();
        assert_eq!(
            translate(ptype::LUA, text),
            (ptype::TEXT, Bytes::from("frame"), true)
        );
        let resp = seri::pack(&[Value::from("rpc_response"), Value::from("f")]).unwrap();
        assert_eq!(translate(ptype::LUA, resp).0, ptype::RESPONSE);
        let other = seri::pack(&[Value::from("lua"), Value::from("x")]).unwrap();
        assert_eq!(
            translate(ptype::LUA, other.clone()),
            (ptype::LUA, other, false)
        );
        assert_eq!(
            translate(ptype::TEXT, Bytes::from("raw")),
            (ptype::TEXT, Bytes::from("raw"), false)
        );
    }
}
