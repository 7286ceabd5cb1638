//! The rpc envelope: how a native caller (one that keeps its own sessions) calls or sends
//! to a service on another node and gets its reply back through the cluster.
//!
//! The envelope travels as the string after the `"rpc"` sub-type. It names the CALLER's
//! node and service (where a reply must go) and the caller's own session, so the remote
//! side can push a [`RpcKind::ReplyOk`] / [`RpcKind::ReplyErr`] envelope back to that node
//! and service with that session.
//!
//! Layout (see `docs/protocol.md`; integers big-endian):
//!
//! ```text
//! offset 0    u8      MAGIC 0xB7
//! offset 1    u8      kind: 1 Call, 2 Send, 3 ReplyOk, 4 ReplyErr
//! offset 2    u32 BE  session: Call/ReplyOk/ReplyErr >= 1, Send = 0
//! offset 6    u16 BE  caller node name length N (>= 1)
//! offset 8    u16 BE  caller service name length S (>= 1)
//! offset 10   N bytes caller node name
//! offset 10+N S bytes caller service name
//! offset 10+N+S ...   message to the end: the request (Call/Send), the reply (ReplyOk) or
//!                     the error text (ReplyErr)
//! ```

use bytes::{BufMut, Bytes, BytesMut};

/// First byte of every envelope. A game frame's first byte is always below 0x80, so the
/// two can share the path of a native service's messages.
pub const MAGIC: u8 = 0xB7;
/// Size of the fixed header (magic, kind, session, the two name lengths).
pub const HEADER_LEN: usize = 10;

/// What an envelope is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcKind {
    /// A request that wants a reply (session >= 1).
    Call = 1,
    /// A request without a reply (session 0).
    Send = 2,
    /// The successful reply to a Call; the message is the reply.
    ReplyOk = 3,
    /// The failed reply to a Call; the message is the error text.
    ReplyErr = 4,
}

impl RpcKind {
    /// The kind with wire code `code`, if any.
    pub fn from_u8(code: u8) -> Option<RpcKind> {
        match code {
            1 => Some(RpcKind::Call),
            2 => Some(RpcKind::Send),
            3 => Some(RpcKind::ReplyOk),
            4 => Some(RpcKind::ReplyErr),
            _ => None,
        }
    }

    /// The wire code.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    fn session_ok(self, session: u32) -> bool {
        match self {
            RpcKind::Send => session == 0,
            RpcKind::Call | RpcKind::ReplyOk | RpcKind::ReplyErr => session != 0,
        }
    }
}

/// Errors from encoding, decoding or answering an rpc envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// Fewer bytes than the fixed 10-byte header.
    #[error("rpc envelope too short: {len} bytes, the header alone needs 10")]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// The first byte is not [`MAGIC`].
    #[error("not an rpc envelope: first byte is 0x{0:02x}, expected 0xb7")]
    BadMagic(u8),
    /// The kind byte is not 1..=4.
    #[error("rpc envelope has unknown kind {0} (expected 1 Call, 2 Send, 3 ReplyOk, 4 ReplyErr)")]
    UnknownKind(u8),
    /// The session does not suit the kind (Send needs 0, the others need >= 1).
    #[error("rpc envelope {kind:?} has session {session}: a Send carries session 0, a Call and its replies a session >= 1")]
    BadSession {
        /// The envelope's kind.
        kind: RpcKind,
        /// The offending session.
        session: u32,
    },
    /// The caller node name is empty.
    #[error("rpc envelope has an empty caller node name")]
    EmptyNode,
    /// The caller service name is empty.
    #[error("rpc envelope has an empty caller service name")]
    EmptyService,
    /// A name does not fit its 16-bit length field.
    #[error("rpc envelope {field} name is {len} bytes, at most 65535 allowed")]
    NameTooLong {
        /// `"node"` or `"service"`.
        field: &'static str,
        /// The name's length.
        len: usize,
    },
    /// The announced names run past the end of the input.
    #[error("rpc envelope truncated: header announces node {node_len} + service {service_len} name bytes but only {available} bytes follow the header")]
    Truncated {
        /// Announced node name length.
        node_len: usize,
        /// Announced service name length.
        service_len: usize,
        /// Bytes after the 10-byte header.
        available: usize,
    },
    /// A reply was asked of an envelope that is not a Call.
    #[error("only a Call can be replied to; this envelope is a {0:?}")]
    NotACall(RpcKind),
    /// A name is not valid UTF-8.
    #[error("rpc envelope {field} name is not valid UTF-8")]
    NotUtf8 {
        /// `"node"` or `"service"`.
        field: &'static str,
    },
}

