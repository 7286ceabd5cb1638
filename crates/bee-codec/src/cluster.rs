//! skynet v1.6.0 cluster frames: requests, pushes, responses, multi-part split and bounded
//! reassembly.
//!
//! Every function here works on frame **bodies** for decoding (cut them out of the stream
//! with [`crate::frame::FrameDecoder`]) and writes complete frames (2-byte big-endian
//! length + body) for encoding. Integers inside a body are little-endian.
//!
//! Sending side: [`encode_request`] / [`encode_push`] write a message as one frame, or as a
//! header and pieces when it is [`SPLIT`] bytes or more; [`decode_response_frame`] and a
//! [`ResponseAssembler`] turn the replies back into [`Response`]s.
//!
//! Receiving side: [`decode_request_frame`] and a [`RequestAssembler`] turn frames into
//! [`Request`]s; [`encode_response`] writes the answer.
//!
//! Decoding never copies a payload that arrived in one frame: the returned [`Bytes`] are
//! slices of the frame body. Reassembly copies each piece once.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::{FrameError, HEADER_LEN, MAX_BODY};

/// Split threshold and piece size. Requests of `len >= SPLIT` and ok responses of
/// `len > SPLIT` are sent multi-part, in pieces of at most `SPLIT` bytes.
pub const SPLIT: usize = 0x8000;

/// Longest string address (`"@name"`) the protocol can carry.
pub const MAX_NAME: usize = 255;

/// Largest session a sender uses; [`next_session`] wraps from here back to 1.
pub const MAX_SESSION: u32 = 0x7FFF_FFFF;

/// Largest error text a response carries; longer texts are truncated to this.
pub const MAX_ERROR_TEXT: usize = SPLIT;

// Request type bytes (first byte of a request body).
const REQ_WHOLE_ID: u8 = 0x00;
const REQ_WHOLE_NAME: u8 = 0x80;
const REQ_HEADER_ID: u8 = 0x01;
const REQ_HEADER_PUSH_ID: u8 = 0x41;
const REQ_HEADER_NAME: u8 = 0x81;
const REQ_HEADER_PUSH_NAME: u8 = 0xC1;
const REQ_PIECE: u8 = 0x02;
const REQ_PIECE_LAST: u8 = 0x03;
const REQ_TRACE: u8 = 0x04;

// Response type bytes (fifth byte of a response body, after the session).
const RESP_ERR: u8 = 0;
const RESP_OK: u8 = 1;
const RESP_BEGIN: u8 = 2;
const RESP_PIECE: u8 = 3;
const RESP_PIECE_LAST: u8 = 4;

/// Body size of a numeric multi-part request header: type, address, session, total.
const NUMERIC_HEADER_BODY: usize = 13;
/// Body size of a multi-part response begin frame: session, type, total.
const RESPONSE_BEGIN_BODY: usize = 9;
/// Bytes in front of the data of a request piece: type, session.
const REQ_PIECE_OVERHEAD: usize = 5;
/// Bytes in front of the data of a response: session, type.
const RESP_OVERHEAD: usize = 5;
/// Cap on the buffer reserved up front for a multi-part message; it grows as pieces arrive.
const MAX_PREALLOC: usize = 1 << 20;

/// Where a request goes on the receiving node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A numeric service handle (0 is the name query).
    Id(u32),
    /// The wire string, e.g. `b"@echo"`: 1..=255 bytes.
    Name(Bytes),
}

impl fmt::Display for Address {
    /// `:0100000a` for handles (skynet's notation), the name as text for names (bytes that
    /// are not UTF-8 are shown as U+FFFD).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Id(id) => write!(f, ":{id:08x}"),
            Address::Name(name) => f.write_str(&String::from_utf8_lossy(name)),
        }
    }
}

/// A complete request or push as the receiving agent sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Target service.
    pub address: Address,
    /// The sender's session; 0 for a whole push. A multi-part push keeps its real session.
    pub session: u32,
    /// True when no response is expected.
    pub push: bool,
    /// The message (normally `skynet.pack` of the call's arguments).
    pub payload: Bytes,
}

/// A complete response as the sender sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The session of the request it answers.
    pub session: u32,
    /// `Ok(reply message)` or `Err(error text)`.
    pub result: Result<Bytes, Bytes>,
}

