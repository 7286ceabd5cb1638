-- A Lua service the integration tests call from Rust (over the cluster): each command
-- exercises one way Lua services meet other services in a bee node.
local skynet = require "skynet"

local CMD = {}

-- Lua -> Lua in the same node: a fresh `luaecho` service answers.
function CMD.call_lua(n)
	local echo = skynet.newservice("luaecho")
	local r = skynet.call(echo, "lua", "echo", n)
	skynet.send(echo, "lua", "exit")
	return r
end

-- Lua -> Rust: the node's Rust `echo` service, by its local name.
function CMD.call_rust(...)
	return skynet.call(".echo", "lua", ...)
end

-- A Lua error raised by another Lua service reaches this caller as skynet reports it.
function CMD.call_raise()
	local echo = skynet.uniqueservice("luaecho")
	local ok, err = pcall(skynet.call, echo, "lua", "raise")
	return ok, err
end

-- A Lua error in this handler: the caller gets an error.
function CMD.raise()
	error("raised on purpose")
end

-- Timers in 1/100 s ticks.
function CMD.sleep(ticks)
	local t0 = skynet.now()
	skynet.sleep(ticks)
	return skynet.now() - t0
end

skynet.start(function()
	skynet.dispatch("lua", function(_, _, cmd, ...)
		local f = assert(CMD[cmd], cmd)
		skynet.ret(skynet.pack(f(...)))
	end)
end)
