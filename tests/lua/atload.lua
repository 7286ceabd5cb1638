-- Started from the node config after skynet's bootstrap: uses the service manager
-- (`skynet.uniqueservice`) in its start function, without waiting for it first.
local skynet = require "skynet"

skynet.start(function()
	local ok, err = pcall(skynet.uniqueservice, "luaecho")
	skynet.error("uniqueservice from a config service:", ok, ok and "" or tostring(err))
end)
