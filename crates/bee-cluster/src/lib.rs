//! # bee-cluster — skynet's cluster on the bee runtime
//!
//! The layer that connects nodes: skynet's `skynet.cluster` API (`call`, `send`,
//! `query`, `register`, `open`, `reload`, `proxy`) built from local services of the
//! runtime (bee-runtime), over connections (bee-transport) and the cluster config and
//! names (bee-registry). [`Cluster::start`] installs it on a [`bee_runtime::Node`] as the
//! node's [`bee_runtime::Remote`], so a handler's `Handle::call` reaches other nodes.
//!
//! ## Modules, bottom up (each uses only the ones above it in this list)
//! 1. [`lifecycle`]: the config lifecycle's wire messages (`config`, `config_push`,
//!    `hello`, `names_changed`) shared with the tools that send them.
//! 2. `state`: the [`Cluster`] handle's shared state and settings.
//! 3. The jobs, each an `impl Cluster` block or a service: `sender` (channels to remote
//!    nodes, `hello`, proxies), `agent` (one per accepted connection), `listen`
//!    (listening sockets), `names` (telling peers our names changed), `config`
//!    (apply/push/report), `clusterd` (`bee_clusterd`, the console and lifecycle
//!    commands).
//! 4. [`cluster`]: the public API — start, call/send/query/register, shutdown.
//! 5. [`drain`] (stopping without cutting what was accepted) and [`native`]
//!    (CServiceProxy and rpc for native callers).

mod agent;
pub mod cluster;
mod clusterd;
mod config;
pub mod drain;
pub mod lifecycle;
mod listen;
mod names;
pub mod native;
mod sender;
mod state;

pub use agent::DRAINING;
pub use bee_runtime::Target;
pub use cluster::{CallErrorExt, ClusterExt};
pub use state::{Cluster, ClusterSettings, StatusSource};
