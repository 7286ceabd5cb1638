//! The `"text"` sub-type: protobuf game frames routed by message name.
//!
//! A `"text"` message is `skynet.pack("text", frame)` where `frame` is a game frame
//! (`bee_codec::protopack`: uid, message name, protobuf body) carried as a string. The
//! frame is decoded, the handler registered for its message name decodes the body into
//! its prost type, and the handler's optional reply message is framed (same uid, the
//! reply type's name) and packed as `skynet.pack(reply_frame)` for a waiting caller.

use std::collections::HashMap;

use bee_codec::protopack::GameFrame;
use bytes::{Bytes, BytesMut};

use crate::service::{Context, ServiceError};

/// A decoded game frame as a handler sees it, besides the typed message.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The player the message is about.
    pub uid: u64,
    /// The protobuf full name, e.g. `game.LoginReq`.
    pub name: String,
}

/// What a text handler returns: an optional reply frame (already encoded).
pub type TextResult = Result<Option<GameFrame>, ServiceError>;

type TextHandler<S> = Box<dyn Fn(&mut S, &mut Context, &Frame, Bytes) -> TextResult + Send + Sync>;

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
        let name = M::full_name();
        let handler: TextHandler<S> = Box::new(move |s, ctx, frame, body| {
            let msg = M::decode(body.as_ref()).map_err(|e| {
                ServiceError::msg(format!("{} body does not decode: {e}", frame.name))
            })?;
            Ok(f(s, ctx, frame, msg)?.map(|r| frame_of(frame.uid, &r)))
        });
        self.handlers.insert(name, handler);
        self
    }

    /// The message names handled, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.handlers.keys().cloned().collect();
        v.sort();
        v
    }

    /// Route one frame (the bytes after the "text" sub-type) to its handler.
    pub(crate) fn run(&self, state: &mut S, ctx: &mut Context, frame_bytes: &Bytes) -> TextResult {
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
        handler(state, ctx, &frame, gf.body)
    }
}