/// Why a cluster frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// The frame body ends before the fields its type requires.
    #[error("{frame} frame body is too short: need at least {need} bytes, got {got}")]
    TooShort {
        /// What was being decoded (e.g. "request", "named request", "response").
        frame: &'static str,
        /// Minimum body size for that frame.
        need: usize,
        /// Actual body size.
        got: usize,
    },
    /// The type byte is not one skynet v1.6.0 defines for this direction.
    #[error("unknown cluster frame type 0x{0:02x}")]
    UnknownType(u8),
    /// A fixed-size frame (numeric multi-part request header, response begin) has the
    /// wrong size.
    #[error("cluster frame type 0x{kind:02x} must have a {expected}-byte body, got {got} bytes")]
    BadHeaderSize {
        /// The frame's type byte.
        kind: u8,
        /// Required body size.
        expected: usize,
        /// Actual body size.
        got: usize,
    },
    /// A string address is empty or longer than 255 bytes.
    #[error("service name must be 1..=255 bytes (e.g. \"@echo\"), got {len} bytes")]
    BadName {
        /// Length of the offending name.
        len: usize,
    },
    /// Session 0 where a real session is required: requests, multi-part pushes and
    /// responses need a session >= 1 (0 means "push, no reply").
    #[error("session {0} is not valid here: requests, multi-part pushes and responses need a session >= 1")]
    BadSession(u32),
    /// The message is too large for the protocol's 32-bit total-size field.
    #[error("message of {len} bytes is too large for the cluster protocol (max {max} bytes)")]
    MessageTooLarge {
        /// Length of the message.
        len: usize,
        /// The largest message the protocol can announce.
        max: usize,
    },
    /// A frame-level error (length prefix).
    #[error("framing: {0}")]
    Frame(#[from] FrameError),
}

/// Why multi-part reassembly failed. Each error names the session where one applies, so
/// the receiving side can answer that request (stock skynet says `Invalid large req`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssemblyError {
    /// The pieces of a multi-part message do not add up to the size its header announced.
    /// The partial message has been discarded.
    #[error("session {session}: multi-part message announced {announced} bytes but its pieces carry {got}")]
    SizeMismatch {
        /// Session of the message.
        session: u32,
        /// Size from the header.
        announced: u32,
        /// Bytes received when the mismatch was detected.
        got: usize,
    },
    /// A multi-part header announces more than the configured `max_message`; nothing was
    /// buffered.
    #[error("session {session}: multi-part message of {size} bytes exceeds the limit of {max} bytes (Limits::max_message)")]
    TooLarge {
        /// Session of the message.
        session: u32,
        /// Announced size.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// Too many multi-part messages are half-assembled at once on this connection.
    #[error("too many half-assembled multi-part messages (limit {max}, Limits::max_pending)")]
    TooManyPending {
        /// The configured limit.
        max: usize,
    },
    /// Accepting this header would make the half-assembled messages of this connection
    /// announce more bytes than the configured `max_pending_bytes`; nothing was buffered.
    #[error("session {session}: multi-part message of {size} bytes refused: {pending} bytes already pending (limit {max}, Limits::max_pending_bytes)")]
    TooMuchPending {
        /// Session of the message.
        session: u32,
        /// Announced size.
        size: usize,
        /// Bytes announced by the messages already pending.
        pending: usize,
        /// The configured limit.
        max: usize,
    },
    /// A piece arrived for a session with no multi-part header pending.
    #[error("session {session}: multi-part piece without a pending header")]
    UnknownSession {
        /// Session named by the piece.
        session: u32,
    },
    /// A multi-part header arrived for a session that already has one pending. The
    /// earlier partial message is kept; the new header is rejected.
    #[error("session {session}: multi-part header for a session that is already being assembled")]
    DuplicateSession {
        /// The duplicated session.
        session: u32,
    },
}

/// One decoded request-direction frame.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestFrame {
    /// A request or push in a single frame (`0x00`/`0x80`); `push` is `session == 0`.
    Whole(Request),
    /// Start of a multi-part request (`0x01`/`0x81`) or push (`0x41`/`0xC1`).
    Header {
        /// Target service.
        address: Address,
        /// Session keying the pieces (>= 1).
        session: u32,
        /// True for a multi-part push.
        push: bool,
        /// Announced total size of the message.
        total: u32,
    },
    /// A piece of a multi-part message (`0x02`, or `0x03` when `last`).
    Piece {
        /// Session of the message.
        session: u32,
        /// The piece's bytes.
        data: Bytes,
        /// True for the final piece.
        last: bool,
    },
    /// A trace tag for the next request (`0x04`).
    Trace(Bytes),
}

