//! The node/service proxy header a native service puts in front of a message it hands to
//! the local `CServiceProxy` service, which forwards the message to that node and service.
//!
//! Layout (all lengths big-endian, see `docs/protocol.md`):
//!
//! ```text
//! offset 0   u16 BE  node name length N (1..=65535)
//! offset 2   u16 BE  service name length S (1..=65535)
//! offset 4   N bytes node name (e.g. "lpersistence_3")
//! offset 4+N S bytes service name (e.g. "shop")
//! offset 4+N+S ...   the message, to the end of the buffer (may be empty)
//! ```

use bytes::{BufMut, Bytes, BytesMut};

/// Size of the fixed part of the header (the two lengths).
pub const HEADER_LEN: usize = 4;

/// Errors from encoding or decoding a proxy header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// Fewer bytes than the fixed 4-byte header.
    #[error("proxy frame too short: {len} bytes, the header alone needs 4")]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// The announced node and service names run past the end of the input.
    #[error(
        "proxy frame truncated: header announces node {node_len} + service {service_len} name bytes but only {available} bytes follow the header"
    )]
    Truncated {
        /// Announced node name length.
        node_len: usize,
        /// Announced service name length.
        service_len: usize,
        /// Bytes after the 4-byte header.
        available: usize,
    },
    /// The node name is empty.
    #[error("proxy frame has an empty node name")]
    EmptyNode,
    /// The service name is empty.
    #[error("proxy frame has an empty service name")]
    EmptyService,
    /// A name does not fit the 16-bit length field.
    #[error("proxy frame {field} name is {len} bytes, at most 65535 allowed")]
    NameTooLong {
        /// `"node"` or `"service"`.
        field: &'static str,
        /// The name's length.
        len: usize,
    },
    /// A name is not valid UTF-8.
    #[error("proxy frame {field} name is not valid UTF-8")]
    NotUtf8 {
        /// `"node"` or `"service"`.
        field: &'static str,
    },
}

/// A decoded proxy frame: where to send `message`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyFrame {
    /// Destination node name.
    pub node: Bytes,
    /// Destination service name (without a leading `@`).
    pub service: Bytes,
    /// The message to forward (a game frame or an rpc envelope).
    pub message: Bytes,
}

fn name_len(field: &'static str, name: &[u8]) -> Result<u16, ProxyError> {
    if name.is_empty() {
        return Err(if field == "node" {
            ProxyError::EmptyNode
        } else {
            ProxyError::EmptyService
        });
    }
    u16::try_from(name.len()).map_err(|_| ProxyError::NameTooLong {
        field,
        len: name.len(),
    })
}

impl ProxyFrame {
    /// Build the bytes `[u16 BE node len][u16 BE service len][node][service][message]`.
    pub fn encode(node: &[u8], service: &[u8], message: &[u8]) -> Result<Bytes, ProxyError> {
        let n = name_len("node", node)?;
        let s = name_len("service", service)?;
        let mut out =
            BytesMut::with_capacity(HEADER_LEN + node.len() + service.len() + message.len());
        out.put_u16(n);
        out.put_u16(s);
        out.put_slice(node);
        out.put_slice(service);
        out.put_slice(message);
        Ok(out.freeze())
    }

    /// Parse a proxy frame; the fields are zero-copy slices of `buf`.
    pub fn decode(buf: &Bytes) -> Result<ProxyFrame, ProxyError> {
        if buf.len() < HEADER_LEN {
            return Err(ProxyError::TooShort { len: buf.len() });
        }
        let node_len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
        let service_len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        let available = buf.len() - HEADER_LEN;
        if node_len + service_len > available {
            return Err(ProxyError::Truncated {
                node_len,
                service_len,
                available,
            });
        }
        if node_len == 0 {
            return Err(ProxyError::EmptyNode);
        }
        if service_len == 0 {
            return Err(ProxyError::EmptyService);
        }
        let node_end = HEADER_LEN + node_len;
        let service_end = node_end + service_len;
        Ok(ProxyFrame {
            node: buf.slice(HEADER_LEN..node_end),
            service: buf.slice(node_end..service_end),
            message: buf.slice(service_end..),
        })
    }

    /// The node name as text.
    pub fn node_str(&self) -> Result<&str, ProxyError> {
        std::str::from_utf8(&self.node).map_err(|_| ProxyError::NotUtf8 { field: "node" })
    }

