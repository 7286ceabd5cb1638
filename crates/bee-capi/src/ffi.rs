//! The `extern "C"` functions of skynet's C API subset that modules call (declared in
//! `include/skynet*.h`; behaviour in `docs/native.md` §2). `skynet_error` itself is C
//! (`csrc/skynet_error.c`, variadic) and calls [`bee_capi_log`] here.
//!
//! None of these may unwind into C: they use no `unwrap` and never panic on input.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Arc;
use std::time::Duration;

use bee_runtime::service::ptype;
use bee_runtime::{Addr, CallError, Message, Node};
use bytes::Bytes;

use crate::context::{current, CallbackFn, MallocBlock, SkynetContext};
use crate::{fmt_handle, Host};

const PTYPE_TAG_DONTCOPY: c_int = 0x10000;
const PTYPE_TAG_ALLOCSESSION: c_int = 0x20000;
const PTYPE_ERROR: c_int = ptype::ERROR as c_int;
const PTYPE_RESPONSE: c_int = ptype::RESPONSE as c_int;

extern "C" {
    /// The C shim (csrc/skynet_error.c).
    fn skynet_error(context: *mut c_void, msg: *const c_char, ...);
}

/// Keep every `skynet_*` function in the executable. Call it from code the program
/// always runs (bee-node does, when it registers its service kinds): a linker drops
/// unreferenced code from static libraries, and a module could then not find a function
/// at `dlopen` time. Returns how many functions it keeps.
pub fn link_exports() -> usize {
    let table: [*const c_void; 16] = [
        skynet_send as *const c_void,
        skynet_sendname as *const c_void,
        skynet_callback as *const c_void,
        skynet_context_newsession as *const c_void,
        skynet_command as *const c_void,
        skynet_error as *const c_void,
        skynet_getenv as *const c_void,
        skynet_setenv as *const c_void,
        skynet_timeout as *const c_void,
        skynet_context_handle as *const c_void,
        skynet_current_handle as *const c_void,
        skynet_handle_retire as *const c_void,
        skynet_context_new as *const c_void,
        skynet_queryname as *const c_void,
        skynet_now as *const c_void,
        bee_capi_log as *const c_void,
    ];
    let lua = crate::lua::exports();
    let sockets = crate::socket::exports();
    let protobuf = crate::protobuf::exports();
    std::hint::black_box(&table)
        .iter()
        .chain(std::hint::black_box(&lua).iter())
        .chain(std::hint::black_box(&sockets).iter())
        .chain(std::hint::black_box(&protobuf).iter())
        .filter(|p| !p.is_null())
        .count()
}

/// The context behind a C pointer, or `None` for NULL.
fn ctx_ref<'a>(ctx: *mut SkynetContext) -> Option<&'a SkynetContext> {
    // SAFETY: a non-null pointer given to C by this crate points into an
    // `Arc<SkynetContext>` kept alive by its service; modules pass back only those.
    unsafe { ctx.as_ref() }
}

/// A C string argument, or `None` for NULL / not UTF-8.
fn str_arg<'a>(s: *const c_char) -> Option<&'a str> {
    if s.is_null() {
        return None;
    }
    // SAFETY: the C API takes NUL-terminated strings; the caller keeps it alive during the call.
    unsafe { CStr::from_ptr(s) }.to_str().ok()
}

/// The host a call acts on: the context's, else this thread's service's, else the last
/// host created.
fn host_for(ctx: Option<&SkynetContext>) -> Option<Arc<Host>> {
    if let Some(c) = ctx {
        return Some(c.host.clone());
    }
    if let Some(c) = current() {
        return Some(c.host.clone());
    }
    Host::fallback()
}

/// Who a log line is about: the service's handle and module, formatted only when a
/// line is written (the send path asks for them on every message).
fn log_tag(ctx: Option<&SkynetContext>) -> (LogHandle, &str) {
    match ctx {
        Some(c) => (LogHandle(c.handle()), c.module_name()),
        None => (LogHandle(0), ""),
    }
}

/// A handle shown as skynet shows it (`:0000000b`), formatted when displayed.
struct LogHandle(u32);

impl std::fmt::Display for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&fmt_handle(self.0))
    }
}

