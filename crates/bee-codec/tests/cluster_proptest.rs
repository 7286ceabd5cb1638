//! Property tests: every request, push and response survives encode -> frame stream cut
//! into random chunks -> decode -> reassembly unchanged; arbitrary bytes never panic the
//! decoders or the assemblers.

use bee_codec::cluster::{
    decode_request_frame, decode_response_frame, encode_push, encode_request, encode_response,
    Address, Limits, Request, RequestAssembler, Response, ResponseAssembler, SPLIT,
};
use bee_codec::frame::FrameDecoder;
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

/// Deterministic filler so large payloads are cheap to generate yet not uniform.
fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sizes biased towards the split boundaries, plus anything in 0..200_000.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        0usize..200_000,
        (SPLIT - 3..SPLIT + 3),
        (2 * SPLIT - 2..2 * SPLIT + 2),
        0usize..64,
    ]
}

fn address() -> impl Strategy<Value = Address> {
    prop_oneof![
        any::<u32>().prop_map(Address::Id),
        proptest::collection::vec(any::<u8>(), 1..=255).prop_map(|n| Address::Name(Bytes::from(n))),
    ]
}

/// Feed `stream` to a FrameDecoder in chunks whose sizes cycle through `chunks`.
fn frames_in_chunks(stream: &[u8], chunks: &[usize]) -> Vec<Bytes> {
    let mut decoder = FrameDecoder::default();
    let mut buf = BytesMut::new();
    let mut bodies = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < stream.len() {
        let n = chunks[i % chunks.len()].min(stream.len() - at);
        i += 1;
        buf.extend_from_slice(&stream[at..at + n]);
        at += n;
        while let Some(body) = decoder.decode(&mut buf).unwrap() {
            bodies.push(body);
        }
    }
    assert!(buf.is_empty(), "stream ends on a frame boundary");
    bodies
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(prop_oneof![1usize..8, 1usize..70_000], 1..16)
}

/// A request type byte (or a bad one) followed by bytes that are mostly 0..=4, so
/// sessions, name lengths and totals are small and often agree with each other.
fn small_body() -> impl Strategy<Value = Vec<u8>> {
    let kind = proptest::sample::select(vec![
        0x00u8, 0x80, 0x01, 0x41, 0x81, 0xC1, 0x02, 0x03, 0x04, 0x05,
    ]);
    let rest = proptest::collection::vec(prop_oneof![4 => 0u8..=4, 1 => any::<u8>()], 0..40);
    (kind, rest).prop_map(|(kind, mut rest)| {
        rest.insert(0, kind);
        rest
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn request_and_push_round_trip(
        address in address(),
        session in 1u32..=0x7FFF_FFFF,
        push in any::<bool>(),
        len in size(),
        seed in any::<u64>(),
        chunks in chunk_sizes(),
    ) {
        let data = payload(len, seed);
        let mut out = BytesMut::new();
        if push {
            encode_push(&mut out, &address, session, &data).unwrap();
        } else {
            encode_request(&mut out, &address, session, &data).unwrap();
        }
        let bodies = frames_in_chunks(&out, &chunks);
        prop_assert_eq!(bodies.len(), if len < SPLIT { 1 } else { 1 + len.div_ceil(SPLIT) });
        let mut asm = RequestAssembler::new(Limits::default());
        let mut done = Vec::new();
        for body in bodies {
            if let Some(req) = asm.feed(decode_request_frame(body).unwrap()).unwrap() {
                done.push(req);
            }
        }
        let wire_session = if push && len < SPLIT { 0 } else { session };
        prop_assert_eq!(done, vec![Request { address, session: wire_session, push, payload: Bytes::from(data) }]);
        prop_assert_eq!(asm.pending(), 0);
    }

    #[test]
    fn response_round_trip(
        session in 1u32..=u32::MAX,
        ok in any::<bool>(),
        len in size(),
        seed in any::<u64>(),
        chunks in chunk_sizes(),
    ) {
        let data = payload(len, seed);
        let mut out = BytesMut::new();
        let result = if ok { Ok(&data[..]) } else { Err(&data[..]) };
        encode_response(&mut out, session, result).unwrap();
        let mut asm = ResponseAssembler::new(Limits::default());
        let mut done = Vec::new();
        for body in frames_in_chunks(&out, &chunks) {
            if let Some(resp) = asm.feed(decode_response_frame(body).unwrap()).unwrap() {
                done.push(resp);
            }
        }
        let expected = if ok {
            Ok(Bytes::from(data))
        } else {
            Err(Bytes::copy_from_slice(&data[..len.min(SPLIT)]))
        };
        prop_assert_eq!(done, vec![Response { session, result: expected }]);
        prop_assert_eq!(asm.pending(), 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        stream in proptest::collection::vec(any::<u8>(), 0..4096),
        max_body in 0usize..70_000,
    ) {
        let limits = Limits { max_message: 1 << 16, max_pending: 8, ..Limits::default() };
        let mut requests = RequestAssembler::new(limits);
        let mut responses = ResponseAssembler::new(limits);
        let mut decoder = FrameDecoder::new(max_body);
        let mut buf = BytesMut::from(&stream[..]);
        while let Ok(Some(body)) = decoder.decode(&mut buf) {
            if let Ok(frame) = decode_request_frame(body.clone()) {
                let _ = requests.feed(frame);
            }
            if let Ok(frame) = decode_response_frame(body) {
                let _ = responses.feed(frame);
            }
            prop_assert!(requests.pending() <= 8 && responses.pending() <= 8);
        }
        // And every body taken directly, unframed.
        let body = Bytes::from(stream);
        let _ = decode_request_frame(body.clone());
        let _ = decode_response_frame(body);
    }

    #[test]
    fn arbitrary_frame_sequences_stay_bounded(
        bodies in proptest::collection::vec(small_body(), 0..64),
    ) {
        // Short bodies of small byte values with real type bytes reach every branch
        // (headers, pieces, matching sessions) far more often than fully random streams.
        let limits = Limits { max_message: 64, max_pending: 3, ..Limits::default() };
        let mut requests = RequestAssembler::new(limits);
        let mut responses = ResponseAssembler::new(limits);
        for body in bodies {
            let body = Bytes::from(body);
            if let Ok(frame) = decode_request_frame(body.clone()) {
                if let Ok(Some(req)) = requests.feed(frame) {
                    prop_assert!(req.payload.len() <= 0xFFFF);
                }
            }
            if let Ok(frame) = decode_response_frame(body) {
                let _ = responses.feed(frame);
            }
            prop_assert!(requests.pending() <= 3 && responses.pending() <= 3);
        }
    }
}
