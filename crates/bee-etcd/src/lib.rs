//! # bee-etcd — etcd as the cluster's shared config store
//!
//! One etcd holds, under a key prefix named by a URL `etcd://host:port/PREFIX`:
//!
//! | key | value | written by |
//! |---|---|---|
//! | `PREFIX/config` | the cluster config text, Lua or TOML form (bee-registry parses both) | `bee config push`, [`EtcdStore::put_config`] |
//! | `PREFIX/acks/NODE` | JSON [`Ack`]: the version and hash a node tried, ok or the error | each node, [`EtcdStore::put_ack`] |
//! | `PREFIX/members/NODE` | JSON `{"addr","incarnation"}` under a lease | each running node, [`EtcdStore::register_member`] |
//!
//! A node reads the config at start ([`EtcdStore::get_config`]), follows it
//! ([`EtcdStore::watch_config`]), applies each version with
//! `bee_registry::Registry::apply` and answers with an ack; whoever pushed waits for the
//! acks ([`EtcdStore::wait_acks`], or [`EtcdStore::wait_acks_for`] one exact version
//! and hash, as `bee config push --cluster etcd://…` does) and learns, per node, what
//! applied and what failed.
//! Membership keys vanish when a node stops keeping its lease alive, so
//! [`EtcdStore::watch_members`] reports dead nodes within the lease TTL.
//!
//! Every request has a timeout; watches reconnect on a fresh connection (a new dial at
//! least every 500 ms while etcd is away, so a healed network is used at once) and log
//! each failure. Errors are [`EtcdError`]. The client is the `etcd-client` crate (etcd v3 API
//! over gRPC); building it needs `protoc`.
//!
//! # Layout
//!
//! | file | what |
//! |---|---|
//! | `src/url.rs` | [`EtcdUrl`]: parsing `etcd://host:port/PREFIX`, key names |
//! | `src/store.rs` | [`EtcdStore`]: connect, config get/put/watch, timeouts |
//! | `src/acks.rs` | [`Ack`], [`AckReport`]: put, read, wait |
//! | `src/members.rs` | [`Member`], [`MemberEvent`], [`MemberRegistration`]: leased membership |
//! | `src/error.rs` | [`EtcdError`] |
//! | `tests/etcd.rs` | against a real `etcd` started on free loopback ports |

mod acks;
mod error;
mod members;
mod store;
mod url;

pub use acks::{Ack, AckReport};
pub use error::EtcdError;
pub use members::{Member, MemberEvent, MemberRegistration, MemberWatch};
pub use store::{
    ConfigUpdate, ConfigWatch, EtcdOptions, EtcdStore, StoredConfig, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_REQUEST_TIMEOUT, MAX_BACKOFF, MIN_BACKOFF, WATCH_CAPACITY,
};
pub use url::{EtcdUrl, DEFAULT_PORT};
