//! Busy polling (latency): the reader of a connection given a busy-poll window
//! ([`crate::ChannelConfig::busy_poll`], [`crate::ListenerConfig::busy_poll`]) that finds
//! no data does not park at once. For that long after the last frame it received or the
//! last frame queued on its write side, it retries the socket with a plain non-blocking
//! `recv` and yields to the runtime between tries, so the next frame is picked up within a
//! microsecond or so instead of after a wake-up through epoll and a sleeping (on a VM:
//! halted) CPU, which dominates a one-call-in-flight round trip. See
//! [`crate::connection`] for when polling pays and when it does not start.
//!
//! Here: the activity stamps a poller reads (and the liveness monitor too: when a frame
//! was last received, when a blocked write last went through), the [`PollerCap`] handle
//! that bounds how many connections poll at once, and the polling loop itself.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::BytesMut;

/// Bytes asked of the socket per busy-poll read (the latency path carries small frames;
/// a larger burst is read in several tries or by the normal path).
pub(crate) const SPIN_CHUNK: usize = 16 * 1024;

/// Nanoseconds on a monotonic clock private to this process (activity stamps).
pub(crate) fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Busy polling stops while more requests than this are outstanding on the connection:
/// with a deep pipeline the next frame comes soon anyway, and a spinning reader would
/// only take CPU time from the work (and, on a small machine, from the peer).
pub(crate) const SPIN_MAX_OUTSTANDING: usize = 4;

/// Every this many polls without data, the poller also yields its thread to the kernel.
const SPIN_SHARE_EVERY: u64 = 8;

/// A bound on how many connections busy-poll at once, shared by every channel and
/// listener given a clone (an `Arc` around two counters, like a
/// [`ByteBudget`](crate::ByteBudget)): at most [`PollerCap::max`] of them poll at a time,
/// the others park in epoll as without polling, so polling costs at most about that many
/// cores however many connections carry traffic. A maximum of 0 turns polling off for
/// every connection under the cap.
///
/// [`ChannelConfig::busy_poll_cap`](crate::ChannelConfig::busy_poll_cap) and
/// [`ListenerConfig::busy_poll_cap`](crate::ListenerConfig::busy_poll_cap) default to the
/// process's cap ([`PollerCap::process`], maximum 1), which [`set_max_pollers`] sets; a
/// node that wants its own bound gives its configs a clone of its own [`PollerCap::new`].
#[derive(Clone)]
pub struct PollerCap {
    inner: Arc<CapInner>,
}

struct CapInner {
    /// Connections polling now.
    polling: AtomicUsize,
    /// At most this many poll at once.
    max: AtomicUsize,
}

impl std::fmt::Debug for PollerCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollerCap")
            .field("polling", &self.polling())
            .field("max", &self.max())
            .finish()
    }
}

impl Default for PollerCap {
    /// The process's cap ([`PollerCap::process`]).
    fn default() -> Self {
        PollerCap::process()
    }
}

impl PollerCap {
    /// A cap of its own: at most `max` connections given a clone poll at once.
    pub fn new(max: usize) -> PollerCap {
        PollerCap {
            inner: Arc::new(CapInner {
                polling: AtomicUsize::new(0),
                max: AtomicUsize::new(max),
            }),
        }
    }

    /// The cap shared by every connection not given another (maximum 1 until
    /// [`set_max_pollers`] or [`PollerCap::set_max`] changes it).
    pub fn process() -> PollerCap {
        static PROCESS: OnceLock<PollerCap> = OnceLock::new();
        PROCESS.get_or_init(|| PollerCap::new(1)).clone()
    }

    /// Change the maximum (connections polling now finish their window).
    pub fn set_max(&self, max: usize) {
        self.inner.max.store(max, Ordering::Relaxed);
    }

    /// Connections that may poll at once.
    pub fn max(&self) -> usize {
        self.inner.max.load(Ordering::Relaxed)
    }

    /// Connections polling now.
    pub fn polling(&self) -> usize {
        self.inner.polling.load(Ordering::Relaxed)
    }

    /// A poller's slot if the cap has room; given back when dropped.
    fn take(&self) -> Option<PollerSlot<'_>> {
        let max = self.max();
        self.inner
            .polling
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| PollerSlot(self))
    }
}

/// Bound the CPU busy polling may take in this process: at most `n` connections under
/// the process's cap ([`PollerCap::process`], the default of every config) poll at once
/// (default 1, so polling costs at most about one core however many connections carry
/// traffic); the others park in epoll as without polling. 0 turns polling off for them.
pub fn set_max_pollers(n: usize) {
    PollerCap::process().set_max(n);
}

/// A poller's slot under a [`PollerCap`]; given back when dropped.
struct PollerSlot<'a>(&'a PollerCap);

