-- skynet.db.redis against the real Redis: set/get, a set, a pipeline; the keys are the
-- test's own (env redis_key) and are deleted again.
local skynet = require "skynet"
local redis = require "skynet.db.redis"

skynet.start(function()
	local key = skynet.getenv "redis_key"
	local db = redis.connect { host = "127.0.0.1", port = 6379, db = 0 }
	db:del(key, key .. ":s")
	db:set(key, "hello")
	local v = db:get(key)
	db:sadd(key .. ":s", "one")
	local m = db:smembers(key .. ":s")
	local r = {}
	db:pipeline({ { "set", key, "1" }, { "incr", key }, { "get", key } }, r)
	db:del(key, key .. ":s")
	skynet.error(string.format("redis result %s %s %s", v, m[1], r[3].out))
	db:disconnect()
end)
