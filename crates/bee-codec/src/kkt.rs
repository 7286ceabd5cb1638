//! The game team's frame ("KKT" proxy frame, v2): the one format every game message of the
//! team's C++ and Lua services uses, between services and across nodes (sends, rpc
//! requests, both reply forms, Lua-to-Lua text).
//!
//! Layout (all integers big-endian; see `docs/protocol.md`, "The game frame"):
//!
//! ```text
//! offset 0    u16  remote node name length  RN
//! offset 2    u16  remote service name length RS
//! offset 4    u16  source node name length  SN
//! offset 6    u16  source service name length SS
//! offset 8    RN+RS+SN+SS bytes: remote node, remote service, source node, source
//!             service, back to back, no terminators
//! then        u32  sub_type (SUBTYPE_*)
//!             u64  uid (a signed 64-bit integer on the team's side)
//!             u16  message name length L
//!             L    message name (protobuf full name, e.g. "game.LoginReq"; may be empty)
//!             u32  roomid (written from a signed int)
//!             u64  session (the C++ caller's own; 0 when no reply is wanted)
//!             ...  protobuf body, to the end of the buffer
//! ```
//!
//! The fixed part is [`FIXED_LEN`] (34) bytes. [`KktFrame::decode`] checks every length
//! against the buffer and names the field that does not fit; [`KktHeader::peek`] reads the
//! same header without touching the body (what a sharding master needs to pick a worker by
//! uid). The encoder refuses any string over 65535 bytes instead of truncating its length
//! as the team's C++ writer does.
//!
//! Older layouts the team's code used are read and written too: the "inner" frame (the
//! v2 frame without names and session, [`KktFrame::decode_inner`]), the proxy "v1" frame
//! (remote node and service, then an inner frame, [`KktFrame::decode_v1`]) and the client
//! frame between gate and game client ([`ClientFrame`]).

use bytes::{BufMut, Bytes, BytesMut};

/// `sub_type` of a one-way protobuf message.
pub const SUBTYPE_PROTOBUF: u32 = 16;
/// `sub_type` of a reply to an rpc request (both reply forms, see [`reply_from_lua`] and
/// [`reply_from_native`]).
pub const SUBTYPE_RPC_CLIENT: u32 = 17;
/// `sub_type` of an rpc request; its `session` is > 0 and the reply carries it back.
pub const SUBTYPE_RPC_SERVER: u32 = 18;
/// `sub_type` of ASCII text such as `lua <uid> key=value …` instead of a protobuf body.
pub const SUBTYPE_PLAIN_TEXT: u32 = 19;
/// `sub_type` of client-facing agent traffic.
pub const SUBTYPE_AGENT: u32 = 20;
/// `sub_type` of system messages; the team's C++ handles it like [`SUBTYPE_PROTOBUF`].
pub const SUBTYPE_SYSTEM: u32 = 21;

/// Size of the fixed part of a v2 frame: four name lengths (8), sub_type (4), uid (8),
/// message name length (2), roomid (4), session (8).
pub const FIXED_LEN: usize = 34;
/// Size of the fixed part of an inner frame: sub_type, uid, name length, roomid.
pub const INNER_FIXED_LEN: usize = 18;
/// The longest name (node, service or message) a 16-bit length can describe.
pub const MAX_STR: usize = 0xFFFF;
/// A client frame's length (of the bytes after it) must be below this: 16 MiB, the gate's
/// limit.
pub const CLIENT_MAX_LEN: usize = 16 << 20;

