//! Helpers shared by the integration tests: start real `bee` processes on loopback,
//! write their configs, and talk to them from an in-process client node.
//!
//! Every node gets a free port on 127.0.0.1 and its own temporary directory. A
//! [`BeeProcess`] is killed when dropped, so a failing test leaves nothing running.
//! Ports, waits, temporary directories and process start-up come from `bee-testkit`,
//! re-exported here.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use bee_testkit::netns::NetNs;
use bee_testkit::{NodeProcess, Start};

use bee_cluster::{Cluster, ClusterSettings};
use bee_registry::{ClusterConfig, Registry};
use bee_runtime::{Node, RuntimeConfig};

pub use bee_testkit::{eventually, free_port, wait_for, wait_until, wait_until_async, TempDir};

/// Build the node binaries (`bee` and `bee-demo`) once per test process if they are
/// missing or stale; returns the directory holding them. With `BEE_TEST_PREBUILT=1`
/// (set by `cargo xtask stress`, which built them) cargo is not run: a test run then
/// never waits for another cargo holding the build directory's lock.
fn built_bins() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        bee_testkit::build_bins(
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
            &["-p", "bee-node", "-p", "bee-demo", "--bins"],
        )
    })
}

fn bin(name: &str) -> PathBuf {
    let bin = built_bins().join(name);
    assert!(bin.exists(), "{name} binary not found at {}", bin.display());
    bin
}

/// Path of the production `bee` binary (built-in service kinds only).
pub fn bee_bin() -> PathBuf {
    bin("bee")
}

/// Path of the `bee-demo` binary: `bee` plus the demo game's service kinds.
pub fn demo_bin() -> PathBuf {
    bin("bee-demo")
}

/// A cluster layout for a test: node names with their loopback ports, written as a
/// skynet clustername file.
pub struct Layout {
    /// Where configs and logs go.
    pub dir: TempDir,
    /// (node name, port), in the order given.
    pub nodes: Vec<(String, u16)>,
}

impl Layout {
    /// Free ports for these node names; writes `cluster.lua`.
    pub fn new(names: &[&str]) -> Layout {
        let dir = TempDir::new(names.first().copied().unwrap_or("cluster"));
        let nodes = names.iter().map(|n| (n.to_string(), free_port())).collect();
        let l = Layout { dir, nodes };
        l.write_cluster(&[]);
        l
    }

    /// The port of `node`.
    pub fn port(&self, node: &str) -> u16 {
        self.nodes
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, p)| *p)
            .unwrap_or_else(|| panic!("node {node} not in this layout"))
    }

    /// Path of the clustername file.
    pub fn cluster_file(&self) -> PathBuf {
        self.dir.path().join("cluster.lua")
    }

    /// (Re)write the clustername file: every node, plus `extra` raw lines.
    pub fn write_cluster(&self, extra: &[&str]) {
        let mut text = String::from("-- written by bee-tests\n");
        for (n, p) in &self.nodes {
            text.push_str(&format!("{n} = \"127.0.0.1:{p}\"\n"));
        }
        for e in extra {
            text.push_str(e);
            text.push('\n');
        }
        std::fs::write(self.cluster_file(), text).expect("write cluster.lua");
    }

    /// The cluster config as the file says.
    pub fn config(&self) -> ClusterConfig {
        ClusterConfig::load(&self.cluster_file()).expect("load cluster.lua")
    }

    /// Start node `name` with this node-config body (TOML after the name/cluster lines),
    /// e.g. `[[service]]\nkind = "echo"\nname = "echo"\n`.
    pub fn start(&self, name: &str, services_toml: &str) -> BeeProcess {
        self.start_with(&bee_bin(), name, services_toml)
    }

    /// [`Layout::start`] with another node binary (e.g. [`demo_bin`]).
    pub fn start_with(&self, bin: &Path, name: &str, services_toml: &str) -> BeeProcess {
        let path = self.dir.path().join(format!("{name}.toml"));
        let text = format!(
            "name = \"{name}\"\ncluster = \"cluster.lua\"\ncall_timeout_ms = 10000\n{services_toml}"
        );
        std::fs::write(&path, text).expect("write node config");
        BeeProcess::start_bin(bin, name, &path)
    }

    /// [`Layout::start`] with the node's stderr (its log, `BEE_LOG=warn` unless set) kept
    /// in `<dir>/<name>.log`, readable with [`BeeProcess::log`].
    pub fn start_logged(&self, name: &str, services_toml: &str) -> BeeProcess {
        let path = self.dir.path().join(format!("{name}.toml"));
        let text = format!(
            "name = \"{name}\"\ncluster = \"cluster.lua\"\ncall_timeout_ms = 10000\n{services_toml}"
        );
        std::fs::write(&path, text).expect("write node config");
        let log = self.dir.path().join(format!("{name}.log"));
        BeeProcess::spawn(&bee_bin(), name, &path, Some(&log))
    }

    /// An in-process client node (not listening) that can call the layout's nodes.
    pub fn client(&self, call_timeout: Duration) -> (Node, Cluster) {
        let mut settings = ClusterSettings::default();
        settings.channel.call_timeout = call_timeout;
        self.client_with(settings)
    }

    /// [`Layout::client`] with its own cluster settings (liveness, limits, ...); it does
    /// not wait for nodes missing from the config.
    pub fn client_with(&self, mut settings: ClusterSettings) -> (Node, Cluster) {
        let node = Node::new(
            format!("test-client-{}", free_port()),
            RuntimeConfig::default(),
        );
        settings.wait_for_node = Some(Duration::ZERO);
        let cluster = Cluster::start(&node, Registry::new(self.config()), settings);
        (node, cluster)
    }
}

