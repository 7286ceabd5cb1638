//! skynet's socket layer on tokio: the `skynet_socket_*` API that skynet's `socketdriver`
//! and `netpack` Lua modules and C services such as `gate` call, with skynet v1.6.0's
//! semantics — socket ids that are never reused until the counter wraps, every event
//! delivered in order to the socket's owner as a `PTYPE_SOCKET` message in skynet's
//! `struct skynet_socket_message` layout, `start`/`pause` flow control, high and low
//! priority send queues, the send-buffer warning, half-close, UDP with addresses, and
//! reading the process's own descriptors (standard input).
//!
//! Each socket is one tokio task owning the OS socket; the API functions (called from a
//! service's thread) check the slot table and hand the task a command, so a socket's
//! requests run in the order they were made. An event waits for room in the owner's
//! mailbox (reading from that socket stops meanwhile: a service that cannot keep up
//! pauses its peers instead of growing memory).
//!
//! Bounds: at most [`DEFAULT_MAX_SOCKETS`] sockets per process (env `socket_max` of the
//! node lowers it), and bytes waiting to be sent are bounded per socket
//! ([`DEFAULT_SEND_LIMIT`], env `socket_send_limit`) and for the whole process
//! ([`TOTAL_SEND_LIMIT`]): a send beyond either fails, and the socket is closed with an
//! ERROR (a peer that never reads cannot hold the node's memory).

mod bind;
mod ffi;
mod tcp;
mod udp;

pub(crate) use ffi::exports;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bee_runtime::service::WeakNode;
use bee_runtime::{Addr, CallError, Message};
use bytes::Bytes;
use tokio::sync::Notify;

use crate::{lock, Host};

/// skynet's message type of socket events.
pub const PTYPE_SOCKET: u8 = 6;

/// Socket event types (`SKYNET_SOCKET_TYPE_*`).
pub(crate) mod ev {
    pub const DATA: i32 = 1;
    pub const CONNECT: i32 = 2;
    pub const CLOSE: i32 = 3;
    pub const ACCEPT: i32 = 4;
    pub const ERROR: i32 = 5;
    pub const UDP: i32 = 6;
    pub const WARNING: i32 = 7;
}

/// Slots in the id table (an id's slot is `id mod SLOTS`), as skynet.
const SLOTS: u32 = 1 << 16;
/// Sockets open at once, at most, unless the node's env `socket_max` says fewer.
pub const DEFAULT_MAX_SOCKETS: usize = 65_535;
/// Bytes waiting to be sent on one socket, at most, unless env `socket_send_limit` says
/// otherwise.
pub const DEFAULT_SEND_LIMIT: usize = 64 << 20;
/// Bytes waiting to be sent on all sockets of the process, at most.
pub const TOTAL_SEND_LIMIT: usize = 1 << 30;
/// The longest text an event carries (skynet truncates to 128 bytes).
const MAX_TEXT: usize = 128;
/// Size of `struct skynet_socket_message` on LP64.
pub(crate) const MSG_SIZE: usize = 24;

/// Bytes queued to send on every socket of the process.
static QUEUED: AtomicUsize = AtomicUsize::new(0);

/// Slot states (the numbers of skynet's, for debugging).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum State {
    PListen = 2,
    Listen = 3,
    Connecting = 4,
    Connected = 5,
    HalfCloseRead = 6,
    HalfCloseWrite = 7,
    PAccept = 8,
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            2 => State::PListen,
            3 => State::Listen,
            4 => State::Connecting,
            6 => State::HalfCloseRead,
            7 => State::HalfCloseWrite,
            8 => State::PAccept,
            _ => State::Connected,
        }
    }
}

/// What a socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Listen,
    Tcp,
    Udp {
        v6: bool,
    },
    /// A descriptor the process already had (`skynet_socket_bind`: standard input).
    Bind,
}

/// A request for a socket's task, in the order the API calls were made.
pub(crate) enum Cmd {
    Start(Addr),
    Pause,
    Send {
        data: Bytes,
        high: bool,
    },
    /// The address is boxed, as in `UdpConnect`: every socket's command channel
    /// allocates a block of slots up front, so a small `Cmd` keeps idle sockets small.
    SendTo {
        data: Bytes,
        to: Box<SocketAddr>,
    },
    UdpConnect(Box<SocketAddr>),
    Close,
    Shutdown,
    Nodelay,
    /// A send went over a byte bound: error and close.
    Overflow(Box<str>),
}

