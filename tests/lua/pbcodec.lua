-- A Lua service using the `protobuf` module (cloudwu/pbc's Lua API) that bee provides
-- to every Lua state: the tests call it over the cluster to encode and decode messages
-- and compare the bytes with prost's.
local skynet = require "skynet"
local protobuf = require "protobuf"

local CMD = {}

function CMD.encode(name, tbl)
	return protobuf.encode(name, tbl)
end

-- The decoded table as it is (present fields; metatables do not travel).
function CMD.decode(name, bytes)
	return protobuf.decode(name, bytes)
end

-- The values `msg[k]` reads for each key (defaults included), after decoding.
function CMD.get(name, bytes, ...)
	local msg = assert(protobuf.decode(name, bytes))
	local r = {}
	for i, k in ipairs { ... } do
		local v = msg
		for part in k:gmatch "[^.]+" do
			v = v[part]
		end
		r[i] = v
	end
	return table.unpack(r, 1, select("#", ...))
end

-- encode with a callback (pointer, length), decoded from the pointer.
function CMD.through_pointer(name, tbl)
	local msg = protobuf.encode(name, tbl, function(ptr, len, extra)
		assert(type(ptr) == "userdata" and extra == "extra")
		return protobuf.decode(name, ptr, len)
	end, "extra")
	return msg
end

function CMD.encode_error(name, tbl)
	local ok, err = pcall(protobuf.encode, name, tbl)
	assert(not ok, "encode should have failed")
	return err
end

function CMD.decode_error(name, bytes)
	local ok, err = protobuf.decode(name, bytes)
	assert(ok == false)
	return err, protobuf.lasterror()
end

-- Decoded by another, fresh Lua service that registered nothing.
function CMD.in_fresh_service(name, bytes)
	local fresh = skynet.newservice "pbfresh"
	return skynet.call(fresh, "lua", name, bytes)
end

function CMD.register_error(bytes)
	local ok, err = pcall(protobuf.register, bytes)
	assert(not ok, "register should have failed")
	return err
end

-- What pbc's API promises besides encode/decode.
function CMD.api()
	local r = {}
	r.check_type = protobuf.check "codec.Bag"
	r.check_field = protobuf.check("codec.Bag", "owner")
	r.check_nofield = protobuf.check("codec.Bag", "nope")
	r.check_notype = protobuf.check "codec.Nope"
	r.enum_id = protobuf.enum_id("codec.Color", "BLUE")
	-- default(): a plain table reads its type's defaults, nested ones too.
	local t = protobuf.default("codec.Bag", { owner = 7, best = { id = 1 } })
	r.default_color = t.color
	r.default_owner = t.owner
	r.default_best_name = t.best.name
	r.default_best_color = t.best.color
	-- register again (the same file): accepted.
	local f = assert(io.open(skynet.getenv "pb_file", "rb"))
	protobuf.register(f:read "a")
	f:close()
	local ok, err = pcall(protobuf.register, "not a descriptor set \255")
	r.register_error = not ok and err
	r.extract = protobuf.extract { 1 } [1]
	return r
end

skynet.start(function()
	protobuf.register_file(assert(skynet.getenv "pb_file"))
	skynet.error "pbcodec ready"
	skynet.dispatch("lua", function(_, _, cmd, ...)
		local f = assert(CMD[cmd], cmd)
		skynet.ret(skynet.pack(f(...)))
	end)
end)