/// Errors from decoding, encoding or reading a game-team frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KktError {
    /// A field runs past the end of the buffer.
    #[error(
        "kkt frame truncated at {field}: it needs {needed} bytes at offset {offset} but only {available} are left"
    )]
    Truncated {
        /// The field being read, e.g. `"remote_node"`, `"name length"`, `"session"`.
        field: &'static str,
        /// Where the field starts in the buffer.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the buffer from `offset`.
        available: usize,
    },
    /// A string does not fit its 16-bit length (encoding). The team's C++ writer would
    /// truncate the length silently and corrupt the frame; bee refuses.
    #[error("kkt frame {field} is {len} bytes; its 16-bit length allows at most 65535")]
    TooLong {
        /// `"remote_node"`, `"remote_service"`, `"source_node"`, `"source_service"` or
        /// `"name"`.
        field: &'static str,
        /// The string's length.
        len: usize,
    },
    /// A string is not valid UTF-8 (when read as text).
    #[error("kkt frame {field} is not valid UTF-8")]
    NotUtf8 {
        /// The field read as text.
        field: &'static str,
    },
    /// Encoding in an older layout would drop a field that is set (the v1 and inner layouts
    /// carry no source names and no session; the inner layout no remote names either).
    #[error("the {layout} layout has no {field}; clear it or send the v2 frame")]
    NotInLayout {
        /// `"v1"` or `"inner"`.
        layout: &'static str,
        /// The field that is set.
        field: &'static str,
    },
    /// A client frame's length is 16 MiB or more (the gate refuses it).
    #[error("client frame length is {len} bytes; the gate refuses 16 MiB (16777216) or more")]
    ClientTooLarge {
        /// The announced (decoding) or needed (encoding) length.
        len: usize,
    },
    /// A client frame's length does not match the bytes after it.
    #[error("client frame announces {announced} bytes after its length but {available} follow")]
    ClientLength {
        /// The u32 length at the start of the frame.
        announced: usize,
        /// Bytes after that length.
        available: usize,
    },
}

/// Checked big-endian reads over a buffer, naming the field on failure.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], KktError> {
        let available = self.buf.len() - self.pos;
        if n > available {
            return Err(KktError::Truncated {
                field,
                offset: self.pos,
                needed: n,
                available,
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], KktError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(field, N)?);
        Ok(a)
    }

    fn u16(&mut self, field: &'static str) -> Result<usize, KktError> {
        Ok(usize::from(u16::from_be_bytes(self.array(field)?)))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, KktError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, KktError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// Take `n` bytes and return their range in the buffer.
    fn range(&mut self, field: &'static str, n: usize) -> Result<std::ops::Range<usize>, KktError> {
        let start = self.pos;
        self.take(field, n)?;
        Ok(start..self.pos)
    }
}

/// Where each part of a frame lies in its buffer (empty ranges for absent names).
struct Parsed {
    remote_node: std::ops::Range<usize>,
    remote_service: std::ops::Range<usize>,
    source_node: std::ops::Range<usize>,
    source_service: std::ops::Range<usize>,
    sub_type: u32,
    uid: i64,
    name: std::ops::Range<usize>,
    roomid: u32,
    session: u64,
    body_offset: usize,
}

impl Parsed {
    fn empty_names(at: usize) -> Parsed {
        Parsed {
            remote_node: at..at,
            remote_service: at..at,
            source_node: at..at,
            source_service: at..at,
            sub_type: 0,
            uid: 0,
            name: at..at,
            roomid: 0,
            session: 0,
            body_offset: at,
        }
    }

    /// Read `[u32 sub_type][u64 uid][u16 L][name][u32 roomid]` into `self`.
    fn read_inner(&mut self, r: &mut Reader<'_>) -> Result<(), KktError> {
        self.sub_type = r.u32("sub_type")?;
        self.uid = r.u64("uid")? as i64;
        let name_len = r.u16("name length")?;
        self.name = r.range("name", name_len)?;
        self.roomid = r.u32("roomid")?;
        Ok(())
    }

    fn v2(buf: &[u8]) -> Result<Parsed, KktError> {
        let mut r = Reader::new(buf);
        let rn = r.u16("remote_node length")?;
        let rs = r.u16("remote_service length")?;
        let sn = r.u16("source_node length")?;
        let ss = r.u16("source_service length")?;
        let mut p = Parsed::empty_names(0);
        p.remote_node = r.range("remote_node", rn)?;
        p.remote_service = r.range("remote_service", rs)?;
        p.source_node = r.range("source_node", sn)?;
        p.source_service = r.range("source_service", ss)?;
        p.read_inner(&mut r)?;
        p.session = r.u64("session")?;
        p.body_offset = r.pos;
        Ok(p)
    }

    fn v1(buf: &[u8]) -> Result<Parsed, KktError> {
        let mut r = Reader::new(buf);
        let rn = r.u16("remote_node length")?;
        let rs = r.u16("remote_service length")?;
        let mut p = Parsed::empty_names(0);
        p.remote_node = r.range("remote_node", rn)?;
        p.remote_service = r.range("remote_service", rs)?;
        p.source_node = r.pos..r.pos;
        p.source_service = r.pos..r.pos;
        p.read_inner(&mut r)?;
        p.body_offset = r.pos;
        Ok(p)
    }