/// `:hex` → that handle; any other name → the node's name table. In skynet `.NAME` is
/// the local name NAME; in bee's one table a cluster-visible name (`CServiceProxy`) is
/// also a name of this node, so `.NAME` finds `.NAME` first, then `NAME`.
fn resolve_name(node: &Node, name: &str) -> Option<Addr> {
    if let Some(hex) = name.strip_prefix(':') {
        return u32::from_str_radix(hex, 16).ok().filter(|a| *a != 0);
    }
    node.resolve(name).ok().or_else(|| {
        name.strip_prefix('.')
            .filter(|n| !n.is_empty())
            .and_then(|n| node.resolve(n).ok())
    })
}

/// Where `skynet_error` lines go: one line in the node's log, tagged with the service.
#[no_mangle]
pub extern "C" fn bee_capi_log(context: *mut SkynetContext, text: *const c_char, len: usize) {
    let ctx = ctx_ref(context);
    let bytes: &[u8] = if text.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: the shim passes `len` bytes it formatted and still owns.
        unsafe { std::slice::from_raw_parts(text.cast::<u8>(), len) }
    };
    let line = String::from_utf8_lossy(bytes);
    let host = host_for(ctx);
    if let Some(h) = &host {
        if h.write_skynet_log(ctx.map_or(0, SkynetContext::handle), &line) {
            return;
        }
    }
    let (service, module) = log_tag(ctx);
    let node = host.map(|h| h.node_name().to_string()).unwrap_or_default();
    tracing::info!(target: "skynet", node = %node, service = %service, module = %module, "{line}");
}

/// Send `msg` from the context's service (or `source`) to `destination`.
#[no_mangle]
pub extern "C" fn skynet_send(
    context: *mut SkynetContext,
    source: u32,
    destination: u32,
    type_: c_int,
    session: c_int,
    msg: *mut c_void,
    sz: usize,
) -> c_int {
    // Own the payload first, so every failure below frees a DONTCOPY block.
    let payload = if msg.is_null() {
        Bytes::new()
    } else if type_ & PTYPE_TAG_DONTCOPY != 0 {
        // SAFETY: with DONTCOPY the module hands over a malloc'ed block of `sz` bytes.
        Bytes::from_owner(unsafe { MallocBlock::from_raw(msg, sz) })
    } else {
        // SAFETY: without DONTCOPY `msg` holds `sz` readable bytes during the call.
        Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(msg.cast::<u8>(), sz) })
    };
    send(
        ctx_ref(context),
        source,
        destination,
        type_,
        session,
        payload,
    )
}

fn send(
    ctx: Option<&SkynetContext>,
    source: u32,
    destination: u32,
    type_: c_int,
    session: c_int,
    payload: Bytes,
) -> c_int {
    let (me, module) = log_tag(ctx);
    let mut session = session;
    if type_ & PTYPE_TAG_ALLOCSESSION != 0 {
        match ctx {
            Some(c) => session = c.new_session(),
            None => {
                tracing::warn!(service = %me, "skynet_send: ALLOCSESSION without a context; not sent");
                return -1;
            }
        }
    }
    let ty = type_ & 0xffff;
    if let Some(c) = ctx {
        if (ty == PTYPE_RESPONSE || ty == PTYPE_ERROR)
            && c.answer_pending(destination, session, ty == PTYPE_ERROR, payload.clone())
        {
            return session;
        }
    }
    if ty == c_int::from(ptype::TEXT) && session != 0 {
        if let Some(c) = ctx {
            if c.answer_rpc(&payload) {
                return session;
            }
        }
    }
    let Ok(ty) = u8::try_from(ty) else {
        tracing::warn!(service = %me, module = %module, ptype = ty, "skynet_send: message type above 255 not supported; not sent");
        return -1;
    };
    if destination == 0 {
        if payload.is_empty() {
            // skynet's way to allocate a bare session (Lua's `genid`): nothing is sent.
            return session;
        }
        tracing::warn!(service = %me, module = %module, "skynet_send to handle 0; not sent");
        return -1;
    }
    let Some(node) = host_for(ctx).and_then(|h| h.node()) else {
        tracing::warn!(service = %me, "skynet_send: the node is gone; not sent");
        return -1;
    };
    let source = match (source, ctx) {
        (0, Some(c)) => c.handle(),
        (s, _) => s,
    };
    let payload = match ctx {
        Some(c) if ty == ptype::LUA && c.is_lua() && c.host.takes_buffers(destination) => {
            crate::bridge::inline_blocks(payload)
        }
        _ => payload,
    };
    let msg = Message {
        source,
        ptype: ty,
        session,
        payload,
    };
    if let Some(c) = ctx {
        if c.is_lua()
            && session > 0
            && c_int::from(ty) != PTYPE_RESPONSE
            && c_int::from(ty) != PTYPE_ERROR
            && !c.host.is_c_service(destination)
            && node.is_alive(destination)
        {
            call_for_lua(c, &node, destination, msg);
            return session;
        }
    }
    match node.post(destination, msg) {
        Ok(()) => session,
        Err(e) => {
            tracing::warn!(node = %node.name(), service = %me, module = %module, to = %fmt_handle(destination), ptype = ty, session, error = %e, "skynet_send failed; the module is told (-1)");
            -1
        }
    }
}

