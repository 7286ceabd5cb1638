//! The one error type of bee-etcd: what went wrong talking to etcd or with what it holds,
//! worded so the engineer reading the log knows where to look.

use std::time::Duration;

use bee_registry::RegistryError;

/// Everything bee-etcd can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    /// The `etcd://host:port/prefix` URL could not be read.
    #[error(
        "bad etcd URL {url:?}: {reason} (the form is etcd://host:port/prefix, e.g. etcd://127.0.0.1:2379/bee/prod)"
    )]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No etcd answered at the endpoint within the connect timeout.
    #[error("etcd at {endpoint} did not answer within {timeout:?}: {reason}")]
    Unreachable {
        /// `http://host:port`.
        endpoint: String,
        /// The connect timeout.
        timeout: Duration,
        /// The client's words, or "timed out".
        reason: String,
    },
    /// A request reached etcd (or tried to) and failed.
    #[error("etcd {op} {key}: {reason}")]
    Request {
        /// What was asked: `get`, `put`, `watch`, `lease grant`, ...
        op: &'static str,
        /// The key or prefix.
        key: String,
        /// The client's or server's words.
        reason: String,
    },
    /// A request got no answer within the request timeout.
    #[error("etcd {op} {key}: no answer within {timeout:?}")]
    Timeout {
        /// What was asked.
        op: &'static str,
        /// The key or prefix.
        key: String,
        /// The request timeout.
        timeout: Duration,
    },
    /// A value bee reads (config text, ack, member) is not what bee writes there.
    #[error("the value at {key} is not valid: {reason}")]
    BadValue {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The config text at the config key does not parse or does not pass the checks.
    #[error("the cluster config at {key}: {error}")]
    Config {
        /// The key.
        key: String,
        /// What the registry's parser or checks said.
        error: RegistryError,
    },
    /// `put_config` refused to replace the stored config (an older or conflicting version;
    /// pass `force` to override).
    #[error("not stored at {key}: {error}")]
    Refused {
        /// The config key.
        key: String,
        /// Why, in the registry's words.
        error: RegistryError,
    },
    /// Another writer changed the config key between bee's read and its write.
    #[error("{key} changed while bee was writing it (another push?); read it again and retry")]
    Raced {
        /// The config key.
        key: String,
    },
}
