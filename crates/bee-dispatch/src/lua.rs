//! The `"lua"` sub-type: a command table.
//!
//! A `"lua"` message is `skynet.pack("lua", command, args…)`. The command name is looked
//! up in the service's [`LuaTable`]; the handler gets the remaining values converted to
//! the types it names ([`crate::args`]) and returns the reply values, which are packed
//! and sent back only if the caller waits.
//!
//! Two kinds of handler:
//! - [`LuaTable::command`]: synchronous, with `&mut` access to the service state — most
//!   game logic: `|s, ctx, (uid, act): (i64, i32)| Ok(s.progress(uid, act))`.
//! - [`LuaTable::command_async`]: gets a [`Handle`] (the state, the node, calls to any
//!   service on any node) and returns a future; the state stays reachable after every
//!   `await` through [`Handle::state`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use bee_codec::Value;
use bytes::Bytes;
use futures::future::BoxFuture;

use crate::args::{FromArgs, IntoValues};
use crate::handle::Handle;
use crate::service::{Context, ServiceError};

/// What a `"lua"` handler returns: the reply values.
pub type LuaResult = Result<Vec<Value>, ServiceError>;

/// A command's packed reply (what the wrappers below produce).
type Packed = Result<Bytes, ServiceError>;

type SyncCommand<S> = Box<dyn Fn(&mut S, &mut Context, Vec<Value>) -> Packed + Send + Sync>;
type AsyncCommand<S> =
    Box<dyn Fn(Handle<S>, Vec<Value>) -> BoxFuture<'static, Packed> + Send + Sync>;

enum Command<S> {
    Sync(SyncCommand<S>),
    Async(AsyncCommand<S>),
}

// Command names are looked up per message: FNV (see `crate::fnv`), not SipHash.
use crate::fnv::FnvBuild;

/// Command name → handler, for one service.
pub struct LuaTable<S> {
    commands: HashMap<Vec<u8>, Command<S>, FnvBuild>,
}

impl<S> Default for LuaTable<S> {
    fn default() -> Self {
        LuaTable {
            commands: HashMap::default(),
        }
    }
}

fn bad_args(name: &str, e: crate::args::ArgsError) -> ServiceError {
    ServiceError::msg(format!("command {name} {e}"))
}

impl<S: Send + 'static> LuaTable<S> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a synchronous command taking arguments `A` (a tuple of types, `()` or
    /// `Vec<Value>`) and replying with `R` (`()`, a value, a tuple or `Vec<Value>`).
    pub fn command<A, R, F>(mut self, name: &str, f: F) -> Self
    where
        A: FromArgs,
        R: IntoValues,
        F: Fn(&mut S, &mut Context, A) -> Result<R, ServiceError> + Send + Sync + 'static,
    {
        let label = name.to_string();
        self.commands.insert(
            name.as_bytes().to_vec(),
            Command::Sync(Box::new(move |s, ctx, args| {
                let a = A::from_args(args).map_err(|e| bad_args(&label, e))?;
                Ok(f(s, ctx, a)?.pack()?)
            })),
        );
        self
    }

    /// Add a command whose work is a future: it gets a [`Handle`] (state, node, calls)
    /// and the converted arguments, and may await anything, touching the state between
    /// awaits with [`Handle::state`]. The service handles its next message when the
    /// future completes.
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
            Command::Async(Box::new(move |h, args| match A::from_args(args) {
                Ok(a) => {
                    let fut = f(h, a);
                    Box::pin(async move { Ok(fut.await?.pack()?) })
                }
                Err(e) => {
                    let e = bad_args(&label, e);
                    Box::pin(std::future::ready(Err(e)))
                }
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

    /// Run the command named by `args[0]` with the rest of `args`.
    pub(crate) async fn run(
        &self,
        state: &mut Arc<Mutex<S>>,
        ctx: &mut Context,
        args: Vec<Value>,
    ) -> Packed {
        match self.run_sync(state, ctx, args) {
            Ran::Done(packed) => packed,
            Ran::Async(f, args) => f(Handle::new(state.clone(), ctx), args).await,
        }
    }

    /// Run a synchronous command to the end without a future (the hot path of a
    /// `"lua"` call); an asynchronous one comes back with its arguments to be awaited.
    pub(crate) fn run_sync<'a>(
        &'a self,
        state: &mut Arc<Mutex<S>>,
        ctx: &mut Context,
        args: Vec<Value>,
    ) -> Ran<'a, S> {
        self.run_sync_from(state, ctx, args, 0)
    }

    /// [`LuaTable::run_sync`] over `values[skip..]` (the command name at `skip`): the
    /// values before it and the name leave the vector in one shift.
    pub(crate) fn run_sync_from<'a>(
        &'a self,
        state: &mut Arc<Mutex<S>>,
        ctx: &mut Context,
        mut args: Vec<Value>,
        skip: usize,
    ) -> Ran<'a, S> {
        let name = match args.get_mut(skip) {
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
        args.drain(..=skip);
        match self.commands.get(name.as_ref()) {
            Some(Command::Sync(f)) => match Arc::get_mut(state) {
                // No `Handle` of an async command holds the state: no lock needed.
                Some(m) => Ran::Done(f(m.get_mut().unwrap_or_else(|e| e.into_inner()), ctx, args)),
                None => {
                    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                    Ran::Done(f(&mut s, ctx, args))
                }
            },
            Some(Command::Async(f)) => Ran::Async(f, args),
            None => Ran::Done(Err(ServiceError::msg(format!(
                "unknown command {:?} for service {} (known: {})",
                String::from_utf8_lossy(&name),
                ctx.label(),
                self.names().join(", ")
            )))),
        }
    }
}

/// What [`LuaTable::run_sync`] did: ran the command, or found an async one to await.
pub(crate) enum Ran<'a, S> {
    /// A synchronous command ran (or the message was refused).
    Done(Packed),
    /// An asynchronous command, with its arguments.
    Async(&'a AsyncCommand<S>, Vec<Value>),
}
