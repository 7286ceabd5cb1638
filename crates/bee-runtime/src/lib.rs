//! # bee-runtime — local services, and how a message reaches its handler
//!
//! The layer a game engineer writes services against. It owns a node's services and
//! their mailboxes, local call/send/redirect, the name table, and the handler API. It
//! builds on bee-codec (bytes) only and knows nothing of sockets or the cluster: the
//! cluster layer (bee-cluster) plugs in as a [`Remote`] installed on the [`Node`], so
//! [`Handle::call`] reads the same for a local or a remote target.
//!
//! ## Layers inside this crate (each uses only the ones above it)
//! 1. [`error`], `mailbox`, `runner`, [`service`]: the runtime — [`Node`], [`Service`],
//!    mailboxes (a bounded queue that allocates nothing while a service is idle), the
//!    runners that run C and Lua services as skynet's workers do, local
//!    call/send/redirect, one name table; [`remote`]: the interface to other nodes.
//! 2. [`args`], [`handle`], [`lua`], [`text`], [`dispatcher`]: writing services —
//!    typed `"lua"` commands and protobuf `"text"` handlers in one handler shape
//!    (`|h, args| async move { … }`, a body that awaits calls or nothing), the state
//!    reachable through the [`Handle`] after every `await`.
//! 3. Policies over those: [`shard`] (uid sharding), [`builtin`] services.
//!
//! `cargo xtask layers` checks mechanically that no two top-level modules import each
//! other (directly or through others), and which workspace crates this one may depend
//! on; the order above is kept by review.
//!
//! ## Follow one message to its handler
//! 1. A message reaches a service's mailbox: from a local caller ([`Node::call`]), or
//!    from the cluster layer's agent for a peer's request.
//! 2. [`service`]: the target's task takes it (one message at a time) and runs the
//!    service's handler; the reply goes back the way the caller came. (A C or Lua
//!    service's loop is polled by one of the node's runners instead of a task of its
//!    own: the `runner` module.)
//! 3. [`dispatcher`]: most services are a [`Dispatcher`], which unpacks the payload once
//!    and routes by sub-type: [`lua`] (command table) or [`text`] (protobuf handlers by
//!    message name).

pub mod args;
pub mod builtin;
pub mod dispatcher;
pub mod error;
pub mod fasthash;
pub mod handle;
pub mod lua;
mod mailbox;
pub mod remote;
mod runner;
pub mod service;
pub mod shard;
pub mod text;

pub use args::{FromArgs, FromValue, IntoValue, IntoValues, Str};
pub use dispatcher::{Dispatcher, Router};
pub use error::{Addr, CallError, LinkError, LinkKind, ServiceError};
pub use handle::Handle;
pub use lua::LuaTable;
pub use remote::{Remote, Target};
pub use service::{
    BoxService, Context, HandleResult, Message, Node, Responder, RuntimeConfig, Service,
};
pub use text::TextTable;
