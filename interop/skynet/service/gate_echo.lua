-- The gate echo benchmark's server: a Lua service on skynet's gateserver
-- (`snax.gateserver`, the library under skynet's `gate` service). Every client frame
-- (2-byte big-endian length + payload, netpack framing) is sent back as it came.
-- The same file runs on stock skynet and on bee (`bee run` of the same config).
-- Our own code, written against skynet's documented API.
local skynet = require "skynet"
local gateserver = require "snax.gateserver"
local netpack = require "skynet.netpack"
local socketdriver = require "skynet.socketdriver"

local handler = {}

function handler.connect(fd)
	gateserver.openclient(fd)
end

function handler.message(fd, msg, sz)
	-- tostring copies and frees the gate's block; pack adds the 2-byte header.
	socketdriver.send(fd, netpack.pack(netpack.tostring(msg, sz)))
end

function handler.disconnect(fd)
	-- The peer closed: close our side too (gateserver only stops reading).
	gateserver.closeclient(fd)
end

function handler.error(fd)
	gateserver.closeclient(fd)
end

gateserver.start(handler)
