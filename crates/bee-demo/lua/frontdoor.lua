-- The game's front door: players connect over TCP to skynet's unchanged gateserver
-- (snax.gateserver, 2-byte big-endian length before each packet). Each packet is one
-- game frame (kktframe: empty names, sub_type 16, the player's uid, the message name,
-- session = the player's request number, a protobuf body). The front door checks it,
-- forwards it into the cluster with cluster.call "text" to the persistence service of
-- the backend node, and pushes the reply back to that player as a reply frame (sub_type
-- 17, the request's uid and session, the backend's message name and body). A player's
-- requests are served one at a time, in order.
--
--   first packet      game.LoginReq{uid = frame uid} -> game.LoginResp; the connection
--                     is that player's from then on (code 0)
--   then              game.GetUserInfo{uid = own uid} -> game.UserInfo,
--                     game.Ping -> game.Pong
--
-- A connection is closed, with one log line, when it breaks a rule: a packet larger than
-- frontdoor_max_packet bytes, more than frontdoor_max_queued packets waiting, bytes that
-- are not a frame, a message before login or one the front door does not forward, another
-- player's uid, a failed backend call, a socket error. Idle
-- connections (nothing received for frontdoor_idle_ms, which also covers a peer that
-- vanished without closing) are closed by a sweep that logs one line per sweep.
--
-- Settings, from the node's [env]: frontdoor_port (required), frontdoor_address
-- ("127.0.0.1"), frontdoor_backend ("lpersistence_3"), frontdoor_maxclient (1024),
-- frontdoor_max_packet (4096 bytes), frontdoor_idle_ms (30000), frontdoor_max_queued
-- (256: a player's packets waiting for their turn; more closes the connection, so one
-- connection holds at most 256 x frontdoor_max_packet bytes).
-- "lua" commands: "stats" -> a table of counters.
local skynet = require "skynet"
local gateserver = require "snax.gateserver"
local netpack = require "skynet.netpack"
local socketdriver = require "skynet.socketdriver"
local protobuf = require "protobuf"
local kkt = require "kktframe"

local cluster -- skynet.cluster, once skynet's bootstrap has started service_mgr

local function env_number(key, default)
	local v = skynet.getenv(key)
	if v == nil then
		return default
	end
	return assert(tonumber(v), key .. " is not a number: " .. tostring(v))
end

local node_name = skynet.getenv "node" or "?"
local backend = skynet.getenv "frontdoor_backend" or "lpersistence_3"
local max_packet = env_number("frontdoor_max_packet", 4096)
local idle_ms = env_number("frontdoor_idle_ms", 30000)
local max_queued = env_number("frontdoor_max_queued", 256)

-- What a logged-in player may send, and what its body's uid must be.
local FORWARDED = {
	["game.GetUserInfo"] = function(m, uid) return m.uid == uid end,
	["game.Ping"] = function() return true end,
}

-- fd -> { addr, uid (after login), last (skynet.now() of its last packet), the packets
-- waiting (q[qh..qt]), busy (one is at the backend), closed (skynet.now() of the close) }
local players = {}
local stats = {
	connected = 0, -- connections accepted
	open = 0, -- connections being served now
	logins = 0,
	forwarded = 0, -- requests after login answered
	closed_bad = 0, -- closed for breaking a rule or a socket error (one line each)
	closed_idle = 0, -- closed by the idle sweep
	dropped_after_close = 0, -- packets already read from a connection it had closed
}
local backend_addr -- lpersistence's address on the backend node, found once

-- Stop serving fd: log why (nil: quietly) and close the socket. The entry stays, marked
-- closed, until the socket's CLOSE event (see forget): packets of it already read are
-- dropped without a line each.
local function close(fd, why)
	local p = players[fd]
	if not p or p.closed then
		return
	end
	p.closed = skynet.now()
	stats.open = stats.open - 1
	if why then
		stats.closed_bad = stats.closed_bad + 1
		skynet.error(string.format("frontdoor: closed fd %d (%s%s): %s", fd, p.addr,
			p.uid and (" uid " .. p.uid) or "", why))
	end
	socketdriver.close(fd)
end

-- The socket is gone (closed by either side, or failed): gateserver frees its entry.
local function forget(fd)
	local p = players[fd]
	if p and not p.closed then
		stats.open = stats.open - 1
		p.closed = skynet.now() -- its waiting packets are not served
	end
	players[fd] = nil
	gateserver.closeclient(fd)
end

local function push(fd, bytes)
	socketdriver.send(fd, string.pack(">s2", bytes))
end

local function call_backend(uid, name, body)
	if not backend_addr then
		backend_addr = cluster.query(backend, "lpersistence")
	end
	local frame = kkt.pack {
		remote_node = backend,
		remote_service = "lpersistence",
		source_node = node_name,
		source_service = "frontdoor",
		uid = uid,
		name = name,
		body = body,
	}
	local reply = kkt.unpack(cluster.call(backend, backend_addr, "text", frame))
	if reply.uid ~= uid then
		error(string.format("the backend answered for uid %d, not %d", reply.uid, uid))
	end
	return reply.name, reply.body
end

-- One packet of a player: a rule broken is an error whose text closes the connection.
local function serve(fd, p, bytes)
	local ok, f = pcall(kkt.unpack, bytes)
	if not ok then
		error(string.format("not a game frame (%s)", f), 0)
	end
	local m, err = protobuf.decode(f.name, f.body)
	if not m then
		error(string.format("%s: not a protobuf body (%s)", f.name, tostring(err)), 0)
	end
	if not p.uid then
		if f.name ~= "game.LoginReq" then
			error(f.name .. " before game.LoginReq", 0)
		end
		if m.uid ~= f.uid then
			error(string.format("game.LoginReq for uid %s in a frame of uid %d", tostring(m.uid), f.uid), 0)
		end
		p.uid = f.uid -- no second login while this one is at the backend
	elseif f.uid ~= p.uid then
		error(string.format("a frame of uid %d on uid %d's connection", f.uid, p.uid), 0)
	elseif f.name == "game.LoginReq" then
		error("a second game.LoginReq", 0)
	else
		local allowed = FORWARDED[f.name]
		if not allowed then
			error(f.name .. " is not forwarded to the backend", 0)
		end
		if not allowed(m, p.uid) then
			error(f.name .. " about another player", 0)
		end
	end
	local ok2, name, body = pcall(call_backend, f.uid, f.name, f.body)
	if not ok2 then
		backend_addr = nil -- found again on the next call
		error(string.format("%s to %s failed: %s", f.name, backend, tostring(name)), 0)
	end
	if f.name == "game.LoginReq" then
		local resp = protobuf.decode(name, body)
		if not resp or resp.code ~= 0 then
			error(string.format("login refused by %s (code %s)", backend, resp and tostring(resp.code) or "?"), 0)
		end
		stats.logins = stats.logins + 1
	else
		stats.forwarded = stats.forwarded + 1
	end
	if players[fd] == p and not p.closed then -- still connected
		push(fd, kkt.reply(f, name, body))
	end
end

-- Serve p's waiting packets one at a time, in the order they came: a player's requests
-- reach the backend in order. Runs in the coroutine of the packet that found p idle.
local function drain(fd, p)
	p.busy = true
	while p.qh <= p.qt and not p.closed do
		local bytes = p.q[p.qh]
		p.q[p.qh] = nil
		p.qh = p.qh + 1
		local ok, err = pcall(serve, fd, p, bytes)
		if not ok then
			close(fd, tostring(err))
		end
	end
	p.busy = false
end

local handler = { embed = true }

function handler.connect(fd, addr)
	players[fd] = { addr = addr, last = skynet.now(), q = {}, qh = 1, qt = 0 }
	stats.connected = stats.connected + 1
	stats.open = stats.open + 1
	gateserver.openclient(fd)
end

function handler.message(fd, msg, sz)
	local p = players[fd]
	if not p or p.closed then
		stats.dropped_after_close = stats.dropped_after_close + 1
		skynet.trash(msg, sz)
		return
	end
	p.last = skynet.now()
	if sz > max_packet then
		skynet.trash(msg, sz)
		close(fd, string.format("a packet of %d bytes (at most %d)", sz, max_packet))
		return
	end
	if p.qt - p.qh + 1 >= max_queued then
		skynet.trash(msg, sz)
		close(fd, string.format("more than %d packets waiting for their answers", max_queued))
		return
	end
	p.qt = p.qt + 1
	p.q[p.qt] = netpack.tostring(msg, sz)
	if not p.busy then
		drain(fd, p)
	end
end

function handler.disconnect(fd)
	-- The peer closed, or the front door did: free the socket, quietly.
	forget(fd)
end

function handler.error(fd, msg)
	-- bee's socket layer failed the socket (e.g. a player that does not read, at the
	-- send limit): one line, unless the front door had closed it already.
	local p = players[fd]
	if p and not p.closed then
		stats.closed_bad = stats.closed_bad + 1
		skynet.error(string.format("frontdoor: closed fd %d (%s%s): socket error: %s", fd, p.addr,
			p.uid and (" uid " .. p.uid) or "", tostring(msg)))
	end
	forget(fd)
