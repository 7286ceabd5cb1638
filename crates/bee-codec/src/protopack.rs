//! The protobuf game frame ("protopack"): one game message for one player, carried as the
//! string after the `"text"` sub-type.
//!
//! Layout (see `docs/protocol.md` for the byte-by-byte description):
//!
//! ```text
//! offset 0   u64 BE  uid, < 2^63 (so byte 0 is < 0x80)
//! offset 8   u8      name length L (1..=255)
//! offset 9   L bytes message name: the protobuf full name, e.g. "game.LoginReq"
//! offset 9+L ...     protobuf-encoded body, to the end (may be empty)
//! ```
//!
//! The uid limit keeps the first byte below 0x80, so a game frame can never be mistaken for
//! an rpc envelope, whose first byte is [`crate::rpc::MAGIC`] (0xB7).

use bytes::{BufMut, Bytes, BytesMut};

/// Size of the fixed part before the name (uid + name length).
pub const HEADER_LEN: usize = 9;
/// Largest uid a game frame can carry (2^63 - 1).
pub const MAX_UID: u64 = i64::MAX as u64;
/// Longest message name.
pub const MAX_NAME: usize = 255;

/// Errors from encoding or decoding a game frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtopackError {
    /// Fewer bytes than the fixed 9-byte header.
    #[error("game frame too short: {len} bytes, uid and name length alone need 9")]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// The uid is 2^63 or more. When decoding, a first byte of 0xB7 means the bytes are an
    /// rpc envelope, not a game frame.
    #[error("game frame uid {uid} is out of range: uids must be below 2^63 (a first byte of 0x80 or more is not a game frame; 0xB7 starts an rpc envelope)")]
    UidTooLarge {
        /// The offending uid.
        uid: u64,
    },
    /// The message name is empty.
    #[error("game frame has an empty message name (expected a protobuf full name such as \"game.LoginReq\")")]
    EmptyName,
    /// The message name is longer than 255 bytes.
    #[error("game frame message name is {len} bytes, at most 255 allowed")]
    NameTooLong {
        /// The name's length.
        len: usize,
    },
    /// The announced name runs past the end of the input.
    #[error(
        "game frame truncated: name length {name_len} but only {available} bytes follow the header"
    )]
    Truncated {
        /// Announced name length.
        name_len: usize,
        /// Bytes after the 9-byte header.
        available: usize,
    },
    /// The message name is not valid UTF-8.
    #[error("game frame message name is not valid UTF-8")]
    NameNotUtf8,
}

/// A decoded game frame.
#[derive(Debug, Clone, PartialEq)]
pub struct GameFrame {
    /// The player (or shard key) the message is about; below 2^63.
    pub uid: u64,
    /// Protobuf full name of the body's message type, e.g. `game.LoginReq`.
    pub name: Bytes,
    /// The protobuf-encoded message.
    pub body: Bytes,
}

impl GameFrame {
    /// Append the frame `[u64 BE uid][u8 name len][name][body]` to `out`.
    pub fn encode_into(
        uid: u64,
        name: &[u8],
        body: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), ProtopackError> {
        if uid > MAX_UID {
            return Err(ProtopackError::UidTooLarge { uid });
        }
        if name.is_empty() {
            return Err(ProtopackError::EmptyName);
        }
        let name_len = u8::try_from(name.len())
            .map_err(|_| ProtopackError::NameTooLong { len: name.len() })?;
        out.reserve(HEADER_LEN + name.len() + body.len());
        out.put_u64(uid);
        out.put_u8(name_len);
        out.put_slice(name);
        out.put_slice(body);
        Ok(())
    }

    /// The frame's bytes.
    pub fn encode(&self) -> Result<Bytes, ProtopackError> {
        let mut out = BytesMut::new();
        Self::encode_into(self.uid, &self.name, &self.body, &mut out)?;
        Ok(out.freeze())
    }

    /// Parse a game frame; name and body are zero-copy slices of `buf`. The name's UTF-8
    /// is checked by [`GameFrame::name_str`], not here.
    pub fn decode(buf: &Bytes) -> Result<GameFrame, ProtopackError> {
        if buf.len() < HEADER_LEN {
            return Err(ProtopackError::TooShort { len: buf.len() });
        }
        let mut uid_bytes = [0u8; 8];
        uid_bytes.copy_from_slice(&buf[..8]);
        let uid = u64::from_be_bytes(uid_bytes);
        if uid > MAX_UID {
            return Err(ProtopackError::UidTooLarge { uid });
        }
        let name_len = usize::from(buf[8]);
        if name_len == 0 {
            return Err(ProtopackError::EmptyName);
        }
        let available = buf.len() - HEADER_LEN;
        if name_len > available {
            return Err(ProtopackError::Truncated {
                name_len,
                available,
            });
        }
        let name_end = HEADER_LEN + name_len;
        Ok(GameFrame {
            uid,
            name: buf.slice(HEADER_LEN..name_end),
            body: buf.slice(name_end..),
        })
    }

