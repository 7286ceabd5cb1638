-- Node main: joins the cluster under the name given by the config's node_name
-- ($SKY_NODE), registers "@echo", "@sink" and "@bee_config" and listens on the address the
-- clustername file gives for that name.
local skynet = require "skynet"
local cluster = require "skynet.cluster"

skynet.start(function()
	local name = assert(skynet.getenv "node_name", "node_name missing in config")
	cluster.reload { __nowaiting = true }	-- calls to unknown nodes fail fast
	local echo = skynet.newservice "skylab_echo"
	local sink = skynet.newservice "skylab_sink"
	cluster.register("echo", echo)
	cluster.register("sink", sink)
	-- bee's config lifecycle (bee status, bee config push): see bee_config.lua.
	cluster.register("bee_config", skynet.newservice("bee_config", name))
	-- lets a test drive this node's cluster library: see skylab_relay.lua.
	cluster.register("relay", skynet.newservice "skylab_relay")
	local addr, port = cluster.open(name)
	skynet.error(string.format("READY node=%s listen=%s:%s echo=:%08x sink=:%08x",
		name, tostring(addr), tostring(port), echo, sink))
end)
