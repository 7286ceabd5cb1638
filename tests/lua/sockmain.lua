-- Starts the socket services a test asks for through the node's env (debug_port,
-- gate_port, cgate_port, redis_key, mysql_db), then logs "sockmain ready".
local skynet = require "skynet"

skynet.start(function()
	local dport = tonumber(skynet.getenv "debug_port")
	if dport then
		skynet.newservice("debug_console", "127.0.0.1", dport)
	end
	local gport = tonumber(skynet.getenv "gate_port")
	if gport then
		local wd = skynet.newservice("sockwatchdog")
		skynet.call(wd, "lua", "start", gport)
	end
	local cport = tonumber(skynet.getenv "cgate_port")
	if cport then
		skynet.newservice("cgatewatch", cport)
	end
	if skynet.getenv "redis_key" then
		skynet.newservice("sockredis")
	end
	if skynet.getenv "mysql_db" then
		skynet.newservice("sockmysql")
	end
	skynet.error("sockmain ready")
end)
