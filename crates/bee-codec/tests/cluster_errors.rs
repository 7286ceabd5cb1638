//! Cluster frame edge cases: split thresholds, fixed header sizes, limits, and one test
//! per error variant of `ClusterError` and `AssemblyError`.

use bee_codec::cluster::{
    decode_request_frame, decode_response_frame, encode_push, encode_request, encode_response,
    encode_trace, is_multipart_request, is_multipart_response, next_session, Address,
    AssemblyError, ClusterError, Limits, Request, RequestAssembler, RequestFrame, Response,
    ResponseAssembler, ResponseFrame, MAX_NAME, SPLIT,
};
use bee_codec::frame::{FrameDecoder, FrameError, MAX_BODY};
use bytes::{BufMut, Bytes, BytesMut};

fn bodies(out: &BytesMut) -> Vec<Bytes> {
    let mut buf = out.clone();
    let mut decoder = FrameDecoder::default();
    let mut v = Vec::new();
    while let Some(b) = decoder.decode(&mut buf).unwrap() {
        v.push(b);
    }
    assert!(buf.is_empty());
    v
}

fn echo() -> Address {
    Address::Name(Bytes::from_static(b"@echo"))
}

fn small_limits(max_message: usize, max_pending: usize) -> Limits {
    Limits {
        max_message,
        max_pending,
        ..Limits::default()
    }
}

fn header(session: u32, total: u32) -> RequestFrame {
    RequestFrame::Header {
        address: Address::Id(9),
        session,
        push: false,
        total,
    }
}

fn piece(session: u32, data: &[u8], last: bool) -> RequestFrame {
    RequestFrame::Piece {
        session,
        data: Bytes::copy_from_slice(data),
        last,
    }
}

// ---- thresholds ---------------------------------------------------------------------

#[test]
fn request_split_threshold_is_strictly_below_split() {
    assert!(!is_multipart_request(SPLIT - 1));
    assert!(is_multipart_request(SPLIT));
    for (len, frames) in [
        (0, 1),
        (SPLIT - 1, 1),
        (SPLIT, 2),
        (SPLIT + 1, 3),
        (2 * SPLIT, 3),
    ] {
        let mut out = BytesMut::new();
        encode_request(&mut out, &Address::Id(1), 1, &vec![0; len]).unwrap();
        assert_eq!(bodies(&out).len(), frames, "request of {len} bytes");
    }
}

#[test]
fn response_split_threshold_includes_split() {
    assert!(!is_multipart_response(SPLIT));
    assert!(is_multipart_response(SPLIT + 1));
    for (len, frames) in [
        (0, 1),
        (SPLIT, 1),
        (SPLIT + 1, 3),
        (2 * SPLIT, 3),
        (2 * SPLIT + 1, 4),
    ] {
        let mut out = BytesMut::new();
        encode_response(&mut out, 1, Ok(&vec![0; len])).unwrap();
        let b = bodies(&out);
        assert_eq!(b.len(), frames, "response of {len} bytes");
        if frames > 1 {
            assert_eq!(b[0].len(), 9, "begin body is exactly 9 bytes");
            assert!(b[1..].iter().all(|p| p.len() <= 5 + SPLIT));
        }
    }
}

#[test]
fn encode_reserves_once_and_appends() {
    let mut out = BytesMut::from(&b"already here"[..]);
    encode_request(&mut out, &echo(), 3, &vec![1; 3 * SPLIT + 7]).unwrap();
    assert_eq!(&out[..12], b"already here");
    let expected = 12 + (2 + 1 + 1 + 5 + 8) + 4 * (2 + 5) + 3 * SPLIT + 7;
    assert_eq!(out.len(), expected);
}

#[test]
fn next_session_wraps() {
    assert_eq!(next_session(1), 2);
    assert_eq!(next_session(0x7FFF_FFFE), 0x7FFF_FFFF);
    assert_eq!(next_session(0x7FFF_FFFF), 1);
    assert_eq!(next_session(u32::MAX), 1);
}

