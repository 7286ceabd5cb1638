-- "@sink": counts pushes (any content). A call "count" answers the number of pushes
-- received so far; any other call is an error.
local skynet = require "skynet"

local count = 0

skynet.start(function()
	skynet.dispatch("lua", function(session, _, cmd)
		if session == 0 then
			count = count + 1
		elseif cmd == "count" then
			skynet.ret(skynet.pack(count))
		else
			error("sink: unknown command " .. tostring(cmd))
		end
	end)
end)
