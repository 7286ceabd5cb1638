//! [`MysqlConfig`]: where the database is and how hard the pool may use it. Every key has
//! a default, so an empty `[mysql]` section means "root@127.0.0.1:3306, 8 connections".

use std::time::Duration;

use serde::Deserialize;

/// Settings of a [`MysqlPool`](crate::MysqlPool). Deserializes from a TOML/JSON section;
/// missing keys take the defaults shown on each field.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MysqlConfig {
    /// Server host name or IP address. Default `"127.0.0.1"`.
    pub host: String,
    /// Server TCP port. Default `3306`.
    pub port: u16,
    /// User name. Default `"root"`.
    pub user: String,
    /// Password. Default empty.
    pub password: String,
    /// Default database (`USE`d by every connection). Default none.
    pub database: Option<String>,
    /// Connection character set, applied with `SET NAMES` on every new connection.
    /// Letters, digits and `_` only. Default `"utf8mb4"`.
    pub charset: String,
    /// Most connections open at once, which is also the most queries running at once.
    /// Default `8`; must be at least 1.
    pub pool_size: usize,
    /// How long opening one connection (TCP + handshake + setup) may take. Default 3000.
    pub connect_timeout_ms: u64,
    /// How long one `execute` may take once it holds a connection (sending the SQL and
    /// reading every result). Past it the caller gets `PoolError::Timeout` and that
    /// connection is closed and killed on the server. Default 10000.
    pub query_timeout_ms: u64,
    /// Most callers waiting for a free connection; one more gets `PoolError::QueueFull`
    /// at once. Default 1024.
    pub queue_limit: usize,
    /// Largest packet the client accepts or sends (bytes, clamped to 1 KiB..=1 GiB).
    /// Default 1 MiB, as skynet's driver.
    pub max_packet_size: usize,
    /// An idle connection unused for at least this long is pinged before it is handed
    /// out, so a connection the server closed (restart, `wait_timeout`) is replaced
    /// instead of failing a query. `0` pings every time. Default 1000.
    pub ping_idle_ms: u64,
    /// Statements run on every new connection after `SET NAMES` (skynet's
    /// `on_connect`), e.g. `["SET time_zone = '+00:00'"]`. Default none.
    pub init_sql: Vec<String>,
}

impl Default for MysqlConfig {
    fn default() -> Self {
        MysqlConfig {
            host: "127.0.0.1".to_string(),
            port: 3306,
            user: "root".to_string(),
            password: String::new(),
            database: None,
            charset: "utf8mb4".to_string(),
            pool_size: 8,
            connect_timeout_ms: 3000,
            query_timeout_ms: 10_000,
            queue_limit: 1024,
            max_packet_size: 1024 * 1024,
            ping_idle_ms: 1000,
            init_sql: Vec::new(),
        }
    }
}

/// Why a [`MysqlConfig`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `pool_size` is 0.
    #[error("mysql pool_size must be at least 1")]
    ZeroPoolSize,
    /// `charset` has characters other than letters, digits and `_`.
    #[error("mysql charset {0:?} is not a character set name (letters, digits and _ only)")]
    BadCharset(String),
    /// `host` is empty.
    #[error("mysql host is empty")]
    EmptyHost,
}

impl MysqlConfig {
    /// Check the values that would make every connection fail.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.pool_size == 0 {
            return Err(ConfigError::ZeroPoolSize);
        }
        if self.host.is_empty() {
            return Err(ConfigError::EmptyHost);
        }
        if self.charset.is_empty()
            || !self
                .charset
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(ConfigError::BadCharset(self.charset.clone()));
        }
        Ok(())
    }

    /// `connect_timeout_ms` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// `query_timeout_ms` as a duration.
    pub fn query_timeout(&self) -> Duration {
        Duration::from_millis(self.query_timeout_ms)
    }

    /// `ping_idle_ms` as a duration.
    pub fn ping_idle(&self) -> Duration {
        Duration::from_millis(self.ping_idle_ms)
    }

    /// The mysql_async connection options these settings describe.
    pub(crate) fn to_opts(&self) -> mysql_async::Opts {
        let mut init = vec![format!("SET NAMES {}", self.charset)];
        init.extend(self.init_sql.iter().cloned());
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(Some(self.password.clone()))
            .db_name(self.database.clone())
            // Stay on the configured TCP address: never switch to the server's unix socket.
            .prefer_socket(false)
            .max_allowed_packet(Some(self.max_packet_size))
            .tcp_nodelay(true)
            .stmt_cache_size(0)
            .init(init)
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = MysqlConfig::default();
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.port, 3306);
        assert_eq!(c.user, "root");
        assert_eq!(c.pool_size, 8);
        assert_eq!(c.queue_limit, 1024);
        assert_eq!(c.max_packet_size, 1 << 20);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn validate_rejects_bad_values() {
        let c = MysqlConfig {
            pool_size: 0,
            ..Default::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::ZeroPoolSize));
        let c = MysqlConfig {
            charset: "utf8; DROP TABLE x".into(),
            ..Default::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::BadCharset(_))));
        let c = MysqlConfig {
            host: String::new(),
            ..Default::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::EmptyHost));
    }
}
