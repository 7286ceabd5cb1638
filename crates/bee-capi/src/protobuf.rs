//! `require "protobuf"` for skynet's Lua in a bee process: cloudwu/pbc's Lua API
//! (`register`, `register_file`, `encode`, `decode`, …) on protobuf reflection
//! (prost-reflect), so game Lua written for pbc runs with nothing to compile.
//!
//! How it reaches every Lua state: bee exports its own `luaL_openlibs` from the node
//! binary. snlua calls it when it makes a service's state; it runs the Lua library's
//! `luaL_openlibs` and then puts `protobuf` into `package.preload`. The module is the
//! small Lua file `protobuf.lua` (pbc's API surface) over the C functions of this
//! module (the codec). Descriptors are registered process-wide; defaults metatables are
//! per Lua state. See `docs/lua.md` ("protobuf").
//!
//! Lua errors are raised with `lua_error`, which unwinds with `longjmp`: every C entry
//! point here drops what it owns before raising, and the only Lua calls that can raise
//! while Rust values are alive (pushing results, which allocates) run inside
//! `lua_pcallk` in functions that hold nothing but borrows.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void};
use std::sync::{Arc, LazyLock, OnceLock, RwLock};

use libloading::os::unix::Library;
use prost_reflect::prost::Message as _;
use prost_reflect::prost_types::FileDescriptorSet;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    ReflectMessage as _, Value,
};

use crate::lua::with_lua;

/// `lua_State *`.
type State = *mut c_void;
/// `lua_CFunction`.
type CFunction = unsafe extern "C" fn(State) -> c_int;
/// `lua_KFunction` (never used: no continuations).
type KFunction = Option<unsafe extern "C" fn(State, c_int, isize) -> c_int>;

/// Lua 5.4's pseudo-index of the registry (`-LUAI_MAXSTACK - 1000`).
const LUA_REGISTRYINDEX: c_int = -1_000_000 - 1000;
const LUA_TNIL: c_int = 0;
const LUA_TBOOLEAN: c_int = 1;
const LUA_TLIGHTUSERDATA: c_int = 2;
const LUA_TNUMBER: c_int = 3;
const LUA_TSTRING: c_int = 4;
const LUA_TTABLE: c_int = 5;
const LUA_OK: c_int = 0;
/// Deepest message nesting `decode`/`encode` follow (each level needs Lua stack).
const MAX_DEPTH: usize = 100;

macro_rules! lua_api {
    ($($name:ident : fn($($arg:ty),*) $(-> $ret:ty)?;)*) => {
        /// The Lua C API functions this module calls, resolved from the loaded Lua library.
        #[allow(non_snake_case)]
        struct Api {
            $($name: unsafe extern "C" fn($($arg),*) $(-> $ret)?,)*
        }
        impl Api {
            fn resolve(lib: &Library) -> Result<Api, String> {
                Ok(Api {
                    $($name: {
                        // SAFETY: the symbol is the Lua 5.4 API function of that name, with
                        // the signature of lua.h/lauxlib.h written above; the library stays
                        // loaded for the life of the process (crate::lua keeps it).
                        let sym = unsafe {
                            lib.get::<unsafe extern "C" fn($($arg),*) $(-> $ret)?>(
                                concat!(stringify!($name), "\0").as_bytes(),
                            )
                        }
                        .map_err(|e| format!("{}: {e}", stringify!($name)))?;
                        *sym
                    },)*
                })
            }
        }
    };
}

lua_api! {
    luaL_openlibs: fn(State);
    luaL_getsubtable: fn(State, c_int, *const c_char) -> c_int;
    luaL_loadbufferx: fn(State, *const c_char, usize, *const c_char, *const c_char) -> c_int;
    lua_gettop: fn(State) -> c_int;
    lua_settop: fn(State, c_int);
    lua_absindex: fn(State, c_int) -> c_int;
    lua_checkstack: fn(State, c_int) -> c_int;
    lua_pushvalue: fn(State, c_int);
    lua_type: fn(State, c_int) -> c_int;
    lua_typename: fn(State, c_int) -> *const c_char;
    lua_isinteger: fn(State, c_int) -> c_int;
    lua_tolstring: fn(State, c_int, *mut usize) -> *const c_char;
    lua_tointegerx: fn(State, c_int, *mut c_int) -> i64;
    lua_tonumberx: fn(State, c_int, *mut c_int) -> f64;
    lua_toboolean: fn(State, c_int) -> c_int;
    lua_touserdata: fn(State, c_int) -> *mut c_void;
    lua_rawlen: fn(State, c_int) -> u64;
    lua_rawget: fn(State, c_int) -> c_int;
    lua_rawgeti: fn(State, c_int, i64) -> c_int;
    lua_rawset: fn(State, c_int);
    lua_rawseti: fn(State, c_int, i64);
    lua_next: fn(State, c_int) -> c_int;
    lua_setfield: fn(State, c_int, *const c_char);
    lua_setmetatable: fn(State, c_int) -> c_int;
    lua_createtable: fn(State, c_int, c_int);
    lua_pushnil: fn(State);
    lua_pushboolean: fn(State, c_int);
    lua_pushinteger: fn(State, i64);
    lua_pushnumber: fn(State, f64);
    lua_pushlstring: fn(State, *const c_char, usize) -> *const c_char;
    lua_pushlightuserdata: fn(State, *mut c_void);
    lua_pushcclosure: fn(State, CFunction, c_int);
    lua_pcallk: fn(State, c_int, c_int, c_int, isize, KFunction) -> c_int;
    lua_callk: fn(State, c_int, c_int, isize, KFunction);
    lua_error: fn(State) -> c_int;
}

static API: OnceLock<Api> = OnceLock::new();

