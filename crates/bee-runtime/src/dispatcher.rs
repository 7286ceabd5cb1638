//! [`Dispatcher`]: the service most game code is — state plus a `"lua"` command table
//! and a `"text"` protobuf handler map.
//!
//! Follow one message: the payload (skynet.pack bytes) is read once; its sub-type picks
//! the table.
//! - `"lua"` → [`crate::lua::LuaTable`]: command name → handler (arguments converted to
//!   the handler's types) → reply values, packed. The name and the arguments are read
//!   straight off the payload ([`bee_codec::seri::Reader`]): no `Vec<Value>` in between.
//! - `"text"` → [`crate::text::TextTable`]: the team's frame (`bee_codec::kkt`) →
//!   handler by message name → reply frame (all four names empty, uid, roomid and
//!   session copied: the team's Lua reply), packed as one string.
//! - anything else → an error naming the sub-type.
//!
//! Every sub-type but the `"lua"` hot path is unpacked once into an [`Incoming`] (a
//! `"text"` frame is decoded once, there) and goes through [`Router::route`]; a message
//! that reaches a `"lua"` command by either way gets the same reply or the same error.
//!
//! The reply reaches the caller only if it waits; errors become the caller's error text.
//!
//! A [`Router`] is anything that routes unpacked values; [`Dispatcher`] is one. Policies
//! that need to see a message before or after the handler (such as answering native
//! rpc callers, [`crate::native::RpcServer`]) wrap a router instead of living inside it.
//!
//! Handlers have one shape, [`Dispatcher::handler`] (and [`Dispatcher::text_handler`]
//! for `"text"`): a [`Handle`] and the arguments in, a future out. A body that awaits
//! nothing is written the same way as one that calls another node, so a handler that
//! starts synchronous and later awaits a call keeps its signature and its registration:
//!
//! ```
//! use bee_runtime::Dispatcher;
//!
//! #[derive(Default)]
//! struct Counter { hits: i64 }
//!
//! let service = Dispatcher::new(Counter::default())
//!     // Synchronous for now…
//!     .handler("hit", |h, n: i64| async move {
//!         Ok(h.state(|s| { s.hits += n; s.hits }))
//!     })
//!     // …and the same shape once it awaits something.
//!     .handler("hit_later", |h, n: i64| async move {
//!         tokio::task::yield_now().await;
//!         Ok(h.state(|s| { s.hits += n; s.hits }))
//!     });
//! # let _ = service;
//! ```
//!
//! [`Dispatcher::command`] (`|s, n: i64| Ok(…)`, `&mut` state) and [`Dispatcher::on`] are
//! shortcuts for handlers that never await: no future and no handle are made for them.

use std::future::Future;
use std::sync::Arc;

use bee_codec::kkt::KktFrame;
use bee_codec::seri::{self, Value};
use bytes::Bytes;

use crate::args::{FromArgs, IntoValues};
use crate::handle::{Handle, Shared};
use crate::lua::{LuaTable, Ran};
use crate::service::{Context, HandleResult, Message, Service, ServiceError};
use crate::text::{reply_frame, Frame, Started, TextTable};

/// A message as routers see it: unpacked once, its frame decoded once.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// `("lua", command, args…)`: the values after `"lua"`.
    Lua(Vec<Value>),
    /// `("text", frame)`: a game message (sub_type 16, or an rpc request with 18).
    /// Boxed so that every router future stays small on the `"lua"` path.
    Text(Box<KktFrame>),
    /// `("rpc_response", frame)`: the reply to an rpc request (sub_type 17).
    RpcResponse(Box<KktFrame>),
    /// Another sub-type: its name and the values after it.
    Other(Bytes, Vec<Value>),
}

impl Incoming {
    /// Read a payload: `skynet.pack(subtype, …)`.
    pub fn from_payload(payload: &Bytes) -> Result<Incoming, ServiceError> {
        Self::from_values(seri::unpack(payload)?)
    }

