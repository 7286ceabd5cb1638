-- relay: lets a bee test make a stock skynet node act, through skynet's own cluster
-- library, on other nodes of the cluster (bee or skynet). Registered as "@relay" by
-- skylab_main. Every request is ("lua", command, ...) or (command, ...):
--
--   "call", node, name, ...   -> true, replies...       | false, error text
--                                cluster.call(node, "@"..name, ...)
--   "send", node, name, ...   -> true                    (cluster.send)
--   "query", node, name       -> true, address           | false, error text
--   "register", name          -> address of a new echo service registered as name
--                                (skynet keeps one cluster name per address, so the
--                                relay cannot take a second name itself)
--   "loop", node, name, secs  -> {ok, failed, recovered, longest_ms, first_error}
--                                calls node's "@"..name with ("lua", "echo", i) for secs
--                                seconds, one after another; `recovered` is true when a
--                                call succeeded after one had failed.
-- Our own code, written against skynet's documented API.

local skynet = require "skynet"
local cluster = require "skynet.cluster"

local command = {}

function command.call(node, name, ...)
	return pcall(cluster.call, node, "@" .. name, ...)
end

function command.send(node, name, ...)
	cluster.send(node, "@" .. name, ...)
	return true
end

function command.query(node, name)
	return pcall(cluster.query, node, name)
end

function command.register(name)
	local echo = skynet.newservice "skylab_echo"
	cluster.register(name, echo)
	return echo
end

function command.loop(node, name, secs)
	local stats = { ok = 0, failed = 0, recovered = false, longest_ms = 0 }
	local deadline = skynet.now() + math.floor(secs * 100)
	local i = 0
	while skynet.now() < deadline do
		i = i + 1
		local started = skynet.now()
		local ok, err = pcall(cluster.call, node, "@" .. name, "lua", "echo", i)
		local ms = (skynet.now() - started) * 10
		if ms > stats.longest_ms then
			stats.longest_ms = ms
		end
		if ok then
			stats.ok = stats.ok + 1
			if stats.failed > 0 then
				stats.recovered = true
			end
		else
			stats.failed = stats.failed + 1
			stats.first_error = stats.first_error or tostring(err)
			skynet.sleep(5)	-- a failed call is retried after 50 ms
		end
	end
	return stats
end

skynet.start(function()
	skynet.dispatch("lua", function(session, _, ...)
		local args = table.pack(...)
		local first = args[1] == "lua" and 2 or 1
		local f = command[args[first]]
		if not f then
			error("relay: unknown command " .. tostring(args[first]) .. " (call, send, query, register, loop)")
		end
		if session ~= 0 then
			skynet.ret(skynet.pack(f(table.unpack(args, first + 1, args.n))))
		else
			f(table.unpack(args, first + 1, args.n))
		end
	end)
end)
