-- bee_config: lets a stock skynet node take part in bee's cluster config lifecycle.
-- It answers the two requests `bee status` and `bee config push` send to "@bee_config"
-- (docs/config.md, "Pushing a config to running nodes"):
--
--   "config"                         -> one table {node, version, hash, applied_at_ms,
--                                       source, incarnation, uptime_ms}
--   "config_push", text, force, from -> "applied", version, hash, diff
--                                    or "rejected", reason, version, hash
--
-- Start it with the node's own name in the cluster config and register it:
--
--   local cfg = skynet.newservice("bee_config", "sky1")
--   cluster.register("bee_config", cfg)
--
-- A pushed text is the Lua (clustername) form; it is checked, then handed to
-- cluster.reload. Nodes the running config names and the new one does not are passed
-- as `false` (marked down), since skynet's reload merges. This service computes no
-- content hash (it answers ""); two configs under one version are told apart by their
-- content instead. Our own code, written against skynet's documented API.

local skynet = require "skynet"
local cluster = require "skynet.cluster"

local NODE = ...
assert(NODE and NODE ~= "", "bee_config needs the node's name: skynet.newservice(\"bee_config\", NAME)")

local MAX_TEXT = 4 * 1024 * 1024          -- the same limit as bee's
local MAX_STEPS = 1000000                 -- a config text is data: stop one that loops

local incarnation = math.floor(skynet.time() * 1000)
local running = {
	version = 0,
	nodes = {},          -- name -> "host:port" or false
	options = {},        -- "__key" -> value (without __version)
	applied_at_ms = incarnation,
	source = "local",
}

