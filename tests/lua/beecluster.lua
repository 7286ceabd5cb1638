-- A Lua service using skynet's cluster library (skynet.cluster, unchanged) in a bee node
-- config: its clusterd and senders are bee's, so the calls go through bee's cluster.
-- Registered for the cluster as "luaecho"; opens the node's own listener by name.
--   "ping", ...                   -> "lua-pong", ...
--   "callout", node, name, ...    -> true, replies... | false, error text (cluster.call)
--   "timed", node, name           -> ok, centiseconds the cluster.call took
--   "sendout", node, name, ...    -> true            (cluster.send)
--   "query", node, name           -> pcall(cluster.query, node, name)
--   "proxycall", node, name, ...  -> pcall(skynet.call, cluster.proxy(node, name), "lua", ...)
--   "open", name                  -> pcall(cluster.open, name)
--   "reload", node, addr          -> pcall(cluster.reload, { [node] = addr })
--   anything else, ...            -> "lua", it, ...
-- Our own code, written against skynet's documented API.
local skynet = require "skynet"
local cluster = require "skynet.cluster"

local command = {}

function command.ping(...)
	return "lua-pong", ...
end

function command.callout(...)
	return pcall(cluster.call, ...)
end

function command.timed(node, name)
	local t0 = skynet.now()
	local ok = pcall(cluster.call, node, name, "x")
	return ok, skynet.now() - t0
end

function command.sendout(...)
	cluster.send(...)
	return true
end

function command.query(node, name)
	return pcall(cluster.query, node, name)
end

function command.proxycall(node, name, ...)
	local p = cluster.proxy(node, name)
	return pcall(skynet.call, p, "lua", ...)
end

function command.open(name)
	return pcall(cluster.open, name)
end

function command.reload(node, addr)
	return pcall(cluster.reload, { [node] = addr })
end

skynet.start(function()
	skynet.dispatch("lua", function(session, _, cmd, ...)
		if session == 0 then
			return
		end
		local f = command[cmd]
		if f then
			skynet.ret(skynet.pack(f(...)))
		else
			skynet.ret(skynet.pack("lua", cmd, ...))
		end
	end)
	cluster.register("luaecho")
	local me = skynet.getenv "lua_node_name"
	local host, port = cluster.open(me)
	skynet.error(string.format("cluster open as %s (%s:%s)", me, host, port))
end)