    /// Sort values already unpacked from a payload.
    pub fn from_values(mut all: Vec<Value>) -> Result<Incoming, ServiceError> {
        // Take the sub-type out of the one vector the unpack made (no second vector:
        // this is every message's path; the shift is a few words).
        let subtype = if all.is_empty() {
            Value::Nil
        } else {
            all.remove(0)
        };
        let first = |mut v: Vec<Value>| {
            if v.is_empty() {
                None
            } else {
                Some(v.swap_remove(0))
            }
        };
        let frame = |what: &str, v: Option<Value>| match v {
            Some(Value::String(b)) => KktFrame::decode(&b)
                .map(Box::new)
                .map_err(|e| ServiceError::msg(format!("{what} message is not a game frame: {e}"))),
            Some(other) => Err(ServiceError::msg(format!(
                "{what} message must carry a game frame string, got {}",
                other.type_name()
            ))),
            None => Err(ServiceError::msg(format!(
                "{what} message has no game frame"
            ))),
        };
        Ok(match subtype {
            Value::String(s) => match s.as_ref() {
                b"lua" => Incoming::Lua(all),
                b"text" => Incoming::Text(frame("text", first(all))?),
                b"rpc_response" => Incoming::RpcResponse(frame("rpc_response", first(all))?),
                _ => Incoming::Other(s, all),
            },
            other => {
                return Err(ServiceError::msg(format!(
                    "message has no sub-type: first value is {}, expected a string such as \"lua\"",
                    other.type_name()
                )))
            }
        })
    }
}

/// What a router answers with.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Reply values, already packed.
    Values(Bytes),
    /// An encoded reply frame (packed as one string for a waiting caller).
    Frame(Bytes),
    /// Nothing to answer (a waiting caller gets an empty reply).
    Nothing,
}

impl Reply {
    /// The payload for a waiting caller.
    pub fn into_payload(self) -> Result<Bytes, ServiceError> {
        Ok(match self {
            Reply::Values(b) => b,
            Reply::Frame(f) => seri::pack(&[Value::String(f)])?,
            Reply::Nothing => Bytes::new(),
        })
    }
}

/// Routes a message already read into an [`Incoming`].
pub trait Router: Send + 'static {
    /// Route one message to a handler.
    fn route(
        &mut self,
        ctx: &mut Context,
        msg: Incoming,
    ) -> impl Future<Output = Result<Reply, ServiceError>> + Send;

    /// Hot update: see [`Service::export_state`] (a router served as a service).
    fn export_state(&mut self) -> Option<Vec<u8>> {
        None
    }

    /// Hot update: see [`Service::import_state`].
    fn import_state(&mut self, state: &[u8]) -> Result<(), ServiceError> {
        let _ = state;
        Err(ServiceError::msg(
            "this service does not take state across a handover",
        ))
    }
}

/// How a [`Dispatcher`]'s state crosses a hot update ([`Dispatcher::carry`]).
type ExportFn<S> = Box<dyn Fn(&S) -> Vec<u8> + Send + Sync>;
type ImportFn<S> = Box<dyn Fn(&mut S, &[u8]) -> Result<(), ServiceError> + Send + Sync>;

/// Serve any [`Router`] as a [`Service`]: read the payload once, route, answer.
pub async fn serve<R: Router>(router: &mut R, ctx: &mut Context, msg: Message) -> HandleResult {
    let incoming = Incoming::from_payload(&msg.payload)?;
    Ok(Some(router.route(ctx, incoming).await?.into_payload()?))
}

/// A service made of state `S`, a lua command table and a text handler map.
pub struct Dispatcher<S> {
    state: Arc<Shared<S>>,
    /// Messages handled so far: numbers each message for its handles.
    turns: u64,
    lua: LuaTable<S>,
    text: TextTable<S>,
    carry: Option<(ExportFn<S>, ImportFn<S>)>,
}

