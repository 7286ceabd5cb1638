-- A watchdog of skynet's Lua gate (service/gate.lua): accepts every connection and
-- answers each 2-byte-length frame with "echo:" .. frame, framed the same way.
local skynet = require "skynet"
local socket = require "skynet.socket"

local gate
local CMD = {}
local SOCKET = {}

function SOCKET.open(fd, addr)
	skynet.error("gate open")
	skynet.call(gate, "lua", "accept", fd)
end

function SOCKET.close(fd)
	-- A peer's EOF only half-closes the socket (it stays writable): free it.
	socket.close_fd(fd)
	skynet.error("gate close")
end

function SOCKET.error(fd, msg)
	skynet.error("gate error " .. tostring(msg))
end

function SOCKET.warning(fd, size)
end

function SOCKET.data(fd, msg)
	socket.write(fd, string.pack(">s2", "echo:" .. msg))
end

function CMD.start(port)
	gate = skynet.newservice("gate")
	skynet.call(gate, "lua", "open", { address = "127.0.0.1", port = port, maxclient = 64, nodelay = true })
	skynet.error("lua gate listening")
end

skynet.start(function()
	skynet.dispatch("lua", function(session, source, cmd, subcmd, ...)
		if cmd == "socket" then
			SOCKET[subcmd](...)
		else
			skynet.ret(skynet.pack(CMD[cmd](subcmd, ...)))
		end
	end)
end)
