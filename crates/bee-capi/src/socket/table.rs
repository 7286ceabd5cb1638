//! The socket table: one fixed slot per socket id (an id's slot is `id mod 65,536`),
//! allocated and written once when the first socket opens, as skynet's is. A socket owns
//! no heap block while it is idle: a queue ([`Extra`]) exists only while bytes wait to
//! be sent or a UDP socket has a default peer.
//!
//! A slot's lock serialises everything done to its socket — the API calls made on
//! services' threads and the socket task's reads and writes — so a socket's requests and
//! events keep the order they were made in. Code holds at most one slot's lock, except
//! an accept, which takes the new (free) slot's while it holds the listener's.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard, Weak};

use bee_runtime::Addr;
use bytes::Bytes;

use super::{events, poll, sys, Event, Kind, Origin, State};
use crate::{lock, Host};

/// Slots in the table.
pub(crate) const SLOTS: u32 = 1 << 16;

/// Flag bits of [`Inner::flags`].
pub(crate) mod flag {
    /// Reading (accepting) is on: `start` was called and no `pause` since.
    pub const READING: u8 = 1;
    /// `close` was asked: high-priority sends are refused from now on.
    pub const CLOSING: u8 = 2;
    /// The over-the-bound warning was logged for this socket.
    pub const OVERFLOW_LOGGED: u8 = 4;
    /// Events of this socket wait for room in the owner's mailbox: reading is held.
    pub const HELD: u8 = 8;
    /// Accepting failed (out of descriptors): held until a short pause has passed.
    pub const BACKOFF: u8 = 16;
    /// The kernel's send buffer was full: epoll watches for room to write the queue.
    pub const WAIT_OUT: u8 = 32;
}

/// Interest bits of [`Inner::interest`] (what epoll watches for the socket).
pub(crate) const IN: u8 = 1;
pub(crate) const OUT: u8 = 2;

/// One slot.
pub(crate) struct Slot {
    inner: Mutex<Inner>,
    /// Events of the socket in this slot waiting for room in their owner's mailbox
    /// ([`events`]); changed under the parked list's lock.
    pub(crate) parked: AtomicU32,
}

/// A socket's state, under its slot's lock.
pub(crate) struct Inner {
    pub(crate) id: i32,
    pub(crate) fd: RawFd,
    pub(crate) owner: Addr,
    pub(crate) kind: Kind,
    pub(crate) state: State,
    pub(crate) flags: u8,
    /// What epoll watches now: 0 when the descriptor is not in epoll.
    pub(crate) interest: u8,
    /// The next read's size is `64 << read_shift` bytes.
    pub(crate) read_shift: u8,
    /// The next send-buffer warning is at `1 MiB << warn_shift` (0: none given yet).
    pub(crate) warn_shift: u8,
    /// Bytes waiting to be sent, at most.
    pub(crate) send_limit: u32,
    // Statistics for `skynet_socket_info` (times in hundredths of a second).
    pub(crate) rtime: u32,
    pub(crate) wtime: u32,
    pub(crate) read: u64,
    pub(crate) write: u64,
    /// Bytes waiting to be sent: in the queues, and in sends handed to the socket task
    /// that it has not taken yet.
    pub(crate) queued: u64,
    /// Sends handed to the socket task that it has not taken yet (they are older than
    /// anything sent after them, so later sends go the same way).
    pub(crate) pending: u32,
    pub(crate) host: Weak<Host>,
    pub(crate) extra: Option<Box<Extra>>,
}

/// What only some sockets need, some of the time.
#[derive(Default)]
pub(crate) struct Extra {
    /// skynet's two send lists.
    pub(crate) high: VecDeque<Bytes>,
    pub(crate) low: VecDeque<Bytes>,
    /// UDP datagrams that could not be sent yet.
    pub(crate) datagrams: VecDeque<(Bytes, SocketAddr)>,
    /// A UDP socket's default destination (`udp_connect`).
    pub(crate) peer: Option<SocketAddr>,
}

impl Extra {
    pub(crate) fn is_empty(&self) -> bool {
        self.high.is_empty() && self.low.is_empty() && self.datagrams.is_empty()
    }
}

