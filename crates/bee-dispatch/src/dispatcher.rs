//! [`Dispatcher`]: the service most game code is — state plus a `"lua"` command table
//! and a `"text"` protobuf handler map.
//!
//! Follow one message: the payload (skynet.pack bytes) is unpacked; its first value is
//! the sub-type.
//! - `"lua"` → [`crate::lua::LuaTable`]: command name → handler → reply values, packed.
//! - `"text"` → [`crate::text::TextTable`]: game frame → handler by message name → reply
//!   frame, packed as one string.
//! - `"rpc"` → an rpc envelope from a native caller ([`crate::native`]): its inner
//!   message is routed as above, and the result travels back through the cluster to the
//!   caller's node and service with the caller's session.
//! - anything else → an error naming the sub-type.
//!
//! The reply reaches the caller only if it waits; errors become the caller's error text.

use bee_codec::seri::{self, Value};
use bytes::Bytes;
use futures::future::BoxFuture;

use crate::lua::LuaTable;
use crate::service::{Context, HandleResult, Message, Service, ServiceError};
use crate::text::{encode_frame, TextTable};

/// A service made of state `S`, a lua command table and a text handler map.
pub struct Dispatcher<S> {
    state: S,
    lua: LuaTable<S>,
    text: TextTable<S>,
}

impl<S: Send + 'static> Dispatcher<S> {
    /// A dispatcher over `state` with empty tables.
    pub fn new(state: S) -> Self {
        Dispatcher {
            state,
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

    /// Route one already-unpacked message by sub-type; returns the reply payload.
    pub(crate) async fn route(
        &mut self,
        ctx: &mut Context,
        values: Vec<Value>,
    ) -> Result<Bytes, ServiceError> {
        let mut values = values.into_iter();
        let subtype = values.next().unwrap_or(Value::Nil);
        match subtype.as_bytes() {
            Some(b"lua") => {
                let reply = self.lua.run(&mut self.state, ctx, values.collect()).await?;
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
                match self.text.run(&mut self.state, ctx, &frame)? {
                    Some(reply) => Ok(seri::pack(&[Value::String(encode_frame(&reply)?)])?),
                    None => Ok(Bytes::new()),
                }
            }
            Some(b"rpc") => {
                let envelope = match values.next() {
                    Some(Value::String(b)) => b,
                    _ => {
                        return Err(ServiceError::msg(
                            "rpc message must carry an envelope string",
                        ))
                    }
                };
                crate::native::serve_rpc(self, ctx, envelope).await
            }
            Some(other) => Err(ServiceError::msg(format!(
                "unknown sub-type {:?} (this service takes \"lua\", \"text\" and \"rpc\")",
                String::from_utf8_lossy(other)
            ))),
            None => Err(ServiceError::msg(format!(
                "message has no sub-type: first value is {}, expected a string such as \"lua\"",
                subtype.type_name()
            ))),
        }
    }

    /// Route an already-packed inner payload (used for rpc envelopes); returns the reply
    /// payload, with `"text"` replies as the raw reply frame bytes.
    pub(crate) async fn route_inner(
        &mut self,
        ctx: &mut Context,
        payload: &Bytes,
    ) -> Result<Bytes, ServiceError> {
        let values = seri::unpack(payload)?;
        let is_text = matches!(values.first().and_then(|v| v.as_bytes()), Some(b"text"));
        let reply = Box::pin(self.route(ctx, values)).await?;
        if is_text && !reply.is_empty() {
            // Unwrap the packed string so a native caller gets the frame bytes themselves.
            if let Some(Value::String(frame)) = seri::unpack(&reply)?.into_iter().next() {
                return Ok(frame);
            }
        }
        Ok(reply)
    }
}

impl<S: Send + 'static> Service for Dispatcher<S> {
    fn handle<'a>(&'a mut self, ctx: &'a mut Context, msg: Message) -> BoxFuture<'a, HandleResult> {
        Box::pin(async move {
            let values = seri::unpack(&msg.payload)?;
            let reply = self.route(ctx, values).await?;
            Ok(Some(reply))
        })
    }
}