/// The Lua API of the loaded Lua library; `None` before one is loaded (or when it lacks
/// a function, which is logged).
fn api() -> Option<&'static Api> {
    if let Some(a) = API.get() {
        return Some(a);
    }
    match with_lua(Api::resolve)? {
        Ok(a) => {
            let _ = API.set(a);
            API.get()
        }
        Err(e) => {
            tracing::error!("the Lua library lacks a function the protobuf module needs: {e}");
            None
        }
    }
}

/// The embedded Lua half of the module.
const MODULE_LUA: &str = include_str!("protobuf.lua");

// ---------------------------------------------------------------------------------
// Descriptors, process-wide.

/// The types registered in this process, and the default values of each message type
/// (built on first use; a registered type never changes).
#[derive(Default)]
struct Registry {
    pool: DescriptorPool,
    defaults: HashMap<String, Arc<Defaults>>,
}

static REGISTRY: LazyLock<RwLock<Registry>> = LazyLock::new(|| RwLock::new(Registry::default()));

fn registry_read() -> std::sync::RwLockReadGuard<'static, Registry> {
    REGISTRY.read().unwrap_or_else(|p| p.into_inner())
}

fn registry_write() -> std::sync::RwLockWriteGuard<'static, Registry> {
    REGISTRY.write().unwrap_or_else(|p| p.into_inner())
}

/// Add the files of a serialized `FileDescriptorSet` (`protoc -o`). A file already
/// registered with the same contents is skipped; with other contents it is an error
/// (a type's definition never changes under running code).
fn register(bytes: &[u8]) -> Result<(), String> {
    let set = FileDescriptorSet::decode(bytes)
        .map_err(|e| format!("not a FileDescriptorSet (protoc -o output): {e}"))?;
    let mut reg = registry_write();
    for file in &set.file {
        if let Some(have) = reg.pool.get_file_by_name(file.name()) {
            if have.file_descriptor_proto() != file {
                return Err(format!(
                    "{} is already registered with other contents",
                    file.name()
                ));
            }
        }
    }
    let mut pool = reg.pool.clone();
    pool.add_file_descriptor_set(set)
        .map_err(|e| format!("bad descriptors: {e}"))?;
    reg.pool = pool;
    Ok(())
}

fn message_type(name: &str) -> Result<MessageDescriptor, String> {
    let name = name.strip_prefix('.').unwrap_or(name);
    registry_read()
        .pool
        .get_message_by_name(name)
        .ok_or_else(|| format!("unknown message type '{name}' (not registered)"))
}

/// The default values of `desc`'s fields, as a Lua table to be: every singular scalar
/// and enum field (messages have none: an absent message field reads `nil`, as in pbc).
fn defaults_of(desc: &MessageDescriptor) -> Arc<Defaults> {
    if let Some(d) = registry_read().defaults.get(desc.full_name()) {
        return d.clone();
    }
    let mut rec = Vec::new();
    for field in desc.fields() {
        if field.is_list() || field.is_map() || matches!(field.kind(), Kind::Message(_)) {
            continue;
        }
        let v = Value::default_value_for_field(&field);
        if let Ok(lv) = to_lua(&field.kind(), &v, 0).map(into_static) {
            rec.push((field.name().to_string(), lv));
        }
    }
    let d = Arc::new(Defaults {
        name: desc.full_name().to_string(),
        table: LTable {
            arr: Vec::new(),
            rec,
            meta: None,
        },
    });
    registry_write()
        .defaults
        .entry(desc.full_name().to_string())
        .or_insert(d)
        .clone()
}

// ---------------------------------------------------------------------------------
// Decoded values, built before anything is pushed to Lua.

/// A Lua value to push.
enum LValue<'a> {
    Bool(bool),
    Int(i64),
    Num(f64),
    Str(Cow<'a, [u8]>),
    Table(Box<LTable<'a>>),
}

/// A Lua table to push: array part, string keys, the defaults metatable of its type.
struct LTable<'a> {
    arr: Vec<LValue<'a>>,
    rec: Vec<(String, LValue<'a>)>,
    meta: Option<Arc<Defaults>>,
}

/// A message type's default values (the `__index` of its decoded tables).
struct Defaults {
    name: String,
    table: LTable<'static>,
}

fn message_to_lua<'a>(msg: &'a DynamicMessage, depth: usize) -> Result<LTable<'a>, String> {
    if depth > MAX_DEPTH {
        return Err(format!("messages nested deeper than {MAX_DEPTH}"));
    }
    let desc = msg.descriptor();
    let mut rec = Vec::new();
    let mut seen = Vec::new();
    for (field, v) in msg.fields() {
        seen.push(field.number());
        let lv = if field.is_list() || field.is_map() {
            to_lua_owned_field(&field, v, depth)?
        } else {
            to_lua(&field.kind(), v, depth)?
        };
        rec.push((field.name().to_string(), lv));
    }
    for field in desc.fields() {
        if (field.is_list() || field.is_map()) && !seen.contains(&field.number()) {
            // Always present (a fresh empty table when absent), so adding to a decoded
            // message's array never touches a shared default.
            rec.push((
                field.name().to_string(),
                LValue::Table(Box::new(LTable {
                    arr: Vec::new(),
                    rec: Vec::new(),
                    meta: None,
                })),
            ));
        }
    }
    Ok(LTable {
        arr: Vec::new(),
        rec,
        meta: Some(defaults_of(&desc)),
    })
}

