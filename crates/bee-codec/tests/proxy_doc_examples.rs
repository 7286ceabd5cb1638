//! The worked examples of `docs/protocol.md` (how the proxy header, game frame, rpc
//! envelope, skynet.pack and cluster frames nest on the wire, and the team's kkt frame of
//! section 8), pinned byte for byte so the document cannot drift from the code. If one of
//! these fails, fix the code or update the document and the hex here together.

use bee_codec::cluster::{self, Address, RequestFrame};
use bee_codec::protopack::GameFrame;
use bee_codec::proxy::ProxyFrame;
use bee_codec::rpc::{self, RpcEnvelope, RpcKind};
use bee_codec::seri;
use bee_codec::Value;
use bytes::{Bytes, BytesMut};

/// `game.LoginReq { uid: 10076447, token: "abc" }` as protobuf.
const LOGIN_BODY: &[u8] = b"\x08\x9f\x82\xe7\x04\x12\x03abc";
const GAME_FRAME: &str = "000000000099c11f0d67616d652e4c6f67696e526571089f82e7041203616263";

/// A whole push to `@service`, as complete frame bytes.
fn push_frame(service: &str, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    let addr = Address::Name(Bytes::from(format!("@{service}")));
    cluster::encode_push(&mut out, &addr, 0, payload).unwrap();
    out.freeze()
}

/// Decode one complete frame holding a whole push: (address, payload).
fn decode_push(frame: &Bytes) -> (Address, Bytes) {
    let len = usize::from(u16::from_be_bytes([frame[0], frame[1]]));
    assert_eq!(len + 2, frame.len());
    match cluster::decode_request_frame(frame.slice(2..)).unwrap() {
        RequestFrame::Whole(r) => {
            assert!(r.push);
            (r.address, r.payload)
        }
        other => panic!("expected a whole push, got {other:?}"),
    }
}

fn name(s: &str) -> Address {
    Address::Name(Bytes::from(s.to_string()))
}

fn unhex(s: &str) -> Bytes {
    Bytes::from(hex::decode(s).unwrap())
}

/// Section 5 and 7.1: a native service sends a game frame to `lpersistence` on node
/// `lpersistence_3` through CServiceProxy.
#[test]
fn game_frame_through_cservice_proxy() {
    let mut gf = BytesMut::new();
    GameFrame::encode_into(10076447, b"game.LoginReq", LOGIN_BODY, &mut gf).unwrap();
    let gf = gf.freeze();
    assert_eq!(hex::encode(&gf), GAME_FRAME);

    // What the native service hands to CServiceProxy.
    let pf = ProxyFrame::encode(b"lpersistence_3", b"lpersistence", &gf).unwrap();
    assert_eq!(
        hex::encode(&pf),
        "000e000c6c70657273697374656e63655f336c70657273697374656e6365\
         000000000099c11f0d67616d652e4c6f67696e526571089f82e7041203616263"
    );
    let decoded = ProxyFrame::decode(&pf).unwrap();
    assert_eq!(decoded.node_str().unwrap(), "lpersistence_3");
    assert_eq!(decoded.service_str().unwrap(), "lpersistence");
    assert!(!rpc::is_envelope(&decoded.message));

    // What CServiceProxy sends: skynet.pack("text", game_frame) ...
    let text = seri::pack(&[Value::from("text"), Value::String(decoded.message.clone())]).unwrap();
    assert_eq!(
        hex::encode(&text),
        "247465787415200000000000\
         0099c11f0d67616d652e4c6f67696e526571089f82e7041203616263"
    );
    // ... as a whole push to "@lpersistence".
    let frame = push_frame("lpersistence", &text);
    assert_eq!(
        hex::encode(&frame),
        "003b800d406c70657273697374656e636500000000\
         2474657874152000000000000099c11f0d67616d652e4c6f67696e526571089f82e7041203616263"
    );
    let (addr, payload) = decode_push(&frame);
    assert_eq!(addr, name("@lpersistence"));
    let values = seri::unpack(&payload).unwrap();
    assert_eq!(values[0].as_str(), Some("text"));
    let Value::String(inner) = &values[1] else {
        panic!("second value is the frame")
    };
    let back = GameFrame::decode(inner).unwrap();
    assert_eq!(back.uid, 10076447);
    assert_eq!(back.name_str().unwrap(), "game.LoginReq");
    assert_eq!(&back.body[..], LOGIN_BODY);
}

