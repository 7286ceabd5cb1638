//! TCP sockets: a listener (PLISTEN → LISTEN, one ACCEPT per accepted connection), an
//! outgoing connect, and a connection (reads while started, the high and low priority
//! write queues, the send-buffer warning, close/shutdown/half-close). The socket task
//! calls [`accept`], [`connected`], [`read`] and [`flush`]; services' threads call the
//! rest through the API.

use std::net::{Shutdown, SocketAddr};
use std::os::fd::IntoRawFd;
use std::time::Duration;

use bytes::{Buf, Bytes};

use super::poll::{self, Due};
use super::table::{self, flag, Sock};
use super::{ev, sys, Event, Kind, Origin, OutData, State};

/// How long an outgoing connect may take before it fails with an ERROR.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The first read size is `64 << 0` bytes, the largest `64 << 10` = 64 KiB (skynet
/// doubles from 64 with no cap; the kernel's receive buffer caps it in practice).
const MIN_READ: usize = 64;
const MAX_SHIFT: u8 = 10;
/// The send-buffer warning starts at 1 MiB.
const WARN_START: usize = 1 << 20;
/// Connections taken per readiness of a listener.
const ACCEPTS: usize = 32;
/// How long a listener that ran out of descriptors waits before accepting again.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// Accept what is waiting (a few at a time): each connection gets a PACCEPT slot (not
/// read until started) and the listener's owner an ACCEPT with its address.
pub(crate) fn accept(k: &mut Sock) {
    for _ in 0..ACCEPTS {
        let r = sys::with_sock(k.s.fd, |l| l.accept());
        let (conn, peer) = match r {
            Ok(c) => c,
            Err(e) if sys::would_block(&e) => return,
            Err(e) => {
                // Out of descriptors and the like: tell the owner, pause a little.
                tracing::warn!(socket = k.s.id, error = %e, "accept failed");
                k.emit(Event::text(ev::ERROR, k.s.id, 0, e.to_string().as_bytes()));
                k.set(flag::BACKOFF, true);
                poll::after(&k.s.host, ACCEPT_PAUSE, k.s.id, Due::AcceptResume);
                return;
            }
        };
        k.count_read(1);
        let _ = conn.set_nonblocking(true);
        let _ = conn.set_keepalive(true);
        let Some(host) = k.s.host.upgrade() else {
            return;
        };
        let owner = k.s.owner;
        // No free slot or over the limit: the connection is closed quietly, as skynet.
        let Some(new) = table::alloc(
            &Origin::of(&host),
            Kind::Tcp,
            conn.into_raw_fd(),
            owner,
            State::PAccept,
        ) else {
            continue;
        };
        let id = new.id();
        drop(new);
        let text = peer
            .as_socket()
            .map(|p| format!("{}:{}", p.ip(), p.port()))
            .unwrap_or_default();
        k.emit(Event::text(ev::ACCEPT, k.s.id, id, text.as_bytes()));
    }
}

/// Start connecting socket `k` (in CONNECTING, no descriptor yet) to `addr`: CONNECT or
/// ERROR follows.
pub(crate) fn start_connect(k: &mut Sock, addr: SocketAddr) {
    let made = (|| -> std::io::Result<socket2::Socket> {
        let s = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM.cloexec(),
            None,
        )?;
        s.set_nonblocking(true)?;
        s.set_keepalive(true)?;
        match s.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        Ok(s)
    })();
    match made {
        Ok(s) => {
            k.s.fd = s.into_raw_fd();
            // Finished (or failed) when epoll says the socket is writable.
            k.sync();
            poll::after(&k.s.host, CONNECT_TIMEOUT, k.s.id, Due::ConnectTimeout);
        }
        Err(e) => connect_failed(k, &e.to_string()),
    }
}

/// A connect failed: ERROR with the reason, the slot is freed.
pub(crate) fn connect_failed(k: &mut Sock, why: &str) {
    let (id, owner) = (k.s.id, k.s.owner);
    k.clear_queues();
    k.emit_to(owner, Event::text(ev::ERROR, id, 0, why.as_bytes()));
    k.free();
}

/// epoll says a connecting socket is done: CONNECT with the peer's IP and reading on, or
/// ERROR.
pub(crate) fn connected(k: &mut Sock) {
    let r = sys::with_sock(k.s.fd, |s| match s.take_error() {
        Ok(Some(e)) | Err(e) => Err(e),
        Ok(None) => s.peer_addr(),
    });
    match r {
        Ok(peer) => {
            k.s.state = State::Connected;
            k.set(flag::READING, true);
            let ip = peer
                .as_socket()
                .map(|p| p.ip().to_string())
                .unwrap_or_default();
            k.emit(Event::text(ev::CONNECT, k.s.id, 0, ip.as_bytes()));
            // What was sent while connecting.
            if k.has_queue() {
                flush(k);
            }
        }
        Err(e) => connect_failed(k, &e.to_string()),
    }
}

