//! [`MysqlPool`]: a bounded set of MariaDB/MySQL connections that runs SQL text and
//! returns skynet-driver-shaped [`Value`]s.
//!
//! - At most `pool_size` queries run at once (one per connection); at most
//!   `queue_limit` callers wait for a turn; one more gets [`PoolError::QueueFull`] at once.
//! - Connections open on demand and are reused. A connection that fails below SQL (I/O,
//!   protocol) is thrown away, and so is every idle one opened before it (the server
//!   probably restarted); an idle connection unused for `ping_idle_ms` is pinged before
//!   reuse. While the server is down, callers get [`PoolError::Connect`] as fast as the
//!   refused TCP connect comes back.
//! - A query still running after `query_timeout_ms` fails with [`PoolError::Timeout`];
//!   its connection is never reused: it is dropped and killed on the server
//!   (`KILL CONNECTION`) from a separate short-lived connection.
//! - An SQL error is not a [`PoolError`]: it is a `badresult` table, as in skynet.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bee_codec::Value;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, TextProtocol};
use tokio::sync::{Semaphore, TryAcquireError};

use crate::config::{ConfigError, MysqlConfig};
use crate::convert;

/// How many characters of the SQL a [`PoolError::Timeout`] quotes.
const SQL_PREFIX_CHARS: usize = 80;

/// Server error codes after which the server closes the connection.
const FATAL_SERVER_CODES: [u16; 4] = [
    1053, // ER_SERVER_SHUTDOWN
    1152, // ER_ABORTING_CONNECTION
    1927, // ER_CONNECTION_KILLED (MariaDB)
    4031, // ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8)
];

/// An infrastructure failure: the SQL did not get a result from the server. (An error
/// the server reports for the SQL itself is a `badresult` result instead.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// `queue_limit` callers already wait for a connection.
    #[error("mysql pool queue is full: {limit} callers already wait for a connection (raise queue_limit or pool_size, or send less)")]
    QueueFull {
        /// The configured `queue_limit`.
        limit: usize,
    },
    /// The query ran longer than `query_timeout_ms`; its connection was closed.
    #[error("mysql query timed out after {after:?} (connection closed and killed): {sql}")]
    Timeout {
        /// The timeout that passed.
        after: Duration,
        /// The start of the SQL text.
        sql: String,
    },
    /// No connection could be opened (server down, wrong address, access denied, …).
    #[error("cannot connect to mysql: {reason}")]
    Connect {
        /// What the connect attempt reported.
        reason: String,
    },
    /// The connection broke while the query was in flight; the statement may or may not
    /// have run. The connection was discarded; the next call opens a new one.
    #[error(
        "mysql connection lost during the query (the statement may or may not have run): {reason}"
    )]
    ConnectionLost {
        /// What the driver reported.
        reason: String,
    },
    /// The pool was closed with [`MysqlPool::close`].
    #[error("mysql pool is closed")]
    Closed,
}

/// A snapshot of the pool's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Queries running now (each holds a connection).
    pub running: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
    /// Open connections waiting for work.
    pub idle: usize,
    /// Connections opened since the pool was made.
    pub opened: u64,
    /// Connections thrown away (broken, timed out, stale) since the pool was made.
    pub discarded: u64,
}

struct Idle {
    conn: Conn,
    generation: u64,
    since: Instant,
}

struct Inner {
    config: MysqlConfig,
    opts: mysql_async::Opts,
    permits: Semaphore,
    waiting: AtomicUsize,
    idle: Mutex<Vec<Idle>>,
    /// Bumped when a connection breaks: idle connections of older generations are stale.
    generation: AtomicU64,
    closed: AtomicBool,
    opened: AtomicU64,
    discarded: AtomicU64,
}

/// A bounded MariaDB/MySQL connection pool. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct MysqlPool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MysqlPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlPool")
            .field("host", &self.inner.config.host)
            .field("port", &self.inner.config.port)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Decrements the waiting counter when a queued caller leaves (served or cancelled).
struct WaitGuard<'a>(&'a AtomicUsize);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl MysqlPool {
    /// A pool for `config`. Opens nothing yet: connections open on the first queries.
    pub fn new(config: MysqlConfig) -> Result<MysqlPool, ConfigError> {
        config.validate()?;
        Ok(MysqlPool {
            inner: Arc::new(Inner {
                opts: config.to_opts(),
                permits: Semaphore::new(config.pool_size),
                waiting: AtomicUsize::new(0),
                idle: Mutex::new(Vec::new()),
                generation: AtomicU64::new(0),
                closed: AtomicBool::new(false),
                opened: AtomicU64::new(0),
                discarded: AtomicU64::new(0),
                config,
            }),
        })
    }

    /// The settings this pool was made with.
    pub fn config(&self) -> &MysqlConfig {
        &self.inner.config
    }

