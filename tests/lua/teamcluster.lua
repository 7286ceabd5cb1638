-- A Lua service of a game team that copied skynet's cluster into its own framework:
-- the library is `require "bee_cluster"` and its services are `bee_clusterd`,
-- `bee_clusteragent`, `bee_clustersender` (and `bee_clusterproxy`). The copy itself is
-- made by the test that starts this service, from the stock tree it runs against.
-- Registered for the cluster as "teamecho"; opens the cluster listener named by the
-- env key `lua_node_name`.
--   "ping", ...                  -> "team-pong", ...
--   "callout", node, name, ...   -> true, replies...  | false, error text
--                                   cluster.call(node, name, ...)
--   "sendout", node, name, ...   -> true               (cluster.send)
--   "services"                   -> the launcher's service lines, sorted
--                                   ("snlua bee_clusterd", ...)
--   anything else, ...           -> "team", it, ...
-- Our own code, written against skynet's documented API.
local skynet = require "skynet"
local cluster = require "bee_cluster"

local function services()
	local list = skynet.call(".launcher", "lua", "LIST")
	local lines = {}
	for _, line in pairs(list) do
		lines[#lines + 1] = line
	end
	table.sort(lines)
	return table.unpack(lines)
end

skynet.start(function()
	skynet.dispatch("lua", function(session, _, cmd, ...)
		if session == 0 then
			return
		end
		if cmd == "ping" then
			skynet.ret(skynet.pack("team-pong", ...))
		elseif cmd == "callout" then
			skynet.ret(skynet.pack(pcall(cluster.call, ...)))
		elseif cmd == "sendout" then
			cluster.send(...)
			skynet.ret(skynet.pack(true))
		elseif cmd == "services" then
			skynet.ret(skynet.pack(services()))
		else
			skynet.ret(skynet.pack("team", cmd, ...))
		end
	end)
	cluster.register("teamecho")
	cluster.open(skynet.getenv "lua_node_name")
	skynet.error("team cluster open as " .. skynet.getenv "lua_node_name")
end)