end

function handler.warning(fd, size)
	-- The player reads slower than it asks; bee closes the socket at its send limit.
end

function handler.command(cmd, _, ...)
	if cmd == "lua" then -- a bee cluster client's call: "lua", command, ...
		cmd = ...
	end
	if cmd == "stats" then
		return stats
	end
	error("frontdoor: no command " .. tostring(cmd))
end

-- Close every connection idle for idle_ms; one line per sweep that closed any.
local function sweep_idle()
	local interval = math.max(1, math.min(100, idle_ms // 40)) -- centiseconds
	while true do
		skynet.sleep(interval)
		local now = skynet.now()
		local idle, gone = {}, {}
		for fd, p in pairs(players) do
			if p.closed then
				-- Closed by the front door but no CLOSE event in 10 s: free it anyway.
				if now - p.closed > 1000 then
					gone[#gone + 1] = fd
				end
			elseif (now - p.last) * 10 >= idle_ms then
				idle[#idle + 1] = fd
			end
		end
		for _, fd in ipairs(gone) do
			forget(fd)
		end
		for _, fd in ipairs(idle) do
			close(fd)
		end
		if #idle > 0 then
			stats.closed_idle = stats.closed_idle + #idle
			skynet.error(string.format("frontdoor: closed %d idle connection(s) (nothing received for %d ms)", #idle, idle_ms))
		end
	end
end

gateserver.start(handler)

skynet.start(function()
	for _ = 1, 500 do
		if skynet.localname ".service" then
			break
		end
		skynet.sleep(1)
	end
	cluster = require "skynet.cluster"
	protobuf.register_file(assert(skynet.getenv "pb_file", "no pb_file in the env"))
	local conf = {
		address = skynet.getenv "frontdoor_address" or "127.0.0.1",
		port = assert(tonumber(skynet.getenv "frontdoor_port"), "no frontdoor_port in the env"),
		maxclient = env_number("frontdoor_maxclient", 1024),
		nodelay = true,
	}
	-- gateserver's "open" is a "lua" command of this very service.
	skynet.call(skynet.self(), "lua", "open", conf)
	skynet.fork(sweep_idle)
	skynet.error(string.format("frontdoor listening on %s:%d (backend %s, packets up to %d bytes, idle after %d ms)",
		conf.address, conf.port, backend, max_packet, idle_ms))
end)