    /// The service name as text.
    pub fn service_str(&self) -> Result<&str, ProxyError> {
        std::str::from_utf8(&self.service).map_err(|_| ProxyError::NotUtf8 { field: "service" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout() {
        let b = ProxyFrame::encode(b"lobby", b"shop", b"\x01\x02").unwrap();
        assert_eq!(&b[..], b"\x00\x05\x00\x04lobbyshop\x01\x02");
        let f = ProxyFrame::decode(&b).unwrap();
        assert_eq!(f.node_str().unwrap(), "lobby");
        assert_eq!(f.service_str().unwrap(), "shop");
        assert_eq!(&f.message[..], b"\x01\x02");
    }

    #[test]
    fn empty_message_is_allowed() {
        let b = ProxyFrame::encode(b"n", b"s", b"").unwrap();
        assert_eq!(ProxyFrame::decode(&b).unwrap().message.len(), 0);
    }

    #[test]
    fn too_short() {
        let e = ProxyFrame::decode(&Bytes::from_static(b"\x00\x01\x00")).unwrap_err();
        assert_eq!(e, ProxyError::TooShort { len: 3 });
    }

    #[test]
    fn truncated() {
        let e = ProxyFrame::decode(&Bytes::from_static(b"\x00\x05\x00\x04lobbysho")).unwrap_err();
        assert_eq!(
            e,
            ProxyError::Truncated {
                node_len: 5,
                service_len: 4,
                available: 8
            }
        );
        // Maximal lengths with nothing behind them: no overflow, no panic.
        let e = ProxyFrame::decode(&Bytes::from_static(b"\xff\xff\xff\xff")).unwrap_err();
        assert!(matches!(e, ProxyError::Truncated { .. }));
    }

    #[test]
    fn empty_names() {
        let e = ProxyFrame::decode(&Bytes::from_static(b"\x00\x00\x00\x01s")).unwrap_err();
        assert_eq!(e, ProxyError::EmptyNode);
        let e = ProxyFrame::decode(&Bytes::from_static(b"\x00\x01\x00\x00n")).unwrap_err();
        assert_eq!(e, ProxyError::EmptyService);
        assert_eq!(
            ProxyFrame::encode(b"", b"s", b""),
            Err(ProxyError::EmptyNode)
        );
        assert_eq!(
            ProxyFrame::encode(b"n", b"", b""),
            Err(ProxyError::EmptyService)
        );
    }

    #[test]
    fn name_too_long() {
        let long = vec![b'x'; 65536];
        assert_eq!(
            ProxyFrame::encode(&long, b"s", b""),
            Err(ProxyError::NameTooLong {
                field: "node",
                len: 65536
            })
        );
        assert_eq!(
            ProxyFrame::encode(b"n", &long, b""),
            Err(ProxyError::NameTooLong {
                field: "service",
                len: 65536
            })
        );
        assert!(ProxyFrame::encode(&long[1..], b"s", b"").is_ok());
    }

    #[test]
    fn not_utf8() {
        let b = ProxyFrame::encode(b"\xff", b"\xfe", b"").unwrap();
        let f = ProxyFrame::decode(&b).unwrap();
        assert_eq!(f.node_str(), Err(ProxyError::NotUtf8 { field: "node" }));
        assert_eq!(
            f.service_str(),
            Err(ProxyError::NotUtf8 { field: "service" })
        );
    }

    proptest! {
        #[test]
        fn round_trip(node in proptest::collection::vec(any::<u8>(), 1..300),
                      service in proptest::collection::vec(any::<u8>(), 1..300),
                      message in proptest::collection::vec(any::<u8>(), 0..600)) {
            let b = ProxyFrame::encode(&node, &service, &message).unwrap();
            let f = ProxyFrame::decode(&b).unwrap();
            prop_assert_eq!(&f.node[..], &node[..]);
            prop_assert_eq!(&f.service[..], &service[..]);
            prop_assert_eq!(&f.message[..], &message[..]);
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let b = Bytes::from(data);
            if let Ok(f) = ProxyFrame::decode(&b) {
                prop_assert_eq!(ProxyFrame::encode(&f.node, &f.service, &f.message).unwrap(), b);
            }
        }
    }
}