/// A Lua service's request (a session to answer) to a service that is not a module
/// instance (a Rust service answers through a reply slot, not with a message): make it a
/// bee call, and bring its answer back to the Lua service as skynet would, a
/// `PTYPE_RESPONSE` (or `PTYPE_ERROR`) with the request's session from the callee.
fn call_for_lua(c: &SkynetContext, node: &Node, destination: Addr, msg: Message) {
    let node = node.clone();
    let (caller, session) = (msg.source, msg.session);
    c.host.runtime.spawn(async move {
        let reply = match node.call_message(destination, msg, None).await {
            Ok(payload) => Message {
                source: destination,
                ptype: ptype::RESPONSE,
                session,
                payload,
            },
            Err(e) => {
                tracing::warn!(node = %node.name(), from = %fmt_handle(caller), to = %fmt_handle(destination), session, error = %e, "a Lua service's call failed");
                Message {
                    source: destination,
                    ptype: ptype::ERROR,
                    session,
                    payload: Bytes::new(),
                }
            }
        };
        post_retrying(node.downgrade(), caller, reply).await;
    });
}

/// Post `msg`, retrying while the mailbox is full (for up to a minute, then logged).
async fn post_retrying(node: bee_runtime::service::WeakNode, to: Addr, msg: Message) {
    for _ in 0..60_000 {
        let Some(n) = node.upgrade() else { return };
        match n.post(to, msg.clone()) {
            Ok(()) => return,
            Err(CallError::Overloaded { .. }) => {}
            Err(_) => return, // the service is gone: nobody waits
        }
        drop(n);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tracing::error!(to = %fmt_handle(to), session = msg.session, "message dropped: the service's mailbox stayed full for a minute");
}

/// [`skynet_send`] to a name: `.local`, a cluster-visible name, or `:hex`.
#[no_mangle]
pub extern "C" fn skynet_sendname(
    context: *mut SkynetContext,
    source: u32,
    destination: *const c_char,
    type_: c_int,
    session: c_int,
    msg: *mut c_void,
    sz: usize,
) -> c_int {
    let ctx = ctx_ref(context);
    let name = str_arg(destination);
    if let (Some(c), Some(".launcher")) = (ctx, name) {
        if !msg.is_null() {
            // SAFETY: `msg` holds `sz` readable bytes during the call (DONTCOPY or not:
            // the block is not taken over before `skynet_send` below).
            let payload = unsafe { std::slice::from_raw_parts(msg.cast::<u8>(), sz) };
            c.note_launcher_message(type_, payload);
        }
    }
    let dest = name.and_then(|name| {
        let node = host_for(ctx)?.node()?;
        resolve_name(&node, name)
    });
    match dest {
        Some(d) => skynet_send(context, source, d, type_, session, msg, sz),
        None => {
            if let (Some(c), Some(name)) = (ctx, name) {
                if is_global_name(name) && c.host.harbor() != 0 {
                    return send_global(c, source, name, type_, session, msg, sz);
                }
            }
            if type_ & PTYPE_TAG_DONTCOPY != 0 && !msg.is_null() {
                // SAFETY: DONTCOPY: the block is ours now, and nobody else frees it.
                unsafe { libc::free(msg) };
            }
            let (me, module) = log_tag(ctx);
            tracing::warn!(service = %me, module = %module, to = ?name, "skynet_sendname: no such name; not sent");
            -1
        }
    }
}

/// A skynet global name: neither `.local` nor `:hex`.
fn is_global_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.starts_with(':')
}

