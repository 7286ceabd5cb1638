//! [`MysqlPoolService`]: the `mysqlpool` service, a [`MysqlPool`] behind a bee address.
//!
//! Commands are `skynet.pack("lua", command, args…)` values: `("lua", "execute", sql)`
//! or its alias `("lua", "query", sql)`, and `("lua", "ping")` → `"pong"`. The bare form
//! without `"lua"` is accepted too. The handler never waits for SQL: a call's reply slot goes to a task
//! that runs the query and answers, so as many queries run at once as the pool allows.
//! Pushes (no reply) from one sender run one after another in arrival order (an
//! `INSERT` pushed before an `UPDATE` of the same row runs first); pushes from
//! different senders run concurrently. Failed pushes are logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bee_codec::seri::{self, Value};
use bee_runtime::{Addr, Context, HandleResult, Message, Node, Responder, Service, ServiceError};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{ConfigError, MysqlConfig};
use crate::pool::MysqlPool;

/// The commands the service understands.
pub const COMMANDS: [&str; 3] = ["execute", "query", "ping"];

/// A push lane with nothing to do for this long ends its task (a new push starts a new one).
const LANE_IDLE: Duration = Duration::from_secs(30);

/// The ordered queue of one sender's pushes.
struct Lane {
    tx: mpsc::Sender<Bytes>,
    task: JoinHandle<()>,
}

/// The `mysqlpool` service. Start it with [`start`] (or spawn it yourself with
/// [`MysqlPoolService::new`]).
pub struct MysqlPoolService {
    pool: Result<MysqlPool, ConfigError>,
    lanes: HashMap<Addr, Lane>,
}

impl std::fmt::Debug for MysqlPoolService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlPoolService")
            .field("pool", &self.pool)
            .field("push_lanes", &self.lanes.len())
            .finish()
    }
}

impl MysqlPoolService {
    /// A service answering with `pool`.
    pub fn new(pool: MysqlPool) -> Self {
        MysqlPoolService {
            pool: Ok(pool),
            lanes: HashMap::new(),
        }
    }

    /// The pool behind this service, unless its configuration was rejected.
    pub fn pool(&self) -> Result<&MysqlPool, &ConfigError> {
        self.pool.as_ref()
    }

    fn usable_pool(&self) -> Result<MysqlPool, ServiceError> {
        self.pool
            .clone()
            .map_err(|e| ServiceError::msg(format!("mysqlpool is misconfigured: {e}")))
    }

    /// Queue a push from `source` on its lane, starting the lane if needed.
    async fn push(&mut self, pool: MysqlPool, source: Addr, sql: Bytes) {
        let capacity = pool.config().queue_limit.max(1);
        let mut sql = sql;
        loop {
            if let Some(lane) = self.lanes.get(&source) {
                match lane.tx.send(sql).await {
                    Ok(()) => return,
                    // The lane ended (idle); start a new one after it.
                    Err(mpsc::error::SendError(back)) => sql = back,
                }
            }
            let previous = self.lanes.remove(&source).map(|l| l.task);
            let (tx, rx) = mpsc::channel(capacity);
            let task = tokio::spawn(run_lane(pool.clone(), source, rx, previous));
            self.lanes.insert(source, Lane { tx, task });
        }
    }
}

/// Run one sender's pushes in order; end after [`LANE_IDLE`] without any.
async fn run_lane(
    pool: MysqlPool,
    source: Addr,
    mut rx: mpsc::Receiver<Bytes>,
    previous: Option<JoinHandle<()>>,
) {
    if let Some(prev) = previous {
        // Pushes the old lane still holds run before ours.
        let _ = prev.await;
    }
    loop {
        let sql = match tokio::time::timeout(LANE_IDLE, rx.recv()).await {
            Ok(Some(sql)) => sql,
            Ok(None) => return,
            Err(_) => {
                rx.close();
                // Anything sent just before the close still runs, in order.
                while let Ok(sql) = rx.try_recv() {
                    run_push(&pool, source, &sql).await;
                }
                return;
            }
        };
        run_push(&pool, source, &sql).await;
    }
}

