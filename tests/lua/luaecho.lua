-- Answers `echo` with `echo:<value>`, raises on `raise`, stops on `exit`.
local skynet = require "skynet"

skynet.start(function()
	skynet.dispatch("lua", function(session, _, cmd, v)
		if cmd == "echo" then
			skynet.ret(skynet.pack("echo:" .. tostring(v)))
		elseif cmd == "raise" then
			error("luaecho raised")
		elseif cmd == "exit" then
			skynet.exit()
		end
	end)
end)