/// `start` on a listener or connection: take it over and read.
pub(crate) fn start(k: &mut Sock, caller: bee_runtime::Addr) {
    let id = k.s.id;
    match (k.s.kind, k.s.state) {
        (Kind::Listen, State::PListen) => {
            k.set(flag::READING, true);
            k.s.state = State::Listen;
            k.s.owner = caller;
            k.emit(Event::text(ev::CONNECT, id, 0, b"start"));
        }
        (Kind::Listen, _) => k.set(flag::READING, true),
        (_, State::HalfCloseRead) => {
            k.emit_to(caller, Event::text(ev::ERROR, id, 0, b"socket closed"));
        }
        (_, State::PAccept) => {
            k.set(flag::READING, true);
            k.s.state = State::Connected;
            k.s.owner = caller;
            k.emit(Event::text(ev::CONNECT, id, 0, b"start"));
        }
        (_, State::Connected) => {
            k.set(flag::READING, true);
            k.s.owner = caller;
            k.emit(Event::text(ev::CONNECT, id, 0, b"transfer"));
        }
        _ => k.set(flag::READING, true),
    }
    k.sync();
}

/// Read once (the size adapts to what came, as skynet's): DATA, or the end of input.
pub(crate) fn read(k: &mut Sock, scratch: &mut [u8]) {
    let want = MIN_READ << k.s.read_shift;
    let (id, fd) = (k.s.id, k.s.fd);
    // Read into the thread's buffer and copy what came into the block the owner
    // receives: an idle connection holds no read buffer of its own.
    let r = {
        let buf = &mut *scratch;
        sys::read(fd, &mut buf[..want]).map(|n| {
            (
                n,
                (n > 0).then(|| Event::data(ev::DATA, id, n as i32, &buf[..n])),
            )
        })
    };
    match r {
        Ok((0, _)) => eof(k),
        Ok((n, event)) => {
            if n == want {
                k.s.read_shift = (k.s.read_shift + 1).min(MAX_SHIFT);
            } else if k.s.read_shift > 0 && n * 2 < want {
                k.s.read_shift -= 1;
            }
            k.count_read(n);
            if let Some(Some(e)) = event {
                k.emit(e);
            }
        }
        Err(e) if sys::would_block(&e) => {}
        Err(e) => read_error(k, e),
    }
}

fn eof(k: &mut Sock) {
    if k.has(flag::CLOSING) {
        k.set(flag::READING, false);
        if !k.has_queue() {
            k.force_close(false);
        }
        return;
    }
    match k.s.state {
        State::HalfCloseRead => {}
        State::HalfCloseWrite => k.force_close(true),
        _ => {
            k.s.state = State::HalfCloseRead;
            k.set(flag::READING, false);
            k.emit(Event::plain(ev::CLOSE, k.s.id, 0));
        }
    }
}

/// A read error: ERROR, the slot stays (skynet's Lua answers with shutdown). Reading
/// stops so a broken socket does not spin.
fn read_error(k: &mut Sock, e: std::io::Error) {
    k.set(flag::READING, false);
    k.emit(Event::text(ev::ERROR, k.s.id, 0, e.to_string().as_bytes()));
}

fn write_error(k: &mut Sock, e: std::io::Error) {
    if k.has(flag::CLOSING) || k.s.state == State::HalfCloseRead {
        k.force_close(false);
        return;
    }
    if k.s.state == State::HalfCloseWrite {
        return;
    }
    k.s.state = State::HalfCloseWrite;
    let _ = sys::with_sock(k.s.fd, |s| s.shutdown(Shutdown::Write));
    k.clear_queues();
    k.emit(Event::text(ev::ERROR, k.s.id, 0, e.to_string().as_bytes()));
}

/// Write the high list, then the low one; a partly written low buffer moves to the high
/// list so it finishes before anything else.
pub(crate) fn flush(k: &mut Sock) {
    let fd = k.s.fd;
    while let Some(x) = k.s.extra.as_mut() {
        let from_low = x.high.is_empty();
        let front = if from_low {
            x.low.front_mut()
        } else {
            x.high.front_mut()
        };
        let Some(front) = front else { break };
        match sys::send(fd, front) {
            Ok(n) => {
                let whole = n == front.len();
                front.advance(n);
                if !whole && from_low {
                    if let Some(b) = x.low.pop_front() {
                        x.high.push_back(b);
                    }
                } else if whole && from_low {
                    x.low.pop_front();
                } else if whole {
                    x.high.pop_front();
                }
                k.count_write(n);
                k.unqueue(n);
                if !whole {
                    // The kernel's buffer is full: go on when epoll says there is room.
                    k.set(flag::WAIT_OUT, true);
                    return;
                }
            }
            Err(e) if sys::would_block(&e) => {
                k.set(flag::WAIT_OUT, true);
                return;
            }
            Err(e) => return write_error(k, e),
        }
    }
    k.set(flag::WAIT_OUT, false);
    if k.s.pending == 0 {
        drained(k);
    }
}