    fn inner(buf: &[u8]) -> Result<Parsed, KktError> {
        let mut r = Reader::new(buf);
        let mut p = Parsed::empty_names(0);
        p.read_inner(&mut r)?;
        p.body_offset = r.pos;
        Ok(p)
    }

    fn frame(self, buf: &Bytes) -> KktFrame {
        KktFrame {
            remote_node: buf.slice(self.remote_node),
            remote_service: buf.slice(self.remote_service),
            source_node: buf.slice(self.source_node),
            source_service: buf.slice(self.source_service),
            sub_type: self.sub_type,
            uid: self.uid,
            name: buf.slice(self.name),
            roomid: self.roomid,
            session: self.session,
            body: buf.slice(self.body_offset..),
        }
    }
}

/// The header of a v2 frame, borrowed from the buffer: everything but the body, read
/// without copying. Dispatch uses it to route (remote node/service), shard (uid) and match
/// replies (sub_type, session) before or instead of a full [`KktFrame::decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KktHeader<'a> {
    /// Destination node name (empty in Lua replies and Lua-to-Lua frames).
    pub remote_node: &'a [u8],
    /// Destination service name.
    pub remote_service: &'a [u8],
    /// Sending node name.
    pub source_node: &'a [u8],
    /// Sending service name.
    pub source_service: &'a [u8],
    /// One of the `SUBTYPE_*` values (others are carried as they are).
    pub sub_type: u32,
    /// The player the message is about (also the shard key); signed on the team's side.
    pub uid: i64,
    /// The message name (protobuf full name; empty for plain text).
    pub name: &'a [u8],
    /// The room id as written (a C++ `int` reinterpreted as 32 bits).
    pub roomid: u32,
    /// The C++ caller's session; 0 when no reply is wanted.
    pub session: u64,
    /// Where the body starts in the buffer: the header's size.
    pub body_offset: usize,
}

impl<'a> KktHeader<'a> {
    /// Read and check the header of a v2 frame (every length against `buf`), without
    /// touching the body. Succeeds exactly when [`KktFrame::decode`] does.
    pub fn peek(buf: &'a [u8]) -> Result<KktHeader<'a>, KktError> {
        let p = Parsed::v2(buf)?;
        Ok(KktHeader {
            remote_node: &buf[p.remote_node],
            remote_service: &buf[p.remote_service],
            source_node: &buf[p.source_node],
            source_service: &buf[p.source_service],
            sub_type: p.sub_type,
            uid: p.uid,
            name: &buf[p.name],
            roomid: p.roomid,
            session: p.session,
            body_offset: p.body_offset,
        })
    }
}

/// The uid of a v2 frame, after checking its header as [`KktHeader::peek`] does: what a
/// sharding master needs to pick a worker.
pub fn peek_uid(buf: &[u8]) -> Result<i64, KktError> {
    KktHeader::peek(buf).map(|h| h.uid)
}

/// A game-team frame. The byte strings are zero-copy slices of the decoded buffer.
///
/// Build one with [`KktFrame::new`] and the builder methods:
///
/// ```
/// use bee_codec::kkt::{KktFrame, SUBTYPE_RPC_SERVER};
/// let req = KktFrame::new(SUBTYPE_RPC_SERVER, 10076447, "game.LoginReq", &b"\x08\x01"[..])
///     .to("activity_master_5", "activity_master")
///     .from("shop_master_4", "shop_master")
///     .session(7);
/// let bytes = req.encode().unwrap();
/// assert_eq!(KktFrame::decode(&bytes).unwrap(), req);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KktFrame {
    /// Destination node name (empty in Lua replies and Lua-to-Lua frames).
    pub remote_node: Bytes,
    /// Destination service name.
    pub remote_service: Bytes,
    /// Sending node name.
    pub source_node: Bytes,
    /// Sending service name.
    pub source_service: Bytes,
    /// One of the `SUBTYPE_*` values (others are carried as they are).
    pub sub_type: u32,
    /// The player the message is about (also the shard key); on the wire as its 64 bits.
    pub uid: i64,
    /// The message name: protobuf full name such as `game.LoginReq` (empty for plain text).
    pub name: Bytes,
    /// The room id as written: 32 bits from a C++ `int` (see [`KktFrame::roomid_i32`]).
    pub roomid: u32,
    /// The C++ caller's session (1..2^31-1 in practice); 0 when no reply is wanted.
    pub session: u64,
    /// The protobuf body (or text for [`SUBTYPE_PLAIN_TEXT`]), to the end of the frame.
    pub body: Bytes,
}

