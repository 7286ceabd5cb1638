-- A Lua service that never registers a descriptor: the types another service of the
-- process registered are known here too (registration is per process).
local skynet = require "skynet"
local protobuf = require "protobuf"

skynet.start(function()
	skynet.dispatch("lua", function(_, _, name, bytes)
		skynet.ret(skynet.pack(protobuf.decode(name, bytes)))
	end)
end)
