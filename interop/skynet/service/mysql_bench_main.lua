-- Start script of the Lua MySQL benchmark (`start = "mysql_bench_main"`): skynet's own
-- `skynet.db.mysql` driver against MariaDB on 127.0.0.1:3306 (root, no password).
-- Env keys: `sqlbench_db` (a database of its own: created, filled with
-- `sqlbench_rows` rows, dropped at the end), `sqlbench_conns` connections,
-- `sqlbench_per_conn` coroutines querying on each, `sqlbench_seconds` measured after a
-- 0.5 s warm-up. Every point select's row is checked. Prints one line
-- `SQLBENCH queries=N errors=E seconds=S first_error=...` then `SQLBENCH DONE`.
-- The same file runs on stock skynet and under `bee run`.
-- Our own code, written against skynet's documented API.
local skynet = require "skynet"
local mysql = require "skynet.db.mysql"

local function connect(db)
	return mysql.connect {
		host = "127.0.0.1",
		port = 3306,
		user = "root",
		password = "",
		database = db,
		max_packet_size = 1024 * 1024,
	}
end

local function must(conn, sql)
	local r = conn:query(sql)
	if r.badresult then
		error(sql .. ": " .. tostring(r.err))
	end
	return r
end

skynet.start(function()
	local dbname = assert(skynet.getenv "sqlbench_db", "sqlbench_db")
	local rows = assert(tonumber(skynet.getenv "sqlbench_rows"), "sqlbench_rows")
	local nconn = assert(tonumber(skynet.getenv "sqlbench_conns"), "sqlbench_conns")
	local per = assert(tonumber(skynet.getenv "sqlbench_per_conn"), "sqlbench_per_conn")
	local seconds = assert(tonumber(skynet.getenv "sqlbench_seconds"), "sqlbench_seconds")

	local admin = connect()
	must(admin, "DROP DATABASE IF EXISTS " .. dbname)
	must(admin, "CREATE DATABASE " .. dbname)
	must(admin, "CREATE TABLE " .. dbname .. ".user (uid BIGINT PRIMARY KEY, "
		.. "nickname VARCHAR(64) NOT NULL, level INT NOT NULL)")
	for first = 1, rows, 1000 do
		local values = {}
		for uid = first, math.min(first + 999, rows) do
			values[#values + 1] = string.format("(%d, 'player%d', %d)", uid, uid, uid % 60 + 1)
		end
		must(admin, "INSERT INTO " .. dbname .. ".user VALUES " .. table.concat(values, ","))
	end

	local conns = {}
	for i = 1, nconn do
		conns[i] = connect(dbname)
	end
	local start = skynet.now()
	local warm_until = start + 50
	local stop_at = warm_until + math.floor(seconds * 100)
	local queries, errors, first_error = 0, 0, nil
	local running = 0
	for i = 1, nconn do
		for _ = 1, per do
			running = running + 1
			skynet.fork(function()
				local db = conns[i]
				while skynet.now() < stop_at do
					local uid = math.random(1, rows)
					local ok, r = pcall(db.query, db,
						"SELECT uid, nickname, level FROM user WHERE uid = " .. uid)
					local now = skynet.now()
					local good = ok and not r.badresult and r[1] ~= nil
						and r[1].uid == uid and r[1].nickname == "player" .. uid
					if now >= warm_until and now < stop_at then
						if good then
							queries = queries + 1
						else
							errors = errors + 1
							first_error = first_error or tostring(ok and (r.err or "wrong row") or r)
						end
					end
				end
				running = running - 1
			end)
		end
	end
	while running > 0 do
		skynet.sleep(10)
	end
	must(admin, "DROP DATABASE " .. dbname)
	for i = 1, nconn do
		conns[i]:disconnect()
	end
	admin:disconnect()
	skynet.error(string.format("SQLBENCH queries=%d errors=%d seconds=%s first_error=%s",
		queries, errors, tostring(seconds), tostring(first_error)))
	skynet.error("SQLBENCH DONE")
end)
