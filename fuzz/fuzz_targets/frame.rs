//! Fuzz target `frame`: [`FrameDecoder`] over an arbitrary byte stream delivered in
//! arbitrary chunks.
//!
//! Input layout: byte 0 picks the decoder's `max_body` (`byte * 257`, so 0..=0xFFFF),
//! byte 1 seeds the chunk sizes, the rest is the stream. Checked: no panic; every body
//! returned is at most `max_body`; re-encoding the bodies gives back exactly the bytes the
//! decoder consumed; `None` and errors consume nothing; an error names a length above the
//! limit; whatever is left at the end is less than one whole frame (or an oversized one).
#![no_main]

use bee_codec::frame::{encode_frame, FrameDecoder, FrameError, HEADER_LEN};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [max_sel, seed, stream @ ..] = data else {
        return;
    };
    let max_body = usize::from(*max_sel) * 257;
    let mut decoder = FrameDecoder::new(max_body);
    assert_eq!(decoder.max_body(), max_body);

    let mut buf = BytesMut::new();
    let mut reencoded = BytesMut::new();
    let mut fed = 0usize;
    let mut consumed = 0usize;
    let mut rng = u32::from(*seed) | 0x100;
    let mut stopped = false;
    while fed < stream.len() && !stopped {
        // xorshift: chunk sizes 0..=63, so frames straddle chunk boundaries in every way.
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let chunk = (rng % 64) as usize;
        let end = (fed + chunk).min(stream.len());
        buf.extend_from_slice(&stream[fed..end]);
        fed = end;
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(body)) => {
                    assert!(body.len() <= max_body, "body above max_body");
                    assert_eq!(before - buf.len(), HEADER_LEN + body.len());
                    consumed += HEADER_LEN + body.len();
                    encode_frame(&body, &mut reencoded).expect("decoded body must re-encode");
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                    break;
                }
                Err(FrameError::TooLarge { len, max }) => {
                    assert_eq!(buf.len(), before, "an error consumed bytes");
                    assert!(len > max && max == max_body, "bad TooLarge {len} > {max}");
                    stopped = true;
                    break;
                }
            }
        }
    }
    assert_eq!(&reencoded[..], &stream[..consumed], "re-encoding differs");
    assert_eq!(
        &buf[..],
        &stream[consumed..fed],
        "leftover is not the unconsumed input"
    );
    if !stopped {
        // Whatever is left cannot be a whole acceptable frame.
        if buf.len() >= HEADER_LEN {
            let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
            assert!(
                buf.len() < HEADER_LEN + len,
                "a whole frame was left undecoded"
            );
        }
    }
});
