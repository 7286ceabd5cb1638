//! A node's socket I/O: one epoll set (level-triggered, as skynet's) holding every socket
//! of the node that wants to read or has bytes waiting to be written, driven by one task
//! on the node's own runtime. The task does the reads, accepts, connect completions and
//! the writes that had to wait, each under the socket's slot lock; between waits it
//! retries parked events and runs the timers (connect timeouts, an accept pause).
//!
//! Running on the runtime (the epoll set is itself watched by tokio) means that the
//! event a read produces wakes its service on the same worker thread, as a socket task
//! used to, instead of unparking a worker from a foreign thread for every event.
//!
//! A descriptor is in the epoll set only while its socket wants something (see
//! `Sock::sync`): a paused or not yet started socket is not watched at all, so a peer's
//! hang-up cannot make the loop spin.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;

use super::table::{self, IN, OUT};
use super::{bind, events, tcp, udp, Kind, OutData, State};
use crate::{lock, Host};

/// Epoll sets (each with its task) per node, at most: one per runtime worker, so that
/// reads run on every worker.
const MAX_SHARDS: usize = 8;
/// Ready sockets handled before the task lets others run.
const YIELD_EVERY: usize = 256;
/// The largest read (a TCP read grows to it; a UDP datagram fits).
pub(crate) const READ_BUFFER: usize = 64 * 1024;
/// Events taken per wait.
const BATCH: usize = 256;
/// How often sockets of stopped nodes are looked for.
const SWEEP: Duration = Duration::from_secs(10);

/// One node's epoll set and the bell of the task that drives it.
pub(crate) struct Poller {
    ep: OwnedFd,
    bell: Notify,
    /// Sends for the task to write, in the order they were made.
    sends: Mutex<Vec<Out>>,
}

/// The poller of `host` that serves socket `id`, the node's pollers made (and their
/// tasks started on the node's runtime) on first use.
fn of(host: &Arc<Host>, id: i32) -> io::Result<Arc<Poller>> {
    let pick = |v: &Vec<Arc<Poller>>| v[(id as u32 as usize) % v.len()].clone();
    if let Some(v) = host.sockets.get() {
        return Ok(pick(v));
    }
    let shards = host.runtime.metrics().num_workers().clamp(1, MAX_SHARDS);
    let mut made = Vec::with_capacity(shards);
    for _ in 0..shards {
        // SAFETY: a plain system call; the result is checked before it is owned.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        made.push(Arc::new(Poller {
            // SAFETY: `ep` is a new descriptor nothing else owns.
            ep: unsafe { OwnedFd::from_raw_fd(ep) },
            bell: Notify::new(),
            sends: Mutex::new(Vec::new()),
        }));
    }
    if host.sockets.set(made).is_ok() {
        let _rt = host.runtime.enter();
        for p in host.sockets.get().into_iter().flatten() {
            // SAFETY: the descriptor is the epoll set's, owned by the `Poller` that the
            // `EpFd` keeps alive: it stays open and the same while tokio watches it.
            let watched =
                unsafe { AsyncFd::register_with_interest(EpFd(p.clone()), Interest::READABLE) }?;
            host.runtime
                .spawn(run(Arc::downgrade(host), p.clone(), watched));
        }
    }
    host.sockets
        .get()
        .map(pick)
        .ok_or_else(|| io::Error::other("the node's socket pollers are missing"))
}

/// The epoll set as tokio watches it.
struct EpFd(Arc<Poller>);

impl AsRawFd for EpFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.ep.as_raw_fd()
    }
}

