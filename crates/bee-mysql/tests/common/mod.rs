//! Shared helpers for the MariaDB-backed tests.
//!
//! - [`TestDb`]: each test gets its own database (`bee_mysql_test_<name>`) on the shared
//!   server, created fresh and dropped at the end. That server is expected at
//!   127.0.0.1:3306 as root with an empty password (override with BEE_MYSQL_HOST /
//!   BEE_MYSQL_PORT / BEE_MYSQL_USER / BEE_MYSQL_PASSWORD). When it is unreachable the
//!   tests fail, saying what is missing.
//! - [`PrivateMariaDb`]: a throw-away `mariadbd` of the test's own (temp datadir, free
//!   port on 127.0.0.1, own socket), for tests that must crash or stop the server. It
//!   never touches the shared server; the child is killed and the directory removed when
//!   the guard drops, also when the test panics.

#![allow(dead_code)]

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bee_codec::{Table, Value};
use bee_mysql::{MysqlConfig, MysqlPool, PoolError};

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

/// A test's own database; call `drop_db` at the end.
pub struct TestDb {
    pub name: String,
    pub config: MysqlConfig,
    admin: MysqlPool,
}

impl TestDb {
    /// Create `bee_mysql_test_<name>` afresh. Fails the test when MariaDB is
    /// unreachable.
    pub async fn create(name: &str) -> Option<TestDb> {
        let admin = MysqlPool::new(MysqlConfig {
            pool_size: 1,
            ..server_config()
        })
        .unwrap();
        if let Err(e) = admin.execute("SELECT 1").await {
            panic!(
                "bee-mysql test {name} needs MariaDB on 127.0.0.1:3306 (root, empty password; \
                 cargo xtask setup starts it): {e}"
            );
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

/// Where the MariaDB server binary is expected.
pub const MARIADBD: &str = "/usr/sbin/mariadbd";

/// How long a private server may take to become ready (install, start, crash recovery).
const READY_WITHIN: Duration = Duration::from_secs(20);

/// How long a private server may take to stop after SIGTERM.
const STOP_WITHIN: Duration = Duration::from_secs(20);

/// How a [`PrivateMariaDb`] is brought down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGKILL: a crash; InnoDB recovers on the next start.
    Crash,
    /// SIGTERM: a clean shutdown.
    Clean,
}

/// A private `mariadbd` child process on its own temp datadir and a free 127.0.0.1 port,
/// with root and an empty password over TCP. Stop and start it at will: it comes back on
/// the same port and datadir. Dropping it kills the child and removes the directory.
pub struct PrivateMariaDb {
    dir: PathBuf,
    port: u16,
    user: String,
    child: Option<Child>,
}

impl PrivateMariaDb {
    /// Initialise a datadir and start the server. Fails the test when `mariadbd` or
    /// `mariadb-install-db` is not installed, and on any other failure.
    pub async fn start(name: &str) -> Option<PrivateMariaDb> {
        let install_db = find_program("mariadb-install-db");
        let missing: Vec<&str> = [
            (!Path::new(MARIADBD).is_file()).then_some(MARIADBD),
            install_db.is_none().then_some("mariadb-install-db"),
        ]
        .into_iter()
        .flatten()
        .collect();
        assert!(
            missing.is_empty(),
            "bee-mysql test {name} needs the MariaDB server programs {missing:?} \
             (install mariadb-server: cargo xtask setup)"
        );
        let install_db = install_db.expect("checked above");
        let mut server = PrivateMariaDb {
            dir: make_temp_dir(name),
            port: 0,
            user: current_user(),
            child: None,
        };
        server.install(&install_db);
        // The free port is picked by binding port 0 and releasing it; should someone
        // grab it before mariadbd binds, pick another.
        for attempt in 1..=3 {
            server.port = free_port();
            match server.spawn_and_wait().await {
                Ok(()) => break,
                Err(log) if attempt < 3 && log.contains("Bind on TCP/IP port") => continue,
                Err(log) => panic!("private mariadbd did not start:\n{log}"),
            }
        }
        server.ensure_tcp_root().await;
        Some(server)
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Pool settings for this server (root, empty password, no database).
    pub fn config(&self) -> MysqlConfig {
        MysqlConfig {
            host: "127.0.0.1".to_string(),
            port: self.port,
            user: "root".to_string(),
            password: String::new(),
            ..MysqlConfig::default()
        }
    }

    /// Whether the child process is running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Bring the server down and wait until the process is gone.
    pub async fn stop(&mut self, how: Stop) {
        let mut child = self
            .child
            .take()
            .expect("the private mariadbd is not running");
        match how {
            Stop::Crash => {
                child.kill().expect("SIGKILL the private mariadbd");
                child.wait().expect("reap the private mariadbd");
            }
            Stop::Clean => {
                let status = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status()
                    .expect("run kill -TERM");
                assert!(status.success(), "kill -TERM failed: {status}");
                let deadline = Instant::now() + STOP_WITHIN;
                loop {
                    if child
                        .try_wait()
                        .expect("poll the private mariadbd")
                        .is_some()
                    {
                        break;
                    }
                    if Instant::now() >= deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!(
                            "private mariadbd did not stop within {STOP_WITHIN:?} of SIGTERM:\n{}",
                            self.log_tail()
                        );
                    }
                    // Async sleep: tasks using the pool keep running meanwhile.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Start the server again on the same port and datadir and wait until it serves.
    pub async fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "the private mariadbd is still running"
        );
        if let Err(log) = self.spawn_and_wait().await {
            panic!(
                "private mariadbd did not restart on port {}:\n{log}",
                self.port
            );
        }
    }

    fn datadir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("sock")
    }

    fn error_log(&self) -> PathBuf {
        self.dir.join("error.log")
    }

    /// The options both install-db and the server get, after `--no-defaults`: small
    /// buffers and redo log, no binary log, no DNS.
    fn light_options(&self) -> Vec<String> {
        vec![
            format!("--datadir={}", self.datadir().display()),
            format!("--user={}", self.user),
            "--skip-log-bin".to_string(),
            "--skip-name-resolve".to_string(),
            "--innodb-buffer-pool-size=16M".to_string(),
            "--innodb-log-file-size=4M".to_string(),
            "--innodb-buffer-pool-load-at-startup=0".to_string(),
            "--innodb-buffer-pool-dump-at-shutdown=0".to_string(),
            format!("--tmpdir={}", self.dir.display()),
        ]
    }

    fn install(&self, install_db: &Path) {
        let out = Command::new(install_db)
            .arg("--no-defaults")
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .args(self.light_options())
            .stdin(Stdio::null())
            .output()
            .expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Spawn mariadbd and wait until a query over TCP works. `Err` holds the error log.
    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("mariadbd.out"))
            .expect("open the mariadbd output file");
        let child = Command::new(MARIADBD)
            .arg("--no-defaults")
            .args(self.light_options())
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!(
                "--pid-file={}",
                self.dir.join("mariadbd.pid").display()
            ))
            .arg(format!("--log-error={}", self.error_log().display()))
            // On a restart the old socket may linger in TIME_WAIT: retry binding a while.
            .arg("--port-open-timeout=10")
            .arg("--max-connections=64")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup the output file"))
            .stderr(out)
            .spawn()
            .expect("spawn mariadbd");
        self.child = Some(child);
        let probe = MysqlPool::new(MysqlConfig {
            pool_size: 1,
            connect_timeout_ms: 500,
            ..self.config()
        })
        .expect("probe config");
        let deadline = Instant::now() + READY_WITHIN;
        let result = loop {
            if !self.is_running() {
                let status = self.child.take().and_then(|mut c| c.wait().ok());
                break Err(format!(
                    "mariadbd exited ({status:?}):\n{}",
                    self.log_tail()
                ));
            }
            match probe.execute("SELECT 1").await {
                Ok(_) => break Ok(()),
                // Up, but root may not log in over TCP: `ensure_tcp_root` fixes that.
                Err(PoolError::Connect { reason }) if is_access_denied(&reason) => break Ok(()),
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    break Err(format!(
                        "not serving within {READY_WITHIN:?} ({e}):\n{}",
                        self.log_tail()
                    ))
                }
            }
        };
        probe.close().await;
        if result.is_err() {
            self.kill_child();
        }
        result
    }

