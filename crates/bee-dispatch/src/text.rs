//! The `"text"` sub-type: protobuf game frames routed by message name.
//!
//! A `"text"` message is `skynet.pack("text", frame)` where `frame` is a game frame
//! (uid, message name, protobuf body) carried as a string. The frame is decoded once,
//! the handler registered for its message name gets the body decoded into its prost
//! type, and the handler's optional reply message is framed for the same uid and packed
//! as `skynet.pack(reply_frame)` for a waiting caller.
//!
//! Handlers come in two kinds, as for `"lua"`: [`TextTable::on`] (synchronous, `&mut`
//! state) and [`TextTable::on_async`] (a [`Handle`]; may await calls to other nodes).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use bee_codec::protopack::GameFrame;
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;

use crate::handle::Handle;
use crate::service::{Context, ServiceError};

/// A decoded game frame as a handler sees it, besides the typed message.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The player the message is about.
    pub uid: u64,
    /// The protobuf full name, e.g. `game.LoginReq`.
    pub name: String,
}

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
    Box<dyn Fn(Handle<S>, Frame, Bytes) -> BoxFuture<'static, TextResult> + Send + Sync>;

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

/// Encode a prost message as a game frame for `uid`.
pub fn frame_of<M: prost::Message + prost::Name>(uid: u64, msg: &M) -> GameFrame {
    GameFrame {
        uid,
        name: Bytes::from(M::full_name()),
        body: Bytes::from(msg.encode_to_vec()),
    }
}

/// Encode a game frame to its bytes.
pub fn encode_frame(frame: &GameFrame) -> Result<Bytes, ServiceError> {
    let mut out = BytesMut::new();
    GameFrame::encode_into(frame.uid, &frame.name, &frame.body, &mut out)?;
    Ok(out.freeze())
}

/// The reply frame to a request frame: same uid, the reply's name and body.
pub fn reply_frame(request: &Frame, reply: &TextReply) -> Result<Bytes, ServiceError> {
    let mut out = BytesMut::new();
    GameFrame::encode_into(request.uid, reply.name.as_bytes(), &reply.body, &mut out)?;
    Ok(out.freeze())
}

fn decode_body<M: prost::Message + Default>(
    frame: &Frame,
    body: &Bytes,
) -> Result<M, ServiceError> {
    M::decode(body.as_ref())
        .map_err(|e| ServiceError::msg(format!("{} body does not decode: {e}", frame.name)))
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

    /// Handle messages of type `M` with an async handler: it gets a [`Handle`] (state,
    /// node, calls to any node), the frame and the decoded message, and may await.
    pub fn on_async<M, R, F, Fut>(mut self, f: F) -> Self
    where
        M: prost::Message + prost::Name + Default + 'static,
        R: prost::Message + prost::Name + 'static,
        F: Fn(Handle<S>, Frame, M) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<R>, ServiceError>> + Send + 'static,
    {
        let handler: AsyncText<S> =
            Box::new(
                move |h, frame, body| match decode_body::<M>(&frame, &body) {
                    Ok(msg) => {
                        let fut = f(h, frame, msg);
                        Box::pin(async move { Ok(fut.await?.map(|r| TextReply::of(&r))) })
                    }
                    Err(e) => Box::pin(std::future::ready(Err(e))),
                },
            );
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

    /// Route one frame (the bytes after the "text" sub-type) to its handler; returns the
    /// request frame's header (for the reply) and the handler's reply.
    pub(crate) async fn run(
        &self,
        state: &Arc<Mutex<S>>,
        ctx: &mut Context,
        frame_bytes: &Bytes,
    ) -> Result<(Frame, Option<TextReply>), ServiceError> {
        let gf = GameFrame::decode(frame_bytes)
            .map_err(|e| ServiceError::msg(format!("text message is not a game frame: {e}")))?;
        let name = gf
            .name_str()
            .map_err(|e| ServiceError::msg(format!("game frame name: {e}")))?
            .to_string();
        let handler = self.handlers.get(&name).ok_or_else(|| {
            ServiceError::msg(format!(
                "unknown message name {name:?} for service {} (handles: {})",
                ctx.label(),
                self.names().join(", ")
            ))
        })?;
        let frame = Frame { uid: gf.uid, name };
        let reply = match handler {
            TextHandler::Sync(f) => {
                let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                f(&mut s, ctx, &frame, gf.body)?
            }
            TextHandler::Async(f) => {
                f(Handle::new(state.clone(), ctx), frame.clone(), gf.body).await?
            }
        };
        Ok((frame, reply))
    }
}