/// True when `buf` starts with [`MAGIC`] and is long enough for the fixed header, i.e.
/// it should be decoded as an rpc envelope rather than a game frame.
pub fn is_envelope(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN && buf[0] == MAGIC
}

/// A decoded rpc envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcEnvelope {
    /// What the envelope is.
    pub kind: RpcKind,
    /// The caller's session (0 for Send).
    pub session: u32,
    /// The caller's node: where a reply goes.
    pub node: Bytes,
    /// The caller's service on that node: where a reply goes.
    pub service: Bytes,
    /// Request, reply or error text.
    pub message: Bytes,
}

fn name_len(field: &'static str, name: &[u8]) -> Result<u16, RpcError> {
    if name.is_empty() {
        return Err(if field == "node" {
            RpcError::EmptyNode
        } else {
            RpcError::EmptyService
        });
    }
    u16::try_from(name.len()).map_err(|_| RpcError::NameTooLong {
        field,
        len: name.len(),
    })
}

impl RpcEnvelope {
    /// Build an envelope. `node`/`service` are the caller's (where replies go).
    pub fn encode(
        kind: RpcKind,
        session: u32,
        node: &[u8],
        service: &[u8],
        message: &[u8],
    ) -> Result<Bytes, RpcError> {
        if !kind.session_ok(session) {
            return Err(RpcError::BadSession { kind, session });
        }
        let n = name_len("node", node)?;
        let s = name_len("service", service)?;
        let mut out =
            BytesMut::with_capacity(HEADER_LEN + node.len() + service.len() + message.len());
        out.put_u8(MAGIC);
        out.put_u8(kind.as_u8());
        out.put_u32(session);
        out.put_u16(n);
        out.put_u16(s);
        out.put_slice(node);
        out.put_slice(service);
        out.put_slice(message);
        Ok(out.freeze())
    }

