//! The mysqlpool benchmark: point selects per second through the cluster
//! (a bee client calling `mysqlpool` on a `bee run` node, pool of 8, `inflight`
//! concurrent callers) next to the same queries issued directly with mysql_async from
//! one process (a pool of 8 connections, the same number of concurrent tasks).
//!
//! Both sides use the text protocol (`query_iter`), as skynet's driver and `mysqlpool`
//! do, on a table `bee_bench.user` of [`ROWS`] rows seeded first; each query selects one
//! random uid, and every answer is checked to hold that row.

use std::path::PathBuf;

use bee_cluster::{Cluster, ClusterSettings};
use bee_codec::seri::{self, Value};
use bee_registry::{ClusterConfig, Registry};
use bee_runtime::{Node, RuntimeConfig};
use mysql_async::prelude::Queryable;
use serde::Serialize;

use crate::load::drive;
use crate::BenchError;

/// Rows in the benchmark table.
pub const ROWS: u64 = 10_000;

/// Where MariaDB is and how hard to push.
#[derive(Debug, Clone)]
pub struct MysqlParams {
    /// `mysql://user:password@host:port` of the server (no database).
    pub url: String,
    /// Cluster config naming the node that runs `mysqlpool`.
    pub cluster_file: PathBuf,
    /// That node.
    pub node: String,
    /// Concurrent callers on each side.
    pub inflight: usize,
    /// Connections of the direct pool (the node's pool size should match).
    pub pool: usize,
    /// Seconds each side runs.
    pub seconds: f64,
}

/// What it measured.
#[derive(Debug, Clone, Serialize)]
pub struct MysqlResult {
    /// Concurrent callers.
    pub inflight: usize,
    /// Pool size.
    pub pool: usize,
    /// Point selects per second issued directly with mysql_async.
    pub direct_qps: f64,
    /// Point selects per second through the cluster to mysqlpool.
    pub cluster_qps: f64,
    /// Failed queries or wrong answers, both sides.
    pub errors: u64,
}

fn err(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Call {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

fn point_select(uid: u64) -> String {
    format!("SELECT uid, nickname, level, coins FROM bee_bench.user WHERE uid = {uid}")
}

/// A pseudo-random uid in 1..=ROWS for request `i` of task `w` (SplitMix64 of both).
fn uid_for(w: usize, i: u64) -> u64 {
    bee_runtime::shard::mix(((w as u64) << 40) ^ i) % ROWS + 1
}

/// Create and fill `bee_bench.user` (idempotent).
async fn seed(pool: &mysql_async::Pool) -> Result<(), BenchError> {
    let mut conn = pool
        .get_conn()
        .await
        .map_err(|e| err("connect to MariaDB", e))?;
    conn.query_drop(
        "CREATE DATABASE IF NOT EXISTS bee_bench; \
         CREATE TABLE IF NOT EXISTS bee_bench.user (uid BIGINT PRIMARY KEY, \
         nickname VARCHAR(64) NOT NULL, level INT NOT NULL, coins BIGINT NOT NULL)",
    )
    .await
    .map_err(|e| err("create bee_bench.user", e))?;
    for chunk in (1..=ROWS).collect::<Vec<_>>().chunks(1000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|u| format!("({u}, 'player{u}', {}, {})", u % 60 + 1, u * 10))
            .collect();
        conn.query_drop(format!(
            "REPLACE INTO bee_bench.user VALUES {}",
            values.join(",")
        ))
        .await
        .map_err(|e| err("fill bee_bench.user", e))?;
    }
    Ok(())
}

/// Seed, then measure the direct side and the cluster side.
pub async fn run(p: &MysqlParams) -> Result<MysqlResult, BenchError> {
    let opts = mysql_async::Opts::from_url(&p.url).map_err(|e| err("MariaDB url", e))?;
    let constraints = mysql_async::PoolConstraints::new(p.pool, p.pool)
        .ok_or_else(|| err("pool size", "must be at least 1"))?;
    let pool = mysql_async::Pool::new(
        mysql_async::OptsBuilder::from_opts(opts)
            .pool_opts(mysql_async::PoolOpts::default().with_constraints(constraints)),
    );
    seed(&pool).await?;

    eprintln!(
        "mysql direct: {} tasks on a mysql_async pool of {} for {:.1} s",
        p.inflight, p.pool, p.seconds
    );
    let direct_pool = pool.clone();
    let direct = drive(p.inflight, p.seconds, move |w, i| {
        let (pool, uid) = (direct_pool.clone(), uid_for(w, i));
        async move {
            let Ok(mut conn) = pool.get_conn().await else {
                return false;
            };
            let row: Result<Option<(u64, String, i64, i64)>, _> =
                conn.query_first(point_select(uid)).await;
            matches!(row, Ok(Some((got, _, _, _))) if got == uid)
        }
    })
    .await;
    pool.disconnect()
        .await
        .map_err(|e| err("close the pool", e))?;

    let config = ClusterConfig::load(&p.cluster_file).map_err(|e| BenchError::ClusterConfig {
        path: p.cluster_file.clone(),
        reason: e.to_string(),
    })?;
    let node = Node::new("bee-bench-mysql", RuntimeConfig::default());
    let cluster = Cluster::start(&node, Registry::new(config), ClusterSettings::default());
    let target =
        cluster
            .query(&p.node, "mysqlpool")
            .await
            .map_err(|e| BenchError::Unreachable {
                node: p.node.clone(),
                target: "mysqlpool".into(),
                reason: e.to_string(),
            })?;
    eprintln!(
        "mysql through the cluster: {} callers -> {}/mysqlpool for {:.1} s",
        p.inflight, p.node, p.seconds
    );
    let remote = p.node.clone();
    let through = drive(p.inflight, p.seconds, move |w, i| {
        let (cluster, remote, uid) = (cluster.clone(), remote.clone(), uid_for(w, i));
        async move {
            let Ok(payload) = seri::pack(&[
                Value::from("lua"),
                Value::from("execute"),
                Value::from(point_select(uid)),
            ]) else {
                return false;
            };
            let Ok(reply) = cluster.call(&remote, target, payload).await else {
                return false;
            };
            // One result: a list with one row whose uid is the one asked for.
            let values = seri::unpack(&reply).unwrap_or_default();
            let row = values
                .first()
                .and_then(Value::as_table)
                .and_then(|rows| rows.array.first())
                .and_then(Value::as_table);
            row.and_then(|r| r.get_str("uid")).and_then(Value::as_int) == Some(uid as i64)
        }
    })
    .await;
    node.shutdown();
    Ok(MysqlResult {
        inflight: p.inflight,
        pool: p.pool,
        direct_qps: direct.per_second(),
        cluster_qps: through.per_second(),
        errors: direct.errors + through.errors,
    })
}
