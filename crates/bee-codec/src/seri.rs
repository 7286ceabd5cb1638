//! skynet.pack values — the payload format of every `"lua"` message.
//!
//! A packed message is the concatenation of one encoded value per argument, with no count
//! and no terminator (see `spec/seri.md`). [`pack`] / [`pack_into`] produce exactly the bytes
//! stock skynet v1.6.0 produces for the same values; [`unpack`] reads them back without
//! copying strings (each [`Value::String`] is a slice of the input [`Bytes`]).
//!
//! Wire summary (tag byte = `type | cookie << 3`, multi-byte numbers little-endian):
//!
//! | type | value | cookie | payload |
//! |---|---|---|---|
//! | 0 | nil | 0 | — |
//! | 1 | boolean | 0 false, 1 true | — |
//! | 2 | number | 0 zero, 1 u8, 2 u16, 4 i32, 6 i64, 8 f64 | 0/1/2/4/8/8 bytes |
//! | 3 | light userdata | 0 | 8 bytes (opaque here) |
//! | 4 | short string | length 0..=31 | the bytes |
//! | 5 | long string | 2 (u16 length) or 4 (u32 length) | length, bytes |
//! | 6 | table | array size 0..=30, or 31 then a number value | array, key/value pairs, nil |
//!
//! Limits: packing fails for tables nested deeper than [`MAX_DEPTH`] (like stock skynet);
//! unpacking rejects tables nested deeper than [`MAX_DECODE_DEPTH`] so hostile input cannot
//! exhaust the stack, and never reserves memory by a count it has not checked against the
//! bytes that remain.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

/// Tables nest at most this deep when packing (the outermost table is depth 1); one more
/// level, or any value inside the innermost of them, fails with [`SeriError::TooDeep`],
/// exactly like stock skynet.
pub const MAX_DEPTH: usize = 33;

/// Tables nest at most this deep when unpacking (the outermost table is depth 1). Stock
/// skynet never produces more than [`MAX_DEPTH`]; the extra room only exists so that a
/// deeper stream is reported as [`SeriError::DecodeTooDeep`] instead of overflowing the
/// stack.
pub const MAX_DECODE_DEPTH: usize = 64;

const TYPE_NIL: u8 = 0;
const TYPE_BOOLEAN: u8 = 1;
const TYPE_NUMBER: u8 = 2;
const TYPE_USERDATA: u8 = 3;
const TYPE_SHORT_STRING: u8 = 4;
const TYPE_LONG_STRING: u8 = 5;
const TYPE_TABLE: u8 = 6;

const NUMBER_ZERO: u8 = 0;
const NUMBER_BYTE: u8 = 1;
const NUMBER_WORD: u8 = 2;
const NUMBER_DWORD: u8 = 4;
const NUMBER_QWORD: u8 = 6;
const NUMBER_REAL: u8 = 8;

/// Most array elements reserved up front when unpacking a table.
const MAX_PREALLOC: usize = 4096;

/// Longest string carried in the tag byte.
const MAX_SHORT_STRING: usize = 31;
/// Array sizes at or above this are written as an escape (cookie 31) plus a number.
const ARRAY_ESCAPE: usize = 31;

const fn tag(ty: u8, cookie: u8) -> u8 {
    ty | (cookie << 3)
}

/// Errors from [`pack`] and [`unpack`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SeriError {
    /// The bytes are not a valid skynet.pack stream (truncated value, unknown cookie or
    /// type, bad array size). `offset` is where the offending value starts.
    #[error("Invalid serialize stream at byte {offset}: {reason}")]
    InvalidStream {
        /// Byte offset in the input of the value that could not be read.
        offset: usize,
        /// What was wrong there.
        reason: &'static str,
    },
    /// Packing met a table nested deeper than [`MAX_DEPTH`] (stock skynet's error text).
    #[error("serialize can't pack too depth table")]
    TooDeep,
    /// Unpacking met a table nested deeper than [`MAX_DECODE_DEPTH`].
    #[error("Invalid serialize stream at byte {offset}: tables nested deeper than {max}")]
    DecodeTooDeep {
        /// Byte offset of the table that went over the limit.
        offset: usize,
        /// The limit ([`MAX_DECODE_DEPTH`]).
        max: usize,
    },
    /// Packing met a table key that is nil; a nil key would end the table on the wire.
    #[error("serialize can't pack a table key that is nil (Lua tables cannot hold one)")]
    NilKey,
    /// Packing met a string longer than the format's 32-bit length field.
    #[error("serialize can't pack a string of {len} bytes (at most 4294967295)")]
    StringTooLong {
        /// The string's length.
        len: usize,
    },
}

/// A Lua table as skynet.pack carries it: an array part (indexes 1..=n) and a hash part
/// holding every other pair in the order it was read or inserted (so that decode → encode
/// reproduces the original bytes).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    /// Values at integer keys `1..=array.len()`.
    pub array: Vec<Value>,
    /// All other key/value pairs, in read / insertion order.
    pub hash: Vec<(Value, Value)>,
}

