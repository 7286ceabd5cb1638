//! The pool across MariaDB crashes and restarts, against a PRIVATE server: each test
//! initialises its own datadir in a temp directory (`mariadb-install-db`) and runs its
//! own `/usr/sbin/mariadbd` child on a free 127.0.0.1 port (see
//! [`common::PrivateMariaDb`]), so it always runs — in CI too — and never touches the
//! machine's shared server on 3306. Without the MariaDB server programs it fails, saying
//! so.
//!
//! Each test runs the same story, once with SIGKILL (a crash) and once with SIGTERM (a
//! clean stop):
//! 1. while the server is down every call fails within the connect timeout with
//!    `ConnectionLost` (a pooled connection that died) or `Connect`, never hanging;
//! 2. the server comes back on the same port and datadir and the SAME pool works again
//!    (and committed data survived);
//! 3. eight callers in flight (four running, four queued on a pool of four) when the
//!    server goes down each get a result or an error promptly, none hangs;
//! 4. a restart nobody noticed: idle connections are dead, pinged, and replaced.
//!
//! The child is killed and the directory removed when the guard drops, also on failure.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bee_codec::Value;
use bee_mysql::{MysqlConfig, MysqlPool, PoolError};
use common::{field, ok, rows, PrivateMariaDb, Stop};

/// The pool's connect timeout in these tests.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long any single call may take while the server is down before it counts as hung.
const HANG: Duration = Duration::from_secs(5);
/// The pool's idle-ping threshold in these tests.
const PING_IDLE: Duration = Duration::from_millis(300);

fn pool_for(server: &PrivateMariaDb) -> MysqlPool {
    MysqlPool::new(MysqlConfig {
        pool_size: 4,
        connect_timeout_ms: CONNECT_TIMEOUT.as_millis() as u64,
        ping_idle_ms: PING_IDLE.as_millis() as u64,
        // Far above HANG: a call that fails in these tests must fail because the pool
        // noticed the server is gone, not because the query timeout rescued it.
        query_timeout_ms: 60_000,
        ..server.config()
    })
    .unwrap()
}