fn str_len(field: &'static str, s: &[u8]) -> Result<u16, KktError> {
    u16::try_from(s.len()).map_err(|_| KktError::TooLong {
        field,
        len: s.len(),
    })
}

fn text<'a>(field: &'static str, s: &'a [u8]) -> Result<&'a str, KktError> {
    std::str::from_utf8(s).map_err(|_| KktError::NotUtf8 { field })
}

impl KktFrame {
    /// A frame with no names, roomid 0 and session 0; add them with [`KktFrame::to`],
    /// [`KktFrame::from`], [`KktFrame::session`] and [`KktFrame::roomid`].
    pub fn new(sub_type: u32, uid: i64, name: impl Into<Bytes>, body: impl Into<Bytes>) -> Self {
        KktFrame {
            sub_type,
            uid,
            name: name.into(),
            body: body.into(),
            ..KktFrame::default()
        }
    }

    /// Set the destination node and service.
    pub fn to(mut self, node: impl Into<Bytes>, service: impl Into<Bytes>) -> Self {
        self.remote_node = node.into();
        self.remote_service = service.into();
        self
    }

    /// Set the sending node and service (where a native reply goes).
    pub fn from(mut self, node: impl Into<Bytes>, service: impl Into<Bytes>) -> Self {
        self.source_node = node.into();
        self.source_service = service.into();
        self
    }

    /// Set the session (an rpc request's, > 0; 0 = no reply wanted).
    pub fn session(mut self, session: u64) -> Self {
        self.session = session;
        self
    }

    /// Set the room id (a negative C++ room id is `id as u32`).
    pub fn roomid(mut self, roomid: u32) -> Self {
        self.roomid = roomid;
        self
    }

    /// The room id as the signed 32-bit integer the team's C++ wrote.
    pub fn roomid_i32(&self) -> i32 {
        self.roomid as i32
    }

    /// Parse a v2 frame. Every length is checked against `buf`; a field that does not fit
    /// gives [`KktError::Truncated`] naming it. The strings and body are slices of `buf`.
    /// Trailing bytes are the body (the format has no body length).
    pub fn decode(buf: &Bytes) -> Result<KktFrame, KktError> {
        Ok(Parsed::v2(buf)?.frame(buf))
    }

    /// Parse an older proxy "v1" frame: `[u16 RN][u16 RS][remote node][remote service]`
    /// then an inner frame. Source names are empty and the session is 0 in the result.
    pub fn decode_v1(buf: &Bytes) -> Result<KktFrame, KktError> {
        Ok(Parsed::v1(buf)?.frame(buf))
    }

    /// Parse an older inner frame: `[u32 sub_type][u64 uid][u16 L][name][u32 roomid]` then
    /// the body. All four names are empty and the session is 0 in the result.
    pub fn decode_inner(buf: &Bytes) -> Result<KktFrame, KktError> {
        Ok(Parsed::inner(buf)?.frame(buf))
    }

    /// Size of the v2 encoding.
    pub fn encoded_len(&self) -> usize {
        FIXED_LEN
            + self.remote_node.len()
            + self.remote_service.len()
            + self.source_node.len()
            + self.source_service.len()
            + self.name.len()
            + self.body.len()
    }

    fn check_lengths(&self) -> Result<[u16; 5], KktError> {
        Ok([
            str_len("remote_node", &self.remote_node)?,
            str_len("remote_service", &self.remote_service)?,
            str_len("source_node", &self.source_node)?,
            str_len("source_service", &self.source_service)?,
            str_len("name", &self.name)?,
        ])
    }

    /// `[sub_type][uid][name length][name][roomid]`, lengths already checked.
    fn put_inner(&self, name_len: u16, out: &mut BytesMut) {
        out.put_u32(self.sub_type);
        out.put_u64(self.uid as u64);
        out.put_u16(name_len);
        out.put_slice(&self.name);
        out.put_u32(self.roomid);
    }

    /// Append the v2 encoding to `out`. A string over 65535 bytes is refused with
    /// [`KktError::TooLong`]; on error nothing is written.
    pub fn encode_into(&self, out: &mut BytesMut) -> Result<(), KktError> {
        let [rn, rs, sn, ss, name] = self.check_lengths()?;
        out.reserve(self.encoded_len());
        for len in [rn, rs, sn, ss] {
            out.put_u16(len);
        }
        for s in [
            &self.remote_node,
            &self.remote_service,
            &self.source_node,
            &self.source_service,
        ] {
            out.put_slice(s);
        }
        self.put_inner(name, out);
        out.put_u64(self.session);
        out.put_slice(&self.body);
        Ok(())
    }

