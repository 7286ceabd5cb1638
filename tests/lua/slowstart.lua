-- Sets its dispatch only at the end of a slow start function (half a second of
-- skynet.sleep). A caller that reached it before its start function returned would get
-- skynet.lua's empty error; with the argument "raise" its start function fails instead.
local skynet = require "skynet"

local mode = ...

skynet.start(function()
	skynet.sleep(50)
	if mode == "raise" then
		error("slowstart raised on purpose")
	end
	skynet.dispatch("lua", function(_, _, cmd)
		skynet.ret(skynet.pack("started:" .. tostring(cmd)))
	end)
end)