/// One socket's entry in the table, shared by the API and the socket's task.
pub(crate) struct Shared {
    pub(crate) id: i32,
    pub(crate) kind: Kind,
    node: WeakNode,
    host: Weak<Host>,
    owner: AtomicU32,
    state: AtomicU8,
    /// `close` was asked: high-priority sends are refused from now on.
    closing: AtomicBool,
    cmds: Cmds,
    send_limit: usize,
    overflow_logged: AtomicBool,
    // Statistics for `skynet_socket_info`.
    read: AtomicU64,
    write: AtomicU64,
    rtime: AtomicU64,
    wtime: AtomicU64,
    wbuffer: AtomicI64,
    reading: AtomicBool,
    writing: AtomicBool,
    name: Mutex<String>,
}

impl Shared {
    pub(crate) fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }
    pub(crate) fn set_state(&self, s: State) {
        self.state.store(s as u8, Ordering::Release);
    }
    pub(crate) fn owner(&self) -> Addr {
        self.owner.load(Ordering::Acquire)
    }
    pub(crate) fn set_owner(&self, a: Addr) {
        self.owner.store(a, Ordering::Release);
    }
    pub(crate) fn set_reading(&self, on: bool) {
        self.reading.store(on, Ordering::Relaxed);
    }
    pub(crate) fn set_writing(&self, on: bool) {
        self.writing.store(on, Ordering::Relaxed);
    }
    pub(crate) fn set_name(&self, name: String) {
        *lock(&self.name) = name;
    }
    fn now(&self) -> u64 {
        self.host.upgrade().map_or(0, |h| h.now_cs())
    }
    pub(crate) fn count_read(&self, n: usize) {
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        self.rtime.store(self.now(), Ordering::Relaxed);
    }
    pub(crate) fn count_accept(&self) {
        self.read.fetch_add(1, Ordering::Relaxed);
        self.rtime.store(self.now(), Ordering::Relaxed);
    }
    pub(crate) fn count_write(&self, n: usize) {
        self.write.fetch_add(n as u64, Ordering::Relaxed);
        self.wtime.store(self.now(), Ordering::Relaxed);
    }
    /// `n` queued bytes left the socket (written or thrown away).
    pub(crate) fn unqueue(&self, n: usize) {
        self.wbuffer.fetch_sub(n as i64, Ordering::AcqRel);
        QUEUED.fetch_sub(n, Ordering::AcqRel);
    }
    pub(crate) fn queued(&self) -> usize {
        usize::try_from(self.wbuffer.load(Ordering::Acquire)).unwrap_or(0)
    }

    /// Hand the task a command; false if the task is gone.
    fn command(&self, cmd: Cmd) -> bool {
        let mut q = lock(&self.cmds.queue);
        if self.cmds.closed.load(Ordering::Acquire) {
            return false;
        }
        q.push_back(cmd);
        drop(q);
        self.cmds.wake.notify_one();
        true
    }

    /// Queue `data` to send (accounting it against the bounds): 0, or -1 when a bound is
    /// passed (the socket is then closed with an ERROR).
    fn queue_send(&self, data: Bytes, make: impl FnOnce(Bytes) -> Cmd) -> i32 {
        let n = data.len();
        let mine = self.queued();
        let total = QUEUED.load(Ordering::Acquire);
        if mine + n > self.send_limit || total + n > TOTAL_SEND_LIMIT {
            let why = if mine + n > self.send_limit {
                format!(
                    "send buffer of socket {} over its limit of {} bytes",
                    self.id, self.send_limit
                )
            } else {
                format!("send buffers of the process over their limit of {TOTAL_SEND_LIMIT} bytes")
            };
            if !self.overflow_logged.swap(true, Ordering::AcqRel) {
                tracing::warn!(
                    socket = self.id,
                    "{why}: the socket is closed (the peer does not read)"
                );
                self.command(Cmd::Overflow(why.into()));
            }
            return -1;
        }
        // Counted and queued under the queue's lock, so that [`free`] (which closes the
        // queue under it) never gives back bytes a send is still adding.
        let mut q = lock(&self.cmds.queue);
        if self.cmds.closed.load(Ordering::Acquire) {
            return -1;
        }
        self.wbuffer.fetch_add(n as i64, Ordering::AcqRel);
        QUEUED.fetch_add(n, Ordering::AcqRel);
        q.push_back(make(data));
        drop(q);
        self.cmds.wake.notify_one();
        0
    }

    /// Close the command queue and give back the bytes of the sends still in it.
    fn close_commands(&self) {
        let left: Vec<Cmd> = {
            let mut q = lock(&self.cmds.queue);
            self.cmds.closed.store(true, Ordering::Release);
            q.drain(..).collect()
        };
        for cmd in left {
            if let Cmd::Send { data, .. } | Cmd::SendTo { data, .. } = cmd {
                self.unqueue(data.len());
            }
        }
    }

    /// Post an event to the current owner.
    pub(crate) async fn emit(&self, e: Event) {
        let owner = self.owner();
        emit_to(&self.node, owner, e).await;
    }
}

