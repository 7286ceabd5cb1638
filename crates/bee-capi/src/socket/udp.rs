//! UDP sockets: every datagram received becomes one UDP event (payload, then the
//! sender's address in skynet's 7- or 19-byte form); a send goes out at once to the
//! datagram's own address or the default one set by `udp_connect`, and waits in the
//! socket's queue only while the kernel's buffer is full.

use std::net::SocketAddr;

use bytes::Bytes;

use super::table::{flag, Sock};
use super::{encode_udp_addr, ev, sys, Event, Kind};

/// Datagrams read per readiness.
const READS: usize = 16;

/// Read what datagrams wait (a few at a time).
pub(crate) fn read(k: &mut Sock, scratch: &mut [u8]) {
    let v6 = k.s.kind == Kind::Udp6;
    for _ in 0..READS {
        let (id, fd) = (k.s.id, k.s.fd);
        let r = {
            let buf = &mut *scratch;
            // SAFETY: `buf` is initialised bytes; recv_from only writes into it.
            let uninit = unsafe {
                &mut *(std::ptr::from_mut::<[u8]>(&mut buf[..65_535])
                    as *mut [std::mem::MaybeUninit<u8>])
            };
            sys::with_sock(fd, |s| s.recv_from(uninit)).map(|(n, from)| {
                let from = from.as_socket();
                let event = from.filter(|f| f.is_ipv6() == v6).and_then(|f| {
                    let mut data = Vec::with_capacity(n + 19);
                    data.extend_from_slice(&buf[..n]);
                    encode_udp_addr(&f, &mut data);
                    Event::data(ev::UDP, id, n as i32, &data)
                });
                (n, event)
            })
        };
        match r {
            Ok((n, event)) => {
                if let Some(e) = event {
                    k.count_read(n);
                    k.emit(e);
                    if k.has(flag::HELD) {
                        return;
                    }
                }
            }
            Err(e) if sys::would_block(&e) => return,
            // ICMP port unreachable from an earlier send: not an error of this socket.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => {
                let (id, owner) = (k.s.id, k.s.owner);
                k.emit_to(
                    owner,
                    Event::text(ev::ERROR, id, 0, e.to_string().as_bytes()),
                );
                k.free();
                return;
            }
        }
    }
}

fn send_now(k: &mut Sock, data: &[u8], to: SocketAddr) -> std::io::Result<()> {
    let n = sys::with_sock(k.s.fd, |s| s.send_to(data, &to.into()))?;
    k.count_write(n);
    Ok(())
}

/// Send one datagram to `to`, or to the default peer: 0, or -1 when it is refused (a
/// bound passed: the socket is closed with an ERROR).
pub(crate) fn send(k: &mut Sock, data: &[u8], to: Option<SocketAddr>) -> i32 {
    let Some(to) = to.or_else(|| k.s.extra.as_ref().and_then(|x| x.peer)) else {
        return 0;
    };
    if to.is_ipv6() != (k.s.kind == Kind::Udp6) {
        tracing::warn!(
            socket = k.s.id,
            "udp send to an address of the other protocol: dropped"
        );
        return 0;
    }
    if !k.has_queue() {
        match send_now(k, data, to) {
            Ok(()) => return 0,
            Err(e) if sys::would_block(&e) => {}
            Err(e) => {
                tracing::warn!(socket = k.s.id, error = %e, "udp send failed: datagram dropped");
                return 0;
            }
        }
    }
    if let Err(why) = k.room_for(data.len()) {
        k.log_overflow(&why);
        let (id, owner) = (k.s.id, k.s.owner);
        k.emit_to(owner, Event::text(ev::ERROR, id, 0, why.as_bytes()));
        k.force_close(true);
        return -1;
    }
    k.extra()
        .datagrams
        .push_back((Bytes::copy_from_slice(data), to));
    k.enqueued(data.len());
    k.sync();
    0
}

/// Send what waited, in order.
pub(crate) fn flush(k: &mut Sock) {
    while let Some((data, to)) = k.s.extra.as_mut().and_then(|x| x.datagrams.pop_front()) {
        match send_now(k, &data, to) {
            Ok(()) => k.unqueue(data.len()),
            Err(e) if sys::would_block(&e) => {
                if let Some(x) = k.s.extra.as_mut() {
                    x.datagrams.push_front((data, to));
                }
                return;
            }
            Err(e) => {
                k.unqueue(data.len());
                tracing::warn!(socket = k.s.id, error = %e, "udp send failed: datagram dropped");
            }
        }
    }
    k.trim();
}

/// `udp_connect`: the default destination.
pub(crate) fn connect(k: &mut Sock, to: SocketAddr) {
    if to.is_ipv6() != (k.s.kind == Kind::Udp6) {
        k.emit(Event::text(ev::ERROR, k.s.id, 0, b"protocol mismatch"));
    } else {
        k.extra().peer = Some(to);
    }
}

/// `start`: take the socket over (CONNECT "transfer") and read.
pub(crate) fn start(k: &mut Sock, caller: bee_runtime::Addr) {
    k.set(flag::READING, true);
    k.s.owner = caller;
    k.emit(Event::text(ev::CONNECT, k.s.id, 0, b"transfer"));
    k.sync();
}
