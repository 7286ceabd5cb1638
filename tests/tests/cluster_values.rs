//! Every skynet.pack value kind travels through a real `bee` node's `echo`
//! unchanged, as an argument (request direction) and as a reply (response direction):
//! nil, booleans, integers in every encoded width up to i64 min/max, reals including
//! -0.0, ±inf and NaN, light userdata, empty/short/long and binary strings (NUL bytes,
//! invalid UTF-8), and tables with array and hash parts, nested.

use std::time::Duration;

use bee_cluster::Cluster;
use bee_codec::seri::{self, Table, Value};
use bee_tests::Layout;
use bytes::Bytes;

const SERVICES: &str = r#"
[[service]]
kind = "echo"
name = "echo"
"#;

/// Structural equality that tells -0.0 from 0.0 and lets NaN equal NaN (bit equality of
/// reals), which `PartialEq` on `Value` does not.
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

fn table(array: Vec<Value>, hash: Vec<(Value, Value)>) -> Value {
    Value::Table(Table { array, hash })
}

fn s(text: &str) -> Value {
    Value::from(text)
}

/// Call `echo` on `node` with `values`; check the reply is byte-for-byte the request and
/// decodes back to the same values.
async fn round_trip(client: &Cluster, node: &str, what: &str, values: &[Value]) {
    let request = seri::pack(values).unwrap_or_else(|e| panic!("{what}: pack: {e}"));
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.call(node, "@echo", request.clone()),
    )
    .await
    .unwrap_or_else(|_| panic!("{what}: no reply within 10 s"))
    .unwrap_or_else(|e| panic!("{what}: call failed: {e}"));
    assert_eq!(reply.len(), request.len(), "{what}: reply size");
    assert!(
        reply == request,
        "{what}: reply bytes differ from the request"
    );
    let back = seri::unpack(&reply).unwrap_or_else(|e| panic!("{what}: unpack reply: {e}"));
    assert_eq!(back.len(), values.len(), "{what}: number of values");
    for (i, (got, want)) in back.iter().zip(values).enumerate() {
        assert!(same(got, want), "{what}: value {i}: got {got}, want {want}");
    }
}

fn integers() -> Vec<Value> {
    [
        0,
        1,
        -1,
        255,
        256,
        -255,
        -256,
        65535,
        65536,
        -65536,
        i32::MAX as i64,
        i32::MIN as i64,
        i32::MAX as i64 + 1,
        i32::MIN as i64 - 1,
        1 << 40,
        i64::MAX,
        i64::MIN,
        i64::MIN + 1,
    ]
    .into_iter()
    .map(Value::Integer)
    .collect()
}

fn reals() -> Vec<Value> {
    [
        0.0,
        -0.0,
        1.0,
        -1.5,
        0.1,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        f64::MIN_POSITIVE,
        f64::EPSILON,
        f64::MAX,
        f64::MIN,
        5e-324,
        9_007_199_254_740_993.0,
    ]
    .into_iter()
    .map(Value::Real)
    .collect()
}

fn strings() -> Vec<Value> {
    let mut binary: Vec<u8> = (0..=255u8).collect();
    binary.extend_from_slice(b"\0\0\xff\xfe\xc0\x80 trailing");
    vec![
        Value::String(Bytes::new()),
        s("a"),
        s(&"x".repeat(31)),                            // longest short string
        s(&"y".repeat(32)),                            // shortest long string (u16 length)
        s(&"z".repeat(65535)),                         // longest u16-length string
        Value::String(Bytes::from(vec![b'w'; 65536])), // shortest u32-length string
        Value::from(&b"nul\0inside\0"[..]),
        Value::from(&b"\xff\xfe invalid utf-8 \xc3\x28 \xed\xa0\x80"[..]),
        Value::from(&b"\0"[..]),
        Value::from(binary),
        s("héllo wörld ✓ 🐝"),
    ]
}

