//! Dead-peer detection: how a [`Channel`](crate::Channel) notices that the node at the
//! other end of its connection is gone, even when the socket stays ESTABLISHED (a
//! black-holed network, a frozen or swapped-out process, a host that lost power).
//!
//! Three layers, all bounded by [`ChannelConfig::liveness`](crate::ChannelConfig::liveness)
//! (default 4 s; zero turns all of them off):
//!
//! 1. **Kernel**: every dialled socket gets TCP keepalive (idle `liveness/2`, probes every
//!    `liveness/4`, both at least 1 s, 3 probes) and `TCP_USER_TIMEOUT = liveness`, so
//!    data left unacknowledged for `liveness` (or keepalives unanswered) makes the kernel
//!    end the connection with `ETIMEDOUT`. This also covers stock skynet peers and idle
//!    links, but not a process that is hung while its kernel still ACKs.
//! 2. **Application heartbeat**: when nothing has been received on a connection for
//!    [`ChannelConfig::heartbeat`](crate::ChannelConfig::heartbeat) (default 1 s), the
//!    channel sends an ordinary cluster *request* to the name [`PING_NAME`]
//!    (`@bee_ping`, empty payload). A bee [`Listener`](crate::Listener) answers it itself,
//!    inside bee-transport, with an empty ok response (it never reaches the
//!    [`Inbound`](crate::Inbound)); a stock skynet node answers a request to an unknown
//!    name with the error response `Invalid name`. **Any frame received counts as proof
//!    of life**, an error response as much as an ok. If nothing at all arrives within
//!    `liveness - heartbeat` of the ping (or `liveness` when `heartbeat >= liveness`),
//!    the peer is declared dead — except while the socket shows that the peer is reading
//!    (a write that had blocked on a full socket went through since: a slow consumer is
//!    not a dead one). So a peer that freezes is declared dead at most about
//!    `liveness + heartbeat/4` after the last frame it sent.
//!
//!    *Choice*: pings continue to stock skynet peers too (they could be stopped
//!    after the first `Invalid name`). The price is one small request and one small error
//!    response per `heartbeat` on an **idle** link only (a link that carries replies never
//!    pings), stock skynet answers an unknown name without logging, and it is the only
//!    way to notice a skynet process that hangs while its kernel keeps ACKing. The wire
//!    stays skynet's: a ping is a plain string-address request (type `0x80`).
//!
//!    A bee listener keeps reading a connection under load: requests it has no room for
//!    are answered `Overloaded` one by one, and heartbeats are answered ahead of any
//!    charge, so an overloaded peer is not a dead one. It stops reading only when the
//!    caller does not read its answers; and a write of the caller that went through
//!    since the ping (the socket drains) also counts as proof of life. A bee node is
//!    still declared dead when it stops reading for longer than `liveness` with
//!    nothing draining (a service's full mailbox that blocks delivery for that long, a
//!    frozen process) — like Erlang's tick.
//! 3. **Call timeouts**: [`ChannelConfig::max_timeouts`](crate::ChannelConfig::max_timeouts)
//!    (default 3) calls in a row that time out on one connection, with not one frame
//!    received in between, recycle the connection.
//!
//! When a connection is declared dead every call waiting on it fails at once with
//! [`TransportError::PeerUnreachable`] (not a
//! timeout), and the next call dials afresh.
//!
//! **Reconnecting**: a dial does not wait on one SYN for the whole `connect_timeout`: a new
//! attempt is started every [`ChannelConfig::redial`](crate::ChannelConfig::redial)
//! (default 100 ms; at most 10 in flight) while earlier ones are still pending, and the
//! first to connect wins, so a peer whose network heals while a dial is in progress, or
//! whose SYN was lost, is reached within about `redial` (the kernel would otherwise
//! retransmit the first SYN only after 1, 3, 7 s).
//! After a dial that timed out the channel backs off only `backoff_min` (the dial itself
//! already took `connect_timeout`), so the next call after the network heals dials at
//! once.
//!
//! Everything of it lives here: the socket options (`tune_socket`), the dial with
//! redials (`dial`), the heartbeat monitor of a channel's connection (`watch`, over
//! the `Watched` view a channel gives of its connection), the rule for calls timing out
//! in a row (`TimeoutStreak`), and the listening side's answer to a heartbeat
//! (`is_ping`, `ping_reply`).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bee_codec::cluster::{Address, Request};
use bytes::Bytes;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::busy_poll::now_ns;
use crate::error::TransportError;
use crate::telemetry::ChannelMetrics;
use crate::throttle::warn_allowed;

/// The name a channel's heartbeat calls (an ordinary cluster request with an empty
/// payload). A bee listener answers it itself with an empty ok response.
pub const PING_NAME: &str = "@bee_ping";