/// One skynet.pack value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `nil`.
    Nil,
    /// `true` / `false`.
    Boolean(bool),
    /// A Lua integer (64-bit).
    Integer(i64),
    /// A Lua float (always encoded as a double, even when integral).
    Real(f64),
    /// A Lua string: any bytes, not necessarily UTF-8.
    String(Bytes),
    /// A Lua table.
    Table(Table),
    /// A light userdata (a raw pointer in the sending process): carried as 8 opaque bytes
    /// (little-endian) and re-encoded unchanged.
    LightUserData(u64),
}

/// Equality of table keys as Lua sees it: an integral float equals the same integer.
fn key_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Integer(i), Value::Real(f)) | (Value::Real(f), Value::Integer(i)) => {
            float_to_int(*f) == Some(*i)
        }
        _ => a == b,
    }
}

/// The integer an f64 holds exactly, if any.
fn float_to_int(f: f64) -> Option<i64> {
    // 2^63 as f64; every finite integral f64 in [-2^63, 2^63) converts exactly.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f) {
        Some(f as i64)
    } else {
        None
    }
}

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The array index (0-based) a key selects, if it is an integer in `1..=array.len()`.
    fn array_index(&self, key: &Value) -> Option<usize> {
        let k = key.as_int()?;
        if k >= 1 && (k as u64) <= self.array.len() as u64 {
            Some((k - 1) as usize)
        } else {
            None
        }
    }

    /// Set `key` to `value`. An integer key in `1..=array.len()` replaces that array
    /// element; otherwise an equal key in the hash part is replaced, or the pair is
    /// appended to the hash part.
    pub fn insert(&mut self, key: Value, value: Value) {
        if let Some(i) = self.array_index(&key) {
            self.array[i] = value;
        } else if let Some(slot) = self.hash.iter_mut().find(|(k, _)| key_eq(k, &key)) {
            slot.1 = value;
        } else {
            self.hash.push((key, value));
        }
    }

    /// Append `value` to the array part (it becomes key `array.len()`).
    pub fn push(&mut self, value: Value) {
        self.array.push(value);
    }

    /// The value at `key`: integer keys `1..=array.len()` hit the array part, others are
    /// looked up in the hash part (first match; an integral float matches the integer).
    pub fn get(&self, key: &Value) -> Option<&Value> {
        if let Some(i) = self.array_index(key) {
            return self.array.get(i);
        }
        self.hash
            .iter()
            .find(|(k, _)| key_eq(k, key))
            .map(|(_, v)| v)
    }

    /// The value at the string key `key`.
    pub fn get_str(&self, key: &str) -> Option<&Value> {
        self.hash
            .iter()
            .find(|(k, _)| k.as_bytes() == Some(key.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Number of entries: array elements plus hash pairs.
    pub fn len(&self) -> usize {
        self.array.len() + self.hash.len()
    }

    /// True when the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.array.is_empty() && self.hash.is_empty()
    }
}

impl Value {
    /// The integer, for [`Value::Integer`] and for a [`Value::Real`] holding an exact
    /// integer value.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Integer(i) => Some(*i),
            Value::Real(f) => float_to_int(*f),
            _ => None,
        }
    }

    /// The number as a float, for [`Value::Real`] and [`Value::Integer`].
    pub fn as_real(&self) -> Option<f64> {
        match self {
            Value::Real(f) => Some(*f),
            Value::Integer(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The boolean, for [`Value::Boolean`].
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// The bytes of a [`Value::String`].
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::String(b) => Some(b),
            _ => None,
        }
    }

    /// The text of a [`Value::String`] that is valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The table of a [`Value::Table`].
    pub fn as_table(&self) -> Option<&Table> {
        match self {
            Value::Table(t) => Some(t),
            _ => None,
        }
    }

    /// True for [`Value::Nil`].
    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }

    /// The value's type: `"nil"`, `"boolean"`, `"integer"`, `"real"`, `"string"`,
    /// `"table"` or `"lightuserdata"`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Boolean(_) => "boolean",
            Value::Integer(_) => "integer",
            Value::Real(_) => "real",
            Value::String(_) => "string",
            Value::Table(_) => "table",
            Value::LightUserData(_) => "lightuserdata",
        }
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(Bytes::copy_from_slice(v.as_bytes()))
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::String(Bytes::from(v))
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::String(Bytes::copy_from_slice(v))
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::String(Bytes::from(v))
    }
}
impl From<Bytes> for Value {
    fn from(v: Bytes) -> Self {
        Value::String(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Boolean(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Integer(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Integer(v.into())
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Integer(v.into())
    }
}
impl From<u16> for Value {
    fn from(v: u16) -> Self {
        Value::Integer(v.into())
    }
}
impl From<u8> for Value {
    fn from(v: u8) -> Self {
        Value::Integer(v.into())
    }
}
/// Converts with `as i64` (sizes and counts never reach 2^63 in practice).
impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Integer(v as i64)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}
impl From<Table> for Value {
    fn from(v: Table) -> Self {
        Value::Table(v)
    }
}
/// `None` becomes [`Value::Nil`].
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Nil, Into::into)
    }
}

