//! Graceful drain: how a node stops without cutting what it already accepted.
//!
//! [`Cluster::drain`] runs the steps in order, bounded by one deadline:
//! 1. **Stop accepting**: every listening socket is closed — and the drain waits until
//!    it is, before step 2 — so new peers are refused (a peer with `ride_through` holds
//!    its messages until the node, or its successor, is back). Open connections keep
//!    being served, and so are peers already waiting in a socket's accept queue.
//! 2. **Say goaway** to every bee peer (nodes that exchanged `hello` with this one):
//!    each retires its connection to this node — what it sends next goes on a new
//!    connection — and closes the old one once its calls are answered. Stock skynet
//!    peers are not told (they do not speak it); their connections are served until the
//!    node is quiet.
//! 3. **Wait until quiet**: no message in any mailbox, no call of this node waiting for
//!    a reply, nothing queued or parked on any channel, and no inbound connection left
//!    open (or, with some left, nothing handled for [`QUIET`]).
//!
//! The [`DrainReport`] says whether it finished before the deadline and, when not,
//! what was still pending (the node logs it with counts).

use std::fmt;
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::error::CallError;

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
    /// afterwards: shut it down with [`crate::Node::shutdown`].
    pub async fn drain(&self, deadline: Duration) -> Result<DrainReport, CallError> {
        let t0 = Instant::now();
        let end = t0 + deadline;
        let node = self.node()?;
        let handled_at = |n: &crate::Node| n.services().iter().map(|s| s.handled).sum::<u64>();
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
