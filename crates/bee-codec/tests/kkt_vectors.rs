//! Checks the kkt codec against `tests/data/kkt.json`, the game team's frames as their C++
//! and Lua write them (a byte-identical copy of `spec/vectors/kkt.json`). Every `valid`
//! case is decoded (fields compared) and encoded from its fields (bytes compared); every
//! `invalid` case is refused by every decoder without a panic, with the expected field.

use bee_codec::kkt::{
    self, reply_from_lua, reply_from_native, ClientFrame, KktError, KktFrame, KktHeader,
};
use bee_codec::seri;
use bee_codec::Value;
use bytes::Bytes;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

const DATA: &[u8] = include_bytes!("data/kkt.json");
/// sha256 of `spec/vectors/kkt.json` as delivered: the copy must be unchanged.
const DATA_SHA256: &str = "a38aaaa90df765480871c96c039b3adf73ff5b2b5dd94324dbae685f8649a7a8";

fn load() -> Json {
    assert_eq!(
        hex::encode(Sha256::digest(DATA)),
        DATA_SHA256,
        "tests/data/kkt.json differs from the spec's vectors"
    );
    serde_json::from_slice(DATA).expect("kkt.json parses")
}

fn unhex(s: &str) -> Bytes {
    Bytes::from(hex::decode(s).expect("hex"))
}

fn s<'a>(fields: &'a Json, key: &str) -> &'a str {
    fields[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is a string"))
}

fn int(fields: &Json, key: &str) -> i64 {
    fields[key]
        .as_i64()
        .unwrap_or_else(|| panic!("{key} is an integer"))
}

/// The frame a case's `fields` describe (names absent from the layout are empty).
fn frame_of(fields: &Json) -> KktFrame {
    let opt = |key: &str| {
        fields
            .get(key)
            .map(|v| Bytes::from(v.as_str().expect("a string").to_string()))
            .unwrap_or_default()
    };
    let roomid = int(fields, "roomid");
    KktFrame {
        remote_node: opt("remote_node"),
        remote_service: opt("remote_service"),
        source_node: opt("source_node"),
        source_service: opt("source_service"),
        sub_type: u32::try_from(int(fields, "sub_type")).unwrap(),
        uid: int(fields, "uid"),
        name: Bytes::from(s(fields, "name").to_string()),
        // The vectors write roomid as the signed int the C++ side holds.
        roomid: i32::try_from(roomid).unwrap() as u32,
        session: fields
            .get("session")
            .map(|v| v.as_u64().unwrap())
            .unwrap_or(0),
        body: unhex(s(fields, "pb_hex")),
    }
}

fn check_v2(name: &str, fields: &Json, bytes: &Bytes) {
    let want = frame_of(fields);
    let got = KktFrame::decode(bytes).unwrap_or_else(|e| panic!("{name}: decode: {e}"));
    assert_eq!(got, want, "{name}: decoded fields");
    assert_eq!(
        got.roomid_i32() as i64,
        int(fields, "roomid"),
        "{name}: roomid as i32"
    );
    assert_eq!(got.remote_node_str().unwrap(), s(fields, "remote_node"));
    assert_eq!(
        got.remote_service_str().unwrap(),
        s(fields, "remote_service")
    );
    assert_eq!(got.source_node_str().unwrap(), s(fields, "source_node"));
    assert_eq!(
        got.source_service_str().unwrap(),
        s(fields, "source_service")
    );
    assert_eq!(got.name_str().unwrap(), s(fields, "name"));
    // Zero copy: the body is the tail of the input.
    assert_eq!(
        got.body.as_ptr(),
        bytes[bytes.len() - got.body.len()..].as_ptr()
    );

    let encoded = want
        .encode()
        .unwrap_or_else(|e| panic!("{name}: encode: {e}"));
    assert_eq!(
        hex::encode(&encoded),
        hex::encode(bytes),
        "{name}: encoded bytes"
    );
    assert_eq!(want.encoded_len(), bytes.len(), "{name}: encoded_len");

    let h = KktHeader::peek(bytes).unwrap_or_else(|e| panic!("{name}: peek: {e}"));
    assert_eq!(h.remote_node, &want.remote_node[..]);
    assert_eq!(h.remote_service, &want.remote_service[..]);
    assert_eq!(h.source_node, &want.source_node[..]);
    assert_eq!(h.source_service, &want.source_service[..]);
    assert_eq!(
        (h.sub_type, h.uid, h.roomid, h.session),
        (want.sub_type, want.uid, want.roomid, want.session),
        "{name}: peeked numbers"
    );
    assert_eq!(h.name, &want.name[..]);
    assert_eq!(&bytes[h.body_offset..], &want.body[..]);
    assert_eq!(kkt::peek_uid(bytes), Ok(want.uid));
}

