//! [`Handle`]: what an async handler holds — its service's state, its node, and calls to
//! any service on any node through one API.
//!
//! A handle owns what it needs (no lifetimes), so an `async move` block can keep it
//! across every `await`. The state sits behind a mutex that only this service's own
//! handlers take, one message at a time, so it is never contended; [`Handle::state`]
//! runs a closure with `&mut S` and cannot hold the lock across an `await`.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::args::{FromArgs, IntoValues};
pub use crate::remote::pack_lua;
use crate::remote::{unpack_reply, Target};
use crate::service::{Addr, CallError, Context, Node};

/// An async handler's view of its service: state, node, calls.
pub struct Handle<S> {
    state: Arc<Mutex<S>>,
    node: Node,
    addr: Addr,
    label: Arc<str>,
}

impl<S> Clone for Handle<S> {
    fn clone(&self) -> Self {
        Handle {
            state: self.state.clone(),
            node: self.node.clone(),
            addr: self.addr,
            label: self.label.clone(),
        }
    }
}

impl<S> Handle<S> {
    pub(crate) fn new(state: Arc<Mutex<S>>, ctx: &Context) -> Self {
        Handle {
            state,
            node: ctx.node().clone(),
            addr: ctx.addr(),
            label: ctx.label_arc(),
        }
    }

    /// Run `f` with the service state.
    pub fn state<T>(&self, f: impl FnOnce(&mut S) -> T) -> T {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s)
    }

    /// The node this service runs on.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// This service's address.
    pub fn addr(&self) -> Addr {
        self.addr
    }

    /// This service's label (its kind or name).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Call `target` (an address, or a name — `"@name"` or `"name"`) on `node` with a
    /// packed payload; returns the packed reply. `node` may be this node's own name: the
    /// call is then local. Other nodes are reached through the node's installed
    /// [`crate::Remote`] (the cluster layer).
    pub async fn call(
        &self,
        node: &str,
        target: impl Into<Target>,
        payload: Bytes,
    ) -> Result<Bytes, CallError> {
        self.node
            .call_on_from(self.addr, node, target.into(), payload)
            .await
    }

    /// Push a packed payload to `target` on `node` (this node or another); no reply.
    pub async fn send(
        &self,
        node: &str,
        target: impl Into<Target>,
        payload: Bytes,
    ) -> Result<(), CallError> {
        self.node
            .send_on_from(self.addr, node, target.into(), payload)
            .await
    }

    /// Call a `"lua"` command: packs `("lua", command, args…)`, unpacks the reply into
    /// `R` (one type, a tuple of types, or `Vec<Value>`).
    pub async fn call_lua<R: FromArgs>(
        &self,
        node: &str,
        target: impl Into<Target>,
        command: &str,
        args: impl IntoValues,
    ) -> Result<R, CallError> {
        let reply = self.call(node, target, pack_lua(command, args)?).await?;
        unpack_reply(node, command, &reply)
    }

    /// Push a `"lua"` command: `("lua", command, args…)`, no reply.
    pub async fn send_lua(
        &self,
        node: &str,
        target: impl Into<Target>,
        command: &str,
        args: impl IntoValues,
    ) -> Result<(), CallError> {
        self.send(node, target, pack_lua(command, args)?).await
    }
}