/// One decoded response-direction frame.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFrame {
    /// Whole ok reply (type 1).
    Ok {
        /// Session answered.
        session: u32,
        /// The reply message.
        data: Bytes,
    },
    /// Error reply (type 0).
    Err {
        /// Session answered.
        session: u32,
        /// The error text.
        message: Bytes,
    },
    /// Start of a multi-part ok reply (type 2).
    Begin {
        /// Session answered.
        session: u32,
        /// Announced total size.
        total: u32,
    },
    /// A piece of a multi-part ok reply (type 3, or 4 when `last`).
    Piece {
        /// Session answered.
        session: u32,
        /// The piece's bytes.
        data: Bytes,
        /// True for the final piece.
        last: bool,
    },
}

/// True when a request or push of `len` bytes is sent multi-part (`len >= SPLIT`).
pub fn is_multipart_request(len: usize) -> bool {
    len >= SPLIT
}

/// True when an ok response of `len` bytes is sent multi-part (`len > SPLIT`).
pub fn is_multipart_response(len: usize) -> bool {
    len > SPLIT
}

/// The session after `session`: +1, wrapping from [`MAX_SESSION`] (or above) back to 1.
pub fn next_session(session: u32) -> u32 {
    if session >= MAX_SESSION {
        1
    } else {
        session + 1
    }
}

/// True when sending a message uses up its session, so the sender must move on to
/// [`next_session`]: every request, and a push only when it goes multi-part (a whole push
/// carries session 0 on the wire).
pub fn consumes_session(push: bool, len: usize) -> bool {
    !push || is_multipart_request(len)
}

/// Write a request (a reply is expected) to `out` as complete frames.
///
/// `session` must be >= 1. Messages of `len >= SPLIT` go as a header frame and
/// `ceil(len / SPLIT)` pieces. Room for all frames is reserved once; on error nothing is
/// written.
pub fn encode_request(
    out: &mut BytesMut,
    address: &Address,
    session: u32,
    payload: &[u8],
) -> Result<(), ClusterError> {
    encode_message(out, address, session, payload, false)
}

/// Write a push (no reply) to `out` as complete frames.
///
/// A whole push (`len < SPLIT`) carries session 0 and `session` is ignored; a multi-part
/// push carries `session`, which must then be >= 1 (see [`consumes_session`]). On error
/// nothing is written.
pub fn encode_push(
    out: &mut BytesMut,
    address: &Address,
    session: u32,
    payload: &[u8],
) -> Result<(), ClusterError> {
    encode_message(out, address, session, payload, true)
}

/// Write a trace tag frame (`0x04`), which attaches `tag` to the next request on the
/// connection. bee's receivers accept and ignore these; senders do not need them.
pub fn encode_trace(out: &mut BytesMut, tag: &[u8]) -> Result<(), ClusterError> {
    let body_len = 1 + tag.len();
    let prefix = frame_prefix(body_len)?;
    out.reserve(HEADER_LEN + body_len);
    out.put_u16(prefix);
    out.put_u8(REQ_TRACE);
    out.put_slice(tag);
    Ok(())
}

/// Write an error response on session 0, which answers no call (stock skynet sends one
/// for a push to an unknown name; bee's listener uses it to tell a peer something about
/// the connection itself). The text is truncated to [`MAX_ERROR_TEXT`] bytes.
pub fn encode_session0_error(out: &mut BytesMut, text: &[u8]) {
    put_response_frame(
        out,
        0,
        RESP_ERR,
        &text[..text.len().min(MAX_ERROR_TEXT)],
        true,
    );
}

