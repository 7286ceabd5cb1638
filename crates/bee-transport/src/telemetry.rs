//! Metrics of the transport, emitted through the [`metrics`] facade (the node installs an
//! exporter, e.g. Prometheus; without one every update is a no-op). The full list, with
//! what to alert on, is in `docs/operations.md`.
//!
//! Channel metrics are labelled `node` (the remote node's name); listener metrics are
//! labelled `listener` (the local listening address), since a listener does not know the
//! node names of its peers and their ephemeral ports would explode the label space.
//! Handles of the frequent metrics are resolved once per channel / listener, so the hot
//! path pays an atomic add, not a registry lookup; rare events (errors, rejections,
//! refusals) are looked up when they happen.

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use crate::error::TransportError;

/// Calls issued on a channel.
pub const CHANNEL_CALLS: &str = "bee_transport_channel_calls_total";
/// Pushes issued on a channel.
pub const CHANNEL_PUSHES: &str = "bee_transport_channel_pushes_total";
/// Calls and pushes that failed, by `kind`.
pub const CHANNEL_ERRORS: &str = "bee_transport_channel_errors_total";
/// Seconds from issuing a call to its answer (ok or remote error).
pub const CHANNEL_CALL_SECONDS: &str = "bee_transport_channel_call_seconds";
/// Calls waiting for their replies.
pub const CHANNEL_IN_FLIGHT: &str = "bee_transport_channel_in_flight";
/// Bytes queued for writing (not yet handed to the kernel).
pub const CHANNEL_QUEUED_BYTES: &str = "bee_transport_channel_queued_bytes";
/// Bytes written to the channel's sockets.
pub const CHANNEL_BYTES_OUT: &str = "bee_transport_channel_bytes_out_total";
/// Bytes read from the channel's sockets.
pub const CHANNEL_BYTES_IN: &str = "bee_transport_channel_bytes_in_total";
/// Connections opened (first connect and reconnects).
pub const CHANNEL_CONNECTS: &str = "bee_transport_channel_connects_total";
/// 1 while the channel has a live connection, else 0.
pub const CHANNEL_CONNECTED: &str = "bee_transport_channel_connected";
/// Heartbeat calls sent.
pub const CHANNEL_HEARTBEATS: &str = "bee_transport_channel_heartbeats_total";
/// Heartbeats that went unanswered past the liveness bound.
pub const CHANNEL_HEARTBEATS_FAILED: &str = "bee_transport_channel_heartbeats_failed_total";
/// Peers declared dead, by `reason` (`heartbeat`, `timeouts`, `tcp`).
pub const CHANNEL_PEERS_DEAD: &str = "bee_transport_channel_peers_declared_dead_total";
/// Messages refused by a limit, by `limit` (`in_flight`, `queue`, `outbound_budget`,
/// `inbound_budget`).
pub const CHANNEL_REJECTIONS: &str = "bee_transport_channel_budget_rejections_total";

/// Connections accepted and served.
pub const LISTENER_ACCEPTED: &str = "bee_transport_listener_accepted_total";
/// Peers refused, by `reason` (`max_connections`, `out_of_fds`, `auth`).
pub const LISTENER_REFUSED: &str = "bee_transport_listener_refused_total";
/// Connections open now.
pub const LISTENER_OPEN: &str = "bee_transport_listener_connections";
/// Connections closed, by `reason` (`peer`, `error`, `idle`, `auth`, `shutdown`).
pub const LISTENER_CLOSED: &str = "bee_transport_listener_closed_total";
/// Requests and pushes received (heartbeats and authentication not counted).
pub const LISTENER_REQUESTS: &str = "bee_transport_listener_requests_total";
/// Bytes read from accepted sockets.
pub const LISTENER_BYTES_IN: &str = "bee_transport_listener_bytes_in_total";
/// Bytes written to accepted sockets.
pub const LISTENER_BYTES_OUT: &str = "bee_transport_listener_bytes_out_total";
/// Multi-part messages dropped unfinished after `multipart_timeout`.
pub const LISTENER_MULTIPART_EXPIRED: &str = "bee_transport_listener_multipart_expired_total";
/// Requests and pushes refused because the node inbound budget (or the connection's own
/// bounds) had no room for them — requests answered `Overloaded`, pushes dropped, the
/// connection kept — and connections closed for a message larger than the whole budget.
pub const LISTENER_REJECTIONS: &str = "bee_transport_listener_budget_rejections_total";
/// Requests and pushes shed, by `what` (`request`, `push`) and `limit`
/// (`inbound_budget`, `connection_bytes`, `outstanding`).
pub const LISTENER_SHED: &str = "bee_transport_listener_shed_total";
/// Warnings, by `kind`, whether logged or suppressed by the throttle (see
/// [`crate::throttle`]).
pub const WARNINGS: &str = "bee_transport_warnings_total";

