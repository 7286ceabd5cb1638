//! Property tests for skynet.pack: arbitrary value trees round-trip, and arbitrary bytes
//! never make the decoder panic.

use bee_codec::seri::{self, SeriError};
use bee_codec::{Table, Value};
use bytes::Bytes;
use proptest::prelude::*;

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Boolean),
        any::<i64>().prop_map(Value::Integer),
        (-70000i64..70000).prop_map(Value::Integer),
        any::<f64>()
            .prop_filter("NaN never equals itself", |f| !f.is_nan())
            .prop_map(Value::Real),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::from),
        any::<u64>().prop_map(Value::LightUserData),
    ]
}

fn key() -> impl Strategy<Value = Value> {
    scalar().prop_filter("nil cannot be a key", |k| !k.is_nil())
}

/// Trees of depth <= 5 (the leaves are depth 0, each table level adds one).
fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(5, 256, 40, |inner| {
        (
            proptest::collection::vec(inner.clone(), 0..40),
            proptest::collection::vec((key(), inner), 0..6),
        )
            .prop_map(|(array, hash)| Value::Table(Table { array, hash }))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trip(values in proptest::collection::vec(value(), 0..4)) {
        let bytes = seri::pack(&values).unwrap();
        let back = seri::unpack(&bytes).unwrap();
        prop_assert_eq!(&back, &values);
        prop_assert_eq!(seri::pack(&back).unwrap(), bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let bytes = Bytes::from(data);
        match seri::unpack(&bytes) {
            // Whatever decodes re-encodes and decodes to the same values.
            Ok(values) => {
                let again = seri::pack(&values).unwrap();
                prop_assert_eq!(seri::unpack(&again).unwrap().len(), values.len());
            }
            Err(e) => prop_assert!(e.to_string().starts_with("Invalid serialize stream")),
        }
    }

    #[test]
    fn reading_one_value_at_a_time_agrees_with_unpack(
        data in prop_oneof![
            proptest::collection::vec(value(), 0..4)
                .prop_map(|v| seri::pack(&v).unwrap().to_vec()),
            proptest::collection::vec(any::<u8>(), 0..120),
        ],
        peek_strings in any::<bool>(),
    ) {
        // Well-formed streams and arbitrary bytes alike: value by value (optionally
        // taking strings through `next_if_string`), a reader sees what `unpack` sees and
        // fails where it fails, and a failed read leaves the reader where it was.
        let bytes = Bytes::from(data);
        let mut r = seri::Reader::new(&bytes);
        let mut got = Vec::new();
        let outcome = loop {
            if peek_strings {
                let at = r.offset();
                if let Some(s) = r.next_if_string() {
                    prop_assert!(r.offset() > at);
                    got.push(Value::from(s));
                    continue;
                }
                prop_assert_eq!(r.offset(), at, "no string: nothing consumed");
            }
            let at = r.offset();
            match r.next_value() {
                None => break Ok(got),
                Some(Ok(v)) => got.push(v),
                Some(Err(e)) => {
                    prop_assert_eq!(r.offset(), at);
                    prop_assert_eq!(r.rest(), Err(e.clone()), "rest() fails the same way");
                    break Err(e);
                }
            }
        };
        prop_assert!(r.is_empty() || outcome.is_err());
        match (outcome, seri::unpack(&bytes)) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            (a, b) => prop_assert!(false, "reader {:?} vs unpack {:?}", a, b),
        }
    }

    #[test]
    fn table_heavy_bytes_never_panic(data in proptest::collection::vec(
        prop_oneof![Just(0x00u8), Just(0x06), Just(0x0e), Just(0xfe), Just(0x0a), Just(0x32), Just(0x25), any::<u8>()],
        0..300)) {
        let bytes = Bytes::from(data);
        if let Err(e) = seri::unpack(&bytes) {
            let expected = matches!(e, SeriError::InvalidStream { .. } | SeriError::DecodeTooDeep { .. });
            prop_assert!(expected, "unexpected error {:?}", e);
        }
    }
}
