//! The `"text"` sub-type: protobuf game messages in the team's frame, routed by
//! message name.
//!
//! A `"text"` message is `skynet.pack("text", frame)` where `frame` is the game team's
//! frame (`bee_codec::kkt`: remote and source node/service, sub_type, uid, message
//! name, roomid, session, protobuf body) carried as a string. The frame is decoded once
//! (by [`crate::dispatcher::Incoming`]); the handler registered for its message name
//! gets the body decoded into its prost type, and the handler's optional reply message
//! becomes the team's Lua-side reply frame: all four names empty, sub_type 17, uid,
//! roomid and session copied from the request ([`reply_frame`]).
//!
//! One handler shape, as for `"lua"`: [`TextTable::handler`], `|h, m: LoginReq| async
//! move { … }` — a [`Handle`] (state, frame, sender, node, calls) and the decoded
//! message; the body may await calls to other nodes or nothing at all. Shortcuts:
//! [`TextTable::on`] for a handler that never awaits (`&mut` state, no future made) and
//! [`TextTable::on_async`], the handle with the frame passed apart.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use bee_codec::kkt::{self, KktFrame};
use bytes::Bytes;
use futures::future::BoxFuture;

use crate::handle::{Handle, Shared};
use crate::service::{Context, ServiceError};

/// The request frame as a handler sees it (names, sub_type, uid, message name,
/// roomid, session; its body is also handed over decoded).
pub type Frame = KktFrame;

/// A handler's reply message, already encoded: its protobuf full name and body.
#[derive(Debug, Clone)]
pub struct TextReply {
    /// The reply type's full name.
    pub name: String,
    /// The encoded protobuf body.
    pub body: Bytes,
}

impl TextReply {
    /// Encode a prost message as a reply.
    pub fn of<M: prost::Message + prost::Name>(msg: &M) -> Self {
        TextReply {
            name: M::full_name(),
            body: Bytes::from(msg.encode_to_vec()),
        }
    }
}

/// What a text handler returns: an optional reply.
pub type TextResult = Result<Option<TextReply>, ServiceError>;

type SyncText<S> = Box<dyn Fn(&mut S, &mut Context, &Frame, Bytes) -> TextResult + Send + Sync>;
type AsyncText<S> =
    Box<dyn Fn(Handle<S>, &Frame, Bytes) -> BoxFuture<'static, TextResult> + Send + Sync>;

enum TextHandler<S> {
    Sync(SyncText<S>),
    Async(AsyncText<S>),
}

/// Message name → typed handler, for one service.
pub struct TextTable<S> {
    handlers: HashMap<String, TextHandler<S>>,
}

impl<S> Default for TextTable<S> {
    fn default() -> Self {
        TextTable {
            handlers: HashMap::new(),
        }
    }
}

/// A one-way game frame (sub_type 16) for `uid` carrying `msg`, with no names (what a
/// Lua service sends with `cluster.send(node, addr, "text", frame)`).
pub fn frame_of<M: prost::Message + prost::Name>(uid: i64, msg: &M) -> KktFrame {
    KktFrame::new(
        kkt::SUBTYPE_PROTOBUF,
        uid,
        M::full_name(),
        msg.encode_to_vec(),
    )
}

/// Encode a frame to its bytes.
pub fn encode_frame(frame: &KktFrame) -> Result<Bytes, ServiceError> {
    Ok(frame.encode()?)
}

/// The Lua-side reply to a request frame: names empty, sub_type 17, uid, roomid and
/// session copied, the reply's name and body.
pub fn reply_frame(request: &KktFrame, reply: &TextReply) -> Result<Bytes, ServiceError> {
    Ok(kkt::reply_from_lua(request, reply.name.clone(), reply.body.clone()).encode()?)
}

fn decode_body<M: prost::Message + Default>(
    frame: &Frame,
    body: &Bytes,
) -> Result<M, ServiceError> {
    M::decode(body.as_ref()).map_err(|e| {
        ServiceError::msg(format!(
            "{} body does not decode: {e}",
            String::from_utf8_lossy(&frame.name)
        ))
    })
}

