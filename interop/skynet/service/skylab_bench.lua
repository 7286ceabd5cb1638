-- Reference benchmark client: measures node $SKY_TARGET's "@echo" and "@sink" through
-- stock skynet's cluster module and prints one line "BENCH {json}" (or "BENCH FAIL ...").
--   B2  call latency, one call in flight: p50/p99/mean in microseconds over B2_CALLS calls
--   B3  call throughput with B3_INFLIGHT coroutines in flight for B3_SECONDS
--   B4  push throughput: B4_PUSHES pushes of a 64-byte string to "@sink", counted there
--   B5  1 MiB echo, one in flight, for B5_SECONDS: MiB/s of payload (one direction)
local skynet = require "skynet"
require "skynet.manager"	-- skynet.abort
local cluster = require "skynet.cluster"
local util = require "skylab_util"

local out, env = util.out, util.env

local target = env("SKY_TARGET")
local echo_name = env("SKY_ECHO", "@echo")
local sink_name = env("SKY_SINK", "@sink")
local B2_CALLS = tonumber(env("B2_CALLS", "20000"))
local B3_SECONDS = tonumber(env("B3_SECONDS", "5"))
local B3_INFLIGHT = tonumber(env("B3_INFLIGHT", "64"))
local B4_PUSHES = tonumber(env("B4_PUSHES", "500000"))
local B5_SECONDS = tonumber(env("B5_SECONDS", "5"))

