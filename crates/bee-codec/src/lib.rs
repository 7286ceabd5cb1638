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
//! - [`kkt`]: the game team's frame (their proxy frame v2: remote and source node/service,
//!   sub_type, uid, message name, roomid, session, protobuf body), its two reply forms,
//!   a header-only peek for routing, and the team's older layouts (inner, v1, client).
//!   This is the frame the team's C++ and Lua services exchange, and bee's game frame
//!   everywhere (send, rpc request, rpc reply).
//!
//! Decoders never panic on any input and never allocate by an unchecked length field;
//! they return typed errors instead (one error enum per module: [`frame::FrameError`],
//! [`seri::SeriError`], [`cluster::ClusterError`], [`cluster::AssemblyError`],
//! [`kkt::KktError`]). The byte layout of [`kkt`] and how it travels inside the cluster
//! protocol are documented in `docs/protocol.md`.

pub mod cluster;
pub mod frame;
pub mod kkt;

pub mod seri;

pub use seri::{Table, Value};
