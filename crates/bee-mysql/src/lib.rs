//! # bee-mysql — the `mysqlpool` service
//!
//! A bounded MariaDB/MySQL connection pool ([`MysqlPool`], on `mysql_async`, never
//! blocking a runtime thread) and the `mysqlpool` service that exposes it on a bee node
//! ([`MysqlPoolService`], feature `service`, on by default). SQL goes over the TEXT
//! protocol, so values arrive as the server's text — exactly as skynet's mysql driver
//! sees them — and results are shaped the way that driver returns them to Lua.
//!
//! ## Result shapes (a [`bee_codec::Value`])
//! - **SELECT**: a table whose array part holds the rows (1-based); each row is a table
//!   column-name → value. SQL NULL columns are absent. Integer, year, float, double and
//!   decimal columns go through Lua's `tonumber` ([`lua_tonumber`]): `"10"` →
//!   `Integer(10)`, `"1.50"` → `Real(1.5)`, an unsigned BIGINT above 2^63−1 → `Real`.
//!   Every other type (dates, times, strings, blobs, bit, json, enum, set) is a
//!   `String` holding the bytes the server sent.
//! - **Statement without rows**: `{affected_rows, insert_id, server_status,
//!   warning_count, message?}` (`message` only when the server sent one).
//! - **SQL error**: `{badresult = true, errno = N, err = "text", sqlstate = "42000"}`. It
//!   is a result, not a [`PoolError`]; the connection stays in the pool.
//! - **Several statements** (`"A; B"`): `{multiresultset = true, [1] = r1, [2] = r2, …}`;
//!   if one failed, the results before it are listed and `badresult`/`errno`/`err`/
//!   `sqlstate` are set on the outer table. (If the first statement fails, the reply is
//!   the plain error table, as in skynet.)
//!
//! Infrastructure failures are [`PoolError`]s: `QueueFull`, `Timeout`, `Connect`,
//! `ConnectionLost`, `Closed`.
//!
//! ## Config keys ([`MysqlConfig`], e.g. a `[mysql]` TOML section)
//! `host` ("127.0.0.1"), `port` (3306), `user` ("root"), `password` (""), `database`
//! (none), `charset` ("utf8mb4"), `pool_size` (8: connections = concurrent queries),
//! `connect_timeout_ms` (3000), `query_timeout_ms` (10000), `queue_limit` (1024 waiting
//! callers), `max_packet_size` (1 MiB), `ping_idle_ms` (1000), `init_sql` ([]).
//!
//! ## The service
//! Messages are `skynet.pack("lua", "execute", sql)` (alias `"query"`) and
//! `("lua", "ping")` → `"pong"` (the leading `"lua"` may be left out). Queries run concurrently (the pool, not the mailbox, is the limit): a call
//! is answered with `skynet.pack(result)`, or an error text for a [`PoolError`]; a push
//! runs the SQL and logs failures. [`start`] spawns it with label `mysqlpool`.

mod config;
mod convert;
mod pool;
#[cfg(feature = "service")]
mod service;

pub use config::{ConfigError, MysqlConfig};
pub use convert::lua_tonumber;
pub use pool::{MysqlPool, PoolError, PoolStats};
#[cfg(feature = "service")]
pub use service::{start, try_start, MysqlPoolService, COMMANDS};
