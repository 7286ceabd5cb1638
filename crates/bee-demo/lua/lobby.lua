-- The game team's lobby pattern as a Lua service (registered as "lobby"): it reaches
-- the persistence of another node with skynet's cluster API -- cluster.query for the
-- address, cluster.send "text" of a game frame (a push), cluster.call "lua" and
-- cluster.call "text" -- and buys from a shop master with one-way frames whose
-- receipts come back to it as "text" pushes.
--   "lua", "persistence", node, uid -> a table of what each step gave
--   "lua", "buy", node, master, uid, item, count -> true (the frame is pushed)
--   "lua", "buy_rpc", node, master, uid, item, count, session -> true
--   "lua", "receipts" -> the receipts received so far (one table each)
--   "text", frame / "rpc_response", frame -> a receipt, kept
local skynet = require "skynet"
local cluster -- skynet.cluster, once skynet's bootstrap has started service_mgr
local protobuf = require "protobuf"
local kkt = require "kktframe"

local node_name = skynet.getenv "node"
local receipts = {}

local function game_frame(uid, name, msg, extra)
	local f = extra or {}
	f.uid, f.name, f.body = uid, name, protobuf.encode(name, msg)
	return kkt.pack(f)
end

local CMD = {}

function CMD.persistence(node, uid)
	local r = {}
	local addr = cluster.query(node, "lpersistence")
	r.addr = addr
	r.before = cluster.call(node, addr, "lua", "logins")
	cluster.send(node, addr, "text",
		game_frame(uid, "game.LoginReq", { uid = uid, token = "t-" .. uid, device = "ios" }))
	r.pong, r.served_by = cluster.call(node, addr, "lua", "ping")
	local reply = cluster.call(node, addr, "text", game_frame(uid, "game.GetUserInfo", { uid = uid }))
	r.reply = reply
	local f = kkt.unpack(reply)
	r.reply_name, r.reply_sub_type, r.reply_uid = f.name, f.sub_type, f.uid
	local info = assert(protobuf.decode(f.name, f.body))
	r.uid, r.nickname, r.level, r.coins = info.uid, info.nickname, info.level, info.coins
	r.after = cluster.call(node, addr, "lua", "logins")
	return r
end

local function buy(node, master, uid, item, count, sub_type, session)
	cluster.send(node, "@" .. master, "text", game_frame(uid, "game.ShopBuy",
		{ uid = uid, item_id = item, count = count }, {
			remote_node = node,
			remote_service = master,
			source_node = node_name,
			source_service = "lobby",
			sub_type = sub_type,
			session = session,
		}))
	return true
end

function CMD.buy(node, master, uid, item, count)
	return buy(node, master, uid, item, count, kkt.SUBTYPE_PROTOBUF, 0)
end

function CMD.buy_rpc(node, master, uid, item, count, session)
	return buy(node, master, uid, item, count, kkt.SUBTYPE_RPC_SERVER, session)
end

function CMD.receipts()
	return receipts
end

local function on_frame(how, bytes)
	local f = kkt.unpack(bytes)
	local r = { how = how, sub_type = f.sub_type, name = f.name, frame_uid = f.uid, session = f.session,
		source = f.source_node .. "/" .. f.source_service }
	if f.name == "game.ShopReceipt" then
		local m = assert(protobuf.decode(f.name, f.body))
		r.uid, r.item_id, r.count, r.order_id, r.handled_by = m.uid, m.item_id, m.count, m.order_id, m.handled_by
	end
	receipts[#receipts + 1] = r
end

skynet.start(function()
	cluster = require "skynet.cluster"
	protobuf.register_file(assert(skynet.getenv "pb_file", "no pb_file in the env"))
	skynet.dispatch("lua", function(session, _, sub_type, ...)
		if sub_type == "lua" then
			local cmd = ...
			local f = CMD[cmd] or error("lobby: no command " .. tostring(cmd))
			skynet.ret(skynet.pack(f(select(2, ...))))
		elseif sub_type == "text" or sub_type == "rpc_response" then
			on_frame(sub_type, ...)
			if session ~= 0 then
				skynet.ret(skynet.pack(true))
			end
		else
			error("lobby: unknown sub_type " .. tostring(sub_type))
		end
	end)
	skynet.error "lobby ready"
end)
