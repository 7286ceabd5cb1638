//! Private network namespaces, and private Redis and MariaDB servers inside them, for
//! tests that run programs hard-coding `127.0.0.1` and a standard port (skynet's own
//! `testredis.lua`, `testmysql.lua`, …): inside a [`NetNs`], `127.0.0.1:6379` and
//! `127.0.0.1:3306` are servers the test started ([`PrivateRedis`], [`PrivateMariadb`])
//! with their data in a temporary directory, so the machine's own servers and their
//! data are never touched.
//!
//! Programs are run inside with `ip netns exec` ([`NetNs::command`]), which also
//! bind-mounts `/etc/netns/NAME/hosts` (and `resolv.conf`) over `/etc/…` for them
//! ([`NetNs::etc_file`]), and a namespace can be linked to the test's own
//! ([`NetNs::link`]) to reach a server the test runs. Everything is undone on drop: servers are killed, the namespace
//! and its `/etc/netns` directory are removed. Making a namespace needs root
//! (`CAP_SYS_ADMIN`); without it, or without `ip`, `redis-server`, `mariadbd`, the
//! constructors panic saying what is missing: a test that cannot run fails.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a private server may take to get ready.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Run `cmd` to completion; panics with its output (and `hint`) when it cannot be run
/// or fails.
fn run(mut cmd: Command, hint: &str) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} ({hint})"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}({hint})",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace of its own with its loopback up, deleted on drop.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// A new namespace named after `tag`, this process and a counter.
    pub fn new(tag: &str) -> NetNs {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "bee-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let hint = "a private network namespace needs root (CAP_SYS_ADMIN) and iproute2's `ip`";
        let mut add = Command::new("ip");
        add.args(["netns", "add", &name]);
        run(add, hint);
        let ns = NetNs { name };
        let mut up = Command::new("ip");
        up.args(["-n", &ns.name, "link", "set", "lo", "up"]);
        run(up, hint);
        ns
    }

    /// Its name (`ip netns` lists it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command running `program` inside the namespace (`ip netns exec NAME program`;
    /// `ip` execs it, so the child's pid is the program's).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Write `/etc/netns/NAME/FILE`, which programs started by [`NetNs::command`] see as
    /// `/etc/FILE` (`hosts`, `resolv.conf`). Removed with the namespace.
    pub fn etc_file(&self, file: &str, contents: &str) {
        let dir = self.etc_dir();
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("create {}: {e} (needs root)", dir.display()));
        std::fs::write(dir.join(file), contents)
            .unwrap_or_else(|e| panic!("write {}/{file}: {e}", dir.display()));
    }

    /// Link the namespace to the test's own with a veth pair on a /30 of its own
    /// (`10.213.x.y`, reserved for this process like [`crate::free_port`]'s ports):
    /// returns (the address on the test's side, the address inside). A server the test
    /// runs on the first is reachable from inside at that address. The pair goes with
    /// the namespace.
    pub fn link(&self) -> (Ipv4Addr, Ipv4Addr) {
        let n = reserve_subnet();
        let base = 0x0AD5_0000u32 + n * 4; // 10.213.0.0/16 in /30s
        let (outer, inner) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
        let (a, b) = (format!("beeo{n}"), format!("beei{n}"));
        let ip = |args: &[&str]| {
            let mut cmd = Command::new("ip");
            cmd.args(args);
            run(
                cmd,
                "linking a network namespace needs root and iproute2's `ip`",
            );
        };
        // One left by a test process that was killed holding the same number.
        let _ = Command::new("ip")
            .args(["link", "delete", &a])
            .stderr(Stdio::null())
            .status();
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        ip(&["link", "set", &b, "netns", &self.name]);
        ip(&["addr", "add", &format!("{outer}/30"), "dev", &a]);
        ip(&["link", "set", &a, "up"]);
        ip(&[
            "-n",
            &self.name,
            "addr",
            "add",
            &format!("{inner}/30"),
            "dev",
            &b,
        ]);
        ip(&["-n", &self.name, "link", "set", &b, "up"]);
        (outer, inner)
    }

    fn etc_dir(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.name)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(self.etc_dir());
    }
}

/// A /30 number (0..16384) no other test process holds, held until this one exits.
fn reserve_subnet() -> u32 {
    static HELD: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("bee-test-subnets");
    std::fs::create_dir_all(&dir).expect("create the subnet reservation dir");
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    let start = std::process::id().wrapping_mul(2_654_435_761) % 16_384;
    for i in 0..16_384 {
        let n = (start + i) % 16_384;
        let Ok(lock) = std::fs::File::create(dir.join(format!("{n}.lock"))) else {
            continue;
        };
        if lock.try_lock().is_ok() {
            held.push(lock);
            return n;
        }
    }
    panic!("no free test subnet in 10.213.0.0/16")
}

