//! Built-in services every node can start by kind: `echo` and `sink`.
//!
//! - `echo` replies with exactly the payload it got (its arguments, unchanged, without
//!   unpacking them) — the simplest thing to call across the cluster.
//! - `sink` counts what is pushed to it; a call `("count")` answers the count and
//!   `("reset")` answers it and starts again from 0. Any other call is counted and
//!   answered with the new count.

use bee_codec::seri::{self, Value};
use futures::future::BoxFuture;

use crate::service::{Context, HandleResult, Message, Service};

/// Replies with its payload.
#[derive(Debug, Default)]
pub struct Echo;

impl Service for Echo {
    fn handle<'a>(&'a mut self, _ctx: &'a mut Context, msg: Message) -> BoxFuture<'a, HandleResult> {
        Box::pin(std::future::ready(Ok(Some(msg.payload))))
    }
}

/// Counts pushes; answers `count` / `reset`.
#[derive(Debug, Default)]
pub struct Sink {
    count: u64,
}

impl Service for Sink {
    fn handle<'a>(&'a mut self, ctx: &'a mut Context, msg: Message) -> BoxFuture<'a, HandleResult> {
        Box::pin(async move {
            if !ctx.wants_reply() {
                self.count += 1;
                return Ok(None);
            }
            let values = seri::unpack(&msg.payload)?;
            let reply = match values.first().and_then(Value::as_bytes) {
                Some(b"count") => self.count,
                Some(b"reset") => std::mem::take(&mut self.count),
                _ => {
                    self.count += 1;
                    self.count
                }
            };
            Ok(Some(seri::pack(&[Value::Integer(reply as i64)])?))
        })
    }
}