impl<S: Send + 'static> TextTable<S> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handle messages of type `M` (matched by its protobuf full name). The handler may
    /// return a reply message of type `R`, sent to a waiting caller.
    pub fn on<M, R, F>(mut self, f: F) -> Self
    where
        M: prost::Message + prost::Name + Default + 'static,
        R: prost::Message + prost::Name + 'static,
        F: Fn(&mut S, &mut Context, &Frame, M) -> Result<Option<R>, ServiceError>
            + Send
            + Sync
            + 'static,
    {
        let handler: SyncText<S> = Box::new(move |s, ctx, frame, body| {
            let msg = decode_body::<M>(frame, &body)?;
            Ok(f(s, ctx, frame, msg)?.map(|r| TextReply::of(&r)))
        });
        self.handlers
            .insert(M::full_name(), TextHandler::Sync(handler));
        self
    }

    /// Handle messages of type `M` in the one handler shape: a [`Handle`] (state, the
    /// frame through [`Handle::frame`], sender, node, calls to any node) and the decoded
    /// message, written `|h, m: M| async move { … }`; the body may await or not. The
    /// optional reply message of type `R` goes to a waiting caller.
    pub fn handler<M, R, F, Fut>(self, f: F) -> Self
    where
        M: prost::Message + prost::Name + Default + 'static,
        R: prost::Message + prost::Name + 'static,
        F: Fn(Handle<S>, M) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<R>, ServiceError>> + Send + 'static,
    {
        self.insert_async::<M, R, _>(move |h, _frame, msg| f(h, msg))
    }

    /// Handle messages of type `M` with an async handler that gets the frame apart: a
    /// [`Handle`], the frame and the decoded message (see [`TextTable::handler`]).
    pub fn on_async<M, R, F, Fut>(self, f: F) -> Self
    where
        M: prost::Message + prost::Name + Default + 'static,
        R: prost::Message + prost::Name + 'static,
        F: Fn(Handle<S>, Frame, M) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<R>, ServiceError>> + Send + 'static,
    {
        self.insert_async::<M, R, _>(move |h, frame: &Frame, msg| f(h, frame.clone(), msg))
    }

    fn insert_async<M, R, Fut>(
        mut self,
        f: impl Fn(Handle<S>, &Frame, M) -> Fut + Send + Sync + 'static,
    ) -> Self
    where
        M: prost::Message + prost::Name + Default + 'static,
        R: prost::Message + prost::Name + 'static,
        Fut: Future<Output = Result<Option<R>, ServiceError>> + Send + 'static,
    {
        let handler: AsyncText<S> =
            Box::new(move |h, frame, body| match decode_body::<M>(frame, &body) {
                Ok(msg) => {
                    let fut = f(h, frame, msg);
                    Box::pin(async move { Ok(fut.await?.map(|r| TextReply::of(&r))) })
                }
                Err(e) => Box::pin(std::future::ready(Err(e))),
            });
        self.handlers
            .insert(M::full_name(), TextHandler::Async(handler));
        self
    }

    /// The message names handled, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.handlers.keys().cloned().collect();
        v.sort();
        v
    }

    /// Route one decoded frame to its handler: returns the request frame (for the
    /// reply) and a synchronous handler's reply, or an async handler's work, whose
    /// handles belong to message `turn` (the caller ends it).
    pub(crate) fn start(
        &self,
        state: &Arc<Shared<S>>,
        turn: u64,
        ctx: &mut Context,
        frame: KktFrame,
    ) -> Result<(Arc<Frame>, Started), ServiceError> {
        let name = frame
            .name_str()
            .map_err(|e| ServiceError::msg(format!("game frame name: {e}")))?;
        let handler = self.handlers.get(name).ok_or_else(|| {
            ServiceError::msg(format!(
                "unknown message name {name:?} for service {} (handles: {})",
                ctx.label(),
                self.names().join(", ")
            ))
        })?;
        let body = frame.body.clone();
        let frame = Arc::new(frame);
        let started = match handler {
            TextHandler::Sync(f) => {
                let mut s = state.lock();
                Started::Done(f(&mut s, ctx, &frame, body)?)
            }
            TextHandler::Async(f) => {
                state.begin(turn);
                let h = Handle::new(state, ctx, turn, Some(frame.clone()));
                Started::Async(f(h, &frame, body))
            }
        };
        Ok((frame, started))
    }
}

/// What [`TextTable::start`] began: a synchronous handler's reply, or an async
/// handler's work.
pub(crate) enum Started {
    /// The reply of a handler that ran.
    Done(Option<TextReply>),
    /// An async handler's work.
    Async(BoxFuture<'static, TextResult>),
}
