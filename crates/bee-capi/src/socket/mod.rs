//! skynet's socket layer on bee: the `skynet_socket_*` API that skynet's `socketdriver`
//! and `netpack` Lua modules and C services such as `gate` call, with skynet v1.6.0's
//! semantics — socket ids that are never reused until the counter wraps, every event
//! delivered in order to the socket's owner as a `PTYPE_SOCKET` message in skynet's
//! `struct skynet_socket_message` layout, `start`/`pause` flow control, high and low
//! priority send queues, the send-buffer warning, half-close, UDP with addresses, and
//! reading the process's own descriptors (standard input).
//!
//! The design is skynet's, because it is what makes ten thousand idle players cheap:
//! - [`table`]: one fixed slot per socket (`id mod 65,536`), written once when the first
//!   socket opens. An idle connection owns no heap block: its slot, its descriptor and
//!   the kernel's epoll entry are all it has.
//! - [`poll`]: one epoll set per node (level-triggered), driven by one task on the
//!   node's runtime, does the reads, accepts, connect completions and the writes that
//!   had to wait.
//! - The API calls (on services' threads) act on the socket at once under its slot's
//!   lock: a send is written straight away when nothing waits before it, a start or a
//!   pause changes what epoll watches. One lock per socket keeps its requests and events
//!   in the order they were made.
//!
//! An event waits for room in the owner's mailbox ([`events`]): it is parked, and reading
//! from that socket stops until its parked events are delivered, so a service that cannot
//! keep up pauses its peers instead of growing memory.
//!
//! Bounds: at most [`DEFAULT_MAX_SOCKETS`] sockets per process (env `socket_max` of the
//! node lowers it), and bytes waiting to be sent are bounded per socket
//! ([`DEFAULT_SEND_LIMIT`], env `socket_send_limit`) and for the whole process
//! ([`TOTAL_SEND_LIMIT`]): a send beyond either fails, and the socket is closed with an
//! ERROR (a peer that never reads cannot hold the node's memory).

mod bind;
mod events;
mod ffi;
mod poll;
mod sys;
mod table;
mod tcp;
mod udp;

pub(crate) use ffi::exports;

use std::net::SocketAddr;
use std::sync::Weak;

use crate::Host;

pub(crate) use events::Event;
pub(crate) use poll::Poller;

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

/// Sockets open at once, at most, unless the node's env `socket_max` says fewer.
pub const DEFAULT_MAX_SOCKETS: usize = 65_535;
/// Bytes waiting to be sent on one socket, at most, unless env `socket_send_limit` says
/// otherwise.
pub const DEFAULT_SEND_LIMIT: usize = 64 << 20;
/// Bytes waiting to be sent on all sockets of the process, at most.
pub const TOTAL_SEND_LIMIT: usize = 1 << 30;

/// Slot states (the numbers of skynet's, for debugging).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum State {
    Free = 0,
    PListen = 2,
    Listen = 3,
    Connecting = 4,
    Connected = 5,
    HalfCloseRead = 6,
    HalfCloseWrite = 7,
    PAccept = 8,
}

/// What a socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// The slot holds no socket.
    Free,
    Listen,
    Tcp,
    Udp4,
    Udp6,
    /// A descriptor the process already had (`skynet_socket_bind`: standard input).
    Bind,
}

impl Kind {
    pub(crate) fn is_udp(self) -> bool {
        matches!(self, Kind::Udp4 | Kind::Udp6)
    }
}

/// The limits a node sets through its env.
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_sockets: usize,
    pub(crate) send_limit: usize,
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

/// Whose a new socket is: the node its events go to and that node's limits.
#[derive(Clone)]
pub(crate) struct Origin {
    pub(crate) host: Weak<Host>,
    pub(crate) limits: Limits,
}

impl Origin {
    pub(crate) fn of(host: &std::sync::Arc<Host>) -> Origin {
        Origin {
            host: std::sync::Arc::downgrade(host),
            limits: Limits::of(host),
        }
    }
}

/// The bytes of one send: skynet's MEMORY buffer, taken over as it is (freed once
/// written, as skynet's socket layer frees it), or a copy.
pub(crate) enum OutData {
    /// A block from malloc, freed when this is dropped.
    Heap {
        ptr: usize,
        len: usize,
    },
    Copied(bytes::Bytes),
}

impl OutData {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            OutData::Heap { len: 0, .. } => &[],
            // SAFETY: the block holds `len` readable bytes and lives as long as `self`.
            OutData::Heap { ptr, len } => unsafe {
                std::slice::from_raw_parts(*ptr as *const u8, *len)
            },
            OutData::Copied(b) => b,
        }
    }
    pub(crate) fn len(&self) -> usize {
        self.as_slice().len()
    }
}

impl Drop for OutData {
    fn drop(&mut self) {
        if let OutData::Heap { ptr, .. } = *self {
            // SAFETY: a MEMORY send buffer is a malloc'ed block handed over with the
            // send; this is its only owner and frees it once.
            unsafe { libc::free(ptr as *mut libc::c_void) };
        }
    }
}

/// How many sockets are open in the process.
pub fn open_sockets() -> usize {
    table::live()
}

/// Encode a UDP peer address as skynet does: protocol byte (1 IPv4, 2 IPv6), the port
/// big-endian, the address bytes.
pub(crate) fn encode_udp_addr(a: &SocketAddr, v: &mut Vec<u8>) {
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
        let mut e = Vec::new();
        encode_udp_addr(&a, &mut e);
        assert_eq!(e, [1, 0x22, 0x3d, 127, 0, 0, 1]);
        assert_eq!(decode_udp_addr(&e), Some(a));
        let b: SocketAddr = "[::1]:1".parse().unwrap();
        let mut e = Vec::new();
        encode_udp_addr(&b, &mut e);
        assert_eq!(e.len(), 19);
        assert_eq!(decode_udp_addr(&e), Some(b));
        assert_eq!(decode_udp_addr(&[3, 0, 0, 1, 2, 3, 4]), None);
        assert_eq!(decode_udp_addr(&[1, 0, 0]), None);
    }
}
