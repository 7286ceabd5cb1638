-- Answers ("ping", x) with x: the callee of bee-bench's Lua call benchmarks.
-- Our own code, written against skynet's documented API.
local skynet = require "skynet"

skynet.start(function()
	skynet.dispatch("lua", function(_, _, _, x)
		skynet.ret(skynet.pack(x))
	end)
end)
