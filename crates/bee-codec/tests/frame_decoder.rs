//! Streaming behaviour and limits of the 2-byte big-endian frame layer.

use bee_codec::frame::{encode_frame, FrameDecoder, FrameError, MAX_BODY};
use bytes::{BufMut, BytesMut};

fn frames(bodies: &[&[u8]]) -> BytesMut {
    let mut out = BytesMut::new();
    for body in bodies {
        encode_frame(body, &mut out).unwrap();
    }
    out
}

#[test]
fn empty_buffer_and_lone_prefix_byte_are_incomplete() {
    let mut decoder = FrameDecoder::default();
    let mut buf = BytesMut::new();
    assert_eq!(decoder.decode(&mut buf).unwrap(), None);
    buf.put_u8(0x00);
    assert_eq!(decoder.decode(&mut buf).unwrap(), None);
    assert_eq!(&buf[..], &[0x00]);
}

#[test]
fn half_a_frame_is_none_and_consumes_nothing() {
    let whole = frames(&[b"hello, cluster"]);
    let mut buf = BytesMut::from(&whole[..whole.len() / 2]);
    let before = buf.clone();
    let mut decoder = FrameDecoder::default();
    assert_eq!(decoder.decode(&mut buf).unwrap(), None);
    assert_eq!(buf, before, "nothing consumed");
    // The rest arrives: now the frame comes out.
    buf.extend_from_slice(&whole[whole.len() / 2..]);
    assert_eq!(
        decoder.decode(&mut buf).unwrap().unwrap(),
        &b"hello, cluster"[..]
    );
    assert!(buf.is_empty());
}

#[test]
fn three_and_a_half_frames() {
    let all = frames(&[b"one", b"", b"three", b"four is cut"]);
    let cut = all.len() - 6;
    let mut buf = BytesMut::from(&all[..cut]);
    let mut decoder = FrameDecoder::default();
    assert_eq!(decoder.decode(&mut buf).unwrap().unwrap(), &b"one"[..]);
    assert_eq!(decoder.decode(&mut buf).unwrap().unwrap(), &b""[..]);
    assert_eq!(decoder.decode(&mut buf).unwrap().unwrap(), &b"three"[..]);
    assert_eq!(decoder.decode(&mut buf).unwrap(), None);
    assert_eq!(
        &buf[..],
        &all[all.len() - 13..cut],
        "the half frame stays in the buffer"
    );
    buf.extend_from_slice(&all[cut..]);
    assert_eq!(
        decoder.decode(&mut buf).unwrap().unwrap(),
        &b"four is cut"[..]
    );
    assert_eq!(decoder.decode(&mut buf).unwrap(), None);
}

#[test]
fn byte_by_byte_feeding() {
    let bodies: Vec<Vec<u8>> = vec![vec![1; 300], vec![], vec![2; 5], vec![3; MAX_BODY]];
    let refs: Vec<&[u8]> = bodies.iter().map(|b| &b[..]).collect();
    let all = frames(&refs);
    let mut decoder = FrameDecoder::default();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for &byte in all.iter() {
        buf.put_u8(byte);
        while let Some(body) = decoder.decode(&mut buf).unwrap() {
            got.push(body.to_vec());
        }
    }
    assert_eq!(got, bodies);
    assert!(buf.is_empty());
}

#[test]
fn bodies_share_the_receive_buffer() {
    let mut buf = frames(&[b"zero-copy body"]);
    let start = buf.as_ptr() as usize;
    let body = FrameDecoder::default().decode(&mut buf).unwrap().unwrap();
    assert_eq!(
        body.as_ptr() as usize,
        start + 2,
        "body is a view of the buffer"
    );
}

#[test]
fn largest_body_round_trips() {
    let body = vec![0xAB; MAX_BODY];
    let mut buf = BytesMut::new();
    encode_frame(&body, &mut buf).unwrap();
    assert_eq!(&buf[..2], &[0xFF, 0xFF]);
    assert_eq!(
        FrameDecoder::default().decode(&mut buf).unwrap().unwrap(),
        &body[..]
    );
}

#[test]
fn encode_rejects_body_above_max() {
    let mut out = BytesMut::new();
    let err = encode_frame(&vec![0; MAX_BODY + 1], &mut out).unwrap_err();
    assert_eq!(
        err,
        FrameError::TooLarge {
            len: MAX_BODY + 1,
            max: MAX_BODY
        }
    );
    assert!(out.is_empty(), "nothing written on error");
    assert!(err.to_string().contains("65536"));
}

#[test]
fn decode_rejects_body_above_configured_max() {
    let mut buf = frames(&[&[7u8; 100]]);
    let before = buf.clone();
    let mut decoder = FrameDecoder::new(99);
    let err = decoder.decode(&mut buf).unwrap_err();
    assert_eq!(err, FrameError::TooLarge { len: 100, max: 99 });
    assert_eq!(buf, before, "nothing consumed on error");
    // The limit is checked from the prefix alone, before the body has arrived.
    let mut prefix_only = BytesMut::from(&[0x00, 0x64][..]);
    assert!(decoder.decode(&mut prefix_only).is_err());
    // A body of exactly max_body is fine.
    let mut buf = frames(&[&[7u8; 99]]);
    assert_eq!(decoder.decode(&mut buf).unwrap().unwrap().len(), 99);
}
