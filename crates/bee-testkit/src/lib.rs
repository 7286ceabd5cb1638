//! Test support shared by every test crate of the workspace and the examples' tests:
//! loopback ports no other test process takes ([`free_port`]), waiting on a condition
//! with a bound ([`wait_until`], [`wait_for`], [`wait_until_async`], [`eventually`]), temporary
//! directories removed on drop ([`TempDir`]), and node processes started from a workspace
//! binary and killed on drop ([`NodeProcess`], [`workspace_bin`]).
//!
//! Private network namespaces with private Redis and MariaDB servers inside are in
//! [`netns`].
//!
//! It knows nothing of bee's crates: what a node is told and how it is called stays with
//! the tests (`bee-tests` builds its cluster layouts on top of this).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub mod netns;

/// A free TCP port on 127.0.0.1 for a node to listen on, reserved for this test process.
///
/// Tests run in parallel processes, and a port that is only bound and released (port 0)
/// can be handed out again — to another test asking the same, to a second node of the
/// same layout, or as the local port of any outgoing connection (the kernel takes those
/// from the same ephemeral range) — before the node binds it, which then fails at
/// start-up. So the port is taken below the ephemeral range (outgoing connections never
/// use it), checked free by binding it, and reserved with a lock file under the temp
/// dir held until this process exits (no other test process picks it meanwhile).
pub fn free_port() -> u16 {
    static HELD: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (from, to) = (10_000u32, low.min(65_536));
    let dir = std::env::temp_dir().join("bee-test-ports");
    std::fs::create_dir_all(&dir).expect("create the port reservation dir");
    // Start somewhere different in each process (pid and clock), then walk the range.
    let span = to.saturating_sub(from).max(1);
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    for i in 0..span {
        let port = from + (seed.wrapping_add(i.wrapping_mul(7_919))) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        let Ok(lock) = std::fs::File::create(dir.join(format!("{port}.lock"))) else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            held.push(lock);
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in {from}..{to}")
}

/// How often the waits below look at their condition.
const POLL: Duration = Duration::from_millis(10);

/// Block until `cond` is true, looking every 10 ms; panics naming `what` when it is not
/// true within `within`.
pub fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// Block until `probe` answers `Ok(value)`, asking every 10 ms, and return the value;
/// panics naming `what` with the last `Err` (what was seen instead: a log, a scrape)
/// when it does not within `within`.
pub fn wait_for<T>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) => assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for {what}; last seen:\n{last}"
            ),
        }
        std::thread::sleep(POLL);
    }
}

/// [`wait_until`] inside a tokio runtime: sleeps between looks without blocking it.
pub async fn wait_until_async(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Await `f()` every 10 ms until it answers true or `within` passes; returns the last
/// answer (for conditions that must be asked asynchronously, e.g. a call to a node).
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory under the system temp dir, named after `tag`, this process
    /// and a counter (short: Unix socket paths inside it must stay under 108 bytes).
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "bee-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The workspace's target directory: `CARGO_TARGET_DIR`, else the `target` directory
/// this test binary runs from (`<target>/<profile>/deps/`).
pub fn target_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(Path::to_path_buf)
        .expect("this test binary is not under a target directory; set CARGO_TARGET_DIR")
}

/// Build binaries of the workspace with `cargo build --quiet ARGS` (e.g. `["-p",
/// "bee-node", "--bins"]`), run in `dir`, unless `BEE_TEST_PREBUILT=1` says they were
/// built already (`cargo xtask stress`: a test run then never waits for another cargo
/// holding the build directory's lock); returns the debug directory holding them.
pub fn build_bins(dir: &Path, args: &[&str]) -> PathBuf {
    if std::env::var_os("BEE_TEST_PREBUILT").is_none_or(|v| v != "1") {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet"])
            .args(args)
            .current_dir(dir)
            .status()
            .expect("cannot run cargo build");
        assert!(status.success(), "cargo build {args:?} failed");
    }
    target_dir().join("debug")
}

/// The workspace binary `name` built by `cargo build -p PACKAGE --bin NAME` (run from
/// `dir`, once per call; cargo does nothing when it is fresh); its path.
pub fn workspace_bin(dir: &Path, package: &str, name: &str) -> PathBuf {
    let bin = build_bins(dir, &["-p", package, "--bin", name]).join(name);
    assert!(bin.exists(), "{name} binary not found at {}", bin.display());
    bin
}

/// A running node process (any binary that prints a line containing its ready marker on
/// stdout, e.g. `listening on`), killed on drop so a failing test leaves nothing running.
/// Its stdout is echoed to the test's output, prefixed with its name.
pub struct NodeProcess {
    /// The name the process is reported under.
    pub name: String,
    child: Option<Child>,
    log: Option<PathBuf>,
}

