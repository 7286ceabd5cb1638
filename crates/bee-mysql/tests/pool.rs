//! MysqlPool against a real MariaDB: result shapes, every column type, errors, multi
//! statements, timeouts, concurrency bounds, the waiting-queue bound.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bee_codec::Value;
use bee_mysql::{MysqlConfig, MysqlPool, PoolError};
use common::{field, ok, rows, table, TestDb};

fn s(v: &str) -> Value {
    Value::from(v)
}

#[tokio::test]
async fn select_returns_rows_of_named_columns() {
    let Some(db) = TestDb::create("select").await else {
        return;
    };
    let pool = db.pool(|_| {});
    ok(&pool
        .execute("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20), note VARCHAR(20))")
        .await
        .unwrap());
    ok(&pool
        .execute("INSERT INTO t VALUES (1, 'one', NULL), (2, 'two', 'x')")
        .await
        .unwrap());

    let r = pool
        .execute("SELECT id, name, note FROM t ORDER BY id")
        .await
        .unwrap();
    let rs = rows(&r);
    assert_eq!(rs.len(), 2);
    assert_eq!(field(&rs[0], "id"), &Value::Integer(1));
    assert_eq!(field(&rs[0], "name"), &s("one"));
    assert!(rs[0].get_str("note").is_none(), "NULL is absent: {r}");
    assert_eq!(rs[0].len(), 2);
    assert_eq!(field(&rs[1], "id"), &Value::Integer(2));
    assert_eq!(field(&rs[1], "note"), &s("x"));

    // Column aliases name the keys; an empty result is an empty table.
    let r = pool
        .execute("SELECT name AS n FROM t WHERE id = 2")
        .await
        .unwrap();
    assert_eq!(field(&rows(&r)[0], "n"), &s("two"));
    let r = pool.execute("SELECT * FROM t WHERE id = 99").await.unwrap();
    assert!(table(&r).is_empty(), "{r}");

    pool.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn insert_update_delete_report_counts() {
    let Some(db) = TestDb::create("dml").await else {
        return;
    };
    let pool = db.pool(|_| {});
    ok(&pool
        .execute("CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
        .await
        .unwrap());

    let r = pool.execute("INSERT INTO t (v) VALUES (10)").await.unwrap();
    let t = ok(&r);
    assert_eq!(field(t, "affected_rows"), &Value::Integer(1));
    assert_eq!(field(t, "insert_id"), &Value::Integer(1));
    assert_eq!(field(t, "warning_count"), &Value::Integer(0));
    assert!(field(t, "server_status").as_int().is_some());
    assert!(
        t.get_str("message").is_none(),
        "no info text for a single insert: {r}"
    );

    let r = pool
        .execute("INSERT INTO t (v) VALUES (20), (30), (40)")
        .await
        .unwrap();
    let t = ok(&r);
    assert_eq!(field(t, "affected_rows"), &Value::Integer(3));
    // The first id of a multi-row insert, as the server reports it.
    assert_eq!(field(t, "insert_id"), &Value::Integer(2));
    let msg = field(t, "message").as_str().unwrap();
    assert!(msg.contains("Records: 3"), "{msg}");

    let r = pool
        .execute("UPDATE t SET v = v + 1 WHERE v >= 20")
        .await
        .unwrap();
    let t = ok(&r);
    assert_eq!(field(t, "affected_rows"), &Value::Integer(3));
    assert_eq!(field(t, "insert_id"), &Value::Integer(0));
    assert!(field(t, "message")
        .as_str()
        .unwrap()
        .contains("Rows matched: 3"));

    let r = pool.execute("DELETE FROM t WHERE v < 25").await.unwrap();
    assert_eq!(field(ok(&r), "affected_rows"), &Value::Integer(2));
    let r = pool.execute("SELECT COUNT(*) AS n FROM t").await.unwrap();
    assert_eq!(field(&rows(&r)[0], "n"), &Value::Integer(2));

    // A statement with a warning counts it.
    let r = pool.execute("INSERT INTO t (v) VALUES ('12abc')").await;
    let r = r.unwrap();
    let t = table(&r);
    if t.get_str("badresult").is_none() {
        assert_eq!(field(t, "warning_count"), &Value::Integer(1), "{r}");
    } else {
        // Strict mode refuses it instead: that is an SQL error result.
        assert_eq!(field(t, "errno"), &Value::Integer(1265), "{r}");
    }

    pool.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn every_column_type_maps_like_the_lua_driver() {
    let Some(db) = TestDb::create("types").await else {
        return;
    };
    let pool = db.pool(|_| {});
    ok(&pool
        .execute(
            "CREATE TABLE t (
                id INT PRIMARY KEY,
                c_tiny TINYINT, c_small SMALLINT, c_medium MEDIUMINT, c_int INT,
                c_big BIGINT, c_ubig BIGINT UNSIGNED, c_year YEAR,
                c_float FLOAT, c_double DOUBLE, c_double_whole DOUBLE,
                c_dec DECIMAL(10,2), c_dec0 DECIMAL(10,0),
                c_date DATE, c_datetime DATETIME, c_ts TIMESTAMP NULL, c_time TIME,
                c_char CHAR(5), c_varchar VARCHAR(100), c_text TEXT, c_blob BLOB,
                c_bit BIT(8), c_json JSON, c_enum ENUM('red','green')
            ) CHARACTER SET utf8mb4",
        )
        .await
        .unwrap());
    let text = "héllo 😀 中文 🐝";
    ok(&pool
        .execute(&format!(
            "INSERT INTO t VALUES (
                1, -128, 32767, 8388607, -2147483648,
                -9223372036854775808, 18446744073709551615, 2024,
                1.5, 2.25, 3,
                1234.50, 10,
                '2024-02-29', '2024-01-02 03:04:05', '2024-05-06 07:08:09', '-12:30:45',
                'ab', '{text}', '{text}', X'00FF7F0A',
                b'10100101', '{{\"k\": [1, 2]}}', 'green')"
        ))
        .await
        .unwrap());
    ok(&pool.execute("INSERT INTO t (id) VALUES (2)").await.unwrap());

    let r = pool.execute("SELECT * FROM t ORDER BY id").await.unwrap();
    let rs = rows(&r);
    assert_eq!(rs.len(), 2);
    let row = &rs[0];
    let expect: Vec<(&str, Value)> = vec![
        ("id", Value::Integer(1)),
        ("c_tiny", Value::Integer(-128)),
        ("c_small", Value::Integer(32767)),
        ("c_medium", Value::Integer(8388607)),
        ("c_int", Value::Integer(-2147483648)),
        ("c_big", Value::Integer(i64::MIN)),
        // Past i64: Lua's tonumber gives a float.
        ("c_ubig", Value::Real(18446744073709551615.0)),
        ("c_year", Value::Integer(2024)),
        ("c_float", Value::Real(1.5)),
        ("c_double", Value::Real(2.25)),
        // The server sends "3": tonumber("3") is the integer 3.
        ("c_double_whole", Value::Integer(3)),
        ("c_dec", Value::Real(1234.5)),
        ("c_dec0", Value::Integer(10)),
        ("c_date", s("2024-02-29")),
        ("c_datetime", s("2024-01-02 03:04:05")),
        ("c_ts", s("2024-05-06 07:08:09")),
        ("c_time", s("-12:30:45")),
        ("c_char", s("ab")),
        ("c_varchar", s(text)),
        ("c_text", s(text)),
        ("c_blob", Value::from(vec![0x00u8, 0xFF, 0x7F, 0x0A])),
        ("c_bit", Value::from(vec![0xA5u8])),
        ("c_json", s("{\"k\": [1, 2]}")),
        ("c_enum", s("green")),
    ];
    for (col, want) in &expect {
        assert_eq!(field(row, col), want, "column {col} in {r}");
    }
    assert_eq!(row.len(), expect.len(), "no extra keys: {r}");

    // The all-NULL row has only its id.
    let null_row = &rs[1];
    assert_eq!(null_row.len(), 1, "NULL columns are absent: {r}");
    assert_eq!(field(null_row, "id"), &Value::Integer(2));

    // Expressions follow the same rules by their result type.
    let r = pool
        .execute(
            "SELECT 1 + 1 AS i, 1.50 AS d, 2.5e0 AS f, 'x' AS sx, NULL AS n, CAST(1 AS CHAR) AS c",
        )
        .await
        .unwrap();
    let row = &rows(&r)[0];
    assert_eq!(field(row, "i"), &Value::Integer(2));
    assert_eq!(field(row, "d"), &Value::Real(1.5));
    assert_eq!(field(row, "f"), &Value::Real(2.5));
    assert_eq!(field(row, "sx"), &s("x"));
    assert!(row.get_str("n").is_none());
    assert_eq!(
        field(row, "c"),
        &s("1"),
        "a string that looks numeric stays a string"
    );

    pool.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn sql_error_is_a_badresult_and_the_pool_goes_on() {
    let Some(db) = TestDb::create("badresult").await else {
        return;
    };
    let pool = db.pool(|c| c.pool_size = 1);

    let r = pool.execute("SELEC 1").await.unwrap();
    let t = table(&r);
    assert_eq!(field(t, "badresult"), &Value::Boolean(true));
    assert_eq!(field(t, "errno"), &Value::Integer(1064));
    assert_eq!(field(t, "sqlstate"), &s("42000"));
    assert!(
        field(t, "err").as_str().unwrap().contains("SQL syntax"),
        "{r}"
    );
    assert_eq!(t.len(), 4, "only the four error fields: {r}");

    let r = pool.execute("SELECT * FROM no_such_table").await.unwrap();
    assert_eq!(field(table(&r), "errno"), &Value::Integer(1146));
    assert_eq!(field(table(&r), "sqlstate"), &s("42S02"));

    // Same single connection, still fine.
    let r = pool.execute("SELECT 7 AS x").await.unwrap();
    assert_eq!(field(&rows(&r)[0], "x"), &Value::Integer(7));
    assert_eq!(
        pool.stats().opened,
        1,
        "the SQL errors did not cost the connection"
    );

    pool.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn several_statements_give_a_multiresultset() {
    let Some(db) = TestDb::create("multi").await else {
        return;
    };
    let pool = db.pool(|c| c.pool_size = 1);
    ok(&pool
        .execute("CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
        .await
        .unwrap());

    let r = pool
        .execute("INSERT INTO t (v) VALUES (5); SELECT v FROM t; SELECT 'a' AS x, 'b' AS y")
        .await
        .unwrap();
    let t = ok(&r);
    assert_eq!(field(t, "multiresultset"), &Value::Boolean(true));
    assert_eq!(t.array.len(), 3, "{r}");
    assert_eq!(
        field(table(&t.array[0]), "affected_rows"),
        &Value::Integer(1)
    );
    assert_eq!(field(table(&t.array[0]), "insert_id"), &Value::Integer(1));
    assert_eq!(field(&rows(&t.array[1])[0], "v"), &Value::Integer(5));
    assert_eq!(field(&rows(&t.array[2])[0], "y"), &s("b"));

    // The second statement fails: the first result is kept, the error is on the outside.
    let r = pool
        .execute("SELECT 1 AS one; SELEC 2; SELECT 3")
        .await
        .unwrap();
    let t = table(&r);
    assert_eq!(field(t, "multiresultset"), &Value::Boolean(true));
    assert_eq!(field(t, "badresult"), &Value::Boolean(true));
    assert_eq!(field(t, "errno"), &Value::Integer(1064));
    assert_eq!(t.array.len(), 1, "{r}");
    assert_eq!(field(&rows(&t.array[0])[0], "one"), &Value::Integer(1));

    // The first statement fails: a plain error table.
    let r = pool.execute("SELEC 1; SELECT 2").await.unwrap();
    let t = table(&r);
    assert_eq!(field(t, "badresult"), &Value::Boolean(true));
    assert!(t.get_str("multiresultset").is_none(), "{r}");

    // A trailing semicolon is still one statement.
    let r = pool.execute("SELECT 4 AS four;").await.unwrap();
    assert_eq!(field(&rows(&r)[0], "four"), &Value::Integer(4));

    // And the connection is still in step.
    let r = pool.execute("SELECT COUNT(*) AS n FROM t").await.unwrap();
    assert_eq!(field(&rows(&r)[0], "n"), &Value::Integer(1));
    assert_eq!(pool.stats().opened, 1);

    pool.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn slow_query_times_out_and_its_connection_is_killed() {
    let Some(db) = TestDb::create("timeout").await else {
        return;
    };
    let pool = db.pool(|c| {
        c.pool_size = 2;
        c.query_timeout_ms = 500;
    });
    let r = pool.execute("SELECT CONNECTION_ID() AS id").await.unwrap();
    let first_id = field(&rows(&r)[0], "id").as_int().unwrap();

    let started = Instant::now();
    let err = pool.execute("SELECT SLEEP(3)").await.unwrap_err();
    let took = started.elapsed();
    match &err {
        PoolError::Timeout { after, sql } => {
            assert_eq!(*after, Duration::from_millis(500));
            assert_eq!(sql, "SELECT SLEEP(3)");
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(
        took < Duration::from_millis(1500),
        "timed out after {took:?}"
    );
    assert!(err.to_string().contains("SELECT SLEEP(3)"), "{err}");

    // The pool still works, on another connection than the timed-out one.
    let r = pool
        .execute("SELECT CONNECTION_ID() AS id, 1 AS ok")
        .await
        .unwrap();
    assert_eq!(field(&rows(&r)[0], "ok"), &Value::Integer(1));
    assert_eq!(pool.stats().discarded, 1);
    assert_eq!(pool.stats().running, 0);

    // The timed-out connection (the idle one it reused was first_id) is gone from the
    // server well before SLEEP(3) would have ended.
    let probe = MysqlPool::new(common::server_config()).unwrap();
    let deadline = Instant::now() + Duration::from_millis(1500);
    loop {
        let r = probe
            .execute(&format!(
                "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE ID = {first_id}"
            ))
            .await
            .unwrap();
        if field(&rows(&r)[0], "n") == &Value::Integer(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "connection {first_id} was not killed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    probe.close().await;
    pool.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn sixty_four_callers_share_eight_connections() {
    let Some(db) = TestDb::create("concurrency").await else {
        return;
    };
    let pool = db.pool(|c| c.pool_size = 8);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            pool.execute(&format!(
                "SELECT CONNECTION_ID() AS id, {i} AS i, SLEEP(0.2) AS s"
            ))
            .await
        }));
    }
    let mut ids = HashSet::new();
    let mut seen = HashSet::new();
    for t in tasks {
        let r = t.await.unwrap().expect("every caller succeeds");
        let row = &rows(&r)[0];
        ids.insert(field(row, "id").as_int().unwrap());
        seen.insert(field(row, "i").as_int().unwrap());
    }
    let took = started.elapsed();
    assert_eq!(seen.len(), 64);
    assert!(ids.len() <= 8, "{} connections used", ids.len());
    // 64 × 0.2 s on at most 8 connections cannot finish in under 8 rounds (1.6 s); far
    // less than the 12.8 s of one-at-a-time.
    assert!(
        took >= Duration::from_millis(1550),
        "more than 8 ran at once: {took:?}"
    );
    assert!(
        took < Duration::from_secs(6),
        "queries did not run in parallel: {took:?}"
    );
    let stats = pool.stats();
    assert!(stats.opened <= 8, "{stats:?}");
    assert_eq!(stats.running, 0);
    assert_eq!(stats.waiting, 0);
    pool.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_full_queue_refuses_at_once() {
    let Some(db) = TestDb::create("queue").await else {
        return;
    };
    let pool = db.pool(|c| {
        c.pool_size = 1;
        c.queue_limit = 2;
    });
    let mut holders = Vec::new();
    let p = pool.clone();
    holders.push(tokio::spawn(
        async move { p.execute("SELECT SLEEP(5)").await },
    ));
    bee_testkit::wait_until_async("one query running", Duration::from_secs(5), || {
        pool.stats().running == 1
    })
    .await;
    for _ in 0..2 {
        let p = pool.clone();
        holders.push(tokio::spawn(async move { p.execute("SELECT 1").await }));
    }
    bee_testkit::wait_until_async("two callers waiting", Duration::from_secs(5), || {
        pool.stats().waiting == 2
    })
    .await;

    let started = Instant::now();
    let err = pool.execute("SELECT 2").await.unwrap_err();
    assert_eq!(err, PoolError::QueueFull { limit: 2 });
    // Long before the running SLEEP(5) frees the connection: refused, not queued.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("queue_limit"), "{err}");

    for h in holders {
        ok(&h.await.unwrap().expect("queued callers are served"));
    }
    assert_eq!(pool.stats().waiting, 0);
    // With the queue drained, calls go through again.
    ok(&pool.execute("SELECT 3").await.unwrap());

    // A caller that gives up while queued frees its place.
    let p = pool.clone();
    let busy = tokio::spawn(async move { p.execute("SELECT SLEEP(0.5)").await });
    bee_testkit::wait_until_async("one query running", Duration::from_secs(5), || {
        pool.stats().running == 1
    })
    .await;
    let gave_up = tokio::time::timeout(Duration::from_millis(50), pool.execute("SELECT 4")).await;
    assert!(gave_up.is_err());
    assert_eq!(pool.stats().waiting, 0);
    ok(&busy.await.unwrap().unwrap());

    pool.close().await;
    assert_eq!(
        pool.execute("SELECT 5").await.unwrap_err(),
        PoolError::Closed
    );
    db.drop_db().await;
}

#[tokio::test]
async fn bad_credentials_are_a_connect_error() {
    let Some(db) = TestDb::create("credentials").await else {
        return;
    };
    let pool = MysqlPool::new(MysqlConfig {
        user: "bee_no_such_user".into(),
        password: "wrong".into(),
        ..common::server_config()
    })
    .unwrap();
    let started = Instant::now();
    let err = pool.execute("SELECT 1").await.unwrap_err();
    assert!(matches!(err, PoolError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("bee_no_such_user"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        pool.stats().running,
        0,
        "the failed connect released its turn"
    );

    let pool = db.pool(|c| c.database = Some("bee_mysql_test_no_such_db".into()));
    let err = pool.execute("SELECT 1").await.unwrap_err();
    assert!(matches!(err, PoolError::Connect { .. }), "{err:?}");
    db.drop_db().await;
}

#[tokio::test]
async fn init_sql_and_charset_apply_to_every_connection() {
    let Some(db) = TestDb::create("init").await else {
        return;
    };
    let pool = db.pool(|c| {
        c.init_sql = vec!["SET @bee_marker = 'hello'".into()];
        c.charset = "utf8mb4".into();
    });
    let r = pool
        .execute(
            "SELECT @bee_marker AS m, @@character_set_client AS cs, @@character_set_results AS rs",
        )
        .await
        .unwrap();
    let row = &rows(&r)[0];
    assert_eq!(field(row, "m"), &s("hello"));
    assert_eq!(field(row, "cs"), &s("utf8mb4"));
    assert_eq!(field(row, "rs"), &s("utf8mb4"));
    pool.close().await;
    db.drop_db().await;
}