/// Sections 6 and 7.2: service `shop` on node `lobby` makes rpc call 7 to `lpersistence`
/// on `lpersistence_3` with `skynet.pack("lua", "ping")`; the reply `skynet.pack("pong")`
/// comes back as a ReplyOk envelope pushed to `@shop` on `lobby`.
#[test]
fn rpc_call_and_reply_across_nodes() {
    let inner = seri::pack(&[Value::from("lua"), Value::from("ping")]).unwrap();
    assert_eq!(hex::encode(&inner), "1c6c75612470696e67");
    let call = RpcEnvelope::encode(RpcKind::Call, 7, b"lobby", b"shop", &inner).unwrap();
    assert_eq!(
        hex::encode(&call),
        "b70100000007000500046c6f62627973686f701c6c75612470696e67"
    );

    let pf = ProxyFrame::encode(b"lpersistence_3", b"lpersistence", &call).unwrap();
    assert_eq!(
        hex::encode(&pf),
        "000e000c6c70657273697374656e63655f336c70657273697374656e6365\
         b70100000007000500046c6f62627973686f701c6c75612470696e67"
    );
    let message = ProxyFrame::decode(&pf).unwrap().message;
    assert!(rpc::is_envelope(&message));

    let wire = seri::pack(&[Value::from("rpc"), Value::String(message)]).unwrap();
    assert_eq!(
        hex::encode(&wire),
        "1c727063e4b70100000007000500046c6f62627973686f701c6c75612470696e67"
    );
    let frame = push_frame("lpersistence", &wire);
    assert_eq!(
        hex::encode(&frame),
        "0034800d406c70657273697374656e636500000000\
         1c727063e4b70100000007000500046c6f62627973686f701c6c75612470696e67"
    );

    // The receiver decodes the envelope and answers the caller named in it.
    let (addr, payload) = decode_push(&frame);
    assert_eq!(addr, name("@lpersistence"));
    let values = seri::unpack(&payload).unwrap();
    assert_eq!(values[0].as_str(), Some("rpc"));
    let Value::String(env_bytes) = &values[1] else {
        panic!("second value is the envelope")
    };
    let env = RpcEnvelope::decode(env_bytes).unwrap();
    assert_eq!(env.message, inner);

    let reply = seri::pack(&[Value::from("pong")]).unwrap();
    let ok = env.reply_ok(&reply).unwrap();
    assert_eq!(
        hex::encode(&ok),
        "b70300000007000500046c6f62627973686f7024706f6e67"
    );
    let wire = seri::pack(&[Value::from("rpc"), Value::String(ok)]).unwrap();
    let to = env.service_str().unwrap().to_string();
    let frame = push_frame(&to, &wire);
    assert_eq!(
        hex::encode(&frame),
        "002880054073686f7000000000\
         1c727063c4b70300000007000500046c6f62627973686f7024706f6e67"
    );
    let (addr, _) = decode_push(&frame);
    assert_eq!(addr, name("@shop"));

    let err = env.reply_err("unknown command").unwrap();
    assert_eq!(
        hex::encode(&err),
        "b70400000007000500046c6f62627973686f70756e6b6e6f776e20636f6d6d616e64"
    );
    let err = RpcEnvelope::decode(&err).unwrap();
    assert_eq!((err.kind, err.session), (RpcKind::ReplyErr, 7));
    assert_eq!(&err.message[..], b"unknown command");
}

