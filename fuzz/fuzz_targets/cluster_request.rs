//! Fuzz target `cluster_request`: the receiving side of a cluster connection.
//!
//! The input is a byte stream of frames (2-byte big-endian length, body), cut by a
//! [`FrameDecoder`]; each body goes through [`decode_request_frame`] and then a
//! [`RequestAssembler`] with small limits, so that every limit is reachable.
//!
//! Checked: no panic; a whole request or push re-encodes to exactly its frame; the
//! assembler agrees with a plain reference model of multi-part reassembly (which session
//! completes, with which address, push flag and payload, and which error), and never holds
//! more than `max_pending` messages or `max_pending_bytes` announced bytes.
#![no_main]

use std::collections::HashMap;

use bee_codec::cluster::{
    decode_request_frame, encode_push, encode_request, is_multipart_request, Address,
    AssemblyError, Limits, Request, RequestAssembler, RequestFrame,
};
use bee_codec::frame::{encode_frame, FrameDecoder};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_message: 4096,
    max_pending: 4,
    max_pending_bytes: 6000,
};

/// A multi-part message in the reference model.
struct Partial {
    address: Address,
    push: bool,
    total: usize,
    data: Vec<u8>,
}

/// What reassembly must do, written as simply as possible.
fn model_feed(
    model: &mut HashMap<u32, Partial>,
    frame: &RequestFrame,
) -> Result<Option<Request>, AssemblyError> {
    match frame {
        RequestFrame::Whole(request) => {
            model.remove(&request.session);
            Ok(Some(request.clone()))
        }
        RequestFrame::Header {
            address,
            session,
            push,
            total,
        } => {
            let session = *session;
            if model.contains_key(&session) {
                return Err(AssemblyError::DuplicateSession { session });
            }
            let size = *total as usize;
            if size > LIMITS.max_message {
                return Err(AssemblyError::TooLarge {
                    session,
                    size,
                    max: LIMITS.max_message,
                });
            }
            if model.len() >= LIMITS.max_pending {
                return Err(AssemblyError::TooManyPending {
                    max: LIMITS.max_pending,
                });
            }
            let pending: usize = model.values().map(|p| p.total).sum();
            if pending + size > LIMITS.max_pending_bytes {
                return Err(AssemblyError::TooMuchPending {
                    session,
                    size,
                    pending,
                    max: LIMITS.max_pending_bytes,
                });
            }
            model.insert(
                session,
                Partial {
                    address: address.clone(),
                    push: *push,
                    total: size,
                    data: Vec::new(),
                },
            );
            Ok(None)
        }
        RequestFrame::Piece {
            session,
            data,
            last,
        } => {
            let session = *session;
            let Some(partial) = model.get_mut(&session) else {
                return Err(AssemblyError::UnknownSession { session });
            };
            let got = partial.data.len() + data.len();
            if got > partial.total || (*last && got != partial.total) {
                let announced = partial.total as u32;
                model.remove(&session);
                return Err(AssemblyError::SizeMismatch {
                    session,
                    announced,
                    got,
                });
            }
            partial.data.extend_from_slice(data);
            if !*last {
                return Ok(None);
            }
            let partial = model.remove(&session).expect("present");
            Ok(Some(Request {
                address: partial.address,
                session,
                push: partial.push,
                payload: partial.data.into(),
            }))
        }
        RequestFrame::Trace(_) => Ok(None),
    }
}

/// A whole request or push must encode back to the frame it was decoded from.
fn check_whole(request: &Request, body: &[u8]) {
    if is_multipart_request(request.payload.len()) {
        // Too long for a whole frame by bee's rules; bee never sends this, but accepts it.
        return;
    }
    let mut out = BytesMut::new();
    let result = if request.push {
        encode_push(
            &mut out,
            &request.address,
            request.session,
            &request.payload,
        )
    } else {
        encode_request(
            &mut out,
            &request.address,
            request.session,
            &request.payload,
        )
    };
    result.expect("a decoded whole request must re-encode");
    let mut expected = BytesMut::new();
    encode_frame(body, &mut expected).expect("body came from a frame");
    assert_eq!(
        out, expected,
        "whole request does not re-encode to its frame"
    );
}

fuzz_target!(|data: &[u8]| {
    let mut stream = BytesMut::from(data);
    let mut decoder = FrameDecoder::default();
    let mut assembler = RequestAssembler::new(LIMITS);
    let mut model = HashMap::new();
    while let Ok(Some(body)) = decoder.decode(&mut stream) {
        let frame = match decode_request_frame(body.clone()) {
            Ok(frame) => frame,
            Err(e) => {
                let _ = e.to_string();
                continue;
            }
        };
        if let RequestFrame::Whole(request) = &frame {
            assert_eq!(request.push, request.session == 0);
            check_whole(request, &body);
        }
        if let RequestFrame::Header { session, .. } = &frame {
            assert_ne!(*session, 0, "multi-part header with session 0 accepted");
        }
        let expected = model_feed(&mut model, &frame);
        let got = assembler.feed(frame);
        if let Err(e) = &got {
            let _ = e.to_string();
        }
        assert_eq!(got, expected, "assembler differs from the reference model");
        assert_eq!(assembler.pending(), model.len());
        assert!(assembler.pending() <= LIMITS.max_pending);
        let announced: usize = model.values().map(|p| p.total).sum();
        assert!(announced <= LIMITS.max_pending_bytes);
    }
});
