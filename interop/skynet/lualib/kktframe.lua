-- The game team's frame ("proxy frame v2", shared spec kkt-frames.md) and the few
-- protobuf messages the interop checks exchange, written and read in plain Lua 5.4
-- (string.pack / string.unpack). Our own code, from the spec's layout:
--
--   u16 remote node len, u16 remote service len, u16 source node len, u16 source service len,
--   the four names back to back, u32 sub_type, i64 uid, u16 name len, name,
--   32-bit roomid, u64 session, protobuf body (the rest). All big-endian.
--
-- decode never raises: it returns nil and a reason for anything that is not a frame.
local M = {}

M.SUBTYPE_PROTOBUF = 16
M.SUBTYPE_RPC_CLIENT = 17
M.SUBTYPE_RPC_SERVER = 18
M.SUBTYPE_PLAIN_TEXT = 19

local FIXED = 8 + 4 + 8 + 2 + 4 + 8	-- 34 bytes besides the five strings

-- f: {remote_node, remote_service, source_node, source_service, sub_type, uid, name,
--     roomid, session, body}; missing strings are "", missing numbers 0.
-- Returns the frame, or nil and why (a string over 65535 bytes is refused).
function M.encode(f)
	local rn, rs = f.remote_node or "", f.remote_service or ""
	local sn, ss = f.source_node or "", f.source_service or ""
	local name, body = f.name or "", f.body or ""
	for field, s in pairs { remote_node = rn, remote_service = rs, source_node = sn,
		source_service = ss, name = name } do
		if #s > 0xffff then
			return nil, field .. " is longer than 65535 bytes"
		end
	end
	local roomid = (f.roomid or 0) & 0xffffffff
	return string.pack(">I2I2I2I2", #rn, #rs, #sn, #ss) .. rn .. rs .. sn .. ss
		.. string.pack(">I4i8s2I4i8", f.sub_type or M.SUBTYPE_PROTOBUF, f.uid or 0, name,
			roomid, f.session or 0)
		.. body
end

-- Returns the frame as a table (the fields of encode; roomid as u32), or nil and why.
function M.decode(buf)
	if type(buf) ~= "string" then
		return nil, "a frame is a string, got " .. type(buf)
	end
	local n = #buf
	if n < FIXED then
		return nil, string.format("frame of %d bytes is shorter than the fixed %d", n, FIXED)
	end
	local lrn, lrs, lsn, lss = string.unpack(">I2I2I2I2", buf)
	local pos = 9
	local names = {}
	for i, len in ipairs { lrn, lrs, lsn, lss } do
		if pos + len - 1 > n then
			return nil, string.format("name %d needs %d bytes at offset %d, %d left", i, len, pos - 1,
				n - pos + 1)
		end
		names[i] = buf:sub(pos, pos + len - 1)
		pos = pos + len
	end
	if pos + 4 + 8 + 2 - 1 > n then
		return nil, "frame truncated before the message name"
	end
	local sub_type, uid, name_len = string.unpack(">I4i8I2", buf, pos)
	pos = pos + 14
	if pos + name_len + 4 + 8 - 1 > n then
		return nil, string.format("message name needs %d bytes at offset %d, %d left (and 12 more)",
			name_len, pos - 1, n - pos + 1)
	end
	local name = buf:sub(pos, pos + name_len - 1)
	pos = pos + name_len
	local roomid, session = string.unpack(">I4i8", buf, pos)
	pos = pos + 12
	return {
		remote_node = names[1], remote_service = names[2],
		source_node = names[3], source_service = names[4],
		sub_type = sub_type, uid = uid, name = name, roomid = roomid, session = session,
		body = buf:sub(pos),
	}
end

-- The reply a Lua service gives to an rpc request: all names empty, sub_type 17, uid,
-- roomid and session copied, the response's name and body.
function M.lua_reply(request, name, body)
	return M.encode {
		sub_type = M.SUBTYPE_RPC_CLIENT, uid = request.uid, name = name,
		roomid = request.roomid, session = request.session, body = body,
	}
end

-- ---- protobuf, only what these messages need -------------------------------------
-- Scalars are varints (uint64/int64/int32 >= 0), strings length-delimited.

local function varint(v)
	local out = {}
	repeat
		local b = v & 0x7f
		v = v >> 7	-- logical shift: negative int64 becomes 10 bytes, as protobuf writes it
		if v ~= 0 then
			b = b | 0x80
		end
		out[#out + 1] = string.char(b)
	until v == 0
	return table.concat(out)
end

-- fields: list of {number, kind, value} with kind "varint" or "bytes"; zero values
-- are left out (proto3).
function M.pb_encode(fields)
	local out = {}
	for _, f in ipairs(fields) do
		local num, kind, v = f[1], f[2], f[3]
		if kind == "varint" then
			if v ~= 0 then
				out[#out + 1] = varint(num << 3) .. varint(v)
			end
		elseif kind == "bytes" then
			if v ~= "" then
				out[#out + 1] = varint(num << 3 | 2) .. varint(#v) .. v
			end
		else
			error("pb_encode: kind " .. tostring(kind))
		end
	end
	return table.concat(out)
end

-- Returns {field number -> value} (varints as integers, length-delimited as strings;
-- the last occurrence wins), or nil and why.
function M.pb_decode(buf)
	local out, pos, n = {}, 1, #buf
	local function read_varint()
		local v, shift = 0, 0
		while true do
			if pos > n then
				return nil
			end
			local b = buf:byte(pos)
			pos = pos + 1
			v = v | ((b & 0x7f) << shift)
			if b < 0x80 then
				return v
			end
			shift = shift + 7
			if shift > 63 then
				return nil
			end
		end
	end
	while pos <= n do
		local key = read_varint()
		if not key then
			return nil, "truncated field key"
		end
		local num, wt = key >> 3, key & 7
		if wt == 0 then
			local v = read_varint()
			if not v then
				return nil, "truncated varint of field " .. num
			end
			out[num] = v
		elseif wt == 2 then
			local len = read_varint()
			if not len or len < 0 or pos + len - 1 > n then
				return nil, "truncated bytes of field " .. num
			end
			out[num] = buf:sub(pos, pos + len - 1)
			pos = pos + len
		elseif wt == 1 or wt == 5 then
			local len = wt == 1 and 8 or 4
			if pos + len - 1 > n then
				return nil, "truncated fixed field " .. num
			end
			pos = pos + len
		else
			return nil, "unsupported wire type " .. wt .. " of field " .. num
		end
	end
	return out
end

-- The messages (proto/game.proto, cservices/proto/mail.proto), by field number.
local schemas = {
	["game.Ping"] = { { 1, "seq", "varint" }, { 2, "sent_unix_ms", "varint" } },
	["game.Pong"] = { { 1, "seq", "varint" }, { 2, "served_by", "bytes" } },
	["game.GetUserInfo"] = { { 1, "uid", "varint" } },
	["game.UserInfo"] = { { 1, "uid", "varint" }, { 2, "nickname", "bytes" }, { 3, "level", "varint" },
		{ 4, "coins", "varint" } },
	["game.ShopBuy"] = { { 1, "uid", "varint" }, { 2, "item_id", "varint" }, { 3, "count", "varint" } },
	["game.ShopReceipt"] = { { 1, "uid", "varint" }, { 2, "item_id", "varint" }, { 3, "count", "varint" },
		{ 4, "order_id", "varint" }, { 5, "handled_by", "bytes" } },
	["mail.Send"] = { { 1, "to_uid", "varint" }, { 2, "from_uid", "varint" }, { 3, "title", "bytes" },
		{ 4, "text", "bytes" } },
	["mail.Ack"] = { { 1, "to_uid", "varint" }, { 2, "mail_id", "varint" }, { 3, "inbox_size", "varint" },
		{ 4, "handled_by", "bytes" }, { 5, "nickname", "bytes" }, { 6, "lookup_error", "bytes" } },
}

-- Encode message `name` from a table of named fields.
function M.message(name, t)
	local schema = assert(schemas[name], "unknown message " .. name)
	local fields = {}
	for _, s in ipairs(schema) do
		local v = t[s[2]]
		if v == nil then
			v = s[3] == "varint" and 0 or ""
		end
		fields[#fields + 1] = { s[1], s[3], v }
	end
	return M.pb_encode(fields)
end

-- Decode message `name` into a table of named fields (defaults 0 / ""), or nil and why.
function M.open(name, body)
	local schema = schemas[name]
	if not schema then
		return nil, "unknown message " .. name
	end
	local raw, err = M.pb_decode(body)
	if not raw then
		return nil, name .. ": " .. err
	end
	local t = {}
	for _, s in ipairs(schema) do
		local v = raw[s[1]]
		if v == nil then
			v = s[3] == "varint" and 0 or ""
		elseif type(v) ~= (s[3] == "varint" and "number" or "string") then
			return nil, string.format("%s: field %s has the wrong wire type", name, s[2])
		end
		t[s[2]] = v
	end
	return t
end

return M
