//! The pool across a MariaDB restart. This stops the machine's shared server, so it
//! runs only with BEE_TEST_MARIADB_RESTART=1 (it needs `mysqladmin` and
//! `start-stop-daemon`, and root to use them):
//! `mysqladmin -uroot shutdown`, then
//! `start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd`.

mod common;

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use bee_codec::Value;
use bee_mysql::{MysqlPool, PoolError};
use common::{field, rows, TestDb};

fn enabled() -> bool {
    std::env::var("BEE_TEST_MARIADB_RESTART").as_deref() == Ok("1")
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

fn shutdown_server(port: u16) {
    let status = Command::new("mysqladmin")
        .args(["-uroot", "shutdown"])
        .status()
        .expect("run mysqladmin");
    assert!(status.success(), "mysqladmin shutdown failed: {status}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while port_open(port) {
        assert!(Instant::now() < deadline, "MariaDB did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_server(port: u16) {
    let status = Command::new("start-stop-daemon")
        .args([
            "--start",
            "--oknodo",
            "--background",
            "--exec",
            "/usr/sbin/mariadbd",
        ])
        .status()
        .expect("run start-stop-daemon");
    assert!(status.success(), "start-stop-daemon failed: {status}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !port_open(port) {
        assert!(
            Instant::now() < deadline,
            "MariaDB did not come back within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Brings the server back if the test fails while it is down.
struct Restorer(u16);

impl Drop for Restorer {
    fn drop(&mut self) {
        if !port_open(self.0) {
            start_server(self.0);
        }
    }
}

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
        let r = t.await.unwrap().unwrap();
        ids.push(field(&rows(&r)[0], "id").as_int().unwrap());
    }
    ids
}

#[tokio::test]
async fn pool_survives_a_server_restart() {
    if !enabled() {
        eprintln!("skipping the MariaDB restart test: set BEE_TEST_MARIADB_RESTART=1 to run it (it stops the shared server)");
        return;
    }
    let Some(db) = TestDb::create("restart").await else {
        return;
    };
    let port = db.config.port;
    let pool = db.pool(|c| {
        c.pool_size = 4;
        c.connect_timeout_ms = 1000;
        c.ping_idle_ms = 1000;
    });
    connection_ids(&pool, 4).await;
    assert_eq!(pool.stats().idle, 4);

    // 1. Down: every call fails fast; once the stale connections are gone, with Connect.
    let restorer = Restorer(port);
    shutdown_server(port);
    let mut last = None;
    for _ in 0..6 {
        let started = Instant::now();
        let err = pool.execute("SELECT 1").await.unwrap_err();
        assert!(
            matches!(
                err,
                PoolError::Connect { .. } | PoolError::ConnectionLost { .. }
            ),
            "{err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "took {:?}",
            started.elapsed()
        );
        last = Some(err);
    }
    assert!(matches!(last, Some(PoolError::Connect { .. })), "{last:?}");
    assert_eq!(pool.stats().idle, 0, "stale connections were dropped");
    assert_eq!(pool.stats().running, 0);

    // 2. Back: the next call succeeds on a new connection.
    start_server(port);
    let r = pool
        .execute("SELECT 42 AS x")
        .await
        .expect("works after the restart");
    assert_eq!(field(&rows(&r)[0], "x"), &Value::Integer(42));

    // 3. A restart nobody noticed: the idle connections are dead, but they have been idle
    //    longer than ping_idle_ms, so each is pinged, found dead and replaced.
    connection_ids(&pool, 4).await;
    let before = pool.stats().idle;
    assert!(before >= 1);
    shutdown_server(port);
    start_server(port);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ids = connection_ids(&pool, 4).await;
    assert_eq!(
        ids.len(),
        4,
        "every caller succeeded after an unnoticed restart"
    );
    drop(restorer);

    pool.close().await;
    db.drop_db().await;
}
