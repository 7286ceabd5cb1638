-- A Lua game service of our own speaking the game team's frame (lualib/kktframe.lua)
-- inside a stock skynet node, registered in the cluster as "kktlua" by skylab_kkt_main.
--
-- Pushes it takes ("lua" messages, session 0, as cluster.send delivers them):
--   "text", frame          an rpc request (sub_type 18, session > 0) is answered with a
--                          Lua-style reply (names empty, sub_type 17, uid/roomid/session
--                          copied) pushed as cluster.send(source node, "@source service",
--                          "rpc_response", reply):
--                            game.Ping        -> game.Pong {seq, served_by "<node>/kktlua"}
--                            game.GetUserInfo -> game.UserInfo {uid, nickname "sky<uid>", ...}
--                            mail.Send        -> mail.Ack {to_uid, mail_id 1.., handled_by}
--                          any other rpc gets no reply (counted); a one-way frame is kept
--                          for the checks (one-way receipts from the C++ shop).
--   "rpc_response", frame  the reply to one of this service's own rpcs: matched to the
--                          waiting check by the frame's session.
-- Calls it answers:
--   "check_shop", NODE, MASTER   runs the checks against bee's C++ shop.so behind MASTER
--                                on NODE; returns a list of "PASS ..." / "FAIL ..." lines
--   "stats"                      {answered = {[message] = n}, unanswered = n, bad = n,
--                                 stray = n, last_bad = text}
local skynet = require "skynet"
local cluster = require "skynet.cluster"
local kkt = require "kktframe"

local NODE = assert(skynet.getenv "node_name")
local SELF = "kktlua"
local SERVED_BY = NODE .. "/" .. SELF

local stats = { answered = {}, unanswered = 0, bad = 0, stray = 0, last_bad = "" }
local pending = {}	-- frame session -> {co, frame}
local oneway = {}	-- one-way frames received, oldest first
local next_session = 1000
local mails = 0

local function bad(why)
	stats.bad = stats.bad + 1
	stats.last_bad = why
	skynet.error("kktlua: " .. why)
end

-- ---- answering rpc requests -----------------------------------------------------
local handlers = {
	["game.Ping"] = function(m)
		return "game.Pong", { seq = m.seq, served_by = SERVED_BY }
	end,
	["game.GetUserInfo"] = function(m)
		return "game.UserInfo", { uid = m.uid, nickname = "sky" .. m.uid, level = m.uid % 60 + 1,
			coins = m.uid * 3 }
	end,
	["mail.Send"] = function(m)
		mails = mails + 1
		return "mail.Ack", { to_uid = m.to_uid, mail_id = mails, inbox_size = mails, handled_by = SERVED_BY }
	end,
}

local function answer(f)
	local h = handlers[f.name]
	if not h then
		stats.unanswered = stats.unanswered + 1
		skynet.error(string.format("kktlua: rpc %s (session %d) not understood; no reply", f.name, f.session))
		return
	end
	local m, err = kkt.open(f.name, f.body)
	if not m then
		bad("rpc " .. f.name .. ": " .. err)
		return
	end
	if f.source_node == "" or f.source_service == "" then
		bad("rpc " .. f.name .. " names no source node/service to answer")
		return
	end
	local rname, r = h(m)
	local reply = kkt.lua_reply(f, rname, kkt.message(rname, r))
	stats.answered[f.name] = (stats.answered[f.name] or 0) + 1
	cluster.send(f.source_node, "@" .. f.source_service, "rpc_response", reply)
end

