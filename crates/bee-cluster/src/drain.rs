//! Graceful drain: how a node stops without cutting what it already accepted.
//!
//! [`Cluster::drain`] runs the steps in order, bounded by one deadline:
//! 1. **Stop accepting**: every listening socket is closed — and the drain waits until
//!    it is, before step 2 — so new peers are refused (a peer with `ride_through` holds
//!    its messages until the node, or its successor, is back). Open connections keep
//!    being served, and so are peers already waiting in a socket's accept queue.
//! 2. **Say goaway**: every inbound connection of a bee peer gets an in-band `goaway`
//!    (sent by the listener), and the peer retires exactly that connection — what it
//!    sends next goes on a new connection — and closes it once its calls are answered.
//!    The bee nodes of the config (those that exchanged `hello` with this one) are also
//!    told through their `bee_clusterd`, which they log as an event; that notice retires
//!    nothing, since it may arrive after the peer has connected to the successor. Stock
//!    skynet peers are not told (they do not speak it): at a hot update
//!    ([`Cluster::drain_for_successor`]) their connections are handed to the successor
//!    once what they sent so far is answered (the peer sees one connection that never
//!    closed); at a plain drain they are served until the node is quiet.
//! 3. **Wait until quiet**: no message in any mailbox, no call of this node waiting for
//!    a reply, nothing queued or parked on any channel, and no inbound connection left
//!    open (or, with some left, nothing handled for [`QUIET`]).
//!
//! The [`DrainReport`] says whether it finished before the deadline and, when not,
//! what was still pending (the node logs it with counts).

use std::fmt;
use std::time::{Duration, Instant};

use bee_codec::seri::{self, Value};
use bee_runtime::{CallError, Node};

use crate::lifecycle::CLUSTERD_NAME;
use crate::state::Cluster;

/// With inbound connections still open (stock skynet peers never close theirs), the
/// node counts as drained once nothing was handled for this long.
pub const QUIET: Duration = Duration::from_millis(300);

/// How long telling one peer `goaway` may take.
const GOAWAY_TIMEOUT: Duration = Duration::from_secs(1);

/// What a drain did, and what was left when it ended.
#[derive(Debug, Clone, Default)]
pub struct DrainReport {
    /// Everything was done before the deadline.
    pub complete: bool,
    /// How long it took.
    pub elapsed: Duration,
    /// Messages the node's services handled while it drained (calls answered and pushes
    /// delivered after it stopped accepting).
    pub drained: u64,
    /// Bee peers told `goaway`.
    pub told: usize,
    /// Peers that did not take the `goaway` (with why).
    pub not_told: Vec<String>,
    /// Messages waiting in mailboxes at the end.
    pub queued: usize,
    /// Calls of this node still waiting for replies at the end.
    pub in_flight: usize,
    /// Bytes still queued on channels at the end.
    pub queued_bytes: usize,
    /// Pushes still parked for peers that are away.
    pub parked: usize,
    /// Inbound connections still open at the end.
    pub inbound: usize,
    /// Messages handled per service over the node's life (`label:count`, busiest first).
    pub handled: Vec<(String, u64)>,
}

impl fmt::Display for DrainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} in {} ms, {} messages handled meanwhile: {} peers told goaway{}; left: {} queued messages, {} calls waiting, {} bytes unsent, {} parked pushes, {} inbound connections",
            if self.complete { "drained" } else { "drain deadline passed" },
            self.elapsed.as_millis(),
            self.drained,
            self.told,
            if self.not_told.is_empty() {
                String::new()
            } else {
                format!(" ({} not: {})", self.not_told.len(), self.not_told.join("; "))
            },
            self.queued,
            self.in_flight,
            self.queued_bytes,
            self.parked,
            self.inbound
        )
    }
}

