-- bee's `protobuf` module for skynet's Lua: the Lua API of cloudwu/pbc's binding
-- (register, register_file, encode, decode, check, enum_id, default, extract,
-- lasterror), on bee's native protobuf codec (the C functions in `core`, written in
-- Rust with prost-reflect). Loaded by `require "protobuf"` in every Lua state of a bee
-- process; see docs/lua.md ("protobuf").
local core = ...

local type = type
local pairs = pairs
local ipairs = ipairs
local setmetatable = setmetatable

local M = {}

-- Message full name -> the metatable that gives a decoded message its default values.
-- Built on first use by the codec, one per type and Lua state.
local meta = {}
local last_error

function M.register(buffer)
	core.register(buffer)
end

function M.register_file(filename)
	local f, err = io.open(filename, "rb")
	if not f then
		error("protobuf.register_file: " .. tostring(err), 2)
	end
	local buffer = f:read "a"
	f:close()
	core.register(buffer)
end

function M.encode(typename, tbl, func, ...)
	local s = core.encode(typename, tbl)
	if func then
		-- `s` stays referenced by this frame while `func` reads the pointer.
		local ret = func(core.pointer(s), #s, ...)
		return ret
	end
	return s
end

function M.decode(typename, buffer, length)
	local ok, r = core.decode(meta, typename, buffer, length)
	if ok then
		return r
	end
	last_error = r
	return false, r
end

function M.lasterror()
	return last_error
end

function M.check(typename, field)
	return core.check(typename, field)
end

function M.enum_id(enum_type, enum_name)
	return core.enum_id(enum_type, enum_name)
end

local function set_default(typename, tbl)
	for k, v in pairs(tbl) do
		if type(v) == "table" then
			local kind, sub = core.field(typename, k)
			if kind == "message" then
				set_default(sub, v)
			elseif kind == "repeated message" then
				for _, e in ipairs(v) do
					set_default(sub, e)
				end
			end
		end
	end
	return setmetatable(tbl, core.meta(meta, typename))
end

M.default = set_default

-- pbc decodes nested messages lazily and `extract` expands them; bee decodes a message
-- whole, so there is nothing left to expand.
function M.extract(tbl)
	return tbl
end

return M