async fn run_push(pool: &MysqlPool, source: Addr, sql: &[u8]) {
    let prefix = || String::from_utf8_lossy(&sql[..sql.len().min(80)]).into_owned();
    match pool.execute_bytes(sql).await {
        Ok(Value::Table(t)) if t.get_str("badresult").is_some() => {
            let err = t.get_str("err").map(|v| v.to_string()).unwrap_or_default();
            let errno = t.get_str("errno").and_then(Value::as_int).unwrap_or(0);
            tracing::warn!(source = %bee_runtime::service::fmt_addr(source), errno, err = %err, sql = %prefix(), "mysqlpool push failed with an SQL error");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(source = %bee_runtime::service::fmt_addr(source), error = %e, sql = %prefix(), "mysqlpool push failed; the statement may not have run");
        }
    }
}

/// Run `sql` and answer `responder` with `skynet.pack(result)` or the error text.
async fn answer(pool: MysqlPool, sql: Bytes, responder: Responder) {
    match pool.execute_bytes(&sql).await {
        Ok(value) => match seri::pack(&[value]) {
            Ok(payload) => responder.ok(payload),
            Err(e) => responder.err(format!("mysqlpool: cannot pack the result: {e}")),
        },
        Err(e) => responder.err(e),
    }
}

fn sql_arg(values: &[Value], cmd: &str) -> Result<Bytes, ServiceError> {
    match values.get(1) {
        Some(Value::String(b)) => Ok(b.clone()),
        Some(other) => Err(ServiceError::msg(format!(
            "mysqlpool {cmd}: the SQL must be a string, got a {}",
            other.type_name()
        ))),
        None => Err(ServiceError::msg(format!(
            "mysqlpool {cmd}: missing the SQL argument (send {cmd}, sql)"
        ))),
    }
}

impl Service for MysqlPoolService {
    async fn handle(&mut self, ctx: &mut Context, msg: Message) -> HandleResult {
        let mut values = seri::unpack(&msg.payload)?;
        // bee's convention is skynet.pack("lua", command, args…); a bare
        // (command, args…) is accepted too, for native callers.
        if matches!(values.first(), Some(Value::String(b)) if &b[..] == b"lua") {
            values.remove(0);
        }
        let cmd = match values.first() {
            Some(Value::String(b)) => b.clone(),
            _ => {
                return Err(ServiceError::msg(format!(
                "mysqlpool expects (\"lua\", command, …) with a command name; known commands: {}",
                COMMANDS.join(", ")
            )))
            }
        };
        match &cmd[..] {
            b"ping" => Ok(Some(seri::pack(&[Value::from("pong")])?)),
            b"execute" | b"query" => {
                let name = String::from_utf8_lossy(&cmd).into_owned();
                let sql = sql_arg(&values, &name)?;
                let pool = self.usable_pool()?;
                match ctx.take_reply() {
                    Some(responder) => {
                        tokio::spawn(answer(pool, sql, responder));
                    }
                    None => self.push(pool, msg.source, sql).await,
                }
                Ok(None)
            }
            other => Err(ServiceError::msg(format!(
                "mysqlpool: unknown command {:?}; known commands: {}",
                String::from_utf8_lossy(other),
                COMMANDS.join(", ")
            ))),
        }
    }
}

/// Start a `mysqlpool` service on `node` with label `mysqlpool`; returns its address.
/// The pool is also attached to the node (`node.extension::<MysqlPool>()`) for Rust
/// code on the same node. A rejected configuration is logged and the service answers
/// every SQL command with the reason (use [`try_start`] to get the error instead).
pub fn start(node: &Node, config: MysqlConfig) -> Addr {
    match try_start(node, config) {
        Ok(addr) => addr,
        Err(e) => {
            tracing::error!(error = %e, "mysqlpool configuration rejected; the service will answer every query with this error");
            node.spawn(
                "mysqlpool",
                MysqlPoolService {
                    pool: Err(e),
                    lanes: HashMap::new(),
                },
            )
        }
    }
}

/// [`start`], but a rejected configuration is an error and nothing is spawned.
pub fn try_start(node: &Node, config: MysqlConfig) -> Result<Addr, ConfigError> {
    let pool = MysqlPool::new(config)?;
    node.set_extension(Arc::new(pool.clone()));
    Ok(node.spawn("mysqlpool", MysqlPoolService::new(pool)))
}