/// Write a response to `out` as complete frames.
///
/// `Ok(reply)` goes whole when `len <= SPLIT`, else as a begin frame and pieces.
/// `Err(text)` is a single error frame; the text is truncated to [`MAX_ERROR_TEXT`] bytes.
/// `session` must be >= 1. On error nothing is written.
pub fn encode_response(
    out: &mut BytesMut,
    session: u32,
    result: Result<&[u8], &[u8]>,
) -> Result<(), ClusterError> {
    if session == 0 {
        return Err(ClusterError::BadSession(session));
    }
    match result {
        Err(text) => {
            let text = &text[..text.len().min(MAX_ERROR_TEXT)];
            put_response_frame(out, session, RESP_ERR, text, true);
        }
        Ok(data) if !is_multipart_response(data.len()) => {
            put_response_frame(out, session, RESP_OK, data, true);
        }
        Ok(data) => {
            let total = total_u32(data.len())?;
            let pieces = data.len().div_ceil(SPLIT);
            out.reserve(
                HEADER_LEN
                    + RESPONSE_BEGIN_BODY
                    + pieces * (HEADER_LEN + RESP_OVERHEAD)
                    + data.len(),
            );
            out.put_u16(RESPONSE_BEGIN_BODY as u16);
            out.put_u32_le(session);
            out.put_u8(RESP_BEGIN);
            out.put_u32_le(total);
            for (i, chunk) in data.chunks(SPLIT).enumerate() {
                let kind = if i + 1 == pieces {
                    RESP_PIECE_LAST
                } else {
                    RESP_PIECE
                };
                put_response_frame(out, session, kind, chunk, false);
            }
        }
    }
    Ok(())
}

/// Decode one request-direction frame body (without its length prefix). Zero-copy: the
/// payloads, names and tags returned are slices of `body`.
pub fn decode_request_frame(body: Bytes) -> Result<RequestFrame, ClusterError> {
    let Some(&kind) = body.first() else {
        return Err(ClusterError::TooShort {
            frame: "request",
            need: 1,
            got: 0,
        });
    };
    match kind {
        REQ_WHOLE_ID => {
            need(&body, 9, "request")?;
            let session = le_u32(&body, 5);
            Ok(RequestFrame::Whole(Request {
                address: Address::Id(le_u32(&body, 1)),
                session,
                push: session == 0,
                payload: body.slice(9..),
            }))
        }
        REQ_WHOLE_NAME => {
            let (address, at) = read_name(&body, "named request", 4)?;
            let session = le_u32(&body, at);
            Ok(RequestFrame::Whole(Request {
                address,
                session,
                push: session == 0,
                payload: body.slice(at + 4..),
            }))
        }
        REQ_HEADER_ID | REQ_HEADER_PUSH_ID => {
            if body.len() != NUMERIC_HEADER_BODY {
                return Err(ClusterError::BadHeaderSize {
                    kind,
                    expected: NUMERIC_HEADER_BODY,
                    got: body.len(),
                });
            }
            header_frame(
                Address::Id(le_u32(&body, 1)),
                le_u32(&body, 5),
                kind == REQ_HEADER_PUSH_ID,
                le_u32(&body, 9),
            )
        }
        REQ_HEADER_NAME | REQ_HEADER_PUSH_NAME => {
            let (address, at) = read_name(&body, "named multi-part header", 8)?;
            header_frame(
                address,
                le_u32(&body, at),
                kind == REQ_HEADER_PUSH_NAME,
                le_u32(&body, at + 4),
            )
        }
        REQ_PIECE | REQ_PIECE_LAST => {
            need(&body, REQ_PIECE_OVERHEAD, "multi-part piece")?;
            Ok(RequestFrame::Piece {
                session: le_u32(&body, 1),
                data: body.slice(REQ_PIECE_OVERHEAD..),
                last: kind == REQ_PIECE_LAST,
            })
        }
        REQ_TRACE => Ok(RequestFrame::Trace(body.slice(1..))),
        other => Err(ClusterError::UnknownType(other)),
    }
}

/// Decode one response-direction frame body (without its length prefix). Zero-copy: the
/// data returned are slices of `body`.
pub fn decode_response_frame(body: Bytes) -> Result<ResponseFrame, ClusterError> {
    need(&body, RESP_OVERHEAD, "response")?;
    let session = le_u32(&body, 0);
    let kind = body[4];
    match kind {
        RESP_ERR => Ok(ResponseFrame::Err {
            session,
            message: body.slice(RESP_OVERHEAD..),
        }),
        RESP_OK => Ok(ResponseFrame::Ok {
            session,
            data: body.slice(RESP_OVERHEAD..),
        }),
        RESP_BEGIN => {
            if body.len() != RESPONSE_BEGIN_BODY {
                return Err(ClusterError::BadHeaderSize {
                    kind,
                    expected: RESPONSE_BEGIN_BODY,
                    got: body.len(),
                });
            }
            Ok(ResponseFrame::Begin {
                session,
                total: le_u32(&body, 5),
            })
        }
        RESP_PIECE | RESP_PIECE_LAST => Ok(ResponseFrame::Piece {
            session,
            data: body.slice(RESP_OVERHEAD..),
            last: kind == RESP_PIECE_LAST,
        }),
        other => Err(ClusterError::UnknownType(other)),
    }
}

