//! Typed arguments and replies for `"lua"` commands.
//!
//! A `"lua"` message carries skynet.pack values. A command handler names the types it
//! wants — `|state, (uid, act): (i64, String)|`, or `|state, uid: i64|` for one
//! argument — and the values are converted
//! before it runs ([`FromArgs`]); a missing, extra or mistyped argument is answered with
//! an error that names the command's signature, e.g.
//! `command progress takes (integer, string), got 1 value: argument 2 is missing`.
//! The handler returns anything [`IntoValues`]: `()`, one value, a tuple, or a
//! `Vec<Value>`.
//!
//! Like Lua, a trailing `Option<T>` argument may be absent (or nil). A handler that
//! wants the raw values takes `Vec<Value>`.

use bee_codec::seri::{self, Reader, SeriError, Table, Value};
use bytes::Bytes;

/// One argument converted from a skynet.pack value.
pub trait FromValue: Sized {
    /// The type's name in error messages (Lua's words: integer, string, …).
    const TYPE: &'static str;
    /// Convert, or say what was found instead.
    fn from_value(v: Value) -> Result<Self, Value>;
    /// The value when the argument is missing (only `Option` has one).
    fn missing() -> Option<Self> {
        None
    }
}

macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            const TYPE: &'static str = "integer";
            fn from_value(v: Value) -> Result<Self, Value> {
                match v {
                    Value::Integer(i) => <$t>::try_from(i).map_err(|_| Value::Integer(i)),
                    // Lua numbers: a real with no fraction is an integer.
                    Value::Real(r) if r.fract() == 0.0 && r.abs() < 9.0e15 => {
                        <$t>::try_from(r as i64).map_err(|_| Value::Real(r))
                    }
                    other => Err(other),
                }
            }
        }
    )*};
}
int_from_value!(i64, i32, u32, u64, u16, u8, usize);

impl FromValue for f64 {
    const TYPE: &'static str = "number";
    fn from_value(v: Value) -> Result<Self, Value> {
        match v {
            Value::Real(r) => Ok(r),
            Value::Integer(i) => Ok(i as f64),
            other => Err(other),
        }
    }
}

impl FromValue for bool {
    const TYPE: &'static str = "boolean";
    fn from_value(v: Value) -> Result<Self, Value> {
        match v {
            Value::Boolean(b) => Ok(b),
            other => Err(other),
        }
    }
}

impl FromValue for String {
    const TYPE: &'static str = "string";
    fn from_value(v: Value) -> Result<Self, Value> {
        match v {
            Value::String(b) => match std::str::from_utf8(&b) {
                Ok(s) => Ok(s.to_string()),
                Err(_) => Err(Value::String(b)),
            },
            other => Err(other),
        }
    }
}

/// A string argument without a copy: the UTF-8-checked bytes of the message itself.
/// Reads like a `&str` (`Deref`); returns to a reply without a copy either. Prefer it
/// over `String` on hot paths.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Str(Bytes);

