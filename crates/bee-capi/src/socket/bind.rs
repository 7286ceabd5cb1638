//! Sockets over a descriptor the process already has (`skynet_socket_bind`): skynet's
//! `socket.stdin()`, with which its `console` service reads service names from standard
//! input. As in skynet: the owner gets CONNECT "binding" and reading starts at once;
//! input arrives as DATA, its end as CLOSE (the socket stays until closed, like a TCP
//! peer's EOF); sends are written to the descriptor; closing the socket never closes the
//! descriptor (the socket holds a duplicate of it). The descriptor is made non-blocking,
//! as skynet does; one epoll cannot watch (a regular file, `/dev/null`, as skynet's
//! cannot) gives the owner an ERROR with the reason and the socket is freed.

use bytes::{Buf, Bytes};

use super::table::{flag, Sock};
use super::{ev, sys, Event, State};

/// Bytes read at most per DATA event.
const READ_CHUNK: usize = 64 * 1024;

/// A new bound socket: CONNECT "binding" and reading, or ERROR when epoll refuses the
/// descriptor.
pub(crate) fn open(k: &mut Sock) {
    k.set(flag::READING, true);
    match k.try_sync() {
        Ok(()) => k.emit(Event::text(ev::CONNECT, k.s.id, 0, b"binding")),
        Err(e) => {
            let why = format!("cannot watch the bound descriptor: {e}");
            let (id, owner) = (k.s.id, k.s.owner);
            k.emit_to(owner, Event::text(ev::ERROR, id, 0, why.as_bytes()));
            k.free();
        }
    }
}

pub(crate) fn read(k: &mut Sock, scratch: &mut [u8]) {
    let (id, fd) = (k.s.id, k.s.fd);
    let r = {
        let buf = &mut *scratch;
        sys::read(fd, &mut buf[..READ_CHUNK]).map(|n| {
            (
                n,
                (n > 0).then(|| Event::data(ev::DATA, id, n as i32, &buf[..n])),
            )
        })
    };
    match r {
        Ok((0, _)) => {
            // End of input: CLOSE; the socket stays until its owner closes it.
            k.s.state = State::HalfCloseRead;
            k.set(flag::READING, false);
            k.emit(Event::plain(ev::CLOSE, id, 0));
        }
        Ok((n, event)) => {
            k.count_read(n);
            if let Some(Some(e)) = event {
                k.emit(e);
            }
        }
        Err(e) if sys::would_block(&e) => {}
        Err(e) => {
            // As a TCP read error: ERROR, reading stops, the socket stays.
            k.set(flag::READING, false);
            k.emit(Event::text(ev::ERROR, id, 0, e.to_string().as_bytes()));
        }
    }
}

pub(crate) fn flush(k: &mut Sock) {
    let fd = k.s.fd;
    while let Some(front) = k.s.extra.as_mut().and_then(|x| x.high.front_mut()) {
        match sys::write(fd, front) {
            Ok(n) => {
                front.advance(n);
                if front.is_empty() {
                    if let Some(x) = k.s.extra.as_mut() {
                        x.high.pop_front();
                    }
                }
                k.count_write(n);
                k.unqueue(n);
            }
            Err(e) if sys::would_block(&e) => return,
            Err(e) => {
                k.emit(Event::text(ev::ERROR, k.s.id, 0, e.to_string().as_bytes()));
                return end(k);
            }
        }
    }
    k.trim();
    if k.has(flag::CLOSING) {
        end(k);
    }
}

/// Queue `data` to be written (in order); -1 when a bound is passed.
pub(crate) fn send(k: &mut Sock, data: &[u8]) -> i32 {
    if k.has(flag::CLOSING) {
        return 0;
    }
    if let Err(why) = k.room_for(data.len()) {
        k.log_overflow(&why);
        k.emit(Event::text(ev::ERROR, k.s.id, 0, why.as_bytes()));
        end(k);
        return -1;
    }
    k.extra().high.push_back(Bytes::copy_from_slice(data));
    k.enqueued(data.len());
    k.sync();
    0
}

/// Close: what is queued is still written (CLOSE now, as for TCP), then the socket ends.
pub(crate) fn close(k: &mut Sock) {
    if !k.has_queue() {
        return end(k);
    }
    k.set(flag::CLOSING, true);
    k.set(flag::READING, false);
    if k.s.state != State::HalfCloseRead {
        k.s.state = State::HalfCloseRead;
        k.emit(Event::plain(ev::CLOSE, k.s.id, 0));
    }
    k.sync();
}

/// The socket ends: freed, with a CLOSE unless one was sent (end of input, or a close
/// with output pending).
pub(crate) fn end(k: &mut Sock) {
    k.force_close(true);
}
