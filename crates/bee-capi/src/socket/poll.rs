//! The socket layer's I/O thread: one epoll set (level-triggered, as skynet's) holding
//! every socket that wants to read or has bytes waiting to be written, an eventfd that
//! wakes it, and a short list of timers (connect timeouts, an accept pause). Each ready
//! socket is handled under its slot's lock; parked events are retried between waits.
//!
//! A descriptor is in the epoll set only while its socket wants something (see
//! `Sock::sync`): a paused or not yet started socket is not watched at all, so a peer's
//! hang-up cannot make the loop spin.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use super::table::{self, IN, OUT};
use super::{bind, events, tcp, udp, Kind, State};
use crate::lock;

/// The eventfd's token (socket ids are below 2^31).
const WAKE: u64 = u64::MAX;
/// Events taken per wait.
const BATCH: usize = 256;
/// How often sockets of stopped nodes are looked for.
const SWEEP: Duration = Duration::from_secs(10);

struct Poller {
    ep: OwnedFd,
    wake: OwnedFd,
}

static POLLER: LazyLock<Poller> = LazyLock::new(|| {
    let made = (|| -> io::Result<Poller> {
        // SAFETY: plain system calls; each result is checked before it is owned.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `ep` is a new descriptor nothing else owns.
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        // SAFETY: as above.
        let wake = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if wake < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `wake` is a new descriptor nothing else owns.
        let wake = unsafe { OwnedFd::from_raw_fd(wake) };
        ctl(
            ep.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            wake.as_raw_fd(),
            libc::EPOLLIN as u32,
            WAKE,
        )?;
        Ok(Poller { ep, wake })
    })();
    let p = made.unwrap_or_else(|e| panic!("socket layer: cannot make its epoll set: {e}"));
    let (ep, wake) = (p.ep.as_raw_fd(), p.wake.as_raw_fd());
    std::thread::Builder::new()
        .name("bee-socket".into())
        .spawn(move || run(ep, wake))
        .unwrap_or_else(|e| panic!("socket layer: cannot start its I/O thread: {e}"));
    p
});

fn ctl(ep: RawFd, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: `ev` is a valid epoll_event for the call; bad descriptors only make it fail.
    if unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Change what epoll watches for socket `id` on `fd` from `old` to `new` (interest bits;
/// 0 is "not in the set").
pub(crate) fn set_interest(fd: RawFd, id: i32, old: u8, new: u8) -> io::Result<()> {
    let ep = POLLER.ep.as_raw_fd();
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
    ctl(ep, op, fd, bits(new), u64::from(id as u32))
}

/// Wake the I/O thread (parked events or a timer are waiting).
pub(crate) fn wake() {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writing 8 bytes to the eventfd; a full counter only makes it fail, and the
    // thread is awake then anyway.
    unsafe { libc::write(POLLER.wake.as_raw_fd(), one.as_ptr().cast(), 8) };
}

/// What a timer does when it is due.
pub(crate) enum Due {
    /// A connect still in progress fails.
    ConnectTimeout,
    /// A listener that ran out of descriptors accepts again.
    AcceptResume,
}

static TIMERS: Mutex<Vec<(Instant, i32, Due)>> = Mutex::new(Vec::new());

/// Run `due` for socket `id` after `after`.
pub(crate) fn after(after: Duration, id: i32, due: Due) {
    lock(&TIMERS).push((Instant::now() + after, id, due));
    wake();
}

fn run(ep: RawFd, wake: RawFd) {
    let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; BATCH];
    let mut retry_wait = Duration::from_millis(1);
    let mut next_sweep = Instant::now() + SWEEP;
    loop {
        let mut timeout = if events::any_parked() {
            retry_wait
        } else {
            Duration::from_secs(1)
        };
        let now = Instant::now();
        if let Some(first) = lock(&TIMERS).iter().map(|t| t.0).min() {
            timeout = timeout.min(first.saturating_duration_since(now));
        }
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(1000);
        // SAFETY: `evs` has room for BATCH events.
        let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), BATCH as i32, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::error!(error = %e, "socket layer: epoll_wait failed");
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        for ev in &evs[..n as usize] {
            let (token, bits) = (ev.u64, ev.events);
            if token == WAKE {
                let mut b = [0u8; 8];
                // SAFETY: reading the eventfd's 8-byte counter into `b`.
                unsafe { libc::read(wake, b.as_mut_ptr().cast(), 8) };
            } else {
                ready(token as u32 as i32, bits);
            }
        }
        if events::any_parked() {
            if events::retry() {
                retry_wait = Duration::from_millis(1);
            } else {
                retry_wait = (retry_wait * 2).min(Duration::from_millis(20));
            }
        }
        fire_timers();
        if Instant::now() >= next_sweep {
            table::sweep_orphans();
            next_sweep = Instant::now() + SWEEP;
        }
    }
}

fn fire_timers() {
    let now = Instant::now();
    let due: Vec<(i32, Due)> = {
        let mut t = lock(&TIMERS);
        if t.iter().all(|x| x.0 > now) {
            return;
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
}

/// Socket `id` is ready (`bits` from epoll).
fn ready(id: i32, bits: u32) {
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
                tcp::read(&mut k);
            }
        }
        Kind::Udp4 | Kind::Udp6 => {
            if outb {
                udp::flush(&mut k);
            }
            if inb && alive(&k) {
                udp::read(&mut k);
            }
        }
        Kind::Bind => {
            if outb {
                bind::flush(&mut k);
            }
            if inb && alive(&k) {
                bind::read(&mut k);
            }
        }
    }
    if alive(&k) {
        k.sync();
    }
}

thread_local! {
    /// The I/O thread's read buffer: a read copies what it got into the block the owner
    /// receives, so one buffer serves every socket.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 64 * 1024]);
}

/// `f` with the thread's 64 KiB read buffer.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with_borrow_mut(|b| f(b))
}