/// Set keepalive and `TCP_USER_TIMEOUT` on `stream` for a liveness bound of `liveness`
/// (zero: leave the system defaults).
pub(crate) fn tune_socket(stream: &TcpStream, liveness: Duration) -> io::Result<()> {
    tune_accepted(stream, liveness, liveness / 2)
}

/// [`tune_socket`] with keepalive probes starting after `idle` of silence (an accepted
/// socket: see `ListenerConfig::idle_probe`).
pub(crate) fn tune_accepted(
    stream: &TcpStream,
    liveness: Duration,
    idle: Duration,
) -> io::Result<()> {
    if liveness.is_zero() {
        return Ok(());
    }
    let sock = SockRef::from(stream);
    let second = Duration::from_secs(1);
    let keepalive = TcpKeepalive::new()
        .with_time(idle.max(second))
        .with_interval((liveness / 4).max(second))
        .with_retries(3);
    sock.set_tcp_keepalive(&keepalive)?;
    sock.set_tcp_user_timeout(Some(liveness))?;
    Ok(())
}

/// How a dial ended without a connection.
#[derive(Debug)]
pub(crate) enum DialError {
    /// An attempt failed (refused, unreachable, ...).
    Failed(io::Error),
    /// No attempt connected within the timeout.
    TimedOut,
}

/// The most connection attempts one dial keeps in flight (each one socket).
const MAX_ATTEMPTS: usize = 10;
/// With [`MAX_ATTEMPTS`] in flight, the oldest is given up for a new one once it is this
/// old: its SYN went out a second ago and its first retransmission is due about now, so a
/// fresh attempt is as good and a peer that answers within a second is never cut short.
const ATTEMPT_LIFE: Duration = Duration::from_secs(1);

/// Connect to `addr`, starting a new attempt every `redial` (zero: one attempt) while the
/// earlier ones are still pending, for at most `timeout`. The first attempt to connect
/// wins; the first to fail ends the dial with its error (a refusal or an unreachable
/// network is not improved by waiting). At most [`MAX_ATTEMPTS`] are in flight: past
/// that the oldest, once older than [`ATTEMPT_LIFE`], makes room for the next.
///
/// Why several: a SYN lost, or sent into a network that is cut, is retransmitted by the
/// kernel only after a second (then 3 s, 7 s, ...); a new attempt `redial` later gets
/// through as soon as the path is back.
pub(crate) async fn dial(
    addr: &str,
    timeout: Duration,
    redial: Duration,
) -> Result<TcpStream, DialError> {
    let deadline_at = tokio::time::Instant::now() + timeout;
    // A name is looked up once per dial, not once per attempt.
    let addrs: Arc<[SocketAddr]> = match addr.parse::<SocketAddr>() {
        Ok(a) => Arc::from([a]),
        Err(_) => match tokio::time::timeout_at(deadline_at, tokio::net::lookup_host(addr)).await {
            Ok(Ok(found)) => found.collect(),
            Ok(Err(e)) => return Err(DialError::Failed(e)),
            Err(_) => return Err(DialError::TimedOut),
        },
    };
    if addrs.is_empty() {
        return Err(DialError::Failed(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{addr}: the name has no address"),
        )));
    }
    let mut attempts = tokio::task::JoinSet::new();
    let mut started: VecDeque<(tokio::time::Instant, tokio::task::AbortHandle)> = VecDeque::new();
    let start = |attempts: &mut tokio::task::JoinSet<io::Result<TcpStream>>| {
        let addrs = addrs.clone();
        attempts.spawn(async move { TcpStream::connect(&addrs[..]).await })
    };
    started.push_back((tokio::time::Instant::now(), start(&mut attempts)));
    let deadline = tokio::time::sleep_until(deadline_at);
    tokio::pin!(deadline);
    let mut next = tokio::time::Instant::now() + redial;
    loop {
        tokio::select! {
            _ = &mut deadline => return Err(DialError::TimedOut),
            Some(done) = attempts.join_next() => match done {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => return Err(DialError::Failed(e)),
                // Only an attempt given up below is aborted.
                Err(_) => {}
            },
            _ = tokio::time::sleep_until(next), if !redial.is_zero() => {
                let now = tokio::time::Instant::now();
                started.retain(|(_, h)| !h.is_finished());
                match started.front() {
                    Some((t, _)) if started.len() >= MAX_ATTEMPTS && now < *t + ATTEMPT_LIFE => {
                        next = *t + ATTEMPT_LIFE;
                    }
                    _ => {
                        if started.len() >= MAX_ATTEMPTS {
                            if let Some((_, h)) = started.pop_front() {
                                h.abort();
                            }
                        }
                        started.push_back((now, start(&mut attempts)));
                        next = now + redial;
                    }
                }
            }
        }
    }
}