const FREE: Inner = Inner {
    id: -1,
    fd: -1,
    owner: 0,
    kind: Kind::Free,
    state: State::Free,
    flags: 0,
    interest: 0,
    read_shift: 0,
    warn_shift: 0,
    send_limit: 0,
    rtime: 0,
    wtime: 0,
    read: 0,
    write: 0,
    queued: 0,
    pending: 0,
    host: Weak::new(),
    extra: None,
};

/// Every slot, written when the first socket opens (the memory is the process's from then
/// on, as skynet's table is: a connection adds nothing to it).
static TABLE: LazyLock<Box<[Slot]>> = LazyLock::new(|| {
    (0..SLOTS)
        .map(|_| Slot {
            inner: Mutex::new(FREE),
            parked: AtomicU32::new(0),
        })
        .collect()
});

/// The id counter (the last id given).
static NEXT: Mutex<u32> = Mutex::new(0);
/// Sockets open now.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Bytes queued to send on every socket of the process.
static QUEUED: AtomicUsize = AtomicUsize::new(0);
static LIMIT_LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub(crate) fn live() -> usize {
    LIVE.load(Ordering::Acquire)
}

fn slot_of(id: i32) -> &'static Slot {
    &TABLE[(id as u32 % SLOTS) as usize]
}

#[cfg(test)]
pub(crate) fn slot_for_test(id: i32) -> &'static Slot {
    slot_of(id)
}

/// A socket under its slot's lock: what every operation works on.
pub(crate) struct Sock {
    pub(crate) slot: &'static Slot,
    pub(crate) s: MutexGuard<'static, Inner>,
}

/// The live socket `id`, locked.
pub(crate) fn lock_id(id: i32) -> Option<Sock> {
    if id < 0 {
        return None;
    }
    let slot = slot_of(id);
    let s = lock(&slot.inner);
    (s.id == id && s.kind != Kind::Free).then_some(Sock { slot, s })
}

/// Take a slot for a new socket on `fd` (which it owns from now on: closed with the slot,
/// or at once when there is no free slot or the limit is reached, as skynet closes a
/// connection it cannot take).
pub(crate) fn alloc(
    origin: &Origin,
    kind: Kind,
    fd: RawFd,
    owner: Addr,
    state: State,
) -> Option<Sock> {
    let max = origin.limits.max_sockets;
    if LIVE.load(Ordering::Acquire) >= max {
        if !LIMIT_LOGGED.swap(true, std::sync::atomic::Ordering::AcqRel) {
            tracing::warn!(
                limit = max,
                "socket limit reached: new sockets are refused (logged once)"
            );
        }
        sys::close(fd);
        return None;
    }
    let mut next = lock(&NEXT);
    for _ in 0..SLOTS {
        // The first id is 1; past 2^31-1 the counter wraps to 0.
        *next = next.wrapping_add(1) & 0x7fff_ffff;
        let id = *next as i32;
        let slot = slot_of(id);
        // A slot locked by someone else is taken as busy: its lock may be held by the
        // caller (a listener accepting), and a free slot is never held for long.
        let mut s = match slot.inner.try_lock() {
            Ok(s) => s,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => continue,
        };
        if s.kind != Kind::Free {
            continue;
        }
        drop(next);
        *s = Inner {
            id,
            fd,
            owner,
            kind,
            state,
            send_limit: u32::try_from(origin.limits.send_limit).unwrap_or(u32::MAX),
            host: origin.host.clone(),
            ..FREE
        };
        if LIVE.fetch_add(1, Ordering::AcqRel) + 1 < max / 2 {
            LIMIT_LOGGED.store(false, Ordering::Release);
        }
        return Some(Sock { slot, s });
    }
    sys::close(fd);
    None
}

