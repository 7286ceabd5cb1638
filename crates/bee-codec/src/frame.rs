//! Length-prefixed framing: the outer layer of every skynet cluster connection.
//!
//! Both directions of a cluster connection are a stream of frames: a 2-byte **big-endian**
//! body length, then that many bytes of body. A body is therefore at most [`MAX_BODY`]
//! (0xFFFF) bytes. [`encode_frame`] writes one frame; [`FrameDecoder`] cuts frames out of a
//! growing receive buffer without copying the bodies.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The largest body a frame can carry (the length prefix is a `u16`).
pub const MAX_BODY: usize = 0xFFFF;

/// Size of the length prefix in front of every body.
pub const HEADER_LEN: usize = 2;

/// Why a frame could not be written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The body is longer than the limit: either more than [`MAX_BODY`] when encoding (the
    /// 2-byte prefix cannot express it; split the message first), or more than the
    /// decoder's configured `max_body` when decoding (the peer is sending frames larger than
    /// this side accepts; the stream cannot be resynchronised, close the connection).
    #[error("frame body of {len} bytes is larger than the maximum of {max} bytes")]
    TooLarge {
        /// Length of the offending body.
        len: usize,
        /// The limit it exceeded.
        max: usize,
    },
}

/// Append one frame (2-byte big-endian length, then `body`) to `out`.
///
/// Reserves room for the whole frame once. On error nothing is written.
pub fn encode_frame(body: &[u8], out: &mut BytesMut) -> Result<(), FrameError> {
    if body.len() > MAX_BODY {
        return Err(FrameError::TooLarge {
            len: body.len(),
            max: MAX_BODY,
        });
    }
    out.reserve(HEADER_LEN + body.len());
    // Checked above: the length fits in a u16.
    out.put_u16(body.len() as u16);
    out.put_slice(body);
    Ok(())
}

/// Streaming frame splitter for a receive buffer.
///
/// Feed it the connection's read buffer after every read; each call to
/// [`FrameDecoder::decode`] takes at most one complete frame off the front.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_body: usize,
}

impl Default for FrameDecoder {
    /// A decoder accepting every body the format can express ([`MAX_BODY`]).
    fn default() -> Self {
        Self::new(MAX_BODY)
    }
}

impl FrameDecoder {
    /// A decoder that rejects bodies longer than `max_body` bytes (values above
    /// [`MAX_BODY`] are the same as [`MAX_BODY`]: the prefix cannot announce more).
    pub fn new(max_body: usize) -> Self {
        Self {
            max_body: max_body.min(MAX_BODY),
        }
    }

    /// The largest body this decoder accepts.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Take one complete frame off the front of `buf`.
    ///
    /// - `Ok(None)`: `buf` does not yet hold a whole frame; nothing was consumed (room for
    ///   the rest of an announced frame may be reserved in `buf`).
    /// - `Ok(Some(body))`: exactly one frame (prefix and body) was consumed; `body` shares
    ///   `buf`'s memory, no copy is made.
    /// - `Err(FrameError::TooLarge)`: the next frame announces a body above `max_body`;
    ///   nothing was consumed. The connection should be closed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some(prefix) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
        if len > self.max_body {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_body,
            });
        }
        let need = HEADER_LEN + len;
        if buf.len() < need {
            // `len` is bounded by max_body (<= 64 KiB), so this reservation is bounded too.
            buf.reserve(need - buf.len());
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        Ok(Some(buf.split_to(len).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_big_endian() {
        let mut out = BytesMut::new();
        encode_frame(&[7u8; 0x0102], &mut out).unwrap();
        assert_eq!(&out[..2], &[0x01, 0x02]);
        assert_eq!(out.len(), 2 + 0x0102);
    }

    #[test]
    fn new_clamps_to_format_limit() {
        assert_eq!(FrameDecoder::new(1 << 20).max_body(), MAX_BODY);
        assert_eq!(FrameDecoder::new(10).max_body(), 10);
        assert_eq!(FrameDecoder::default().max_body(), MAX_BODY);
    }
}
