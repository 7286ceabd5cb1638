-- The cluster config, in skynet's clustername form: node name = "host:port".
-- (`name = false` marks a node as down; `__nowaiting = true` makes calls to a node
-- missing from this file fail at once instead of waiting for a reload.)
__nowaiting = true
alpha = "127.0.0.1:7701"
beta = "127.0.0.1:7702"
