-- A start script that keeps its first message busy until the kernel reports it as a
-- possible endless loop (at most 30 s), then logs what skynet.endless() said.
local skynet = require "skynet"

skynet.start(function()
	local t0 = skynet.hpc()
	local seen = false
	while skynet.hpc() - t0 < 30 * 1000000000 do
		if skynet.endless() then
			seen = true
			break
		end
	end
	skynet.error("endless flag", seen, "then", skynet.endless())
	skynet.error(string.format("flag seen after %.2f s", (skynet.hpc() - t0) / 1e9))
end)
