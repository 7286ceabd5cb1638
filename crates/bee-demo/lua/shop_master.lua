-- The game team's shop master pattern as a Lua service (registered as "shop_master"):
-- at start it launches its C++ shops as the team does -- skynet.launch("shop", proxy
-- handle) with the node's CServiceProxy -- and then hands every "text" frame to shop
-- 1 + uid % n with skynet.redirect (the frame unchanged, the sender's source and
-- session kept); "rpc_response" frames go to the shop as responses with session 0.
--   "lua", "shops" -> the shops' handles
local skynet = require "skynet"
require "skynet.manager"
local kkt = require "kktframe"

skynet.register_protocol {
	name = "text",
	id = skynet.PTYPE_TEXT,
	pack = function(m) return m end,
	unpack = skynet.tostring,
}

local shops = {}

local function pick(uid)
	return shops[1 + uid % #shops]
end

skynet.start(function()
	local proxy = assert(skynet.localname ".CServiceProxy", "no CServiceProxy in this node")
	local n = tonumber(skynet.getenv "shop_count" or "2")
	for i = 1, n do
		shops[i] = assert(skynet.launch("shop", string.format("%d service=shop%d", proxy, i)),
			"launching the C++ shop failed")
	end
	skynet.dispatch("lua", function(session, source, sub_type, ...)
		if sub_type == "text" then
			local frame = ...
			local f = kkt.unpack(frame)
			skynet.redirect(pick(f.uid), source, "text", session, frame)
		elseif sub_type == "rpc_response" then
			local frame = ...
			local f = kkt.unpack(frame)
			skynet.redirect(pick(f.uid), source, "response", 0, frame)
		elseif sub_type == "lua" then
			local cmd = ...
			if cmd == "shops" then
				skynet.ret(skynet.pack(shops))
			else
				error("shop_master: no command " .. tostring(cmd))
			end
		else
			error("shop_master: unknown sub_type " .. tostring(sub_type))
		end
	end)
	skynet.error("shop_master ready with " .. #shops .. " shops")
end)