/// Bounds on multi-part reassembly for one connection direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest multi-part message accepted, in bytes (default 64 MiB + 1 MiB). Headers
    /// announcing more are rejected before anything is buffered.
    pub max_message: usize,
    /// Most multi-part messages half-assembled at once (default 1024).
    pub max_pending: usize,
    /// Most bytes announced by all half-assembled messages together (default 256 MiB).
    /// This bounds the memory one connection can hold in partial messages: a peer
    /// announcing many large messages and sending them slowly is refused past it.
    pub max_pending_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message: (64 << 20) + (1 << 20),
            max_pending: 1024,
            max_pending_bytes: 256 << 20,
        }
    }
}

/// A multi-part message being collected.
#[derive(Debug)]
struct Partial<M> {
    /// What the header said besides the size (address and push flag for requests).
    meta: M,
    total: u32,
    buf: BytesMut,
}

/// Session-keyed store of partial messages, shared by both assemblers.
#[derive(Debug)]
struct Pending<M> {
    limits: Limits,
    map: HashMap<u32, Partial<M>>,
}

impl<M> Pending<M> {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            map: HashMap::new(),
        }
    }

    fn begin(&mut self, session: u32, total: u32, meta: M) -> Result<(), AssemblyError> {
        if self.map.contains_key(&session) {
            return Err(AssemblyError::DuplicateSession { session });
        }
        let size = total as usize;
        if size > self.limits.max_message {
            return Err(AssemblyError::TooLarge {
                session,
                size,
                max: self.limits.max_message,
            });
        }
        if self.map.len() >= self.limits.max_pending {
            return Err(AssemblyError::TooManyPending {
                max: self.limits.max_pending,
            });
        }
        // Headers are rare (one per message of 32 KiB or more), so summing here is cheap.
        let pending: usize = self.map.values().map(|p| p.total as usize).sum();
        if pending.saturating_add(size) > self.limits.max_pending_bytes {
            return Err(AssemblyError::TooMuchPending {
                session,
                size,
                pending,
                max: self.limits.max_pending_bytes,
            });
        }
        self.map.insert(
            session,
            Partial {
                meta,
                total,
                buf: BytesMut::new(),
            },
        );
        Ok(())
    }

    /// Add a piece; on the last one return the header's metadata and the whole message.
    fn piece(
        &mut self,
        session: u32,
        data: Bytes,
        last: bool,
    ) -> Result<Option<(M, Bytes)>, AssemblyError> {
        let Entry::Occupied(mut entry) = self.map.entry(session) else {
            return Err(AssemblyError::UnknownSession { session });
        };
        let partial = entry.get_mut();
        let total = partial.total as usize;
        let got = partial.buf.len() + data.len();
        if got > total || (last && got != total) {
            let announced = partial.total;
            entry.remove();
            return Err(AssemblyError::SizeMismatch {
                session,
                announced,
                got,
            });
        }
        if !last {
            if partial.buf.is_empty() {
                // First piece: reserve up front, bounded by the checked total and a cap.
                partial.buf.reserve(total.min(MAX_PREALLOC));
            }
            partial.buf.extend_from_slice(&data);
            return Ok(None);
        }
        let Partial { meta, mut buf, .. } = entry.remove();
        let message = if buf.is_empty() {
            // Single-piece message: hand the piece on without copying.
            data
        } else {
            buf.extend_from_slice(&data);
            buf.freeze()
        };
        Ok(Some((meta, message)))
    }

    fn discard(&mut self, session: u32) {
        self.map.remove(&session);
    }
}

/// Reassembles multi-part requests and pushes on the receiving side of one connection.
///
/// Bounded by [`Limits`]: no header may announce more than `max_message` bytes, at most
/// `max_pending` messages are half-assembled at once, and the buffer for a message grows
/// only with the pieces actually received.
#[derive(Debug)]
pub struct RequestAssembler {
    pending: Pending<(Address, bool)>,
}