/// skynet's `struct remote_message` (kernel → harbor service) on LP64, 48 bytes: the
/// destination's global name (16 bytes, zero-padded) at 0, its handle at 16 (0 here),
/// the payload pointer (owned by the harbor service from then on) at 24, its size at 32,
/// its type at 40.
fn remote_message(name: &str, message: *const c_void, sz: usize, type_: c_int) -> [u8; 48] {
    let mut env = [0u8; 48];
    let n = name.len().min(16);
    env[..n].copy_from_slice(&name.as_bytes()[..n]);
    env[24..32].copy_from_slice(&(message as usize as u64).to_ne_bytes());
    env[32..40].copy_from_slice(&(sz as u64).to_ne_bytes());
    env[40..44].copy_from_slice(&type_.to_ne_bytes());
    env
}

/// A send to a global name, as skynet's kernel does it: an envelope to the harbor
/// service, which resolves the name (the node's `.cslave` registers them) and delivers.
fn send_global(
    c: &SkynetContext,
    source: u32,
    name: &str,
    type_: c_int,
    session: c_int,
    msg: *mut c_void,
    sz: usize,
) -> c_int {
    let session = if type_ & PTYPE_TAG_ALLOCSESSION != 0 {
        c.new_session()
    } else {
        session
    };
    let data = if msg.is_null() || type_ & PTYPE_TAG_DONTCOPY != 0 {
        msg
    } else {
        // SAFETY: plain malloc; the copy below writes `sz` bytes into it.
        let p = unsafe { libc::malloc(sz.max(1)) };
        if p.is_null() {
            return -1;
        }
        // SAFETY: without DONTCOPY `msg` holds `sz` readable bytes; `p` has room for them.
        unsafe { std::ptr::copy_nonoverlapping(msg.cast::<u8>(), p.cast::<u8>(), sz) };
        p
    };
    let env = remote_message(name, data, sz, type_ & 0xff);
    let source = if source == 0 { c.handle() } else { source };
    let sent = c.node().is_some_and(|node| {
        node.post(
            c.host.harbor(),
            Message {
                source,
                ptype: 4, // PTYPE_SYSTEM
                session,
                payload: Bytes::copy_from_slice(&env),
            },
        )
        .is_ok()
    });
    if sent {
        session
    } else {
        // SAFETY: the payload never reached the harbor service: it is still ours.
        unsafe { libc::free(data) };
        -1
    }
}

/// Install the message callback.
#[no_mangle]
pub extern "C" fn skynet_callback(
    context: *mut SkynetContext,
    ud: *mut c_void,
    cb: Option<CallbackFn>,
) {
    if let Some(c) = ctx_ref(context) {
        c.set_callback(cb, ud);
    }
}

/// The next session of the context (1 … 2^31−1, then 1 again).
#[no_mangle]
pub extern "C" fn skynet_context_newsession(context: *mut SkynetContext) -> c_int {
    ctx_ref(context).map_or(0, |c| c.new_session())
}

/// The context's handle.
#[no_mangle]
pub extern "C" fn skynet_context_handle(context: *mut SkynetContext) -> u32 {
    ctx_ref(context).map_or(0, |c| c.handle())
}

/// The handle of the service whose callback or release runs on this thread; inside
/// `NAME_create`/`NAME_init`, the handle of the service that launched it (0 when the
/// node started it from its config), as skynet.
#[no_mangle]
pub extern "C" fn skynet_current_handle() -> u32 {
    crate::context::current_handle()
}

/// Hundredths of a second since the node's C host started.
#[no_mangle]
pub extern "C" fn skynet_now() -> u64 {
    host_for(None).map_or(0, |h| h.now_cs())
}

/// The node's environment (`[env]` of its config; `harbor` is `"0"`, `node` its name).
#[no_mangle]
pub extern "C" fn skynet_getenv(key: *const c_char) -> *const c_char {
    let Some(key) = str_arg(key) else {
        return std::ptr::null();
    };
    match host_for(None) {
        Some(h) => h.getenv_ptr(key),
        None if key == "harbor" => c"0".as_ptr(),
        None => std::ptr::null(),
    }
}

