//! mysqlpool through the cluster: a `bee` process runs `mysqlpool` (node config `[mysql]`
//! section, pool of 8) against the real MariaDB at 127.0.0.1:3306 (root, no password);
//! an in-process client node calls it across the cluster with
//! `("lua", "execute", sql)`.
//!
//! Each test works in a database of its own, created at the start and dropped at the
//! end. MariaDB must be up (`cargo xtask setup` starts it): without it the tests fail,
//! saying so.

mod dispatch_common;

use std::future::Future;
use std::net::{SocketAddr, TcpStream};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use bee_cluster::Cluster;
use bee_codec::seri::{Table, Value};
use bee_tests::Layout;
use dispatch_common::*;
use futures::future::join_all;
use futures::FutureExt;

const DB_NODE: &str = "dbnode";
const NODE_CONFIG: &str = "[[service]]\nkind = \"mysqlpool\"\nname = \"mysqlpool\"\n\n\
    [mysql]\nhost = \"127.0.0.1\"\nport = 3306\nuser = \"root\"\npassword = \"\"\npool_size = 8\n";

/// MariaDB must answer on 127.0.0.1:3306 (`cargo xtask setup` starts it); a test that
/// needs it fails without it.
fn require_mariadb(test: &str) {
    let addr: SocketAddr = "127.0.0.1:3306".parse().unwrap();
    if let Err(e) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        panic!("{test} needs MariaDB at {addr} (root, empty password; `cargo xtask setup` starts it): {e}");
    }
}

/// Run one SQL statement through the cluster; the single result value.
async fn exec(c: &Cluster, sql: &str) -> Value {
    let reply = c
        .call(
            DB_NODE,
            "mysqlpool",
            lua(&[Value::from("execute"), Value::from(sql)]),
        )
        .await
        .unwrap_or_else(|e| panic!("execute {sql:?} failed: {e}"));
    let mut v = values(&reply);
    assert_eq!(v.len(), 1, "one result value for {sql:?}");
    v.remove(0)
}

fn table(v: &Value) -> &Table {
    v.as_table()
        .unwrap_or_else(|| panic!("expected a table, got {v}"))
}

fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    table(v)
        .get_str(key)
        .unwrap_or_else(|| panic!("no {key} in {v}"))
}

fn int(v: &Value, key: &str) -> i64 {
    field(v, key)
        .as_int()
        .unwrap_or_else(|| panic!("{key} is not an integer in {v}"))
}

fn assert_ok(v: &Value) {
    assert!(table(v).get_str("badresult").is_none(), "SQL failed: {v}");
}

