-- Bursts of messages to a service that is already busy (it says so through the env) and
-- stays busy until the burst is all queued, so the queue lengths of the kernel's
-- `May overload` warning do not depend on timing:
-- 3000 waiting (past 1024 and 2048: one warning, then nothing until 4096), then, once
-- the queue was found empty (back to 1024), 1200 (one warning), then 600 (none).
local skynet = require "skynet"

local mode = ...

if mode == "slave" then

local CMD = {}

-- Say so under `key`, then stay busy, without yielding, until `n` messages wait behind
-- this one (at most 10 s).
function CMD.hold(n, key)
	skynet.setenv(key, "holding")
	local t0 = skynet.hpc()
	while skynet.stat "mqlen" < n do
		if skynet.hpc() - t0 > 10 * 1000000000 then
			skynet.error("hold: gave up waiting for", n, "messages")
			return
		end
	end
end

function CMD.blackhole()
end

function CMD.mark(n)
	skynet.error("drained", n)
	skynet.ret(skynet.pack(n))
end

skynet.start(function()
	skynet.dispatch("lua", function(_, _, cmd, ...)
		CMD[cmd](...)
	end)
end)

else

skynet.start(function()
	local slave = skynet.newservice(SERVICE_NAME, "slave")
	for _, n in ipairs { 3000, 1200, 600 } do
		local key = "overloadburst_" .. n
		skynet.send(slave, "lua", "hold", n + 1, key)
		for _ = 1, 1000 do
			if skynet.getenv(key) then
				break
			end
			skynet.sleep(1)
		end
		for _ = 1, n do
			skynet.send(slave, "lua", "blackhole")
		end
		skynet.call(slave, "lua", "mark", n)
		-- Let the slave sit idle, so the kernel finds its queue empty (skynet looks
		-- again only when a worker comes back to the queue: right after the answer,
		-- the next burst could already be there).
		skynet.sleep(10)
	end
	skynet.error("bursts done")
end)

end
