//! Services and tools the tests and the demo need, started (or installed) when missing:
//! MariaDB ([`ensure_mariadb`]), and `protoc` with the `etcd` server for bee-etcd
//! ([`ensure_etcd_tools`]), `ip`/`iptables` for bee-transport's black-hole test and
//! `redis-server` for the Lua differential tests' private Redis ([`ensure_net_tools`]),
//! and Debian's `chromium` for the status page's browser test
//! ([`ensure_chromium`]).
//!
//! A machine of this kind usually runs MariaDB on 127.0.0.1:3306 (root, empty password).
//! A fresh machine or CI may not: then the Debian package is installed with apt-get and
//! the server started, and root is allowed to log in over TCP with an empty password
//! (the tests and the demo use their own databases on that server).

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const MARIADB: &str = "127.0.0.1:3306";

fn reachable(addr: &str) -> bool {
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(_) => return false,
    };
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

fn run(cmd: &mut Command) -> Result<bool> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    Ok(status.success())
}

fn sql_as_root_over_tcp(sql: &str) -> bool {
    Command::new("mariadb")
        .args(["-h127.0.0.1", "-P3306", "-uroot", "-e", sql])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Make sure Debian's `chromium` is installed: the status page's test loads the page in
/// headless Chromium.
pub fn ensure_chromium() -> Result<()> {
    if Path::new("/usr/bin/chromium").exists() {
        eprintln!("setup: chromium is installed");
        return Ok(());
    }
    crate::apt_install(&["chromium"])?;
    if !Path::new("/usr/bin/chromium").exists() {
        bail!("chromium installed but /usr/bin/chromium is still missing");
    }
    eprintln!("setup: chromium is installed");
    Ok(())
}

/// Make sure MariaDB answers on 127.0.0.1:3306 and root can log in there with an empty
/// password; install and start it when it is missing.
pub fn ensure_mariadb() -> Result<()> {
    if reachable(MARIADB) && sql_as_root_over_tcp("SELECT 1") {
        eprintln!("setup: MariaDB is up on {MARIADB}");
        return Ok(());
    }
    if !Path::new("/usr/sbin/mariadbd").exists() {
        eprintln!("setup: MariaDB is not installed; installing the Debian package mariadb-server");
        if !run(Command::new("apt-get").arg("update").arg("-q"))? {
            bail!("apt-get update failed; install mariadb-server by hand and retry");
        }
        if !run(Command::new("apt-get")
            .args(["install", "-y", "-q", "mariadb-server", "mariadb-client"])
            .env("DEBIAN_FRONTEND", "noninteractive"))?
        {
            bail!("apt-get install mariadb-server failed; install it by hand and retry");
        }
    }
    if !reachable(MARIADB) {
        eprintln!("setup: starting MariaDB");
        let _ = std::fs::create_dir_all("/run/mysqld");
        let _ = Command::new("chown")
            .args(["mysql:mysql", "/run/mysqld"])
            .status();
        run(Command::new("start-stop-daemon").args([
            "--start",
            "--oknodo",
            "--background",
            "--exec",
            "/usr/sbin/mariadbd",
        ]))?;
        let started = Instant::now();
        while !reachable(MARIADB) {
            if started.elapsed() > Duration::from_secs(60) {
                bail!("MariaDB did not come up on {MARIADB} within 60 s (see its error log under /var/log/mysql or /var/lib/mysql)");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    if !sql_as_root_over_tcp("SELECT 1") {
        // A fresh Debian install lets root in only through the unix socket.
        eprintln!("setup: allowing root@127.0.0.1 with an empty password (test server only)");
        let ok = run(Command::new("mariadb").args([
            "-uroot",
            "-e",
            "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; \
             GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; \
             ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD(''); \
             FLUSH PRIVILEGES;",
        ]))?;
        if !ok || !sql_as_root_over_tcp("SELECT 1") {
            bail!("MariaDB is up but root cannot log in over TCP with an empty password");
        }
    }
    eprintln!("setup: MariaDB is up on {MARIADB}");
    Ok(())
}

/// Make sure the tools bee-etcd needs are installed: `protoc` (Debian's protobuf-compiler;
/// the etcd-client crate compiles etcd's `.proto` files with it at build time, so this must
/// run before `cargo build --workspace`) and the `etcd` server (Debian's etcd-server; the
/// bee-etcd tests start their own `etcd` on free loopback ports, nothing is started here).
/// Installs the missing ones with apt-get.
pub fn ensure_etcd_tools() -> Result<()> {
    // Whether `program --version` runs (the program is on PATH and works).
    let runs = |program: &str| {
        Command::new(program)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    let mut missing: Vec<&str> = Vec::new();
    if !runs("protoc") {
        missing.push("protobuf-compiler");
    }
    if !Path::new("/usr/bin/etcd").exists() && !runs("etcd") {
        missing.push("etcd-server");
    }
    if missing.is_empty() {
        eprintln!("setup: protoc and etcd are installed");
        return Ok(());
    }
    crate::apt_install(&missing)?;
    if !runs("protoc") {
        bail!("protobuf-compiler is installed but `protoc --version` does not run");
    }
    if !Path::new("/usr/bin/etcd").exists() && !runs("etcd") {
        bail!("etcd-server is installed but no etcd binary is found");
    }
    eprintln!("setup: protoc and etcd are installed");
    Ok(())
}

/// Make sure `ip` (Debian's iproute2) and `iptables` are installed: bee-transport's
/// black-hole test (`crates/bee-transport/tests/blackhole.rs`) builds a network namespace
/// and drops a peer's packets with them (it also needs root; without either it fails,
/// saying what is missing); and `redis-server`, which the Lua differential tests start privately in
/// network namespaces of their own. Installs the missing ones with apt-get.
pub fn ensure_net_tools() -> Result<()> {
    let have = |program: &str| {
        ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(program).exists())
    };
    let mut missing: Vec<&str> = Vec::new();
    if !have("ip") {
        missing.push("iproute2");
    }
    if !have("iptables") {
        missing.push("iptables");
    }
    if !have("redis-server") {
        missing.push("redis-server");
    }
    if missing.is_empty() {
        eprintln!("setup: ip, iptables and redis-server are installed");
        return Ok(());
    }
    crate::apt_install(&missing)?;
    if !have("ip") || !have("iptables") || !have("redis-server") {
        bail!(
            "{} installed but ip, iptables or redis-server is still missing",
            missing.join(" ")
        );
    }
    eprintln!("setup: ip, iptables and redis-server are installed");
    Ok(())
}

/// Everything the build, the tests and the demo need on this machine: MariaDB running,
/// `protoc` and the etcd server, the C/C++ toolchain and protobuf headers, `ip` and
/// `iptables` for the black-hole test, and `redis-server`.
pub fn ensure_all() -> Result<()> {
    ensure_etcd_tools()?;
    ensure_net_tools()?;
    ensure_chromium()?;
    crate::cpp::ensure_packages()?;
    ensure_mariadb()
}