/// One socket event: the message struct's fields, a heap buffer (DATA, UDP) or a text.
pub(crate) struct Event {
    ty: i32,
    id: i32,
    ud: i32,
    buffer: Option<HeapBuf>,
    text: Vec<u8>,
}

impl Event {
    pub(crate) fn text(ty: i32, id: i32, ud: i32, text: &[u8]) -> Event {
        let text = text[..text.len().min(MAX_TEXT)].to_vec();
        Event {
            ty,
            id,
            ud,
            buffer: None,
            text,
        }
    }
    pub(crate) fn plain(ty: i32, id: i32, ud: i32) -> Event {
        Event {
            ty,
            id,
            ud,
            buffer: None,
            text: Vec::new(),
        }
    }
    /// DATA / UDP: `bytes` in a malloc'ed block the receiver frees; `ud` as given.
    pub(crate) fn data(ty: i32, id: i32, ud: i32, bytes: &[u8]) -> Option<Event> {
        let buffer = HeapBuf::copy(bytes)?;
        Some(Event {
            ty,
            id,
            ud,
            buffer: Some(buffer),
            text: Vec::new(),
        })
    }

    /// The message payload: `struct skynet_socket_message` then the text.
    fn payload(&self) -> Bytes {
        let mut b = Vec::with_capacity(MSG_SIZE + self.text.len());
        b.extend_from_slice(&self.ty.to_ne_bytes());
        b.extend_from_slice(&self.id.to_ne_bytes());
        b.extend_from_slice(&self.ud.to_ne_bytes());
        b.extend_from_slice(&[0; 4]);
        let ptr = self.buffer.as_ref().map_or(0usize, |h| h.0);
        b.extend_from_slice(&ptr.to_ne_bytes());
        b.extend_from_slice(&self.text);
        Bytes::from(b)
    }
}

/// A malloc'ed block handed to the receiving service (it frees it with `skynet_free`);
/// freed here if it is never delivered.
pub(crate) struct HeapBuf(usize);

impl HeapBuf {
    fn copy(bytes: &[u8]) -> Option<HeapBuf> {
        // SAFETY: malloc of at least one byte; null is checked.
        let p = unsafe { libc::malloc(bytes.len().max(1)) };
        if p.is_null() {
            tracing::error!(bytes = bytes.len(), "out of memory: socket data dropped");
            return None;
        }
        // SAFETY: `p` has room for bytes.len() bytes; the regions cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.cast::<u8>(), bytes.len()) };
        Some(HeapBuf(p as usize))
    }
    /// Delivered: the receiver owns the block now.
    fn disown(self) {
        std::mem::forget(self);
    }
}

impl Drop for HeapBuf {
    fn drop(&mut self) {
        // SAFETY: the block came from malloc in `copy` and was not handed over.
        unsafe { libc::free(self.0 as *mut libc::c_void) };
    }
}

/// Post `e` to `owner`, waiting while its mailbox is full; dropped (its buffer freed) if
/// the owner or the node is gone, as skynet drops events for a dead owner.
pub(crate) async fn emit_to(node: &WeakNode, owner: Addr, e: Event) {
    let payload = e.payload();
    let msg = Message {
        source: 0,
        ptype: PTYPE_SOCKET,
        session: 0,
        payload,
    };
    let mut wait = Duration::from_millis(1);
    loop {
        let Some(n) = node.upgrade() else { return };
        match n.post(owner, msg.clone()) {
            Ok(()) => {
                if let Some(b) = e.buffer {
                    b.disown();
                }
                return;
            }
            Err(CallError::Overloaded { .. }) if !n.is_stopping() => {}
            Err(_) => return,
        }
        drop(n);
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(20));
    }
}

/// Post `e` without waiting (from an API call on a service's thread): a full mailbox
/// hands it to a task that waits for room.
fn emit_now(node: &WeakNode, owner: Addr, e: Event, rt: &tokio::runtime::Handle) {
    let node = node.clone();
    rt.spawn(async move { emit_to(&node, owner, e).await });
}