// ---------------------------------------------------------------------------------------
// Display

fn is_identifier(b: &[u8]) -> bool {
    const KEYWORDS: &[&[u8]] = &[
        b"and",
        b"break",
        b"do",
        b"else",
        b"elseif",
        b"end",
        b"false",
        b"for",
        b"function",
        b"goto",
        b"if",
        b"in",
        b"local",
        b"nil",
        b"not",
        b"or",
        b"repeat",
        b"return",
        b"then",
        b"true",
        b"until",
        b"while",
    ];
    match b.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_alphabetic() || *first == b'_')
                && rest.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
                && !KEYWORDS.contains(&b)
        }
        None => false,
    }
}

fn write_quoted(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    f.write_str("\"")?;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        write!(f, "\\x{b:02x}")?;
                    }
                }
                c => write!(f, "{c}")?,
            }
        }
        for b in chunk.invalid() {
            write!(f, "\\x{b:02x}")?;
        }
    }
    f.write_str("\"")
}

/// Readable Lua-like text: `nil`, `true`, `42`, `2.0`, `"text"` (quoted, with `\xNN` for
/// control and non-UTF-8 bytes), `{1, 2, name = "x", [10] = true}`,
/// `lightuserdata(0x…)`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Nil => f.write_str("nil"),
            Value::Boolean(b) => write!(f, "{b}"),
            Value::Integer(i) => write!(f, "{i}"),
            Value::Real(r) => {
                if r.is_nan() {
                    f.write_str("nan")
                } else if r.is_infinite() {
                    f.write_str(if *r > 0.0 { "inf" } else { "-inf" })
                } else {
                    write!(f, "{r:?}")
                }
            }
            Value::String(s) => write_quoted(f, s),
            Value::Table(t) => write!(f, "{t}"),
            Value::LightUserData(p) => write!(f, "lightuserdata(0x{p:016x})"),
        }
    }
}

/// Same text as the table's [`Value`] display.
impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("{}");
        }
        f.write_str("{")?;
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| {
            if first {
                first = false;
                Ok(())
            } else {
                f.write_str(", ")
            }
        };
        for v in &self.array {
            sep(f)?;
            write!(f, "{v}")?;
        }
        for (k, v) in &self.hash {
            sep(f)?;
            match k {
                Value::String(s) if is_identifier(s) => {
                    // is_identifier only accepts ASCII.
                    f.write_str(std::str::from_utf8(s).unwrap_or_default())?;
                }
                other => write!(f, "[{other}]")?,
            }
            write!(f, " = {v}")?;
        }
        f.write_str("}")
    }
}

// ---------------------------------------------------------------------------------------
// Encoding

/// Pack `values` as one skynet.pack message (`skynet.pack(v1, v2, ...)`).
pub fn pack(values: &[Value]) -> Result<Bytes, SeriError> {
    let mut out = BytesMut::new();
    pack_into(values, &mut out)?;
    Ok(out.freeze())
}

/// Append the packing of `values` to `out`. On error `out` is left as it was.
pub fn pack_into(values: &[Value], out: &mut BytesMut) -> Result<(), SeriError> {
    let start = out.len();
    out.reserve(16 * values.len().max(1));
    for v in values {
        if let Err(e) = encode_value(v, out, 0) {
            out.truncate(start);
            return Err(e);
        }
    }
    Ok(())
}

fn encode_integer(i: i64, out: &mut BytesMut) {
    if i == 0 {
        out.put_u8(tag(TYPE_NUMBER, NUMBER_ZERO));
    } else if i != i64::from(i as i32) {
        out.put_u8(tag(TYPE_NUMBER, NUMBER_QWORD));
        out.put_i64_le(i);
    } else if i < 0 {
        out.put_u8(tag(TYPE_NUMBER, NUMBER_DWORD));
        out.put_i32_le(i as i32);
    } else if i < 0x100 {
        out.put_u8(tag(TYPE_NUMBER, NUMBER_BYTE));
        out.put_u8(i as u8);
    } else if i < 0x10000 {
        out.put_u8(tag(TYPE_NUMBER, NUMBER_WORD));
        out.put_u16_le(i as u16);
    } else {
        out.put_u8(tag(TYPE_NUMBER, NUMBER_DWORD));
        out.put_i32_le(i as i32);
    }
}