    /// A fresh install-db with `normal` auth creates root@127.0.0.1 without a password;
    /// should this one not have, create it over the unix socket as root@localhost.
    async fn ensure_tcp_root(&self) {
        let probe = MysqlPool::new(MysqlConfig {
            pool_size: 1,
            ..self.config()
        })
        .expect("probe config");
        let first = probe.execute("SELECT 1").await;
        probe.close().await;
        match first {
            Ok(_) => return,
            Err(PoolError::Connect { reason }) if is_access_denied(&reason) => {}
            Err(e) => panic!("private mariadbd on port {}: {e}", self.port),
        }
        let client = find_program("mariadb")
            .or_else(|| find_program("mysql"))
            .expect("root cannot log in over TCP and no mariadb client to fix it");
        let out = Command::new(client)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-uroot", "-e"])
            .arg(
                "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; \
                 GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;",
            )
            .stdin(Stdio::null())
            .output()
            .expect("run the mariadb client");
        assert!(
            out.status.success(),
            "could not create root@127.0.0.1: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let probe = MysqlPool::new(self.config()).expect("probe config");
        if let Err(e) = probe.execute("SELECT 1").await {
            panic!("root still cannot log in over TCP: {e}");
        }
        probe.close().await;
    }

    /// The end of the server's error log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.error_log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn kill_child(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        self.kill_child();
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("could not remove {}: {e}", self.dir.display());
        }
    }
}

fn is_access_denied(reason: &str) -> bool {
    reason.contains("1045") || reason.contains("1130") || reason.contains("Access denied")
}

/// `name` in PATH, or in the usual system directories (sbin is often not in PATH).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The login name to run mariadbd as (root here; `--user=root` is then required).
fn current_user() -> String {
    Command::new("id")
        .arg("-un")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "root".to_string())
}

use bee_testkit::free_port;

/// A new, empty, short-named directory under the system temp dir (the unix socket path
/// inside it must stay under 108 bytes).
fn make_temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "bee-mysql-{name}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}