impl<S: Send + 'static> Dispatcher<S> {
    /// A dispatcher over `state` with empty tables.
    pub fn new(state: S) -> Self {
        Dispatcher {
            state: Arc::new(Shared::new(state)),
            turns: 0,
            lua: LuaTable::new(),
            text: TextTable::new(),
            carry: None,
        }
    }

    /// Carry the state across a hot update (`bee run --takeover`): `export` turns it into
    /// bytes after the old process handled its last message, `import` puts those bytes
    /// into the new process's state before its first. Without it the new process starts
    /// from the state given to [`Dispatcher::new`].
    pub fn carry(
        mut self,
        export: impl Fn(&S) -> Vec<u8> + Send + Sync + 'static,
        import: impl Fn(&mut S, &[u8]) -> Result<(), ServiceError> + Send + Sync + 'static,
    ) -> Self {
        self.carry = Some((Box::new(export), Box::new(import)));
        self
    }

    /// Set the `"lua"` command table.
    pub fn lua(mut self, table: LuaTable<S>) -> Self {
        self.lua = table;
        self
    }

    /// Set the `"text"` handler map.
    pub fn text(mut self, table: TextTable<S>) -> Self {
        self.text = table;
        self
    }

    /// Add a `"lua"` command in the one handler shape (see [`LuaTable::handler`]):
    /// `|h, (uid, n): (i64, i64)| async move { … }`, whose body may await calls or not.
    pub fn handler<A, R, F, Fut>(mut self, name: &str, f: F) -> Self
    where
        A: FromArgs,
        R: IntoValues,
        F: Fn(Handle<S>, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, ServiceError>> + Send + 'static,
    {
        self.lua = self.lua.handler(name, f);
        self
    }

    /// Add a `"text"` handler for messages of type `M` in the one handler shape (see
    /// [`TextTable::handler`]): `|h, m: M| async move { … }`, the frame in
    /// [`Handle::frame`].
    pub fn text_handler<M, R, F, Fut>(mut self, f: F) -> Self
    where
        M: prost::Message + prost::Name + Default + 'static,
        R: prost::Message + prost::Name + 'static,
        F: Fn(Handle<S>, M) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<R>, ServiceError>> + Send + 'static,
    {
        self.text = self.text.handler(f);
        self
    }

    /// Add a synchronous `"lua"` command (see [`LuaTable::command`]).
    pub fn command<A, R, F>(mut self, name: &str, f: F) -> Self
    where
        A: FromArgs,
        R: IntoValues,
        F: Fn(&mut S, A) -> Result<R, ServiceError> + Send + Sync + 'static,
    {
        self.lua = self.lua.command(name, f);
        self
    }

    /// Add a synchronous `"lua"` command that gets the message's [`Context`] (see
    /// [`LuaTable::command_ctx`]).
    pub fn command_ctx<A, R, F>(mut self, name: &str, f: F) -> Self
    where
        A: FromArgs,
        R: IntoValues,
        F: Fn(&mut S, &mut Context, A) -> Result<R, ServiceError> + Send + Sync + 'static,
    {
        self.lua = self.lua.command_ctx(name, f);
        self
    }

    /// [`Dispatcher::handler`] (its older name).
    pub fn command_async<A, R, F, Fut>(mut self, name: &str, f: F) -> Self
    where
        A: FromArgs,
        R: IntoValues,
        F: Fn(Handle<S>, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, ServiceError>> + Send + 'static,
    {
        self.lua = self.lua.command_async(name, f);
        self
    }

    /// Add a synchronous `"text"` handler for messages of type `M` (see
    /// [`TextTable::on`]).
    pub fn on<M, R, F>(mut self, f: F) -> Self
    where
        M: prost::Message + prost::Name + Default + 'static,
        R: prost::Message + prost::Name + 'static,
        F: Fn(&mut S, &mut Context, &Frame, M) -> Result<Option<R>, ServiceError>
            + Send
            + Sync
            + 'static,
    {
        self.text = self.text.on(f);
        self
    }

    /// Add an async `"text"` handler for messages of type `M` (see
    /// [`TextTable::on_async`]).
    pub fn on_async<M, R, F, Fut>(mut self, f: F) -> Self
    where
        M: prost::Message + prost::Name + Default + 'static,
        R: prost::Message + prost::Name + 'static,
        F: Fn(Handle<S>, Frame, M) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<R>, ServiceError>> + Send + 'static,
    {
        self.text = self.text.on_async(f);
        self
    }

    /// Run `f` with the state (e.g. to read it in a test, or to export it).
    pub fn with_state<T>(&self, f: impl FnOnce(&mut S) -> T) -> T {
        f(&mut self.state.lock())
    }

    /// The next message's number (never 0).
    fn next_turn(&mut self) -> u64 {
        self.turns += 1;
        self.turns
    }
}

/// Ends a message's turn when dropped: after its handler's work returned, failed or
/// panicked, what a handle asked (stop the service, answer later) reaches the
/// [`Context`].
struct TurnEnd<'s, 'c, S> {
    shared: &'s Shared<S>,
    turn: u64,
    ctx: &'c mut Context,
}

impl<S> Drop for TurnEnd<'_, '_, S> {
    fn drop(&mut self) {
        self.shared.end(self.turn, self.ctx);
    }
}

impl<S: Send + 'static> Router for Dispatcher<S> {
    async fn route(&mut self, ctx: &mut Context, msg: Incoming) -> Result<Reply, ServiceError> {
        match msg {
            Incoming::Lua(values) => {
                let turn = self.next_turn();
                let packed = match self.lua.run_values(&mut self.state, turn, ctx, values) {
                    Ran::Done(packed) => {
                        self.state.end(0, ctx);
                        packed
                    }
                    Ran::Async(work) => {
                        let _end = TurnEnd {
                            shared: &self.state,
                            turn,
                            ctx,
                        };
                        work.await
                    }
                };
                Ok(Reply::Values(packed?))
            }
            Incoming::Text(frame) => {
                let turn = self.next_turn();
                let started = self.text.start(&self.state, turn, ctx, *frame);
                let (request, reply) = match started {
                    Ok((request, Started::Done(reply))) => {
                        self.state.end(0, ctx);
                        (request, reply)
                    }
                    Ok((request, Started::Async(work))) => {
                        let _end = TurnEnd {
                            shared: &self.state,
                            turn,
                            ctx,
                        };
                        (request, work.await?)
                    }
                    Err(e) => {
                        self.state.end(0, ctx);
                        return Err(e);
                    }
                };
                match reply {
                    Some(reply) => Ok(Reply::Frame(reply_frame(&request, &reply)?)),
                    None => Ok(Reply::Nothing),
                }
            }
            Incoming::RpcResponse(frame) => Err(ServiceError::msg(format!(
                "service {} got an rpc_response (session {}) but makes no rpc calls",
                ctx.label(),
                frame.session
            ))),
            Incoming::Other(subtype, _) => Err(ServiceError::msg(format!(
                "unknown sub-type {:?} (this service takes \"lua\" and \"text\")",
                String::from_utf8_lossy(&subtype)
            ))),
        }
    }

    fn export_state(&mut self) -> Option<Vec<u8>> {
        self.export_carried()
    }

    fn import_state(&mut self, state: &[u8]) -> Result<(), ServiceError> {
        self.import_carried(state)
    }
}