/// Metric handles of one channel.
#[derive(Debug)]
pub(crate) struct ChannelMetrics {
    node: String,
    pub calls: Counter,
    pub pushes: Counter,
    pub latency: Histogram,
    pub in_flight: Gauge,
    pub queued: Gauge,
    pub bytes_out: Counter,
    pub bytes_in: Counter,
    pub connects: Counter,
    pub connected: Gauge,
    pub heartbeats: Counter,
    pub heartbeats_failed: Counter,
}

impl ChannelMetrics {
    pub fn new(node: &str) -> ChannelMetrics {
        let n = node.to_string();
        ChannelMetrics {
            calls: counter!(CHANNEL_CALLS, "node" => n.clone()),
            pushes: counter!(CHANNEL_PUSHES, "node" => n.clone()),
            latency: histogram!(CHANNEL_CALL_SECONDS, "node" => n.clone()),
            in_flight: gauge!(CHANNEL_IN_FLIGHT, "node" => n.clone()),
            queued: gauge!(CHANNEL_QUEUED_BYTES, "node" => n.clone()),
            bytes_out: counter!(CHANNEL_BYTES_OUT, "node" => n.clone()),
            bytes_in: counter!(CHANNEL_BYTES_IN, "node" => n.clone()),
            connects: counter!(CHANNEL_CONNECTS, "node" => n.clone()),
            connected: gauge!(CHANNEL_CONNECTED, "node" => n.clone()),
            heartbeats: counter!(CHANNEL_HEARTBEATS, "node" => n.clone()),
            heartbeats_failed: counter!(CHANNEL_HEARTBEATS_FAILED, "node" => n.clone()),
            node: n,
        }
    }

    /// Count a failed call or push.
    pub fn error(&self, e: &TransportError) {
        counter!(CHANNEL_ERRORS, "node" => self.node.clone(), "kind" => kind(e)).increment(1);
    }

    /// Count a peer declared dead.
    pub fn dead(&self, reason: &'static str) {
        counter!(CHANNEL_PEERS_DEAD, "node" => self.node.clone(), "reason" => reason).increment(1);
    }

    /// Count a message refused by a limit.
    pub fn rejected(&self, limit: &'static str) {
        self.rejected_n(limit, 1);
    }

    /// Count `n` messages refused by a limit at once.
    pub fn rejected_n(&self, limit: &'static str, n: u64) {
        counter!(CHANNEL_REJECTIONS, "node" => self.node.clone(), "limit" => limit).increment(n);
    }
}

/// Metric handles of one listener (shared by its connections).
#[derive(Debug)]
pub(crate) struct ListenerMetrics {
    listener: String,
    pub accepted: Counter,
    pub open: Gauge,
    pub requests: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub expired: Counter,
    pub rejections: Counter,
}

impl ListenerMetrics {
    pub fn new(listener: String) -> ListenerMetrics {
        let l = listener.clone();
        ListenerMetrics {
            accepted: counter!(LISTENER_ACCEPTED, "listener" => l.clone()),
            open: gauge!(LISTENER_OPEN, "listener" => l.clone()),
            requests: counter!(LISTENER_REQUESTS, "listener" => l.clone()),
            bytes_in: counter!(LISTENER_BYTES_IN, "listener" => l.clone()),
            bytes_out: counter!(LISTENER_BYTES_OUT, "listener" => l.clone()),
            expired: counter!(LISTENER_MULTIPART_EXPIRED, "listener" => l.clone()),
            rejections: counter!(LISTENER_REJECTIONS, "listener" => l),
            listener,
        }
    }

    /// Count peers refused.
    pub fn refused(&self, reason: &'static str, n: u64) {
        counter!(LISTENER_REFUSED, "listener" => self.listener.clone(), "reason" => reason)
            .increment(n);
    }

    /// Count a request or push shed (answered `Overloaded`, or dropped).
    pub fn shed(&self, what: &'static str, limit: &'static str) {
        self.rejections.increment(1);
        counter!(LISTENER_SHED, "listener" => self.listener.clone(), "what" => what, "limit" => limit)
            .increment(1);
    }

    /// Count a closed connection.
    pub fn closed(&self, reason: &'static str) {
        counter!(LISTENER_CLOSED, "listener" => self.listener.clone(), "reason" => reason)
            .increment(1);
    }
}

/// The `kind` label of an error.
pub fn kind(e: &TransportError) -> &'static str {
    match e {
        TransportError::Remote { .. } => "remote",
        TransportError::Connect { .. } => "connect",
        TransportError::NodeDown { .. } => "node_down",
        TransportError::PeerUnreachable { .. } => "peer_unreachable",
        TransportError::AuthFailed { .. } => "auth_failed",
        TransportError::Timeout { .. } => "timeout",
        TransportError::Overloaded { .. } => "overloaded",
        TransportError::Closed { .. } => "closed",
        TransportError::TooLarge { .. } => "too_large",
        TransportError::Protocol { .. } => "protocol",
        TransportError::Codec(_) => "codec",
        TransportError::Bind { .. } => "bind",
    }
}
