//! The `mysqlpool` service on a bee node, against a real MariaDB.

mod common;

use std::time::{Duration, Instant};

use bee_codec::seri::{self, Value};
use bee_mysql::{MysqlConfig, MysqlPool, COMMANDS};
use bee_runtime::{Addr, CallError, Node, RuntimeConfig};
use bytes::Bytes;
use common::{field, ok, rows, table, TestDb};

fn pack(args: &[Value]) -> Bytes {
    seri::pack(args).unwrap()
}

/// skynet.call(addr, "lua", args…)
async fn call(node: &Node, addr: Addr, args: &[Value]) -> Result<Value, CallError> {
    let mut lua = vec![Value::from("lua")];
    lua.extend_from_slice(args);
    call_raw(node, addr, &lua).await
}

/// A call with exactly these packed values.
async fn call_raw(node: &Node, addr: Addr, args: &[Value]) -> Result<Value, CallError> {
    let reply = node.call(addr, pack(args)).await?;
    let mut values = seri::unpack(&reply).unwrap();
    assert_eq!(values.len(), 1, "one reply value");
    Ok(values.remove(0))
}

fn node() -> Node {
    Node::new("mysqltest", RuntimeConfig::default())
}

#[tokio::test]
async fn execute_query_and_ping() {
    let Some(db) = TestDb::create("svc_basic").await else {
        return;
    };
    let node = node();
    let addr = bee_mysql::start(&node, db.config.clone());
    assert!(
        node.describe(addr).starts_with("mysqlpool"),
        "{}",
        node.describe(addr)
    );
    assert!(
        node.extension::<MysqlPool>().is_some(),
        "the pool is attached to the node"
    );

    assert_eq!(
        call(&node, addr, &["ping".into()]).await.unwrap(),
        Value::from("pong")
    );
    // Without the "lua" sub-type too.
    assert_eq!(
        call_raw(&node, addr, &["ping".into()]).await.unwrap(),
        Value::from("pong")
    );

    let r = call(
        &node,
        addr,
        &[
            "execute".into(),
            "CREATE TABLE t (id INT, name VARCHAR(10))".into(),
        ],
    )
    .await
    .unwrap();
    ok(&r);
    let r = call(
        &node,
        addr,
        &[
            "query".into(),
            "INSERT INTO t VALUES (1, 'a'), (2, NULL)".into(),
        ],
    )
    .await
    .unwrap();
    assert_eq!(field(ok(&r), "affected_rows"), &Value::Integer(2));
    let r = call(
        &node,
        addr,
        &["execute".into(), "SELECT * FROM t ORDER BY id".into()],
    )
    .await
    .unwrap();
    let rs = rows(&r);
    assert_eq!(field(&rs[0], "name"), &Value::from("a"));
    assert!(rs[1].get_str("name").is_none());

    // An SQL error is a result, not a failed call.
    let r = call(&node, addr, &["execute".into(), "SELEC".into()])
        .await
        .unwrap();
    assert_eq!(field(table(&r), "badresult"), &Value::Boolean(true));

    node.shutdown();
    db.drop_db().await;
}

#[tokio::test]
async fn bad_commands_are_explained() {
    let Some(db) = TestDb::create("svc_bad").await else {
        return;
    };
    let node = node();
    let addr = bee_mysql::start(&node, db.config.clone());

    let err = call(&node, addr, &["frobnicate".into()]).await.unwrap_err();
    let text = err.remote_text();
    assert!(text.contains("frobnicate"), "{text}");
    for c in COMMANDS {
        assert!(text.contains(c), "{text} lists {c}");
    }
    let err = call(&node, addr, &["execute".into()]).await.unwrap_err();
    assert!(err.remote_text().contains("missing the SQL"), "{err}");
    let err = call(&node, addr, &["execute".into(), Value::Integer(1)])
        .await
        .unwrap_err();
    assert!(err.remote_text().contains("must be a string"), "{err}");
    let err = call(&node, addr, &[Value::Integer(5)]).await.unwrap_err();
    assert!(err.remote_text().contains("known commands"), "{err}");
    let err = call_raw(&node, addr, &["text".into(), "frame".into()])
        .await
        .unwrap_err();
    assert!(err.remote_text().contains("known commands"), "{err}");
    // Still serving.
    assert_eq!(
        call(&node, addr, &["ping".into()]).await.unwrap(),
        Value::from("pong")
    );

    node.shutdown();
    db.drop_db().await;
}