impl Str {
    /// The text.
    pub fn as_str(&self) -> &str {
        // Checked when the value was made (`from_value`); an empty string otherwise
        // cannot happen, and costs nothing to spell out without `unsafe`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The bytes underneath.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl std::ops::Deref for Str {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for Str {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromValue for Str {
    const TYPE: &'static str = "string";
    #[inline]
    fn from_value(v: Value) -> Result<Self, Value> {
        match v {
            Value::String(b) if std::str::from_utf8(&b).is_ok() => Ok(Str(b)),
            other => Err(other),
        }
    }
}

impl IntoValue for Str {
    fn into_value(self) -> Value {
        Value::String(self.0)
    }
}

impl IntoValues for Str {
    fn into_values(self) -> Vec<Value> {
        vec![Value::String(self.0)]
    }
    #[inline]
    fn pack(self) -> Result<Bytes, SeriError> {
        seri::pack(&[Value::String(self.0)])
    }
}

impl FromValue for Bytes {
    const TYPE: &'static str = "string";
    fn from_value(v: Value) -> Result<Self, Value> {
        match v {
            Value::String(b) => Ok(b),
            other => Err(other),
        }
    }
}

impl FromValue for Table {
    const TYPE: &'static str = "table";
    fn from_value(v: Value) -> Result<Self, Value> {
        match v {
            Value::Table(t) => Ok(t),
            other => Err(other),
        }
    }
}

impl FromValue for Value {
    const TYPE: &'static str = "any value";
    fn from_value(v: Value) -> Result<Self, Value> {
        Ok(v)
    }
    fn missing() -> Option<Self> {
        Some(Value::Nil)
    }
}

impl<T: FromValue> FromValue for Option<T> {
    const TYPE: &'static str = T::TYPE;
    fn from_value(v: Value) -> Result<Self, Value> {
        match v {
            Value::Nil => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
    fn missing() -> Option<Self> {
        Some(None)
    }
}

/// Why a command's arguments did not fit its signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("takes ({signature}), got {got} value{}: {problem}", if *.got == 1 { "" } else { "s" })]
pub struct ArgsError {
    /// The expected types, e.g. `integer, string`.
    pub signature: String,
    /// How many values came.
    pub got: usize,
    /// What did not fit.
    pub problem: String,
}

/// Why arguments read straight off a payload ([`FromArgs::from_reader`]) were refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadArgsError {
    /// The payload is not a well-formed skynet.pack stream.
    #[error(transparent)]
    Stream(#[from] SeriError),
    /// The values did not fit the command's signature.
    #[error(transparent)]
    Args(#[from] ArgsError),
}

/// A command's whole argument list.
pub trait FromArgs: Sized {
    /// The expected types, for error messages.
    fn signature() -> String;
    /// Convert the values after the command name.
    fn from_args(args: Vec<Value>) -> Result<Self, ArgsError>;
    /// Convert the values left in a payload being read (the hot path of a `"lua"`
    /// message: no `Vec<Value>` in between). The result, and every error, is the same as
    /// [`FromArgs::from_args`] over [`Reader::rest`]; that is also the default.
    fn from_reader(r: Reader<'_>) -> Result<Self, ReadArgsError> {
        Ok(Self::from_args(r.rest()?)?)
    }
}

impl FromArgs for Vec<Value> {
    fn signature() -> String {
        "any values".into()
    }
    fn from_args(args: Vec<Value>) -> Result<Self, ArgsError> {
        Ok(args)
    }
}

impl FromArgs for () {
    fn signature() -> String {
        String::new()
    }
    fn from_reader(r: Reader<'_>) -> Result<Self, ReadArgsError> {
        if r.is_empty() {
            Ok(())
        } else {
            Ok(Self::from_args(r.rest()?)?)
        }
    }
    fn from_args(args: Vec<Value>) -> Result<Self, ArgsError> {
        if args.is_empty() {
            Ok(())
        } else {
            Err(ArgsError {
                signature: String::new(),
                got: args.len(),
                problem: "this command takes no arguments".into(),
            })
        }
    }
}

macro_rules! tuple_from_args {
    ($n:literal; $($t:ident $i:literal),+) => {
        impl<$($t: FromValue),+> FromArgs for ($($t,)+) {
            fn signature() -> String {
                [$($t::TYPE),+].join(", ")
            }
            fn from_reader(start: Reader<'_>) -> Result<Self, ReadArgsError> {
                // One value at a time; anything that does not fit (a bad stream, a
                // mistyped, missing or extra value) is read again in full from `start`
                // by `from_args`, so the error is the same whichever way the values came.
                let mut r = start;
                let fast = (|| {
                    Some(($(
                        match r.next_value() {
                            Some(Ok(v)) => $t::from_value(v).ok()?,
                            Some(Err(_)) => return None,
                            None => $t::missing()?,
                        },
                    )+))
                })();
                match fast {
                    Some(t) if r.is_empty() => Ok(t),
                    _ => Ok(Self::from_args(start.rest()?)?),
                }
            }
            fn from_args(args: Vec<Value>) -> Result<Self, ArgsError> {
                let got = args.len();
                let fail = |problem: String| ArgsError {
                    signature: Self::signature(),
                    got,
                    problem,
                };
                if got > $n {
                    return Err(fail(format!("{} extra value(s)", got - $n)));
                }
                let mut it = args.into_iter();
                Ok(($(
                    match it.next() {
                        Some(v) => $t::from_value(v).map_err(|found| {
                            fail(format!(
                                "argument {} must be {}, got {}",
                                $i + 1,
                                $t::TYPE,
                                found.type_name()
                            ))
                        })?,
                        None => $t::missing().ok_or_else(|| {
                            fail(format!("argument {} ({}) is missing", $i + 1, $t::TYPE))
                        })?,
                    },
                )+))
            }
        }
    };
}
tuple_from_args!(1; A 0);
tuple_from_args!(2; A 0, B 1);
tuple_from_args!(3; A 0, B 1, C 2);
tuple_from_args!(4; A 0, B 1, C 2, D 3);
tuple_from_args!(5; A 0, B 1, C 2, D 3, E 4);
tuple_from_args!(6; A 0, B 1, C 2, D 3, E 4, F 5);
tuple_from_args!(7; A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_from_args!(8; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

/// One argument needs no tuple: `uid: i64` takes exactly what `(uid,): (i64,)` takes,
/// with the same errors.
impl<T: FromValue> FromArgs for T {
    fn signature() -> String {
        <(T,)>::signature()
    }
    fn from_args(args: Vec<Value>) -> Result<Self, ArgsError> {
        <(T,)>::from_args(args).map(|(t,)| t)
    }
    fn from_reader(r: Reader<'_>) -> Result<Self, ReadArgsError> {
        <(T,)>::from_reader(r).map(|(t,)| t)
    }
}

/// One reply value.
pub trait IntoValue {
    /// Convert.
    fn into_value(self) -> Value;
}

macro_rules! into_value_via_from {
    ($($t:ty),*) => {$(
        impl IntoValue for $t {
            fn into_value(self) -> Value {
                Value::from(self)
            }
        }
    )*};
}
into_value_via_from!(i64, i32, u32, u16, u8, usize, f64, bool, String, &str, Bytes, Table);

impl IntoValue for u64 {
    fn into_value(self) -> Value {
        Value::Integer(self as i64)
    }
}

impl IntoValue for Value {
    fn into_value(self) -> Value {
        self
    }
}

impl<T: IntoValue> IntoValue for Option<T> {
    fn into_value(self) -> Value {
        self.map_or(Value::Nil, IntoValue::into_value)
    }
}

/// A handler's reply: the values packed back to a waiting caller.
pub trait IntoValues {
    /// Convert.
    fn into_values(self) -> Vec<Value>;

    /// Pack the reply (skynet.pack). Single values and tuples pack from the stack,
    /// without the vector `into_values` makes.
    fn pack(self) -> Result<Bytes, SeriError>
    where
        Self: Sized,
    {
        seri::pack(&self.into_values())
    }
}

impl IntoValues for Vec<Value> {
    fn into_values(self) -> Vec<Value> {
        self
    }
}

impl IntoValues for () {
    fn into_values(self) -> Vec<Value> {
        Vec::new()
    }
}

macro_rules! single_into_values {
    ($($t:ty),*) => {$(
        impl IntoValues for $t {
            fn into_values(self) -> Vec<Value> {
                vec![self.into_value()]
            }
            fn pack(self) -> Result<Bytes, SeriError> {
                seri::pack(&[self.into_value()])
            }
        }
    )*};
}
single_into_values!(
    i64, i32, u32, u64, u16, u8, usize, f64, bool, String, &str, Bytes, Table, Value
);

impl<T: IntoValue> IntoValues for Option<T> {
    fn into_values(self) -> Vec<Value> {
        vec![self.into_value()]
    }
    fn pack(self) -> Result<Bytes, SeriError> {
        seri::pack(&[self.into_value()])
    }
}

macro_rules! tuple_into_values {
    ($($t:ident $i:tt),+) => {
                impl<$($t: IntoValue),+> IntoValues for ($($t,)+) {
            fn into_values(self) -> Vec<Value> {
                vec![$(self.$i.into_value()),+]
            }
            fn pack(self) -> Result<Bytes, SeriError> {
                seri::pack(&[$(self.$i.into_value()),+])
            }
        }
    };
}
tuple_into_values!(A 0);
tuple_into_values!(A 0, B 1);
tuple_into_values!(A 0, B 1, C 2);
tuple_into_values!(A 0, B 1, C 2, D 3);
tuple_into_values!(A 0, B 1, C 2, D 3, E 4);
tuple_into_values!(A 0, B 1, C 2, D 3, E 4, F 5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuples_convert_and_name_what_does_not_fit() {
        let ok = <(i64, String)>::from_args(vec![Value::Integer(7), Value::from("run")]);
        assert_eq!(ok, Ok((7, "run".to_string())));

        let e = <(i64, String)>::from_args(vec![Value::Integer(7)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "takes (integer, string), got 1 value: argument 2 (string) is missing"
        );
        let e = <(i64, String)>::from_args(vec![Value::from("x"), Value::from("y")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "takes (integer, string), got 2 values: argument 1 must be integer, got string"
        );
        let e = <(i64,)>::from_args(vec![Value::Integer(1), Value::Integer(2)]).unwrap_err();
        assert!(e.problem.contains("1 extra value"), "{e}");
        let e = <()>::from_args(vec![Value::Nil]).unwrap_err();
        assert!(e.problem.contains("no arguments"), "{e}");
    }

    #[test]
    fn one_argument_needs_no_tuple_and_fails_as_the_tuple_does() {
        assert_eq!(i64::from_args(vec![Value::Integer(7)]), Ok(7));
        assert_eq!(i64::signature(), "integer");
        let packed = seri::pack(&[Value::Integer(9)]).unwrap();
        assert_eq!(i64::from_reader(Reader::new(&packed)).unwrap(), 9);
        for bad in [
            vec![],
            vec![Value::from("x")],
            vec![Value::Integer(1), Value::Integer(2)],
        ] {
            assert_eq!(
                i64::from_args(bad.clone()).unwrap_err(),
                <(i64,)>::from_args(bad).unwrap_err()
            );
        }
        assert_eq!(Option::<String>::from_args(vec![]), Ok(None));
    }

    #[test]
    fn str_arguments_are_checked_and_not_copied() {
        let b = Bytes::from_static(b"run");
        let (s,) = <(Str,)>::from_args(vec![Value::String(b.clone())]).unwrap();
        assert_eq!(&*s, "run");
        assert_eq!(s.clone().into_bytes().as_ptr(), b.as_ptr(), "no copy");
        assert_eq!(s.into_values(), vec![Value::String(b)]);
        let e = <(Str,)>::from_args(vec![Value::String(Bytes::from_static(&[0xff]))]).unwrap_err();
        assert!(e.problem.contains("must be string"), "{e}");
    }

    #[test]
    fn optional_arguments_may_be_missing_or_nil() {
        let r = <(i64, Option<String>)>::from_args(vec![Value::Integer(1)]).unwrap();
        assert_eq!(r, (1, None));
        let r = <(i64, Option<String>)>::from_args(vec![Value::Integer(1), Value::Nil]).unwrap();
        assert_eq!(r, (1, None));
    }

    #[test]
    fn integers_are_range_checked_and_whole_reals_accepted() {
        assert!(<(u8,)>::from_args(vec![Value::Integer(300)]).is_err());
        assert_eq!(<(i32,)>::from_args(vec![Value::Real(4.0)]), Ok((4,)));
        assert!(<(i32,)>::from_args(vec![Value::Real(4.5)]).is_err());
    }

    /// `from_reader` over a payload agrees with `from_args` over its unpacked values:
    /// the same value, or the same error (stream or signature).
    fn agree<A: FromArgs + PartialEq + std::fmt::Debug>(payload: &Bytes) {
        let slow = match seri::unpack(payload) {
            Ok(values) => A::from_args(values).map_err(ReadArgsError::from),
            Err(e) => Err(ReadArgsError::from(e)),
        };
        let fast = A::from_reader(Reader::new(payload));
        assert_eq!(fast, slow, "{} over {payload:?}", A::signature());
    }

    #[test]
    fn reading_off_the_payload_gives_what_unpacking_gives() {
        let p = |v: Vec<Value>| seri::pack(&v).unwrap();
        let mut payloads = vec![
            p(vec![]),
            p(vec![Value::Integer(7)]),
            p(vec![Value::Integer(7), Value::from("run")]),
            p(vec![Value::Integer(7), Value::Nil]),
            p(vec![
                Value::Integer(7),
                Value::from("run"),
                Value::Boolean(true),
            ]),
            p(vec![Value::from("run"), Value::Integer(7)]),
            p(vec![Value::Real(7.0), Value::from(vec![0xffu8, 0xfe])]),
            p(vec![Value::Integer(300)]),
            p(vec![Value::Nil, Value::Nil]),
        ];
        // Malformed: a value cut short, then garbage after a good value.
        let good = p(vec![Value::Integer(7), Value::from("run")]);
        payloads.push(good.slice(..good.len() - 1));
        payloads.push(Bytes::from([&good[..], &[0x07][..]].concat()));
        payloads.push(Bytes::from_static(&[0x07]));
        for payload in &payloads {
            agree::<(i64, String)>(payload);
            agree::<(i64, Option<String>)>(payload);
            agree::<(Str,)>(payload);
            agree::<(u8,)>(payload);
            agree::<(f64, Bytes)>(payload);
            agree::<(Option<i64>, Option<i64>, Option<i64>)>(payload);
            agree::<()>(payload);
            agree::<Vec<Value>>(payload);
        }
    }

    #[test]
    fn replies_become_values() {
        assert_eq!(().into_values(), Vec::<Value>::new());
        assert_eq!("pong".into_values(), vec![Value::from("pong")]);
        assert_eq!(
            ("pong", 3i64, None::<i64>).into_values(),
            vec![Value::from("pong"), Value::Integer(3), Value::Nil]
        );
    }
}
