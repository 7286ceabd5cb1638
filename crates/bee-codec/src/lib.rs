//! # bee-codec — every byte format bee speaks
//!
//! The bottom layer of bee. Pure functions and small state machines over byte buffers:
//! no sockets, no tasks, no clocks. Everything above (transport, dispatch, node) builds
//! on these types; nothing here knows about them.
//!
//! ## Layout
//! - [`frame`]: the 2-byte big-endian length prefix that carries every cluster frame,
//!   with a maximum body size enforced.
//! - [`seri`]: skynet.pack values ([`seri::Value`]) — the payload of every `"lua"` message.
//! - [`cluster`]: skynet v1.6.0 cluster request/push/response frames, multi-part split and
//!   bounded reassembly.
//! - [`proxy`]: the node/service proxy header a native service hands to CServiceProxy.
//! - [`protopack`]: the protobuf game frame (uid, message name, protobuf body).
//! - [`rpc`]: the rpc envelope (caller session, source node, source service, message).
//!
//! Decoders never panic on any input and never allocate by an unchecked length field;
//! they return typed errors instead. The byte layouts of [`protopack`] and [`rpc`] are
//! documented in `docs/protocol.md`.

pub mod cluster;
pub mod frame;
pub mod protopack;
pub mod proxy;
pub mod rpc;
pub mod seri;

pub use seri::{Table, Value};
