-- What STAT time and STAT cpu (`skynet.stat "time"`, `skynet.stat "cpu"`) say about the
-- CPU time a service spends in its callbacks, printed as facts that hold on any machine
-- rather than as the times themselves.
local skynet = require "skynet"

local function burn(n)
	local s = 0
	for i = 1, n do
		s = s + i
	end
	return s
end

skynet.start(function()
	local t0 = skynet.stat "time"
	burn(20000000)
	local t1 = skynet.stat "time"
	print("time", math.type(t0), math.type(t1))
	print("time grows within a callback", t1 > t0)
	skynet.timeout(0, function()
		local t2 = skynet.stat "time"
		local cpu = skynet.stat "cpu"
		print("cpu", math.type(cpu))
		print("cpu holds the earlier callback", cpu >= t1)
		print("time starts again in the next callback", t2 < t1)
		skynet.exit()
	end)
end)
