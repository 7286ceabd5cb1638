//! skynet.pack vectors: every case of `spec/vectors/seri.json` (byte-exact outputs of stock
//! skynet v1.6.0) decodes, re-encodes to the same bytes, and, for the cases built by hand
//! below, matches the values of its Lua expression in both directions.

use std::collections::HashMap;
use std::path::PathBuf;

use bee_codec::seri::{self, SeriError, MAX_DEPTH};
use bee_codec::{Table, Value};
use bytes::Bytes;
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    name: String,
    lua: String,
    hex: Option<String>,
    error: Option<String>,
}

fn cases() -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let in_repo = dir.join("tests/data/seri.json");
    let shared = dir.join("../../../shared/spec/vectors/seri.json");
    let path = if in_repo.exists() { in_repo } else { shared };
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let cases: Vec<Case> = serde_json::from_str(&text).expect("seri.json parses");
    assert_eq!(cases.len(), 58, "seri.json should hold 58 cases");
    cases
}

fn s(text: &str) -> Value {
    Value::from(text)
}

fn int(i: i64) -> Value {
    Value::Integer(i)
}

fn array(items: impl IntoIterator<Item = Value>) -> Table {
    let mut t = Table::new();
    for v in items {
        t.push(v);
    }
    t
}

fn hash(pairs: impl IntoIterator<Item = (Value, Value)>) -> Table {
    let mut t = Table::new();
    for (k, v) in pairs {
        t.insert(k, v);
    }
    t
}

fn nested(depth: usize) -> Value {
    let mut v = Value::Table(Table::new());
    for _ in 1..depth {
        v = Value::Table(array([v]));
    }
    v
}

/// Values built by hand from each case's `lua` expression.
fn expected() -> HashMap<&'static str, Vec<Value>> {
    let mut m: HashMap<&'static str, Vec<Value>> = HashMap::new();
    m.insert("nil", vec![Value::Nil]);
    m.insert("true", vec![Value::Boolean(true)]);
    m.insert("false", vec![Value::Boolean(false)]);
    for (name, i) in [
        ("int_0", 0),
        ("int_1", 1),
        ("int_255", 255),
        ("int_256", 256),
        ("int_65535", 65535),
        ("int_65536", 65536),
        ("int_2147483647", 2147483647),
        ("int_2147483648", 2147483648),
        ("int_4294967295", 4294967295),
        ("int_4294967296", 4294967296),
        ("int_-1", -1),
        ("int_-128", -128),
        ("int_-2147483648", -2147483648),
        ("int_-2147483649", -2147483649),
        ("int_max", i64::MAX),
        ("int_min", i64::MIN),
    ] {
        m.insert(name, vec![int(i)]);
    }
    for (name, r) in [
        ("real_0.5", 0.5),
        ("real_-1e300", -1e300),
        ("real_pi", std::f64::consts::PI),
        ("real_0.0", 0.0),
        ("real_-0.0", -0.0),
        ("real_inf", f64::INFINITY),
        ("real_-inf", f64::NEG_INFINITY),
        ("real_2^53", 9007199254740992.0),
    ] {
        m.insert(name, vec![Value::Real(r)]);
    }
    m.insert("str_empty", vec![s("")]);
    m.insert("str_1", vec![s("a")]);
    for (name, c, n) in [
        ("str_31", "s", 31),
        ("str_32", "t", 32),
        ("str_33", "u", 33),
        ("str_255", "v", 255),
        ("str_256", "w", 256),
        ("str_65535", "x", 65535),
        ("str_65536", "y", 65536),
    ] {
        m.insert(name, vec![s(&c.repeat(n))]);
    }
    m.insert(
        "str_binary",
        vec![Value::from(&b"\x00\x01\x02\xff\xfe"[..])],
    );
    m.insert("str_utf8", vec![s("\u{4e2d}\u{6587}")]);
    m.insert("tbl_empty", vec![Value::Table(Table::new())]);
    m.insert(
        "tbl_array_3",
        vec![Value::Table(array([int(1), int(2), int(3)]))],
    );
    m.insert("tbl_array_30", vec![Value::Table(array((1..=30).map(int)))]);
    m.insert("tbl_array_31", vec![Value::Table(array((1..=31).map(int)))]);
    m.insert(
        "tbl_array_300",
        vec![Value::Table(array((1..=300).map(|i| int(i * 1000))))],
    );
    m.insert("tbl_hash_1", vec![Value::Table(hash([(s("a"), int(1))]))]);
    // Hash order is the order stock skynet wrote the pairs in (uid first here).
    m.insert(
        "tbl_hash_str",
        vec![Value::Table(hash([
            (s("uid"), int(10076447)),
            (s("name"), s("lobby")),
        ]))],
    );
    let mut mixed = array([int(1), int(2)]);
    mixed.insert(s("x"), s("y"));
    m.insert("tbl_mixed", vec![Value::Table(mixed)]);
    let mut sparse = array([s("a")]);
    sparse.insert(int(3), s("c"));
    m.insert("tbl_sparse", vec![Value::Table(sparse)]);
    m.insert(
        "tbl_int_keys",
        vec![Value::Table(hash([(int(100), int(1)), (int(-1), int(2))]))],
    );
    m.insert(
        "tbl_real_key",
        vec![Value::Table(hash([(Value::Real(0.5), s("half"))]))],
    );
    m.insert(
        "tbl_bool_key",
        vec![Value::Table(hash([(Value::Boolean(true), int(1))]))],
    );
    let mut deep = Value::Table(hash([(s("e"), s("deep"))]));
    for k in ["d", "c", "b", "a"] {
        deep = Value::Table(hash([(s(k), deep)]));
    }
    m.insert("tbl_nested_5", vec![deep]);
    m.insert(
        "tbl_array_of_tables",
        vec![Value::Table(array([
            Value::Table(array([int(1)])),
            Value::Table(array([int(2)])),
            Value::Table(hash([(s("x"), int(3))])),
        ]))],
    );
    m.insert(
        "multi_values",
        vec![
            s("lua"),
            s("ping"),
            int(1),
            Value::Real(2.5),
            Value::Boolean(true),
            Value::Nil,
            Value::Table(hash([(s("k"), s("v"))])),
        ],
    );
    m.insert(
        "multi_text",
        vec![
            s("text"),
            Value::from(&b"\x00\x00\x00\x00\x00\x99\xc1\x1fpb-frame"[..]),
        ],
    );
    m.insert("multi_nil_first", vec![Value::Nil, s("after-nil")]);
    m.insert(
        "lua_execute",
        vec![
            s("lua"),
            s("execute"),
            s("select * from pppoker.user where uid = 10076447"),
        ],
    );
    m.insert("depth_33_ok", vec![nested(33)]);
    m
}

