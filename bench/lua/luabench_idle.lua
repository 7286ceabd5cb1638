-- An idle Lua service: started 1,000 times by bee-bench's memory benchmark.
-- Our own code, written against skynet's documented API.
local skynet = require "skynet"

skynet.start(function()
	skynet.dispatch("lua", function()
		skynet.ret()
	end)
end)
