-- A watchdog of skynet's C gate (cservice/gate.so, 2-byte headers): starts every
-- connection and answers each frame with "cecho:" .. frame.
local skynet = require "skynet"
local socket = require "skynet.socket"
require "skynet.manager" -- skynet.launch

local port = ...
local gate

skynet.register_protocol {
	name = "text",
	id = skynet.PTYPE_TEXT,
	pack = function(text) return text end,
	unpack = skynet.tostring,
}

skynet.start(function()
	skynet.dispatch("text", function(session, source, msg)
		local id, cmd, rest = msg:match("^(%d+) (%a+) ?(.*)$")
		if cmd == "open" then
			skynet.error("cgate open")
			skynet.send(gate, "text", "start " .. id)
		elseif cmd == "data" then
			socket.write(tonumber(id), string.pack(">s2", "cecho:" .. rest))
		elseif cmd == "close" then
			skynet.error("cgate close")
		end
	end)
	gate = skynet.launch("gate", string.format("S %s 127.0.0.1:%d 0 64", skynet.address(skynet.self()), port))
	skynet.error("c gate listening")
end)