local function on_text(frame)
	local f, err = kkt.decode(frame)
	if not f then
		bad("text frame dropped: " .. err)
		return
	end
	if f.sub_type == kkt.SUBTYPE_RPC_SERVER then
		if f.session > 0 then
			answer(f)
		else
			bad("rpc " .. f.name .. " with session 0 dropped")
		end
	else
		oneway[#oneway + 1] = f
		local w = pending.oneway
		if w then
			pending.oneway = nil
			skynet.wakeup(w.co)
		end
	end
end

local function on_response(frame)
	local f, err = kkt.decode(frame)
	if not f then
		bad("rpc_response dropped: " .. err)
		return
	end
	local w = pending[f.session]
	if not w then
		stats.stray = stats.stray + 1
		skynet.error(string.format("kktlua: rpc_response %s for session %d: nobody waits", f.name, f.session))
		return
	end
	pending[f.session] = nil
	w.frame = f
	skynet.wakeup(w.co)
end

-- ---- our own rpcs to bee's C++ ------------------------------------------------------

-- Wait (at most `cs` hundredths of a second) under key `key` of `pending`; returns what
-- the waker left in .frame, or nil on timeout.
local function wait(key, cs)
	local w = { co = coroutine.running() }
	pending[key] = w
	skynet.timeout(cs, function()
		if pending[key] == w then
			pending[key] = nil
			skynet.wakeup(w.co)
		end
	end)
	skynet.wait(w.co)
	return w.frame
end

-- Send an rpc request frame to `service` on `node` (sub_type 18, a session of ours),
-- as the team's C++ CServiceProxy pushes it: cluster.send(node, "@service", "text", frame).
local function rpc_send(node, service, uid, name, msg)
	next_session = next_session + 1
	local session = next_session
	local frame = assert(kkt.encode {
		remote_node = node, remote_service = service, source_node = NODE, source_service = SELF,
		sub_type = kkt.SUBTYPE_RPC_SERVER, uid = uid, name = name, roomid = 0, session = session,
		body = kkt.message(name, msg),
	})
	cluster.send(node, "@" .. service, "text", frame)
	return session
end

local function rpc_call(node, service, uid, name, msg)
	local session = rpc_send(node, service, uid, name, msg)
	local f = wait(session, 500)
	if not f then
		return nil, string.format("rpc %s (session %d) to %s/%s: no rpc_response within 5 s", name, session,
			node, service)
	end
	return f, session
end

-- The checks of a native (C++) reply frame: names swapped, sub_type 17, session.
local function native_reply_ok(f, session, node, service, name)
	if f.sub_type ~= kkt.SUBTYPE_RPC_CLIENT then
		return false, "sub_type " .. f.sub_type .. ", not 17"
	end
	if f.session ~= session then
		return false, string.format("session %d, not %d", f.session, session)
	end
	if f.remote_node ~= NODE or f.remote_service ~= SELF or f.source_node ~= node or f.source_service ~= service then
		return false, string.format("names %s/%s <- %s/%s, not swapped (%s/%s <- %s/%s)", f.remote_node,
			f.remote_service, f.source_node, f.source_service, NODE, SELF, node, service)
	end
	if f.name ~= name then
		return false, "message " .. f.name .. ", not " .. name
	end
	return true
end

local function check_shop(node, master)
	local lines = {}
	local function result(ok, what, why)
		lines[#lines + 1] = (ok and "PASS " or "FAIL ") .. what .. (ok and "" or (": " .. tostring(why)))
	end

	-- 1. rpc game.Ping to the C++ shop.
	do
		local what = "rpc game.Ping -> C++ shop, native reply matched by session"
		local f, session = rpc_call(node, master, 5, "game.Ping", { seq = 77 })
		if not f then
			result(false, what, session)
		else
			local ok, why = native_reply_ok(f, session, node, master, "game.Pong")
			local pong = ok and assert(kkt.open("game.Pong", f.body))
			if ok and (pong.seq ~= 77 or pong.served_by ~= node .. "/" .. master or f.uid ~= 5) then
				ok, why = false, string.format("Pong seq %d served_by %q uid %d", pong.seq, pong.served_by, f.uid)
			end
			result(ok, what, why)
		end
	end

	-- 2. rpc game.ShopBuy: a receipt for the order.
	local first_order
	do
		local what = "rpc game.ShopBuy -> C++ shop, game.ShopReceipt"
		local f, session = rpc_call(node, master, 1001, "game.ShopBuy", { uid = 1001, item_id = 12, count = 2 })
		if not f then
			result(false, what, session)
		else
			local ok, why = native_reply_ok(f, session, node, master, "game.ShopReceipt")
			local r = ok and assert(kkt.open("game.ShopReceipt", f.body))
			if ok and not (r.uid == 1001 and r.item_id == 12 and r.count == 2 and r.order_id >= 1
					and r.handled_by == node .. "/" .. master) then
				ok, why = false, string.format("receipt uid %d item %d count %d order %d by %q", r.uid, r.item_id,
					r.count, r.order_id, r.handled_by)
			end
			first_order = ok and r.order_id
			result(ok, what, why)
		end
	end

	-- 3. 20 rpcs in flight at once, each reply matched to its own session exactly once.
	do
		local what = "20 concurrent rpc game.ShopBuy, every reply matched by session"
		local n, done, errs, orders = 20, 0, {}, {}
		local me = coroutine.running()
		for i = 1, n do
			skynet.fork(function()
				local f, session = rpc_call(node, master, 2000 + i, "game.ShopBuy",
					{ uid = 2000 + i, item_id = i, count = 1 })
				if not f then
					errs[#errs + 1] = session
				else
					local ok, why = native_reply_ok(f, session, node, master, "game.ShopReceipt")
					local r = ok and assert(kkt.open("game.ShopReceipt", f.body))
					if ok and (r.uid ~= 2000 + i or r.item_id ~= i or f.uid ~= 2000 + i) then
						ok, why = false, string.format("session %d got the receipt of uid %d item %d", session, r.uid,
							r.item_id)
					end
					if ok then
						if orders[r.order_id] then
							ok, why = false, "order id " .. r.order_id .. " twice"
						end
						orders[r.order_id] = true
					end
					if not ok then
						errs[#errs + 1] = why
					end
				end
				done = done + 1
				if done == n then
					skynet.wakeup(me)
				end
			end)
		end
		skynet.wait(me)
		result(#errs == 0, what, errs[1])
	end

	-- 4. A one-way game.ShopBuy (sub_type 16, session 0): the receipt comes back one-way
	--    ("text", sub_type 16) to this service.
	do
		local what = "one-way game.ShopBuy -> C++ shop, one-way receipt back as \"text\""
		local before = #oneway
		local frame = assert(kkt.encode {
			remote_node = node, remote_service = master, source_node = NODE, source_service = SELF,
			sub_type = kkt.SUBTYPE_PROTOBUF, uid = 3001, name = "game.ShopBuy", session = 0,
			body = kkt.message("game.ShopBuy", { uid = 3001, item_id = 5, count = 3 }),
		})
		cluster.send(node, "@" .. master, "text", frame)
		if #oneway == before then
			wait("oneway", 500)
		end
		local f = oneway[before + 1]
		if not f then
			result(false, what, "no one-way frame within 5 s")
		else
			local r = kkt.open("game.ShopReceipt", f.body)
			local ok = f.sub_type == kkt.SUBTYPE_PROTOBUF and f.session == 0 and f.name == "game.ShopReceipt"
				and f.remote_node == NODE and f.remote_service == SELF and r and r.uid == 3001 and r.count == 3
				and (not first_order or r.order_id > first_order)
			result(ok, what, string.format("sub_type %d session %d %s to %s/%s", f.sub_type, f.session, f.name,
				f.remote_node, f.remote_service))
		end
	end

	-- 5. A malformed frame is dropped by the C++ side and the shop keeps answering.
	do
		local what = "a truncated frame is refused by the C++ side, which keeps answering"
		cluster.send(node, "@" .. master, "text", string.pack(">I2I2I2I2", 40, 0, 0, 0) .. "short")
		local f, session = rpc_call(node, master, 6, "game.Ping", { seq = 78 })
		local ok, why = f ~= nil, session
		if f then
			ok, why = native_reply_ok(f, session, node, master, "game.Pong")
		end
		result(ok, what, why)
	end
	return lines
end

skynet.start(function()
	skynet.dispatch("lua", function(session, _source, cmd, a, b)
		if cmd == "text" or cmd == "rpc_response" then
			if session ~= 0 then
				skynet.ret(skynet.pack(nil))	-- a call by mistake: answer, do not hang it
			end
			if cmd == "text" then
				on_text(a)
			else
				on_response(a)
			end
		elseif cmd == "check_shop" then
			skynet.ret(skynet.pack(check_shop(a, b)))
		elseif cmd == "stats" then
			skynet.ret(skynet.pack(stats))
		else
			error("kktlua: unknown command " .. tostring(cmd))
		end
	end)
end)
