//! The one error type of this crate, [`TransportError`]: what a caller learns when a call
//! or push to a remote node does not produce a reply.
//!
//! Every variant names the node it is about, so a log line or an error shown to a game
//! engineer says where to look.

use std::time::Duration;

/// Why a call or push over a [`Channel`](crate::Channel) (or a [`Listener`](crate::Listener)
/// bind) failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The remote handler answered with an error response; `message` is its text verbatim
    /// (e.g. `Invalid name`, `name not found`, or the error of the remote service).
    #[error("node {node}: {message}")]
    Remote {
        /// The remote node.
        node: String,
        /// The error text the remote node sent, unchanged.
        message: String,
    },
    /// The connection to the node could not be opened (refused, unreachable, timed out),
    /// or the channel is backing off after such a failure.
    #[error("cannot connect to node {node} at {addr}: {reason}")]
    Connect {
        /// The remote node.
        node: String,
        /// The address it was dialled at.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The connection dropped while the call waited for its reply; the reply is lost.
    /// The next call reconnects.
    #[error("node {node} went down while the call waited: {reason}")]
    NodeDown {
        /// The remote node.
        node: String,
        /// How the connection ended.
        reason: String,
    },
    /// The peer was declared dead while the call waited (or as it was issued): no
    /// heartbeat answer within the liveness bound, the kernel gave up on the socket
    /// (`TCP_USER_TIMEOUT`, keepalive, unreachable), or several calls in a row timed out
    /// with nothing received. The connection was closed; the next call dials afresh.
    #[error("node {node} is unreachable: {reason}")]
    PeerUnreachable {
        /// The remote node.
        node: String,
        /// Why it was declared dead.
        reason: String,
    },
    /// Node authentication failed on a fresh connection (see [`crate::auth`]): the peer
    /// does not know the shared secret, does not authenticate at all (e.g. a stock skynet
    /// node), or refused ours. Nothing was sent; the next call dials and tries again.
    #[error("node {node} at {addr} failed authentication: {reason}")]
    AuthFailed {
        /// The remote node.
        node: String,
        /// The address it was dialled at.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// No reply came within the call's timeout. The session is forgotten; a late reply is
    /// dropped with a log line.
    #[error("call to node {node} timed out after {after:?}")]
    Timeout {
        /// The remote node.
        node: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// A bounded queue of the channel is full (too many calls waiting for replies, or too
    /// many bytes waiting to be written) and the message was not sent; or the remote node
    /// shed the call (its inbound budget or the connection's bounds had no room for it:
    /// answered at once, the connection stays up); or a multi-part reply did not fit this
    /// node's inbound budget. Not a sign that the node is down: retry later or slow down.
    #[error("channel to node {node} is overloaded: {what}")]
    Overloaded {
        /// The remote node.
        node: String,
        /// Which limit was hit.
        what: String,
    },
    /// The channel was closed (cluster config reload or shutdown); it sends nothing more.
    #[error("channel to node {node} is closed")]
    Closed {
        /// The remote node.
        node: String,
    },
    /// The payload is larger than the configured maximum message size.
    #[error("message of {size} bytes for node {node} is larger than the maximum of {max} bytes")]
    TooLarge {
        /// The remote node.
        node: String,
        /// Size of the payload.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The peer sent a response frame that cannot be decoded; the connection was closed
    /// and every call waiting on it failed with this error.
    #[error("node {node} sent a malformed response ({reason}); connection closed")]
    Protocol {
        /// The remote node.
        node: String,
        /// What was wrong with the frame.
        reason: String,
    },
    /// A message could not be encoded (e.g. an empty or over-long `@name` address).
    #[error("cannot encode message: {0}")]
    Codec(String),
    /// A [`Listener`](crate::Listener) could not bind its address.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// What went wrong.
        reason: String,
    },
}
