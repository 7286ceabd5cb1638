-- The start service of bee-bench's Lua benchmarks, run unchanged on stock skynet
-- (`skynet CONFIG`) and on bee (`bee run CONFIG`, or a bee node config). What it does is
-- the env key `luabench_mode`:
--   local   same-node skynet.call round trips to luabench_pong, 1 caller, then 64
--           forked callers (`luabench_calls` calls each run)
--   mem     start `luabench_services` idle services (luabench_idle); the driver reads
--           the process's memory at the two marks
--   server  register "pong" for the cluster and open the node's listener (its name:
--           `luabench_node`), then serve until killed
--   client  cluster.call round trips to "@pong" on node `luabench_peer`, 1 caller, then
--           64 forked callers
-- Results are printed as "LUABENCH key value" lines; "LUABENCH done" ends a run.
-- Our own code, written against skynet's documented API.
local skynet = require "skynet"

local PAYLOAD = "0123456789abcdef"

local function out(key, value)
	print(string.format("LUABENCH %s %s", key, tostring(value)))
end

local function seconds(t0)
	return (skynet.hpc() - t0) / 1e9
end

-- `calls` round trips by `callers` coroutines through `call_one`; calls per second.
local function measure(callers, calls, call_one)
	local per = calls // callers
	local left = callers
	local me = coroutine.running()
	local t0 = skynet.hpc()
	for _ = 1, callers do
		skynet.fork(function()
			for _ = 1, per do
				local r = call_one()
				if r ~= PAYLOAD then
					error("wrong reply: " .. tostring(r))
				end
			end
			left = left - 1
			if left == 0 then
				skynet.wakeup(me)
			end
		end)
	end
	skynet.wait(me)
	return per * callers / seconds(t0)
end

local function run_calls(prefix, call_one)
	local calls = tonumber(skynet.getenv "luabench_calls") or 100000
	measure(1, calls // 10, call_one) -- warm-up
	out(prefix .. "_1", string.format("%.0f", measure(1, calls, call_one)))
	out(prefix .. "_64", string.format("%.0f", measure(64, calls, call_one)))
end

local mode = skynet.getenv "luabench_mode"

skynet.start(function()
	if mode == "local" then
		local pong = skynet.newservice("luabench_pong")
		run_calls("local", function()
			return skynet.call(pong, "lua", "ping", PAYLOAD)
		end)
	elseif mode == "mem" then
		local n = tonumber(skynet.getenv "luabench_services") or 1000
		collectgarbage()
		skynet.sleep(100)
		out("mem_base", n)
		skynet.sleep(100)
		for _ = 1, n do
			skynet.newservice("luabench_idle")
		end
		collectgarbage()
		skynet.sleep(100)
		out("mem_after", n)
		skynet.sleep(100)
	elseif mode == "server" then
		local cluster = require "skynet.cluster"
		local pong = skynet.newservice("luabench_pong")
		cluster.register("pong", pong)
		cluster.open(skynet.getenv "luabench_node")
		out("listening", skynet.getenv "luabench_node")
		return
	elseif mode == "client" then
		local cluster = require "skynet.cluster"
		local peer = skynet.getenv "luabench_peer"
		for _ = 1, 200 do
			if pcall(cluster.call, peer, "@pong", "ping", PAYLOAD) then
				break
			end
			skynet.sleep(5)
		end
		run_calls("cluster", function()
			return cluster.call(peer, "@pong", "ping", PAYLOAD)
		end)
	else
		out("error", "unknown luabench_mode " .. tostring(mode))
	end
	out("done", mode)
	skynet.abort()
end)