    /// The v2 encoding (see [`KktFrame::encode_into`]).
    pub fn encode(&self) -> Result<Bytes, KktError> {
        let mut out = BytesMut::new();
        self.encode_into(&mut out)?;
        Ok(out.freeze())
    }

    fn refuse_set(&self, layout: &'static str, remote_too: bool) -> Result<(), KktError> {
        let set = [
            ("remote_node", remote_too && !self.remote_node.is_empty()),
            (
                "remote_service",
                remote_too && !self.remote_service.is_empty(),
            ),
            ("source_node", !self.source_node.is_empty()),
            ("source_service", !self.source_service.is_empty()),
            ("session", self.session != 0),
        ];
        match set.into_iter().find(|(_, is_set)| *is_set) {
            Some((field, _)) => Err(KktError::NotInLayout { layout, field }),
            None => Ok(()),
        }
    }

    /// The older proxy "v1" encoding (remote names, then an inner frame), for old
    /// receivers. Refused with [`KktError::NotInLayout`] when source names or session are
    /// set (v1 cannot carry them), [`KktError::TooLong`] for a string over 65535 bytes.
    pub fn encode_v1(&self) -> Result<Bytes, KktError> {
        self.refuse_set("v1", false)?;
        let [rn, rs, _, _, name] = self.check_lengths()?;
        let mut out = BytesMut::with_capacity(
            4 + self.remote_node.len()
                + self.remote_service.len()
                + INNER_FIXED_LEN
                + self.name.len()
                + self.body.len(),
        );
        out.put_u16(rn);
        out.put_u16(rs);
        out.put_slice(&self.remote_node);
        out.put_slice(&self.remote_service);
        self.put_inner(name, &mut out);
        out.put_slice(&self.body);
        Ok(out.freeze())
    }

    /// The older inner encoding (sub_type, uid, name, roomid, body). Refused with
    /// [`KktError::NotInLayout`] when any name or the session is set.
    pub fn encode_inner(&self) -> Result<Bytes, KktError> {
        self.refuse_set("inner", true)?;
        let [_, _, _, _, name] = self.check_lengths()?;
        let mut out = BytesMut::with_capacity(INNER_FIXED_LEN + self.name.len() + self.body.len());
        self.put_inner(name, &mut out);
        out.put_slice(&self.body);
        Ok(out.freeze())
    }

    /// The remote node name as text.
    pub fn remote_node_str(&self) -> Result<&str, KktError> {
        text("remote_node", &self.remote_node)
    }

    /// The remote service name as text.
    pub fn remote_service_str(&self) -> Result<&str, KktError> {
        text("remote_service", &self.remote_service)
    }

    /// The source node name as text.
    pub fn source_node_str(&self) -> Result<&str, KktError> {
        text("source_node", &self.source_node)
    }

    /// The source service name as text.
    pub fn source_service_str(&self) -> Result<&str, KktError> {
        text("source_service", &self.source_service)
    }

    /// The message name as text.
    pub fn name_str(&self) -> Result<&str, KktError> {
        text("name", &self.name)
    }
}

/// The reply a Lua service sends to `request`: all four names empty, sub_type
/// [`SUBTYPE_RPC_CLIENT`], uid, roomid and session copied from the request, and the
/// response's `name` and `body`. (A Lua service replies only when the request's session
/// is > 0 and its handler returned a response; that choice is the caller's.)
pub fn reply_from_lua(
    request: &KktFrame,
    name: impl Into<Bytes>,
    body: impl Into<Bytes>,
) -> KktFrame {
    KktFrame::new(SUBTYPE_RPC_CLIENT, request.uid, name, body)
        .roomid(request.roomid)
        .session(request.session)
}

/// The reply a native (C++) service sends to `request`: the name pairs swapped (remote =
/// the request's source node and service, source = the request's remote node and service),
/// sub_type [`SUBTYPE_RPC_CLIENT`], the request's uid and session, roomid 0, and the
/// response's `name` and `body`.
pub fn reply_from_native(
    request: &KktFrame,
    name: impl Into<Bytes>,
    body: impl Into<Bytes>,
) -> KktFrame {
    KktFrame::new(SUBTYPE_RPC_CLIENT, request.uid, name, body)
        .to(request.source_node.clone(), request.source_service.clone())
        .from(request.remote_node.clone(), request.remote_service.clone())
        .session(request.session)
}

