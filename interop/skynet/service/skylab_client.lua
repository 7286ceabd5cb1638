-- Interop client: exercises "@echo" and "@sink" on node $SKY_TARGET with cluster.call,
-- cluster.send, cluster.query and calls to a name that does not exist. Prints one
-- "PASS <case>" or "FAIL <case>: <reason>" line per case, "OPT ..." lines for optional
-- cases (not counted) and a final "RESULT PASS n/n" or "RESULT FAIL k/n failed", then
-- ends the process with skynet.abort().
--
-- Environment: SKY_TARGET (node name, required), SKY_PUSHES (default 10000),
-- SKY_ECHO (default "@echo"), SKY_SINK (default "@sink"), SKY_STEP_TIMEOUT (s, default 30).
local skynet = require "skynet"
require "skynet.manager"	-- skynet.abort
local cluster = require "skynet.cluster"
local util = require "skylab_util"

local out, same, describe = util.out, util.same, util.describe

local target = util.env("SKY_TARGET")
local pushes = tonumber(util.env("SKY_PUSHES", "10000"))
local echo_name = util.env("SKY_ECHO", "@echo")
local sink_name = util.env("SKY_SINK", "@sink")
local step_timeout = tonumber(util.env("SKY_STEP_TIMEOUT", "30"))

local passed, failed = 0, 0
local failures = {}

local function pass(name, extra)
	passed = passed + 1
	out("PASS " .. name .. (extra and ("  (" .. extra .. ")") or ""))
end

local function fail(name, why)
	failed = failed + 1
	table.insert(failures, name)
	out("FAIL " .. name .. ": " .. tostring(why))
end

-- Call @echo with the given values and check that exactly those values come back.
local function echo_case(name, ...)
	local sent = table.pack(...)
	util.step("echo " .. name, step_timeout)
	local t0 = skynet.hpc()
	local r = table.pack(pcall(cluster.call, target, echo_name, ...))
	local ms = (skynet.hpc() - t0) / 1e6
	util.step_done()
	if not r[1] then
		return fail("echo " .. name, "call raised: " .. tostring(r[2]))
	end
	local got_n = r.n - 1
	if got_n ~= sent.n then
		return fail("echo " .. name, string.format("sent %d values, got %d back", sent.n, got_n))
	end
	for i = 1, sent.n do
		local ok, why = same(sent[i], r[i + 1], "arg" .. i)
		if not ok then
			return fail("echo " .. name, why)
		end
	end
	pass("echo " .. name, ms >= 5 and string.format("%.1f ms", ms) or nil)
end