fn check_inner(name: &str, fields: &Json, bytes: &Bytes) {
    let want = frame_of(fields);
    assert_eq!(KktFrame::decode_inner(bytes).unwrap(), want, "{name}");
    assert_eq!(
        hex::encode(want.encode_inner().unwrap()),
        hex::encode(bytes),
        "{name}"
    );
}

fn check_v1(name: &str, fields: &Json, bytes: &Bytes) {
    let inner = unhex(s(fields, "inner_hex"));
    let want = KktFrame::decode_inner(&inner).unwrap().to(
        s(fields, "remote_node").to_string(),
        s(fields, "remote_service").to_string(),
    );
    assert_eq!(KktFrame::decode_v1(bytes).unwrap(), want, "{name}");
    assert_eq!(
        hex::encode(want.encode_v1().unwrap()),
        hex::encode(bytes),
        "{name}"
    );
    // The inner frame is the tail of the v1 frame.
    assert!(bytes.ends_with(&inner));
    // A v1 frame is not a valid v2 frame here (its uid would run past the end).
    assert!(KktFrame::decode(bytes).is_err());
}

fn check_client(name: &str, fields: &Json, bytes: &Bytes) {
    let want = ClientFrame {
        name: Bytes::from(s(fields, "name").to_string()),
        roomid: int(fields, "roomid") as i32 as u32,
        body: unhex(s(fields, "pb_hex")),
    };
    assert_eq!(ClientFrame::decode(bytes).unwrap(), want, "{name}");
    assert_eq!(
        hex::encode(want.encode().unwrap()),
        hex::encode(bytes),
        "{name}"
    );
}

/// `skynet.pack(subtype, frame)` as the team's CServiceProxy sends it.
fn check_seri(name: &str, fields: &Json, bytes: &Bytes, v2_by_hex: &[Bytes]) {
    let values: Vec<Value> = fields["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| match v {
            Json::String(text) => Value::from(text.as_str()),
            other => Value::String(unhex(other["hex"].as_str().unwrap())),
        })
        .collect();
    assert_eq!(seri::unpack(bytes).unwrap(), values, "{name}: unpack");
    assert_eq!(
        hex::encode(seri::pack(&values).unwrap()),
        hex::encode(bytes),
        "{name}: pack"
    );
    let Value::String(frame) = &values[1] else {
        panic!("{name}: the second value is the frame")
    };
    // The frame inside decodes; the "text" one is exactly a v2 vector of this file, the
    // "rpc_response" one a bodiless Lua reply.
    let decoded = KktFrame::decode(frame).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(decoded.encode().unwrap(), *frame);
    match values[0].as_str() {
        Some("text") => assert!(v2_by_hex.contains(frame), "{name}"),
        Some("rpc_response") => {
            assert_eq!(decoded.sub_type, kkt::SUBTYPE_RPC_CLIENT);
            assert!(decoded.remote_node.is_empty() && decoded.source_node.is_empty());
            assert_eq!(decoded.session, 7);
            assert!(decoded.body.is_empty());
        }
        other => panic!("{name}: unexpected sub-type {other:?}"),
    }
}

#[test]
fn every_valid_case() {
    let data = load();
    let cases = data["valid"].as_array().unwrap();
    assert_eq!(cases.len(), 17, "kkt.json valid case count changed");
    let v2_by_hex: Vec<Bytes> = cases
        .iter()
        .filter(|c| c["format"] == "v2")
        .map(|c| unhex(c["hex"].as_str().unwrap()))
        .collect();
    let mut seen = std::collections::BTreeMap::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let format = case["format"].as_str().unwrap();
        let fields = &case["fields"];
        let bytes = unhex(case["hex"].as_str().unwrap());
        match format {
            "v2" => check_v2(name, fields, &bytes),
            "f4" => check_inner(name, fields, &bytes),
            "v1" => check_v1(name, fields, &bytes),
            "client" => check_client(name, fields, &bytes),
            "seri" => check_seri(name, fields, &bytes, &v2_by_hex),
            other => panic!("{name}: unknown format {other}"),
        }
        *seen.entry(format).or_insert(0) += 1;
    }
    let seen: Vec<_> = seen.into_iter().collect();
    assert_eq!(
        seen,
        [("client", 1), ("f4", 1), ("seri", 2), ("v1", 1), ("v2", 12)]
    );
}