    /// The pool's counters now.
    pub fn stats(&self) -> PoolStats {
        let idle = self.idle_list().len();
        PoolStats {
            running: self.inner.config.pool_size - self.inner.permits.available_permits(),
            waiting: self.inner.waiting.load(Ordering::Acquire),
            idle,
            opened: self.inner.opened.load(Ordering::Relaxed),
            discarded: self.inner.discarded.load(Ordering::Relaxed),
        }
    }

    /// Run `sql` (one or several `;`-separated statements, text protocol) and return the
    /// result shaped as skynet's mysql driver returns it (see the crate docs).
    pub async fn execute(&self, sql: &str) -> Result<Value, PoolError> {
        self.execute_bytes(sql.as_bytes()).await
    }

    /// [`MysqlPool::execute`] for SQL that is not valid UTF-8 (e.g. binary literals).
    pub async fn execute_bytes(&self, sql: &[u8]) -> Result<Value, PoolError> {
        let inner = &*self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(PoolError::Closed);
        }
        let _permit = match inner.permits.try_acquire() {
            Ok(p) => p,
            Err(TryAcquireError::Closed) => return Err(PoolError::Closed),
            Err(TryAcquireError::NoPermits) => {
                let limit = inner.config.queue_limit;
                if inner.waiting.fetch_add(1, Ordering::AcqRel) >= limit {
                    inner.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(PoolError::QueueFull { limit });
                }
                let _waiting = WaitGuard(&inner.waiting);
                inner
                    .permits
                    .acquire()
                    .await
                    .map_err(|_| PoolError::Closed)?
            }
        };
        let (mut conn, generation) = self.checkout().await?;
        let after = inner.config.query_timeout();
        let outcome = tokio::time::timeout(after, run_query(&mut conn, sql)).await;
        match outcome {
            Ok(Ok((value, keep))) => {
                if keep {
                    self.checkin(conn, generation);
                } else {
                    self.discard(conn);
                }
                Ok(value)
            }
            Ok(Err(e)) => {
                self.discard(conn);
                // Whatever broke this one (a restart, a network cut) broke its idle peers.
                inner.generation.fetch_add(1, Ordering::AcqRel);
                tracing::warn!(error = %e, "mysql connection lost during a query; discarded");
                Err(PoolError::ConnectionLost {
                    reason: e.to_string(),
                })
            }
            Err(_elapsed) => {
                let id = conn.id();
                // The connection may be mid-result: never reuse it; stop the server's work.
                self.discard(conn);
                self.spawn_kill(id);
                let sql = sql_prefix(sql);
                tracing::warn!(after = ?after, connection = id, %sql, "mysql query timed out; connection killed");
                Err(PoolError::Timeout { after, sql })
            }
        }
    }

    /// Close the pool: new calls get [`PoolError::Closed`], waiting callers too; running
    /// queries finish; idle connections are closed politely.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.permits.close();
        let idle: Vec<Idle> = std::mem::take(&mut *self.idle_list());
        for i in idle {
            let _ = tokio::time::timeout(self.inner.config.connect_timeout(), i.conn.disconnect())
                .await;
        }
    }

    /// Whether [`MysqlPool::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    fn idle_list(&self) -> MutexGuard<'_, Vec<Idle>> {
        // A panic while holding this lock cannot leave the Vec inconsistent.
        self.inner.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection for one query: a healthy idle one, else a new one.
    async fn checkout(&self) -> Result<(Conn, u64), PoolError> {
        let inner = &*self.inner;
        loop {
            let current = inner.generation.load(Ordering::Acquire);
            // Most recently used first: the likeliest to be alive and warm.
            let Some(idle) = self.idle_list().pop() else {
                break;
            };
            if idle.generation != current {
                self.discard(idle.conn);
                continue;
            }
            let mut conn = idle.conn;
            if idle.since.elapsed() >= inner.config.ping_idle() {
                let ping = tokio::time::timeout(inner.config.connect_timeout(), conn.ping()).await;
                if !matches!(ping, Ok(Ok(()))) {
                    tracing::info!(
                        "idle mysql connection failed its ping; discarding idle connections"
                    );
                    inner.generation.fetch_add(1, Ordering::AcqRel);
                    self.discard(conn);
                    continue;
                }
            }
            return Ok((conn, current));
        }
        let generation = inner.generation.load(Ordering::Acquire);
        let conn = connect(&inner.opts, inner.config.connect_timeout()).await?;
        inner.opened.fetch_add(1, Ordering::Relaxed);
        Ok((conn, generation))
    }

    fn checkin(&self, conn: Conn, generation: u64) {
        if self.is_closed() {
            self.discard(conn);
            return;
        }
        self.idle_list().push(Idle {
            conn,
            generation,
            since: Instant::now(),
        });
    }

    fn discard(&self, conn: Conn) {
        self.inner.discarded.fetch_add(1, Ordering::Relaxed);
        // Dropping a mysql_async connection closes it in a background task.
        drop(conn);
    }

    /// Kill connection `id` on the server from a short-lived separate connection.
    fn spawn_kill(&self, id: u32) {
        let opts = self.inner.opts.clone();
        let timeout = self.inner.config.connect_timeout();
        tokio::spawn(async move {
            let result = async {
                let mut conn = connect(&opts, timeout).await.map_err(|e| e.to_string())?;
                let r =
                    tokio::time::timeout(timeout, conn.query_drop(format!("KILL CONNECTION {id}")))
                        .await
                        .map_err(|_| "KILL timed out".to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()));
                let _ = tokio::time::timeout(timeout, conn.disconnect()).await;
                r
            }
            .await;
            if let Err(e) = result {
                // 1094 "Unknown thread id": it had already ended, which is what we wanted.
                if !e.contains("1094") {
                    tracing::warn!(connection = id, error = %e, "could not kill a timed-out mysql connection");
                }
            }
        });
    }
}

