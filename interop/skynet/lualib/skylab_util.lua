-- Shared helpers for the client and bench services (loaded with require via luaservice dir).
local skynet = require "skynet"
require "skynet.manager"	-- skynet.abort

local M = {}

function M.out(...)
	io.write(table.concat(table.pack(...), " ", 1, select("#", ...)), "\n")
	io.stdout:flush()
end

function M.env(name, default)
	local v = os.getenv(name)
	if v == nil or v == "" then
		return default
	end
	return v
end

-- A watchdog: M.step(name, seconds) starts a step with a deadline; if the step is
-- still running when the deadline passes, a FAIL line is printed and the process aborts.
local cur_name, cur_deadline
function M.step(name, seconds)
	cur_name = name
	cur_deadline = skynet.now() + math.floor(seconds * 100)
end
function M.step_done()
	cur_deadline = nil
end
function M.start_watchdog(tag)
	skynet.fork(function()
		while true do
			skynet.sleep(20)
			if cur_deadline and skynet.now() > cur_deadline then
				M.out("FAIL " .. cur_name .. ": timed out (no answer)")
				M.out(tag .. " FAIL (timeout in step " .. cur_name .. ")")
				skynet.abort()
			end
		end
	end)
end

local function describe(v)
	if type(v) == "string" then
		if #v > 40 then
			return string.format("string(%d bytes)", #v)
		end
		return string.format("%q", v)
	elseif type(v) == "number" then
		return string.format("%s(%s)", math.type(v), tostring(v))
	end
	return tostring(v)
end
M.describe = describe

-- Deep equality that also distinguishes integer from float, keeps -0.0 apart from 0.0
-- and treats NaN as equal to NaN. Returns true or false, reason.
local function same(a, b, path)
	local ta, tb = type(a), type(b)
	if ta ~= tb then
		return false, string.format("%s: sent %s, got %s", path, describe(a), describe(b))
	end
	if ta == "number" then
		if math.type(a) ~= math.type(b) then
			return false, string.format("%s: sent %s, got %s", path, describe(a), describe(b))
		end
		if a ~= a then
			if b == b then
				return false, string.format("%s: sent NaN, got %s", path, describe(b))
			end
			return true
		end
		if a ~= b or (a == 0 and math.type(a) == "float" and 1 / a ~= 1 / b) then
			return false, string.format("%s: sent %s, got %s", path, describe(a), describe(b))
		end
		return true
	elseif ta == "table" then
		for k, v in pairs(a) do
			local ok, err = same(v, rawget(b, k), path .. "[" .. describe(k) .. "]")
			if not ok then
				return false, err
			end
		end
		for k in pairs(b) do
			if rawget(a, k) == nil then
				return false, string.format("%s: unexpected key %s", path, describe(k))
			end
		end
		return true
	elseif a ~= b then
		if ta == "string" then
			local i = 1
			while i <= #a and a:byte(i) == b:byte(i) do
				i = i + 1
			end
			return false, string.format("%s: string differs (sent %d bytes, got %d, first difference at byte %d)",
				path, #a, #b, i)
		end
		return false, string.format("%s: sent %s, got %s", path, describe(a), describe(b))
	end
	return true
end
M.same = same

function M.percentile(sorted, p)
	local n = #sorted
	if n == 0 then
		return 0
	end
	local i = math.max(1, math.min(n, math.ceil(n * p)))
	return sorted[i]
end

return M