/// A list or map field (copied: its entries are few and small next to a message).
fn to_lua_owned_field<'a>(
    field: &FieldDescriptor,
    v: &Value,
    depth: usize,
) -> Result<LValue<'a>, String> {
    let kind = field.kind();
    let mut arr = Vec::new();
    match v {
        Value::List(items) => {
            for item in items {
                arr.push(into_static(to_lua(&kind, item, depth)?));
            }
        }
        Value::Map(map) => {
            let Kind::Message(entry) = &kind else {
                return Err(format!("map field {} without an entry type", field.name()));
            };
            let key_kind = entry.map_entry_key_field().kind();
            let value_kind = entry.map_entry_value_field().kind();
            let mut keys: Vec<&MapKey> = map.keys().collect();
            keys.sort();
            for k in keys {
                let key = into_static(to_lua(&key_kind, &Value::from(k.clone()), depth)?);
                let value = into_static(to_lua(&value_kind, &map[k], depth)?);
                arr.push(LValue::Table(Box::new(LTable {
                    arr: Vec::new(),
                    rec: vec![("key".to_string(), key), ("value".to_string(), value)],
                    meta: Some(defaults_of(entry)),
                })));
            }
        }
        _ => return Err(format!("field {} is not a list", field.name())),
    }
    Ok(LValue::Table(Box::new(LTable {
        arr,
        rec: Vec::new(),
        meta: None,
    })))
}

/// Detach a value from the message it borrows from (strings copied).
fn into_static(v: LValue<'_>) -> LValue<'static> {
    match v {
        LValue::Bool(b) => LValue::Bool(b),
        LValue::Int(i) => LValue::Int(i),
        LValue::Num(n) => LValue::Num(n),
        LValue::Str(s) => LValue::Str(Cow::Owned(s.into_owned())),
        LValue::Table(t) => LValue::Table(Box::new(LTable {
            arr: t.arr.into_iter().map(into_static).collect(),
            rec: t
                .rec
                .into_iter()
                .map(|(k, v)| (k, into_static(v)))
                .collect(),
            meta: t.meta,
        })),
    }
}

/// One singular value of a field of `kind`: integers as Lua integers (64-bit unsigned
/// ones as the same 64 bits), enums as their names (a number not in the enum as the
/// number), strings and bytes as Lua strings, messages as tables.
fn to_lua<'a>(kind: &Kind, v: &'a Value, depth: usize) -> Result<LValue<'a>, String> {
    Ok(match v {
        Value::Bool(b) => LValue::Bool(*b),
        Value::I32(i) => LValue::Int(i64::from(*i)),
        Value::I64(i) => LValue::Int(*i),
        Value::U32(u) => LValue::Int(i64::from(*u)),
        Value::U64(u) => LValue::Int(*u as i64),
        Value::F32(f) => LValue::Num(f64::from(*f)),
        Value::F64(f) => LValue::Num(*f),
        Value::String(s) => LValue::Str(Cow::Borrowed(s.as_bytes())),
        Value::Bytes(b) => LValue::Str(Cow::Borrowed(b.as_ref())),
        Value::EnumNumber(n) => match kind {
            Kind::Enum(e) => match e.get_value(*n) {
                Some(ev) => LValue::Str(Cow::Owned(ev.name().as_bytes().to_vec())),
                None => LValue::Int(i64::from(*n)),
            },
            _ => LValue::Int(i64::from(*n)),
        },
        Value::Message(m) => LValue::Table(Box::new(message_to_lua(m, depth + 1)?)),
        Value::List(_) | Value::Map(_) => {
            return Err("a list inside a list (not a protobuf shape)".to_string())
        }
    })
}

// ---------------------------------------------------------------------------------
// Reading Lua tables (encode). Nothing here allocates in Lua, so nothing raises.

/// Reads Lua values of one state for `encode`.
struct Reader<'a> {
    api: &'a Api,
    l: State,
}

