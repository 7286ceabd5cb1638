//! Errors of the service layer, as types a caller can `match` on.
//!
//! - [`CallError`]: what the *caller* of a local or cluster call/send gets. This crate
//!   knows nothing of sockets: the layer that reaches other nodes (bee-cluster) wraps its
//!   own error (the transport's or the registry's) whole in a [`LinkError`] with a
//!   [`LinkKind`], so a caller tells a timeout from a node that is down without parsing
//!   text, and can still [`LinkError::downcast_ref`] to the original type; the `Display`
//!   text stays the one a log or the CLI prints.
//! - [`ServiceError`]: what a *handler* returns; its text travels to the caller.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The text a bee node puts first in an error reply that means "overloaded, try again"
/// (a full mailbox or channel), so a bee caller can tell overload from failure. The
/// transport reads the same words off the wire.
pub const OVERLOADED: &str = "bee: overloaded";

/// What kind of failure a [`LinkError`] is, for callers that decide on it (retry, mark
/// a node down) without knowing the layer that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkKind {
    /// No reply within the allowed time.
    Timeout,
    /// The node could not be reached or went away (connect failed, node down, marked
    /// down in the config, channel closed).
    NodeDown,
    /// The peer or the channel refused for load; the caller may retry later.
    Overloaded,
    /// Anything else (unknown node, refused authentication, message too large, …).
    Other,
}

/// An error from the layer that reaches other nodes, kept whole: its kind, and the
/// original error (reachable with [`LinkError::downcast_ref`]).
#[derive(Debug, Clone)]
pub struct LinkError {
    kind: LinkKind,
    source: Arc<dyn std::error::Error + Send + Sync>,
}

impl LinkError {
    /// Wrap `source` as a link failure of `kind`.
    pub fn new(kind: LinkKind, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        LinkError {
            kind,
            source: Arc::new(source),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> LinkKind {
        self.kind
    }

    /// The original error, if it is a `T` (e.g. `bee_transport::TransportError`).
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.source.downcast_ref::<T>()
    }
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

impl std::error::Error for LinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}

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
    /// The layer that reaches other nodes could not deliver or complete the call:
    /// timeout, node down, cannot connect, unknown node, overloaded channel, message too
    /// large, … (the transport's or the registry's error, kept whole).
    #[error(transparent)]
    Link(#[from] LinkError),
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
            // overload (see [`OVERLOADED`]).
            CallError::Overloaded { .. } => format!("{OVERLOADED}: {self}"),
            CallError::Link(l) if l.kind() == LinkKind::Overloaded => {
                format!("{OVERLOADED}: {self}")
            }
            other => other.to_string(),
        }
    }

    /// Whether the call ran out of time (locally or on the wire).
    pub fn is_timeout(&self) -> bool {
        match self {
            CallError::Timeout { .. } => true,
            CallError::Link(l) => l.kind() == LinkKind::Timeout,
            _ => false,
        }
    }

    /// Whether the target node could not be reached or went away (connect failed, node
    /// down, marked down in the config, channel closed).
    pub fn is_node_down(&self) -> bool {
        matches!(self, CallError::Link(l) if l.kind() == LinkKind::NodeDown)
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

    #[derive(Debug, thiserror::Error)]
    #[error("db did not answer")]
    struct Slow;

    #[test]
    fn link_errors_keep_their_kind_text_and_type() {
        let e = CallError::from(LinkError::new(LinkKind::Timeout, Slow));
        assert!(e.is_timeout());
        assert!(!e.is_node_down());
        assert_eq!(e.to_string(), "db did not answer");
        let CallError::Link(l) = &e else {
            panic!("not a link error: {e:?}")
        };
        assert!(l.downcast_ref::<Slow>().is_some());

        let e = CallError::from(LinkError::new(LinkKind::NodeDown, Slow));
        assert!(e.is_node_down());
        let e = CallError::from(LinkError::new(LinkKind::Overloaded, Slow));
        assert_eq!(e.remote_text(), format!("{OVERLOADED}: db did not answer"));
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
