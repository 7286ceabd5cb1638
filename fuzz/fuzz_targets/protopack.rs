//! Fuzz target `protopack`: [`GameFrame::decode`] of arbitrary bytes.
//!
//! Checked: no panic; a decoded frame has a uid below 2^63 (so it can never be taken for an
//! rpc envelope) and a 1..=255-byte name, and re-encodes to exactly the input; `name_str`
//! agrees with `std::str::from_utf8`.
#![no_main]

use bee_codec::protopack::{GameFrame, MAX_NAME, MAX_UID};
use bee_codec::rpc::is_envelope;
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = Bytes::copy_from_slice(data);
    match GameFrame::decode(&input) {
        Ok(frame) => {
            assert!(frame.uid <= MAX_UID);
            assert!(
                !is_envelope(data),
                "a game frame also looks like an rpc envelope"
            );
            assert!((1..=MAX_NAME).contains(&frame.name.len()));
            let again = frame.encode().expect("a decoded game frame must re-encode");
            assert_eq!(again, input, "game frame does not re-encode to its input");
            let mut out = BytesMut::from(&b"prefix"[..]);
            GameFrame::encode_into(frame.uid, &frame.name, &frame.body, &mut out)
                .expect("encode_into must accept what encode accepts");
            assert_eq!(&out[6..], data, "encode_into differs from encode");
            assert_eq!(frame.name_str().ok(), std::str::from_utf8(&frame.name).ok());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