/// How [`BeeProcess::spawn_with`] starts a node.
#[derive(Default)]
struct Spawn<'a> {
    /// Its stderr, appended; inherited when none.
    log: Option<&'a Path>,
    /// Arguments after `run CONFIG`.
    extra: &'a [&'a str],
    /// A file its stdout lines are appended to.
    capture: Option<&'a Path>,
    /// The network namespace it runs in; the test's own when none.
    netns: Option<&'a NetNs>,
    /// A stdin pipe instead of `/dev/null`.
    stdin: bool,
}

/// A running `bee run` process, killed on drop.
pub struct BeeProcess {
    /// The node's name.
    pub name: String,
    process: NodeProcess,
    config: PathBuf,
    log: Option<PathBuf>,
    bin: PathBuf,
}

impl BeeProcess {
    /// Start `bee run CONFIG` and wait until it says it listens (at most 30 s).
    pub fn start(name: &str, config: &Path) -> BeeProcess {
        Self::start_bin(&bee_bin(), name, config)
    }

    /// Start `BIN run CONFIG` (a node binary built on `bee_node::App`).
    pub fn start_bin(bin: &Path, name: &str, config: &Path) -> BeeProcess {
        Self::spawn(bin, name, config, None)
    }

    /// Start `BIN run CONFIG`, its stderr into `log` (appended) or inherited.
    fn spawn(bin: &Path, name: &str, config: &Path, log: Option<&Path>) -> BeeProcess {
        Self::spawn_with(
            bin,
            name,
            config,
            Spawn {
                log,
                ..Spawn::default()
            },
        )
    }

    /// Start `BIN run CONFIG` with every line it writes to stdout also appended to
    /// `stdout` (what skynet's Lua layer prints: `print` and, without an `[env] logger`
    /// file, its log lines).
    pub fn start_capturing(bin: &Path, name: &str, config: &Path, stdout: &Path) -> BeeProcess {
        Self::start_capturing_in(None, false, bin, name, config, stdout)
    }

    /// [`BeeProcess::start_capturing`] inside the network namespace `netns` (if any),
    /// with a stdin pipe ([`BeeProcess::write_stdin`]) if `stdin`.
    pub fn start_capturing_in(
        netns: Option<&NetNs>,
        stdin: bool,
        bin: &Path,
        name: &str,
        config: &Path,
        stdout: &Path,
    ) -> BeeProcess {
        Self::spawn_with(
            bin,
            name,
            config,
            Spawn {
                capture: Some(stdout),
                netns,
                stdin,
                ..Spawn::default()
            },
        )
    }

    fn spawn_with(bin: &Path, name: &str, config: &Path, how: Spawn<'_>) -> BeeProcess {
        let mut cmd = match how.netns {
            Some(ns) => ns.command(bin),
            None => Command::new(bin),
        };
        cmd.arg("run").arg(config).args(how.extra).env(
            "BEE_LOG",
            std::env::var("BEE_LOG").unwrap_or_else(|_| "warn".into()),
        );
        let process = NodeProcess::start(
            cmd,
            Start {
                log: how.log,
                capture: how.capture,
                stdin: how.stdin,
                // A node config's node listens; a skynet config's (`*.config`, not
                // `*.toml`) says it is ready.
                ready: if config.extension().is_some_and(|e| e == "toml") {
                    "listening on"
                } else {
                    " ready: skynet config "
                },
                ..Start::listening(name)
            },
        );
        BeeProcess {
            name: name.to_string(),
            process,
            config: config.to_path_buf(),
            log: how.log.map(Path::to_path_buf),
            bin: bin.to_path_buf(),
        }
    }

    /// Start `BIN run CONFIG` with its stderr kept in the layout's `<name>.log` (see
    /// [`Layout::start_logged`]).
    pub fn start_logged_bin(bin: &Path, name: &str, config: &Path, layout: &Layout) -> BeeProcess {
        let log = layout.dir.path().join(format!("{name}.log"));
        BeeProcess::spawn(bin, name, config, Some(&log))
    }