#[tokio::test]
async fn sixty_four_callers_run_in_parallel() {
    let Some(db) = TestDb::create("svc_parallel").await else {
        return;
    };
    let node = node();
    let addr = bee_mysql::start(
        &node,
        MysqlConfig {
            pool_size: 8,
            ..db.config.clone()
        },
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let sql = format!("SELECT {i} AS i, CONNECTION_ID() AS id, SLEEP(0.2) AS s");
            call(&node, addr, &["execute".into(), sql.as_str().into()]).await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.unwrap().expect("every caller succeeds");
        let row = &rows(&r)[0];
        assert_eq!(field(row, "i"), &Value::Integer(i as i64));
        ids.insert(field(row, "id").as_int().unwrap());
    }
    let took = started.elapsed();
    assert!(ids.len() <= 8, "{} connections", ids.len());
    // One at a time would take 12.8 s; eight at a time takes 1.6 s.
    assert!(
        took < Duration::from_secs(6),
        "the service serialized the queries: {took:?}"
    );
    assert!(
        took >= Duration::from_millis(1550),
        "more than 8 ran at once: {took:?}"
    );

    node.shutdown();
    db.drop_db().await;
}

#[tokio::test]
async fn pushes_from_one_sender_run_in_order() {
    let Some(db) = TestDb::create("svc_push").await else {
        return;
    };
    let node = node();
    let addr = bee_mysql::start(&node, db.config.clone());
    ok(&call(
        &node,
        addr,
        &[
            "execute".into(),
            "CREATE TABLE log (seq INT AUTO_INCREMENT PRIMARY KEY, v INT)".into(),
        ],
    )
    .await
    .unwrap());
    ok(&call(
        &node,
        addr,
        &[
            "execute".into(),
            "CREATE TABLE cell (id INT PRIMARY KEY, v BIGINT)".into(),
        ],
    )
    .await
    .unwrap());

    // Each push depends on the one before: out of order, the row would be missing or wrong.
    node.send(
        addr,
        pack(&[
            "lua".into(),
            "execute".into(),
            "INSERT INTO cell VALUES (1, 0)".into(),
        ]),
    )
    .await
    .unwrap();
    for i in 1..=50 {
        let sql = format!(
            "UPDATE cell SET v = v * 2 + {i} WHERE id = 1; INSERT INTO log (v) VALUES ({i})"
        );
        node.send(
            addr,
            pack(&["lua".into(), "execute".into(), sql.as_str().into()]),
        )
        .await
        .unwrap();
    }
    // A failing push is logged, not fatal.
    node.send(
        addr,
        pack(&["lua".into(), "execute".into(), "SELEC broken".into()]),
    )
    .await
    .unwrap();

    let all_ran = bee_testkit::eventually(Duration::from_secs(10), || async {
        let r = call(
            &node,
            addr,
            &["execute".into(), "SELECT COUNT(*) AS n FROM log".into()],
        )
        .await
        .unwrap();
        field(&rows(&r)[0], "n") == &Value::Integer(50)
    })
    .await;
    assert!(all_ran, "the 50 pushes did not all run within 10 s");
    let r = call(
        &node,
        addr,
        &["execute".into(), "SELECT v FROM log ORDER BY seq".into()],
    )
    .await
    .unwrap();
    let order: Vec<i64> = rows(&r)
        .iter()
        .map(|row| field(row, "v").as_int().unwrap())
        .collect();
    assert_eq!(order, (1..=50).collect::<Vec<i64>>());
    // v = 2v + i is not commutative: only the in-order sequence gives this value.
    let want = (1..=50i64).fold(0i64, |v, i| v * 2 + i);
    let r = call(
        &node,
        addr,
        &["execute".into(), "SELECT v FROM cell".into()],
    )
    .await
    .unwrap();
    assert_eq!(field(&rows(&r)[0], "v"), &Value::Integer(want));
    node.shutdown();
    db.drop_db().await;
}

#[tokio::test]
async fn a_rejected_config_answers_with_the_reason() {
    let node = node();
    let addr = bee_mysql::start(
        &node,
        MysqlConfig {
            pool_size: 0,
            ..MysqlConfig::default()
        },
    );
    let err = call(&node, addr, &["execute".into(), "SELECT 1".into()])
        .await
        .unwrap_err();
    assert!(err.remote_text().contains("pool_size"), "{err}");
    assert_eq!(
        call(&node, addr, &["ping".into()]).await.unwrap(),
        Value::from("pong")
    );
    assert!(bee_mysql::try_start(
        &node,
        MysqlConfig {
            charset: "x;y".into(),
            ..MysqlConfig::default()
        }
    )
    .is_err());
    node.shutdown();
}

#[tokio::test]
async fn config_reads_from_toml_with_defaults() {
    let c: MysqlConfig = toml::from_str(
        r#"
        host = "db.local"
        database = "game"
        pool_size = 16
        query_timeout_ms = 2500
        "#,
    )
    .unwrap();
    assert_eq!(c.host, "db.local");
    assert_eq!(c.database.as_deref(), Some("game"));
    assert_eq!(c.pool_size, 16);
    assert_eq!(c.query_timeout(), Duration::from_millis(2500));
    assert_eq!(c.port, 3306);
    assert_eq!(c.queue_limit, 1024);
    let err = toml::from_str::<MysqlConfig>("pool_sise = 3").unwrap_err();
    assert!(err.to_string().contains("pool_sise"), "{err}");
}
