//! Fuzz target `kkt`: the game team's frame decoders ([`KktFrame::decode`],
//! [`KktHeader::peek`], [`KktFrame::decode_v1`], [`KktFrame::decode_inner`],
//! [`ClientFrame::decode`]) on arbitrary bytes.
//!
//! Checked: no panic; `peek` and `peek_uid` succeed exactly when `decode` does, with the
//! same header values and the same error; an accepted frame re-encodes (`encode`,
//! `encode_into` after a prefix) to exactly the input, `encoded_len` is its size, its body
//! starts at the peeked `body_offset`, and both reply forms encode and decode back to
//! themselves; a refusal is `Truncated` with a field that really does not fit. Frames
//! accepted by the older-layout decoders re-encode to exactly the input too.
#![no_main]

use bee_codec::kkt::{
    peek_uid, reply_from_lua, reply_from_native, ClientFrame, KktError, KktFrame, KktHeader,
};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = Bytes::copy_from_slice(data);
    let peeked = KktHeader::peek(data);
    match KktFrame::decode(&input) {
        Ok(frame) => {
            let h = peeked.expect("peek must accept what decode accepts");
            assert_eq!(
                (h.sub_type, h.uid, h.roomid, h.session),
                (frame.sub_type, frame.uid, frame.roomid, frame.session)
            );
            assert_eq!(h.remote_node, &frame.remote_node[..]);
            assert_eq!(h.remote_service, &frame.remote_service[..]);
            assert_eq!(h.source_node, &frame.source_node[..]);
            assert_eq!(h.source_service, &frame.source_service[..]);
            assert_eq!(h.name, &frame.name[..]);
            assert_eq!(&data[h.body_offset..], &frame.body[..]);
            assert_eq!(peek_uid(data), Ok(frame.uid));

            let again = frame.encode().expect("a decoded kkt frame must re-encode");
            assert_eq!(again, input, "kkt frame does not re-encode to its input");
            assert_eq!(frame.encoded_len(), data.len());
            let mut out = BytesMut::from(&b"prefix"[..]);
            frame
                .encode_into(&mut out)
                .expect("encode_into accepts what encode accepts");
            assert_eq!(&out[6..], data, "encode_into differs from encode");

            let lua = reply_from_lua(&frame, frame.name.clone(), frame.body.clone());
            assert_eq!(KktFrame::decode(&lua.encode().expect("lua reply")), Ok(lua));
            let native = reply_from_native(&frame, frame.name.clone(), frame.body.clone());
            assert_eq!(
                KktFrame::decode(&native.encode().expect("native reply")),
                Ok(native)
            );
        }
        Err(e) => {
            assert_eq!(peeked, Err(e.clone()), "peek and decode disagree");
            assert_eq!(peek_uid(data), Err(e.clone()));
            match &e {
                KktError::Truncated {
                    offset,
                    needed,
                    available,
                    ..
                } => {
                    assert!(needed > available);
                    assert_eq!(offset + available, data.len());
                }
                other => panic!("decode can only fail with Truncated, got {other:?}"),
            }
            let _ = e.to_string();
        }
    }
    if let Ok(f) = KktFrame::decode_v1(&input) {
        assert!(f.source_node.is_empty() && f.source_service.is_empty() && f.session == 0);
        assert_eq!(
            f.encode_v1().expect("a decoded v1 frame must re-encode"),
            input
        );
    }
    if let Ok(f) = KktFrame::decode_inner(&input) {
        assert!(f.remote_node.is_empty() && f.remote_service.is_empty() && f.session == 0);
        assert_eq!(
            f.encode_inner()
                .expect("a decoded inner frame must re-encode"),
            input
        );
    }
    match ClientFrame::decode(&input) {
        Ok(f) => assert_eq!(
            f.encode().expect("a decoded client frame must re-encode"),
            input
        ),
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
