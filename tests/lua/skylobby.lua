-- The lobby pattern on a stock skynet node, against bee nodes: cluster.query,
-- cluster.send "text" of a game frame, cluster.call "lua" and "text", and a shop buy
-- whose receipt comes back as a "text" push. Stock skynet has no `protobuf` module,
-- so the caller hands it the protobuf bodies and takes the reply frames as they are.
-- Opens the cluster as the env key `sky_name` and registers itself as "lobby".
--   "lua", "persistence", node, uid, login_body, get_body
--        -> addr, logins before, logins after, "pong", served_by, reply frame
--   "lua", "buy", node, master, uid, body -> true
--   "lua", "receipts" -> the frames pushed to it so far
local skynet = require "skynet"
local cluster = require "skynet.cluster"
local kkt = require "kktframe"

local me = assert(skynet.getenv "sky_name")
local receipts = {}
local CMD = {}

function CMD.persistence(node, uid, login_body, get_body)
	local addr = cluster.query(node, "lpersistence")
	local before = cluster.call(node, addr, "lua", "logins")
	cluster.send(node, addr, "text", kkt.pack { uid = uid, name = "game.LoginReq", body = login_body })
	local pong, served_by = cluster.call(node, addr, "lua", "ping")
	local reply = cluster.call(node, addr, "text", kkt.pack { uid = uid, name = "game.GetUserInfo", body = get_body })
	local after = cluster.call(node, addr, "lua", "logins")
	return addr, before, after, pong, served_by, reply
end

function CMD.buy(node, master, uid, body)
	cluster.send(node, "@" .. master, "text", kkt.pack {
		remote_node = node,
		remote_service = master,
		source_node = me,
		source_service = "lobby",
		uid = uid,
		name = "game.ShopBuy",
		body = body,
	})
	return true
end

function CMD.receipts()
	return receipts
end

skynet.start(function()
	skynet.dispatch("lua", function(session, _, sub_type, ...)
		if sub_type == "lua" then
			local cmd = ...
			local f = CMD[cmd] or error("skylobby: no command " .. tostring(cmd))
			skynet.ret(skynet.pack(f(select(2, ...))))
		elseif sub_type == "text" or sub_type == "rpc_response" then
			receipts[#receipts + 1] = (...)
			if session ~= 0 then
				skynet.ret(skynet.pack(true))
			end
		else
			error("skylobby: unknown sub_type " .. tostring(sub_type))
		end
	end)
	cluster.register "lobby"
	cluster.open(me)
	skynet.error "skylobby ready"
end)
