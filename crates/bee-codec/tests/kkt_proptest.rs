//! Property tests for the kkt frames: every frame round-trips byte for byte in each
//! layout, the header peek agrees with the decoder, every strict prefix of a frame's header
//! is refused, and arbitrary bytes never panic a decoder (what is accepted re-encodes to
//! exactly the input).

use bee_codec::kkt::{self, ClientFrame, KktError, KktFrame, KktHeader};
use bytes::Bytes;
use proptest::prelude::*;

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn frame() -> impl Strategy<Value = KktFrame> {
    (
        (bytes(40), bytes(40), bytes(40), bytes(40)),
        any::<u32>(),
        any::<i64>(),
        bytes(80),
        any::<u32>(),
        any::<u64>(),
        bytes(300),
    )
        .prop_map(
            |((rn, rs, sn, ss), sub_type, uid, name, roomid, session, body)| {
                KktFrame::new(sub_type, uid, name, body)
                    .to(rn, rs)
                    .from(sn, ss)
                    .roomid(roomid)
                    .session(session)
            },
        )
}

proptest! {
    #[test]
    fn v2_round_trip(f in frame()) {
        let b = f.encode().unwrap();
        prop_assert_eq!(b.len(), f.encoded_len());
        prop_assert_eq!(&KktFrame::decode(&b).unwrap(), &f);
        let h = KktHeader::peek(&b).unwrap();
        prop_assert_eq!((h.sub_type, h.uid, h.roomid, h.session), (f.sub_type, f.uid, f.roomid, f.session));
        prop_assert_eq!(h.remote_node, &f.remote_node[..]);
        prop_assert_eq!(h.remote_service, &f.remote_service[..]);
        prop_assert_eq!(&b[h.body_offset..], &f.body[..]);
        prop_assert_eq!(kkt::peek_uid(&b), Ok(f.uid));
    }

    #[test]
    fn every_header_prefix_is_refused(f in frame()) {
        let b = f.encode().unwrap();
        let header_len = b.len() - f.body.len();
        for cut in 0..header_len {
            let e = KktFrame::decode(&b.slice(..cut)).unwrap_err();
            let is_truncated = matches!(e, KktError::Truncated { .. });
            prop_assert!(is_truncated, "{:?}", e);
        }
    }

    #[test]
    fn older_layouts_round_trip(f in frame()) {
        let inner = KktFrame { remote_node: Bytes::new(), remote_service: Bytes::new(),
                               source_node: Bytes::new(), source_service: Bytes::new(),
                               session: 0, ..f.clone() };
        prop_assert_eq!(&KktFrame::decode_inner(&inner.encode_inner().unwrap()).unwrap(), &inner);
        let v1 = inner.clone().to(f.remote_node.clone(), f.remote_service.clone());
        prop_assert_eq!(&KktFrame::decode_v1(&v1.encode_v1().unwrap()).unwrap(), &v1);
        let c = ClientFrame { name: f.name.clone(), roomid: f.roomid, body: f.body.clone() };
        prop_assert_eq!(ClientFrame::decode(&c.encode().unwrap()).unwrap(), c);
    }

    #[test]
    fn replies_keep_what_the_spec_says(f in frame(), name in bytes(40), body in bytes(40)) {
        let lua = kkt::reply_from_lua(&f, name.clone(), body.clone());
        prop_assert!(lua.remote_node.is_empty() && lua.remote_service.is_empty());
        prop_assert!(lua.source_node.is_empty() && lua.source_service.is_empty());
        prop_assert_eq!((lua.sub_type, lua.uid, lua.roomid, lua.session),
                        (kkt::SUBTYPE_RPC_CLIENT, f.uid, f.roomid, f.session));
        let native = kkt::reply_from_native(&f, name.clone(), body.clone());
        prop_assert_eq!(&native.remote_node, &f.source_node);
        prop_assert_eq!(&native.remote_service, &f.source_service);
        prop_assert_eq!(&native.source_node, &f.remote_node);
        prop_assert_eq!(&native.source_service, &f.remote_service);
        prop_assert_eq!((native.sub_type, native.uid, native.roomid, native.session),
                        (kkt::SUBTYPE_RPC_CLIENT, f.uid, 0, f.session));
        for r in [lua, native] {
            prop_assert_eq!(&r.name, &name);
            prop_assert_eq!(&r.body, &body);
            prop_assert_eq!(&KktFrame::decode(&r.encode().unwrap()).unwrap(), &r);
        }
    }

    #[test]
    fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..120)) {
        let b = Bytes::from(data);
        match KktFrame::decode(&b) {
            Ok(f) => {
                prop_assert_eq!(f.encode().unwrap(), b.clone());
                prop_assert_eq!(kkt::peek_uid(&b), Ok(f.uid));
            }
            Err(e) => prop_assert_eq!(KktHeader::peek(&b).unwrap_err(), e),
        }
        if let Ok(f) = KktFrame::decode_v1(&b) {
            prop_assert_eq!(f.encode_v1().unwrap(), b.clone());
        }
        if let Ok(f) = KktFrame::decode_inner(&b) {
            prop_assert_eq!(f.encode_inner().unwrap(), b.clone());
        }
        if let Ok(f) = ClientFrame::decode(&b) {
            prop_assert_eq!(f.encode().unwrap(), b.clone());
        }
    }

    /// Small name lengths, so that random bytes often form a whole header.
    #[test]
    fn decoders_never_panic_small_lengths(lens in proptest::collection::vec(0u8..6, 4),
                                          name_len in 0u8..6,
                                          data in proptest::collection::vec(any::<u8>(), 0..80)) {
        let mut v = Vec::new();
        for l in &lens {
            v.extend_from_slice(&u16::from(*l).to_be_bytes());
        }
        let names: usize = lens.iter().map(|l| usize::from(*l)).sum();
        let mut data = data;
        if data.len() > names + 13 {
            data[names + 12] = 0;
            data[names + 13] = name_len;
        }
        v.extend_from_slice(&data);
        let b = Bytes::from(v);
        if let Ok(f) = KktFrame::decode(&b) {
            prop_assert_eq!(f.encode().unwrap(), b);
        }
    }
}