/// Set an environment value (`harbor` stays `"0"`).
#[no_mangle]
pub extern "C" fn skynet_setenv(key: *const c_char, value: *const c_char) {
    if let (Some(k), Some(v), Some(h)) = (str_arg(key), str_arg(value), host_for(None)) {
        if let Err(e) = h.set_env(k, v) {
            tracing::warn!(key = k, error = %e, "skynet_setenv refused");
        }
    }
}

/// Service `handle` gets `PTYPE_RESPONSE`, source 0, `session`, no data, after `time`
/// hundredths of a second (at once when `time` ≤ 0). -1 when the handle is unknown.
#[no_mangle]
pub extern "C" fn skynet_timeout(handle: u32, time: c_int, session: c_int) -> c_int {
    let Some(host) = host_for(None) else {
        return -1;
    };
    let Some(node) = host.node() else {
        return -1;
    };
    if !node.is_alive(handle) {
        tracing::warn!(to = %fmt_handle(handle), "skynet_timeout for an unknown handle; refused");
        return -1;
    }
    if time <= 0 {
        match node.post(handle, timer_message(session)) {
            Ok(()) => return session,
            Err(CallError::Overloaded { .. }) => {
                host.runtime
                    .spawn(fire_timer(node.downgrade(), handle, session));
                return session;
            }
            Err(_) => return -1,
        }
    }
    host.add_timer(handle, u64::try_from(time).unwrap_or(0), session);
    session
}

pub(crate) fn timer_message(session: c_int) -> Message {
    Message {
        source: 0,
        ptype: ptype::RESPONSE,
        session,
        payload: Bytes::new(),
    }
}