/// The two reply vectors are what the helpers build from the rpc request vector.
#[test]
fn reply_vectors_come_from_the_request_vector() {
    let data = load();
    let case = |name: &str| {
        let c = data["valid"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"].as_str().unwrap().starts_with(name))
            .unwrap_or_else(|| panic!("no case {name}"));
        (frame_of(&c["fields"]), unhex(c["hex"].as_str().unwrap()))
    };
    let (request, request_bytes) = case("rpc request from C++");
    assert_eq!(request.sub_type, kkt::SUBTYPE_RPC_SERVER);
    let request = KktFrame::decode(&request_bytes).unwrap();

    let (lua, lua_bytes) = case("reply from Lua");
    let built = reply_from_lua(&request, lua.name.clone(), lua.body.clone());
    assert_eq!(built, lua);
    assert_eq!(built.encode().unwrap(), lua_bytes);

    let (native, native_bytes) = case("reply from C++");
    let built = reply_from_native(&request, native.name.clone(), native.body.clone());
    assert_eq!(built, native);
    assert_eq!(built.encode().unwrap(), native_bytes);
}

/// The first v2 vector, built with the builder as a C++ send would be.
#[test]
fn builder_matches_a_vector() {
    let data = load();
    let first = unhex(data["valid"][0]["hex"].as_str().unwrap());
    let f = KktFrame::new(
        kkt::SUBTYPE_PROTOBUF,
        10076447,
        "game.LoginReq",
        unhex("089f82e7041203616263"),
    )
    .to("lpersistence_3", "lpersistence")
    .from("shop_master_4", "shop_master");
    assert_eq!(f.encode().unwrap(), first);
}

#[test]
fn every_invalid_case_is_refused() {
    let data = load();
    let cases = data["invalid"].as_array().unwrap();
    assert_eq!(cases.len(), 14, "kkt.json invalid case count changed");
    // The field each case fails at (every invalid case is a truncation of some kind).
    let expected: &[(&str, &str)] = &[
        ("truncated to 0 bytes", "remote_node length"),
        ("truncated to 1 bytes", "remote_node length"),
        ("truncated to 7 bytes", "source_service length"),
        ("truncated to 8 bytes", "remote_node"),
        ("truncated to 12 bytes", "remote_service"),
        ("truncated to 21 bytes", "sub_type"),
        ("truncated to 25 bytes", "uid"),
        ("truncated to 33 bytes", "name length"),
        ("truncated to 35 bytes", "name"),
        ("truncated to 40 bytes", "name"),
        ("truncated to 44 bytes", "roomid"),
        ("truncated to 52 bytes", "session"),
        ("remote node length past the end", "remote_node"),
        ("name length past the end", "name"),
    ];
    for (case, &(want_name, want_field)) in cases.iter().zip(expected) {
        let name = case["name"].as_str().unwrap();
        assert_eq!(name, want_name);
        let bytes = unhex(case["hex"].as_str().unwrap());
        let err = KktFrame::decode(&bytes).expect_err(name);
        let KktError::Truncated {
            field,
            offset,
            needed,
            available,
        } = err
        else {
            panic!("{name}: expected Truncated, got {err:?}");
        };
        assert_eq!(field, want_field, "{name}");
        assert!(needed > available, "{name}");
        assert_eq!(offset + available, bytes.len(), "{name}");
        assert!(err.to_string().contains(field), "{name}: {err}");
        assert_eq!(KktHeader::peek(&bytes), Err(err.clone()), "{name}: peek");
        assert_eq!(kkt::peek_uid(&bytes), Err(err), "{name}: peek_uid");
        // The older-layout decoders must not panic on these either.
        let _ = KktFrame::decode_v1(&bytes);
        let _ = KktFrame::decode_inner(&bytes);
        let _ = ClientFrame::decode(&bytes);
    }
}
