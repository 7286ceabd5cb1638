-- A Lua service using skynet's own cluster library (skynet.cluster: clusterd,
-- clustersender, clusteragent and the gate, all skynet's Lua) on a bee node.
-- Registered for the cluster as "luaecho"; opens the cluster listener named by the
-- env key `lua_node_name`.
--   "ping", ...                  -> "lua-pong", ...
--   "callout", node, name, ...   -> true, replies...  | false, error text
--                                   cluster.call(node, name, ...)
--   "sendout", node, name, ...   -> true               (cluster.send)
--   anything else, ...           -> "lua", it, ...
-- Our own code, written against skynet's documented API.
local skynet = require "skynet"
local cluster = require "skynet.cluster"

skynet.start(function()
	skynet.dispatch("lua", function(session, _, cmd, ...)
		if session == 0 then
			return
		end
		if cmd == "ping" then
			skynet.ret(skynet.pack("lua-pong", ...))
		elseif cmd == "callout" then
			skynet.ret(skynet.pack(pcall(cluster.call, ...)))
		elseif cmd == "sendout" then
			cluster.send(...)
			skynet.ret(skynet.pack(true))
		else
			skynet.ret(skynet.pack("lua", cmd, ...))
		end
	end)
	cluster.register("luaecho")
	cluster.open(skynet.getenv "lua_node_name")
	skynet.error("cluster open as " .. skynet.getenv "lua_node_name")
end)