/// Deliver a timer; a full mailbox is retried (a timer is never dropped while its
/// service lives) for up to a minute, then logged.
pub(crate) async fn fire_timer(node: bee_runtime::service::WeakNode, handle: u32, session: c_int) {
    for _ in 0..60_000 {
        let Some(node) = node.upgrade() else { return };
        match node.post(handle, timer_message(session)) {
            Ok(()) => return,
            Err(CallError::Overloaded { .. }) => {}
            Err(_) => return, // the service is gone: nobody waits
        }
        drop(node);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tracing::error!(to = %fmt_handle(handle), session, "timer dropped: the service's mailbox stayed full for a minute");
}

/// Stop a service (any service of the node). From a service's own callback it stops
/// after the callback returns. 1 if it existed, else 0.
#[no_mangle]
pub extern "C" fn skynet_handle_retire(handle: u32) -> c_int {
    if let Some(c) = current() {
        if c.handle() == handle {
            c.mark_retire_self();
            return 1;
        }
    }
    match host_for(None).and_then(|h| h.node()) {
        Some(node) => c_int::from(node.kill(handle)),
        None => 0,
    }
}

/// Load module `name` from the node's module path and start an instance; NULL on failure
/// (logged).
#[no_mangle]
pub extern "C" fn skynet_context_new(
    name: *const c_char,
    parm: *const c_char,
) -> *mut SkynetContext {
    let Some(name) = str_arg(name) else {
        return std::ptr::null_mut();
    };
    let parm = str_arg(parm).unwrap_or("");
    let Some(host) = host_for(None) else {
        return std::ptr::null_mut();
    };
    let Some(node) = host.node() else {
        return std::ptr::null_mut();
    };
    let _rt = host.runtime.enter();
    match host
        .find_module(name)
        .and_then(|path| crate::start(&node, &path, parm))
    {
        Ok(started) => started.ctx.as_ptr(),
        Err(e) => {
            tracing::error!(node = %node.name(), module = name, error = %e, "skynet_context_new failed");
            std::ptr::null_mut()
        }
    }
}

/// `.name`, a cluster-visible name or `:hex` → the handle, else 0.
#[no_mangle]
pub extern "C" fn skynet_queryname(context: *mut SkynetContext, name: *const c_char) -> u32 {
    let Some(name) = str_arg(name) else { return 0 };
    host_for(ctx_ref(context))
        .and_then(|h| h.node())
        .and_then(|n| resolve_name(&n, name))
        .unwrap_or(0)
}

/// skynet's text commands (see `docs/native.md` §2).
#[no_mangle]
pub extern "C" fn skynet_command(
    context: *mut SkynetContext,
    cmd: *const c_char,
    parm: *const c_char,
) -> *const c_char {
    let Some(cmd) = str_arg(cmd) else {
        return std::ptr::null();
    };
    let parm = str_arg(parm).unwrap_or("");
    let ctx = ctx_ref(context);
    if cmd == "GETENV" {
        return skynet_getenv(parm_ptr(parm).as_ptr());
    }
    let Some(c) = ctx else {
        tracing::warn!(cmd, "skynet_command without a context; refused");
        return std::ptr::null();
    };
    let me = c.handle();
    let Some(node) = c.node() else {
        return std::ptr::null();
    };
    match cmd {
        "REG" => {
            if parm.is_empty() {
                return c.command_result(fmt_handle(me));
            }
            if parm == "." || parm.starts_with(':') {
                return bad(c, cmd, parm, "not a name");
            }
            match node.resolve(parm) {
                Ok(a) if a != me => bad(c, cmd, parm, "the name is taken"),
                _ => {
                    node.set_name(parm, me);
                    c.command_result(parm.to_string())
                }
            }
        }
        "QUERY" => match resolve_name(&node, parm) {
            Some(a) => c.command_result(fmt_handle(a)),
            None => std::ptr::null(),
        },
        "NAME" => {
            let mut it = parm.split_whitespace();
            match (it.next(), it.next().and_then(|h| resolve_name(&node, h))) {
                (Some(name), Some(addr)) if !name.starts_with(':') => {
                    node.set_name(name, addr);
                    c.command_result(name.to_string())
                }
                _ => bad(c, cmd, parm, "expected \"NAME :handle\""),
            }
        }
        "TIMEOUT" => match parm.trim().parse::<c_int>() {
            Ok(t) => {
                let session = c.new_session();
                if skynet_timeout(me, t, session) < 0 {
                    return std::ptr::null();
                }
                c.command_result(session.to_string())
            }
            Err(_) => bad(c, cmd, parm, "not a number of hundredths of a second"),
        },
        "EXIT" => {
            kernel_log(c, "KILL self");
            notify_monitor(c, &node, me);
            skynet_handle_retire(me);
            std::ptr::null()
        }
        "KILL" => {
            match resolve_name(&node, parm) {
                Some(a) => {
                    kernel_log(c, &format!("KILL :{a:x}"));
                    notify_monitor(c, &node, a);
                    skynet_handle_retire(a);
                }
                None => kernel_log(c, &format!("Can't convert {parm} to handle")),
            }
            std::ptr::null()
        }
        "LAUNCH" => launch(c, &node, parm),
        "ABORT" => {
            tracing::warn!(node = %node.name(), service = %fmt_handle(me), "ABORT: every service stops and the process exits");
            node.shutdown();
            let _ = std::io::Write::flush(&mut std::io::stdout());
            std::process::exit(0)
        }
        "MONITOR" => {
            if parm.is_empty() {
                return match c.host.monitor() {
                    0 => std::ptr::null(),
                    m => c.command_result(format!(":{m:x}")),
                };
            }
            match resolve_name(&node, parm) {
                Some(a) => c.host.set_monitor(a),
                None => {
                    kernel_log(c, &format!("Can't convert {parm} to handle"));
                    c.host.set_monitor(0);
                }
            }
            std::ptr::null()
        }
        "STAT" => {
            let v = match parm {
                "mqlen" => node.queued(me).unwrap_or(0).to_string(),
                "message" => c.messages().to_string(),
                "endless" => if c.probe.take_endless() { "1" } else { "0" }.to_string(),
                "cpu" => c.stat_cpu(),
                "time" => c.stat_time(),
                _ => String::new(),
            };
            c.command_result(v)
        }
        "SIGNAL" => {
            let (target, n) = parm.split_once(' ').unwrap_or((parm, "0"));
            let n = parse_c_int(n.trim());
            let handle = target
                .strip_prefix(':')
                .and_then(|h| u32::from_str_radix(h, 16).ok());
            match handle.and_then(|h| c.host.context(h)) {
                Some(t) => {
                    if !t.signal(n) {
                        tracing::info!(service = %fmt_handle(t.handle()), "SIGNAL: the module has no signal function");
                    }
                }
                None => tracing::info!(parm, "SIGNAL: no such module instance"),
            }
            std::ptr::null()
        }
        "SETENV" => {
            let (k, v) = parm.split_once(' ').unwrap_or((parm, ""));
            if let Err(e) = c.host.set_env(k, v) {
                tracing::warn!(key = k, error = %e, "SETENV refused");
            }
            std::ptr::null()
        }
        "NOW" => c.command_result(c.host.now_cs().to_string()),
        "STARTTIME" => c.command_result(c.host.started_unix.to_string()),
        "LOGON" | "LOGOFF" => {
            tracing::info!(service = %fmt_handle(me), cmd, parm, "skynet_command: message logging to a file is not supported by bee; ignored");
            std::ptr::null()
        }
        _ => bad(c, cmd, parm, "command not supported by bee"),
    }
}

/// A line of the kernel's own (skynet's `skynet_error` from the kernel), from `c`.
fn kernel_log(c: &SkynetContext, text: &str) {
    bee_capi_log(
        std::ptr::from_ref(c).cast_mut(),
        text.as_ptr().cast(),
        text.len(),
    );
}

/// Tell the exit monitor (if any) that `dying` stops: `PTYPE_CLIENT`, session 0, no data,
/// from the dying handle.
fn notify_monitor(c: &SkynetContext, node: &Node, dying: Addr) {
    let m = c.host.monitor();
    if m != 0 {
        let msg = Message {
            source: dying,
            ptype: ptype::CLIENT,
            session: 0,
            payload: Bytes::new(),
        };
        if let Err(e) = node.post(m, msg) {
            tracing::warn!(monitor = %fmt_handle(m), error = %e, "the exit monitor was not told");
        }
    }
}

/// An integer as C's `strtol(s, NULL, 0)` reads it (decimal, `0x` hex, `0` octal); 0 if none.
fn parse_c_int(s: &str) -> c_int {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let v = if let Some(h) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        i64::from_str_radix(h, 16).unwrap_or(0)
    } else if digits.len() > 1 && digits.starts_with('0') {
        i64::from_str_radix(&digits[1..], 8).unwrap_or(0)
    } else {
        digits.parse().unwrap_or(0)
    };
    c_int::try_from(if neg { -v } else { v }).unwrap_or(0)
}

