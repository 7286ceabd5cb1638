//! A netfilter queue (NFQUEUE) client over netlink, just what the shaper needs: bind a
//! queue in metadata-only mode, read the ids of queued packets, give each its verdict.
//! The socket is shared by reference: one thread can block reading while another
//! sends verdicts (the kernel takes a verdict only from the socket bound to the queue).
//!
//! Message layout (Linux `nfnetlink_queue`): a netlink header, a `nfgenmsg` carrying the
//! queue number (big-endian), then attributes; the queue's own values are big-endian.

use std::io;
use std::os::fd::OwnedFd;

use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketType};

/// `NFNL_SUBSYS_QUEUE`.
const SUBSYS_QUEUE: u16 = 3;
const MSG_PACKET: u16 = 0;
const MSG_VERDICT: u16 = 1;
const MSG_CONFIG: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const CFG_CMD: u16 = 1;
const CFG_PARAMS: u16 = 2;
const CFG_QUEUE_MAXLEN: u16 = 3;
const CFG_MASK: u16 = 4;
const CFG_FLAGS: u16 = 5;
const CMD_BIND: u8 = 1;
const COPY_META: u8 = 1;
/// Accept the packet when the queue is full instead of dropping it.
pub const FLAG_FAIL_OPEN: u32 = 1;
/// Take GSO packets whole (no segmenting them for the queue).
pub const FLAG_GSO: u32 = 4;
const ATTR_PACKET_HDR: u16 = 1;
const ATTR_VERDICT_HDR: u16 = 2;

/// What happens to a queued packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Discard it.
    Drop,
    /// Let it go on.
    Accept,
}

/// A netlink socket bound to one queue.
pub struct Queue {
    fd: OwnedFd,
    num: u16,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One netlink message being built.
struct Msg(Vec<u8>);

impl Msg {
    fn new(kind: u16, flags: u16, queue: u16) -> Msg {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `finish`
        v.extend_from_slice(&((SUBSYS_QUEUE << 8) | kind).to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes()); // sequence
        v.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
        v.push(0); // AF_UNSPEC
        v.push(0); // NFNETLINK_V0
        v.extend_from_slice(&queue.to_be_bytes());
        Msg(v)
    }

    fn attr(mut self, kind: u16, value: &[u8]) -> Msg {
        let len = 4 + value.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize(align4(self.0.len()), 0);
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

impl Queue {
    /// Open a netfilter netlink socket and bind queue `num` to it, copying only packet
    /// metadata, with room for `max_len` packets and the given flags.
    pub fn bind(num: u16, max_len: u32, flags: u32) -> io::Result<Queue> {
        let fd = rustix::net::socket(
            AddressFamily::NETLINK,
            SocketType::RAW,
            Some(netlink::NETFILTER),
        )?;
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, 0))?;
        let q = Queue { fd, num };
        let mut cmd = [0u8; 4];
        cmd[0] = CMD_BIND;
        q.request(Msg::new(MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, num).attr(CFG_CMD, &cmd))?;
        let mut params = [0u8; 5];
        params[..4].copy_from_slice(&0u32.to_be_bytes());
        params[4] = COPY_META;
        q.request(
            Msg::new(MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, num)
                .attr(CFG_PARAMS, &params)
                .attr(CFG_QUEUE_MAXLEN, &max_len.to_be_bytes())
                .attr(CFG_MASK, &flags.to_be_bytes())
                .attr(CFG_FLAGS, &flags.to_be_bytes()),
        )?;
        Ok(q)
    }

    fn send(&self, msg: Msg) -> io::Result<()> {
        let bytes = msg.finish();
        rustix::net::sendto(
            &self.fd,
            &bytes,
            SendFlags::empty(),
            &SocketAddrNetlink::new(0, 0),
        )?;
        Ok(())
    }

    /// Send a configuration message and wait for the kernel's acknowledgement.
    fn request(&self, msg: Msg) -> io::Result<()> {
        self.send(msg)?;
        let mut buf = vec![0u8; 8192];
        loop {
            let (n, _) = rustix::net::recv(&self.fd, &mut buf[..], RecvFlags::empty())?;
            for (kind, body) in messages(&buf[..n]) {
                if kind == NLMSG_ERROR && body.len() >= 4 {
                    let errno = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
                    return if errno == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::from_raw_os_error(-errno))
                    };
                }
            }
        }
    }

    /// Block until packets are queued; append their ids to `ids`.
    pub fn read(&self, buf: &mut [u8], ids: &mut Vec<u32>) -> io::Result<()> {
        let (n, _) = rustix::net::recv(&self.fd, &mut *buf, RecvFlags::empty())?;
        for (kind, body) in messages(&buf[..n.min(buf.len())]) {
            if kind != (SUBSYS_QUEUE << 8) | MSG_PACKET || body.len() < 4 {
                continue;
            }
            // After the 4-byte nfgenmsg, the attributes.
            let mut at = &body[4..];
            while at.len() >= 4 {
                let len = u16::from_ne_bytes([at[0], at[1]]) as usize;
                let kind = u16::from_ne_bytes([at[2], at[3]]) & 0x3fff;
                if len < 4 || len > at.len() {
                    break;
                }
                if kind == ATTR_PACKET_HDR && len >= 8 {
                    ids.push(u32::from_be_bytes([at[4], at[5], at[6], at[7]]));
                }
                at = &at[align4(len).min(at.len())..];
            }
        }
        Ok(())
    }

    /// Give packet `id` its verdict.
    pub fn verdict(&self, id: u32, v: Verdict) -> io::Result<()> {
        let code: u32 = match v {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
        };
        let mut hdr = [0u8; 8];
        hdr[..4].copy_from_slice(&code.to_be_bytes());
        hdr[4..].copy_from_slice(&id.to_be_bytes());
        self.send(Msg::new(MSG_VERDICT, NLM_F_REQUEST, self.num).attr(ATTR_VERDICT_HDR, &hdr))
    }
}

/// The netlink messages in one datagram: (type, body after the 16-byte header).
fn messages(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < 16 || len > buf.len() {
            break;
        }
        out.push((kind, &buf[16..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}