    /// The message name as text.
    pub fn name_str(&self) -> Result<&str, ProtopackError> {
        std::str::from_utf8(&self.name).map_err(|_| ProtopackError::NameNotUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The worked example in docs/protocol.md section 5: keep them in step.
    #[test]
    fn documented_example() {
        let f = GameFrame {
            uid: 10076447,
            name: Bytes::from_static(b"game.LoginReq"),
            // game.LoginReq { uid: 10076447, token: "abc" }
            body: Bytes::from_static(b"\x08\x9f\x82\xe7\x04\x12\x03abc"),
        };
        let b = f.encode().unwrap();
        assert_eq!(
            hex::encode(&b),
            "000000000099c11f0d67616d652e4c6f67696e526571089f82e7041203616263"
        );
        assert_eq!(GameFrame::decode(&b).unwrap(), f);
    }

    #[test]
    fn zero_copy() {
        let b = GameFrame {
            uid: 1,
            name: Bytes::from_static(b"a.B"),
            body: Bytes::from_static(b"xyz"),
        }
        .encode()
        .unwrap();
        let f = GameFrame::decode(&b).unwrap();
        assert_eq!(f.body.as_ptr(), b[12..].as_ptr());
        assert_eq!(f.name_str().unwrap(), "a.B");
    }

    #[test]
    fn too_short() {
        assert_eq!(
            GameFrame::decode(&Bytes::from_static(&[0; 8])),
            Err(ProtopackError::TooShort { len: 8 })
        );
    }

    #[test]
    fn uid_too_large() {
        let mut out = BytesMut::new();
        assert_eq!(
            GameFrame::encode_into(1 << 63, b"a.B", b"", &mut out),
            Err(ProtopackError::UidTooLarge { uid: 1 << 63 })
        );
        assert!(out.is_empty());
        assert!(GameFrame::encode_into(MAX_UID, b"a.B", b"", &mut out).is_ok());
        assert_eq!(out[0], 0x7f);
        // An rpc envelope's first byte is 0xB7: refused as a game frame.
        let e = GameFrame::decode(&Bytes::from_static(
            b"\xb7\x01\x00\x00\x00\x01\x00\x01\x00\x01ns",
        ))
        .unwrap_err();
        assert!(matches!(e, ProtopackError::UidTooLarge { .. }));
    }

    #[test]
    fn empty_name() {
        let mut out = BytesMut::new();
        assert_eq!(
            GameFrame::encode_into(1, b"", b"x", &mut out),
            Err(ProtopackError::EmptyName)
        );
        assert_eq!(
            GameFrame::decode(&Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 9])),
            Err(ProtopackError::EmptyName)
        );
    }

    #[test]
    fn name_too_long() {
        let mut out = BytesMut::new();
        let name = vec![b'n'; 256];
        assert_eq!(
            GameFrame::encode_into(1, &name, b"", &mut out),
            Err(ProtopackError::NameTooLong { len: 256 })
        );
        assert!(GameFrame::encode_into(1, &name[1..], b"", &mut out).is_ok());
    }

    #[test]
    fn truncated() {
        assert_eq!(
            GameFrame::decode(&Bytes::from_static(&[
                0, 0, 0, 0, 0, 0, 0, 1, 5, b'a', b'b'
            ])),
            Err(ProtopackError::Truncated {
                name_len: 5,
                available: 2
            })
        );
    }

    #[test]
    fn name_not_utf8() {
        let f = GameFrame::decode(&Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 1, 1, 0xff])).unwrap();
        assert_eq!(f.name_str(), Err(ProtopackError::NameNotUtf8));
    }

    proptest! {
        #[test]
        fn round_trip(uid in 0..=MAX_UID,
                      name in proptest::collection::vec(any::<u8>(), 1..=255),
                      body in proptest::collection::vec(any::<u8>(), 0..600)) {
            let f = GameFrame { uid, name: name.into(), body: body.into() };
            let b = f.encode().unwrap();
            prop_assert!(b[0] < 0x80);
            prop_assert_eq!(GameFrame::decode(&b).unwrap(), f);
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let b = Bytes::from(data);
            if let Ok(f) = GameFrame::decode(&b) {
                prop_assert_eq!(f.encode().unwrap(), b);
            }
        }
    }
}