-- Run a config text in an empty environment; returns its table or nil, reason.
local function load_text(text, chunkname)
	if type(text) ~= "string" then
		return nil, "the config text must be a string"
	end
	if #text > MAX_TEXT then
		return nil, string.format("the cluster config is %d bytes, above the limit of %d", #text, MAX_TEXT)
	end
	local env = {}
	local chunk, err = load(text, chunkname, "t", env)
	if not chunk then
		return nil, err
	end
	debug.sethook(function() error("the config text runs too long (a loop?)", 2) end, "", MAX_STEPS)
	local ok, perr = pcall(chunk)
	debug.sethook()
	if not ok then
		return nil, tostring(perr)
	end
	return env
end

-- Check a loaded table; returns {version, nodes, options} or nil, reason.
local function check(tbl)
	local cfg = { version = 0, nodes = {}, options = {} }
	for key, value in pairs(tbl) do
		if type(key) ~= "string" then
			return nil, "a key that is not a name: " .. tostring(key)
		end
		if key == "__version" then
			if math.type(value) ~= "integer" or value < 0 then
				return nil, "`__version` must be a whole number from 0 up, e.g. `__version = 7`, found " .. tostring(value)
			end
			cfg.version = value
		elseif key:sub(1, 2) == "__" then
			cfg.options[key] = value
		elseif value == false then
			cfg.nodes[key] = false
		elseif type(value) == "string" then
			local host, port = value:match("^(.+):(%d+)$")
			if not host then
				return nil, string.format("node `%s`: %q has no `:port`; write \"host:port\", e.g. \"127.0.0.1:2528\"", key, value)
			end
			if tonumber(port) > 65535 then
				return nil, string.format("node `%s`: port `%s` is not a number from 0 to 65535", key, port)
			end
			cfg.nodes[key] = value
		else
			return nil, string.format("node `%s`: the value must be \"host:port\" or false, found a %s", key, type(value))
		end
	end
	return cfg
end

-- A text that is the same for the same content, whatever the order.
local function content(cfg)
	local lines = {}
	for name, addr in pairs(cfg.nodes) do
		lines[#lines + 1] = "N " .. name .. "=" .. tostring(addr)
	end
	for key, value in pairs(cfg.options) do
		lines[#lines + 1] = "O " .. key .. "=" .. tostring(value)
	end
	table.sort(lines)
	return table.concat(lines, "\n")
end

local function diff(old, new)
	local parts = {}
	local names = {}
	for name in pairs(old.nodes) do names[name] = true end
	for name in pairs(new.nodes) do names[name] = true end
	local sorted = {}
	for name in pairs(names) do sorted[#sorted + 1] = name end
	table.sort(sorted)
	for _, name in ipairs(sorted) do
		local a, b = old.nodes[name], new.nodes[name]
		if a == nil and b then
			parts[#parts + 1] = "added " .. name .. "=" .. b
		elseif b == nil then
			parts[#parts + 1] = "removed " .. name
		elseif a ~= b then
			if b == false then
				parts[#parts + 1] = "down " .. name
			elseif a == false then
				parts[#parts + 1] = "up " .. name .. "=" .. b
			else
				parts[#parts + 1] = "changed " .. name .. " " .. a .. "->" .. b
			end
		end
	end
	if old.version ~= new.version then
		parts[#parts + 1] = string.format("version %d->%d", old.version, new.version)
	end
	if #parts == 0 then
		return "no change"
	end
	return table.concat(parts, "; ")
end

local command = {}

function command.config()
	return {
		node = NODE,
		version = running.version,
		hash = "",
		applied_at_ms = running.applied_at_ms,
		source = running.source,
		incarnation = incarnation,
		uptime_ms = math.floor(skynet.now() * 10),  -- skynet.now() counts 1/100 s since start
	}
end

function command.config_push(text, force, from)
	local function rejected(reason)
		skynet.error("bee_config: pushed cluster config refused: " .. reason)
		return "rejected", reason, running.version, ""
	end
	local tbl, err = load_text(text, "=pushed config")
	if not tbl then
		return rejected(err)
	end
	local new, cerr = check(tbl)
	if not new then
		return rejected(cerr)
	end
	if not force then
		if new.version < running.version then
			return rejected(string.format(
				"config version %d is older than the running version %d: set `__version` (Lua form) or `version` (TOML form) above %d, or force it",
				new.version, running.version, running.version))
		end
		if new.version == running.version and new.version ~= 0 and content(new) ~= content(running) then
			return rejected(string.format(
				"config version %d has other content than the one this node runs under that version: bump the version, or force it",
				new.version))
		end
	end
	if running.nodes[NODE] ~= nil and new.nodes[NODE] == nil then
		return rejected(string.format(
			"the new config drops this node `%s`; a node does not apply a config without its own entry (write `%s = false` to mark it down, or stop the node first)",
			NODE, NODE))
	end
	local changes = diff(running, new)
	-- skynet's reload merges: nodes the new config leaves out are marked down.
	local reload = {}
	for key, value in pairs(tbl) do reload[key] = value end
	for name in pairs(running.nodes) do
		if new.nodes[name] == nil then reload[name] = false end
	end
	cluster.reload(reload)
	new.applied_at_ms = math.floor(skynet.time() * 1000)
	new.source = "push from " .. tostring(from or "?")
	running = new
	skynet.error(string.format("bee_config: cluster config version %d applied (%s)", new.version, changes))
	return "applied", running.version, "", changes
end

-- What the node read at start: its `cluster` setting's file, when it has one.
local function read_start_config()
	local path = skynet.getenv "cluster"
	if not path then
		return
	end
	local f = io.open(path, "r")
	if not f then
		return
	end
	local text = f:read "a"
	f:close()
	local tbl = load_text(text, "@" .. path)
	local cfg = tbl and check(tbl)
	if cfg then
		cfg.applied_at_ms = incarnation
		cfg.source = "file " .. path
		running = cfg
	else
		skynet.error("bee_config: cannot read " .. path .. "; reporting version 0")
	end
end

skynet.start(function()
	read_start_config()
	skynet.dispatch("lua", function(session, _, ...)
		-- bee sends ("lua", command, ...); the leading "lua" is optional.
		local args = table.pack(...)
		local first = args[1] == "lua" and 2 or 1
		local f = command[args[first]]
		if not f then
			error("bee_config: unknown command " .. tostring(args[first]) .. " (config, config_push)")
		end
		if session ~= 0 then
			skynet.ret(skynet.pack(f(table.unpack(args, first + 1, args.n))))
		end
	end)
end)