impl Sock {
    pub(crate) fn id(&self) -> i32 {
        self.s.id
    }
    pub(crate) fn has(&self, f: u8) -> bool {
        self.s.flags & f != 0
    }
    pub(crate) fn set(&mut self, f: u8, on: bool) {
        if on {
            self.s.flags |= f;
        } else {
            self.s.flags &= !f;
        }
    }
    /// The socket's queues, made when first needed.
    pub(crate) fn extra(&mut self) -> &mut Extra {
        self.s.extra.get_or_insert_with(Box::default)
    }
    /// Bytes wait: in the queues, or in sends the socket task has not taken yet.
    pub(crate) fn has_queue(&self) -> bool {
        self.s.pending > 0 || self.has_backlog()
    }
    /// Bytes wait in the socket's own queues.
    pub(crate) fn has_backlog(&self) -> bool {
        self.s.extra.as_ref().is_some_and(|e| !e.is_empty())
    }
    /// Drop the queues once empty (a drained backlog gives its memory back).
    pub(crate) fn trim(&mut self) {
        if self
            .s
            .extra
            .as_ref()
            .is_some_and(|e| e.is_empty() && e.peer.is_none())
        {
            self.s.extra = None;
        }
    }

    fn now(&self) -> u32 {
        self.s
            .host
            .upgrade()
            .map_or(0, |h| u32::try_from(h.now_cs()).unwrap_or(u32::MAX))
    }
    pub(crate) fn count_read(&mut self, n: usize) {
        self.s.read += n as u64;
        self.s.rtime = self.now();
    }
    pub(crate) fn count_write(&mut self, n: usize) {
        self.s.write += n as u64;
        self.s.wtime = self.now();
    }

    /// Whether `n` more bytes may be queued; the text of the bound passed if not.
    pub(crate) fn room_for(&self, n: usize) -> Result<(), String> {
        if self.s.queued as usize + n > self.s.send_limit as usize {
            return Err(format!(
                "send buffer of socket {} over its limit of {} bytes",
                self.s.id, self.s.send_limit
            ));
        }
        if QUEUED.load(Ordering::Acquire) + n > super::TOTAL_SEND_LIMIT {
            return Err(format!(
                "send buffers of the process over their limit of {} bytes",
                super::TOTAL_SEND_LIMIT
            ));
        }
        Ok(())
    }
    /// Log a passed bound once for this socket.
    pub(crate) fn log_overflow(&mut self, why: &str) {
        if !self.has(flag::OVERFLOW_LOGGED) {
            self.set(flag::OVERFLOW_LOGGED, true);
            tracing::warn!(
                socket = self.s.id,
                "{why}: the socket is closed (the peer does not read)"
            );
        }
    }
    /// `n` bytes were queued.
    pub(crate) fn enqueued(&mut self, n: usize) {
        self.s.queued += n as u64;
        QUEUED.fetch_add(n, Ordering::AcqRel);
    }
    /// `n` queued bytes left the socket (written or thrown away).
    pub(crate) fn unqueue(&mut self, n: usize) {
        self.s.queued -= n as u64;
        QUEUED.fetch_sub(n, Ordering::AcqRel);
    }
    /// Throw away everything in the socket's own queues (sends the socket task has not
    /// taken yet are thrown away when it takes them).
    pub(crate) fn clear_queues(&mut self) {
        let mut n = 0;
        if let Some(e) = self.s.extra.as_mut() {
            n += e
                .high
                .iter()
                .chain(e.low.iter())
                .map(Bytes::len)
                .sum::<usize>();
            n += e.datagrams.iter().map(|d| d.0.len()).sum::<usize>();
            e.high.clear();
            e.low.clear();
            e.datagrams.clear();
        }
        self.unqueue(n);
        self.trim();
    }

    /// Post `e` to the socket's owner (parked if the mailbox is full).
    pub(crate) fn emit(&mut self, e: Event) {
        let owner = self.s.owner;
        self.emit_to(owner, e);
    }
    /// Post `e` to `owner` (parked if the mailbox is full: reading from this socket is
    /// then held until it is delivered).
    pub(crate) fn emit_to(&mut self, owner: Addr, e: Event) {
        if events::deliver(self.slot, self.s.id, &self.s.host, owner, e) {
            self.hold();
        }
    }
    /// Events wait for the owner: stop reading until they are delivered.
    fn hold(&mut self) {
        if !self.has(flag::HELD) {
            self.set(flag::HELD, true);
            self.sync();
        }
    }

