//! Node processes started by xtask (`demo`, `bench`): start one, wait until it says it is
//! ready, and stop it (SIGTERM, then SIGKILL) when its handle is dropped — also when the
//! job fails half-way.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A started node process; stopped when dropped.
pub struct NodeProcess {
    name: String,
    child: Child,
}

impl NodeProcess {
    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                eprintln!("  stopped {}", self.name);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("  killed {} (did not stop within 5 s)", self.name);
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Start `cmd` with stdout piped and stderr to `log`; wait until a stdout line contains
/// `ready` (at most 30 s). The rest of stdout is drained in the background.
pub fn start_node(
    name: &str,
    mut cmd: Command,
    log: &Path,
    ready: &'static str,
) -> Result<NodeProcess> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(File::create(log)?))
        .spawn()
        .with_context(|| format!("cannot start node {name}: {cmd:?}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let process = NodeProcess {
        name: name.to_string(),
        child,
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut told = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !told && line.contains(ready) {
                let _ = tx.send(line);
                told = true;
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => {
            eprintln!("  {name}: {line}");
            Ok(process)
        }
        Err(_) => bail!(
            "node {name} did not start within 30 s; see {}",
            log.display()
        ),
    }
}

/// A node process this job did not start itself (e.g. the new process of a hot update,
/// started by `bee cluster upgrade`): stopped with SIGTERM when dropped.
pub struct Adopted {
    name: String,
    pid: u32,
}

impl Adopted {
    /// Adopt process `pid` as node `name`.
    pub fn new(name: &str, pid: u32) -> Adopted {
        Adopted {
            name: name.to_string(),
            pid,
        }
    }
}

impl Drop for Adopted {
    fn drop(&mut self) {
        let pid = self.pid.to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let proc_dir = Path::new("/proc").join(&pid);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !proc_dir.exists() {
                eprintln!("  stopped {}", self.name);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        eprintln!("  killed {} (did not stop within 5 s)", self.name);
    }
}

/// `VmRSS` of a process, KiB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`, …).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|r| r.trim().strip_suffix("kB"))
        .and_then(|n| n.trim().parse().ok())
}

/// Least-squares slope of (seconds, KiB) in KiB per minute.
pub fn slope_per_min(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    if sxx == 0.0 {
        0.0
    } else {
        60.0 * sxy / sxx
    }
}

/// RSS samples: (seconds since the first, KiB of each process).
pub type RssSamples = Vec<(f64, Vec<u64>)>;

/// Read the `VmRSS` of `pids` every second until `client` exits; its exit status and the
/// samples. Fails as soon as one of `pids` is gone (`what` names the run, `dir` its
/// logs); `every_minute` prints the latest sample once a minute.
pub fn sample_rss_until_exit(
    client: &mut std::process::Child,
    pids: &[u32],
    what: &str,
    dir: &Path,
    every_minute: bool,
) -> Result<(std::process::ExitStatus, RssSamples)> {
    let mut samples: RssSamples = Vec::new();
    let t0 = Instant::now();
    let mut next = t0;
    loop {
        if let Some(status) = client.try_wait()? {
            return Ok((status, samples));
        }
        if Instant::now() >= next {
            let rss: Vec<u64> = pids.iter().map(|p| rss_kb(*p).unwrap_or(0)).collect();
            if rss.contains(&0) {
                anyhow::bail!("a node died during {what}; see {}", dir.display());
            }
            samples.push((t0.elapsed().as_secs_f64(), rss));
            let n = samples.len();
            if every_minute && n.is_multiple_of(60) {
                eprintln!("  {n} s: RSS {:?} KiB", samples[n - 1].1);
            }
            next += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