/// Whether `req` is a heartbeat call to [`PING_NAME`] (a listener answers it itself with
/// `ping_reply`, in arrival order with its other answers, and never dispatches it).
pub(crate) fn is_ping(req: &Request) -> bool {
    matches!(&req.address, Address::Name(n) if n.as_ref() == PING_NAME.as_bytes())
}

/// The answer to a heartbeat call: an empty ok response.
pub(crate) fn ping_reply() -> Result<Bytes, String> {
    Ok(Bytes::new())
}

/// Calls in a row that timed out on one connection with nothing received in between
/// (layer 3 above): reset by every frame received.
#[derive(Debug, Default)]
pub(crate) struct TimeoutStreak(AtomicU32);

impl TimeoutStreak {
    /// A frame was received: the streak is over.
    pub(crate) fn reset(&self) {
        self.0.store(0, Ordering::Release);
    }

    /// One more call timed out; `Some(n)` (the streak's length) once `max` calls in a
    /// row did (`max` zero: never).
    pub(crate) fn note(&self, max: u32) -> Option<u32> {
        let n = self.0.fetch_add(1, Ordering::AcqRel) + 1;
        (max > 0 && n >= max).then_some(n)
    }
}

/// What the heartbeat monitor sees of one connection of a channel.
pub(crate) trait Watched: Send + Sync + 'static {
    /// The remote node's name (for logs and errors).
    fn node(&self) -> &str;
    /// Cancelled when the connection ends.
    fn cancel(&self) -> &CancellationToken;
    /// When a frame was last received (`now_ns`; 0: never).
    fn received(&self) -> u64;
    /// When a write last went through after the socket had been full (0: never).
    fn unblocked(&self) -> u64;
    /// The channel's metrics.
    fn metrics(&self) -> &ChannelMetrics;
    /// Queue a heartbeat call to [`PING_NAME`]; its answer is not needed (any frame
    /// received is proof of life), nor whether it could be queued.
    fn ping(&self);
    /// The peer is dead: fail every waiting call with `err` and end the connection.
    fn declare_dead(self: &Arc<Self>, err: TransportError);
}

/// The liveness monitor of one connection: pings after `heartbeat` of silence, declares
/// the peer dead when a ping stays unanswered too long (layer 2 above).
pub(crate) async fn watch<W: Watched>(conn: Arc<W>, liveness: Duration, heartbeat: Duration) {
    let tick = (heartbeat.min(liveness) / 4).max(Duration::from_millis(10));
    let wait = if liveness > heartbeat {
        liveness - heartbeat
    } else {
        liveness
    };
    let heartbeat_ns = heartbeat.as_nanos() as u64;
    let wait_ns = wait.as_nanos() as u64;
    // When the unanswered ping was sent (or tried), if one is.
    let mut pinged: Option<u64> = None;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A fresh connection counts as having just heard from the peer.
    let opened = now_ns();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = conn.cancel().cancelled() => return,
        }
        let now = now_ns();
        let received = conn.received().max(opened);
        if pinged.is_some_and(|at| received >= at) {
            pinged = None;
        }
        match pinged {
            None if now.saturating_sub(received) >= heartbeat_ns => {
                conn.metrics().heartbeats.increment(1);
                conn.ping();
                pinged = Some(now);
            }
            None => {}
            Some(at) => {
                let since = at.max(conn.unblocked());
                if now.saturating_sub(since) >= wait_ns {
                    let silent = Duration::from_nanos(now.saturating_sub(received));
                    let node = conn.node().to_string();
                    if let Some(suppressed) = warn_allowed("heartbeat", &node) {
                        tracing::warn!(%node, ?silent, suppressed, "peer does not answer heartbeats; declaring it unreachable");
                    }
                    conn.metrics().heartbeats_failed.increment(1);
                    conn.metrics().dead("heartbeat");
                    conn.declare_dead(TransportError::PeerUnreachable {
                        node,
                        reason: format!(
                            "nothing received for {} ms, heartbeat unanswered",
                            silent.as_millis()
                        ),
                    });
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name is looked up (once) and reached; a name that does not resolve is an error
    /// within the timeout, not a hang.
    #[tokio::test]
    async fn a_dial_by_name_connects_and_a_name_without_address_fails() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accept = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
        let by_name = dial(
            &format!("localhost:{port}"),
            Duration::from_secs(5),
            Duration::from_millis(100),
        )
        .await;
        assert!(by_name.is_ok(), "{by_name:?}");
        accept.await.unwrap().unwrap();

        let started = std::time::Instant::now();
        let bad = dial(
            "no-such-host.invalid:2528",
            Duration::from_secs(2),
            Duration::from_millis(100),
        )
        .await;
        assert!(bad.is_err(), "{bad:?}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    }
}