    /// Parse an envelope; names and message are zero-copy slices of `buf`.
    pub fn decode(buf: &Bytes) -> Result<RpcEnvelope, RpcError> {
        if buf.len() < HEADER_LEN {
            return Err(RpcError::TooShort { len: buf.len() });
        }
        if buf[0] != MAGIC {
            return Err(RpcError::BadMagic(buf[0]));
        }
        let kind = RpcKind::from_u8(buf[1]).ok_or(RpcError::UnknownKind(buf[1]))?;
        let session = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]);
        if !kind.session_ok(session) {
            return Err(RpcError::BadSession { kind, session });
        }
        let node_len = usize::from(u16::from_be_bytes([buf[6], buf[7]]));
        let service_len = usize::from(u16::from_be_bytes([buf[8], buf[9]]));
        let available = buf.len() - HEADER_LEN;
        if node_len + service_len > available {
            return Err(RpcError::Truncated {
                node_len,
                service_len,
                available,
            });
        }
        if node_len == 0 {
            return Err(RpcError::EmptyNode);
        }
        if service_len == 0 {
            return Err(RpcError::EmptyService);
        }
        let node_end = HEADER_LEN + node_len;
        let service_end = node_end + service_len;
        Ok(RpcEnvelope {
            kind,
            session,
            node: buf.slice(HEADER_LEN..node_end),
            service: buf.slice(node_end..service_end),
            message: buf.slice(service_end..),
        })
    }

    fn reply(&self, kind: RpcKind, message: &[u8]) -> Result<Bytes, RpcError> {
        if self.kind != RpcKind::Call {
            return Err(RpcError::NotACall(self.kind));
        }
        Self::encode(kind, self.session, &self.node, &self.service, message)
    }

    /// The ReplyOk envelope answering this Call: same session, node and service (the
    /// caller's), carrying `reply`.
    pub fn reply_ok(&self, reply: &[u8]) -> Result<Bytes, RpcError> {
        self.reply(RpcKind::ReplyOk, reply)
    }

    /// The ReplyErr envelope answering this Call, carrying the error `text`.
    pub fn reply_err(&self, text: &str) -> Result<Bytes, RpcError> {
        self.reply(RpcKind::ReplyErr, text.as_bytes())
    }

    /// The caller's node name as text.
    pub fn node_str(&self) -> Result<&str, RpcError> {
        std::str::from_utf8(&self.node).map_err(|_| RpcError::NotUtf8 { field: "node" })
    }

    /// The caller's service name as text.
    pub fn service_str(&self) -> Result<&str, RpcError> {
        std::str::from_utf8(&self.service).map_err(|_| RpcError::NotUtf8 { field: "service" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The worked examples in docs/protocol.md section 6: keep them in step.
    #[test]
    fn documented_example() {
        // skynet.pack("lua", "ping")
        let request = b"\x1clua\x24ping";
        let call = RpcEnvelope::encode(RpcKind::Call, 7, b"lobby", b"shop", request).unwrap();
        assert_eq!(
            hex::encode(&call),
            "b70100000007000500046c6f62627973686f701c6c75612470696e67"
        );
        let env = RpcEnvelope::decode(&call).unwrap();
        assert_eq!(env.kind, RpcKind::Call);
        assert_eq!(env.session, 7);
        assert_eq!(env.node_str().unwrap(), "lobby");
        assert_eq!(env.service_str().unwrap(), "shop");
        assert_eq!(&env.message[..], request);
        // skynet.pack("pong")
        let ok = env.reply_ok(b"\x24pong").unwrap();
        assert_eq!(
            hex::encode(&ok),
            "b70300000007000500046c6f62627973686f7024706f6e67"
        );
        let err = env.reply_err("unknown command").unwrap();
        assert_eq!(
            hex::encode(&err),
            "b70400000007000500046c6f62627973686f70756e6b6e6f776e20636f6d6d616e64"
        );
    }

    #[test]
    fn is_envelope_checks_magic_and_length() {
        let b = RpcEnvelope::encode(RpcKind::Send, 0, b"n", b"s", b"").unwrap();
        assert!(is_envelope(&b));
        assert!(!is_envelope(&b[..9]));
        assert!(!is_envelope(b"\x00\x00\x00\x00\x00\x00\x00\x01\x03a.B"));
    }

    #[test]
    fn too_short() {
        assert_eq!(
            RpcEnvelope::decode(&Bytes::from_static(b"\xb7\x01")),
            Err(RpcError::TooShort { len: 2 })
        );
    }

    #[test]
    fn bad_magic() {
        assert_eq!(
            RpcEnvelope::decode(&Bytes::from_static(
                b"\xb6\x01\x00\x00\x00\x01\x00\x01\x00\x01ns"
            )),
            Err(RpcError::BadMagic(0xb6))
        );
    }

    #[test]
    fn unknown_kind() {
        assert_eq!(
            RpcEnvelope::decode(&Bytes::from_static(
                b"\xb7\x05\x00\x00\x00\x01\x00\x01\x00\x01ns"
            )),
            Err(RpcError::UnknownKind(5))
        );
        assert_eq!(RpcKind::from_u8(0), None);
    }

    #[test]
    fn bad_session() {
        assert_eq!(
            RpcEnvelope::encode(RpcKind::Call, 0, b"n", b"s", b""),
            Err(RpcError::BadSession {
                kind: RpcKind::Call,
                session: 0
            })
        );
        assert_eq!(
            RpcEnvelope::encode(RpcKind::Send, 3, b"n", b"s", b""),
            Err(RpcError::BadSession {
                kind: RpcKind::Send,
                session: 3
            })
        );
        assert_eq!(
            RpcEnvelope::decode(&Bytes::from_static(
                b"\xb7\x03\x00\x00\x00\x00\x00\x01\x00\x01ns"
            )),
            Err(RpcError::BadSession {
                kind: RpcKind::ReplyOk,
                session: 0
            })
        );
    }

    #[test]
    fn empty_names() {
        assert_eq!(
            RpcEnvelope::encode(RpcKind::Call, 1, b"", b"s", b""),
            Err(RpcError::EmptyNode)
        );
        assert_eq!(
            RpcEnvelope::encode(RpcKind::Call, 1, b"n", b"", b""),
            Err(RpcError::EmptyService)
        );
        assert_eq!(
            RpcEnvelope::decode(&Bytes::from_static(
                b"\xb7\x02\x00\x00\x00\x00\x00\x00\x00\x01s"
            )),
            Err(RpcError::EmptyNode)
        );
        assert_eq!(
            RpcEnvelope::decode(&Bytes::from_static(
                b"\xb7\x02\x00\x00\x00\x00\x00\x01\x00\x00n"
            )),
            Err(RpcError::EmptyService)
        );
    }

    #[test]
    fn name_too_long() {
        let long = vec![b'x'; 70000];
        assert_eq!(
            RpcEnvelope::encode(RpcKind::Call, 1, &long, b"s", b""),
            Err(RpcError::NameTooLong {
                field: "node",
                len: 70000
            })
        );
        assert_eq!(
            RpcEnvelope::encode(RpcKind::Call, 1, b"n", &long, b""),
            Err(RpcError::NameTooLong {
                field: "service",
                len: 70000
            })
        );
    }

    #[test]
    fn truncated() {
        assert_eq!(
            RpcEnvelope::decode(&Bytes::from_static(
                b"\xb7\x02\x00\x00\x00\x00\xff\xff\xff\xffns"
            )),
            Err(RpcError::Truncated {
                node_len: 65535,
                service_len: 65535,
                available: 2
            })
        );
    }

    #[test]
    fn only_calls_are_answered() {
        let send = RpcEnvelope::encode(RpcKind::Send, 0, b"n", b"s", b"m").unwrap();
        let env = RpcEnvelope::decode(&send).unwrap();
        assert_eq!(env.reply_ok(b"x"), Err(RpcError::NotACall(RpcKind::Send)));
        assert_eq!(env.reply_err("x"), Err(RpcError::NotACall(RpcKind::Send)));
    }

    #[test]
    fn not_utf8() {
        let b = RpcEnvelope::encode(RpcKind::Send, 0, b"\xff", b"\xfe", b"").unwrap();
        let env = RpcEnvelope::decode(&b).unwrap();
        assert_eq!(env.node_str(), Err(RpcError::NotUtf8 { field: "node" }));
        assert_eq!(
            env.service_str(),
            Err(RpcError::NotUtf8 { field: "service" })
        );
    }

    fn kind() -> impl Strategy<Value = RpcKind> {
        prop_oneof![
            Just(RpcKind::Call),
            Just(RpcKind::Send),
            Just(RpcKind::ReplyOk),
            Just(RpcKind::ReplyErr)
        ]
    }

    proptest! {
        #[test]
        fn round_trip(kind in kind(), session in 1u32.., node in proptest::collection::vec(any::<u8>(), 1..200),
                      service in proptest::collection::vec(any::<u8>(), 1..200),
                      message in proptest::collection::vec(any::<u8>(), 0..600)) {
            let session = if kind == RpcKind::Send { 0 } else { session };
            let b = RpcEnvelope::encode(kind, session, &node, &service, &message).unwrap();
            prop_assert!(is_envelope(&b));
            let env = RpcEnvelope::decode(&b).unwrap();
            prop_assert_eq!(env.kind, kind);
            prop_assert_eq!(env.session, session);
            prop_assert_eq!(&env.node[..], &node[..]);
            prop_assert_eq!(&env.service[..], &service[..]);
            prop_assert_eq!(&env.message[..], &message[..]);
            if kind == RpcKind::Call {
                let reply = RpcEnvelope::decode(&env.reply_ok(b"r").unwrap()).unwrap();
                prop_assert_eq!(reply.kind, RpcKind::ReplyOk);
                prop_assert_eq!(reply.session, session);
                prop_assert_eq!(reply.node, env.node);
                prop_assert_eq!(reply.service, env.service);
            }
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let b = Bytes::from(data);
            if let Ok(env) = RpcEnvelope::decode(&b) {
                let again = RpcEnvelope::encode(env.kind, env.session, &env.node, &env.service, &env.message).unwrap();
                prop_assert_eq!(again, b);
            }
        }

        #[test]
        fn decode_never_panics_with_magic(kind in 0u8..6, session in any::<u32>(),
                                          data in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut v = vec![MAGIC, kind];
            v.extend_from_slice(&session.to_be_bytes());
            v.extend_from_slice(&data);
            let _ = RpcEnvelope::decode(&Bytes::from(v));
        }
    }
}