/// Start the database node and a client, create the test's database, run `body`, and
/// drop the database whatever happened.
async fn with_db<F, Fut>(test: &str, body: F)
where
    F: FnOnce(Cluster, String) -> Fut,
    Fut: Future<Output = ()>,
{
    require_mariadb(test);
    let layout = Layout::new(&[DB_NODE]);
    let _p = start(&layout, DB_NODE, NODE_CONFIG);
    let (_node, c) = layout.client(CALL_TIMEOUT);
    let db = format!("bee_tests_{test}_{}", std::process::id());
    assert_ok(&exec(&c, &format!("DROP DATABASE IF EXISTS {db}")).await);
    assert_ok(&exec(&c, &format!("CREATE DATABASE {db} DEFAULT CHARSET utf8mb4")).await);
    let outcome = AssertUnwindSafe(body(c.clone(), db.clone()))
        .catch_unwind()
        .await;
    assert_ok(&exec(&c, &format!("DROP DATABASE IF EXISTS {db}")).await);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_select_across_the_cluster() {
    with_db("select", |c, db| async move {
        assert_ok(
            &exec(
                &c,
                &format!(
                    "CREATE TABLE {db}.user (uid BIGINT PRIMARY KEY, nickname VARCHAR(64) NOT NULL, \
                     level INT NOT NULL, vip DECIMAL(4,1), last_login DATETIME)"
                ),
            )
            .await,
        );
        assert_ok(
            &exec(
                &c,
                &format!(
                    "INSERT INTO {db}.user VALUES (10076447, 'player10076447', 12, 2.5, '2026-11-26 08:00:00'), \
                     (7, 'seven', 1, NULL, NULL)"
                ),
            )
            .await,
        );
        let rows = exec(&c, &format!("SELECT * FROM {db}.user ORDER BY uid")).await;
        let rows = table(&rows);
        assert_eq!(rows.array.len(), 2, "{rows:?}");
        let (a, b) = (&rows.array[0], &rows.array[1]);
        assert_eq!(int(a, "uid"), 7);
        assert_eq!(field(a, "nickname"), &Value::from("seven"));
        assert!(table(a).get_str("vip").is_none(), "NULL columns are absent");
        assert!(table(a).get_str("last_login").is_none());
        assert_eq!(int(b, "uid"), 10076447);
        assert_eq!(int(b, "level"), 12);
        assert_eq!(field(b, "vip"), &Value::Real(2.5));
        assert_eq!(field(b, "last_login"), &Value::from("2026-11-26 08:00:00"));

        // No rows: an empty table, not an error.
        let none = exec(&c, &format!("SELECT * FROM {db}.user WHERE uid = 1")).await;
        assert!(table(&none).is_empty(), "{none}");
        let expr = exec(&c, "SELECT 1 + 1 AS two, 'x' AS s").await;
        assert_eq!(int(&table(&expr).array[0], "two"), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_insert_update_delete_report_counts() {
    with_db("dml", |c, db| async move {
        assert_ok(
            &exec(
                &c,
                &format!("CREATE TABLE {db}.item (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(32), qty INT)"),
            )
            .await,
        );
        let r = exec(&c, &format!("INSERT INTO {db}.item (name, qty) VALUES ('a', 1), ('b', 2), ('c', 3)")).await;
        assert_eq!((int(&r, "affected_rows"), int(&r, "insert_id")), (3, 1), "{r}");
        let r = exec(&c, &format!("INSERT INTO {db}.item (name, qty) VALUES ('d', 4)")).await;
        assert_eq!((int(&r, "affected_rows"), int(&r, "insert_id")), (1, 4), "{r}");
        let r = exec(&c, &format!("UPDATE {db}.item SET qty = qty + 10 WHERE id >= 3")).await;
        assert_eq!((int(&r, "affected_rows"), int(&r, "insert_id")), (2, 0), "{r}");
        let r = exec(&c, &format!("UPDATE {db}.item SET qty = 0 WHERE id = 99")).await;
        assert_eq!(int(&r, "affected_rows"), 0, "{r}");
        let r = exec(&c, &format!("DELETE FROM {db}.item WHERE id = 1")).await;
        assert_eq!(int(&r, "affected_rows"), 1, "{r}");
        let rows = exec(&c, &format!("SELECT id, qty FROM {db}.item ORDER BY id")).await;
        let got: Vec<(i64, i64)> = table(&rows).array.iter().map(|r| (int(r, "id"), int(r, "qty"))).collect();
        assert_eq!(got, vec![(2, 2), (3, 13), (4, 14)]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_sql_error_is_badresult_and_pool_unharmed() {
    with_db("badsql", |c, db| async move {
        let r = exec(&c, "SELEC 1").await;
        assert_eq!(field(&r, "badresult"), &Value::Boolean(true), "{r}");
        assert_eq!(int(&r, "errno"), 1064, "{r}");
        assert_eq!(field(&r, "sqlstate"), &Value::from("42000"));
        assert!(
            field(&r, "err").as_str().unwrap().contains("SQL syntax"),
            "{r}"
        );
        let r = exec(&c, &format!("SELECT * FROM {db}.nosuchtable")).await;
        assert_eq!(
            (int(&r, "errno"), field(&r, "sqlstate").as_str()),
            (1146, Some("42S02")),
            "{r}"
        );

        // Errors more than the pool has connections, then the pool serves normally: no
        // connection was lost or leaked.
        let bad = join_all((0..16).map(|_| exec(&c, "SELEC 1"))).await;
        assert!(bad.iter().all(|r| int(r, "errno") == 1064));
        let good = join_all((0..16).map(|i| {
            let c = c.clone();
            async move { exec(&c, &format!("SELECT {i} AS i")).await }
        }))
        .await;
        for (i, r) in good.iter().enumerate() {
            assert_eq!(int(&table(r).array[0], "i"), i as i64);
        }
        let pong = c
            .call(DB_NODE, "mysqlpool", lua(&[Value::from("ping")]))
            .await
            .unwrap();
        assert_eq!(values(&pong), vec![Value::from("pong")]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_64_concurrent_callers_on_a_pool_of_8() {
    with_db("concurrent", |c, db| async move {
        assert_ok(
            &exec(
                &c,
                &format!("CREATE TABLE {db}.hits (caller INT PRIMARY KEY)"),
            )
            .await,
        );
        // Each call holds a connection for 100 ms: 64 calls on 8 connections take at least
        // 8 rounds (≈ 0.8 s) and far less than 64 rounds if they run 8 at a time.
        let started = Instant::now();
        let results = join_all((0..64i64).map(|i| {
            let c = c.clone();
            let db = db.clone();
            async move {
                let r = exec(&c, &format!("SELECT SLEEP(0.1) AS s, {i} AS caller")).await;
                assert_eq!(int(&table(&r).array[0], "caller"), i, "{r}");
                let w = exec(&c, &format!("INSERT INTO {db}.hits VALUES ({i})")).await;
                assert_eq!(int(&w, "affected_rows"), 1, "{w}");
            }
        }))
        .await;
        let took = started.elapsed();
        assert_eq!(results.len(), 64);
        assert!(
            took >= Duration::from_millis(750),
            "64 × 100 ms on 8 connections took only {took:?}"
        );
        assert!(
            took < Duration::from_secs(5),
            "the calls did not run concurrently: {took:?}"
        );
        let n = exec(&c, &format!("SELECT COUNT(*) AS n FROM {db}.hits")).await;
        assert_eq!(int(&table(&n).array[0], "n"), 64);
    })
    .await;
}
