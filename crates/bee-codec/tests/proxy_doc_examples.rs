//! The worked examples of `docs/protocol.md` (the team's frame of section 4, its two
//! reply forms, and how it nests in skynet.pack and a cluster push in section 5), pinned
//! byte for byte so the document cannot drift from the code. If one of these fails, fix
//! the code or update the document and the hex here together.

use bee_codec::cluster::{self, Address, RequestFrame};
use bee_codec::seri;
use bee_codec::Value;
use bytes::{Bytes, BytesMut};

/// `game.LoginReq { uid: 10076447, token: "abc" }` as protobuf.
const LOGIN_BODY: &[u8] = b"\x08\x9f\x82\xe7\x04\x12\x03abc";

fn unhex(s: &str) -> Bytes {
    Bytes::from(hex::decode(s).unwrap())
}

/// Section 5: what CServiceProxy puts on the wire for a frame — a whole push of
/// `skynet.pack("text", frame)` to `"@service"` — and what the receiver reads back.
#[test]
fn kkt_frame_as_a_cluster_push() {
    use bee_codec::kkt::{self, KktFrame};
    let frame = KktFrame::new(kkt::SUBTYPE_PROTOBUF, 10076447, "game.LoginReq", LOGIN_BODY)
        .to("lpersistence_3", "lpersistence")
        .from("lobby", "lobby_native")
        .encode()
        .unwrap();
    let payload = seri::pack(&[Value::from("text"), Value::String(frame.clone())]).unwrap();
    let mut out = BytesMut::new();
    let addr = Address::Name(Bytes::from_static(b"@lpersistence"));
    cluster::encode_push(&mut out, &addr, 0, &payload).unwrap();
    let wire = out.freeze();
    // 2-byte BE length, 0x80 (request, string address, whole), name length + "@lpersistence",
    // session 0 (u32 LE), then the payload.
    assert_eq!(
        hex::encode(&wire),
        "007f\
         80 0d 406c70657273697374656e6365 00000000\
         2474657874 156400\
         000e000c0005000c\
         6c70657273697374656e63655f33 6c70657273697374656e6365 6c6f626279 6c6f6262795f6e6174697665\
         00000010 000000000099c11f 000d67616d652e4c6f67696e526571 00000000 0000000000000000\
         089f82e7041203616263"
            .replace(' ', "")
    );
    let len = usize::from(u16::from_be_bytes([wire[0], wire[1]]));
    assert_eq!(len + 2, wire.len());
    match cluster::decode_request_frame(wire.slice(2..)).unwrap() {
        RequestFrame::Whole(r) => {
            assert!(r.push);
            assert_eq!(r.address, addr);
            let values = seri::unpack(&r.payload).unwrap();
            assert_eq!(values, vec![Value::from("text"), Value::String(frame)]);
        }
        other => panic!("expected a whole push, got {other:?}"),
    }
}

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
    // The offsets of the table in section 4.
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

/// Section 4, "Decoding rules": a 70000-byte name is refused, not written with a
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