impl Reader<'_> {
    fn ty(&self, idx: c_int) -> c_int {
        // SAFETY: `l` is the running state and `idx` a valid or acceptable index.
        unsafe { (self.api.lua_type)(self.l, idx) }
    }

    fn type_name(&self, idx: c_int) -> String {
        let t = self.ty(idx);
        // SAFETY: lua_typename returns a static C string for any type tag.
        let p = unsafe { (self.api.lua_typename)(self.l, t) };
        if p.is_null() {
            return "?".to_string();
        }
        // SAFETY: a NUL-terminated static string of the Lua library.
        unsafe { std::ffi::CStr::from_ptr(p) }
            .to_string_lossy()
            .into_owned()
    }

    /// The bytes of the string at `idx` (the caller checked it is a string: no
    /// conversion, no allocation), valid while it stays on the stack.
    fn bytes(&self, idx: c_int) -> &[u8] {
        let mut len = 0usize;
        // SAFETY: the value is a string, so lua_tolstring neither converts nor raises.
        let p = unsafe { (self.api.lua_tolstring)(self.l, idx, &mut len) };
        if p.is_null() {
            return &[];
        }
        // SAFETY: Lua strings are `len` bytes at `p`, kept alive by the stack slot.
        unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }
    }

    fn integer(&self, idx: c_int) -> Result<i64, String> {
        if self.ty(idx) != LUA_TNUMBER {
            return Err(format!("integer expected, got {}", self.type_name(idx)));
        }
        // SAFETY: a number at `idx`.
        if unsafe { (self.api.lua_isinteger)(self.l, idx) } != 0 {
            // SAFETY: as above.
            return Ok(unsafe { (self.api.lua_tointegerx)(self.l, idx, std::ptr::null_mut()) });
        }
        // SAFETY: as above.
        let f = unsafe { (self.api.lua_tonumberx)(self.l, idx, std::ptr::null_mut()) };
        if f.fract() == 0.0 && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f) {
            Ok(f as i64)
        } else {
            Err(format!("integer expected, got {f}"))
        }
    }

    fn number(&self, idx: c_int) -> Result<f64, String> {
        if self.ty(idx) != LUA_TNUMBER {
            return Err(format!("number expected, got {}", self.type_name(idx)));
        }
        // SAFETY: a number at `idx`.
        Ok(unsafe { (self.api.lua_tonumberx)(self.l, idx, std::ptr::null_mut()) })
    }

    fn abs(&self, idx: c_int) -> c_int {
        // SAFETY: a valid index of the running state.
        unsafe { (self.api.lua_absindex)(self.l, idx) }
    }

    fn room(&self, n: c_int) -> Result<(), String> {
        // SAFETY: lua_checkstack reports failure instead of raising.
        if unsafe { (self.api.lua_checkstack)(self.l, n) } == 0 {
            return Err("Lua stack overflow".to_string());
        }
        Ok(())
    }

    fn pop(&self, n: c_int) {
        // SAFETY: at least `n` values of ours are on the stack.
        unsafe { (self.api.lua_settop)(self.l, -n - 1) }
    }

    /// The Lua table at `idx` as a message of type `desc`: its string keys are field
    /// names; a key that is no field, or a value of the wrong type, is an error.
    fn message(
        &self,
        idx: c_int,
        desc: &MessageDescriptor,
        depth: usize,
    ) -> Result<DynamicMessage, String> {
        if depth > MAX_DEPTH {
            return Err(format!("tables nested deeper than {MAX_DEPTH}"));
        }
        if self.ty(idx) != LUA_TTABLE {
            return Err(format!(
                "{}: table expected, got {}",
                desc.full_name(),
                self.type_name(idx)
            ));
        }
        let idx = self.abs(idx);
        self.room(4)?;
        let mut msg = DynamicMessage::new(desc.clone());
        // SAFETY: pushes a nil for lua_next's first key.
        unsafe { (self.api.lua_pushnil)(self.l) };
        // SAFETY: `idx` is a table; the key on top is nil or the previous key, unchanged.
        while unsafe { (self.api.lua_next)(self.l, idx) } != 0 {
            if self.ty(-2) != LUA_TSTRING {
                self.pop(2);
                return Err(format!(
                    "{}: field names are strings, got a {} key",
                    desc.full_name(),
                    self.type_name(-2)
                ));
            }
            let name = String::from_utf8_lossy(self.bytes(-2)).into_owned();
            let Some(field) = desc.get_field_by_name(&name) else {
                self.pop(2);
                return Err(format!("{} has no field '{name}'", desc.full_name()));
            };
            let value = self.field(-1, &field, depth).map_err(|e| {
                if e.starts_with(desc.full_name()) || e.contains(" has no field ") {
                    e
                } else {
                    format!("{}.{name}: {e}", desc.full_name())
                }
            });
            let value = match value {
                Ok(v) => v,
                Err(e) => {
                    self.pop(2);
                    return Err(e);
                }
            };
            self.pop(1);
            msg.try_set_field(&field, value)
                .map_err(|e| format!("{}.{name}: {e}", desc.full_name()))?;
        }
        Ok(msg)
    }

    fn field(&self, idx: c_int, field: &FieldDescriptor, depth: usize) -> Result<Value, String> {
        let idx = self.abs(idx);
        let kind = field.kind();
        if field.is_map() {
            return self.map(idx, field, depth);
        }
        if field.is_list() {
            if self.ty(idx) != LUA_TTABLE {
                return Err(format!(
                    "table (array) expected, got {}",
                    self.type_name(idx)
                ));
            }
            // SAFETY: a table at `idx`.
            let n = unsafe { (self.api.lua_rawlen)(self.l, idx) };
            let mut items = Vec::with_capacity(n.min(1 << 16) as usize);
            self.room(2)?;
            for i in 1..=n {
                // SAFETY: a table at `idx`; rawgeti does not call metamethods.
                unsafe { (self.api.lua_rawgeti)(self.l, idx, i as i64) };
                let v = self.single(-1, &kind, depth);
                self.pop(1);
                items.push(v.map_err(|e| format!("[{i}]: {e}"))?);
            }
            return Ok(Value::List(items));
        }
        self.single(idx, &kind, depth)
    }

    /// A map field: an array of `{key = k, value = v}` (what pbc and decode give), or a
    /// table of `k = v`.
    fn map(&self, idx: c_int, field: &FieldDescriptor, depth: usize) -> Result<Value, String> {
        if self.ty(idx) != LUA_TTABLE {
            return Err(format!("table expected, got {}", self.type_name(idx)));
        }
        let Kind::Message(entry) = field.kind() else {
            return Err("map without an entry type".to_string());
        };
        let key_kind = entry.map_entry_key_field().kind();
        let value_kind = entry.map_entry_value_field().kind();
        let mut map = HashMap::new();
        self.room(4)?;
        // SAFETY: a table at `idx`.
        let n = unsafe { (self.api.lua_rawlen)(self.l, idx) };
        if n > 0 {
            for i in 1..=n {
                // SAFETY: as above.
                unsafe { (self.api.lua_rawgeti)(self.l, idx, i as i64) };
                let r = self.message(-1, &entry, depth + 1);
                self.pop(1);
                let m = r.map_err(|e| format!("[{i}]: {e}"))?;
                let k = m.get_field(&entry.map_entry_key_field()).into_owned();
                let v = m.get_field(&entry.map_entry_value_field()).into_owned();
                let k = map_key(k).ok_or("map keys are integers, strings or booleans")?;
                map.insert(k, v);
            }
        } else {
            // SAFETY: pushes the first key for lua_next.
            unsafe { (self.api.lua_pushnil)(self.l) };
            // SAFETY: a table at `idx`, keys unchanged while iterating.
            while unsafe { (self.api.lua_next)(self.l, idx) } != 0 {
                let k = self.single(-2, &key_kind, depth);
                let v = self.single(-1, &value_kind, depth);
                self.pop(1);
                let (k, v) = match (k, v) {
                    (Ok(k), Ok(v)) => (k, v),
                    (Err(e), _) | (_, Err(e)) => {
                        self.pop(1);
                        return Err(format!("map entry: {e}"));
                    }
                };
                let Some(k) = map_key(k) else {
                    self.pop(1);
                    return Err("map keys are integers, strings or booleans".to_string());
                };
                map.insert(k, v);
            }
        }
        Ok(Value::Map(map))
    }

    /// One value of `kind` at `idx`. Integers must be integral and in the type's range
    /// (64-bit unsigned fields take a negative integer as the same 64 bits, so what
    /// `decode` gives encodes back); enums take a name or a number.
    fn single(&self, idx: c_int, kind: &Kind, depth: usize) -> Result<Value, String> {
        let range32 = |i: i64| {
            i32::try_from(i).map_err(|_| format!("{i} does not fit a 32-bit integer field"))
        };
        Ok(match kind {
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(range32(self.integer(idx)?)?),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(self.integer(idx)?),
            Kind::Uint32 | Kind::Fixed32 => {
                let i = self.integer(idx)?;
                Value::U32(
                    u32::try_from(i).map_err(|_| {
                        format!("{i} does not fit an unsigned 32-bit integer field")
                    })?,
                )
            }
            Kind::Uint64 | Kind::Fixed64 => Value::U64(self.integer(idx)? as u64),
            Kind::Double => Value::F64(self.number(idx)?),
            Kind::Float => Value::F32(self.number(idx)? as f32),
            Kind::Bool => {
                if self.ty(idx) != LUA_TBOOLEAN {
                    return Err(format!("boolean expected, got {}", self.type_name(idx)));
                }
                // SAFETY: a boolean at `idx`.
                Value::Bool(unsafe { (self.api.lua_toboolean)(self.l, idx) } != 0)
            }
            Kind::String => match self.ty(idx) {
                LUA_TSTRING => Value::String(
                    std::str::from_utf8(self.bytes(idx))
                        .map_err(|_| {
                            "string field holds bytes that are not UTF-8 (use a bytes field)"
                        })?
                        .to_string(),
                ),
                LUA_TNUMBER => {
                    // SAFETY: a number at `idx`.
                    if unsafe { (self.api.lua_isinteger)(self.l, idx) } == 0 {
                        return Err("string expected, got a float".to_string());
                    }
                    Value::String(self.integer(idx)?.to_string())
                }
                _ => return Err(format!("string expected, got {}", self.type_name(idx))),
            },
            Kind::Bytes => {
                if self.ty(idx) != LUA_TSTRING {
                    return Err(format!("string expected, got {}", self.type_name(idx)));
                }
                Value::Bytes(self.bytes(idx).to_vec().into())
            }
            Kind::Enum(e) => match self.ty(idx) {
                LUA_TSTRING => {
                    let name = String::from_utf8_lossy(self.bytes(idx)).into_owned();
                    let v = e.get_value_by_name(&name).ok_or_else(|| {
                        format!("'{name}' is not a value of enum {}", e.full_name())
                    })?;
                    Value::EnumNumber(v.number())
                }
                LUA_TNUMBER => Value::EnumNumber(range32(self.integer(idx)?)?),
                _ => {
                    return Err(format!(
                        "enum {} name or number expected, got {}",
                        e.full_name(),
                        self.type_name(idx)
                    ))
                }
            },
            Kind::Message(m) => Value::Message(self.message(idx, m, depth + 1)?),
        })
    }
}