local function bytes_all()
	local t = {}
	for i = 0, 255 do
		t[#t + 1] = string.char(i)
	end
	return table.concat(t)
end

-- depth nested tables; every table but the innermost holds { level = i, child = ... }.
-- skynet packs at most 32 levels of table *contents*: the 33rd table must be empty.
local function nested(depth, inner_empty)
	local root = { level = 1 }
	local cur = root
	for i = 2, depth do
		local n = (inner_empty and i == depth) and {} or { level = i }
		cur.child = n
		cur = n
	end
	return root
end

local function array(n, f)
	local t = {}
	for i = 1, n do
		t[i] = f(i)
	end
	return t
end

local function run_echo_cases()
	echo_case("no arguments")
	echo_case("nil", nil)
	echo_case("true", true)
	echo_case("false", false)
	local ints = {
		0, 1, -1, 127, 128, 255, 256, -128, -129, -255, -256, 32767, 32768, 65535, 65536,
		-32768, -32769, -65536, 2147483647, 2147483648, -2147483648, -2147483649,
		4294967295, 4294967296, -4294967296, 1 << 53, math.maxinteger, math.mininteger,
		math.maxinteger - 1, math.mininteger + 1,
	}
	for _, v in ipairs(ints) do
		echo_case("integer " .. tostring(v), v)
	end
	echo_case("all integers at once", table.unpack(ints))
	local reals = {
		0.0, -0.0, 1.0, -1.0, 0.5, -1.25, math.pi, 1e-300, 4.9e-324, 1e308, -1e308,
		2.0 ^ 53, 2.0 ^ 63, -(2.0 ^ 63), 255.0, 65536.0, math.huge, -math.huge,
	}
	for _, v in ipairs(reals) do
		echo_case(string.format("real %.17g", v), v)
	end
	echo_case("real NaN", 0 / 0)
	local strings = {
		{ "empty", "" },
		{ "1 byte", "a" },
		{ "31 bytes", string.rep("s", 31) },
		{ "32 bytes", string.rep("l", 32) },
		{ "255 bytes", string.rep("x", 255) },
		{ "256 bytes", string.rep("y", 256) },
		{ "65535 bytes", string.rep("z", 65535) },
		{ "65536 bytes", string.rep("w", 65536) },
		{ "every byte value 0..255", bytes_all() },
		{ "utf8 text", "héllo wörld ✓ 日本語" },
		{ "embedded NULs", "a\0b\0\0c" },
		{ "1 MiB", string.rep(bytes_all(), 4096) },
		{ "8 MiB", string.rep("0123456789abcdef", 8 * 65536) },
	}
	for _, s in ipairs(strings) do
		echo_case("string " .. s[1], s[2])
	end
	echo_case("table empty", {})
	echo_case("table array 10", array(10, function(i) return i * 3 end))
	echo_case("table array 30", array(30, function(i) return i end))
	echo_case("table array 31", array(31, function(i) return i end))
	echo_case("table array 1000 mixed values", array(1000, function(i)
		local k = i % 5
		if k == 0 then return i elseif k == 1 then return -i * 1.5 elseif k == 2 then return "s" .. i
		elseif k == 3 then return i % 2 == 0 else return { i } end
	end))
	echo_case("table array 70000", array(70000, function(i) return i end))
	echo_case("table hash", { a = 1, b = "two", c = 3.5, d = false, e = { f = "g" } })
	echo_case("table mixed", {
		1, 2, "three", x = "y", [100] = "hundred", [-1] = "minus", [0] = "zero",
		[1.5] = "real key", [true] = "true key", [false] = 0, [math.maxinteger] = "max",
	})
	echo_case("table nested depth 32 (innermost non-empty)", nested(32))
	echo_case("table nested depth 33 (innermost empty)", nested(33, true))
	echo_case("table of tables", {
		players = { { uid = 1001, name = "a", hp = 99.5 }, { uid = 1002, name = "b", hp = 0.0 } },
		meta = { version = 3, tags = { "x", "y" }, flags = { [1] = true, [2] = false } },
	})
	echo_case("table with 100 KiB string", { blob = string.rep("B", 102400), n = 1 })
	echo_case("several arguments", 1, "two", 3.0, true, false, { x = 1 }, math.mininteger)
	echo_case("nil in the middle", 1, nil, 3)
	echo_case("trailing nils", "x", nil, nil)
	echo_case("only nils", nil, nil, nil)
	echo_case("200 arguments", table.unpack(array(200, function(i) return i end)))
end

local function run_push_case()
	local name = string.format("push %d then count", pushes)
	util.step("sink count (before pushes)", step_timeout)
	local ok, before = pcall(cluster.call, target, sink_name, "count")
	util.step_done()
	if not ok or math.type(before) ~= "integer" then
		return fail(name, "sink count before pushes: " .. describe(before))
	end
	local t0 = skynet.hpc()
	for i = 1, pushes do
		cluster.send(target, sink_name, "push", i, string.rep("p", i % 64))
	end
	-- cluster.send is also checked through @echo (echo counts pushes, answers nothing).
	cluster.send(target, echo_name, "push to echo")
	-- The count call travels on the same connection after the pushes; a node that
	-- delivers pushes in order answers with all of them counted. Poll briefly in case
	-- a receiver delivers asynchronously.
	util.step("sink count (after pushes)", step_timeout)
	local got, first, polls = nil, nil, 0
	local deadline = skynet.now() + 500
	repeat
		local ok2, c = pcall(cluster.call, target, sink_name, "count")
		if not ok2 then
			util.step_done()
			return fail(name, "sink count after pushes raised: " .. tostring(c))
		end
		polls = polls + 1
		got = c - before
		first = first or got
		if got >= pushes then
			break
		end
		skynet.sleep(5)
	until skynet.now() > deadline
	util.step_done()
	local ms = (skynet.hpc() - t0) / 1e6
	if got == pushes then
		pass(name, string.format("%.0f ms, first count %d, polls %d", ms, first, polls))
	else
		fail(name, string.format("sent %d pushes, sink counted %d (first answer %d)", pushes, got, first))
	end
end

local function run_query_cases()
	util.step("query echo", step_timeout)
	local ok, addr = pcall(cluster.query, target, echo_name:sub(2))
	util.step_done()
	if ok and math.type(addr) == "integer" and addr ~= 0 then
		pass("query " .. echo_name:sub(2), string.format("address :%08x", addr))
		util.step("call by queried address", step_timeout)
		local ok2, a, b, c = pcall(cluster.call, target, addr, "by-address", 42, 2.5)
		util.step_done()
		if ok2 and a == "by-address" and math.type(b) == "integer" and b == 42 and c == 2.5 then
			pass("call echo by queried numeric address")
		else
			fail("call echo by queried numeric address", ok2 and ("got " .. describe(a)) or a)
		end
	else
		fail("query " .. echo_name:sub(2), ok and ("got " .. describe(addr)) or addr)
	end
	util.step("query sink", step_timeout)
	ok, addr = pcall(cluster.query, target, sink_name:sub(2))
	util.step_done()
	if ok and math.type(addr) == "integer" and addr ~= 0 then
		pass("query " .. sink_name:sub(2), string.format("address :%08x", addr))
	else
		fail("query " .. sink_name:sub(2), ok and ("got " .. describe(addr)) or addr)
	end
	util.step("query unknown name", step_timeout)
	local ok3, err = pcall(cluster.query, target, "no_such_service_xyz")
	util.step_done()
	if ok3 then
		fail("query unknown name", "expected an error, got " .. describe(err))
	else
		pass("query unknown name raises", tostring(err):gsub("\n.*", ""))
	end
end

local function run_error_cases()
	util.step("call unknown name", step_timeout)
	local ok, err = pcall(cluster.call, target, "@no_such_service_xyz", "hello")
	util.step_done()
	if ok then
		fail("call unknown name", "expected an error, got " .. describe(err))
	else
		pass("call unknown name raises", tostring(err):gsub("\n.*", ""))
	end
	-- Unknown name as a push: must be dropped without breaking the connection.
	cluster.send(target, "@no_such_service_xyz", "dropped")
	util.step("call after push to unknown name", step_timeout)
	local ok2, v = pcall(cluster.call, target, echo_name, "still alive")
	util.step_done()
	if ok2 and v == "still alive" then
		pass("connection survives push to unknown name")
	else
		fail("connection survives push to unknown name", ok2 and describe(v) or v)
	end
	util.step("call sink unknown command", step_timeout)
	local ok3, err3 = pcall(cluster.call, target, sink_name, "no_such_command")
	util.step_done()
	if ok3 then
		fail("remote handler error propagates", "expected an error, got " .. describe(err3))
	else
		pass("remote handler error propagates", tostring(err3):gsub("\n.*", ""))
	end
end

local function run_concurrent_case()
	local n, done, bad = 200, 0, nil
	local co = coroutine.running()
	util.step("200 concurrent calls", step_timeout)
	for i = 1, n do
		skynet.fork(function()
			local ok, a, b = pcall(cluster.call, target, echo_name, i, string.rep("c", i))
			if not (ok and a == i and b == string.rep("c", i)) then
				bad = bad or string.format("call %d got %s", i, ok and describe(a) or tostring(a))
			end
			done = done + 1
			if done == n then
				skynet.wakeup(co)
			end
		end)
	end
	skynet.wait(co)
	util.step_done()
	if bad then
		fail("200 concurrent calls matched to their replies", bad)
	else
		pass("200 concurrent calls matched to their replies")
	end
end

local function run_optional_cases()
	-- Light userdata is a raw pointer; skynet passes its 8 bytes through. A bee node may
	-- reject it instead (spec allows either) - reported, not counted.
	local msg, sz = skynet.pack("x")
	util.step("optional lightuserdata", step_timeout)
	local ok, v = pcall(cluster.call, target, echo_name, msg)
	util.step_done()
	skynet.trash(msg, sz)
	if ok then
		out("OPT lightuserdata echo: returned " .. describe(v) .. (v == msg and " (same pointer)" or " (DIFFERENT)"))
	else
		out("OPT lightuserdata echo: raised " .. tostring(v):gsub("\n.*", ""))
	end
end

skynet.start(function()
	util.start_watchdog("RESULT")
	if not target then
		out("FAIL setup: SKY_TARGET is not set")
		out("RESULT FAIL (setup)")
		return skynet.abort()
	end
	cluster.reload { __nowaiting = true }
	out(string.format("interop client -> node %s (%s, %s), %d pushes", target, echo_name, sink_name, pushes))
	-- The very first operation is a push: stock skynet queues pushes sent before the
	-- connection exists and flushes them in order once it is up.
	cluster.send(target, echo_name, "first push, before any call")
	util.step("connect", step_timeout)
	local up, why = pcall(cluster.call, target, echo_name, "hello")
	util.step_done()
	if not up or why ~= "hello" then
		fail("connect to " .. target, up and ("echo answered " .. describe(why)) or why)
		out("RESULT FAIL (cannot reach node " .. target .. ")")
		return skynet.abort()
	end
	pass("connect to " .. target)
	local ok, err = pcall(function()
		run_echo_cases()
		run_push_case()
		run_query_cases()
		run_error_cases()
		run_concurrent_case()
		run_optional_cases()
	end)
	if not ok then
		fail("client script", err)
	end
	if failed == 0 then
		out(string.format("RESULT PASS %d/%d", passed, passed))
	else
		out(string.format("RESULT FAIL %d/%d failed: %s", failed, passed + failed, table.concat(failures, "; ")))
	end
	skynet.abort()
end)
