//! Checks the cluster encoder and decoder against `tests/data/cluster.json`, the output of
//! stock skynet v1.6.0's cluster packers (copied from the shared spec vectors).

use bee_codec::cluster::{
    consumes_session, decode_request_frame, decode_response_frame, encode_push, encode_request,
    encode_response, encode_trace, next_session, Address, Limits, Request, RequestAssembler,
    RequestFrame, Response, ResponseAssembler, SPLIT,
};
use bee_codec::frame::FrameDecoder;
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};

/// skynet.pack of one string: short (< 32 bytes), or long with a u16 / u32 length.
fn pack_str(out: &mut Vec<u8>, s: &[u8]) {
    let len = s.len();
    if len < 32 {
        out.push(((len as u8) << 3) | 4);
    } else if len < 0x10000 {
        out.push(0x15);
        out.extend_from_slice(&(len as u16).to_le_bytes());
    } else {
        out.push(0x25);
        out.extend_from_slice(&(len as u32).to_le_bytes());
    }
    out.extend_from_slice(s);
}

fn pack_strs(strs: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in strs {
        pack_str(&mut out, s);
    }
    out
}

fn rep(byte: u8, n: usize) -> Vec<u8> {
    vec![byte; n]
}

fn name(s: &str) -> Address {
    Address::Name(Bytes::copy_from_slice(s.as_bytes()))
}

/// What a vector case packed, rebuilt by hand from its `input` description.
enum Input {
    Request {
        address: Address,
        session: u32,
        push: bool,
        payload: Vec<u8>,
    },
    Response {
        session: u32,
        result: Result<Vec<u8>, Vec<u8>>,
    },
    Trace(Vec<u8>),
}

fn req(address: Address, session: u32, payload: Vec<u8>) -> Input {
    Input::Request {
        address,
        session,
        push: false,
        payload,
    }
}

fn push(address: Address, session: u32, payload: Vec<u8>) -> Input {
    Input::Request {
        address,
        session,
        push: true,
        payload,
    }
}

fn expected_input(case: &str) -> Input {
    let big = Address::Id(16_777_232);
    let sink_id = Address::Id(16_777_226);
    match case {
        "req_number_small" => req(big, 1, pack_strs(&[b"lua", b"ping"])),
        "req_name_small" => req(name("@echo"), 7, pack_strs(&[b"hello"])),
        "push_number_small" => push(sink_id, 5, pack_strs(&[b"text", b"frame"])),
        "push_name_small" => push(name("@sink"), 9, pack_strs(&[b"m1"])),
        "req_query_name" => req(Address::Id(0), 3, pack_strs(&[b"lpersistence"])),
        "req_number_just_below_split" => req(big, 11, pack_strs(&[&rep(b'a', 32760)])),
        "req_number_at_split" => req(big, 12, pack_strs(&[&rep(b'b', 32765)])),
        "req_number_multi" => req(big, 13, pack_strs(&[&rep(b'c', 100_000)])),
        "req_name_multi" => req(name("@echo"), 14, pack_strs(&[&rep(b'd', 70_000)])),
        "push_number_multi" => push(sink_id, 15, pack_strs(&[&rep(b'e', 40_000)])),
        "push_name_multi" => push(name("@sink"), 16, pack_strs(&[&rep(b'f', 65_536)])),
        "req_session_wrap" => req(big, 0x7FFF_FFFF, pack_strs(&[b"wrap"])),
        "trace" => Input::Trace(b"(lobby-lpersistence_3-1):01000010-1".to_vec()),
        "resp_ok_small" => Input::Response {
            session: 1,
            result: Ok(pack_strs(&[b"pong"])),
        },
        "resp_error" => Input::Response {
            session: 2,
            result: Err(b"name not found".to_vec()),
        },
        "resp_ok_exact_split" => Input::Response {
            session: 3,
            result: Ok(rep(b'g', 32768)),
        },
        "resp_ok_multi" => Input::Response {
            session: 4,
            result: Ok(rep(b'h', 32769)),
        },
        "resp_ok_multi_large" => Input::Response {
            session: 5,
            result: Ok(rep(b'i', 200_000)),
        },
        "resp_error_truncated" => Input::Response {
            session: 6,
            result: Err(rep(b'j', 40_000)),
        },
        // skynet.packstring(0x01000010): a 32-bit integer (tag 0x22) then its LE bytes.
        "resp_query_ok" => Input::Response {
            session: 7,
            result: Ok(vec![0x22, 0x10, 0x00, 0x00, 0x01]),
        },
        other => panic!("vector case {other:?} has no expected input in this test"),
    }
}

