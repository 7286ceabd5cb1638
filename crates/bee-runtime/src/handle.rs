//! [`Handle`]: the one context a handler gets — its service's state, the message's
//! sender (and game frame), its node, and calls to any service on any node through one
//! API.
//!
//! A handle owns what it needs (no lifetimes), so an `async move` block can keep it
//! across every `await`; a handler written against it starts synchronous and may later
//! `await` a call without changing its signature or its registration
//! ([`crate::Dispatcher::handler`]). The state sits behind a mutex that only this
//! service's own handlers take, one message at a time, so it is never contended;
//! [`Handle::state`] runs a closure with `&mut S` and cannot hold the lock across an
//! `await`.
//!
//! What a handle shares with its service ([`Shared`]) is made once per service, so
//! making a handle for a message costs one reference count.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bee_codec::kkt::KktFrame;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::args::{FromArgs, IntoValues};
pub use crate::remote::pack_lua;
use crate::remote::{unpack_reply, Target};
use crate::service::{service_name, Addr, CallError, Context, Node, Responder};

/// [`Handle::exit`] was asked.
const EXIT: u8 = 1;
/// [`Handle::take_reply`] took the reply slot of the current message.
const TAKEN: u8 = 2;

/// Where the service lives: known from its first message on.
struct Home {
    node: Node,
    addr: Addr,
    label: Arc<str>,
}

/// A reply slot taken by a handler: the message it belongs to and where its answer
/// arrives.
type TakenReply = (u64, oneshot::Receiver<Result<Bytes, CallError>>);

/// What every handle of one service shares: the state, where the service lives, and
/// what a handler asked of the current message (stop the service, answer later).
pub(crate) struct Shared<S> {
    state: Mutex<S>,
    home: OnceLock<Home>,
    /// `EXIT` and `TAKEN`, read once when a message's handler ends.
    flags: AtomicU8,
    /// The message being handled by a handler that holds handles (0: none).
    turn: AtomicU64,
    taken: Mutex<Option<TakenReply>>,
}

impl<S> Shared<S> {
    pub(crate) fn new(state: S) -> Self {
        Shared {
            state: Mutex::new(state),
            home: OnceLock::new(),
            flags: AtomicU8::new(0),
            turn: AtomicU64::new(0),
            taken: Mutex::new(None),
        }
    }

    /// The state, locked (a handler that panicked while holding it left it as it was).
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, S> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state, when nothing else holds this service's handles: no lock taken.
    pub(crate) fn state_mut(&mut self) -> &mut S {
        self.state.get_mut().unwrap_or_else(|e| e.into_inner())
    }

    /// Message `turn` (numbered by the caller, never 0) begins for handles.
    pub(crate) fn begin(&self, turn: u64) {
        self.turn.store(turn, Ordering::Release);
    }

    /// A message's handler ended (returned, failed or panicked): handles of message
    /// `turn` may no longer take its reply; a stop asked by any handle and a reply slot
    /// taken during this message are handed to `ctx`. Costs one atomic load when
    /// neither was asked.
    pub(crate) fn end(&self, turn: u64, ctx: &mut Context) {
        if turn != 0 {
            self.turn.store(0, Ordering::Release);
        }
        if self.flags.load(Ordering::Acquire) == 0 {
            return;
        }
        let flags = self.flags.swap(0, Ordering::AcqRel);
        if flags & EXIT != 0 {
            ctx.exit();
        }
        if flags & TAKEN != 0 {
            let taken = self.taken.lock().unwrap_or_else(|e| e.into_inner()).take();
            // A slot taken during an earlier message (by a handle racing its end) is
            // dropped: that caller was answered when its handler ended.
            if let Some((_, rx)) = taken.filter(|(at, _)| *at == turn && turn != 0) {
                if let Some(real) = ctx.take_reply() {
                    real.relay(rx);
                }
            }
        }
    }
}

