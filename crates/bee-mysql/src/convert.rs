//! Shaping server replies into the values skynet's mysql driver gives a Lua caller:
//! rows as name tables, numbers through Lua's `tonumber`, OK packets and errors as
//! tables. Pure functions, no I/O.

use bee_codec::{Table, Value};
use bytes::Bytes;
use mysql_async::consts::ColumnType;
use mysql_async::{Column, OkPacket, ServerError};

/// Whether a column's text is converted with Lua's `tonumber` (integer, float, double and
/// decimal types); every other type stays the server's bytes.
pub(crate) fn is_numeric(column_type: ColumnType) -> bool {
    matches!(
        column_type,
        ColumnType::MYSQL_TYPE_TINY
            | ColumnType::MYSQL_TYPE_SHORT
            | ColumnType::MYSQL_TYPE_LONG
            | ColumnType::MYSQL_TYPE_LONGLONG
            | ColumnType::MYSQL_TYPE_INT24
            | ColumnType::MYSQL_TYPE_YEAR
            | ColumnType::MYSQL_TYPE_FLOAT
            | ColumnType::MYSQL_TYPE_DOUBLE
            | ColumnType::MYSQL_TYPE_NEWDECIMAL
            | ColumnType::MYSQL_TYPE_DECIMAL
    )
}

/// Lua 5.4's `tonumber(text)` for a string: an integer when the text is a decimal (or
/// `0x` hex) integer that fits in 64 bits, a float when it is any other numeral (a
/// decimal integer too large for 64 bits also becomes a float), `None` when it is not a
/// numeral. Surrounding ASCII whitespace is allowed, as in Lua.
pub fn lua_tonumber(text: &[u8]) -> Option<Value> {
    let s = std::str::from_utf8(text).ok()?;
    let s = s.trim_matches(|c: char| c.is_ascii_whitespace());
    if s.is_empty() {
        return None;
    }
    if let Some(i) = lua_str2int(s) {
        return Some(Value::Integer(i));
    }
    // Lua refuses 'inf' and 'nan' (any 'n'), which Rust's parser would accept.
    if s.bytes().any(|b| b == b'n' || b == b'N') {
        return None;
    }
    let (neg, body) = split_sign(s);
    if body.starts_with("0x") || body.starts_with("0X") {
        // Hex floats never come from a server; not worth a parser of their own.
        return None;
    }
    // Rust accepts a sign itself; reject a second one ("+-1") that split_sign left.
    if body.starts_with(['+', '-']) {
        return None;
    }
    let f: f64 = body.parse().ok()?;
    Some(Value::Real(if neg { -f } else { f }))
}

fn split_sign(s: &str) -> (bool, &str) {
    match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    }
}

/// Lua's integer numeral rule: decimal digits (no overflow allowed: too large means it
/// is read as a float instead) or `0x` hex digits (wrapping modulo 2^64).
fn lua_str2int(s: &str) -> Option<i64> {
    let (neg, body) = split_sign(s);
    if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut v: u64 = 0;
        for b in hex.bytes() {
            let d = (b as char).to_digit(16)? as u64;
            v = v.wrapping_mul(16).wrapping_add(d);
        }
        let v = v as i64;
        return Some(if neg { v.wrapping_neg() } else { v });
    }
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Magnitudes up to 2^63 fit once the sign is applied (-2^63 is i64::MIN).
    let mag: u64 = body.parse().ok()?;
    if neg {
        if mag <= i64::MAX as u64 + 1 {
            Some((mag as i64).wrapping_neg())
        } else {
            None
        }
    } else {
        i64::try_from(mag).ok()
    }
}

/// A column's value as the Lua driver hands it over: numeric types through
/// [`lua_tonumber`] (text that is somehow not a numeral stays a string rather than
/// vanishing), everything else as the exact bytes the server sent.
pub(crate) fn column_value(column: &Column, text: Vec<u8>) -> Value {
    if is_numeric(column.column_type()) {
        if let Some(v) = lua_tonumber(&text) {
            return v;
        }
    }
    Value::String(Bytes::from(text))
}

/// One row as a table column-name → value; SQL NULL columns are left out.
pub(crate) fn row_table(columns: &[Column], values: Vec<Option<mysql_async::Value>>) -> Table {
    let mut row = Table::new();
    for (column, value) in columns.iter().zip(values) {
        let text = match value {
            None | Some(mysql_async::Value::NULL) => continue,
            Some(mysql_async::Value::Bytes(b)) => b,
            // The text protocol only yields bytes; anything else is rendered as SQL text.
            Some(other) => other.as_sql(true).into_bytes(),
        };
        row.insert(
            Value::String(Bytes::copy_from_slice(column.name_ref())),
            column_value(column, text),
        );
    }
    row
}

/// A u64 counter as a Lua integer (saturating: no real counter gets near 2^63).
fn counter(v: u64) -> Value {
    Value::Integer(i64::try_from(v).unwrap_or(i64::MAX))
}

/// The table for a statement without a result set:
/// `{affected_rows, insert_id, server_status, warning_count, message?}`.
pub(crate) fn ok_table(ok: Option<&OkPacket<'_>>) -> Value {
    let mut t = Table::new();
    let (affected, insert_id, status, warnings, info) = match ok {
        Some(ok) => (
            ok.affected_rows(),
            ok.last_insert_id().unwrap_or(0),
            ok.status_flags().bits(),
            ok.warnings(),
            ok.info_ref().map(<[u8]>::to_vec).unwrap_or_default(),
        ),
        None => (0, 0, 0, 0, Vec::new()),
    };
    t.insert("affected_rows".into(), counter(affected));
    t.insert("insert_id".into(), counter(insert_id));
    t.insert("server_status".into(), Value::Integer(i64::from(status)));
    t.insert("warning_count".into(), Value::Integer(i64::from(warnings)));
    if !info.is_empty() {
        t.insert("message".into(), Value::String(Bytes::from(info)));
    }
    Value::Table(t)
}

