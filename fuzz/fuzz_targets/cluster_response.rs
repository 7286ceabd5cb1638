//! Fuzz target `cluster_response`: the sending side of a cluster connection, reading
//! responses.
//!
//! The input is a byte stream of frames (2-byte big-endian length, body), cut by a
//! [`FrameDecoder`]; each body goes through [`decode_response_frame`] and then a
//! [`ResponseAssembler`] with small limits, so that every limit is reachable.
//!
//! Checked: no panic; a whole ok or error response that bee could have sent re-encodes to
//! exactly its frame; the assembler agrees with a plain reference model of multi-part
//! reassembly and never holds more than `max_pending` responses or
//! `max_pending_bytes` announced bytes.
#![no_main]

use std::collections::HashMap;

use bee_codec::cluster::{
    decode_response_frame, encode_response, AssemblyError, Limits, Response, ResponseAssembler,
    ResponseFrame, SPLIT,
};
use bee_codec::frame::{encode_frame, FrameDecoder};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_message: 4096,
    max_pending: 4,
    max_pending_bytes: 6000,
};

/// A multi-part response in the reference model: announced total and bytes so far.
struct Partial {
    total: usize,
    data: Vec<u8>,
}

/// What reassembly must do, written as simply as possible.
fn model_feed(
    model: &mut HashMap<u32, Partial>,
    frame: &ResponseFrame,
) -> Result<Option<Response>, AssemblyError> {
    match frame {
        ResponseFrame::Ok { session, data } => {
            model.remove(session);
            Ok(Some(Response {
                session: *session,
                result: Ok(data.clone()),
            }))
        }
        ResponseFrame::Err { session, message } => {
            model.remove(session);
            Ok(Some(Response {
                session: *session,
                result: Err(message.clone()),
            }))
        }
        ResponseFrame::Begin { session, total } => {
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
                    total: size,
                    data: Vec::new(),
                },
            );
            Ok(None)
        }
        ResponseFrame::Piece {
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
            Ok(Some(Response {
                session,
                result: Ok(partial.data.into()),
            }))
        }
    }
}

/// A whole response bee could have written must encode back to its frame.
fn check_whole(frame: &ResponseFrame, body: &[u8]) {
    let (session, result) = match frame {
        ResponseFrame::Ok { session, data } => (*session, Ok(&data[..])),
        ResponseFrame::Err { session, message } => (*session, Err(&message[..])),
        _ => return,
    };
    let len = match result {
        Ok(d) | Err(d) => d.len(),
    };
    // bee sends session >= 1 and at most SPLIT bytes in one response frame; it accepts more.
    if session == 0 || len > SPLIT {
        return;
    }
    let mut out = BytesMut::new();
    encode_response(&mut out, session, result).expect("a decoded response must re-encode");
    let mut expected = BytesMut::new();
    encode_frame(body, &mut expected).expect("body came from a frame");
    assert_eq!(
        out, expected,
        "whole response does not re-encode to its frame"
    );
}

fuzz_target!(|data: &[u8]| {
    let mut stream = BytesMut::from(data);
    let mut decoder = FrameDecoder::default();
    let mut assembler = ResponseAssembler::new(LIMITS);
    let mut model = HashMap::new();
    while let Ok(Some(body)) = decoder.decode(&mut stream) {
        let frame = match decode_response_frame(body.clone()) {
            Ok(frame) => frame,
            Err(e) => {
                let _ = e.to_string();
                continue;
            }
        };
        check_whole(&frame, &body);
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
