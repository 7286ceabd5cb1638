//! # bee-transport — connections between nodes
//!
//! The layer of bee that knows **connections and sessions**, and nothing about game
//! messages. It moves opaque payloads ([`bytes::Bytes`]) between nodes in skynet v1.6.0's
//! cluster protocol (frames from `bee_codec::cluster`), so a bee node and a stock skynet
//! node talk to each other.
//!
//! ## What it owns
//! - **Sending** ([`Channel`], one per remote node, skynet's clustersender): the TCP
//!   connection (opened lazily, `TCP_NODELAY`, reopened after a drop with back-off), the
//!   session table matching responses to waiting calls, multi-part reassembly of replies,
//!   timeouts, and bounds on calls in flight and bytes queued.
//! - **Listening** ([`Listener`], one agent per accepted connection, skynet's
//!   clusteragent): decoding and reassembling requests, handing them in arrival order to
//!   an [`Inbound`], writing the answers, back-pressure, and closing a misbehaving
//!   connection without disturbing the others.
//!
//! - **Latency**: when asked ([`ChannelConfig::busy_poll`], [`ListenerConfig::busy_poll`];
//!   off by default, [`DEFAULT_BUSY_POLL`] in a `bee run` node), after traffic a
//!   connection's reader busy-polls its socket for a short window before it parks, so a
//!   one-call-in-flight round trip does not wait for sleeping threads to wake; at most
//!   [`PollerCap::max`] connections under one [`PollerCap`] poll at once (the process's
//!   cap by default, [`set_max_pollers`]; see [`connection`] and [`busy_poll`]).
//!
//! - **Hardening** (operator's view in `docs/operations.md`): dead peers detected within
//!   [`ChannelConfig::liveness`] ([`liveness`]); node-wide [`ByteBudget`]s for inbound and
//!   outbound bytes; listener hygiene (connection limit, read and idle timeouts, clean
//!   refusal when out of file descriptors); node authentication ([`auth`]); metrics
//!   ([`telemetry`]).
//!
//! ## What it must never know
//! Payload formats (skynet.pack values, game frames), service names
//! and their registry, sub-types, handlers. Those belong to `bee-runtime`/`bee-cluster` and
//! `bee-registry`, which sit above and plug in through [`Inbound`] / [`Acceptor`]; this
//! crate depends on neither.
//!
//! ## Ordering
//! Frames of one connection leave in the order calls and pushes were issued — also
//! multi-part messages, which stock skynet writes at low priority so that later small
//! messages may overtake them. On the listening side, requests of one connection are
//! dispatched in arrival order.
//!
//! ## Example
//! ```
//! use std::sync::Arc;
//! use bee_transport::*;
//! use bytes::Bytes;
//! use futures::{future::BoxFuture, FutureExt};
//!
//! struct Echo;
//! impl Inbound for Echo {
//!     fn dispatch(&self, req: Request) -> BoxFuture<'_, Dispatched> {
//!         let answer = if req.push { Dispatched::NoReply } else { Dispatched::Ready(Ok(req.payload)) };
//!         async move { answer }.boxed()
//!     }
//!     fn closed(&self, _reason: &str) {}
//! }
//! struct Accept;
//! impl Acceptor for Accept {
//!     fn accept(&self, _peer: std::net::SocketAddr) -> Arc<dyn Inbound> { Arc::new(Echo) }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), TransportError> {
//! let listener = Listener::bind("127.0.0.1:0", ListenerConfig::default()).await?;
//! let addr = listener.local_addr().to_string();
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let server = tokio::spawn(listener.run(Arc::new(Accept), shutdown.clone()));
//!
//! let channel = Channel::new("echo_node", addr, ChannelConfig::default());
//! let to = Address::Name(Bytes::from_static(b"@echo"));
//! let reply = channel.call(to, Bytes::from_static(b"ping"), None).await?;
//! assert_eq!(&reply[..], b"ping");
//!
//! channel.close();
//! shutdown.cancel();
//! server.await.unwrap();
//! # Ok(())
//! # }
//! ```
//!
//! ## Layout
//! - [`auth`]: node authentication ([`AuthSecret`], HMAC-SHA256 challenge–response in
//!   calls to [`AUTH_NAME`]).
//! - [`budget`]: [`ByteBudget`], node-wide byte limits shared by channels and listeners.
//! - [`busy_poll`]: busy polling of a connection's reader, and [`PollerCap`], the bound
//!   on how many connections poll at once, shared by channels and listeners.
//! - [`error`]: [`TransportError`], every way a call can fail, naming the node.
//! - [`connection`]: the read half of a connection ([`Connection`]: buffer + frame
//!   decoder, telling a clean EOF from EOF mid-frame) and the batching write queue and
//!   writer task shared by both sides.
//! - [`channel`]: the sending side ([`Channel`], [`ChannelConfig`], [`ChannelStats`]);
//!   riding through a peer's restart in [`channel::ride_through`].
//! - [`liveness`]: dead-peer detection, all of it (TCP keepalive, `TCP_USER_TIMEOUT`,
//!   the heartbeat monitor and its calls to [`PING_NAME`], the listener's answer to them,
//!   calls timing out in a row, redial).
//! - [`telemetry`]: metric names, emitted through the `metrics` facade.
//! - [`throttle`]: warnings logged at most once per kind per peer per second, counted.
//! - [`listener`]: the listening side ([`Listener`], [`ListenerConfig`], [`Inbound`],
//!   [`Acceptor`], [`Dispatched`]); one agent per accepted connection, its concerns as
//!   separate steps.

pub mod auth;
pub mod budget;
pub mod busy_poll;
pub mod channel;
pub mod connection;
pub mod error;
pub mod listener;
pub mod liveness;
pub mod telemetry;
pub mod throttle;

pub use auth::{AuthSecret, AUTH_NAME};
pub use bee_codec::cluster::{Address, Request};
pub use budget::{ByteBudget, Permit};
pub use busy_poll::{set_max_pollers, PollerCap};
pub use channel::{Channel, ChannelConfig, ChannelStats, DEFAULT_BUSY_POLL};
pub use connection::{Connection, ReadError};
pub use error::TransportError;
pub use listener::{
    Acceptor, Dispatched, HandedConnection, Handoff, Inbound, Listener, ListenerConfig, GOAWAY,
    INVALID_LARGE_REQ, MULTIPART_EXPIRED, OVERLOADED,
};
pub use liveness::PING_NAME;