local hpc = skynet.hpc
local result = {}
local order = {}
local function put(k, v)
	if result[k] == nil then
		order[#order + 1] = k
	end
	result[k] = v
end

local function bail(why)
	out("BENCH FAIL " .. why)
	skynet.abort()
end

local function call_echo(...)
	return cluster.call(target, echo_name, ...)
end

local function b2()
	util.step("B2 warm-up", 60)
	for i = 1, 1000 do
		assert(call_echo("ping", i) == "ping")
	end
	util.step("B2", 300)
	local lat = {}
	local errors = 0
	local t_all = hpc()
	for i = 1, B2_CALLS do
		local t0 = hpc()
		local a, b = call_echo("ping", i)
		lat[i] = hpc() - t0
		if a ~= "ping" or b ~= i then
			errors = errors + 1
		end
	end
	local total = hpc() - t_all
	util.step_done()
	table.sort(lat)
	put("b2_calls", B2_CALLS)
	put("b2_p50_us", util.percentile(lat, 0.50) / 1e3)
	put("b2_p99_us", util.percentile(lat, 0.99) / 1e3)
	put("b2_mean_us", total / B2_CALLS / 1e3)
	put("b2_max_us", lat[#lat] / 1e3)
	put("b2_errors", errors)
	out(string.format("B2 latency 1 in flight: p50 %.1f us, p99 %.1f us, mean %.1f us, max %.1f us (%d calls, %d errors)",
		result.b2_p50_us, result.b2_p99_us, result.b2_mean_us, result.b2_max_us, B2_CALLS, errors))
end

local function b3()
	util.step("B3", B3_SECONDS + 60)
	local done, errors, running = 0, 0, B3_INFLIGHT
	local me = coroutine.running()
	local t0 = hpc()
	local stop = t0 + B3_SECONDS * 1e9
	for w = 1, B3_INFLIGHT do
		skynet.fork(function()
			local i = 0
			while hpc() < stop do
				i = i + 1
				local ok, a, b = pcall(call_echo, w, i)
				if ok and a == w and b == i then
					done = done + 1
				else
					errors = errors + 1
				end
			end
			running = running - 1
			if running == 0 then
				skynet.wakeup(me)
			end
		end)
	end
	skynet.wait(me)
	local secs = (hpc() - t0) / 1e9
	util.step_done()
	put("b3_inflight", B3_INFLIGHT)
	put("b3_calls", done)
	put("b3_seconds", secs)
	put("b3_calls_per_s", done / secs)
	put("b3_errors", errors)
	out(string.format("B3 throughput %d in flight: %.0f calls/s (%d calls in %.2f s, %d errors)",
		B3_INFLIGHT, result.b3_calls_per_s, done, secs, errors))
end

local function sink_count()
	local c = cluster.call(target, sink_name, "count")
	assert(math.type(c) == "integer", "sink count is not an integer")
	return c
end

local function b4()
	util.step("B4", 600)
	local payload = string.rep("x", 64)
	local base = sink_count()
	local t0 = hpc()
	for _ = 1, B4_PUSHES do
		cluster.send(target, sink_name, payload)
	end
	local t_sent = hpc()
	-- The first count call queues behind every push on the same connection.
	local got, t_last, last_change = 0, t_sent, skynet.now()
	while true do
		local c = sink_count() - base
		local now = hpc()
		if c ~= got then
			got, t_last, last_change = c, now, skynet.now()
		end
		if got >= B4_PUSHES or skynet.now() - last_change > 300 then
			break
		end
		skynet.sleep(1)
	end
	util.step_done()
	local secs = (t_last - t0) / 1e9
	put("b4_pushes", B4_PUSHES)
	put("b4_received", got)
	put("b4_lost", B4_PUSHES - got)
	put("b4_seconds", secs)
	put("b4_pushes_per_s", got / secs)
	put("b4_enqueue_seconds", (t_sent - t0) / 1e9)
	out(string.format("B4 pushes (64 B): %.0f pushes/s received (%d sent, %d counted, %d lost, %.2f s; enqueue took %.2f s)",
		result.b4_pushes_per_s, B4_PUSHES, got, B4_PUSHES - got, secs, result.b4_enqueue_seconds))
end

local function b5()
	util.step("B5", B5_SECONDS + 120)
	local mib = string.rep("0123456789abcdef", 65536)
	assert(#mib == 1048576)
	assert(call_echo(mib) == mib, "1 MiB echo differs")	-- warm-up and check
	local calls, errors = 0, 0
	local t0 = hpc()
	local stop = t0 + B5_SECONDS * 1e9
	while hpc() < stop do
		local r = call_echo(mib)
		if r == mib then
			calls = calls + 1
		else
			errors = errors + 1
		end
	end
	local secs = (hpc() - t0) / 1e9
	util.step_done()
	put("b5_calls", calls)
	put("b5_seconds", secs)
	put("b5_mib_per_s", calls / secs)
	put("b5_ms_per_call", secs * 1e3 / math.max(calls, 1))
	put("b5_errors", errors)
	out(string.format("B5 1 MiB echo: %.1f MiB/s one-way payload (%d calls in %.2f s, %.2f ms/call, %d errors)",
		result.b5_mib_per_s, calls, secs, result.b5_ms_per_call, errors))
end

local function json()
	local parts = {}
	for _, k in ipairs(order) do
		local v = result[k]
		local s
		if type(v) == "string" then
			s = string.format("%q", v)
		elseif math.type(v) == "integer" then
			s = tostring(v)
		else
			s = string.format("%.1f", v)
			if math.abs(v) < 100 then
				s = string.format("%.3f", v)
			end
		end
		parts[#parts + 1] = string.format("%q:%s", k, s)
	end
	return "{" .. table.concat(parts, ",") .. "}"
end

skynet.start(function()
	util.start_watchdog("BENCH")
	if not target then
		return bail("SKY_TARGET is not set")
	end
	cluster.reload { __nowaiting = true }
	put("client", "skynet-1.6.0")
	put("target", target)
	out(string.format("bench client (skynet v1.6.0, thread=%s) -> node %s", skynet.getenv("thread"), target))
	util.step("connect", 30)
	local up, why = pcall(call_echo, "hello")
	util.step_done()
	if not up or why ~= "hello" then
		return bail("cannot reach " .. target .. ": " .. tostring(why))
	end
	local ok, err = pcall(function()
		b2()
		b3()
		b4()
		b5()
	end)
	if not ok then
		return bail(tostring(err))
	end
	out("BENCH " .. json())
	skynet.abort()
end)
