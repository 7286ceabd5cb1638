-- Start script of the gate echo benchmark (`start = "gate_echo_main"`): one
-- `gate_echo` service listening on 127.0.0.1:`gate_port`, at most `gate_maxclient`
-- clients, TCP_NODELAY on; prints `GATE READY port` once it listens.
-- Our own code, written against skynet's documented API.
local skynet = require "skynet"

skynet.start(function()
	local port = assert(tonumber(skynet.getenv "gate_port"), "gate_port")
	local maxclient = assert(tonumber(skynet.getenv "gate_maxclient"), "gate_maxclient")
	local gate = skynet.newservice("gate_echo")
	skynet.call(gate, "lua", "open", {
		address = "127.0.0.1",
		port = port,
		maxclient = maxclient,
		nodelay = true,
	})
	skynet.error("GATE READY " .. port)
end)
