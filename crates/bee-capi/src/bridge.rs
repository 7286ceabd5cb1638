//! Lua services the node provides itself: a program can tell the host that a Lua
//! service name (`clusterd`, when the node is a bee cluster node) is served by a service
//! of its own. skynet's launcher then gets that service's handle for `LAUNCH snlua NAME`
//! (and its `LAUNCHOK`), so `skynet.uniqueservice(NAME)` in unchanged Lua reaches it.
//!
//! Such a service may also take skynet's `(pointer, size)` message blocks: skynet's Lua
//! hands a block it packed (`skynet.pack(...)`, a message received raw) to the service
//! that will send it on as a light userdata and its size, and that service owns the
//! block. For an address marked with [`crate::Host::take_lua_buffers`], each such pair
//! in a `lua` message from a Lua service arrives as one string holding the bytes, and
//! the block is freed here.

use std::ffi::c_void;
use std::sync::Arc;

use bee_codec::seri::{self, Value};
use bee_runtime::service::ptype;
use bee_runtime::{Addr, Message, Node};
use bytes::Bytes;

use crate::context::{MallocBlock, SkynetContext};
use crate::{lock, Host};

/// Starts a replacement for a Lua service: gets the node, the launching service and the
/// launch arguments after the service name; answers the new service's address or why it
/// did not start.
pub type LuaServiceFactory = Arc<dyn Fn(&Node, Addr, &str) -> Result<Addr, String> + Send + Sync>;

/// Blocks larger than this are not taken over (left as they are, and logged): a size
/// beyond it is a corrupt message, not a cluster request.
const MAX_BLOCK: i64 = 1 << 31;

impl Host {
    /// Serve `LAUNCH snlua <name> …` with `factory` instead of a Lua service.
    pub fn replace_lua_service(&self, name: &str, factory: LuaServiceFactory) {
        lock(&self.replaced).insert(name.to_string(), factory);
    }

    /// Messages from Lua services to `addr` carry `(pointer, size)` blocks as strings
    /// (see the module documentation). Forgotten when the address is [`Host::forget`]ed.
    pub fn take_lua_buffers(&self, addr: Addr) {
        lock(&self.buffer_takers).insert(addr);
    }

    /// Stop treating `addr` as a taker of blocks (its service ended).
    pub fn forget(&self, addr: Addr) {
        lock(&self.buffer_takers).remove(&addr);
    }

    /// Write one line to skynet's log as service `source` (skynet's logger format, where
    /// the node hosts Lua); false when skynet-format logging is off.
    pub fn skynet_log(&self, source: Addr, line: &str) -> bool {
        self.write_skynet_log(source, line)
    }

    pub(crate) fn takes_buffers(&self, addr: Addr) -> bool {
        let set = lock(&self.buffer_takers);
        !set.is_empty() && set.contains(&addr)
    }
}

/// `LAUNCH snlua <args>` for a replaced name: `Some(result)` when `args` names one.
pub(crate) fn launch_replaced(
    c: &SkynetContext,
    node: &Node,
    args: &str,
) -> Option<Result<Addr, String>> {
    let args = args.trim_start();
    let (name, rest) = match args.find([' ', '\t']) {
        Some(i) => (&args[..i], args[i + 1..].trim_start()),
        None => (args, ""),
    };
    let factory = lock(&c.host.replaced).get(name).cloned()?;
    let result = factory(node, c.handle(), rest);
    if let Ok(addr) = result {
        c.host
            .write_skynet_log(addr, &format!("LAUNCH snlua {args} (bee)"));
        // skynet's launcher answers `skynet.newservice` when the new service says
        // LAUNCHOK; it reads it after the current callback, which registers the handle.
        if let Ok(launcher) = node.resolve(".launcher") {
            if let Ok(payload) = seri::pack(&[Value::from("LAUNCHOK")]) {
                let msg = Message {
                    source: addr,
                    ptype: ptype::LUA,
                    session: 0,
                    payload,
                };
                if let Err(e) = node.post(launcher, msg) {
                    tracing::warn!(service = %crate::fmt_handle(addr), error = %e, "LAUNCHOK to .launcher not delivered");
                }
            }
        }
    }
    Some(result)
}

/// A `lua` message for a block taker: every light userdata followed by an integer size
/// becomes a string of those bytes, and the block is freed. Anything else is unchanged.
pub(crate) fn inline_blocks(payload: Bytes) -> Bytes {
    let Ok(values) = seri::unpack(&payload) else {
        return payload;
    };
    if !values.iter().any(|v| matches!(v, Value::LightUserData(_))) {
        return payload;
    }
    let mut out = Vec::with_capacity(values.len());
    let mut it = values.into_iter().peekable();
    while let Some(v) = it.next() {
        match (v, it.peek()) {
            (Value::LightUserData(p), Some(Value::Integer(n))) if (0..MAX_BLOCK).contains(n) => {
                let n = *n as usize;
                it.next();
                // SAFETY: skynet's convention for a (pointer, size) pair in a message: the
                // pointer is a malloc'ed block of `size` bytes that the sender handed over
                // and the receiver owns (skynet's cluster sender frees it after packing).
                // Only addresses a program marked as such receivers get here, and only
                // from Lua services of this process.
                let block = unsafe { MallocBlock::from_raw(p as usize as *mut c_void, n) };
                out.push(Value::String(Bytes::copy_from_slice(block.as_ref())));
            }
            (v, _) => out.push(v),
        }
    }
    match seri::pack(&out) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "a Lua message with a block could not be repacked");
            Bytes::new()
        }
    }
}