impl RequestAssembler {
    /// An empty assembler with the given limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            pending: Pending::new(limits),
        }
    }

    /// Feed one decoded frame. Returns `Ok(Some(request))` when a message is complete,
    /// `Ok(None)` when more pieces are needed (and for trace frames, which are ignored).
    ///
    /// A whole request ends any partial message pending under the same session. After a
    /// `SizeMismatch` the partial message is discarded; the other errors leave the pending
    /// state unchanged.
    pub fn feed(&mut self, frame: RequestFrame) -> Result<Option<Request>, AssemblyError> {
        match frame {
            RequestFrame::Whole(request) => {
                self.pending.discard(request.session);
                Ok(Some(request))
            }
            RequestFrame::Header {
                address,
                session,
                push,
                total,
            } => {
                self.pending.begin(session, total, (address, push))?;
                Ok(None)
            }
            RequestFrame::Piece {
                session,
                data,
                last,
            } => Ok(self
                .pending
                .piece(session, data, last)?
                .map(|((address, push), payload)| Request {
                    address,
                    session,
                    push,
                    payload,
                })),
            RequestFrame::Trace(_) => Ok(None),
        }
    }

    /// Number of multi-part messages currently half-assembled.
    pub fn pending(&self) -> usize {
        self.pending.map.len()
    }
}

/// Reassembles multi-part responses on the sending side of one connection.
///
/// Bounded by [`Limits`] the same way as [`RequestAssembler`].
#[derive(Debug)]
pub struct ResponseAssembler {
    pending: Pending<()>,
}

impl ResponseAssembler {
    /// An empty assembler with the given limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            pending: Pending::new(limits),
        }
    }

    /// Feed one decoded frame. Returns `Ok(Some(response))` when a response is complete,
    /// `Ok(None)` when more pieces are needed.
    ///
    /// A whole ok or error response ends any partial response pending under the same
    /// session. After a `SizeMismatch` the partial response is discarded; the other errors
    /// leave the pending state unchanged.
    pub fn feed(&mut self, frame: ResponseFrame) -> Result<Option<Response>, AssemblyError> {
        match frame {
            ResponseFrame::Ok { session, data } => {
                self.pending.discard(session);
                Ok(Some(Response {
                    session,
                    result: Ok(data),
                }))
            }
            ResponseFrame::Err { session, message } => {
                self.pending.discard(session);
                Ok(Some(Response {
                    session,
                    result: Err(message),
                }))
            }
            ResponseFrame::Begin { session, total } => {
                self.pending.begin(session, total, ())?;
                Ok(None)
            }
            ResponseFrame::Piece {
                session,
                data,
                last,
            } => Ok(self
                .pending
                .piece(session, data, last)?
                .map(|((), data)| Response {
                    session,
                    result: Ok(data),
                })),
        }
    }

    /// Number of multi-part responses currently half-assembled.
    pub fn pending(&self) -> usize {
        self.pending.map.len()
    }
}

// ---------------------------------------------------------------------------------------
// Encoding helpers

fn encode_message(
    out: &mut BytesMut,
    address: &Address,
    session: u32,
    payload: &[u8],
    push: bool,
) -> Result<(), ClusterError> {
    let addr_len = match address {
        Address::Id(_) => 4,
        Address::Name(name) => {
            check_name(name.len())?;
            1 + name.len()
        }
    };
    let len = payload.len();
    if !is_multipart_request(len) {
        let wire_session = if push { 0 } else { check_session(session)? };
        let body_len = 1 + addr_len + 4 + len;
        // At most 1 + 256 + 4 + 0x7FFF bytes: always fits a frame.
        let prefix = frame_prefix(body_len)?;
        out.reserve(HEADER_LEN + body_len);
        out.put_u16(prefix);
        put_address(out, address, REQ_WHOLE_ID, REQ_WHOLE_NAME);
        out.put_u32_le(wire_session);
        out.put_slice(payload);
        return Ok(());
    }
    check_session(session)?;
    let total = total_u32(len)?;
    let pieces = len.div_ceil(SPLIT);
    let header_body = 1 + addr_len + 8;
    out.reserve(HEADER_LEN + header_body + pieces * (HEADER_LEN + REQ_PIECE_OVERHEAD) + len);
    out.put_u16(header_body as u16);
    let (id_kind, name_kind) = if push {
        (REQ_HEADER_PUSH_ID, REQ_HEADER_PUSH_NAME)
    } else {
        (REQ_HEADER_ID, REQ_HEADER_NAME)
    };
    put_address(out, address, id_kind, name_kind);
    out.put_u32_le(session);
    out.put_u32_le(total);
    for (i, chunk) in payload.chunks(SPLIT).enumerate() {
        let kind = if i + 1 == pieces {
            REQ_PIECE_LAST
        } else {
            REQ_PIECE
        };
        out.put_u16((REQ_PIECE_OVERHEAD + chunk.len()) as u16);
        out.put_u8(kind);
        out.put_u32_le(session);
        out.put_slice(chunk);
    }
    Ok(())
}