fn tables() -> Vec<Value> {
    let mut nested = table(vec![s("leaf")], vec![]);
    for depth in 0..30 {
        nested = table(
            vec![Value::Integer(depth), nested],
            vec![(s("depth"), Value::Integer(depth))],
        );
    }
    let big_array = table((0..1000).map(Value::Integer).collect(), vec![]);
    vec![
        table(vec![], vec![]),
        table(
            vec![
                Value::Integer(1),
                s("two"),
                Value::Real(3.0),
                Value::Boolean(false),
            ],
            vec![],
        ),
        table(
            vec![],
            vec![(s("name"), s("bee")), (s("level"), Value::Integer(42))],
        ),
        // array part and hash part together, every kind of key in the hash part
        table(
            vec![s("first"), s("second")],
            vec![
                (s("key"), s("value")),
                (Value::Integer(10), Value::Boolean(true)),
                (Value::Integer(-1), s("negative key")),
                (Value::Real(2.5), s("real key")),
                (Value::Boolean(true), s("boolean key")),
                (
                    Value::from(&b"\xffbinary key\0"[..]),
                    Value::Integer(i64::MIN),
                ),
                (
                    s("nested"),
                    table(
                        vec![table(vec![], vec![])],
                        vec![(s("x"), Value::Real(-0.0))],
                    ),
                ),
            ],
        ),
        // arrays of 30 (inline size) and 31 (size written as a number) elements
        table((0..30).map(Value::Integer).collect(), vec![]),
        table((0..31).map(Value::Integer).collect(), vec![]),
        big_array,
        nested,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_kind_round_trips_through_echo() {
    let layout = Layout::new(&["values"]);
    let _node = layout.start("values", SERVICES);
    let (_client_node, client) = layout.client(Duration::from_secs(10));

    round_trip(&client, "values", "no values at all", &[]).await;
    round_trip(&client, "values", "nil", &[Value::Nil]).await;
    round_trip(
        &client,
        "values",
        "booleans",
        &[Value::Boolean(true), Value::Boolean(false)],
    )
    .await;
    round_trip(
        &client,
        "values",
        "nil between values",
        &[Value::Nil, s("x"), Value::Nil, Value::Nil],
    )
    .await;
    round_trip(
        &client,
        "values",
        "light userdata",
        &[Value::LightUserData(0), Value::LightUserData(u64::MAX)],
    )
    .await;
    for v in integers() {
        round_trip(
            &client,
            "values",
            &format!("integer {v}"),
            std::slice::from_ref(&v),
        )
        .await;
    }
    round_trip(&client, "values", "all integers", &integers()).await;
    for v in reals() {
        round_trip(
            &client,
            "values",
            &format!("real {v}"),
            std::slice::from_ref(&v),
        )
        .await;
    }
    round_trip(&client, "values", "all reals", &reals()).await;
    for (i, v) in strings().into_iter().enumerate() {
        round_trip(&client, "values", &format!("string #{i}"), &[v]).await;
    }
    round_trip(&client, "values", "all strings", &strings()).await;
    for (i, v) in tables().into_iter().enumerate() {
        round_trip(&client, "values", &format!("table #{i}"), &[v]).await;
    }
    round_trip(&client, "values", "all tables", &tables()).await;

    // Everything at once, as one call's arguments (a reply large enough to go multi-part).
    let mut all = vec![
        Value::Nil,
        Value::Boolean(true),
        Value::LightUserData(0xdead_beef),
    ];
    all.extend(integers());
    all.extend(reals());
    all.extend(strings());
    all.extend(tables());
    let size = seri::pack(&all).expect("pack").len();
    assert!(
        size > 0x8000,
        "the combined message ({size} bytes) must be multi-part"
    );
    round_trip(&client, "values", "everything in one call", &all).await;

    // Many arguments (more than fit in any one-byte count).
    let many: Vec<Value> = (0..1000).map(|i| Value::Integer(i * 7919)).collect();
    round_trip(&client, "values", "1000 arguments", &many).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_sizes_around_the_split_threshold() {
    // skynet splits requests of >= 0x8000 bytes and replies of > 0x8000 bytes into pieces;
    // every size near those edges and near piece boundaries must come back intact.
    let layout = Layout::new(&["sizes"]);
    let _node = layout.start("sizes", SERVICES);
    let (_client_node, client) = layout.client(Duration::from_secs(10));
    // One long string value: tag byte + u16/u32 length, then the bytes.
    for total in [
        0x7FFE, 0x7FFF, 0x8000, 0x8001, 0x8002, 0xFFFF, 0x10000, 0x10001, 0x18000, 0x18001, 0x20000,
    ] {
        let overhead = if total - 3 <= 0xFFFF { 3 } else { 5 };
        let body: Vec<u8> = (0..total - overhead).map(|i| (i % 251) as u8).collect();
        let v = [Value::from(body)];
        assert_eq!(seri::pack(&v).expect("pack").len(), total);
        round_trip(
            &client,
            "sizes",
            &format!("message of {total:#x} bytes"),
            &v,
        )
        .await;
    }
}