impl Drop for PollerSlot<'_> {
    fn drop(&mut self) {
        self.0.inner.polling.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Busy polling stops after a read that brought more frames than this (see
/// [`SPIN_MAX_OUTSTANDING`]; the listening side cannot see the caller's pipeline, only its
/// frames arriving together).
const SPIN_MAX_BATCH: usize = 1;

/// What a busy-polling reader needs to know of its connection's other side: when frames
/// were last queued for writing, and how many requests await their answers (calls in
/// flight for a channel, requests being handled for a listener's connection).
#[derive(Debug, Default)]
pub(crate) struct Activity {
    last: AtomicU64,
    outstanding: AtomicUsize,
    /// When a frame was last received (see [`now_ns`]); kept by the owner's reader, read
    /// by the liveness monitor.
    received: AtomicU64,
    /// When a write last went through after the socket had been full ([`now_ns`]): the
    /// peer's kernel acknowledged data and its application read some (it opened its
    /// receive window), so the peer is alive even if it has not answered yet.
    pub(crate) unblocked: AtomicU64,
}

impl Activity {
    /// Record traffic now.
    pub(crate) fn stamp(&self) {
        self.last.store(now_ns(), Ordering::Relaxed);
    }

    /// When traffic was last recorded (see [`now_ns`]).
    fn last(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }

    /// Record how many requests await answers now.
    pub fn set_outstanding(&self, n: usize) {
        self.outstanding.store(n, Ordering::Relaxed);
    }

    /// Record that a frame was received now.
    pub fn stamp_received(&self) {
        self.received.store(now_ns(), Ordering::Relaxed);
    }

    /// When a frame was last received (see [`now_ns`]; 0: never).
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// When a write last went through after the socket had been full (0: never).
    pub fn unblocked(&self) -> u64 {
        self.unblocked.load(Ordering::Relaxed)
    }

    /// Whether the pipeline is shallow enough for busy polling to pay.
    fn shallow(&self) -> bool {
        self.outstanding.load(Ordering::Relaxed) <= SPIN_MAX_OUTSTANDING
    }
}

/// The busy-poll state of a reader (see the module docs).
pub(crate) struct Spin<R> {
    /// A plain non-blocking read of the socket under `R`, bypassing the runtime's
    /// readiness cache (which only the runtime's epoll pass refreshes).
    pub(crate) raw_read: fn(&R, &mut [u8]) -> io::Result<usize>,
    /// How long after the last traffic to keep polling, in nanoseconds.
    pub(crate) window: u64,
    /// Traffic on the write side, and the requests outstanding.
    pub(crate) activity: Arc<Activity>,
    /// When this side last received a frame (taken when the reader comes back for more).
    pub(crate) received: u64,
    /// Frames decoded since the last read of the socket that brought data.
    pub(crate) frames: usize,
    /// Where a polled read lands before it is appended to the read buffer.
    pub(crate) scratch: Box<[u8]>,
    /// How many connections may poll at once.
    pub(crate) cap: PollerCap,
}

impl<R> std::fmt::Debug for Spin<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spin")
            .field("window_ns", &self.window)
            .finish_non_exhaustive()
    }
}

/// What one busy-poll pass ended with.
pub(crate) enum Polled {
    /// Bytes were appended to the read buffer.
    Data,
    /// The peer closed its side.
    Eof,
    /// The window passed without data, or polling would not pay: park.
    Idle,
}

impl<R> Spin<R> {
    /// Busy-poll the socket (`reader`, appending to `buffer`) while the window since the
    /// last traffic lasts (see the module docs); `Idle` at once when the window has passed
    /// or polling would not pay.
    /// Cancel safe: bytes read are in the buffer before any await.
    pub(crate) async fn poll(&mut self, reader: &R, buffer: &mut BytesMut) -> io::Result<Polled> {
        let spin = self;
        // Several frames came in the last read: the peer is pipelining and the next ones
        // come soon without help. Part of a frame is buffered: the rest is on its way,
        // and a large frame is best read in large reads straight into the buffer.
        // The count stays until the next read brings data: an owner that drops this
        // future (a `select!` taking another branch) and calls again must not start
        // polling a pipelining peer.
        let frames = spin.frames;
        if frames > SPIN_MAX_BATCH || !buffer.is_empty() {
            return Ok(Polled::Idle);
        }
        // The reader comes back for more right after handling what it read: if that
        // brought a frame, now is when the last one arrived (one clock read per socket
        // read, not per frame).
        if frames > 0 {
            spin.received = now_ns();
            spin.frames = 0;
        }
        // Other connections poll already (as many as allowed): park like without polling.
        let Some(_slot) = spin.cap.take() else {
            return Ok(Polled::Idle);
        };
        let mut spins = 0u64;
        loop {
            match (spin.raw_read)(reader, &mut spin.scratch) {
                Ok(0) => return Ok(Polled::Eof),
                Ok(n) => {
                    buffer.extend_from_slice(&spin.scratch[..n]);
                    return Ok(Polled::Data);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let last = spin.received.max(spin.activity.last());
                    if now_ns().saturating_sub(last) >= spin.window || !spin.activity.shallow() {
                        return Ok(Polled::Idle);
                    }
                    // Every other task of this runtime runs before the next try.
                    tokio::task::yield_now().await;
                    spins += 1;
                    if spins.is_multiple_of(SPIN_SHARE_EVERY) {
                        // Now and then give the CPU to any other thread that wants it: a
                        // runtime worker woken for a task, the peer process on a small
                        // machine. Without this they wait for the kernel to preempt the
                        // poller, and that wait shows in the tail latency.
                        std::thread::yield_now();
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_bounds_its_pollers_and_its_clones_share_it() {
        let cap = PollerCap::new(1);
        let clone = cap.clone();
        let slot = cap.take().expect("room for one poller");
        assert!(clone.take().is_none(), "a clone shares the bound");
        assert_eq!(clone.polling(), 1);
        // Another cap is another bound.
        assert!(PollerCap::new(1).take().is_some());
        drop(slot);
        assert_eq!(cap.polling(), 0);
        let slot = clone.take().expect("the slot was given back");
        cap.set_max(2);
        let second = cap.take().expect("room for a second poller");
        assert!(cap.take().is_none());
        drop((slot, second));
        cap.set_max(0);
        assert!(cap.take().is_none(), "a maximum of 0 turns polling off");
        assert_eq!(cap.polling(), 0);
    }
}
