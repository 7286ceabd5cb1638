-- The game team's frame (the "v2" proxy frame) in Lua, from its documented layout:
-- four u16 name lengths (remote node, remote service, source node, source service),
-- the four names, u32 sub_type, i64 uid, u16 message-name length and the name, 32-bit
-- roomid, u64 session, then the protobuf body to the end. Big-endian throughout.
local M = {}

M.SUBTYPE_PROTOBUF = 16
M.SUBTYPE_RPC_CLIENT = 17
M.SUBTYPE_RPC_SERVER = 18

local function check_len(what, s)
	if #s > 0xffff then
		error(string.format("frame: %s is %d bytes (at most 65535)", what, #s), 3)
	end
	return s
end

-- f: { remote_node, remote_service, source_node, source_service, sub_type, uid,
--      name, roomid, session, body } (names default to "", numbers to 0,
--      sub_type to SUBTYPE_PROTOBUF).
function M.pack(f)
	local rn = check_len("the remote node", f.remote_node or "")
	local rs = check_len("the remote service", f.remote_service or "")
	local sn = check_len("the source node", f.source_node or "")
	local ss = check_len("the source service", f.source_service or "")
	local name = check_len("the message name", assert(f.name, "frame: no message name"))
	return string.pack(">I2I2I2I2", #rn, #rs, #sn, #ss) .. rn .. rs .. sn .. ss
		.. string.pack(">I4i8s2i4i8", f.sub_type or M.SUBTYPE_PROTOBUF, f.uid or 0, name,
			f.roomid or 0, f.session or 0)
		.. (f.body or "")
end

-- The frame's fields; a clear error for bytes that are not a whole frame.
function M.unpack(s)
	if type(s) ~= "string" then
		error("frame: string expected, got " .. type(s), 2)
	end
	if #s < 8 then
		error(string.format("frame: %d bytes, shorter than the four name lengths", #s), 2)
	end
	local lrn, lrs, lsn, lss, pos = string.unpack(">I2I2I2I2", s)
	local names = lrn + lrs + lsn + lss
	if #s < pos - 1 + names + 4 + 8 + 2 then
		error(string.format("frame: %d bytes, too short for names of %d bytes", #s, names), 2)
	end
	local f = {}
	f.remote_node = s:sub(pos, pos + lrn - 1)
	pos = pos + lrn
	f.remote_service = s:sub(pos, pos + lrs - 1)
	pos = pos + lrs
	f.source_node = s:sub(pos, pos + lsn - 1)
	pos = pos + lsn
	f.source_service = s:sub(pos, pos + lss - 1)
	pos = pos + lss
	local sub_type, uid, lname
	sub_type, uid, lname, pos = string.unpack(">I4i8I2", s, pos)
	if #s < pos - 1 + lname + 4 + 8 then
		error(string.format("frame: %d bytes, too short for a message name of %d bytes", #s, lname), 2)
	end
	f.sub_type, f.uid = sub_type, uid
	f.name = s:sub(pos, pos + lname - 1)
	f.roomid, f.session, pos = string.unpack(">i4i8", s, pos + lname)
	f.body = s:sub(pos)
	return f
end

-- A Lua service's reply to frame `req`: no names, sub_type 17, the request's uid,
-- roomid and session, the response's name and body.
function M.reply(req, name, body)
	return M.pack {
		sub_type = M.SUBTYPE_RPC_CLIENT,
		uid = req.uid,
		roomid = req.roomid,
		session = req.session,
		name = name,
		body = body,
	}
end

return M