    /// What epoll should watch for this socket now.
    fn want(&self) -> u8 {
        let s = &self.s;
        let reading = s.flags & flag::READING != 0 && s.flags & (flag::HELD | flag::BACKOFF) == 0;
        let queue = self.has_backlog();
        if s.fd < 0 {
            // A connect still resolving its host name.
            return 0;
        }
        match s.kind {
            Kind::Free => 0,
            Kind::Listen => u8::from(reading && s.state == State::Listen) * IN,
            Kind::Tcp | Kind::Bind => match s.state {
                State::Connecting => OUT,
                State::PAccept | State::Free => 0,
                st => {
                    let r = reading && s.flags & flag::CLOSING == 0 && st != State::HalfCloseRead;
                    // A TCP queue is written by the socket task when a send asks for it;
                    // epoll watches for room only once the kernel's buffer was full.
                    let w = queue
                        && st != State::HalfCloseWrite
                        && (s.kind == Kind::Bind || s.flags & flag::WAIT_OUT != 0);
                    (u8::from(r) * IN) | (u8::from(w) * OUT)
                }
            },
            Kind::Udp4 | Kind::Udp6 => (u8::from(reading) * IN) | (u8::from(queue) * OUT),
        }
    }

    /// Make epoll watch what the socket's state asks for. An error (a descriptor epoll
    /// refuses) is returned; the interest is then unchanged.
    pub(crate) fn try_sync(&mut self) -> std::io::Result<()> {
        let want = self.want();
        if want != self.s.interest {
            poll::set_interest(&self.s.host, self.s.fd, self.s.id, self.s.interest, want)?;
            self.s.interest = want;
        }
        Ok(())
    }
    /// [`Self::try_sync`], logging an error.
    pub(crate) fn sync(&mut self) {
        if let Err(e) = self.try_sync() {
            tracing::warn!(socket = self.s.id, error = %e, "socket: epoll refused a change");
        }
    }

    /// Free the slot: the descriptor leaves epoll and is closed, what was queued is
    /// given back. Events already parked are still delivered.
    pub(crate) fn free(&mut self) {
        if self.s.interest != 0 {
            let _ = poll::set_interest(&self.s.host, self.s.fd, self.s.id, self.s.interest, 0);
        }
        sys::close(self.s.fd);
        self.clear_queues();
        // Sends not taken yet: their bytes are given back now (the task drops them).
        let left = self.s.queued as usize;
        self.unqueue(left);
        *self.s = FREE;
        LIVE.fetch_sub(1, Ordering::AcqRel);
    }

    /// Close now, throwing away what is queued; CLOSE unless one was sent already (the
    /// socket was half-closed for reading).
    pub(crate) fn force_close(&mut self, event: bool) {
        let already = self.s.state == State::HalfCloseRead;
        let (id, owner, host) = (self.s.id, self.s.owner, self.s.host.clone());
        self.free();
        if event && !already {
            events::deliver(
                self.slot,
                id,
                &host,
                owner,
                Event::plain(super::ev::CLOSE, id, 0),
            );
        }
    }
}

/// Reading may go on for the socket in `id`'s slot: its parked events were delivered.
pub(crate) fn release(id: i32) {
    if let Some(mut k) = lock_id(id) {
        if k.slot.parked.load(Ordering::Acquire) == 0 && k.has(flag::HELD) {
            k.set(flag::HELD, false);
            k.sync();
        }
    }
}

/// Every live socket, lowest slot first, as `f` sees it under its lock.
pub(crate) fn each(mut f: impl FnMut(&Sock)) {
    if LIVE.load(Ordering::Acquire) == 0 {
        return;
    }
    for slot in TABLE.iter() {
        let s = lock(&slot.inner);
        if s.kind != Kind::Free {
            f(&Sock { slot, s });
        }
    }
}

/// Close every socket whose node is gone (no one can read its events).
pub(crate) fn sweep_orphans() {
    if LIVE.load(Ordering::Acquire) == 0 {
        return;
    }
    for slot in TABLE.iter() {
        let mut k = Sock {
            slot,
            s: lock(&slot.inner),
        };
        if k.s.kind != Kind::Free && k.s.host.strong_count() == 0 {
            tracing::debug!(socket = k.s.id, "socket of a stopped node closed");
            k.free();
        }
    }
}