/// The client frame between gate and game client:
/// `[u32 length of the rest][u16 L][name][u32 roomid][protobuf]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFrame {
    /// The message name (protobuf full name).
    pub name: Bytes,
    /// The room id as written (32 bits from a C++ `int`). An old variant used bit 31 to
    /// mark a zlib-compressed body; this type leaves the bits as they are.
    pub roomid: u32,
    /// The protobuf body.
    pub body: Bytes,
}

impl ClientFrame {
    /// Parse one whole client frame: the u32 length must equal the bytes after it and be
    /// below [`CLIENT_MAX_LEN`]; name and body are slices of `buf`.
    pub fn decode(buf: &Bytes) -> Result<ClientFrame, KktError> {
        let mut r = Reader::new(buf);
        let announced = r.u32("length")? as usize;
        if announced >= CLIENT_MAX_LEN {
            return Err(KktError::ClientTooLarge { len: announced });
        }
        let available = buf.len() - r.pos;
        if announced != available {
            return Err(KktError::ClientLength {
                announced,
                available,
            });
        }
        let name_len = r.u16("name length")?;
        let name = r.range("name", name_len)?;
        let roomid = r.u32("roomid")?;
        Ok(ClientFrame {
            name: buf.slice(name),
            roomid,
            body: buf.slice(r.pos..),
        })
    }