impl DrainReport {
    /// `label:count` of every service that handled something, busiest first.
    pub fn handled_line(&self) -> String {
        self.handled
            .iter()
            .map(|(l, n)| format!("{l}:{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Cluster {
    /// Drain this node (see the module doc) within `deadline`. The node keeps running
    /// afterwards: shut it down with [`Node::shutdown`].
    pub async fn drain(&self, deadline: Duration) -> Result<DrainReport, CallError> {
        self.drain_with(deadline, false).await
    }

    /// Drain for a successor that took the listening sockets (hot update): as
    /// [`Cluster::drain`], and the connections of peers that are not told goaway are
    /// handed off ([`Cluster::hand_off_connections`]); take them with
    /// [`Cluster::handed_connections`] afterwards.
    pub async fn drain_for_successor(&self, deadline: Duration) -> Result<DrainReport, CallError> {
        self.drain_with(deadline, true).await
    }

    async fn drain_with(
        &self,
        deadline: Duration,
        hand_off: bool,
    ) -> Result<DrainReport, CallError> {
        let t0 = Instant::now();
        let end = t0 + deadline;
        let node = self.node()?;
        let handled_at = |n: &Node| n.services().iter().map(|s| s.handled).sum::<u64>();
        let start = handled_at(&node);
        self.stop_accepting();
        // Peers told goaway reconnect at once: the listening sockets must be closed by
        // then. A socket still open (its listener task not run yet on a busy machine)
        // lets the kernel complete their handshakes, and closing it a moment later
        // resets those connections with the calls and pushes already written on them.
        if !self
            .stopped_accepting(end.saturating_duration_since(Instant::now()))
            .await
        {
            tracing::warn!("a listening socket was still open at the drain deadline");
        }
        if hand_off {
            self.hand_off_connections();
        }
        let peers = self.bee_peers();
        let told = futures::future::join_all(peers.iter().map(|p| async move {
            let within = GOAWAY_TIMEOUT.min(end.saturating_duration_since(Instant::now()));
            (p.clone(), self.say_goaway(p, within).await)
        }))
        .await;
        let mut report = DrainReport::default();
        for (peer, outcome) in told {
            match outcome {
                Ok(()) => report.told += 1,
                Err(e) => report.not_told.push(format!("{peer}: {e}")),
            }
        }
        let mut last_handled = u64::MAX;
        let mut quiet_since = Instant::now();
        loop {
            let services = node.services();
            let handled: u64 = services.iter().map(|s| s.handled).sum();
            report.queued = services.iter().map(|s| s.queued).sum();
            let senders = self.senders();
            report.in_flight = senders.iter().map(|(_, s, _)| s.in_flight).sum();
            report.queued_bytes = senders.iter().map(|(_, s, _)| s.queued_bytes).sum();
            report.parked = senders.iter().map(|(_, s, _)| s.parked).sum();
            report.inbound = self.inbound_connections();
            if handled != last_handled {
                last_handled = handled;
                quiet_since = Instant::now();
            }
            let idle = report.queued == 0
                && report.in_flight == 0
                && report.queued_bytes == 0
                && report.parked == 0;
            if idle && (report.inbound == 0 || quiet_since.elapsed() >= QUIET) {
                report.complete = true;
                break;
            }
            if Instant::now() >= end {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut handled: Vec<(String, u64)> = node
            .services()
            .into_iter()
            .filter(|s| s.handled > 0)
            .map(|s| (s.names.first().cloned().unwrap_or(s.label), s.handled))
            .collect();
        handled.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        report.handled = handled;
        report.drained = handled_at(&node).saturating_sub(start);
        report.elapsed = t0.elapsed();
        Ok(report)
    }
}

impl Cluster {
    /// Close every listening socket: new peers are refused (or, after a handover, reach
    /// the successor); open connections keep being served. The first step of a drain.
    pub fn stop_accepting(&self) {
        self.inner
            .listen_fds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.inner.stop_accepting.cancel();
    }

    /// Whether the node is draining: it stopped accepting peers ([`Cluster::stop_accepting`],
    /// the first step of a drain at SIGTERM or a handover).
    pub fn draining(&self) -> bool {
        self.inner.stop_accepting.is_cancelled()
    }

    /// Wait (at most `within`) until every listening socket of this node is really
    /// closed after [`Cluster::stop_accepting`] — its listener task has let go of it, so
    /// a peer connecting now is refused rather than queued by the kernel and then reset.
    /// Whether all were closed in time.
    pub async fn stopped_accepting(&self, within: Duration) -> bool {
        let tokens = self
            .inner
            .unbound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let all = futures::future::join_all(tokens.iter().map(|t| t.cancelled()));
        tokio::time::timeout(within, all).await.is_ok()
    }

    /// `node` said (through `bee_clusterd`) that it is going away. The connection to it
    /// is not retired here: the draining process tells every bee connection `goaway`
    /// in-band, and that frame retires exactly the connection it came on. This notice
    /// travels on another connection and can arrive after the channel has already
    /// connected anew — to the node's successor — and retiring that one would send the
    /// next messages on a third connection, free to overtake what waits on the second.
    /// Whether this node has a channel to `node`.
    pub fn noted_goaway(&self, node: &str) -> bool {
        self.inner.senders.contains_key(node)
    }

    /// The bee nodes of the config this node has exchanged `hello` with (so they speak
    /// `goaway`), itself excluded.
    pub fn bee_peers(&self) -> Vec<String> {
        let registry = &self.inner.registry;
        registry
            .config()
            .nodes
            .keys()
            .filter(|n| **n != self.inner.node_name && registry.peer_incarnation(n).is_some())
            .cloned()
            .collect()
    }

    /// Tell `peer` this node is going away (`goaway` to its `bee_clusterd`), so it sends
    /// new messages on a new connection.
    pub async fn say_goaway(&self, peer: &str, timeout: Duration) -> Result<(), CallError> {
        let payload = seri::pack(&[
            Value::from("lua"),
            Value::from("goaway"),
            Value::from(self.inner.node_name.as_str()),
        ])?;
        self.call_timeout(
            peer,
            format!("@{CLUSTERD_NAME}").as_str(),
            payload,
            Some(timeout),
        )
        .await
        .map(|_| ())
    }
}
