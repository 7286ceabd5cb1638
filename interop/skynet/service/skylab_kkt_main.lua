-- Node main for the frame checks: joins the cluster under the config's node_name
-- ($SKY_NODE), starts skylab_kkt (our Lua service speaking the game team's frame) and
-- registers it as "kktlua", then listens on the address the clustername file gives.
local skynet = require "skynet"
local cluster = require "skynet.cluster"

skynet.start(function()
	local name = assert(skynet.getenv "node_name", "node_name missing in config")
	cluster.reload { __nowaiting = true }	-- pushes to unknown nodes fail fast
	local kkt = skynet.newservice "skylab_kkt"
	cluster.register("kktlua", kkt)
	local addr, port = cluster.open(name)
	skynet.error(string.format("READY node=%s listen=%s:%s kktlua=:%08x", name, tostring(addr), tostring(port),
		kkt))
end)