/// The queues are empty.
fn drained(k: &mut Sock) {
    k.trim();
    if k.has(flag::CLOSING) {
        k.force_close(false);
        return;
    }
    if k.s.warn_shift > 0 {
        k.s.warn_shift = 0;
        k.emit(Event::plain(ev::WARNING, k.s.id, 0));
    }
}

/// Send `data` (high or low priority): handed to the socket task, which writes it (on
/// another worker while this service goes on), or queued behind what waits already.
/// 0, or -1 when the bytes are refused (a bound passed: the socket is then closed with
/// an ERROR).
pub(crate) fn send(k: &mut Sock, data: OutData, high: bool) -> i32 {
    if k.s.kind == Kind::Listen {
        tracing::warn!(target: "skynet", socket = k.s.id, "socket-server: write to listen fd {}", k.s.id);
        return 0;
    }
    if k.has(flag::CLOSING) {
        // A closing socket refuses high-priority sends and drops low-priority ones.
        return if high { -1 } else { 0 };
    }
    let st = k.s.state;
    if matches!(st, State::PAccept | State::HalfCloseWrite) {
        return 0;
    }
    let n = data.len();
    if let Err(why) = k.room_for(n) {
        k.log_overflow(&why);
        k.emit(Event::text(ev::ERROR, k.s.id, 0, why.as_bytes()));
        k.force_close(true);
        return -1;
    }
    k.enqueued(n);
    let behind_backlog =
        k.s.pending == 0 && (st == State::Connecting || k.has(flag::WAIT_OUT) || k.has_backlog());
    if behind_backlog {
        queue(k, Bytes::copy_from_slice(data.as_slice()), high);
    } else {
        k.s.pending += 1;
        poll::send_soon(&k.s.host, k.s.id, data, high);
    }
    check_warning(k);
    0
}

/// Put `data` in the socket's own queues: the high list when it is high priority or the
/// queues are empty, else the low list.
fn queue(k: &mut Sock, data: Bytes, high: bool) {
    let first = !k.has_backlog();
    let x = k.extra();
    if first || high {
        x.high.push_back(data);
    } else {
        x.low.push_back(data);
    }
}

/// The socket task takes a send: written now when nothing waits before it, else queued.
pub(crate) fn take_send(k: &mut Sock, data: OutData, high: bool) {
    k.s.pending -= 1;
    let bytes = data.as_slice();
    if k.s.state == State::HalfCloseWrite || k.s.kind != Kind::Tcp {
        k.unqueue(bytes.len());
    } else if k.has(flag::WAIT_OUT) || k.has_backlog() {
        queue(k, Bytes::copy_from_slice(bytes), high);
    } else {
        let mut off = 0;
        while off < bytes.len() {
            match sys::send(k.s.fd, &bytes[off..]) {
                Ok(n) => {
                    k.count_write(n);
                    k.unqueue(n);
                    off += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if sys::would_block(&e) => break,
                Err(e) => {
                    k.unqueue(bytes.len() - off);
                    return write_error(k, e);
                }
            }
        }
        if off < bytes.len() {
            // The kernel's buffer is full: the rest waits for room.
            queue(k, Bytes::copy_from_slice(&bytes[off..]), true);
            k.set(flag::WAIT_OUT, true);
            return;
        }
    }
    if !k.has_queue() {
        drained(k);
    }
}

/// WARNING with the queued KiB each time the queue passes 1 MiB, 2 MiB, 4 MiB…
fn check_warning(k: &mut Sock) {
    let size = k.s.queued as usize;
    let level = if k.s.warn_shift == 0 {
        0
    } else {
        WARN_START << k.s.warn_shift
    };
    if size >= WARN_START && size >= level {
        k.s.warn_shift = if k.s.warn_shift == 0 {
            1
        } else {
            k.s.warn_shift + 1
        };
        let kib = size.div_ceil(1024);
        k.emit(Event::plain(
            ev::WARNING,
            k.s.id,
            i32::try_from(kib).unwrap_or(i32::MAX),
        ));
    }
}

/// Graceful close: what is queued is still sent, then the socket is freed.
pub(crate) fn close(k: &mut Sock) {
    k.set(flag::CLOSING, true);
    if k.s.kind == Kind::Listen || matches!(k.s.state, State::PAccept | State::Connecting) {
        return k.force_close(true);
    }
    if !k.has_queue() || k.s.state == State::HalfCloseWrite {
        return k.force_close(true);
    }
    if k.s.state != State::HalfCloseRead {
        k.s.state = State::HalfCloseRead;
        k.set(flag::READING, false);
        let _ = sys::with_sock(k.s.fd, |s| s.shutdown(Shutdown::Read));
        k.emit(Event::plain(ev::CLOSE, k.s.id, 0));
    }
    k.sync();
}

/// TCP_NODELAY on.
pub(crate) fn nodelay(k: &Sock) {
    if k.s.kind == Kind::Tcp && k.s.fd >= 0 {
        let _ = sys::with_sock(k.s.fd, |s| s.set_tcp_nodelay(true));
    }
}