/// The first byte tells a game frame from an envelope (uid < 2^63 vs MAGIC 0xB7).
#[test]
fn first_byte_disambiguates() {
    let gf = unhex(GAME_FRAME);
    assert!(gf[0] < 0x80);
    assert!(!rpc::is_envelope(&gf));
    assert!(RpcEnvelope::decode(&gf).is_err());
    let call = RpcEnvelope::encode(RpcKind::Send, 0, b"lobby", b"shop", b"").unwrap();
    assert!(GameFrame::decode(&call).is_err());
}

/// Section 8: the team's frame. `shop_master` on `shop_master_4` makes rpc request 7 to
/// `activity_master` on `activity_master_5`; a Lua service and a C++ service answer it.
/// The three frames are also vectors of `tests/data/kkt.json`.
#[test]
fn kkt_request_and_both_replies() {
    use bee_codec::kkt::{self, KktFrame, KktHeader};

    let request = KktFrame::new(
        kkt::SUBTYPE_RPC_SERVER,
        10076447,
        "game.LoginReq",
        LOGIN_BODY,
    )
    .to("activity_master_5", "activity_master")
    .from("shop_master_4", "shop_master")
    .session(7);
    let bytes = request.encode().unwrap();
    assert_eq!(bytes.len(), 113);
    assert_eq!(
        hex::encode(&bytes),
        "0011000f000d000b\
         61637469766974795f6d61737465725f35\
         61637469766974795f6d6173746572\
         73686f705f6d61737465725f34\
         73686f705f6d6173746572\
         00000012\
         000000000099c11f\
         000d67616d652e4c6f67696e526571\
         00000000\
         0000000000000007\
         089f82e7041203616263"
    );
    // The offsets of the table in section 8.
    let h = KktHeader::peek(&bytes).unwrap();
    assert_eq!(&bytes[64..68], &[0, 0, 0, 0x12]);
    assert_eq!(&bytes[78..91], b"game.LoginReq");
    assert_eq!(&bytes[95..103], &7u64.to_be_bytes());
    assert_eq!(h.body_offset, 103);

    // What CServiceProxy pushes: skynet.pack("text", request).
    let text = seri::pack(&[Value::from("text"), Value::String(bytes.clone())]).unwrap();
    assert_eq!(hex::encode(&text[..8]), "2474657874157100");
    assert_eq!(&text[8..], &bytes[..]);

    let decoded = KktFrame::decode(&bytes).unwrap();
    let lua = kkt::reply_from_lua(
        &decoded,
        "game.LoginResp",
        unhex("089f82e7041a0e706c617965723130303736343437"),
    );
    assert_eq!(
        hex::encode(lua.encode().unwrap()),
        "0000000000000000\
         00000011\
         000000000099c11f\
         000e67616d652e4c6f67696e52657370\
         00000000\
         0000000000000007\
         089f82e7041a0e706c617965723130303736343437"
    );
    let native = kkt::reply_from_native(&decoded, "game.LoginResp", unhex("089f82e704"));
    assert_eq!(
        hex::encode(native.encode().unwrap()),
        "000d000b0011000f\
         73686f705f6d61737465725f34\
         73686f705f6d6173746572\
         61637469766974795f6d61737465725f35\
         61637469766974795f6d6173746572\
         00000011\
         000000000099c11f\
         000e67616d652e4c6f67696e52657370\
         00000000\
         0000000000000007\
         089f82e704"
    );
}

/// Section 8, "Decoding rules": a 70000-byte name is refused, not written with a
/// truncated length.
#[test]
fn kkt_refuses_what_the_team_cpp_truncates() {
    use bee_codec::kkt::{KktError, KktFrame};
    let f = KktFrame::new(16, 1, vec![b'x'; 70000], Bytes::new());
    assert_eq!(
        f.encode(),
        Err(KktError::TooLong {
            field: "name",
            len: 70000
        })
    );
}
