-- The game team's persistence pattern as a Lua service (registered as "lpersistence"):
-- one "lua" dispatch that branches on the sub_type, its first value.
--   "lua", cmd, ...  -> the CMD table: ping -> "pong", "<node>/lpersistence";
--                       logins -> how many game.LoginReq frames it has seen
--   "text", frame    -> the game frame unpacked, its protobuf body decoded and handled
--                       by message name; a call gets the reply frame (one string):
--                       game.LoginReq -> game.LoginResp, game.GetUserInfo ->
--                       game.UserInfo, game.Ping -> game.Pong
-- The same contract as the Rust `lpersistence` of the demo, so either answers a lobby.
local skynet = require "skynet"
local protobuf = require "protobuf"
local kkt = require "kktframe"

local served_by = (skynet.getenv "node" or "?") .. "/lpersistence"
local logins = 0

local CMD = {}

function CMD.ping()
	return "pong", served_by
end

function CMD.logins()
	return logins
end

local MSG = {}

MSG["game.LoginReq"] = function(m)
	logins = logins + 1
	return "game.LoginResp", { uid = m.uid, code = 0, nickname = "player" .. m.uid }
end

MSG["game.GetUserInfo"] = function(m)
	return "game.UserInfo", {
		uid = m.uid,
		nickname = "player" .. m.uid,
		level = m.uid % 60 + 1,
		coins = m.uid % 100000 * 10,
	}
end

MSG["game.Ping"] = function(m)
	return "game.Pong", { seq = m.seq, served_by = served_by }
end

local function on_text(session, bytes)
	local f = kkt.unpack(bytes)
	local handle = MSG[f.name]
	if not handle then
		error("lpersistence: no handler for " .. f.name)
	end
	local m, err = protobuf.decode(f.name, f.body)
	if not m then
		error("lpersistence: " .. err)
	end
	local name, reply = handle(m)
	if session ~= 0 then
		skynet.ret(skynet.pack(kkt.reply(f, name, protobuf.encode(name, reply))))
	end
end

skynet.start(function()
	protobuf.register_file(assert(skynet.getenv "pb_file", "no pb_file in the env"))
	skynet.dispatch("lua", function(session, _, sub_type, ...)
		if sub_type == "lua" then
			local cmd = ...
			local f = CMD[cmd] or error("lpersistence: no command " .. tostring(cmd))
			skynet.ret(skynet.pack(f(select(2, ...))))
		elseif sub_type == "text" then
			on_text(session, ...)
		else
			error("lpersistence: unknown sub_type " .. tostring(sub_type))
		end
	end)
	skynet.error "lpersistence ready"
end)