fn map_key(v: Value) -> Option<MapKey> {
    Some(match v {
        Value::Bool(b) => MapKey::Bool(b),
        Value::I32(i) => MapKey::I32(i),
        Value::I64(i) => MapKey::I64(i),
        Value::U32(u) => MapKey::U32(u),
        Value::U64(u) => MapKey::U64(u),
        Value::String(s) => MapKey::String(s),
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------
// Pushing (inside lua_pcallk: only borrows live in these frames).

/// What a protected push builds.
enum Job<'a> {
    /// A decoded message table (with its defaults metatables), cache table at index 1.
    Message(&'a LTable<'a>),
    /// The defaults metatable of one type, cache table at index 1.
    Meta(&'a Defaults),
    /// A string.
    Bytes(&'a [u8]),
}

/// Push `t` as a new table; `cache` is the absolute index of the metatable cache.
///
/// # Safety
/// Runs inside `lua_pcallk` on state `l` (a Lua error here unwinds only frames that
/// hold borrows).
unsafe fn push_table(api: &Api, l: State, cache: c_int, t: &LTable<'_>) {
    // SAFETY (whole function): `l` is the running state, inside a protected call.
    unsafe {
        if (api.lua_checkstack)(l, 6) == 0 {
            push_str(api, l, b"protobuf: Lua stack overflow");
            (api.lua_error)(l);
        }
        (api.lua_createtable)(
            l,
            c_int::try_from(t.arr.len()).unwrap_or(0),
            c_int::try_from(t.rec.len()).unwrap_or(0),
        );
        for (i, v) in t.arr.iter().enumerate() {
            push_value(api, l, cache, v);
            (api.lua_rawseti)(l, -2, i as i64 + 1);
        }
        for (k, v) in &t.rec {
            push_str(api, l, k.as_bytes());
            push_value(api, l, cache, v);
            (api.lua_rawset)(l, -3);
        }
        if let Some(d) = &t.meta {
            push_meta(api, l, cache, d);
            (api.lua_setmetatable)(l, -2);
        }
    }
}

/// Push the defaults metatable of `d`'s type: `cache[name]`, made on first use.
///
/// # Safety
/// As [`push_table`].
unsafe fn push_meta(api: &Api, l: State, cache: c_int, d: &Defaults) {
    // SAFETY (whole function): as push_table.
    unsafe {
        push_str(api, l, d.name.as_bytes());
        if (api.lua_rawget)(l, cache) == LUA_TTABLE {
            return;
        }
        (api.lua_settop)(l, -2);
        (api.lua_createtable)(l, 0, 1);
        push_table(api, l, cache, &d.table);
        (api.lua_setfield)(l, -2, c"__index".as_ptr());
        push_str(api, l, d.name.as_bytes());
        (api.lua_pushvalue)(l, -2);
        (api.lua_rawset)(l, cache);
    }
}

/// # Safety
/// As [`push_table`].
unsafe fn push_value(api: &Api, l: State, cache: c_int, v: &LValue<'_>) {
    // SAFETY (whole function): as push_table.
    unsafe {
        match v {
            LValue::Bool(b) => (api.lua_pushboolean)(l, c_int::from(*b)),
            LValue::Int(i) => (api.lua_pushinteger)(l, *i),
            LValue::Num(n) => (api.lua_pushnumber)(l, *n),
            LValue::Str(s) => push_str(api, l, s),
            LValue::Table(t) => push_table(api, l, cache, t),
        }
    }
}

/// # Safety
/// `l` is the running state with a free stack slot.
unsafe fn push_str(api: &Api, l: State, s: &[u8]) {
    // SAFETY: pushes a copy of `s`.
    unsafe { (api.lua_pushlstring)(l, s.as_ptr().cast(), s.len()) };
}

/// The protected half of a push: arguments (cache table, job pointer), one result.
unsafe extern "C" fn push_job(l: State) -> c_int {
    let Some(api) = API.get() else { return 0 };
    // SAFETY: `protected_push` passed a pointer to a `Job` that outlives this call.
    let job = unsafe { &*((api.lua_touserdata)(l, 2) as *const Job<'_>) };
    // SAFETY: inside lua_pcallk (see protected_push).
    unsafe {
        match job {
            Job::Message(t) => push_table(api, l, 1, t),
            Job::Meta(d) => push_meta(api, l, 1, d),
            Job::Bytes(b) => push_str(api, l, b),
        }
    }
    1
}

/// Run `job` under `lua_pcallk`, with the metatable cache at `cache` (or nil). Leaves the
/// result (or the error object) on top; true when it worked.
///
/// # Safety
/// `l` is the running state inside a C function of this module, `cache` a valid index.
unsafe fn protected_push(api: &Api, l: State, cache: Option<c_int>, job: &Job<'_>) -> bool {
    // SAFETY: pushing a light C function, a value and a light userdata allocates nothing;
    // the C function runs protected and only borrows `job`, which outlives the call.
    unsafe {
        (api.lua_pushcclosure)(l, push_job, 0);
        match cache {
            Some(c) => (api.lua_pushvalue)(l, c),
            None => (api.lua_pushnil)(l),
        }
        (api.lua_pushlightuserdata)(l, job as *const Job<'_> as *mut c_void);
        (api.lua_pcallk)(l, 2, 1, 0, 0, None) == LUA_OK
    }
}

/// Raise a Lua error with `msg` (its first 1 KiB). Owns nothing when it raises.
///
/// # Safety
/// `l` is the running state inside a C function of this module; no Rust value that
/// needs dropping may be alive in the calling frames.
unsafe fn raise(api: &Api, l: State, msg: String) -> c_int {
    let mut buf = [0u8; 1024];
    let n = msg.len().min(buf.len());
    buf[..n].copy_from_slice(&msg.as_bytes()[..n]);
    drop(msg);
    // SAFETY: `buf` is a plain array; lua_error does not return.
    unsafe {
        push_str(api, l, &buf[..n]);
        (api.lua_error)(l)
    }
}

/// The string argument at `idx`, or an error naming the function and argument.
fn arg_str<'a>(r: &'a Reader<'_>, idx: c_int, what: &str) -> Result<&'a [u8], String> {
    if r.ty(idx) != LUA_TSTRING {
        return Err(format!("{what}: string expected, got {}", r.type_name(idx)));
    }
    Ok(r.bytes(idx))
}

// ---------------------------------------------------------------------------------
// The module's C functions.

/// `core.register(bytes)`.
unsafe extern "C" fn l_register(l: State) -> c_int {
    let Some(api) = API.get() else { return 0 };
    let r = Reader { api, l };
    let result = arg_str(&r, 1, "protobuf.register")
        .and_then(|b| register(b).map_err(|e| format!("protobuf.register: {e}")));
    match result {
        Ok(()) => 0,
        // SAFETY: nothing owned is alive in this frame but the message.
        Err(e) => unsafe { raise(api, l, e) },
    }
}

fn encode_impl(r: &Reader<'_>) -> Result<Vec<u8>, String> {
    let name = String::from_utf8_lossy(arg_str(r, 1, "protobuf.encode")?).into_owned();
    let desc = message_type(&name).map_err(|e| format!("protobuf.encode: {e}"))?;
    let msg = r
        .message(2, &desc, 0)
        .map_err(|e| format!("protobuf.encode {name}: {e}"))?;
    Ok(msg.encode_to_vec())
}

/// `core.encode(typename, table)` → the message's bytes.
unsafe extern "C" fn l_encode(l: State) -> c_int {
    let Some(api) = API.get() else { return 0 };
    let r = Reader { api, l };
    match encode_impl(&r) {
        Ok(bytes) => {
            // SAFETY: a C function of this module on the running state.
            let ok = unsafe { protected_push(api, l, None, &Job::Bytes(&bytes)) };
            drop(bytes);
            if ok {
                1
            } else {
                // SAFETY: the error object is on top; nothing owned is alive.
                unsafe { (api.lua_error)(l) }
            }
        }
        // SAFETY: nothing owned is alive but the message.
        Err(e) => unsafe { raise(api, l, e) },
    }
}

fn decode_input<'a>(r: &'a Reader<'_>) -> Result<&'a [u8], String> {
    match r.ty(3) {
        LUA_TSTRING => {
            let b = r.bytes(3);
            if r.ty(4) == LUA_TNIL {
                return Ok(b);
            }
            let n = r.integer(4).map_err(|e| format!("length: {e}"))?;
            usize::try_from(n)
                .ok()
                .and_then(|n| b.get(..n))
                .ok_or_else(|| format!("length {n} is outside the string's {} bytes", b.len()))
        }
        LUA_TLIGHTUSERDATA => {
            let n = r
                .integer(4)
                .map_err(|e| format!("a pointer needs its length: {e}"))?;
            let n = usize::try_from(n).map_err(|_| format!("negative length {n}"))?;
            // SAFETY: a light userdata at index 3.
            let p = unsafe { (r.api.lua_touserdata)(r.l, 3) };
            if n == 0 {
                return Ok(&[]);
            }
            if p.is_null() {
                return Err("NULL pointer with a non-zero length".to_string());
            }
            // SAFETY: pbc's API contract: a pointer and its length (skynet's `msg, sz`),
            // valid for this call.
            Ok(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), n) })
        }
        _ => Err(format!(
            "string or pointer and length expected, got {}",
            r.type_name(3)
        )),
    }
}

/// `core.decode(cache, typename, bytes | pointer, [length])` → `true, table` or
/// `false, error text` (pbc returns `false` and keeps the error for `lasterror`).
unsafe extern "C" fn l_decode(l: State) -> c_int {
    let Some(api) = API.get() else { return 0 };
    let r = Reader { api, l };
    if r.ty(1) != LUA_TTABLE {
        // SAFETY: nothing owned is alive but the message.
        return unsafe { raise(api, l, "protobuf.decode: bad metatable cache".to_string()) };
    }
    let name = match arg_str(&r, 2, "protobuf.decode") {
        Ok(b) => String::from_utf8_lossy(b).into_owned(),
        // SAFETY: as above.
        Err(e) => return unsafe { raise(api, l, e) },
    };
    let input = match decode_input(&r) {
        Ok(b) => b,
        Err(e) => {
            drop(name);
            // SAFETY: as above.
            return unsafe { raise(api, l, format!("protobuf.decode: {e}")) };
        }
    };
    let decoded = message_type(&name)
        .and_then(|desc| DynamicMessage::decode(desc, input).map_err(|e| format!("{name}: {e}")));
    drop(name);
    let msg = match decoded {
        Ok(m) => m,
        Err(e) => {
            // SAFETY: an empty frame but `e`, copied before the push.
            unsafe { (api.lua_pushboolean)(l, 0) };
            let mut buf = [0u8; 1024];
            let n = e.len().min(buf.len());
            buf[..n].copy_from_slice(&e.as_bytes()[..n]);
            drop(e);
            // SAFETY: a plain array; the push may raise, owning nothing.
            unsafe { push_str(api, l, &buf[..n]) };
            return 2;
        }
    };
    let table = match message_to_lua(&msg, 0) {
        Ok(t) => t,
        Err(e) => {
            drop(msg);
            // SAFETY: as above.
            return unsafe { raise(api, l, format!("protobuf.decode: {e}")) };
        }
    };
    // SAFETY: `true` is a constant push (no allocation); then the protected push.
    let ok = unsafe {
        (api.lua_pushboolean)(l, 1);
        protected_push(api, l, Some(1), &Job::Message(&table))
    };
    drop(table);
    drop(msg);
    if ok {
        2
    } else {
        // SAFETY: the error object is on top; nothing owned is alive.
        unsafe { (api.lua_error)(l) }
    }
}

/// `core.pointer(s)` → a light userdata of the string's bytes (for `encode`'s callback).
unsafe extern "C" fn l_pointer(l: State) -> c_int {
    let Some(api) = API.get() else { return 0 };
    let r = Reader { api, l };
    let p = match arg_str(&r, 1, "protobuf pointer") {
        Ok(b) => b.as_ptr(),
        // SAFETY: nothing owned is alive but the message.
        Err(e) => return unsafe { raise(api, l, e) },
    };
    // SAFETY: pushing a light userdata allocates nothing.
    unsafe { (api.lua_pushlightuserdata)(l, p as *mut c_void) };
    1
}

/// `core.check(typename, [field])` → whether the type (and its field) is registered.
unsafe extern "C" fn l_check(l: State) -> c_int {
    let Some(api) = API.get() else { return 0 };
    let r = Reader { api, l };
    let found = (|| {
        let name = String::from_utf8_lossy(arg_str(&r, 1, "protobuf.check").ok()?).into_owned();
        let desc = message_type(&name).ok()?;
        if r.ty(2) == LUA_TSTRING {
            let field = String::from_utf8_lossy(r.bytes(2)).into_owned();
            desc.get_field_by_name(&field)?;
        }
        Some(())
    })()
    .is_some();
    // SAFETY: a boolean push allocates nothing.
    unsafe { (api.lua_pushboolean)(l, c_int::from(found)) };
    1
}

/// `core.enum_id(enum_type, name)` → the number, or nil.
unsafe extern "C" fn l_enum_id(l: State) -> c_int {
    let Some(api) = API.get() else { return 0 };
    let r = Reader { api, l };
    let id = (|| {
        let e = String::from_utf8_lossy(arg_str(&r, 1, "").ok()?).into_owned();
        let name = String::from_utf8_lossy(arg_str(&r, 2, "").ok()?).into_owned();
        let e = e.strip_prefix('.').unwrap_or(&e).to_string();
        let desc = registry_read().pool.get_enum_by_name(&e)?;
        desc.get_value_by_name(&name).map(|v| v.number())
    })();
    // SAFETY: pushing a number or nil allocates nothing.
    unsafe {
        match id {
            Some(n) => (api.lua_pushinteger)(l, i64::from(n)),
            None => (api.lua_pushnil)(l),
        }
    }
    1
}

/// `core.field(typename, field)` → `"message"`/`"repeated message"`/`"other"` and the
/// message type's name (for `protobuf.default`).
unsafe extern "C" fn l_field(l: State) -> c_int {
    let Some(api) = API.get() else { return 0 };
    let r = Reader { api, l };
    let info = (|| {
        let name = String::from_utf8_lossy(arg_str(&r, 1, "").ok()?).into_owned();
        let desc = message_type(&name).ok()?;
        let field = String::from_utf8_lossy(arg_str(&r, 2, "").ok()?).into_owned();
        let field = desc.get_field_by_name(&field)?;
        match field.kind() {
            Kind::Message(m) if !field.is_map() => {
                Some((field.is_list(), m.full_name().to_string()))
            }
            _ => None,
        }
    })();
    let mut buf = [0u8; 256];
    let mut n = 0;
    let kind: &[u8] = match &info {
        Some((list, sub)) => {
            n = sub.len().min(buf.len());
            buf[..n].copy_from_slice(&sub.as_bytes()[..n]);
            if *list {
                b"repeated message"
            } else {
                b"message"
            }
        }
        None => b"other",
    };
    drop(info);
    // SAFETY: plain arrays and statics only are alive now.
    unsafe {
        push_str(api, l, kind);
        push_str(api, l, &buf[..n]);
    }
    2
}

/// `core.meta(cache, typename)` → the defaults metatable of the type (`protobuf.default`).
unsafe extern "C" fn l_meta(l: State) -> c_int {
    let Some(api) = API.get() else { return 0 };
    let r = Reader { api, l };
    if r.ty(1) != LUA_TTABLE {
        // SAFETY: nothing owned is alive but the message.
        return unsafe { raise(api, l, "protobuf.default: bad metatable cache".to_string()) };
    }
    let desc = arg_str(&r, 2, "protobuf.default")
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .and_then(|name| message_type(&name).map_err(|e| format!("protobuf.default: {e}")));
    let defaults = match desc {
        Ok(d) => defaults_of(&d),
        // SAFETY: as above.
        Err(e) => return unsafe { raise(api, l, e) },
    };
    // SAFETY: a C function of this module on the running state.
    let ok = unsafe { protected_push(api, l, Some(1), &Job::Meta(&defaults)) };
    drop(defaults);
    if ok {
        1
    } else {
        // SAFETY: the error object is on top; nothing owned is alive.
        unsafe { (api.lua_error)(l) }
    }
}

/// The module's C functions, by the names `protobuf.lua` uses.
const CORE: [(&std::ffi::CStr, CFunction); 8] = [
    (c"register", l_register),
    (c"encode", l_encode),
    (c"decode", l_decode),
    (c"pointer", l_pointer),
    (c"check", l_check),
    (c"enum_id", l_enum_id),
    (c"field", l_field),
    (c"meta", l_meta),
];

/// `luaopen_protobuf`: the `protobuf` module (what `require "protobuf"` returns).
///
/// # Safety
/// Called by Lua (`require`) with a valid state, after the Lua library was loaded.
#[no_mangle]
pub unsafe extern "C" fn luaopen_protobuf(l: State) -> c_int {
    let Some(api) = api() else { return 0 };
    // SAFETY: Lua calls this C function on its running state; nothing owned by Rust is
    // alive here, so the API's errors (memory, a broken chunk) may unwind through it.
    unsafe {
        (api.lua_createtable)(l, 0, CORE.len() as c_int);
        for (name, f) in CORE {
            (api.lua_pushcclosure)(l, f, 0);
            (api.lua_setfield)(l, -2, name.as_ptr());
        }
        let core = (api.lua_gettop)(l);
        let status = (api.luaL_loadbufferx)(
            l,
            MODULE_LUA.as_ptr().cast(),
            MODULE_LUA.len(),
            c"=[bee protobuf]".as_ptr(),
            c"t".as_ptr(),
        );
        if status != LUA_OK {
            return (api.lua_error)(l);
        }
        (api.lua_pushvalue)(l, core);
        (api.lua_callk)(l, 1, 1, 0, None);
    }
    1
}

/// bee's `luaL_openlibs`, exported by the node binary so that snlua (and any C code that
/// opens a Lua state's libraries) calls it: the Lua library's own `luaL_openlibs`, then
/// `package.preload.protobuf`.
///
/// # Safety
/// `l` is a Lua state of the loaded Lua library, as for `luaL_openlibs`.
#[no_mangle]
pub unsafe extern "C" fn luaL_openlibs(l: State) {
    let Some(api) = api() else {
        // The Lua library lacks a function this module needs (logged by `api`): open
        // the standard libraries anyway, without `protobuf`.
        type OpenLibs = unsafe extern "C" fn(State);
        // SAFETY: the library's own `void luaL_openlibs(lua_State *)`; it stays loaded.
        let real = with_lua(|lib| unsafe { lib.get::<OpenLibs>(b"luaL_openlibs\0") }.map(|s| *s));
        match real {
            // SAFETY: the caller's state, as for luaL_openlibs.
            Some(Ok(f)) => unsafe { f(l) },
            _ => tracing::error!("luaL_openlibs called without a Lua library loaded"),
        }
        return;
    };
    // SAFETY: the Lua library's luaL_openlibs on its own state, then a table field set
    // in the registry's preload table; nothing owned by Rust is alive here.
    unsafe {
        (api.luaL_openlibs)(l);
        (api.luaL_getsubtable)(l, LUA_REGISTRYINDEX, c"_PRELOAD".as_ptr());
        (api.lua_pushcclosure)(l, luaopen_protobuf, 0);
        (api.lua_setfield)(l, -2, c"protobuf".as_ptr());
        (api.lua_settop)(l, -2);
    }
}

/// The functions of this module, for [`crate::link_exports`].
pub(crate) fn exports() -> [*const c_void; 2] {
    [
        luaL_openlibs as *const c_void,
        luaopen_protobuf as *const c_void,
    ]
}
