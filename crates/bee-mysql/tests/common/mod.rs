//! Shared helpers for the MariaDB-backed tests: each test gets its own database
//! (`bee_mysql_test_<name>`), created fresh and dropped at the end.
//!
//! MariaDB is expected at 127.0.0.1:3306 as root with an empty password (override with
//! BEE_MYSQL_HOST / BEE_MYSQL_PORT / BEE_MYSQL_USER / BEE_MYSQL_PASSWORD). When it is
//! unreachable the tests skip with a loud message, unless CI is set: then it is a failure.

#![allow(dead_code)]

use bee_codec::{Table, Value};
use bee_mysql::{MysqlConfig, MysqlPool};

/// The server settings for tests, without a database.
pub fn server_config() -> MysqlConfig {
    let mut c = MysqlConfig::default();
    if let Ok(h) = std::env::var("BEE_MYSQL_HOST") {
        c.host = h;
    }
    if let Some(p) = std::env::var("BEE_MYSQL_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
    {
        c.port = p;
    }
    if let Ok(u) = std::env::var("BEE_MYSQL_USER") {
        c.user = u;
    }
    if let Ok(p) = std::env::var("BEE_MYSQL_PASSWORD") {
        c.password = p;
    }
    c
}

fn in_ci() -> bool {
    std::env::var("CI").map(|v| !v.is_empty()).unwrap_or(false)
}

/// A test's own database; call `drop_db` at the end.
pub struct TestDb {
    pub name: String,
    pub config: MysqlConfig,
    admin: MysqlPool,
}

impl TestDb {
    /// Create `bee_mysql_test_<name>` afresh. `None` (after a loud message) when MariaDB
    /// is unreachable outside CI; panics under CI.
    pub async fn create(name: &str) -> Option<TestDb> {
        let admin = MysqlPool::new(MysqlConfig {
            pool_size: 1,
            ..server_config()
        })
        .unwrap();
        if let Err(e) = admin.execute("SELECT 1").await {
            if in_ci() {
                panic!("MariaDB is unreachable under CI ({e}); .ci/run must start it first");
            }
            eprintln!(
                "\n!!!!!!!! SKIPPING bee-mysql test {name}: MariaDB unreachable ({e}).\n\
                 !!!!!!!! Start MariaDB on 127.0.0.1:3306 (root, empty password) to run it.\n"
            );
            return None;
        }
        let db = format!("bee_mysql_test_{name}");
        ok(&admin
            .execute(&format!("DROP DATABASE IF EXISTS {db}"))
            .await
            .unwrap());
        ok(&admin
            .execute(&format!(
                "CREATE DATABASE {db} CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
            ))
            .await
            .unwrap());
        let config = MysqlConfig {
            database: Some(db.clone()),
            ..server_config()
        };
        Some(TestDb {
            name: db,
            config,
            admin,
        })
    }

    /// A pool on this database with `edit` applied to its config.
    pub fn pool(&self, edit: impl FnOnce(&mut MysqlConfig)) -> MysqlPool {
        let mut c = self.config.clone();
        edit(&mut c);
        MysqlPool::new(c).unwrap()
    }

    /// Drop the database.
    pub async fn drop_db(self) {
        ok(&self
            .admin
            .execute(&format!("DROP DATABASE IF EXISTS {}", self.name))
            .await
            .unwrap());
        self.admin.close().await;
    }
}

/// The value as a table (panics with the value otherwise).
pub fn table(v: &Value) -> &Table {
    v.as_table()
        .unwrap_or_else(|| panic!("expected a table, got {v}"))
}

/// Assert `v` is an OK table (no badresult) and return it.
pub fn ok(v: &Value) -> &Table {
    let t = table(v);
    assert!(t.get_str("badresult").is_none(), "SQL failed: {v}");
    t
}

/// Field `key` of a table.
pub fn field<'a>(t: &'a Table, key: &str) -> &'a Value {
    t.get_str(key)
        .unwrap_or_else(|| panic!("no field {key:?} in {}", Value::Table(t.clone())))
}

/// The rows of a SELECT result.
pub fn rows(v: &Value) -> Vec<Table> {
    let t = ok(v);
    assert!(t.hash.is_empty(), "a row list has no named fields: {v}");
    t.array
        .iter()
        .map(|r| r.as_table().expect("a row is a table").clone())
        .collect()
}