fn encode_string(s: &[u8], out: &mut BytesMut) -> Result<(), SeriError> {
    let len = s.len();
    if len <= MAX_SHORT_STRING {
        out.reserve(1 + len);
        out.put_u8(tag(TYPE_SHORT_STRING, len as u8));
    } else if len < 0x10000 {
        out.reserve(3 + len);
        out.put_u8(tag(TYPE_LONG_STRING, 2));
        out.put_u16_le(len as u16);
    } else {
        let len32 = u32::try_from(len).map_err(|_| SeriError::StringTooLong { len })?;
        out.reserve(5 + len);
        out.put_u8(tag(TYPE_LONG_STRING, 4));
        out.put_u32_le(len32);
    }
    out.put_slice(s);
    Ok(())
}

/// `depth` is the number of tables already open around `v`.
fn encode_value(v: &Value, out: &mut BytesMut, depth: usize) -> Result<(), SeriError> {
    // Like stock skynet, the limit is on any value inside MAX_DEPTH open tables: the
    // innermost of MAX_DEPTH nested tables packs only while it is empty.
    if depth >= MAX_DEPTH {
        return Err(SeriError::TooDeep);
    }
    match v {
        Value::Nil => out.put_u8(tag(TYPE_NIL, 0)),
        Value::Boolean(b) => out.put_u8(tag(TYPE_BOOLEAN, u8::from(*b))),
        Value::Integer(i) => encode_integer(*i, out),
        Value::Real(r) => {
            out.put_u8(tag(TYPE_NUMBER, NUMBER_REAL));
            out.put_f64_le(*r);
        }
        Value::LightUserData(p) => {
            out.put_u8(tag(TYPE_USERDATA, 0));
            out.put_u64_le(*p);
        }
        Value::String(s) => encode_string(s, out)?,
        Value::Table(t) => {
            let depth = depth + 1;
            let n = t.array.len();
            if n < ARRAY_ESCAPE {
                out.put_u8(tag(TYPE_TABLE, n as u8));
            } else {
                out.put_u8(tag(TYPE_TABLE, ARRAY_ESCAPE as u8));
                encode_integer(n as i64, out);
            }
            for item in &t.array {
                encode_value(item, out, depth)?;
            }
            for (k, item) in &t.hash {
                if k.is_nil() {
                    return Err(SeriError::NilKey);
                }
                encode_value(k, out, depth)?;
                encode_value(item, out, depth)?;
            }
            out.put_u8(tag(TYPE_NIL, 0));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Decoding

/// Unpack a skynet.pack message into its values (empty input → no values). Strings are
/// zero-copy slices of `buf`.
pub fn unpack(buf: &Bytes) -> Result<Vec<Value>, SeriError> {
    Reader::new(buf).rest()
}

/// Unpack only the first `n` values of a message (fewer if it has fewer), leaving the
/// rest unread: for routers that need the sub-type or a uid and pass the payload on
/// untouched.
pub fn unpack_first(buf: &Bytes, n: usize) -> Result<Vec<Value>, SeriError> {
    let mut r = Reader { buf, pos: 0 };
    let mut values = Vec::with_capacity(n.min(8));
    while r.pos < buf.len() && values.len() < n {
        values.push(r.value(0)?);
    }
    Ok(values)
}

/// Unpack a message held in a plain slice. The input is copied once; the strings share
/// that copy.
pub fn unpack_slice(buf: &[u8]) -> Result<Vec<Value>, SeriError> {
    unpack(&Bytes::copy_from_slice(buf))
}

/// A packed message read one value at a time, for code that wants the first few values
/// without building the whole `Vec<Value>` [`unpack`] makes (a dispatcher reading a
/// sub-type, a command name and typed arguments straight off the payload).
///
/// Copying a reader is cheap (a reference and an offset), so a caller may keep a copy of
/// where it started and read again from there, e.g. to report an error in full.
///
/// ```
/// use bee_codec::seri::{pack, Reader, Value};
///
/// let buf = pack(&[Value::from("lua"), Value::from("add"), Value::Integer(2)]).unwrap();
/// let mut r = Reader::new(&buf);
/// assert_eq!(r.next_if_string(), Some(&b"lua"[..]));
/// assert_eq!(r.next_if_string(), Some(&b"add"[..]));
/// assert_eq!(r.next_if_string(), None, "not a string: not consumed");
/// assert_eq!(r.next_value().unwrap().unwrap(), Value::Integer(2));
/// assert!(r.is_empty() && r.next_value().is_none());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Read `buf` from its start.
    #[inline]
    pub fn new(buf: &'a Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Whether every value has been read.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The offset of the next value in the message.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// The next value; `None` at the end of the message. After an error the reader is
    /// left where it was (the error names the offset).
    #[inline]
    pub fn next_value(&mut self) -> Option<Result<Value, SeriError>> {
        if self.is_empty() {
            return None;
        }
        let at = self.pos;
        let v = self.value(0);
        if v.is_err() {
            self.pos = at;
        }
        Some(v)
    }

    /// If the next value is a well-formed string, its bytes (borrowed from the message,
    /// no reference count touched), and the reader moves past it; otherwise `None` and
    /// the reader stays put.
    #[inline]
    pub fn next_if_string(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        let t = *self.buf.get(start)?;
        let (ty, cookie) = (t & 7, t >> 3);
        if ty != TYPE_SHORT_STRING && ty != TYPE_LONG_STRING {
            return None;
        }
        let mut r = *self;
        r.pos += 1;
        let span = r.string_span(ty, cookie, start).ok()?;
        *self = r;
        let buf: &'a [u8] = self.buf;
        Some(&buf[span])
    }

    /// Every value not yet read.
    pub fn rest(mut self) -> Result<Vec<Value>, SeriError> {
        let mut values = Vec::new();
        while !self.is_empty() {
            values.push(self.value(0)?);
        }
        Ok(values)
    }
    fn invalid(offset: usize, reason: &'static str) -> SeriError {
        SeriError::InvalidStream { offset, reason }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Take `n` bytes; `start` is the offset of the value being read (for the error).
    fn take(&mut self, n: usize, start: usize, reason: &'static str) -> Result<&[u8], SeriError> {
        if self.remaining() < n {
            return Err(Self::invalid(start, reason));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, start: usize) -> Result<[u8; N], SeriError> {
        let s = self.take(N, start, "number truncated")?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn tag(&mut self) -> Result<u8, SeriError> {
        let t = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| Self::invalid(self.pos, "value missing (stream ends inside a table)"))?;
        self.pos += 1;
        Ok(t)
    }

    fn number(&mut self, cookie: u8, start: usize) -> Result<Value, SeriError> {
        Ok(match cookie {
            NUMBER_ZERO => Value::Integer(0),
            NUMBER_BYTE => Value::Integer(self.array::<1>(start)?[0].into()),
            NUMBER_WORD => Value::Integer(u16::from_le_bytes(self.array(start)?).into()),
            NUMBER_DWORD => Value::Integer(i32::from_le_bytes(self.array(start)?).into()),
            NUMBER_QWORD => Value::Integer(i64::from_le_bytes(self.array(start)?)),
            NUMBER_REAL => Value::Real(f64::from_le_bytes(self.array(start)?)),
            _ => return Err(Self::invalid(start, "unknown number cookie")),
        })
    }

    /// Read a string's length (after its tag, type `ty` with `cookie`) and move past its
    /// bytes; their place in the message.
    #[inline]
    fn string_span(
        &mut self,
        ty: u8,
        cookie: u8,
        start: usize,
    ) -> Result<std::ops::Range<usize>, SeriError> {
        let len = match (ty, cookie) {
            (TYPE_SHORT_STRING, _) => usize::from(cookie),
            (_, 2) => u16::from_le_bytes(self.array(start)?).into(),
            (_, 4) => u32::from_le_bytes(self.array(start)?) as usize,
            _ => return Err(Self::invalid(start, "long string cookie is not 2 or 4")),
        };
        if self.remaining() < len {
            return Err(Self::invalid(start, "string truncated"));
        }
        self.pos += len;
        Ok(self.pos - len..self.pos)
    }

    /// `depth` is the number of tables already open around this value.
    fn value(&mut self, depth: usize) -> Result<Value, SeriError> {
        let start = self.pos;
        let t = self.tag()?;
        let (ty, cookie) = (t & 7, t >> 3);
        match ty {
            TYPE_NIL if cookie == 0 => Ok(Value::Nil),
            TYPE_NIL => Err(Self::invalid(start, "nil with a non-zero cookie")),
            TYPE_BOOLEAN if cookie <= 1 => Ok(Value::Boolean(cookie == 1)),
            TYPE_BOOLEAN => Err(Self::invalid(start, "boolean cookie is not 0 or 1")),
            TYPE_NUMBER => self.number(cookie, start),
            TYPE_USERDATA if cookie == 0 => {
                let p = u64::from_le_bytes(self.array(start)?);
                Ok(Value::LightUserData(p))
            }
            TYPE_USERDATA => Err(Self::invalid(start, "userdata cookie is not 0")),
            TYPE_SHORT_STRING | TYPE_LONG_STRING => {
                let span = self.string_span(ty, cookie, start)?;
                Ok(Value::String(self.buf.slice(span)))
            }
            TYPE_TABLE => self.table(cookie, depth + 1, start),
            _ => Err(Self::invalid(start, "unknown type 7")),
        }
    }

    /// Read a table whose tag carried `cookie`; `depth` counts this table.
    fn table(&mut self, cookie: u8, depth: usize, start: usize) -> Result<Value, SeriError> {
        if depth > MAX_DECODE_DEPTH {
            return Err(SeriError::DecodeTooDeep {
                offset: start,
                max: MAX_DECODE_DEPTH,
            });
        }
        let n = if usize::from(cookie) == ARRAY_ESCAPE {
            let at = self.pos;
            let t = self.tag()?;
            if t & 7 != TYPE_NUMBER || t >> 3 == NUMBER_REAL {
                return Err(Self::invalid(
                    at,
                    "array size escape not followed by an integer",
                ));
            }
            match self.number(t >> 3, at)? {
                Value::Integer(i) => {
                    usize::try_from(i).map_err(|_| Self::invalid(at, "array size is negative"))?
                }
                _ => return Err(Self::invalid(at, "array size is not an integer")),
            }
        } else {
            usize::from(cookie)
        };
        // Every element takes at least one byte, so never reserve more than could follow;
        // and cap the reservation so nested tables that each announce a huge size cannot
        // multiply it (the Vec grows normally past the cap as elements really arrive).
        let mut array = Vec::with_capacity(n.min(self.remaining()).min(MAX_PREALLOC));
        for _ in 0..n {
            array.push(self.value(depth)?);
        }
        let mut hash = Vec::new();
        loop {
            let key = self.value(depth)?;
            if key.is_nil() {
                break;
            }
            let value = self.value(depth)?;
            hash.push((key, value));
        }
        Ok(Value::Table(Table { array, hash }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn nested(depth: usize) -> Value {
        let mut v = Value::Table(Table::new());
        for _ in 1..depth {
            let mut t = Table::new();
            t.push(v);
            v = Value::Table(t);
        }
        v
    }

    #[test]
    fn reader_takes_strings_of_every_length_and_nothing_truncated() {
        let long = vec![b'x'; 70_000];
        let buf = pack(&[
            Value::from("lua"),
            Value::from(vec![b'y'; 300]),
            Value::from(long.clone()),
            Value::Integer(5),
        ])
        .unwrap();
        let mut r = Reader::new(&buf);
        assert_eq!(r.next_if_string(), Some(&b"lua"[..]));
        assert_eq!(r.next_if_string().map(<[u8]>::len), Some(300), "u16 length");
        assert_eq!(r.next_if_string(), Some(&long[..]), "u32 length");
        assert_eq!(r.next_if_string(), None);
        assert_eq!(r.next_value(), Some(Ok(Value::Integer(5))));
        assert!(r.is_empty());

        // Cut anywhere inside the long string (its tag, its length or its bytes): not
        // taken, nothing consumed, and the full read names the problem.
        let start = 1 + 3 + 3 + 300;
        for cut in [start + 1, start + 3, start + 5, start + 100] {
            let short = buf.slice(..cut);
            let mut r = Reader::new(&short);
            r.next_if_string();
            r.next_if_string();
            let at = r.offset();
            assert_eq!(r.next_if_string(), None, "cut at {cut}");
            assert_eq!(r.offset(), at);
            assert!(matches!(
                r.next_value(),
                Some(Err(SeriError::InvalidStream { .. }))
            ));
            assert_eq!(r.offset(), at, "a failed read leaves the reader in place");
        }
    }

    #[test]
    fn integer_cookies() {
        let cases: &[(i64, &str)] = &[
            (0, "02"),
            (1, "0a01"),
            (255, "0aff"),
            (256, "120001"),
            (65535, "12ffff"),
            (65536, "2200000100"),
            (-1, "22ffffffff"),
            (i64::from(i32::MIN), "2200000080"),
            (i64::from(i32::MIN) - 1, "32ffffff7fffffffff"),
            (1 << 31, "320000008000000000"),
        ];
        for (i, h) in cases {
            assert_eq!(hex(&pack(&[Value::Integer(*i)]).unwrap()), *h, "{i}");
        }
    }

    #[test]
    fn decoder_accepts_any_integer_cookie() {
        // 1 written with every integer width.
        for h in ["0a01", "120100", "2201000000", "320100000000000000"] {
            assert_eq!(unpack_slice(&unhex(h)).unwrap(), vec![Value::Integer(1)]);
        }
        // cookie 4 is signed.
        assert_eq!(
            unpack_slice(&unhex("22feffffff")).unwrap(),
            vec![Value::Integer(-2)]
        );
    }

    #[test]
    fn depth_limit_on_pack() {
        assert!(pack(&[nested(MAX_DEPTH)]).is_ok());
        assert_eq!(pack(&[nested(MAX_DEPTH + 1)]), Err(SeriError::TooDeep));
        // A value inside the innermost of MAX_DEPTH tables is one level too deep for
        // stock skynet (seen on a real skynet v1.6.0); it must be for bee too.
        let mut inner = Table::new();
        inner.push(Value::Integer(1));
        let mut v = Value::Table(inner);
        for _ in 1..MAX_DEPTH {
            let mut t = Table::new();
            t.push(v);
            v = Value::Table(t);
        }
        assert_eq!(pack(&[v]), Err(SeriError::TooDeep));
        let mut inner = Table::new();
        inner.push(Value::Integer(1));
        let mut v = Value::Table(inner);
        for _ in 2..MAX_DEPTH {
            let mut t = Table::new();
            t.push(v);
            v = Value::Table(t);
        }
        assert!(pack(&[v]).is_ok(), "a value in the 32nd table packs");
        assert_eq!(
            SeriError::TooDeep.to_string(),
            "serialize can't pack too depth table"
        );
    }

    #[test]
    fn pack_into_leaves_output_untouched_on_error() {
        let mut out = BytesMut::from(&b"keep"[..]);
        assert!(pack_into(&[Value::Integer(5), nested(40)], &mut out).is_err());
        assert_eq!(&out[..], b"keep");
    }

    #[test]
    fn nil_key_is_refused() {
        let mut t = Table::new();
        t.hash.push((Value::Nil, Value::Integer(1)));
        assert_eq!(pack(&[Value::Table(t)]), Err(SeriError::NilKey));
    }

    #[test]
    fn decode_depth_limit() {
        // MAX_DECODE_DEPTH tables of one array element each, innermost empty.
        let ok: Vec<u8> = std::iter::repeat_n(0x0e, MAX_DECODE_DEPTH - 1)
            .chain([0x06])
            .chain(std::iter::repeat_n(0x00, MAX_DECODE_DEPTH))
            .collect();
        assert!(unpack_slice(&ok).is_ok());
        let deep: Vec<u8> = std::iter::repeat_n(0x0e, MAX_DECODE_DEPTH)
            .chain([0x06])
            .chain(std::iter::repeat_n(0x00, MAX_DECODE_DEPTH + 1))
            .collect();
        let err = unpack_slice(&deep).unwrap_err();
        assert_eq!(
            err,
            SeriError::DecodeTooDeep {
                offset: MAX_DECODE_DEPTH,
                max: MAX_DECODE_DEPTH
            }
        );
        assert!(err.to_string().starts_with("Invalid serialize stream"));
        // A hostile stream of only table openers fails cleanly too.
        assert!(unpack_slice(&[0x0e; 100_000]).is_err());
    }

    fn invalid_reason(bytes: &[u8]) -> (usize, &'static str) {
        match unpack_slice(bytes) {
            Err(SeriError::InvalidStream { offset, reason }) => (offset, reason),
            other => panic!("expected InvalidStream for {}, got {other:?}", hex(bytes)),
        }
    }

    #[test]
    fn invalid_streams() {
        assert_eq!(invalid_reason(&[0x07]), (0, "unknown type 7"));
        assert_eq!(invalid_reason(&[0x00, 0x1a]).1, "unknown number cookie");
        assert_eq!(invalid_reason(&[0x12, 0x01]), (0, "number truncated"));
        assert_eq!(invalid_reason(&[0x42, 0, 0]).1, "number truncated");
        assert_eq!(invalid_reason(&[0x0c]).1, "string truncated");
        assert_eq!(
            invalid_reason(&[0x15, 0x05, 0x00, b'a']).1,
            "string truncated"
        );
        assert_eq!(
            invalid_reason(&[0x1d, 0, 0]).1,
            "long string cookie is not 2 or 4"
        );
        assert_eq!(
            invalid_reason(&[0x25, 0xff, 0xff, 0xff]).1,
            "number truncated"
        );
        assert_eq!(invalid_reason(&[0x11]).1, "boolean cookie is not 0 or 1");
        assert_eq!(invalid_reason(&[0x08]).1, "nil with a non-zero cookie");
        assert_eq!(
            invalid_reason(&[0x0b, 0, 0, 0, 0, 0, 0, 0, 0]).1,
            "userdata cookie is not 0"
        );
        assert_eq!(invalid_reason(&[0x03, 1, 2]).1, "number truncated");
        // table: missing terminator, missing value of a pair
        assert_eq!(
            invalid_reason(&[0x06]),
            (1, "value missing (stream ends inside a table)")
        );
        assert_eq!(
            invalid_reason(&[0x06, 0x0a, 0x01]).1,
            "value missing (stream ends inside a table)"
        );
        // array size escape must be followed by an integer
        assert_eq!(
            invalid_reason(&[0xfe, 0x42, 0, 0, 0, 0, 0, 0, 0x3f, 0x40, 0x00]),
            (1, "array size escape not followed by an integer")
        );
        assert_eq!(
            invalid_reason(&[0xfe, 0x0c, b'a', 0x00]).1,
            "array size escape not followed by an integer"
        );
        assert_eq!(
            invalid_reason(&[0xfe, 0x22, 0xff, 0xff, 0xff, 0xff, 0x00]),
            (1, "array size is negative")
        );
        // A huge announced array with few bytes behind it fails without allocating it.
        assert_eq!(
            invalid_reason(&[0xfe, 0x32, 0, 0, 0, 0, 0, 0, 0, 0x40, 0x02]).1,
            "value missing (stream ends inside a table)"
        );
        let e = unpack_slice(&[0x02, 0x07]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Invalid serialize stream at byte 1: unknown type 7"
        );
    }

    #[test]
    fn array_escape_round_trip() {
        let mut t = Table::new();
        for i in 0..31 {
            t.push(Value::Integer(i));
        }
        let b = pack(&[Value::Table(t.clone())]).unwrap();
        assert_eq!(&b[..2], &[0xfe, 0x0a]);
        assert_eq!(b[2], 0x1f);
        assert_eq!(unpack(&b).unwrap(), vec![Value::Table(t)]);
    }

    #[test]
    fn zero_copy_strings() {
        let b = pack(&[Value::from("hello"), Value::from("x".repeat(100))]).unwrap();
        let vals = unpack(&b).unwrap();
        let base = b.as_ptr() as usize;
        for v in &vals {
            let s = v.as_bytes().unwrap();
            let p = s.as_ptr() as usize;
            assert!(
                p >= base && p + s.len() <= base + b.len(),
                "string not a slice of input"
            );
        }
    }

    #[test]
    fn light_userdata_is_opaque() {
        let b = unhex("030807060504030201");
        let v = unpack_slice(&b).unwrap();
        assert_eq!(v, vec![Value::LightUserData(0x0102030405060708)]);
        assert_eq!(&pack(&v).unwrap()[..], &b[..]);
    }

    #[test]
    fn table_api() {
        let mut t = Table::new();
        assert!(t.is_empty());
        t.push(Value::from("a"));
        t.push(Value::from("b"));
        t.insert(Value::from("name"), Value::from("x"));
        t.insert(Value::Integer(10), Value::Boolean(true));
        t.insert(Value::Integer(2), Value::from("B")); // replaces array element
        t.insert(Value::from("name"), Value::from("y")); // replaces hash value
        t.insert(Value::Real(10.0), Value::Boolean(false)); // 10.0 is key 10
        assert_eq!(t.len(), 4);
        assert_eq!(t.get(&Value::Integer(1)), Some(&Value::from("a")));
        assert_eq!(t.get(&Value::Real(2.0)), Some(&Value::from("B")));
        assert_eq!(t.get(&Value::Integer(10)), Some(&Value::Boolean(false)));
        assert_eq!(t.get_str("name"), Some(&Value::from("y")));
        assert_eq!(t.get_str("nope"), None);
        assert_eq!(t.get(&Value::Integer(3)), None);
        assert_eq!(t.to_string(), r#"{"a", "B", name = "y", [10] = false}"#);
    }

    #[test]
    fn value_accessors() {
        assert_eq!(Value::Real(3.0).as_int(), Some(3));
        assert_eq!(Value::Real(3.5).as_int(), None);
        assert_eq!(Value::Real(1e19).as_int(), None);
        assert_eq!(Value::Real(f64::NAN).as_int(), None);
        assert_eq!(Value::Real(-(2f64.powi(63))).as_int(), Some(i64::MIN));
        assert_eq!(Value::Integer(3).as_real(), Some(3.0));
        assert_eq!(Value::from("x").as_int(), None);
        assert_eq!(Value::Boolean(true).as_bool(), Some(true));
        assert_eq!(Value::from(&b"\xff"[..]).as_str(), None);
        assert_eq!(Value::from(&b"\xff"[..]).as_bytes(), Some(&b"\xff"[..]));
        assert_eq!(Value::from("ok").as_str(), Some("ok"));
        assert!(Value::from(None::<i64>).is_nil());
        assert_eq!(Value::from(Some(7u8)), Value::Integer(7));
        assert_eq!(Value::from(7usize), Value::Integer(7));
        assert!(Value::from(Table::new()).as_table().is_some());
        let names: Vec<_> = [
            Value::Nil,
            Value::Boolean(false),
            Value::Integer(1),
            Value::Real(1.0),
            Value::from("s"),
            Value::from(Table::new()),
            Value::LightUserData(0),
        ]
        .iter()
        .map(Value::type_name)
        .collect();
        assert_eq!(
            names,
            [
                "nil",
                "boolean",
                "integer",
                "real",
                "string",
                "table",
                "lightuserdata"
            ]
        );
    }

    #[test]
    fn display() {
        let mut inner = Table::new();
        inner.insert(Value::from("and"), Value::Integer(1));
        inner.insert(Value::from("a b"), Value::Real(2.0));
        let mut t = Table::new();
        t.push(Value::Integer(1));
        t.push(Value::Nil);
        t.insert(Value::from("t"), Value::Table(inner));
        t.insert(
            Value::Boolean(true),
            Value::from(&b"q\"\\\n\x00\xff\xe4\xb8\xad"[..]),
        );
        assert_eq!(
            Value::Table(t).to_string(),
            r#"{1, nil, t = {["and"] = 1, ["a b"] = 2.0}, [true] = "q\"\\\n\x00\xff中"}"#
        );
        assert_eq!(Value::Real(f64::INFINITY).to_string(), "inf");
        assert_eq!(Value::Real(-0.5).to_string(), "-0.5");
        assert_eq!(Value::Table(Table::new()).to_string(), "{}");
        assert_eq!(
            Value::LightUserData(255).to_string(),
            "lightuserdata(0x00000000000000ff)"
        );
    }
}