/// Put `badresult = true, errno, err, sqlstate` for `err` into `t`.
pub(crate) fn mark_bad(t: &mut Table, err: &ServerError) {
    t.insert("badresult".into(), Value::Boolean(true));
    t.insert("errno".into(), Value::Integer(i64::from(err.code)));
    t.insert(
        "err".into(),
        Value::String(Bytes::from(err.message.clone())),
    );
    t.insert(
        "sqlstate".into(),
        Value::String(Bytes::from(err.state.clone())),
    );
}

/// The table for an SQL error: `{badresult = true, errno, err, sqlstate}`.
pub(crate) fn error_table(err: &ServerError) -> Value {
    let mut t = Table::new();
    mark_bad(&mut t, err);
    Value::Table(t)
}

/// Combine the results of one `execute`: a single result is returned as it is; several
/// (or results followed by an error) become `{multiresultset = true, [1] = r1, …}` with
/// the error's fields on the outer table.
pub(crate) fn combine(mut results: Vec<Value>, failure: Option<ServerError>) -> Value {
    match (results.len(), failure) {
        (0, Some(err)) => error_table(&err),
        (1, None) => results.pop().unwrap_or(Value::Table(Table::new())),
        (_, failure) => {
            let mut t = Table::new();
            t.insert("multiresultset".into(), Value::Boolean(true));
            if let Some(err) = failure {
                mark_bad(&mut t, &err);
            }
            for r in results {
                t.push(r);
            }
            Value::Table(t)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str) -> Option<Value> {
        lua_tonumber(s.as_bytes())
    }

    #[test]
    fn tonumber_integers() {
        assert_eq!(num("10"), Some(Value::Integer(10)));
        assert_eq!(num("-0"), Some(Value::Integer(0)));
        assert_eq!(num("+7"), Some(Value::Integer(7)));
        assert_eq!(num(" 42 "), Some(Value::Integer(42)));
        assert_eq!(num("9223372036854775807"), Some(Value::Integer(i64::MAX)));
        assert_eq!(num("-9223372036854775808"), Some(Value::Integer(i64::MIN)));
        assert_eq!(num("0x10"), Some(Value::Integer(16)));
        assert_eq!(num("0xffffffffffffffff"), Some(Value::Integer(-1)));
    }

    #[test]
    fn tonumber_floats() {
        assert_eq!(num("1.50"), Some(Value::Real(1.5)));
        assert_eq!(num("-2.25"), Some(Value::Real(-2.25)));
        assert_eq!(num("1e+20"), Some(Value::Real(1e20)));
        assert_eq!(num("1.5e-3"), Some(Value::Real(0.0015)));
        assert_eq!(num("10.0"), Some(Value::Real(10.0)));
        assert_eq!(num(".5"), Some(Value::Real(0.5)));
        // Unsigned BIGINT max does not fit an i64: Lua reads it as a float.
        assert_eq!(
            num("18446744073709551615"),
            Some(Value::Real(18446744073709551615.0))
        );
        assert_eq!(
            num("-9223372036854775809"),
            Some(Value::Real(-9223372036854775809.0))
        );
    }

    #[test]
    fn tonumber_rejects_non_numerals() {
        for s in [
            "", " ", "abc", "inf", "-inf", "nan", "1.5.5", "+-1", "--1", "1e", "0x", "12abc",
            "0x1p4",
        ] {
            assert_eq!(num(s), None, "{s:?}");
        }
        assert_eq!(lua_tonumber(&[0xff, 0x31]), None);
    }

    #[test]
    fn combine_shapes() {
        let err = ServerError {
            code: 1064,
            message: "syntax".into(),
            state: "42000".into(),
        };
        let single = combine(vec![Value::Integer(1)], None);
        assert_eq!(single, Value::Integer(1));

        let bad = combine(vec![], Some(err.clone()));
        let t = bad.as_table().unwrap();
        assert_eq!(t.get_str("badresult"), Some(&Value::Boolean(true)));
        assert_eq!(t.get_str("errno"), Some(&Value::Integer(1064)));
        assert_eq!(t.get_str("sqlstate").and_then(Value::as_str), Some("42000"));
        assert_eq!(t.get_str("err").and_then(Value::as_str), Some("syntax"));

        let multi = combine(vec![Value::Integer(1), Value::Integer(2)], None);
        let t = multi.as_table().unwrap();
        assert_eq!(t.get_str("multiresultset"), Some(&Value::Boolean(true)));
        assert_eq!(t.array, vec![Value::Integer(1), Value::Integer(2)]);
        assert!(t.get_str("badresult").is_none());

        let partial = combine(vec![Value::Integer(1)], Some(err));
        let t = partial.as_table().unwrap();
        assert_eq!(t.get_str("multiresultset"), Some(&Value::Boolean(true)));
        assert_eq!(t.get_str("badresult"), Some(&Value::Boolean(true)));
        assert_eq!(t.array, vec![Value::Integer(1)]);
    }

    #[test]
    fn ok_table_without_packet_is_zeroes() {
        let v = ok_table(None);
        let t = v.as_table().unwrap();
        assert_eq!(t.get_str("affected_rows"), Some(&Value::Integer(0)));
        assert_eq!(t.get_str("insert_id"), Some(&Value::Integer(0)));
        assert!(t.get_str("message").is_none());
    }
}