#[test]
fn whole_push_ignores_session_multipart_push_keeps_it() {
    let mut out = BytesMut::new();
    encode_push(&mut out, &Address::Id(5), 0, b"x").unwrap();
    encode_push(&mut out, &Address::Id(5), 77, b"y").unwrap();
    for body in bodies(&out) {
        match decode_request_frame(body).unwrap() {
            RequestFrame::Whole(r) => assert!(r.push && r.session == 0),
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut out = BytesMut::new();
    encode_push(&mut out, &Address::Id(5), 77, &vec![0; SPLIT]).unwrap();
    let first = decode_request_frame(bodies(&out)[0].clone()).unwrap();
    assert_eq!(
        first,
        RequestFrame::Header {
            address: Address::Id(5),
            session: 77,
            push: true,
            total: SPLIT as u32
        }
    );
}

#[test]
fn error_text_is_truncated_to_split() {
    let mut out = BytesMut::new();
    encode_response(&mut out, 4, Err(&vec![b'e'; SPLIT + 100])).unwrap();
    let b = bodies(&out);
    assert_eq!(b.len(), 1);
    match decode_response_frame(b[0].clone()).unwrap() {
        ResponseFrame::Err { session, message } => {
            assert_eq!(session, 4);
            assert_eq!(message.len(), SPLIT);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn names_of_1_and_255_bytes_round_trip() {
    for len in [1, MAX_NAME] {
        let address = Address::Name(Bytes::from(vec![b'n'; len]));
        let mut out = BytesMut::new();
        encode_request(&mut out, &address, 1, b"p").unwrap();
        encode_request(&mut out, &address, 2, &vec![0; SPLIT]).unwrap();
        let b = bodies(&out);
        match decode_request_frame(b[0].clone()).unwrap() {
            RequestFrame::Whole(r) => assert_eq!(r.address, address),
            other => panic!("unexpected {other:?}"),
        }
        match decode_request_frame(b[1].clone()).unwrap() {
            RequestFrame::Header { address: a, .. } => assert_eq!(a, address),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn string_forms_accept_their_minimum_size() {
    // Whole named request with an empty message: exactly namelen + 6 bytes.
    let body = Bytes::from_static(b"\x80\x02@a\x05\x00\x00\x00");
    match decode_request_frame(body).unwrap() {
        RequestFrame::Whole(r) => {
            assert_eq!(r.session, 5);
            assert!(r.payload.is_empty());
        }
        other => panic!("unexpected {other:?}"),
    }
    // Named multi-part header: exactly namelen + 10 bytes.
    let body = Bytes::from_static(b"\xC1\x02@a\x05\x00\x00\x00\x00\x80\x00\x00");
    assert_eq!(
        decode_request_frame(body).unwrap(),
        RequestFrame::Header {
            address: Address::Name(Bytes::from_static(b"@a")),
            session: 5,
            push: true,
            total: 0x8000
        }
    );
}

#[test]
fn decoded_payload_is_a_slice_of_the_body() {
    let mut out = BytesMut::new();
    encode_request(&mut out, &echo(), 1, b"payload bytes").unwrap();
    let body = bodies(&out).remove(0);
    let base = body.as_ptr() as usize;
    match decode_request_frame(body.clone()).unwrap() {
        RequestFrame::Whole(r) => {
            assert_eq!(r.payload.as_ptr() as usize, base + body.len() - 13);
        }
        other => panic!("unexpected {other:?}"),
    }
}

// ---- ClusterError variants ------------------------------------------------------------

#[test]
fn too_short() {
    let cases: &[&[u8]] = &[
        b"",
        b"\x00\x01\x00\x00\x00\x01\x00\x00",      // 0x00 needs 9
        b"\x80",                                  // 0x80 needs the name length
        b"\x80\x05@echo\x01\x00\x00",             // 0x80 needs namelen + 6 = 11
        b"\x81\x05@echo\x01\x00\x00\x00\x00\x80", // 0x81 needs namelen + 10 = 15
        b"\x02\x01\x00\x00",                      // piece needs 5
        b"\x03",
    ];
    for body in cases {
        let err = decode_request_frame(Bytes::copy_from_slice(body)).unwrap_err();
        assert!(
            matches!(err, ClusterError::TooShort { got, .. } if got == body.len()),
            "{body:02x?}: {err:?}"
        );
    }
    let err = decode_response_frame(Bytes::from_static(b"\x01\x00\x00\x00")).unwrap_err();
    assert_eq!(
        err,
        ClusterError::TooShort {
            frame: "response",
            need: 5,
            got: 4
        }
    );
    assert!(err.to_string().contains("at least 5 bytes, got 4"));
}

#[test]
fn unknown_type() {
    for t in [0x05u8, 0x42, 0x7F, 0x82, 0xFF] {
        let mut body = vec![t];
        body.extend_from_slice(&[0; 20]);
        assert_eq!(
            decode_request_frame(Bytes::from(body)).unwrap_err(),
            ClusterError::UnknownType(t)
        );
    }
    let err = decode_response_frame(Bytes::from_static(b"\x01\x00\x00\x00\x05ok")).unwrap_err();
    assert_eq!(err, ClusterError::UnknownType(5));
    assert_eq!(err.to_string(), "unknown cluster frame type 0x05");
}

#[test]
fn bad_header_size() {
    // Numeric multi-part header must be exactly 13 bytes.
    for kind in [0x01u8, 0x41] {
        for len in [12usize, 14] {
            let mut body = vec![kind];
            body.resize(len, 1);
            assert_eq!(
                decode_request_frame(Bytes::from(body)).unwrap_err(),
                ClusterError::BadHeaderSize {
                    kind,
                    expected: 13,
                    got: len
                }
            );
        }
    }
    // Response begin must be exactly 9 bytes.
    for body in [
        &b"\x01\x00\x00\x00\x02\x00\x80\x00"[..],
        b"\x01\x00\x00\x00\x02\x00\x80\x00\x00\x00",
    ] {
        let err = decode_response_frame(Bytes::copy_from_slice(body)).unwrap_err();
        assert_eq!(
            err,
            ClusterError::BadHeaderSize {
                kind: 2,
                expected: 9,
                got: body.len()
            }
        );
    }
}

#[test]
fn bad_name() {
    for len in [0usize, MAX_NAME + 1] {
        let address = Address::Name(Bytes::from(vec![b'x'; len]));
        let mut out = BytesMut::new();
        let err = encode_request(&mut out, &address, 1, b"m").unwrap_err();
        assert_eq!(err, ClusterError::BadName { len });
        assert!(encode_push(&mut out, &address, 1, &vec![0; SPLIT]).is_err());
        assert!(out.is_empty(), "nothing written on error");
    }
    // On the wire a zero name length is rejected too.
    for body in [
        &b"\x80\x00\x01\x00\x00\x00"[..],
        b"\x81\x00\x01\x00\x00\x00\x00\x80\x00\x00",
    ] {
        assert_eq!(
            decode_request_frame(Bytes::copy_from_slice(body)).unwrap_err(),
            ClusterError::BadName { len: 0 }
        );
    }
}

#[test]
fn bad_session() {
    let mut out = BytesMut::new();
    assert_eq!(
        encode_request(&mut out, &echo(), 0, b"m").unwrap_err(),
        ClusterError::BadSession(0)
    );
    assert_eq!(
        encode_request(&mut out, &echo(), 0, &vec![0; SPLIT]).unwrap_err(),
        ClusterError::BadSession(0)
    );
    assert_eq!(
        encode_push(&mut out, &echo(), 0, &vec![0; SPLIT]).unwrap_err(),
        ClusterError::BadSession(0)
    );
    assert_eq!(
        encode_response(&mut out, 0, Ok(b"r")).unwrap_err(),
        ClusterError::BadSession(0)
    );
    assert!(out.is_empty(), "nothing written on error");
    // A multi-part header with session 0 cannot key its pieces.
    let body = Bytes::from_static(b"\x01\x09\x00\x00\x00\x00\x00\x00\x00\x00\x80\x00\x00");
    let err = decode_request_frame(body).unwrap_err();
    assert_eq!(err, ClusterError::BadSession(0));
    assert!(err.to_string().contains(">= 1"));
}

#[test]
fn frame_error_from_oversized_trace() {
    let mut out = BytesMut::new();
    let err = encode_trace(&mut out, &vec![b't'; MAX_BODY]).unwrap_err();
    assert_eq!(
        err,
        ClusterError::Frame(FrameError::TooLarge {
            len: MAX_BODY + 1,
            max: MAX_BODY
        })
    );
    assert!(out.is_empty());
    encode_trace(&mut out, &vec![b't'; MAX_BODY - 1]).unwrap();
    assert_eq!(out.len(), 2 + MAX_BODY);
}

// ---- AssemblyError variants -----------------------------------------------------------

#[test]
fn size_mismatch_short_and_long() {
    // Pieces add up to less than announced.
    let mut asm = RequestAssembler::new(Limits::default());
    asm.feed(header(7, 10)).unwrap();
    asm.feed(piece(7, b"abcd", false)).unwrap();
    let err = asm.feed(piece(7, b"ef", true)).unwrap_err();
    assert_eq!(
        err,
        AssemblyError::SizeMismatch {
            session: 7,
            announced: 10,
            got: 6
        }
    );
    assert!(err.to_string().contains("session 7"));
    assert_eq!(asm.pending(), 0, "partial discarded");

    // Pieces overflow the announced size: detected before the last piece.
    asm.feed(header(8, 4)).unwrap();
    assert_eq!(
        asm.feed(piece(8, b"abcde", false)).unwrap_err(),
        AssemblyError::SizeMismatch {
            session: 8,
            announced: 4,
            got: 5
        }
    );
    assert_eq!(asm.pending(), 0);

    // Responses too.
    let mut asm = ResponseAssembler::new(Limits::default());
    asm.feed(ResponseFrame::Begin {
        session: 3,
        total: 2,
    })
    .unwrap();
    assert_eq!(
        asm.feed(ResponseFrame::Piece {
            session: 3,
            data: Bytes::from_static(b"x"),
            last: true
        })
        .unwrap_err(),
        AssemblyError::SizeMismatch {
            session: 3,
            announced: 2,
            got: 1
        }
    );
}

#[test]
fn too_large_is_rejected_before_buffering() {
    let mut asm = RequestAssembler::new(small_limits(1000, 4));
    let err = asm.feed(header(5, 1001)).unwrap_err();
    assert_eq!(
        err,
        AssemblyError::TooLarge {
            session: 5,
            size: 1001,
            max: 1000
        }
    );
    assert_eq!(asm.pending(), 0, "nothing buffered");
    // Its pieces are then unknown.
    assert_eq!(
        asm.feed(piece(5, b"a", false)).unwrap_err(),
        AssemblyError::UnknownSession { session: 5 }
    );
    // A header of u32::MAX is refused without allocating anything for it.
    let mut asm = ResponseAssembler::new(Limits::default());
    assert!(matches!(
        asm.feed(ResponseFrame::Begin {
            session: 1,
            total: u32::MAX
        }),
        Err(AssemblyError::TooLarge { session: 1, .. })
    ));
    assert_eq!(asm.pending(), 0);
    // Exactly max_message is fine.
    let mut asm = RequestAssembler::new(small_limits(3, 4));
    asm.feed(header(1, 3)).unwrap();
    assert!(asm.feed(piece(1, b"abc", true)).unwrap().is_some());
}

#[test]
fn too_many_pending() {
    let mut asm = RequestAssembler::new(small_limits(100, 2));
    asm.feed(header(1, 10)).unwrap();
    asm.feed(header(2, 10)).unwrap();
    let err = asm.feed(header(3, 10)).unwrap_err();
    assert_eq!(err, AssemblyError::TooManyPending { max: 2 });
    assert_eq!(asm.pending(), 2);
    // Completing one frees a slot.
    asm.feed(piece(1, &[0; 10], true)).unwrap().unwrap();
    asm.feed(header(3, 10)).unwrap();
    assert_eq!(asm.pending(), 2);

    let mut asm = ResponseAssembler::new(small_limits(100, 1));
    asm.feed(ResponseFrame::Begin {
        session: 1,
        total: 1,
    })
    .unwrap();
    assert_eq!(
        asm.feed(ResponseFrame::Begin {
            session: 2,
            total: 1
        })
        .unwrap_err(),
        AssemblyError::TooManyPending { max: 1 }
    );
}

#[test]
fn unknown_session() {
    let mut asm = RequestAssembler::new(Limits::default());
    let err = asm.feed(piece(42, b"x", true)).unwrap_err();
    assert_eq!(err, AssemblyError::UnknownSession { session: 42 });
    assert!(err.to_string().contains("session 42"));
    let mut asm = ResponseAssembler::new(Limits::default());
    assert_eq!(
        asm.feed(ResponseFrame::Piece {
            session: 9,
            data: Bytes::new(),
            last: false
        })
        .unwrap_err(),
        AssemblyError::UnknownSession { session: 9 }
    );
}

#[test]
fn duplicate_session() {
    let mut asm = RequestAssembler::new(Limits::default());
    asm.feed(header(6, 4)).unwrap();
    asm.feed(piece(6, b"ab", false)).unwrap();
    let err = asm.feed(header(6, 100)).unwrap_err();
    assert_eq!(err, AssemblyError::DuplicateSession { session: 6 });
    // The earlier partial message is kept and still completes.
    let req = asm.feed(piece(6, b"cd", true)).unwrap().unwrap();
    assert_eq!(req.payload, &b"abcd"[..]);

    let mut asm = ResponseAssembler::new(Limits::default());
    asm.feed(ResponseFrame::Begin {
        session: 2,
        total: 1,
    })
    .unwrap();
    assert_eq!(
        asm.feed(ResponseFrame::Begin {
            session: 2,
            total: 1
        })
        .unwrap_err(),
        AssemblyError::DuplicateSession { session: 2 }
    );
}

// ---- assembler behaviour --------------------------------------------------------------

#[test]
fn interleaved_multipart_messages() {
    let mut asm = RequestAssembler::new(Limits::default());
    asm.feed(header(1, 4)).unwrap();
    asm.feed(RequestFrame::Header {
        address: echo(),
        session: 2,
        push: true,
        total: 3,
    })
    .unwrap();
    assert_eq!(
        asm.feed(RequestFrame::Trace(Bytes::from_static(b"t")))
            .unwrap(),
        None
    );
    asm.feed(piece(2, b"x", false)).unwrap();
    asm.feed(piece(1, b"ab", false)).unwrap();
    assert_eq!(
        asm.feed(piece(2, b"yz", true)).unwrap(),
        Some(Request {
            address: echo(),
            session: 2,
            push: true,
            payload: Bytes::from_static(b"xyz")
        })
    );
    assert_eq!(asm.pending(), 1);
    let done = asm.feed(piece(1, b"cd", true)).unwrap().unwrap();
    assert_eq!(
        (done.session, done.push, &done.payload[..]),
        (1, false, &b"abcd"[..])
    );
    assert_eq!(asm.pending(), 0);
}

#[test]
fn whole_response_ends_a_partial_one() {
    let mut asm = ResponseAssembler::new(Limits::default());
    asm.feed(ResponseFrame::Begin {
        session: 5,
        total: 100,
    })
    .unwrap();
    let got = asm
        .feed(ResponseFrame::Err {
            session: 5,
            message: Bytes::from_static(b"boom"),
        })
        .unwrap();
    assert_eq!(
        got,
        Some(Response {
            session: 5,
            result: Err(Bytes::from_static(b"boom"))
        })
    );
    assert_eq!(asm.pending(), 0);
}

#[test]
fn zero_total_multipart_completes_on_empty_last_piece() {
    let mut asm = ResponseAssembler::new(Limits::default());
    asm.feed(ResponseFrame::Begin {
        session: 1,
        total: 0,
    })
    .unwrap();
    let got = asm
        .feed(ResponseFrame::Piece {
            session: 1,
            data: Bytes::new(),
            last: true,
        })
        .unwrap();
    assert_eq!(
        got,
        Some(Response {
            session: 1,
            result: Ok(Bytes::new())
        })
    );
}

#[test]
fn raw_bytes_of_a_numeric_header() {
    // 0x01, addr 0x0000_0009, session 3, total 0x8000 — built by hand.
    let mut body = BytesMut::new();
    body.put_u8(0x01);
    body.put_u32_le(9);
    body.put_u32_le(3);
    body.put_u32_le(0x8000);
    assert_eq!(
        decode_request_frame(body.freeze()).unwrap(),
        RequestFrame::Header {
            address: Address::Id(9),
            session: 3,
            push: false,
            total: 0x8000
        }
    );
}

#[test]
fn too_much_pending() {
    // Two messages of 60 bytes fit in 128 announced bytes; a third does not, until one
    // of the first two completes.
    let mut asm = RequestAssembler::new(Limits {
        max_message: 100,
        max_pending: 10,
        max_pending_bytes: 128,
    });
    asm.feed(header(1, 60)).unwrap();
    asm.feed(header(2, 60)).unwrap();
    assert_eq!(
        asm.feed(header(3, 60)).unwrap_err(),
        AssemblyError::TooMuchPending {
            session: 3,
            size: 60,
            pending: 120,
            max: 128
        }
    );
    assert_eq!(asm.pending(), 2);
    asm.feed(piece(1, &[7; 60], true)).unwrap().unwrap();
    asm.feed(header(3, 60)).unwrap();
    assert_eq!(asm.pending(), 2);
}
