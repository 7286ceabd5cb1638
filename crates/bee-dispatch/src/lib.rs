//! # bee-dispatch — services, and how a message reaches them
//!
//! The layer a game engineer writes against. It owns local services and their
//! mailboxes, the cluster services that connect nodes, and the routing of a message to
//! its handler. It builds on bee-codec (bytes), bee-transport (connections) and
//! bee-registry (names); none of those know about it.
//!
//! ## Layers inside this crate (each uses only the ones above it)
//! 1. [`error`], [`service`]: the local runtime — [`Node`], [`Service`], mailboxes,
//!    local call/send/redirect, one name table. It knows nothing of the cluster;
//!    layers plug in through the node's extensions and [`Node::on_shutdown`].
//! 2. [`cluster`]: skynet's cluster API over the runtime (`bee_clusterd`, senders,
//!    agents, `call`/`send`/`query`/`register`, [`ClusterExt`] for `ctx.cluster()`);
//!    [`drain`]: stopping a node without cutting what it accepted.
//! 3. [`args`], [`handle`], [`lua`], [`text`], [`dispatcher`]: writing services —
//!    typed `"lua"` commands, protobuf `"text"` handlers, sync or async with the state
//!    reachable after an `await`.
//! 4. Policies over those: [`shard`] (uid sharding), [`native`] (CServiceProxy and rpc
//!    for native callers, as a wrapper over any [`Router`]), [`builtin`] services.
//!
//! `cargo xtask layers` checks one thing mechanically, for every crate: that no two of
//! its top-level modules import each other, directly or through others (no import
//! cycle; comments and `#[cfg(test)]` code are not read). It does not know this list:
//! a module that imports one further down without closing a cycle passes the check, so
//! the order above is kept by review.
//!
//! ## Follow one message from socket to handler
//! 1. [`cluster`]: a peer's request arrives on a `bee_clusteragent`; its `"@name"` or
//!    address is resolved and the payload is put in the target service's mailbox.
//! 2. [`service`]: the target's task takes it (one message at a time) and runs the
//!    service's handler; the reply goes back the way the caller came.
//! 3. [`dispatcher`]: most services are a [`Dispatcher`], which unpacks the payload once
//!    and routes by sub-type: [`lua`] (command table) or [`text`] (protobuf handlers by
//!    message name).

pub mod args;
pub mod builtin;
pub mod cluster;
pub mod dispatcher;
pub mod drain;
pub mod error;
mod fasthash;
pub mod handle;
pub mod lifecycle;
pub mod lua;
pub mod native;
pub mod service;
pub mod shard;
pub mod text;

pub use args::{FromArgs, FromValue, IntoValue, IntoValues, Str};
pub use cluster::{Cluster, ClusterExt, ClusterSettings, Target};
pub use dispatcher::{Dispatcher, Router};
pub use error::{Addr, CallError, ServiceError};
pub use handle::Handle;
pub use lua::LuaTable;
pub use service::{
    BoxService, Context, HandleResult, Message, Node, Responder, RuntimeConfig, Service,
};
pub use text::TextTable;