impl<S: Send + 'static> Dispatcher<S> {
    fn export_carried(&self) -> Option<Vec<u8>> {
        let (export, _) = self.carry.as_ref()?;
        Some(self.with_state(|s| export(s)))
    }

    fn import_carried(&self, state: &[u8]) -> Result<(), ServiceError> {
        match &self.carry {
            Some((_, import)) => self.with_state(|s| import(s, state)),
            None => Err(ServiceError::msg(
                "this dispatcher carries no state (no Dispatcher::carry)",
            )),
        }
    }
}

impl<S: Send + 'static> Service for Dispatcher<S> {
    fn handle(
        &mut self,
        ctx: &mut Context,
        msg: Message,
    ) -> impl Future<Output = HandleResult> + Send {
        // The hot path, a `"lua"` command, runs here, before any future exists: the
        // command name and its arguments are read straight off the payload (no
        // `Vec<Value>`), a synchronous command runs to the end, and what the node boxes
        // and polls is just its reply (or an async command's work). Everything else is
        // unpacked and goes through `route` as for any router.
        let mut r = seri::Reader::new(&msg.payload);
        if r.next_if_string() == Some(b"lua") {
            let turn = self.next_turn();
            return match self.lua.run_packed(&mut self.state, turn, ctx, r) {
                Ran::Done(packed) => {
                    self.state.end(0, ctx);
                    Handled::Ready(Some(packed.map(Some)))
                }
                Ran::Async(work) => Handled::Lua(
                    work,
                    Some(TurnEnd {
                        shared: &self.state,
                        turn,
                        ctx,
                    }),
                ),
            };
        }
        Handled::Routed(Box::pin(async move {
            let incoming = Incoming::from_payload(&msg.payload)?;
            Ok(Some(self.route(ctx, incoming).await?.into_payload()?))
        }))
    }

    fn export_state(&mut self) -> Option<Vec<u8>> {
        Router::export_state(self)
    }

    fn import_state(&mut self, state: &[u8]) -> Result<(), ServiceError> {
        Router::import_state(self, state)
    }
}

