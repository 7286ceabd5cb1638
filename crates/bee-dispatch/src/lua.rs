//! The `"lua"` sub-type: a command table.
//!
//! A `"lua"` message is `skynet.pack("lua", command, args…)`. The command name is looked
//! up in the service's [`LuaTable`]; the handler gets the remaining values and returns
//! the reply values, which are packed and sent back only if the caller waits.
//!
//! Two kinds of handler:
//! - [`LuaTable::command`]: synchronous, with `&mut` access to the service state — most
//!   game logic.
//! - [`LuaTable::command_async`]: returns a future that owns what it needs (clone it out
//!   of the state first), for handlers that await I/O such as a database.

use std::collections::HashMap;
use std::future::Future;

use bee_codec::Value;
use futures::future::BoxFuture;

use crate::service::{Context, ServiceError};

/// What a `"lua"` handler returns: the reply values.
pub type LuaResult = Result<Vec<Value>, ServiceError>;

type SyncCommand<S> = Box<dyn Fn(&mut S, &mut Context, Vec<Value>) -> LuaResult + Send + Sync>;
type AsyncCommand<S> =
    Box<dyn Fn(&mut S, &mut Context, Vec<Value>) -> BoxFuture<'static, LuaResult> + Send + Sync>;

pub(crate) enum Command<S> {
    Sync(SyncCommand<S>),
    Async(AsyncCommand<S>),
}

/// Command name → handler, for one service.
pub struct LuaTable<S> {
    commands: HashMap<Vec<u8>, Command<S>>,
}

impl<S> Default for LuaTable<S> {
    fn default() -> Self {
        LuaTable {
            commands: HashMap::new(),
        }
    }
}

impl<S: Send + 'static> LuaTable<S> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a synchronous command.
    pub fn command<F>(mut self, name: &str, f: F) -> Self
    where
        F: Fn(&mut S, &mut Context, Vec<Value>) -> LuaResult + Send + Sync + 'static,
    {
        self.commands
            .insert(name.as_bytes().to_vec(), Command::Sync(Box::new(f)));
        self
    }

    /// Add a command whose work is a future. The closure runs with the state borrowed
    /// and must return a `'static` future (move clones of what it needs into it).
    pub fn command_async<F, Fut>(mut self, name: &str, f: F) -> Self
    where
        F: Fn(&mut S, &mut Context, Vec<Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = LuaResult> + Send + 'static,
    {
        self.commands.insert(
            name.as_bytes().to_vec(),
            Command::Async(Box::new(move |s, c, a| Box::pin(f(s, c, a)))),
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
        state: &mut S,
        ctx: &mut Context,
        mut args: Vec<Value>,
    ) -> LuaResult {
        if args.is_empty() {
            return Err(ServiceError::msg(
                "lua message has no command name (expected \"lua\", command, args…)",
            ));
        }
        let rest = args.split_off(1);
        let name = match &args[0] {
            Value::String(b) => b.clone(),
            other => {
                return Err(ServiceError::msg(format!(
                    "lua command name must be a string, got {}",
                    other.type_name()
                )))
            }
        };
        match self.commands.get(name.as_ref()) {
            Some(Command::Sync(f)) => f(state, ctx, rest),
            Some(Command::Async(f)) => f(state, ctx, rest).await,
            None => Err(ServiceError::msg(format!(
                "unknown command {:?} for service {} (known: {})",
                String::from_utf8_lossy(&name),
                ctx.label(),
                self.names().join(", ")
            ))),
        }
    }
}