/// A handler's view of its service and of the message it handles: state, sender, node,
/// calls. Made for each message a [`crate::Dispatcher::handler`] (or `command_async`,
/// `on_async`, `text_handler`) handles; cheap to clone.
pub struct Handle<S> {
    shared: Arc<Shared<S>>,
    source: Addr,
    wants_reply: bool,
    turn: u64,
    frame: Option<Arc<KktFrame>>,
}

impl<S> Clone for Handle<S> {
    fn clone(&self) -> Self {
        Handle {
            shared: self.shared.clone(),
            source: self.source,
            wants_reply: self.wants_reply,
            turn: self.turn,
            frame: self.frame.clone(),
        }
    }
}

impl<S> Handle<S> {
    /// A handle for message `turn` (see [`Shared::begin`]), with its game frame for a
    /// `"text"` handler.
    pub(crate) fn new(
        shared: &Arc<Shared<S>>,
        ctx: &Context,
        turn: u64,
        frame: Option<Arc<KktFrame>>,
    ) -> Self {
        shared.home.get_or_init(|| Home {
            node: ctx.node().clone(),
            addr: ctx.addr(),
            label: ctx.label_arc(),
        });
        Handle {
            shared: shared.clone(),
            source: ctx.source(),
            wants_reply: ctx.wants_reply(),
            turn,
            frame,
        }
    }

    fn home(&self) -> &Home {
        self.shared
            .home
            .get()
            .expect("a handle is made after its service's home is set")
    }

    /// Run `f` with the service state. The lock is held only while `f` runs, never
    /// across an `await`.
    pub fn state<T>(&self, f: impl FnOnce(&mut S) -> T) -> T {
        let mut s = self.shared.lock();
        f(&mut s)
    }

    /// The node this service runs on.
    pub fn node(&self) -> &Node {
        &self.home().node
    }

    /// This service's address.
    pub fn addr(&self) -> Addr {
        self.home().addr
    }

    /// This service's label (its kind or name).
    pub fn label(&self) -> &str {
        &self.home().label
    }

    /// The address of the service that sent the message being handled (0 when it did
    /// not come from a service: a remote peer, a tool, the node itself), as skynet's
    /// `source`.
    pub fn source(&self) -> Addr {
        self.source
    }

    /// The game frame of the `"text"` message being handled (names, uid, roomid,
    /// session); `None` in a `"lua"` command.
    pub fn frame(&self) -> Option<&KktFrame> {
        self.frame.as_deref()
    }

    /// Whether the sender of the message being handled waits for a reply.
    pub fn wants_reply(&self) -> bool {
        self.wants_reply
    }

    /// Stop this service once the current handler returns (asked from a task that
    /// outlives its message: once the handler running then returns).
    pub fn exit(&self) {
        self.shared.flags.fetch_or(EXIT, Ordering::AcqRel);
    }

    /// Take the reply slot of the message being handled, to answer later — from a task,
    /// while the service goes on with its next messages (skynet.response). The handler's
    /// own return value then answers nobody. `None` when the sender does not wait, when
    /// the slot was already taken, or when this handle's message is over.
    pub fn take_reply(&self) -> Option<Responder> {
        if !self.wants_reply {
            return None;
        }
        let mut taken = self.shared.taken.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.shared.turn.load(Ordering::Acquire);
        if current != self.turn || current == 0 {
            return None;
        }
        if taken.as_ref().is_some_and(|(at, _)| *at == self.turn) {
            return None;
        }
        let home = self.home();
        let (responder, rx) = Responder::pair(service_name(&home.label, home.addr));
        *taken = Some((self.turn, rx));
        self.shared.flags.fetch_or(TAKEN, Ordering::AcqRel);
        Some(responder)
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
        let home = self.home();
        home.node
            .call_on_from(home.addr, node, target.into(), payload)
            .await
    }

    /// Push a packed payload to `target` on `node` (this node or another); no reply.
    pub async fn send(
        &self,
        node: &str,
        target: impl Into<Target>,
        payload: Bytes,
    ) -> Result<(), CallError> {
        let home = self.home();
        home.node
            .send_on_from(home.addr, node, target.into(), payload)
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
