//! [`Dispatcher`]: the service most game code is — state plus a `"lua"` command table
//! and a `"text"` protobuf handler map.
//!
//! Follow one message: the payload (skynet.pack bytes) is unpacked once; its first
//! value is the sub-type.
//! - `"lua"` → [`crate::lua::LuaTable`]: command name → handler (arguments converted to
//!   the handler's types) → reply values, packed.
//! - `"text"` → [`crate::text::TextTable`]: game frame → handler by message name → reply
//!   frame, packed as one string.
//! - anything else → an error naming the sub-type.
//!
//! The reply reaches the caller only if it waits; errors become the caller's error text.
//!
//! A [`Router`] is anything that routes unpacked values; [`Dispatcher`] is one. Policies
//! that need to see a message before or after the handler (such as answering native
//! rpc callers, [`crate::native::RpcServer`]) wrap a router instead of living inside it.
//!
//! ```
//! use bee_dispatch::{Dispatcher, ServiceError};
//!
//! #[derive(Default)]
//! struct Counter { hits: i64 }
//!
//! let service = Dispatcher::new(Counter::default())
//!     .command("hit", |s, _ctx, (n,): (i64,)| {
//!         s.hits += n;
//!         Ok(s.hits)
//!     })
//!     .command_async("hits_later", |h, ()| async move {
//!         tokio::task::yield_now().await;
//!         Ok::<_, ServiceError>(h.state(|s| s.hits))
//!     });
//! # let _ = service;
//! ```

use std::future::Future;
use std::sync::{Arc, Mutex};

use bee_codec::seri::{self, Value};
use bytes::Bytes;

use crate::args::{FromArgs, IntoValues};
use crate::handle::Handle;
use crate::lua::LuaTable;
use crate::service::{Context, HandleResult, Message, Service, ServiceError};
use crate::text::{reply_frame, Frame, TextTable};

/// Routes a message already unpacked into its values; returns the packed reply.
pub trait Router: Send + 'static {
    /// Route `values` (the sub-type first) to a handler.
    fn route(
        &mut self,
        ctx: &mut Context,
        values: Vec<Value>,
    ) -> impl Future<Output = Result<Bytes, ServiceError>> + Send;
}

/// A service made of state `S`, a lua command table and a text handler map.
pub struct Dispatcher<S> {
    state: Arc<Mutex<S>>,
    lua: LuaTable<S>,
    text: TextTable<S>,
}

impl<S: Send + 'static> Dispatcher<S> {
    /// A dispatcher over `state` with empty tables.
    pub fn new(state: S) -> Self {
        Dispatcher {
            state: Arc::new(Mutex::new(state)),
            lua: LuaTable::new(),
            text: TextTable::new(),
        }
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

    /// Add a synchronous `"lua"` command (see [`LuaTable::command`]).
    pub fn command<A, R, F>(mut self, name: &str, f: F) -> Self
    where
        A: FromArgs,
        R: IntoValues,
        F: Fn(&mut S, &mut Context, A) -> Result<R, ServiceError> + Send + Sync + 'static,
    {
        self.lua = self.lua.command(name, f);
        self
    }

    /// Add an async `"lua"` command (see [`LuaTable::command_async`]).
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
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s)
    }
}

impl<S: Send + 'static> Router for Dispatcher<S> {
    async fn route(
        &mut self,
        ctx: &mut Context,
        values: Vec<Value>,
    ) -> Result<Bytes, ServiceError> {
        let mut values = values.into_iter();
        let subtype = values.next().unwrap_or(Value::Nil);
        match subtype.as_bytes() {
            Some(b"lua") => {
                let reply = self.lua.run(&self.state, ctx, values.collect()).await?;
                Ok(seri::pack(&reply)?)
            }
            Some(b"text") => {
                let frame = match values.next() {
                    Some(Value::String(b)) => b,
                    Some(other) => {
                        return Err(ServiceError::msg(format!(
                            "text message must carry a game frame string, got {}",
                            other.type_name()
                        )))
                    }
                    None => return Err(ServiceError::msg("text message has no game frame")),
                };
                match self.text.run(&self.state, ctx, &frame).await? {
                    (request, Some(reply)) => Ok(seri::pack(&[Value::String(reply_frame(
                        &request, &reply,
                    )?)])?),
                    (_, None) => Ok(Bytes::new()),
                }
            }
            Some(other) => Err(ServiceError::msg(format!(
                "unknown sub-type {:?} (this service takes \"lua\" and \"text\")",
                String::from_utf8_lossy(other)
            ))),
            None => Err(ServiceError::msg(format!(
                "message has no sub-type: first value is {}, expected a string such as \"lua\"",
                subtype.type_name()
            ))),
        }
    }
}

impl<S: Send + 'static> Service for Dispatcher<S> {
    async fn handle(&mut self, ctx: &mut Context, msg: Message) -> HandleResult {
        let values = seri::unpack(&msg.payload)?;
        Ok(Some(self.route(ctx, values).await?))
    }
}