    /// Hot update in place: start `bin` (default: the same binary) on the same config
    /// with `--takeover`, wait until it serves, then until this process exited after
    /// handing over (at most 30 s). Returns whether the old process exited cleanly.
    pub fn take_over(&mut self, bin: Option<&Path>) -> bool {
        let bin = bin.map_or_else(|| self.bin.clone(), Path::to_path_buf);
        let new = BeeProcess::spawn_with(
            &bin,
            &self.name,
            &self.config,
            Spawn {
                log: self.log.as_deref(),
                extra: &["--takeover"],
                ..Spawn::default()
            },
        );
        let mut old = std::mem::replace(self, new);
        match old.process.take() {
            Some(c) => bee_testkit::exits_cleanly(c, Duration::from_secs(30)),
            None => false,
        }
    }

    /// What the node wrote to stderr so far (empty unless started with a log, e.g. by
    /// [`Layout::start_logged`]).
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Write to its stdin (started with a stdin pipe).
    pub fn write_stdin(&mut self, bytes: &[u8]) {
        self.process.write_stdin(bytes);
    }

    /// Kill with SIGKILL (a crash, no clean shutdown) and reap it.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// Stop with SIGTERM and wait for a clean exit; returns whether it exited 0.
    pub fn terminate(&mut self) -> bool {
        self.process.terminate(Duration::from_secs(10))
    }

    /// Wait (at most `within`) for the process to exit by itself (a drain asked for
    /// over the status listener, say); whether it exited 0. Killed after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> bool {
        match self.process.take() {
            Some(c) => bee_testkit::exits_cleanly(c, within),
            None => false,
        }
    }

    /// Start the same node again from its config (after a kill).
    pub fn restart(&mut self) {
        self.kill9();
        let bin = self.bin.clone();
        let again = BeeProcess::spawn(&bin, &self.name, &self.config, self.log.as_deref());
        *self = again;
    }
}

/// `GET path` from 127.0.0.1:`port` over HTTP/1.0 (a node's `metrics_listen`): the
/// status code and the body. Panics when the node does not answer within 10 s.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    http_request(port, "GET", path, &[], b"")
}

/// `METHOD path` with `headers` and `body` to 127.0.0.1:`port` over HTTP/1.0: the
/// status code and the body. Panics when the node does not answer within 10 s.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("cannot connect to 127.0.0.1:{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: bee-tests\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if method != "GET" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("{method} {path} to port {port}: {e}"));
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status line in {head:?}"));
    (status, body.to_string())
}

/// Run the `bee` binary as a one-shot client; returns (exit ok, stdout, stderr).
pub fn bee_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bee_bin())
        .args(args)
        .env("BEE_LOG", "warn")
        .output()
        .expect("cannot run bee");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A built stock skynet v1.6.0 tree (a test peer): `SKYNET_DIR` when set, else the one
/// `cargo xtask skynet` builds under `target/skynet/` (run here once per test process,
/// under a file lock; it rebuilds only when its source changed). Panics with that
/// command's error — which names every place the source is looked for — when there is
/// no skynet to be had: a test that needs skynet fails without one, it does not skip.
pub fn skynet_dir() -> PathBuf {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("SKYNET_DIR") {
            let dir = PathBuf::from(dir);
            return if dir.join("skynet").is_file() {
                Ok(dir)
            } else {
                Err(format!(
                    "SKYNET_DIR={} holds no skynet binary",
                    dir.display()
                ))
            };
        }
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        std::fs::create_dir_all(root.join("target")).map_err(|e| e.to_string())?;
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new("flock")
            .arg(root.join("target/.skynet.lock"))
            .arg(cargo)
            .args(["xtask", "skynet"])
            .current_dir(&root)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run flock cargo xtask skynet: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        match stdout.lines().last().map(PathBuf::from) {
            Some(dir) if out.status.success() && dir.join("skynet").is_file() => Ok(dir),
            _ => Err(format!(
                "`cargo xtask skynet` could not provide stock skynet v1.6.0 ({}):\n{stderr}",
                out.status
            )),
        }
    });
    match found {
        Ok(dir) => dir.clone(),
        Err(e) => panic!("this test needs stock skynet v1.6.0: {e}"),
    }
}

/// `target/cpp/` with the C/C++ service modules built (`make -C cservices modules`),
/// once per test process; a file lock keeps test binaries running in parallel from
/// building at the same time.
pub fn cpp_modules() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = root.join("target/cpp");
        std::fs::create_dir_all(&out).expect("create target/cpp");
        let status = Command::new("flock")
            .arg(out.join(".build.lock"))
            .args(["make", "-s", "-C"])
            .arg(root.join("cservices"))
            .args(["-j2", "modules"])
            .arg(format!("OUT={}", out.display()))
            .status()
            .expect("cannot run flock make (util-linux, make)");
        assert!(status.success(), "building the C service modules failed");
        out.canonicalize().expect("target/cpp")
    })
    .clone()
}

/// A memory figure of process `pid` from `/proc/PID/status` in KiB: `field` is e.g.
/// `"VmHWM"` (the resident set's high-water mark) or `"VmRSS"`. Panics when it cannot be
/// read (the overload tests need it; they run on Linux).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}
