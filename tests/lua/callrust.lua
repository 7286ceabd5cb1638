-- A start script: calls the node's Rust `echo` service and logs the answer.
local skynet = require "skynet"

skynet.start(function()
	local a, b = skynet.call(".echo", "lua", "from start", 7)
	skynet.error("rust echo answered", a, b)
end)
