//! Fuzz target `seri`: skynet.pack [`unpack`] of arbitrary bytes.
//!
//! Checked: no panic; [`unpack`] and [`unpack_slice`] agree; when the input decodes, packing
//! the values succeeds unless tables nest deeper than [`MAX_DEPTH`] (the packer's limit, which
//! is below the decoder's), and the packed bytes decode again to values that pack to the same
//! bytes (bytes are compared rather than values because NaN != NaN). Formatting the values
//! must not panic either. A [`Reader`] walked value by value (strings taken with
//! `next_if_string` first) sees the same values as [`unpack`] and fails where it fails.
#![no_main]

use bee_codec::seri::{pack, unpack, unpack_slice, Reader, SeriError, Value, MAX_DEPTH};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

/// The most tables open around any value in `v`, `v` itself being inside `around`
/// (a value at the top has 0 around it; the items of a top-level table have 1). Packing
/// fails with TooDeep exactly when this reaches MAX_DEPTH, as in stock skynet.
fn deepest_around(v: &Value, around: usize) -> usize {
    match v {
        Value::Table(t) => t
            .array
            .iter()
            .chain(t.hash.iter().flat_map(|(k, v)| [k, v]))
            .map(|item| deepest_around(item, around + 1))
            .max()
            .unwrap_or(around)
            .max(around),
        _ => around,
    }
}

/// Walk `input` with a [`Reader`]: the values, or the first error.
fn read_all(input: &Bytes) -> Result<Vec<Value>, SeriError> {
    let mut r = Reader::new(input);
    let mut out = Vec::new();
    loop {
        let at = r.offset();
        if let Some(s) = r.next_if_string() {
            out.push(Value::from(s));
            continue;
        }
        assert_eq!(r.offset(), at, "next_if_string moved without a string");
        match r.next_value() {
            None => return Ok(out),
            Some(Ok(v)) => out.push(v),
            Some(Err(e)) => {
                assert_eq!(r.offset(), at, "a failed read moved the reader");
                return Err(e);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let input = Bytes::copy_from_slice(data);
    let decoded = unpack(&input);
    match (&decoded, read_all(&input)) {
        // Bytes, not values: NaN != NaN.
        (Ok(a), Ok(b)) => assert_eq!(pack(a).ok(), pack(&b).ok(), "reader and unpack disagree"),
        (Err(a), Err(b)) => assert_eq!(a, &b, "reader and unpack fail differently"),
        (a, b) => panic!("unpack {a:?} vs reader {b:?}"),
    }
    let copied = unpack_slice(data);
    let values = match (decoded, copied) {
        (Ok(values), Ok(copied)) => {
            assert_eq!(
                pack(&values).ok(),
                pack(&copied).ok(),
                "unpack and unpack_slice disagree"
            );
            values
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "unpack and unpack_slice fail differently");
            // The message must render (it is what a game engineer reads).
            let _ = a.to_string();
            return;
        }
        (a, b) => panic!("unpack {a:?} vs unpack_slice {b:?}"),
    };
    for v in &values {
        let _ = v.to_string();
    }
    let deepest = values
        .iter()
        .map(|v| deepest_around(v, 0))
        .max()
        .unwrap_or(0);
    let packed = match pack(&values) {
        Ok(packed) => packed,
        Err(SeriError::TooDeep) => {
            assert!(deepest >= MAX_DEPTH, "TooDeep with {deepest} tables around");
            return;
        }
        Err(e) => panic!("decoded values do not pack: {e}"),
    };
    assert!(
        deepest < MAX_DEPTH,
        "packed a value inside {deepest} tables"
    );
    let again = unpack(&packed).expect("packed values must unpack");
    assert_eq!(again.len(), values.len(), "value count changed");
    let repacked = pack(&again).expect("re-unpacked values must pack");
    assert_eq!(packed, repacked, "pack(unpack(pack(v))) != pack(v)");
});
