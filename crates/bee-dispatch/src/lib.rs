//! # bee-dispatch — services, and how a message reaches them
//!
//! The layer a game engineer writes against. It owns local services and their
//! mailboxes, the cluster services that connect nodes, and the routing of a message to
//! its handler. It builds on bee-codec (bytes), bee-transport (connections) and
//! bee-registry (names); none of those know about it.
//!
//! ## Layout — follow one message from socket to handler
//! 1. [`cluster`]: a peer's request arrives on a `bee_clusteragent`; its `"@name"` or
//!    address is resolved and the payload is put in the target service's mailbox.
//! 2. [`service`]: the target's task takes it (one message at a time) and runs the
//!    service's handler; the reply goes back the way the caller came.
//! 3. [`dispatcher`]: most services are a [`Dispatcher`], which unpacks the payload and
//!    routes by sub-type: [`lua`] (command table) or [`text`] (protobuf handlers by
//!    message name).
//! 4. Policy services built on that public API: [`shard`] (uid-hash master/workers),
//!    [`native`] (CServiceProxy, rpc envelopes for native callers).

pub mod builtin;
pub mod cluster;
pub mod dispatcher;
pub mod lua;
pub mod native;
pub mod service;
pub mod shard;
pub mod text;

pub use cluster::{Cluster, ClusterSettings, Target};
pub use dispatcher::Dispatcher;
pub use lua::LuaTable;
pub use service::{
    Addr, CallError, Context, HandleResult, Message, Node, Responder, RuntimeConfig, Service,
    ServiceError,
};
pub use text::TextTable;