/// skynet's `LAUNCH "<module> <args>"`: start an instance of the module found through
/// `cpath`, answer its handle as `":%08X"`, or NULL when it did not start (logged).
fn launch(c: &SkynetContext, node: &Node, parm: &str) -> *const c_char {
    let (module, args) = match parm.find([' ', '\t', '\r', '\n']) {
        Some(i) => {
            let rest = &parm[i + 1..];
            (&parm[..i], rest.split(['\r', '\n']).next().unwrap_or(""))
        }
        None => (parm, ""),
    };
    let _rt = c.host.runtime.enter();
    if module == "snlua" {
        if let Some(result) = crate::bridge::launch_replaced(c, node, args) {
            return match result {
                Ok(addr) => c.command_result(format!(":{addr:08X}")),
                Err(e) => {
                    tracing::error!(node = %node.name(), module, args, error = %e, "LAUNCH failed");
                    c.host
                        .write_skynet_log(c.handle(), &format!("LAUNCH snlua {args} failed: {e}"));
                    std::ptr::null()
                }
            };
        }
    }
    match c
        .host
        .find_module(module)
        .and_then(|path| crate::start(node, &path, args))
    {
        Ok(started) => c.command_result(format!(":{:08X}", started.addr)),
        Err(e) => {
            tracing::error!(node = %node.name(), module, args, error = %e, "LAUNCH failed");
            std::ptr::null()
        }
    }
}

fn parm_ptr(parm: &str) -> std::ffi::CString {
    std::ffi::CString::new(parm).unwrap_or_default()
}

fn bad(c: &SkynetContext, cmd: &str, parm: &str, why: &str) -> *const c_char {
    tracing::warn!(service = %fmt_handle(c.handle()), module = %c.module_name(), cmd, parm, "skynet_command: {why}");
    std::ptr::null()
}