/// How a [`NodeProcess`] is started.
pub struct Start<'a> {
    /// Name for messages and the stdout prefix.
    pub name: &'a str,
    /// A stdout line containing this means the process is ready.
    pub ready: &'a str,
    /// How long it may take to get ready.
    pub within: Duration,
    /// Where its stderr goes (appended); inherited when none.
    pub log: Option<&'a Path>,
    /// A file every stdout line is also appended to.
    pub capture: Option<&'a Path>,
    /// Give it a pipe as stdin (written with [`NodeProcess::write_stdin`], open until the
    /// process is dropped) instead of `/dev/null`.
    pub stdin: bool,
}

impl<'a> Start<'a> {
    /// Ready on a stdout line containing `listening on`, within 30 s, stderr inherited.
    pub fn listening(name: &'a str) -> Start<'a> {
        Start {
            name,
            ready: "listening on",
            within: Duration::from_secs(30),
            log: None,
            capture: None,
            stdin: false,
        }
    }
}

impl NodeProcess {
    /// Spawn `cmd` (its stdin null, stdout read here, stderr as `how.log` says) and wait
    /// until it prints `how.ready`; panics (with its log) if it exits first or is not
    /// ready within `how.within`.
    pub fn start(mut cmd: Command, how: Start<'_>) -> NodeProcess {
        let stderr = match how.log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("open the node's log"),
            ),
            None => Stdio::inherit(),
        };
        let mut child = cmd
            .stdin(if how.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e} ({cmd:?})", how.name));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let mut capture = how.capture.map(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .expect("open the stdout capture file")
        });
        let (ready, prefix) = (how.ready.to_string(), how.name.to_string());
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(f) = capture.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                if !sent && line.contains(&ready) {
                    let _ = tx.send(());
                    sent = true;
                }
                println!("[{prefix} stdout] {line}");
            }
        });
        let mut node = NodeProcess {
            name: how.name.to_string(),
            child: Some(child),
            log: how.log.map(Path::to_path_buf),
        };
        let deadline = Instant::now() + how.within;
        loop {
            if rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                return node;
            }
            if let Some(Ok(Some(status))) = node.child.as_mut().map(Child::try_wait) {
                panic!(
                    "{} exited before it was ready ({:?}): {status}\n{}",
                    how.name,
                    how.ready,
                    node.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} was not ready ({:?}) within {:?}",
                how.name,
                how.ready,
                how.within
            );
        }
    }

    /// Write `bytes` to its stdin (started with [`Start::stdin`]); panics when it has no
    /// stdin pipe or the write fails.
    pub fn write_stdin(&mut self, bytes: &[u8]) {
        let stdin = self
            .child
            .as_mut()
            .and_then(|c| c.stdin.as_mut())
            .unwrap_or_else(|| panic!("{} has no stdin pipe", self.name));
        stdin
            .write_all(bytes)
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("write to {}'s stdin: {e}", self.name));
    }

    /// What it wrote to stderr so far (empty without a log file).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// The OS process id (0 once it was killed or taken).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The process itself, no longer killed on drop (to wait for its own exit).
    pub fn take(&mut self) -> Option<Child> {
        self.child.take()
    }

    /// Kill with SIGKILL (a crash, no clean shutdown) and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop with SIGTERM and wait (at most `within`) for it to exit; whether it exited 0.
    pub fn terminate(&mut self, within: Duration) -> bool {
        let Some(c) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        exits_cleanly(c, within)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Wait (at most `within`) for `c` to exit; whether it exited 0. Killed after `within`.
pub fn exits_cleanly(mut c: Child, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(s)) = c.try_wait() {
            return s.success();
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            return false;
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_reserved_and_free() {
        let (a, b) = (free_port(), free_port());
        assert_ne!(a, b);
        TcpListener::bind(("127.0.0.1", a)).expect("the reserved port binds");
    }

    #[test]
    #[should_panic(expected = "waiting for never")]
    fn a_wait_that_never_holds_panics_naming_it() {
        wait_until("never", Duration::from_millis(50), || false);
    }

    #[test]
    fn a_process_that_exits_before_ready_is_an_error() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo starting; exit 3"]);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            NodeProcess::start(cmd, Start::listening("sh"))
        }));
        let msg = r.err().and_then(|e| e.downcast::<String>().ok()).unwrap();
        assert!(msg.contains("exited before it was ready"), "{msg}");
    }

    #[test]
    fn a_ready_process_is_killed_on_drop() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo listening on 1; exec sleep 30"]);
        let node = NodeProcess::start(cmd, Start::listening("sh"));
        let pid = node.pid();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(node);
        assert!(
            !Path::new(&format!("/proc/{pid}/cmdline")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .unwrap_or_default()
                    .is_empty()
        );
    }
}