/// Run `n` calls at once that each hold a connection a moment; return their server-side
/// connection ids. Panics if any call fails.
async fn connection_ids(pool: &MysqlPool, n: usize) -> Vec<i64> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let p = pool.clone();
        tasks.push(tokio::spawn(async move {
            p.execute("SELECT CONNECTION_ID() AS id, SLEEP(0.05) AS s")
                .await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        let r = t.await.unwrap().expect("the server is up: the call works");
        ids.push(field(&rows(&r)[0], "id").as_int().unwrap());
    }
    ids
}

/// The row count of the table made at the start: proves the datadir survived.
async fn row_count(pool: &MysqlPool) -> i64 {
    let r = pool
        .execute("SELECT COUNT(*) AS n FROM bee.kept")
        .await
        .expect("count rows");
    field(&rows(&r)[0], "n").as_int().unwrap()
}

/// While the server is down: every call returns an error fast, never hangs; once the
/// dead pooled connections are gone the error is `Connect` naming the address.
async fn calls_fail_fast(pool: &MysqlPool, port: u16) {
    let mut last = None;
    for i in 0..6 {
        let started = Instant::now();
        let outcome = tokio::time::timeout(HANG, pool.execute("SELECT 1"))
            .await
            .unwrap_or_else(|_| panic!("call {i} hung for {HANG:?} while the server was down"));
        let took = started.elapsed();
        let err = outcome.expect_err("the server is down: the call must fail");
        eprintln!("down, call {i}: {err} (after {took:?})");
        assert!(
            matches!(
                err,
                PoolError::Connect { .. } | PoolError::ConnectionLost { .. }
            ),
            "{err:?}"
        );
        assert!(
            took < CONNECT_TIMEOUT + Duration::from_millis(500),
            "call {i} took {took:?}"
        );
        last = Some(err);
    }
    match last {
        Some(PoolError::Connect { reason }) => {
            assert!(
                reason.contains(&format!("127.0.0.1:{port}")),
                "the error names the address: {reason}"
            );
        }
        other => panic!("after the stale connections are gone, calls get Connect: {other:?}"),
    }
    let stats = pool.stats();
    assert_eq!(stats.idle, 0, "stale connections were dropped: {stats:?}");
    assert_eq!(stats.running, 0, "{stats:?}");
}

/// Eight callers on a pool of four (four running a long query, four queued) when the
/// server goes down `how`: each must come back with a result or an error well within
/// [`HANG`]. Returns how many got an error.
async fn in_flight_when_stopped(pool: &MysqlPool, server: &mut PrivateMariaDb, how: Stop) -> usize {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let p = pool.clone();
        tasks.push(tokio::spawn(async move {
            p.execute("SELECT SLEEP(3) AS s").await
        }));
    }
    // Wait until four run and four queue, then give the four queries time to reach the
    // server.
    bee_testkit::wait_until_async(
        "four callers running and four queued",
        Duration::from_secs(5),
        || {
            let s = pool.stats();
            s.running == 4 && s.waiting == 4
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stopped_at = Instant::now();
    server.stop(how).await;
    let mut errors = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        let left = HANG.saturating_sub(stopped_at.elapsed());
        let outcome = tokio::time::timeout(left, t)
            .await
            .unwrap_or_else(|_| panic!("in-flight caller {i} hung after the server went down"))
            .expect("the caller task did not panic");
        match outcome {
            Ok(v) => eprintln!(
                "in flight {i}: result {v} (after {:?})",
                stopped_at.elapsed()
            ),
            Err(e) => {
                eprintln!("in flight {i}: {e} (after {:?})", stopped_at.elapsed());
                assert!(
                    matches!(
                        e,
                        PoolError::Connect { .. } | PoolError::ConnectionLost { .. }
                    ),
                    "{e:?}"
                );
                errors += 1;
            }
        }
    }
    errors
}

async fn pool_survives(how: Stop, name: &str) {
    let started = Instant::now();
    let Some(mut server) = PrivateMariaDb::start(name).await else {
        return;
    };
    let port = server.port();
    eprintln!(
        "{name}: private mariadbd on 127.0.0.1:{port} ready after {:?}",
        started.elapsed()
    );
    let pool = pool_for(&server);
    ok(&pool.execute("CREATE DATABASE bee").await.unwrap());
    ok(&pool
        .execute("CREATE TABLE bee.kept (id INT PRIMARY KEY) ENGINE=InnoDB")
        .await
        .unwrap());
    ok(&pool
        .execute("INSERT INTO bee.kept VALUES (1), (2), (3)")
        .await
        .unwrap());
    let ids = connection_ids(&pool, 4).await;
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 4, "{ids:?}");
    assert_eq!(pool.stats().idle, 4);

    // 1. Down: every call fails fast with a readable error.
    server.stop(how).await;
    calls_fail_fast(&pool, port).await;

    // 2. Back on the same port and datadir: the same pool works again, data intact.
    server.restart().await;
    let r = pool
        .execute("SELECT 42 AS x")
        .await
        .expect("works after the restart");
    assert_eq!(field(&rows(&r)[0], "x"), &Value::Integer(42));
    assert_eq!(row_count(&pool).await, 3, "committed rows survived");
    connection_ids(&pool, 4).await;

    // 3. Eight callers in flight when the server goes down.
    let errors = in_flight_when_stopped(&pool, &mut server, how).await;
    if how == Stop::Crash {
        // Nothing can answer after SIGKILL: the running four lose their connection,
        // the queued four cannot connect.
        assert_eq!(errors, 8, "every in-flight caller failed after the crash");
    }
    calls_fail_fast(&pool, port).await;
    server.restart().await;
    let ids = connection_ids(&pool, 8).await;
    assert_eq!(ids.len(), 8, "all eight callers work after the restart");
    assert_eq!(pool.stats().running, 0);

    // 4. A restart nobody noticed: the idle connections are dead, but they have been idle
    //    longer than ping_idle_ms, so each is pinged, found dead and replaced.
    assert!(pool.stats().idle >= 1);
    server.stop(how).await;
    server.restart().await;
    tokio::time::sleep(PING_IDLE + Duration::from_millis(100)).await;
    let ids = connection_ids(&pool, 4).await;
    assert_eq!(
        ids.len(),
        4,
        "every caller succeeded after an unnoticed restart"
    );
    assert_eq!(row_count(&pool).await, 3);

    pool.close().await;
    drop(server);
    eprintln!("{name}: done in {:?}", started.elapsed());
}

#[tokio::test]
async fn pool_survives_a_server_crash() {
    pool_survives(Stop::Crash, "crash").await;
}

#[tokio::test]
async fn pool_survives_a_clean_server_stop() {
    pool_survives(Stop::Clean, "stop").await;
}
