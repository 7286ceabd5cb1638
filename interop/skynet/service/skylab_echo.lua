-- "@echo": every call is answered with exactly the arguments it carried;
-- pushes (session 0) are counted and the count is logged once a second when it changed.
local skynet = require "skynet"

local pushes = 0
local logged = 0

skynet.start(function()
	skynet.dispatch("lua", function(session, _, ...)
		if session == 0 then
			pushes = pushes + 1
		else
			skynet.ret(skynet.pack(...))
		end
	end)
	skynet.fork(function()
		while true do
			skynet.sleep(100)
			if pushes ~= logged then
				logged = pushes
				skynet.error(string.format("echo: %d pushes received so far", pushes))
			end
		end
	end)
end)