/// What [`Dispatcher`]'s `handle` gives the node: the hot path's reply, already made,
/// or work still to await (`F`: the router path, boxed). A few words, so the box the
/// node makes for every message stays small.
enum Handled<'s, 'c, S, F> {
    /// A synchronous `"lua"` command ran (taken when polled).
    Ready(Option<HandleResult>),
    /// An asynchronous `"lua"` command's work, and the end of its turn (taken when the
    /// work is done; dropped with it if it panics).
    Lua(
        futures::future::BoxFuture<'static, Result<Bytes, ServiceError>>,
        Option<TurnEnd<'s, 'c, S>>,
    ),
    /// Any other message, through [`Router::route`].
    Routed(std::pin::Pin<Box<F>>),
}

impl<S, F: Future<Output = HandleResult>> Future for Handled<'_, '_, S, F> {
    type Output = HandleResult;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<HandleResult> {
        match &mut *self {
            Handled::Ready(reply) => {
                std::task::Poll::Ready(reply.take().expect("Handled polled after it completed"))
            }
            Handled::Lua(work, end) => {
                let done = std::task::ready!(work.as_mut().poll(cx));
                drop(end.take());
                std::task::Poll::Ready(done.map(Some))
            }
            Handled::Routed(work) => work.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{Node, RuntimeConfig};

    /// The same dispatcher served through [`serve`] (unpack, then route): the path every
    /// other router takes.
    struct Routed(Dispatcher<i64>);

    impl Service for Routed {
        async fn handle(&mut self, ctx: &mut Context, msg: Message) -> HandleResult {
            serve(&mut self.0, ctx, msg).await
        }
    }

    fn counter() -> Dispatcher<i64> {
        Dispatcher::new(0)
            .command("add", |s, (n, note): (i64, Option<String>)| {
                *s += n;
                Ok((*s, note))
            })
            .command_async("later", |h, (n,): (i64,)| async move {
                tokio::task::yield_now().await;
                Ok::<_, ServiceError>(h.state(|s| *s + n))
            })
    }

    /// A `"lua"` payload: `("lua", values…)`.
    fn lua_payload(rest: Vec<Value>) -> Bytes {
        let mut v = vec![Value::from("lua")];
        v.extend(rest);
        seri::pack(&v).unwrap()
    }

    /// The handler's error text, for a call that must fail.
    async fn failure(node: &Node, to: crate::Addr, payload: Bytes) -> String {
        match node.call(to, payload).await {
            Err(crate::CallError::Failed { message, .. }) => message,
            other => panic!("expected a handler error, got {other:?}"),
        }
    }

    /// `hit` written in the one handler shape, first with a body that awaits nothing,
    /// then the same handler after it learned to await a call (to `@bank` on its own
    /// node, through the same `call_lua` a remote call uses): same registration, same
    /// signature. Both also run through [`serve`] (the router path).
    fn one_shape() -> Dispatcher<i64> {
        Dispatcher::new(0)
            .handler("hit", |h, n: i64| async move {
                Ok(h.state(|s| {
                    *s += n;
                    *s
                }))
            })
            .handler("hit_bank", |h, n: i64| async move {
                let node = h.node().name().to_string();
                let bonus: i64 = h.call_lua(&node, "@bank", "bonus", n).await?;
                Ok(h.state(|s| {
                    *s += n + bonus;
                    *s
                }))
            })
            .handler("who", |h, ()| async move {
                Ok((
                    i64::from(h.source()),
                    h.wants_reply(),
                    h.label().to_string(),
                ))
            })
            .handler("fail", |_h, text: String| async move {
                Err::<(), _>(ServiceError::msg(text))
            })
            .handler("fail_after_call", |h, text: String| async move {
                let node = h.node().name().to_string();
                let _: i64 = h.call_lua(&node, "@bank", "bonus", 1).await?;
                Err::<(), _>(ServiceError::msg(text))
            })
            .handler("bank_refuses", |h, ()| async move {
                let node = h.node().name().to_string();
                let v: i64 = h.call_lua(&node, "@bank", "nosuch", ()).await?;
                Ok(v)
            })
            .handler("panic", |_h, text: String| async move {
                if !text.is_empty() {
                    panic!("{text}");
                }
                Ok(())
            })
            .handler("panic_after_call", |h, text: String| async move {
                let node = h.node().name().to_string();
                let _: i64 = h.call_lua(&node, "@bank", "bonus", 1).await?;
                h.state(|s| *s += 1000);
                panic!("{text}");
                #[allow(unreachable_code)]
                Ok(())
            })
            .command("hits", |s, ()| Ok(*s))
    }

    fn bank() -> Dispatcher<()> {
        Dispatcher::new(()).command("bonus", |_s, n: i64| Ok(n * 10))
    }

    #[tokio::test]
    async fn one_handler_shape_runs_sync_and_after_awaiting_a_call_on_both_paths() {
        let node = Node::new("one", RuntimeConfig::default());
        node.spawn_named("bank", bank());
        let fast = node.spawn("svc", one_shape());
        let slow = node.spawn("svc", Routed(one_shape()));
        for to in [fast, slow] {
            let hit = |n: i64| lua_payload(vec![Value::from("hit"), Value::Integer(n)]);
            let hit_bank = |n: i64| lua_payload(vec![Value::from("hit_bank"), Value::Integer(n)]);
            let one = |r: Bytes| seri::unpack(&r).unwrap();
            assert_eq!(
                one(node.call(to, hit(2)).await.unwrap()),
                [Value::Integer(2)]
            );
            // 2 + 3 + 30 from the bank, after an await.
            assert_eq!(
                one(node.call(to, hit_bank(3)).await.unwrap()),
                [Value::Integer(35)]
            );
            assert_eq!(
                one(node.call(to, hit(1)).await.unwrap()),
                [Value::Integer(36)]
            );
            // The handle knows the sender (a tool: 0), that a reply is awaited, the label.
            assert_eq!(
                one(node
                    .call(to, lua_payload(vec![Value::from("who")]))
                    .await
                    .unwrap()),
                [Value::Integer(0), Value::Boolean(true), Value::from("svc")]
            );
            // Arguments that do not fit are refused as for any command.
            let bad = failure(
                &node,
                to,
                lua_payload(vec![Value::from("hit"), Value::from("x")]),
            )
            .await;
            assert!(bad.starts_with("command hit takes"), "{bad}");
        }
        node.shutdown();
    }

    #[tokio::test]
    async fn one_handler_shape_errors_and_panics_as_the_sync_shortcut_does() {
        let node = Node::new("one", RuntimeConfig::default());
        node.spawn_named("bank", bank());
        // The same failures written with the synchronous shortcut: the caller must see
        // the same words.
        let old = node.spawn(
            "svc",
            Dispatcher::new(0i64)
                .command("fail", |_s, text: String| {
                    Err::<(), _>(ServiceError::msg(text))
                })
                .command("panic", |_s, text: String| -> Result<(), ServiceError> {
                    panic!("{text}")
                }),
        );
        let new = node.spawn("svc", one_shape());
        let p = |cmd: &str, text: &str| lua_payload(vec![Value::from(cmd), Value::from(text)]);
        for cmd in ["fail", "panic"] {
            let want = failure(&node, old, p(cmd, "no coins")).await;
            assert_eq!(failure(&node, new, p(cmd, "no coins")).await, want, "{cmd}");
        }
        assert_eq!(failure(&node, new, p("fail", "no coins")).await, "no coins");
        assert_eq!(
            failure(&node, new, p("panic", "boom")).await,
            "handler panicked: boom"
        );
        // After an await: the same.
        assert_eq!(
            failure(&node, new, p("fail_after_call", "late")).await,
            "late"
        );
        assert_eq!(
            failure(&node, new, p("panic_after_call", "late boom")).await,
            "handler panicked: late boom"
        );
        // The callee's refusal comes back through `?` in the callee's own words.
        let refused = failure(&node, new, lua_payload(vec![Value::from("bank_refuses")])).await;
        assert!(refused.contains("unknown command \"nosuch\""), "{refused}");
        // The service kept running, and a panic after a state change kept that change
        // (the state is not rolled back: as with the synchronous shortcut).
        let hits = node
            .call(new, lua_payload(vec![Value::from("hits")]))
            .await
            .unwrap();
        assert_eq!(seri::unpack(&hits).unwrap(), [Value::Integer(1000)]);
        node.shutdown();
    }

    #[tokio::test]
    async fn a_handle_stops_its_service_and_answers_later() {
        let node = Node::new("one", RuntimeConfig::default());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<crate::Responder>();
        let later = node.spawn(
            "svc",
            Dispatcher::new(0i64)
                // Takes the reply and hands it out; the service goes on at once.
                .handler("later", move |h, ()| {
                    let tx = tx.clone();
                    async move {
                        let r = h.take_reply().expect("the caller waits");
                        // Taken once per message.
                        assert!(h.take_reply().is_none());
                        let _ = tx.send(r);
                        Ok("ignored: the reply was taken")
                    }
                })
                .handler("count", |h, ()| async move {
                    Ok(h.state(|s| {
                        *s += 1;
                        *s
                    }))
                })
                .handler("quit", |h, ()| async move {
                    tokio::task::yield_now().await;
                    h.exit();
                    Ok("bye")
                }),
        );
        let call = |cmd: &str| {
            let node = node.clone();
            let payload = lua_payload(vec![Value::from(cmd)]);
            async move { node.call(later, payload).await }
        };
        let waiting = tokio::spawn(call("later"));
        let responder = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .expect("the handler ran in time")
            .expect("a responder");
        // The service serves the next message while the first caller still waits.
        assert_eq!(
            seri::unpack(&call("count").await.unwrap()).unwrap(),
            [Value::Integer(1)]
        );
        assert!(!waiting.is_finished());
        responder.ok(seri::pack(&[Value::from("answered later")]).unwrap());
        let answer = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("answered in time")
            .unwrap()
            .unwrap();
        assert_eq!(
            seri::unpack(&answer).unwrap(),
            [Value::from("answered later")]
        );
        // `exit` after an await: answered, then stopped.
        assert_eq!(
            seri::unpack(&call("quit").await.unwrap()).unwrap(),
            [Value::from("bye")]
        );
        assert!(matches!(
            call("count").await,
            Err(crate::CallError::NoSuchService { .. } | crate::CallError::ServiceGone { .. })
        ));
        node.shutdown();
    }

    #[tokio::test]
    async fn the_hot_path_answers_and_refuses_as_the_router_path_does() {
        // Two nodes, so that both services have the same label and address.
        let (one, two) = (
            Node::new("one", RuntimeConfig::default()),
            Node::new("two", RuntimeConfig::default()),
        );
        let fast = (one.clone(), one.spawn("svc", counter()));
        let slow = (two.clone(), two.spawn("svc", Routed(counter())));
        let p = |v: Vec<Value>| seri::pack(&v).unwrap();
        let lua = |rest: Vec<Value>| {
            let mut v = vec![Value::from("lua")];
            v.extend(rest);
            p(v)
        };
        let good = lua(vec![Value::from("add"), Value::Integer(2)]);
        let cut = |b: Bytes| b.slice(..b.len() - 1);
        let cases = [
            good.clone(),
            lua(vec![
                Value::from("add"),
                Value::Integer(3),
                Value::from("hi"),
            ]),
            lua(vec![Value::from("later"), Value::Integer(10)]),
            lua(vec![Value::from("later"), Value::from("x")]),
            lua(vec![Value::from("add")]),
            lua(vec![
                Value::from("add"),
                Value::Integer(1),
                Value::Nil,
                Value::Nil,
            ]),
            lua(vec![Value::from("nosuch"), Value::Integer(1)]),
            lua(vec![Value::Integer(5)]),
            lua(vec![]),
            cut(lua(vec![Value::from("add"), Value::Integer(300)])),
            cut(lua(vec![Value::from("nosuch"), Value::Integer(300)])),
            cut(lua(vec![Value::from("addition")])),
            p(vec![Value::from("json")]),
            p(vec![]),
            Bytes::from_static(&[0xff, 0x00]),
        ];
        // The handler's text, without the service's label (which differs).
        let call = |(node, to): (Node, crate::Addr), payload: Bytes| async move {
            node.call(to, payload).await.map_err(|e| match e {
                crate::CallError::Failed { message, .. } => message,
                other => panic!("not a handler error: {other}"),
            })
        };
        for payload in cases {
            let a = call(fast.clone(), payload.clone()).await;
            assert_eq!(a, call(slow.clone(), payload.clone()).await, "{payload:?}");
        }
        // Both counted the two `add`s that fitted (2 and 3); one more makes 7.
        for (node, to) in [fast, slow] {
            let r = node.call(to, good.clone()).await.unwrap();
            assert_eq!(
                seri::unpack(&r).unwrap(),
                vec![Value::Integer(7), Value::Nil]
            );
            node.shutdown();
        }
    }
}