fn ctl(ep: RawFd, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: `ev` is a valid epoll_event for the call; bad descriptors only make it fail.
    if unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Change what `host`'s epoll set watches for socket `id` on `fd` from `old` to `new`
/// (interest bits; 0 is "not in the set").
pub(crate) fn set_interest(
    host: &Weak<Host>,
    fd: RawFd,
    id: i32,
    old: u8,
    new: u8,
) -> io::Result<()> {
    let host = host
        .upgrade()
        .ok_or_else(|| io::Error::other("the socket's node has stopped"))?;
    let p = of(&host, id)?;
    let bits = |i: u8| {
        (if i & IN != 0 { libc::EPOLLIN as u32 } else { 0 })
            | (if i & OUT != 0 {
                libc::EPOLLOUT as u32
            } else {
                0
            })
    };
    let op = if old == 0 {
        libc::EPOLL_CTL_ADD
    } else if new == 0 {
        libc::EPOLL_CTL_DEL
    } else {
        libc::EPOLL_CTL_MOD
    };
    ctl(p.ep.as_raw_fd(), op, fd, bits(new), u64::from(id as u32))
}

/// Wake `host`'s socket tasks (parked events or a timer are waiting), starting them if
/// the node has none yet: an event can wait for a node that never watched a socket (an
/// ERROR for an unknown socket id), and only these tasks deliver waiting events.
pub(crate) fn wake(host: &Weak<Host>) {
    let Some(h) = host.upgrade() else { return };
    if let Err(e) = of(&h, 0) {
        tracing::error!(error = %e, "socket layer: cannot start the node's socket task");
    }
    for p in h.sockets.get().into_iter().flatten() {
        p.bell.notify_one();
    }
}

/// A send on its way to the socket task.
struct Out {
    id: i32,
    high: bool,
    data: OutData,
}

/// Hand a send on socket `id` to `host`'s socket task (the caller counted it in the
/// socket's `pending`).
pub(crate) fn send_soon(host: &Weak<Host>, id: i32, data: OutData, high: bool) {
    let Some(p) = host.upgrade().and_then(|h| of(&h, id).ok()) else {
        return;
    };
    let mut q = lock(&p.sends);
    q.push(Out { id, high, data });
    let first = q.len() == 1;
    drop(q);
    if first {
        p.bell.notify_one();
    }
}

/// Write the sends handed over, in order.
fn take_sends(p: &Poller, outs: &mut Vec<Out>) {
    std::mem::swap(&mut *lock(&p.sends), outs);
    for o in outs.drain(..) {
        // A socket closed meanwhile gave the bytes back when it was freed.
        let Some(mut k) = table::lock_id(o.id) else {
            continue;
        };
        tcp::take_send(&mut k, o.data, o.high);
        if k.s.id == o.id && k.s.kind != Kind::Free {
            k.sync();
        }
    }
}

/// What a timer does when it is due.
pub(crate) enum Due {
    /// A connect still in progress fails.
    ConnectTimeout,
    /// A listener that ran out of descriptors accepts again.
    AcceptResume,
}

static TIMERS: Mutex<Vec<(Instant, i32, Due)>> = Mutex::new(Vec::new());

/// Run `due` for socket `id` (of `host`) after `after`.
pub(crate) fn after(host: &Weak<Host>, after: Duration, id: i32, due: Due) {
    lock(&TIMERS).push((Instant::now() + after, id, due));
    wake(host);
}

/// The task of one node's epoll set, until the node is gone.
async fn run(host: Weak<Host>, p: Arc<Poller>, watched: AsyncFd<EpFd>) {
    let ep = p.ep.as_raw_fd();
    let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; BATCH];
    // The task's read buffer, made with the node's first socket (a fixed cost of the
    // node, not of its connections): a read copies what it got into the block the owner
    // receives, so one buffer serves every socket of this epoll set.
    let mut scratch = vec![0u8; READ_BUFFER];
    let mut retry_wait = Duration::from_millis(1);
    let mut next_sweep = Instant::now() + SWEEP;
    let mut handled = 0usize;
    let mut outs = Vec::new();
    loop {
        take_sends(&p, &mut outs);
        // SAFETY: `evs` has room for BATCH events; a zero timeout never blocks.
        let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), BATCH as i32, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::error!(error = %e, "socket layer: epoll_wait failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            continue;
        }
        for ev in &evs[..n as usize] {
            let (token, bits) = (ev.u64, ev.events);
            ready(token as u32 as i32, bits, &mut scratch);
        }
        if events::any_parked() {
            if events::retry() {
                retry_wait = Duration::from_millis(1);
            } else {
                retry_wait = (retry_wait * 2).min(Duration::from_millis(20));
            }
        }
        let now = Instant::now();
        let next_timer = fire_timers(now);
        if now >= next_sweep {
            table::sweep_orphans();
            next_sweep = now + SWEEP;
            if host.strong_count() == 0 {
                return;
            }
        }
        if n > 0 {
            // Level-triggered: what is still ready comes back in the next wait. Go on
            // until nothing is ready (the services the events went to run then), but
            // let them run after every few hundred events.
            handled += n as usize;
            if handled >= YIELD_EVERY {
                handled = 0;
                tokio::task::yield_now().await;
            }
            continue;
        }
        handled = 0;
        let mut wait = if events::any_parked() {
            retry_wait
        } else {
            Duration::from_secs(1)
        };
        if let Some(t) = next_timer {
            wait = wait.min(t.saturating_duration_since(now));
        }
        tokio::select! {
            r = watched.readable() => {
                // Cleared before the next epoll_wait: readiness that comes after the
                // clear wakes this task again.
                if let Ok(mut g) = r {
                    g.clear_ready();
                }
            }
            _ = p.bell.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Run the timers that are due; when the next one is.
fn fire_timers(now: Instant) -> Option<Instant> {
    let due: Vec<(i32, Due)> = {
        let mut t = lock(&TIMERS);
        if t.iter().all(|x| x.0 > now) {
            return t.iter().map(|x| x.0).min();
        }
        let (due, left): (Vec<_>, Vec<_>) = t.drain(..).partition(|x| x.0 <= now);
        *t = left;
        due.into_iter().map(|(_, id, d)| (id, d)).collect()
    };
    for (id, d) in due {
        let Some(mut k) = table::lock_id(id) else {
            continue;
        };
        match d {
            Due::ConnectTimeout => {
                if k.s.state == State::Connecting {
                    tcp::connect_failed(&mut k, "Connection timed out");
                }
            }
            Due::AcceptResume => {
                k.set(table::flag::BACKOFF, false);
                k.sync();
            }
        }
    }
    lock(&TIMERS).iter().map(|x| x.0).min()
}

/// Socket `id` is ready (`bits` from epoll).
fn ready(id: i32, bits: u32, scratch: &mut [u8]) {
    let Some(mut k) = table::lock_id(id) else {
        return;
    };
    if k.s.host.strong_count() == 0 {
        // Its node stopped: no one can take its events.
        k.free();
        return;
    }
    let trouble = (libc::EPOLLHUP | libc::EPOLLERR) as u32;
    let inb = bits & (libc::EPOLLIN as u32 | trouble) != 0 && k.s.interest & IN != 0;
    let outb = bits & (libc::EPOLLOUT as u32 | trouble) != 0 && k.s.interest & OUT != 0;
    let alive = |k: &table::Sock| k.s.id == id && k.s.kind != Kind::Free;
    match k.s.kind {
        Kind::Free => return,
        Kind::Listen => {
            if inb {
                tcp::accept(&mut k);
            }
        }
        Kind::Tcp if k.s.state == State::Connecting => {
            if outb {
                tcp::connected(&mut k);
            }
        }
        Kind::Tcp => {
            if outb {
                tcp::flush(&mut k);
            }
            if inb && alive(&k) {
                tcp::read(&mut k, scratch);
            }
        }
        Kind::Udp4 | Kind::Udp6 => {
            if outb {
                udp::flush(&mut k);
            }
            if inb && alive(&k) {
                udp::read(&mut k, scratch);
            }
        }
        Kind::Bind => {
            if outb {
                bind::flush(&mut k);
            }
            if inb && alive(&k) {
                bind::read(&mut k, scratch);
            }
        }
    }
    if alive(&k) {
        k.sync();
    }
}
