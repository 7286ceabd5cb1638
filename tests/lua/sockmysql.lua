-- skynet.db.mysql against the real MariaDB: creates the test's own database (env
-- mysql_db), a table, inserts, a point select, then drops the database.
local skynet = require "skynet"
local mysql = require "skynet.db.mysql"

skynet.start(function()
	local dbname = skynet.getenv "mysql_db"
	local db = mysql.connect {
		host = "127.0.0.1",
		port = 3306,
		user = "root",
		password = "",
		max_packet_size = 1024 * 1024,
	}
	local function q(sql)
		local r = db:query(sql)
		if r.badresult then
			error(sql .. ": " .. tostring(r.err))
		end
		return r
	end
	q("DROP DATABASE IF EXISTS " .. dbname)
	q("CREATE DATABASE " .. dbname)
	q("USE " .. dbname)
	q("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20))")
	q("INSERT INTO t VALUES (1, 'bee'), (2, 'skynet')")
	local res = q("SELECT name FROM t WHERE id = 2")
	q("DROP DATABASE " .. dbname)
	skynet.error("mysql result " .. res[1].name)
	db:disconnect()
end)