    /// The frame's bytes, its length included. Refused: a name over 65535 bytes
    /// ([`KktError::TooLong`]), a frame whose length would reach 16 MiB
    /// ([`KktError::ClientTooLarge`]).
    pub fn encode(&self) -> Result<Bytes, KktError> {
        let name_len = str_len("name", &self.name)?;
        let len = 2 + self.name.len() + 4 + self.body.len();
        if len >= CLIENT_MAX_LEN {
            return Err(KktError::ClientTooLarge { len });
        }
        let mut out = BytesMut::with_capacity(4 + len);
        out.put_u32(len as u32);
        out.put_u16(name_len);
        out.put_slice(&self.name);
        out.put_u32(self.roomid);
        out.put_slice(&self.body);
        Ok(out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Bytes {
        Bytes::from(hex::decode(s).unwrap())
    }

    fn sample() -> KktFrame {
        KktFrame::new(SUBTYPE_RPC_SERVER, 10076447, "game.Ping", &b"\x08\x01"[..])
            .to("node", "svc")
            .from("src", "ssv")
            .roomid(5)
            .session(7)
    }

    #[test]
    fn layout_and_zero_copy() {
        let b = sample().encode().unwrap();
        assert_eq!(
            hex::encode(&b),
            "00040003000300036e6f646573766373726373737600000012000000000099c11f\
             000967616d652e50696e67000000050000000000000007\
             0801"
        );
        assert_eq!(b.len(), sample().encoded_len());
        let f = KktFrame::decode(&b).unwrap();
        assert_eq!(f, sample());
        assert_eq!(f.remote_node.as_ptr(), b[8..].as_ptr());
        assert_eq!(f.body.as_ptr(), b[b.len() - 2..].as_ptr());
        assert_eq!(f.remote_node_str().unwrap(), "node");
        assert_eq!(f.remote_service_str().unwrap(), "svc");
        assert_eq!(f.source_node_str().unwrap(), "src");
        assert_eq!(f.source_service_str().unwrap(), "ssv");
        assert_eq!(f.name_str().unwrap(), "game.Ping");
    }

    #[test]
    fn peek_reads_the_header_only() {
        let b = sample().encode().unwrap();
        let h = KktHeader::peek(&b).unwrap();
        assert_eq!(h.remote_node, b"node");
        assert_eq!(h.remote_service, b"svc");
        assert_eq!(h.source_node, b"src");
        assert_eq!(h.source_service, b"ssv");
        assert_eq!(
            (h.sub_type, h.uid, h.roomid, h.session),
            (18, 10076447, 5, 7)
        );
        assert_eq!(h.name, b"game.Ping");
        assert_eq!(h.body_offset, b.len() - 2);
        assert_eq!(peek_uid(&b), Ok(10076447));
        // A truncated header is refused by peek as by decode.
        assert_eq!(
            peek_uid(&b[..b.len() - 3]),
            Err(KktError::Truncated {
                field: "session",
                offset: b.len() - 10,
                needed: 8,
                available: 7
            })
        );
    }

    #[test]
    fn truncated_names_the_field_and_sizes() {
        let cases: &[(&str, &str, usize, usize, usize)] = &[
            ("", "remote_node length", 0, 2, 0),
            ("000400", "remote_service length", 2, 2, 1),
            ("000400030003", "source_service length", 6, 2, 0),
            ("00c8000100010001616263", "remote_node", 8, 200, 3),
            ("0000000000000000000000", "sub_type", 8, 4, 3),
            ("000000000000000000000010000000", "uid", 12, 8, 3),
            (
                "000000000000000000000010000000000000000101f467616d652e50696e67",
                "name",
                22,
                500,
                9,
            ),
            (
                "0000000000000000000000100000000000000001000161",
                "roomid",
                23,
                4,
                0,
            ),
        ];
        for &(hex, field, offset, needed, available) in cases {
            let e = KktFrame::decode(&unhex(hex)).unwrap_err();
            assert_eq!(
                e,
                KktError::Truncated {
                    field,
                    offset,
                    needed,
                    available
                },
                "{hex}"
            );
            let text = e.to_string();
            assert!(text.contains(field) && text.contains(&needed.to_string()));
        }
    }

    #[test]
    fn too_long_is_refused_not_truncated() {
        let long = Bytes::from(vec![b'x'; MAX_STR + 1]);
        let fits = Bytes::from(vec![b'x'; MAX_STR]);
        type Set = fn(KktFrame, Bytes) -> KktFrame;
        let fields: [(&str, Set); 5] = [
            ("remote_node", |f, s| KktFrame {
                remote_node: s,
                ..f
            }),
            ("remote_service", |f, s| KktFrame {
                remote_service: s,
                ..f
            }),
            ("source_node", |f, s| KktFrame {
                source_node: s,
                ..f
            }),
            ("source_service", |f, s| KktFrame {
                source_service: s,
                ..f
            }),
            ("name", |f, s| KktFrame { name: s, ..f }),
        ];
        for (field, set) in fields {
            let mut out = BytesMut::from(&b"keep"[..]);
            let f = set(sample(), long.clone());
            assert_eq!(
                f.encode_into(&mut out),
                Err(KktError::TooLong {
                    field,
                    len: MAX_STR + 1
                })
            );
            assert_eq!(&out[..], b"keep", "nothing written on error");
            // 65535 is the largest length that fits, and it round-trips.
            let f = set(sample(), fits.clone());
            assert_eq!(KktFrame::decode(&f.encode().unwrap()).unwrap(), f);
        }
    }

    #[test]
    fn not_utf8() {
        let f = KktFrame::new(16, 1, &b"\xff"[..], Bytes::new())
            .to(&b"\xfe"[..], &b"\xfd"[..])
            .from(&b"\xfc"[..], &b"\xfb"[..]);
        let f = KktFrame::decode(&f.encode().unwrap()).unwrap();
        assert_eq!(f.name_str(), Err(KktError::NotUtf8 { field: "name" }));
        assert_eq!(
            f.remote_node_str(),
            Err(KktError::NotUtf8 {
                field: "remote_node"
            })
        );
        assert_eq!(
            f.remote_service_str(),
            Err(KktError::NotUtf8 {
                field: "remote_service"
            })
        );
        assert_eq!(
            f.source_node_str(),
            Err(KktError::NotUtf8 {
                field: "source_node"
            })
        );
        assert_eq!(
            f.source_service_str(),
            Err(KktError::NotUtf8 {
                field: "source_service"
            })
        );
    }

    #[test]
    fn roomid_signed_view() {
        let f = KktFrame::new(16, 1, "a.B", Bytes::new()).roomid(-1i32 as u32);
        assert_eq!(f.roomid, 0xffff_ffff);
        assert_eq!(f.roomid_i32(), -1);
    }

    #[test]
    fn negative_uid_round_trips() {
        let f = KktFrame::new(16, -5, "a.B", Bytes::new());
        let b = f.encode().unwrap();
        assert_eq!(&b[12..20], &(-5i64).to_be_bytes());
        assert_eq!(KktFrame::decode(&b).unwrap().uid, -5);
    }

    #[test]
    fn replies() {
        let req = sample();
        let lua = reply_from_lua(&req, "game.Pong", &b"\x08\x02"[..]);
        assert_eq!(
            lua,
            KktFrame {
                sub_type: SUBTYPE_RPC_CLIENT,
                uid: 10076447,
                name: Bytes::from_static(b"game.Pong"),
                roomid: 5,
                session: 7,
                body: Bytes::from_static(b"\x08\x02"),
                ..KktFrame::default()
            }
        );
        let native = reply_from_native(&req, "game.Pong", Bytes::new());
        assert_eq!(native.remote_node, "src");
        assert_eq!(native.remote_service, "ssv");
        assert_eq!(native.source_node, "node");
        assert_eq!(native.source_service, "svc");
        assert_eq!(
            (native.sub_type, native.uid, native.roomid, native.session),
            (SUBTYPE_RPC_CLIENT, 10076447, 0, 7)
        );
    }

    #[test]
    fn older_layouts_refuse_what_they_cannot_carry() {
        let base = KktFrame::new(16, 1, "a.B", &b"x"[..]);
        let v1 = base.clone().to("n", "s");
        assert_eq!(KktFrame::decode_v1(&v1.encode_v1().unwrap()).unwrap(), v1);
        assert_eq!(
            KktFrame::decode_inner(&base.encode_inner().unwrap()).unwrap(),
            base
        );
        let cases = [
            (v1.clone().from("m", ""), "v1", "source_node"),
            (v1.clone().from("", "t"), "v1", "source_service"),
            (v1.clone().session(3), "v1", "session"),
        ];
        for (f, layout, field) in cases {
            assert_eq!(f.encode_v1(), Err(KktError::NotInLayout { layout, field }));
        }
        assert_eq!(
            v1.encode_inner(),
            Err(KktError::NotInLayout {
                layout: "inner",
                field: "remote_node"
            })
        );
        assert_eq!(
            base.clone().to("", "s").encode_inner(),
            Err(KktError::NotInLayout {
                layout: "inner",
                field: "remote_service"
            })
        );
        assert_eq!(
            base.session(1).encode_inner(),
            Err(KktError::NotInLayout {
                layout: "inner",
                field: "session"
            })
        );
        assert_eq!(
            KktFrame::decode_v1(&unhex("0001")),
            Err(KktError::Truncated {
                field: "remote_service length",
                offset: 2,
                needed: 2,
                available: 0
            })
        );
        assert_eq!(
            KktFrame::decode_inner(&unhex("00000010")),
            Err(KktError::Truncated {
                field: "uid",
                offset: 4,
                needed: 8,
                available: 0
            })
        );
    }

    #[test]
    fn client_frame_errors() {
        let f = ClientFrame {
            name: Bytes::from_static(b"a.B"),
            roomid: 1,
            body: Bytes::from_static(b"xy"),
        };
        let b = f.encode().unwrap();
        assert_eq!(hex::encode(&b), "0000000b0003612e42000000017879");
        assert_eq!(ClientFrame::decode(&b).unwrap(), f);
        assert_eq!(
            ClientFrame::decode(&b.slice(..b.len() - 1)),
            Err(KktError::ClientLength {
                announced: 11,
                available: 10
            })
        );
        assert_eq!(
            ClientFrame::decode(&unhex("010000000000")),
            Err(KktError::ClientTooLarge { len: 16 << 20 })
        );
        assert_eq!(
            ClientFrame::decode(&unhex("000000")),
            Err(KktError::Truncated {
                field: "length",
                offset: 0,
                needed: 4,
                available: 3
            })
        );
        assert_eq!(
            ClientFrame::decode(&unhex("0000000400056162")),
            Err(KktError::Truncated {
                field: "name",
                offset: 6,
                needed: 5,
                available: 2
            })
        );
        assert_eq!(
            ClientFrame::decode(&unhex("00000004000161ff")),
            Err(KktError::Truncated {
                field: "roomid",
                offset: 7,
                needed: 4,
                available: 1
            })
        );
        let big = ClientFrame {
            body: Bytes::from(vec![0; CLIENT_MAX_LEN - 6 - 3]),
            ..f.clone()
        };
        assert_eq!(
            big.encode(),
            Err(KktError::ClientTooLarge {
                len: CLIENT_MAX_LEN
            })
        );
        let fits = ClientFrame {
            body: Bytes::from(vec![0; CLIENT_MAX_LEN - 6 - 4]),
            ..f.clone()
        };
        assert_eq!(ClientFrame::decode(&fits.encode().unwrap()).unwrap(), fits);
        let long = ClientFrame {
            name: Bytes::from(vec![b'n'; MAX_STR + 1]),
            ..f
        };
        assert_eq!(
            long.encode(),
            Err(KktError::TooLong {
                field: "name",
                len: MAX_STR + 1
            })
        );
    }
}