/// Type byte and address fields. The name length was checked by the caller.
fn put_address(out: &mut BytesMut, address: &Address, id_kind: u8, name_kind: u8) {
    match address {
        Address::Id(id) => {
            out.put_u8(id_kind);
            out.put_u32_le(*id);
        }
        Address::Name(name) => {
            out.put_u8(name_kind);
            out.put_u8(name.len() as u8);
            out.put_slice(name);
        }
    }
}

/// One response frame: session, type, data (`data.len() <= SPLIT`, so it fits a frame).
fn put_response_frame(out: &mut BytesMut, session: u32, kind: u8, data: &[u8], reserve: bool) {
    let body_len = RESP_OVERHEAD + data.len();
    if reserve {
        out.reserve(HEADER_LEN + body_len);
    }
    out.put_u16(body_len as u16);
    out.put_u32_le(session);
    out.put_u8(kind);
    out.put_slice(data);
}

fn check_session(session: u32) -> Result<u32, ClusterError> {
    if session == 0 {
        Err(ClusterError::BadSession(session))
    } else {
        Ok(session)
    }
}

fn check_name(len: usize) -> Result<(), ClusterError> {
    if (1..=MAX_NAME).contains(&len) {
        Ok(())
    } else {
        Err(ClusterError::BadName { len })
    }
}

fn frame_prefix(body_len: usize) -> Result<u16, ClusterError> {
    u16::try_from(body_len).map_err(|_| {
        ClusterError::Frame(FrameError::TooLarge {
            len: body_len,
            max: MAX_BODY,
        })
    })
}

fn total_u32(len: usize) -> Result<u32, ClusterError> {
    u32::try_from(len).map_err(|_| ClusterError::MessageTooLarge {
        len,
        max: u32::MAX as usize,
    })
}

// ---------------------------------------------------------------------------------------
// Decoding helpers

fn need(body: &[u8], need: usize, frame: &'static str) -> Result<(), ClusterError> {
    if body.len() < need {
        Err(ClusterError::TooShort {
            frame,
            need,
            got: body.len(),
        })
    } else {
        Ok(())
    }
}

/// Little-endian u32 at `at`. Callers check `body.len() >= at + 4` first.
fn le_u32(body: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&body[at..at + 4]);
    u32::from_le_bytes(word)
}

/// Read `namelen u8, name` at offset 1, requiring `after` more bytes behind the name.
/// Returns the address and the offset just past the name.
fn read_name(
    body: &Bytes,
    frame: &'static str,
    after: usize,
) -> Result<(Address, usize), ClusterError> {
    need(body, 2, frame)?;
    let len = usize::from(body[1]);
    check_name(len)?;
    let end = 2 + len;
    need(body, end + after, frame)?;
    Ok((Address::Name(body.slice(2..end)), end))
}

fn header_frame(
    address: Address,
    session: u32,
    push: bool,
    total: u32,
) -> Result<RequestFrame, ClusterError> {
    Ok(RequestFrame::Header {
        address,
        session: check_session(session)?,
        push,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_above_u32_is_message_too_large() {
        let len = u32::MAX as usize + 1;
        let err = total_u32(len).unwrap_err();
        assert_eq!(
            err,
            ClusterError::MessageTooLarge {
                len,
                max: u32::MAX as usize
            }
        );
        assert!(err.to_string().contains("too large"));
        assert_eq!(total_u32(u32::MAX as usize).unwrap(), u32::MAX);
    }

    #[test]
    fn frame_prefix_rejects_oversized_body() {
        assert_eq!(frame_prefix(MAX_BODY).unwrap(), 0xFFFF);
        assert_eq!(
            frame_prefix(MAX_BODY + 1).unwrap_err(),
            ClusterError::Frame(FrameError::TooLarge {
                len: MAX_BODY + 1,
                max: MAX_BODY
            })
        );
    }

    #[test]
    fn address_display() {
        assert_eq!(Address::Id(0x0100_000a).to_string(), ":0100000a");
        assert_eq!(
            Address::Name(Bytes::from_static(b"@echo")).to_string(),
            "@echo"
        );
    }
}