/// The slot table: ids to sockets.
struct Table {
    next: u32,
    slots: HashMap<u32, Arc<Shared>>,
}

static TABLE: std::sync::LazyLock<Mutex<Table>> = std::sync::LazyLock::new(|| {
    Mutex::new(Table {
        next: 0,
        slots: HashMap::new(),
    })
});

/// A socket's commands on their way to its task. Allocates nothing until a command
/// waits (a channel would allocate a block of slots per socket up front, which is most
/// of an idle connection's memory).
struct Cmds {
    queue: Mutex<VecDeque<Cmd>>,
    wake: Notify,
    /// The task is gone: commands are refused.
    closed: AtomicBool,
}

/// The task's end of a socket's commands; dropping it refuses further commands.
pub(crate) struct CmdRx(Arc<Shared>);

impl CmdRx {
    /// The next command, in the order they were made; waits for one. Cancel-safe (a
    /// command is only taken from the queue in the poll that returns it).
    pub(crate) async fn recv(&mut self) -> Option<Cmd> {
        loop {
            if let Some(cmd) = lock(&self.0.cmds.queue).pop_front() {
                return Some(cmd);
            }
            // A notify between the check and here is kept as a permit.
            self.0.cmds.wake.notified().await;
        }
    }
}

impl Drop for CmdRx {
    fn drop(&mut self) {
        self.0.close_commands();
    }
}

/// A new socket's entry, not yet running.
pub(crate) struct NewSlot {
    pub(crate) shared: Arc<Shared>,
    pub(crate) rx: CmdRx,
}

/// The limits a node sets through its env.
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    max_sockets: usize,
    send_limit: usize,
}

impl Limits {
    pub(crate) fn of(host: &Host) -> Limits {
        let num = |k: &str, d: usize| {
            host.env(k)
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|v| *v > 0)
                .unwrap_or(d)
        };
        Limits {
            max_sockets: num("socket_max", DEFAULT_MAX_SOCKETS),
            send_limit: num("socket_send_limit", DEFAULT_SEND_LIMIT),
        }
    }
}

/// Where a new socket's events go.
#[derive(Clone)]
pub(crate) struct Origin {
    pub(crate) node: WeakNode,
    pub(crate) host: Weak<Host>,
    pub(crate) limits: Limits,
}

impl Origin {
    pub(crate) fn of(host: &Arc<Host>) -> Origin {
        Origin {
            node: host.node.clone(),
            host: Arc::downgrade(host),
            limits: Limits::of(host),
        }
    }
}

static LIMIT_LOGGED: AtomicBool = AtomicBool::new(false);

/// Reserve an id and its slot: the next counter value whose slot is free, or None when
/// every slot is busy or the connection limit is reached.
pub(crate) fn alloc(origin: &Origin, kind: Kind, owner: Addr, state: State) -> Option<NewSlot> {
    let mut t = lock(&TABLE);
    if t.slots.len() >= origin.limits.max_sockets {
        if !LIMIT_LOGGED.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                limit = origin.limits.max_sockets,
                "socket limit reached: new sockets are refused (logged once)"
            );
        }
        return None;
    }
    for _ in 0..SLOTS {
        // The first id is 1; past 2^31-1 the counter wraps to 0.
        t.next = t.next.wrapping_add(1) & 0x7fff_ffff;
        let id = t.next;
        let slot = id % SLOTS;
        if t.slots.contains_key(&slot) {
            continue;
        }
        let shared = Arc::new(Shared {
            id: id as i32,
            kind,
            node: origin.node.clone(),
            host: origin.host.clone(),
            owner: AtomicU32::new(owner),
            state: AtomicU8::new(state as u8),
            closing: AtomicBool::new(false),
            cmds: Cmds {
                queue: Mutex::new(VecDeque::new()),
                wake: Notify::new(),
                closed: AtomicBool::new(false),
            },
            send_limit: origin.limits.send_limit,
            overflow_logged: AtomicBool::new(false),
            read: AtomicU64::new(0),
            write: AtomicU64::new(0),
            rtime: AtomicU64::new(0),
            wtime: AtomicU64::new(0),
            wbuffer: AtomicI64::new(0),
            reading: AtomicBool::new(false),
            writing: AtomicBool::new(false),
            name: Mutex::new(String::new()),
        });
        t.slots.insert(slot, shared.clone());
        if t.slots.len() < origin.limits.max_sockets / 2 {
            LIMIT_LOGGED.store(false, Ordering::Release);
        }
        let rx = CmdRx(shared.clone());
        return Some(NewSlot { shared, rx });
    }
    None
}

