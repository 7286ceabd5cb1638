//! Reading a skynet config file (what `skynet CONFIG` takes) the way skynet reads it, with
//! the Lua library [`crate::load_lua`] loaded: `$NAME` replaced by the environment
//! variable (an unset one is an error), the text run as a Lua chunk whose globals are the
//! result, `include "file"` (relative to the including file's directory) the only name
//! it sees, and every value turned into a string (`true`/`false`, numbers as Lua prints
//! them). The loader is a short Lua chunk of ours run in a fresh state of that library,
//! so a config that computes its values (`cpath = root.."cservice/?.so"`) reads exactly
//! as skynet would read it.

use std::ffi::{c_char, c_int, c_void, CString};
use std::path::Path;

use crate::lua::with_lua;
use crate::CapiError;

/// The loader: takes the config path, returns the pairs packed as `s4s4…`.
const LOADER: &str = r#"
local path = ...
local result = {}
local dir = path:match("^(.*/)") or "./"

local function read(file)
  local f, err = io.open(file, "rb")
  if not f then error("cannot read " .. file .. ": " .. tostring(err), 0) end
  local text = f:read("a")
  f:close()
  return (text:gsub("%$([%w_]+)", function(name)
    local v = os.getenv(name)
    if v == nil then error(file .. ": os.getenv() failed: " .. name, 0) end
    return v
  end))
end

local function run(file)
  local chunk, err = load(read(file), "@" .. file, "t", result)
  if not chunk then error(err, 0) end
  chunk()
end

local function include(name)
  local file = name:sub(1, 1) == "/" and name or dir .. name
  local outer = dir
  dir = file:match("^(.*/)") or "./"
  run(file)
  dir = outer
end

setmetatable(result, { __index = { include = include } })
run(path)
setmetatable(result, nil)
local out = {}
for k, v in pairs(result) do
  if type(k) ~= "string" then error("Invalid config table", 0) end
  local t = type(v)
  if t == "boolean" or t == "number" then
    v = tostring(v)
  elseif t ~= "string" then
    error("Invalid config table key = " .. k, 0)
  end
  out[#out + 1] = string.pack("s4s4", k, v)
end
return table.concat(out)
"#;

type State = *mut c_void;
type NewState = unsafe extern "C" fn() -> State;
type OpenLibs = unsafe extern "C" fn(State);
type LoadBuffer =
    unsafe extern "C" fn(State, *const c_char, usize, *const c_char, *const c_char) -> c_int;
type PCall = unsafe extern "C" fn(State, c_int, c_int, c_int, isize, *const c_void) -> c_int;
type PushString = unsafe extern "C" fn(State, *const c_char) -> *const c_char;
type ToString = unsafe extern "C" fn(State, c_int, *mut usize) -> *const c_char;
type Close = unsafe extern "C" fn(State);

/// The config at `path` as skynet reads it: its keys and values, in no order. Needs the
/// Lua library loaded ([`crate::load_lua`]).
pub fn read_skynet_config(path: &Path) -> Result<Vec<(String, String)>, CapiError> {
    let fail = |reason: String| CapiError::Config {
        path: path.to_path_buf(),
        reason,
    };
    let c_path = CString::new(path.to_string_lossy().as_bytes())
        .map_err(|_| fail("the path has a NUL byte".into()))?;
    let packed = with_lua(|lib| {
        // SAFETY: the symbols are the Lua 5.4 C API of the loaded library, with these
        // signatures (lua.h / lauxlib.h); the library stays loaded while `lib` is borrowed.
        let api = unsafe {
            (
                *lib.get::<NewState>(b"luaL_newstate\0")?,
                *lib.get::<OpenLibs>(b"luaL_openlibs\0")?,
                *lib.get::<LoadBuffer>(b"luaL_loadbufferx\0")?,
                *lib.get::<PCall>(b"lua_pcallk\0")?,
                *lib.get::<PushString>(b"lua_pushstring\0")?,
                *lib.get::<ToString>(b"lua_tolstring\0")?,
                *lib.get::<Close>(b"lua_close\0")?,
            )
        };
        Ok::<_, libloading::Error>(api)
    })
    .ok_or_else(|| fail("no Lua library is loaded".into()))?
    .map_err(|e| fail(format!("the Lua library lacks a function: {e}")))?;
    let (new_state, open_libs, load_buffer, pcall, push_string, to_string, close) = packed;
    // SAFETY: a fresh state of the loaded library, used on this thread only and closed
    // before returning; every pointer passed is a NUL-terminated string that outlives the
    // call, and the string read back is copied before the state is closed.
    unsafe {
        let l = new_state();
        if l.is_null() {
            return Err(fail("luaL_newstate failed (out of memory)".into()));
        }
        open_libs(l);
        let name = c"=(bee skynet config loader)";
        let mut status = load_buffer(
            l,
            LOADER.as_ptr().cast(),
            LOADER.len(),
            name.as_ptr(),
            c"t".as_ptr(),
        );
        if status == 0 {
            push_string(l, c_path.as_ptr());
            status = pcall(l, 1, 1, 0, 0, std::ptr::null());
        }
        let mut len = 0usize;
        let top = to_string(l, -1, &mut len);
        let bytes = if top.is_null() {
            Vec::new()
        } else {
            std::slice::from_raw_parts(top.cast::<u8>(), len).to_vec()
        };
        close(l);
        if status != 0 {
            let msg = if bytes.is_empty() {
                format!("Lua error {status}")
            } else {
                String::from_utf8_lossy(&bytes).into_owned()
            };
            return Err(fail(msg));
        }
        unpack(&bytes).map_err(fail)
    }
}

/// The loader's `s4s4…` pairs.
fn unpack(mut b: &[u8]) -> Result<Vec<(String, String)>, String> {
    let take = |b: &mut &[u8]| -> Result<String, String> {
        let n = b
            .get(..4)
            .map(|x| u32::from_ne_bytes([x[0], x[1], x[2], x[3]]) as usize)
            .ok_or("truncated loader output")?;
        let s = b.get(4..4 + n).ok_or("truncated loader output")?;
        let text = String::from_utf8(s.to_vec()).map_err(|_| "a key or value is not UTF-8")?;
        *b = &b[4 + n..];
        Ok(text)
    };
    let mut pairs = Vec::new();
    while !b.is_empty() {
        let k = take(&mut b)?;
        let v = take(&mut b)?;
        pairs.push((k, v));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::unpack;

    #[test]
    fn pairs_unpack_and_truncation_is_an_error() {
        let mut b = Vec::new();
        for s in ["thread", "2", "start", "main"] {
            b.extend_from_slice(&(s.len() as u32).to_ne_bytes());
            b.extend_from_slice(s.as_bytes());
        }
        assert_eq!(
            unpack(&b).unwrap(),
            [
                ("thread".into(), "2".into()),
                ("start".into(), "main".into())
            ]
        );
        assert!(unpack(&b[..b.len() - 1]).is_err());
    }
}
