//! The `"lua"` sub-type: a command table.
//!
//! A `"lua"` message is `skynet.pack("lua", command, args…)`. The command name is looked
//! up in the service's [`LuaTable`]; the handler gets the remaining values converted to
//! the types it names ([`crate::args`]) and returns the reply values, which are packed
//! and sent back only if the caller waits.
//!
//! One handler shape, [`LuaTable::handler`]: `|h, uid: i64| async move { … }` gets a
//! [`Handle`] (the state through [`Handle::state`], the sender, the node, calls to any
//! service on any node) and the converted arguments. Its body may run to the end
//! without awaiting anything, or await calls: the signature and the registration stay
//! the same either way.
//!
//! Shortcuts for handlers that never await (no future is made for them):
//! [`LuaTable::command`], with `&mut` access to the state —
//! `|s, (uid, act): (i64, i32)| Ok(s.progress(uid, act))` — and
//! [`LuaTable::command_ctx`] when such a handler needs the message's [`Context`].
//! [`LuaTable::command_async`] is [`LuaTable::handler`] under its older name.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use bee_codec::seri::Reader;
use bee_codec::Value;
use bytes::Bytes;
use futures::future::BoxFuture;

use crate::args::{ArgsError, FromArgs, IntoValues, ReadArgsError};
use crate::handle::{Handle, Shared};
use crate::service::{Context, ServiceError};

/// What a `"lua"` handler returns: the reply values.
pub type LuaResult = Result<Vec<Value>, ServiceError>;

/// A command's packed reply (what the wrappers below produce).
type Packed = Result<Bytes, ServiceError>;

/// A command's arguments as they reach it: values already unpacked (a message that came
/// through a [`crate::Router`]), or the rest of a payload being read (the hot path).
pub(crate) enum Args<'a> {
    Values(Vec<Value>),
    Packed(Reader<'a>),
}

impl Args<'_> {
    fn convert<A: FromArgs>(self, name: &str) -> Result<A, ServiceError> {
        let bad = |e: ArgsError| ServiceError::msg(format!("command {name} {e}"));
        match self {
            Args::Values(v) => A::from_args(v).map_err(bad),
            Args::Packed(r) => A::from_reader(r).map_err(|e| match e {
                ReadArgsError::Stream(e) => e.into(),
                ReadArgsError::Args(e) => bad(e),
            }),
        }
    }
}