/// A child process killed and reaped on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait until the file `log` contains `marker`; panics with the log when `child` exits
/// first or `within` passes.
fn wait_for_log(child: &mut Guard, what: &str, log: &Path, marker: &str) {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(marker) {
            return;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("{what} exited before it was ready ({status}):\n{text}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} was not ready within {READY_WITHIN:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `redis-server` of its own on `127.0.0.1:PORT` inside a namespace: no persistence,
/// its working directory in the caller's directory; killed on drop.
pub struct PrivateRedis {
    _child: Guard,
}

impl PrivateRedis {
    /// Start it in `ns` with its files under `dir`; returns once it accepts connections.
    pub fn start(ns: &NetNs, dir: &Path, port: u16) -> PrivateRedis {
        let dir = dir.join("redis");
        std::fs::create_dir_all(&dir).expect("create the redis dir");
        let log = dir.join("redis.log");
        let mut cmd = ns.command("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = Guard(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("cannot start redis-server ({cmd:?}): {e}")),
        );
        wait_for_log(
            &mut child,
            "redis-server",
            &log,
            "Ready to accept connections",
        );
        PrivateRedis { _child: child }
    }
}

/// A `mariadbd` of its own on `127.0.0.1:PORT` inside a namespace, with a fresh data
/// directory (`mariadb-install-db`) under the caller's directory, a database and a user
/// with a password made for the test; killed on drop.
pub struct PrivateMariadb {
    _child: Guard,
    socket: PathBuf,
}

/// What a [`PrivateMariadb`] is made with.
pub struct MariadbSetup<'a> {
    /// The TCP port inside the namespace.
    pub port: u16,
    /// A database created empty.
    pub database: &'a str,
    /// A user (`USER@127.0.0.1`, every privilege) the program connects as over TCP.
    pub user: &'a str,
    /// Its password (`mysql_native_password`).
    pub password: &'a str,
}

impl PrivateMariadb {
    /// Initialise a data directory under `dir`, start the server in `ns` and create the
    /// database and user; returns once they exist.
    pub fn start(ns: &NetNs, dir: &Path, setup: &MariadbSetup<'_>) -> PrivateMariadb {
        let dir = dir.join("mariadb");
        let data = dir.join("data");
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).expect("create the mariadb dirs");
        // Small redo logs: a data directory of ~20 MB instead of ~110 MB. Temporary
        // tables in a directory of its own: servers sharing /tmp can clash on their names.
        let common = [
            "--no-defaults".to_string(),
            "--innodb-log-file-size=4M".to_string(),
            format!("--tmpdir={}", tmp.display()),
        ];
        let mut install = Command::new("mariadb-install-db");
        install
            .args(&common)
            .arg(format!("--datadir={}", data.display()))
            .args(["--user=root", "--skip-test-db"])
            .args(["--auth-root-authentication-method=socket"]);
        run(install, "making a private MariaDB's data directory");
        let socket = dir.join("mysqld.sock");
        let log = dir.join("mariadbd.log");
        let mut cmd = ns.command("mariadbd");
        cmd.args(&common)
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", log.display()))
            .arg(format!("--port={}", setup.port))
            .args(["--bind-address=127.0.0.1", "--skip-name-resolve"])
            .args(["--user=root", "--skip-log-bin"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = Guard(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("cannot start mariadbd ({cmd:?}): {e}")),
        );
        wait_for_log(&mut child, "mariadbd", &log, "ready for connections");
        let db = PrivateMariadb {
            _child: child,
            socket,
        };
        let (user, password) = (setup.user, setup.password);
        db.sql(&format!(
            "CREATE DATABASE `{}`; \
             CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'; \
             GRANT ALL PRIVILEGES ON *.* TO '{user}'@'127.0.0.1';",
            setup.database
        ));
        db
    }

    /// Run `sql` as the server's root over its Unix socket (outside the namespace);
    /// what the client printed (tab-separated rows, no column names).
    pub fn sql(&self, sql: &str) -> String {
        let mut client = Command::new("mariadb");
        client
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-uroot", "-N", "-B", "-e", sql]);
        run(client, "the private MariaDB needs the mariadb client")
    }
}
