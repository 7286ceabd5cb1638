//! Fuzz target `proxy`: [`ProxyFrame::decode`] of arbitrary bytes.
//!
//! Checked: no panic; a decoded frame has non-empty names and re-encodes to exactly the
//! input; the UTF-8 accessors agree with `std::str::from_utf8`.
#![no_main]

use bee_codec::proxy::ProxyFrame;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = Bytes::copy_from_slice(data);
    match ProxyFrame::decode(&input) {
        Ok(frame) => {
            assert!(!frame.node.is_empty() && !frame.service.is_empty());
            let again = ProxyFrame::encode(&frame.node, &frame.service, &frame.message)
                .expect("a decoded proxy frame must re-encode");
            assert_eq!(again, input, "proxy frame does not re-encode to its input");
            assert_eq!(frame.node_str().ok(), std::str::from_utf8(&frame.node).ok());
            assert_eq!(
                frame.service_str().ok(),
                std::str::from_utf8(&frame.service).ok()
            );
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