/// The `[N bytes]` annotation of a case's input.
fn announced_len(input: &str) -> Option<usize> {
    let end = input.rfind(" bytes]")?;
    let start = input[..end].rfind('[')? + 1;
    input[start..end].parse().ok()
}

fn load_cases() -> Vec<serde_json::Value> {
    let text = include_str!("data/cluster.json");
    let value: serde_json::Value = serde_json::from_str(text).expect("cluster.json parses");
    value.as_array().expect("cluster.json is an array").clone()
}

/// Split `out` into frame bodies with the streaming decoder; all bytes must be consumed.
fn split_frames(out: &[u8]) -> Vec<Bytes> {
    let mut buf = BytesMut::from(out);
    let mut decoder = FrameDecoder::default();
    let mut bodies = Vec::new();
    while let Some(body) = decoder.decode(&mut buf).expect("frame decodes") {
        bodies.push(body);
    }
    assert!(buf.is_empty(), "{} trailing bytes after frames", buf.len());
    bodies
}

fn check_bytes(case: &serde_json::Value, out: &[u8], bodies: &[Bytes]) {
    let name = case["name"].as_str().unwrap();
    let frames = case["frames"].as_u64().unwrap() as usize;
    assert_eq!(bodies.len(), frames, "{name}: frame count");

    let sizes: Vec<usize> = case["frame_bytes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let got_sizes: Vec<usize> = bodies.iter().map(|b| b.len() + 2).collect();
    assert_eq!(got_sizes, sizes, "{name}: frame sizes");

    let heads = case["head_hex"].as_array().unwrap();
    assert_eq!(heads.len(), frames, "{name}: head_hex count");
    let mut at = 0;
    for (i, (head, size)) in heads.iter().zip(&sizes).enumerate() {
        let head = head.as_str().unwrap();
        let frame = &out[at..at + size];
        at += size;
        match head.split_once("...(") {
            Some((prefix, rest)) => {
                assert_eq!(
                    rest,
                    format!("{size} bytes)"),
                    "{name}: frame {i} size note"
                );
                assert_eq!(
                    hex::encode(&frame[..prefix.len() / 2]),
                    prefix,
                    "{name}: frame {i} head"
                );
            }
            None => assert_eq!(hex::encode(frame), head, "{name}: frame {i} bytes"),
        }
    }
    assert_eq!(at, out.len(), "{name}: total size");

    let sha = hex::encode(Sha256::digest(out));
    assert_eq!(
        sha,
        case["sha256_all"].as_str().unwrap(),
        "{name}: sha256 of all frames"
    );
}

fn check_request(
    case: &serde_json::Value,
    address: Address,
    session: u32,
    push: bool,
    payload: Vec<u8>,
) {
    let name = case["name"].as_str().unwrap();
    let input = case["input"].as_str().unwrap();
    assert_eq!(
        announced_len(input),
        Some(payload.len()),
        "{name}: payload size"
    );
    assert!(
        input.contains(&format!("session={session},")),
        "{name}: session in input"
    );
    assert_eq!(
        input.starts_with("packpush("),
        push,
        "{name}: push in input"
    );

    let mut out = BytesMut::new();
    if push {
        encode_push(&mut out, &address, session, &payload).unwrap();
    } else {
        encode_request(&mut out, &address, session, &payload).unwrap();
    }
    let bodies = split_frames(&out);
    check_bytes(case, &out, &bodies);

    // Session bookkeeping: the packer's next session, and whether a sender adopts it.
    let next = case["next_session"].as_u64().unwrap() as u32;
    assert_eq!(next_session(session), next, "{name}: next_session");
    let multipart = payload.len() >= SPLIT;
    assert_eq!(
        consumes_session(push, payload.len()),
        !push || multipart,
        "{name}"
    );

    // Decode back through the assembler: exactly one request, after the last frame.
    let mut assembler = RequestAssembler::new(Limits::default());
    let last = bodies.len() - 1;
    for (i, body) in bodies.into_iter().enumerate() {
        let frame = decode_request_frame(body).unwrap();
        if i == 0 {
            assert_eq!(
                matches!(frame, RequestFrame::Header { .. }),
                multipart,
                "{name}: first frame kind"
            );
        }
        let got = assembler.feed(frame).unwrap();
        if i < last {
            assert!(
                got.is_none(),
                "{name}: message completed early at frame {i}"
            );
            continue;
        }
        let wire_session = if push && !multipart { 0 } else { session };
        assert_eq!(
            got,
            Some(Request {
                address: address.clone(),
                session: wire_session,
                push,
                payload: Bytes::from(payload.clone()),
            }),
            "{name}: decoded request"
        );
    }
    assert_eq!(assembler.pending(), 0, "{name}: nothing left pending");
}

fn check_response(case: &serde_json::Value, session: u32, result: Result<Vec<u8>, Vec<u8>>) {
    let name = case["name"].as_str().unwrap();
    let input = case["input"].as_str().unwrap();
    let data_len = match &result {
        Ok(d) | Err(d) => d.len(),
    };
    assert_eq!(announced_len(input), Some(data_len), "{name}: data size");
    assert!(
        input.contains(&format!("session={session},")),
        "{name}: session in input"
    );
    assert_eq!(
        input.contains("ok=true"),
        result.is_ok(),
        "{name}: ok flag in input"
    );

    let mut out = BytesMut::new();
    encode_response(&mut out, session, result.as_deref().map_err(|e| &e[..])).unwrap();
    let bodies = split_frames(&out);
    check_bytes(case, &out, &bodies);

    let expected = match result {
        Ok(d) => Ok(Bytes::from(d)),
        Err(mut e) => {
            e.truncate(SPLIT);
            Err(Bytes::from(e))
        }
    };
    let mut assembler = ResponseAssembler::new(Limits::default());
    let last = bodies.len() - 1;
    for (i, body) in bodies.into_iter().enumerate() {
        let got = assembler
            .feed(decode_response_frame(body).unwrap())
            .unwrap();
        if i < last {
            assert!(
                got.is_none(),
                "{name}: response completed early at frame {i}"
            );
        } else {
            assert_eq!(
                got,
                Some(Response {
                    session,
                    result: expected.clone()
                }),
                "{name}: decoded response"
            );
        }
    }
    assert_eq!(assembler.pending(), 0, "{name}: nothing left pending");
}

fn check_trace(case: &serde_json::Value, tag: Vec<u8>) {
    let input = case["input"].as_str().unwrap();
    assert!(input.contains(std::str::from_utf8(&tag).unwrap()));
    let mut out = BytesMut::new();
    encode_trace(&mut out, &tag).unwrap();
    let bodies = split_frames(&out);
    check_bytes(case, &out, &bodies);
    let frame = decode_request_frame(bodies[0].clone()).unwrap();
    assert_eq!(frame, RequestFrame::Trace(Bytes::from(tag)));
    let mut assembler = RequestAssembler::new(Limits::default());
    assert_eq!(assembler.feed(frame).unwrap(), None);
}

#[test]
fn every_vector_case() {
    let cases = load_cases();
    assert_eq!(
        cases.len(),
        20,
        "cluster.json case count changed; update this test"
    );
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        match expected_input(name) {
            Input::Request {
                address,
                session,
                push,
                payload,
            } => check_request(case, address, session, push, payload),
            Input::Response { session, result } => check_response(case, session, result),
            Input::Trace(tag) => check_trace(case, tag),
        }
    }
}

#[test]
fn whole_push_does_not_consume_a_session() {
    // The sender of push_number_small (session 5) keeps 5 for its next message; the sender
    // of push_number_multi (session 15) moves on to 16, like every request does.
    for case in load_cases() {
        let name = case["name"].as_str().unwrap();
        if let Input::Request {
            session,
            push,
            payload,
            ..
        } = expected_input(name)
        {
            let after = if consumes_session(push, payload.len()) {
                next_session(session)
            } else {
                session
            };
            let adopted = case["next_session"].as_u64().unwrap() as u32;
            if push && payload.len() < SPLIT {
                assert_eq!(after, session, "{name}");
                assert_ne!(after, adopted, "{name}");
            } else {
                assert_eq!(after, adopted, "{name}");
            }
        }
    }
}