/// Same value, comparing reals by bit pattern (so -0.0 differs from 0.0).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Real(x), Value::Real(y)) => x.to_bits() == y.to_bits(),
        (Value::Table(x), Value::Table(y)) => {
            x.array.len() == y.array.len()
                && x.hash.len() == y.hash.len()
                && x.array.iter().zip(&y.array).all(|(p, q)| same(p, q))
                && x.hash
                    .iter()
                    .zip(&y.hash)
                    .all(|((k1, v1), (k2, v2))| same(k1, k2) && same(v1, v2))
        }
        _ => a == b,
    }
}

fn same_all(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
}

#[test]
fn every_vector_decodes_and_reencodes_byte_for_byte() {
    let mut checked = 0;
    for case in cases() {
        let Some(h) = &case.hex else { continue };
        let bytes = Bytes::from(hex::decode(h).expect("hex"));
        let values = seri::unpack(&bytes)
            .unwrap_or_else(|e| panic!("{} ({}): unpack failed: {e}", case.name, case.lua));
        assert!(!values.is_empty(), "{}: no values", case.name);
        let again = seri::pack(&values).unwrap();
        assert_eq!(
            hex::encode(&again),
            *h,
            "{}: re-encoding differs",
            case.name
        );
        // The copying decoder agrees with the zero-copy one.
        assert_eq!(seri::unpack_slice(&bytes).unwrap(), values, "{}", case.name);
        checked += 1;
    }
    assert_eq!(checked, 57);
}

#[test]
fn error_vectors_fail_to_pack_with_stock_text() {
    let mut checked = 0;
    for case in cases() {
        let Some(err) = &case.error else { continue };
        let depth: usize = case
            .name
            .strip_prefix("depth_")
            .and_then(|r| r.strip_suffix("_error"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected error case {}", case.name));
        // The Lua expression is `depth` nested empty-table constructors.
        assert_eq!(case.lua.matches('{').count(), depth, "{}", case.name);
        let e = seri::pack(&[nested(depth)]).unwrap_err();
        assert_eq!(e, SeriError::TooDeep);
        assert_eq!(e.to_string(), *err, "{}", case.name);
        checked += 1;
    }
    assert_eq!(checked, 1);
    assert_eq!(MAX_DEPTH, 33);
}

#[test]
fn hand_built_values_match_both_ways() {
    let expected = expected();
    let cases = cases();
    let mut checked = 0;
    for case in &cases {
        let Some(want) = expected.get(case.name.as_str()) else {
            continue;
        };
        let h = case.hex.as_ref().expect("hand-built cases have hex");
        let got = seri::unpack(&Bytes::from(hex::decode(h).unwrap())).unwrap();
        assert!(
            same_all(&got, want),
            "{} ({}): decoded {:?}, expected {:?}",
            case.name,
            case.lua,
            got,
            want
        );
        assert_eq!(
            hex::encode(seri::pack(want).unwrap()),
            *h,
            "{}: encoding the hand-built value differs",
            case.name
        );
        checked += 1;
    }
    // Every case with bytes is built by hand.
    assert_eq!(checked, 57, "hand-built table misses cases");
    assert_eq!(
        expected.len(),
        57,
        "hand-built names that are not in seri.json"
    );
}

#[test]
fn in_repo_copy_matches_shared_spec_when_present() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared = dir.join("../../../shared/spec/vectors/seri.json");
    if let Ok(spec) = std::fs::read(&shared) {
        let copy = std::fs::read(dir.join("tests/data/seri.json")).expect("in-repo copy");
        assert_eq!(
            spec, copy,
            "tests/data/seri.json is out of date with shared/spec"
        );
    }
}