/// The live socket `id`.
pub(crate) fn get(id: i32) -> Option<Arc<Shared>> {
    if id < 0 {
        return None;
    }
    let slot = (id as u32) % SLOTS;
    lock(&TABLE)
        .slots
        .get(&slot)
        .filter(|s| s.id == id)
        .cloned()
}

/// Free `id`'s slot (its task ends), releasing what it still had queued.
pub(crate) fn free(shared: &Shared) {
    let slot = (shared.id as u32) % SLOTS;
    let mut t = lock(&TABLE);
    if t.slots.get(&slot).is_some_and(|s| s.id == shared.id) {
        t.slots.remove(&slot);
    }
    drop(t);
    // The sends still waiting as commands give their bytes back one by one; what is left
    // counted after that was in the task's own queues, which ended with it. (Each byte
    // is given back once: the queue is closed first, and sends count theirs under its
    // lock.)
    shared.close_commands();
    let left = shared.queued();
    if left > 0 {
        shared.unqueue(left);
    }
}

/// Every live socket, lowest slot first.
fn all() -> Vec<Arc<Shared>> {
    let t = lock(&TABLE);
    let mut v: Vec<(u32, Arc<Shared>)> = t.slots.iter().map(|(k, s)| (*k, s.clone())).collect();
    drop(t);
    v.sort_by_key(|(k, _)| *k);
    v.into_iter().map(|(_, s)| s).collect()
}

/// How many sockets are open in the process.
pub fn open_sockets() -> usize {
    lock(&TABLE).slots.len()
}

/// Encode a UDP peer address as skynet does: protocol byte (1 IPv4, 2 IPv6), the port
/// big-endian, the address bytes.
pub(crate) fn encode_udp_addr(a: &SocketAddr) -> Vec<u8> {
    let mut v = Vec::with_capacity(19);
    match a {
        SocketAddr::V4(a) => {
            v.push(1);
            v.extend_from_slice(&a.port().to_be_bytes());
            v.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            v.push(2);
            v.extend_from_slice(&a.port().to_be_bytes());
            v.extend_from_slice(&a.ip().octets());
        }
    }
    v
}

/// Decode skynet's UDP address (7 or 19 bytes).
pub(crate) fn decode_udp_addr(b: &[u8]) -> Option<SocketAddr> {
    let port = u16::from_be_bytes([*b.get(1)?, *b.get(2)?]);
    match b.first()? {
        1 if b.len() >= 7 => {
            let ip: [u8; 4] = b[3..7].try_into().ok()?;
            Some(SocketAddr::from((ip, port)))
        }
        2 if b.len() >= 19 => {
            let ip: [u8; 16] = b[3..19].try_into().ok()?;
            Some(SocketAddr::from((ip, port)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_addresses_round_trip_in_skynet_layout() {
        let a: SocketAddr = "127.0.0.1:8765".parse().unwrap();
        let e = encode_udp_addr(&a);
        assert_eq!(e, [1, 0x22, 0x3d, 127, 0, 0, 1]);
        assert_eq!(decode_udp_addr(&e), Some(a));
        let b: SocketAddr = "[::1]:1".parse().unwrap();
        let e = encode_udp_addr(&b);
        assert_eq!(e.len(), 19);
        assert_eq!(decode_udp_addr(&e), Some(b));
        assert_eq!(decode_udp_addr(&[3, 0, 0, 1, 2, 3, 4]), None);
        assert_eq!(decode_udp_addr(&[1, 0, 0]), None);
    }

    #[test]
    fn event_payload_is_skynets_struct_then_text() {
        let e = Event::text(ev::ACCEPT, 7, 9, b"1.2.3.4:5");
        let p = e.payload();
        assert_eq!(p.len(), MSG_SIZE + 9);
        assert_eq!(i32::from_ne_bytes(p[0..4].try_into().unwrap()), ev::ACCEPT);
        assert_eq!(i32::from_ne_bytes(p[4..8].try_into().unwrap()), 7);
        assert_eq!(i32::from_ne_bytes(p[8..12].try_into().unwrap()), 9);
        assert_eq!(u64::from_ne_bytes(p[16..24].try_into().unwrap()), 0);
        assert_eq!(&p[24..], b"1.2.3.4:5");
        let long = Event::text(ev::ERROR, 1, 0, &[b'x'; 300]);
        assert_eq!(long.payload().len(), MSG_SIZE + MAX_TEXT);
    }
}