type SyncCommand<S> = Box<dyn Fn(&mut S, &mut Context, Args<'_>) -> Packed + Send + Sync>;
type AsyncCommand<S> = Box<dyn Fn(Handle<S>, Args<'_>) -> BoxFuture<'static, Packed> + Send + Sync>;

enum Command<S> {
    Sync(SyncCommand<S>),
    Async(AsyncCommand<S>),
}

// Command names are looked up per message: see `crate::fasthash`.
use crate::fasthash::FastBuild;

/// Command name → handler, for one service.
pub struct LuaTable<S> {
    commands: HashMap<Vec<u8>, Command<S>, FastBuild>,
}

impl<S> Default for LuaTable<S> {
    fn default() -> Self {
        LuaTable {
            commands: HashMap::default(),
        }
    }
}

impl<S: Send + 'static> LuaTable<S> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a synchronous command taking arguments `A` (one type, a tuple of types, `()`
    /// or `Vec<Value>`) and replying with `R` (`()`, a value, a tuple or `Vec<Value>`):
    /// `|s, uid: i64| Ok(s.coins(uid))`. A handler that needs its [`Context`] (the node,
    /// the sender, the reply) is added with [`LuaTable::command_ctx`].
    pub fn command<A, R, F>(self, name: &str, f: F) -> Self
    where
        A: FromArgs,
        R: IntoValues,
        F: Fn(&mut S, A) -> Result<R, ServiceError> + Send + Sync + 'static,
    {
        self.command_ctx(name, move |s, _ctx, a| f(s, a))
    }

    /// [`LuaTable::command`] for a handler that also gets the message's [`Context`]:
    /// `|s, ctx, name: String| …ctx.node()…`.
    pub fn command_ctx<A, R, F>(mut self, name: &str, f: F) -> Self
    where
        A: FromArgs,
        R: IntoValues,
        F: Fn(&mut S, &mut Context, A) -> Result<R, ServiceError> + Send + Sync + 'static,
    {
        let label = name.to_string();
        self.commands.insert(
            name.as_bytes().to_vec(),
            Command::Sync(Box::new(move |s, ctx, args| {
                let a = args.convert(&label)?;
                Ok(f(s, ctx, a)?.pack()?)
            })),
        );
        self
    }

    /// Add a command in the one handler shape: it gets a [`Handle`] (state, sender,
    /// node, calls) and the converted arguments and returns a future, written
    /// `|h, uid: i64| async move { … }`. The body may await anything — touching the
    /// state between awaits with [`Handle::state`] — or nothing at all. The service
    /// handles its next message when the future completes.
    pub fn handler<A, R, F, Fut>(self, name: &str, f: F) -> Self
    where
        A: FromArgs,
        R: IntoValues,
        F: Fn(Handle<S>, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, ServiceError>> + Send + 'static,
    {
        self.command_async(name, f)
    }

    /// [`LuaTable::handler`] (its older name).
    pub fn command_async<A, R, F, Fut>(mut self, name: &str, f: F) -> Self
    where
        A: FromArgs,
        R: IntoValues,
        F: Fn(Handle<S>, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, ServiceError>> + Send + 'static,
    {
        let label = name.to_string();
        self.commands.insert(
            name.as_bytes().to_vec(),
            Command::Async(Box::new(move |h, args| match args.convert(&label) {
                Ok(a) => {
                    let fut = f(h, a);
                    Box::pin(async move { Ok(fut.await?.pack()?) })
                }
                Err(e) => Box::pin(std::future::ready(Err(e))),
            })),
        );
        self
    }

    /// The command names, sorted (for error messages and the console).
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .commands
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        v.sort();
        v
    }

    /// Run the command named by `values[0]` with the rest of `values` (values already
    /// unpacked): a synchronous command runs to the end here; an asynchronous one comes
    /// back as its future, its handles belonging to message `turn`.
    pub(crate) fn run_values(
        &self,
        state: &mut Arc<Shared<S>>,
        turn: u64,
        ctx: &mut Context,
        mut values: Vec<Value>,
    ) -> Ran {
        let name = match values.first_mut() {
            Some(Value::String(b)) => std::mem::take(b),
            Some(other) => {
                return Ran::Done(Err(ServiceError::msg(format!(
                    "lua command name must be a string, got {}",
                    other.type_name()
                ))))
            }
            None => {
                return Ran::Done(Err(ServiceError::msg(
                    "lua message has no command name (expected \"lua\", command, args…)",
                )))
            }
        };
        // The arguments stay in the same vector (no second allocation).
        values.remove(0);
        self.run_named(state, turn, ctx, &name, Args::Values(values))
    }

    /// The hot path of a `"lua"` message: the command name and the arguments are read
    /// straight off the payload (`r` is just past `"lua"`), with no `Vec<Value>` in
    /// between. Anything unusual (a name that is not a string) takes the path above, so
    /// the errors are the same.
    pub(crate) fn run_packed(
        &self,
        state: &mut Arc<Shared<S>>,
        turn: u64,
        ctx: &mut Context,
        mut r: Reader<'_>,
    ) -> Ran {
        match r.next_if_string() {
            Some(name) => self.run_named(state, turn, ctx, name, Args::Packed(r)),
            None => match r.rest() {
                Ok(values) => self.run_values(state, turn, ctx, values),
                Err(e) => Ran::Done(Err(e.into())),
            },
        }
    }

    fn run_named(
        &self,
        state: &mut Arc<Shared<S>>,
        turn: u64,
        ctx: &mut Context,
        name: &[u8],
        args: Args<'_>,
    ) -> Ran {
        match self.commands.get(name) {
            Some(Command::Sync(f)) => match Arc::get_mut(state) {
                // No `Handle` of an async command holds the state: no lock needed.
                Some(m) => Ran::Done(f(m.state_mut(), ctx, args)),
                None => {
                    let mut s = state.lock();
                    Ran::Done(f(&mut s, ctx, args))
                }
            },
            Some(Command::Async(f)) => {
                state.begin(turn);
                Ran::Async(f(Handle::new(state, ctx, turn, None), args))
            }
            None => {
                // A malformed payload is reported as such, whatever its command name.
                if let Args::Packed(r) = args {
                    if let Err(e) = r.rest() {
                        return Ran::Done(Err(e.into()));
                    }
                }
                Ran::Done(Err(ServiceError::msg(format!(
                    "unknown command {:?} for service {} (known: {})",
                    String::from_utf8_lossy(name),
                    ctx.label(),
                    self.names().join(", ")
                ))))
            }
        }
    }
}

/// What running a command did: ran a synchronous one (or refused the message), or
/// started an asynchronous one, whose future is to be awaited.
pub(crate) enum Ran {
    /// A synchronous command ran (or the message was refused).
    Done(Packed),
    /// An asynchronous command's work.
    Async(BoxFuture<'static, Packed>),
}
