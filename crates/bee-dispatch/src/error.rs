//! Errors of the service layer, as types a caller can `match` on.
//!
//! - [`CallError`]: what the *caller* of a local or cluster call/send gets. The
//!   transport's and the registry's own error types are kept whole (through `#[from]`),
//!   so a caller tells a timeout from a node that is down without parsing text; the
//!   `Display` text stays the one a log or the CLI prints.
//! - [`ServiceError`]: what a *handler* returns; its text travels to the caller.

use std::fmt;
use std::time::Duration;

use bee_registry::RegistryError;
use bee_transport::TransportError;

/// A service address, as skynet's: 32 bits, top 8 bits a harbor id (always 0 in bee).
pub type Addr = u32;

/// Formats an address the way skynet prints it: `:0000000a`.
pub fn fmt_addr(addr: Addr) -> String {
    format!(":{addr:08x}")
}

/// What a caller gets when a call or send cannot be completed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No service lives at that address (never existed, or already stopped).
    #[error("no service at address {}", fmt_addr(*.addr))]
    NoSuchService {
        /// The address asked for.
        addr: Addr,
    },
    /// No service is registered under that name on this node.
    #[error("no local service named {name:?}")]
    UnknownName {
        /// The name asked for.
        name: String,
    },
    /// The named node has no service registered under that name (a cluster `query` or
    /// a call to `"@name"` on this node).
    #[error("name not found: node {node} has no service named {name:?}")]
    NameNotFound {
        /// The node asked.
        node: String,
        /// The name asked for.
        name: String,
    },
    /// The service stopped (or dropped the reply) before it answered.
    #[error("service {service} stopped before it replied")]
    ServiceGone {
        /// Label and address of the service.
        service: String,
    },
    /// The target's mailbox is full and the message could not wait (a non-blocking
    /// post, e.g. from a C service).
    #[error("service {service} is overloaded: its mailbox is full")]
    Overloaded {
        /// Label and address of the service.
        service: String,
    },
    /// The handler returned an error or panicked; `message` is its text.
    #[error("{service} failed: {message}")]
    Failed {
        /// Label and address of the service.
        service: String,
        /// The handler's error text.
        message: String,
    },
    /// No reply from a local service within the allowed time.
    #[error("call to {service} timed out after {after:?}")]
    Timeout {
        /// Label and address of the service.
        service: String,
        /// The timeout that passed.
        after: Duration,
    },
    /// The remote node answered with an error (its handler failed, the name or address
    /// is unknown there, …): its own words, and which node said them.
    #[error("{message} (error from node {node})")]
    Remote {
        /// The node that answered.
        node: String,
        /// Its error text, verbatim.
        message: String,
    },
    /// A remote node answered something that is not what the call expects (e.g. a
    /// `query` reply that is not an address).
    #[error("bad reply from node {node}: {reason}")]
    BadReply {
        /// The node that answered.
        node: String,
        /// What was wrong.
        reason: String,
    },
    /// The connection layer could not deliver or complete the call: timeout, node down,
    /// cannot connect, overloaded channel, message too large, …
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The cluster config or name registry refused: unknown node, node marked down, …
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The arguments could not be packed or a reply could not be unpacked.
    #[error("{0}")]
    Codec(#[from] bee_codec::seri::SeriError),
    /// A layer the call needs is not running on this node (the cluster layer not
    /// started, the node shutting down).
    #[error("{0}")]
    Unavailable(String),
}

impl CallError {
    /// The text sent to a remote caller when this error answers its request.
    pub fn remote_text(&self) -> String {
        match self {
            // The handler's own words travel unchanged, as a Lua caller expects.
            CallError::Failed { message, .. } | CallError::Remote { message, .. } => {
                message.clone()
            }
            // skynet's own words for a query that finds nothing.
            CallError::NameNotFound { .. } => "name not found".to_string(),
            // A full mailbox is overload, not failure: a bee caller gets it back as
            // `TransportError::Overloaded` (see `bee_transport::OVERLOADED`).
            CallError::Overloaded { .. }
            | CallError::Transport(TransportError::Overloaded { .. }) => {
                format!("{}: {other}", bee_transport::OVERLOADED, other = self)
            }
            other => other.to_string(),
        }
    }

    /// Whether the call ran out of time (locally or on the wire).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            CallError::Timeout { .. } | CallError::Transport(TransportError::Timeout { .. })
        )
    }

    /// Whether the target node could not be reached or went away (connect failed, node
    /// down, marked down in the config, channel closed).
    pub fn is_node_down(&self) -> bool {
        matches!(
            self,
            CallError::Transport(
                TransportError::Connect { .. }
                    | TransportError::NodeDown { .. }
                    | TransportError::Closed { .. }
            ) | CallError::Registry(RegistryError::NodeDown { .. })
        )
    }
}

/// The error a handler returns. Anything that implements `std::error::Error` converts
/// with `?`; [`ServiceError::msg`] makes one from text.
#[derive(Debug, Clone)]
pub struct ServiceError {
    message: String,
}

impl ServiceError {
    /// An error with this text.
    pub fn msg(text: impl fmt::Display) -> Self {
        ServiceError {
            message: text.to_string(),
        }
    }

    /// The error text.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn into_message(self) -> String {
        self.message
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for ServiceError {
    fn from(e: E) -> Self {
        ServiceError::msg(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_and_registry_errors_keep_their_kind_and_text() {
        let t = TransportError::Timeout {
            node: "db".into(),
            after: Duration::from_millis(5),
        };
        let text = t.to_string();
        let e = CallError::from(t);
        assert!(e.is_timeout());
        assert!(!e.is_node_down());
        assert_eq!(e.to_string(), text);
        assert!(matches!(
            e,
            CallError::Transport(TransportError::Timeout { ref node, .. }) if node == "db"
        ));

        let r = RegistryError::NodeDown { node: "x".into() };
        let e = CallError::from(r.clone());
        assert!(e.is_node_down());
        assert_eq!(e.to_string(), r.to_string());
    }

    #[test]
    fn remote_text_is_the_handlers_own_words() {
        let e = CallError::Failed {
            service: "echo:00000004".into(),
            message: "boom".into(),
        };
        assert_eq!(e.remote_text(), "boom");
        assert_eq!(e.to_string(), "echo:00000004 failed: boom");
    }
}