/// Open one connection, bounded by `timeout`.
async fn connect(opts: &mysql_async::Opts, timeout: Duration) -> Result<Conn, PoolError> {
    match tokio::time::timeout(timeout, Conn::new(opts.clone())).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(PoolError::Connect {
            reason: format!("{}:{}: {e}", opts.ip_or_hostname(), opts.tcp_port()),
        }),
        Err(_) => Err(PoolError::Connect {
            reason: format!(
                "{}:{}: no connection within {timeout:?}",
                opts.ip_or_hostname(),
                opts.tcp_port()
            ),
        }),
    }
}

/// The first [`SQL_PREFIX_CHARS`] characters of `sql` (lossy UTF-8), for messages.
fn sql_prefix(sql: &[u8]) -> String {
    let text = String::from_utf8_lossy(sql);
    let mut out: String = text.chars().take(SQL_PREFIX_CHARS).collect();
    if text.chars().nth(SQL_PREFIX_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// Run `sql` on `conn` and shape every result. Returns the value and whether the
/// connection may be reused. SQL errors are results; only driver/I-O failures are errors.
async fn run_query(conn: &mut Conn, sql: &[u8]) -> Result<(Value, bool), mysql_async::Error> {
    let mut results = Vec::new();
    let mut failure = None;
    match conn.query_iter(sql).await {
        Ok(mut qr) => loop {
            match read_result_set(&mut qr).await {
                Ok(Some(v)) => results.push(v),
                Ok(None) => break,
                Err(mysql_async::Error::Server(e)) => {
                    failure = Some(e);
                    break;
                }
                Err(e) => return Err(e),
            }
        },
        Err(mysql_async::Error::Server(e)) => failure = Some(e),
        Err(e) => return Err(e),
    }
    let keep = match &failure {
        Some(e) => !FATAL_SERVER_CODES.contains(&e.code) && !conn.is_disconnected(),
        None => !conn.is_disconnected(),
    };
    Ok((convert::combine(results, failure), keep))
}

/// Read the next result set of `qr`: a row list, or the OK table of a statement without
/// rows. `None` when every result has been read.
async fn read_result_set(
    qr: &mut mysql_async::QueryResult<'_, 'static, TextProtocol>,
) -> Result<Option<Value>, mysql_async::Error> {
    use futures::StreamExt;
    let Some(mut stream) = qr.stream::<Row>().await? else {
        return Ok(None);
    };
    let columns = stream.columns();
    if columns.is_empty() {
        return Ok(Some(convert::ok_table(stream.ok_packet())));
    }
    let mut rows = bee_codec::Table::new();
    while let Some(row) = stream.next().await {
        let row = row?;
        rows.push(Value::Table(convert::row_table(&columns, row.unwrap_raw())));
    }
    Ok(Some(Value::Table(rows)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_prefix_is_bounded_and_lossy() {
        assert_eq!(sql_prefix(b"SELECT 1"), "SELECT 1");
        let long = "x".repeat(200);
        let p = sql_prefix(long.as_bytes());
        assert_eq!(p.chars().count(), SQL_PREFIX_CHARS + 1);
        assert!(p.ends_with('…'));
        assert_eq!(sql_prefix(&[0xff, b'a']), "\u{fffd}a");
    }

    #[tokio::test]
    async fn connect_error_then_closed_without_a_server() {
        // Port 1 on loopback refuses connections: every query fails to connect, fast.
        let pool = MysqlPool::new(MysqlConfig {
            port: 1,
            pool_size: 1,
            queue_limit: 0,
            ..Default::default()
        })
        .unwrap();
        let err = pool.execute("SELECT 1").await.unwrap_err();
        assert!(matches!(err, PoolError::Connect { .. }), "{err}");
        pool.close().await;
        assert_eq!(
            pool.execute("SELECT 1").await.unwrap_err(),
            PoolError::Closed
        );
    }
}
