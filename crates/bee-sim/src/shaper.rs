//! Delay and loss on a kernel without netem: every IPv4 packet the simulation's bridge
//! forwards goes through an NFQUEUE (an iptables rule in the bridge's own namespace, with
//! bridged traffic passed to iptables there), and `bee-sim shaper`, running in that
//! namespace at a real-time priority, holds each one for the delay (uniform jitter around
//! it, as netem without a distribution table) before letting it go, or drops it with the
//! loss probability ([`crate::nfqueue`] is the netlink side).
//!
//! Each packet crosses the bridge once, so it is delayed once, as with netem on the
//! sender's interface. Packets leave in the order they came (netem's jitter can reorder
//! them; this does not). One thread reads the queue and stamps each packet, another lets
//! each go at its time. The kernel queue is large (65,536 packets) and fails open: if the
//! shaper ever falls that far behind, packets pass undelayed rather than being dropped.
//! The shaper writes what it did (packets, drops, the mean delay it actually gave) to a
//! file every second; `stop` reads it into the run's summary.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::net::{Netem, CORE};
use crate::nfqueue::{Queue, Verdict, FLAG_FAIL_OPEN, FLAG_GSO};

/// The NFQUEUE number the bridge's rule sends packets to.
const QUEUE: u16 = 0;

fn run_in(ns: &str, program: &str, args: &[&str]) -> Result<()> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    crate::net::run("ip", &all)
}

/// Pass the namespace's bridged IPv4 packets to iptables and queue the forwarded ones.
fn install_rule(ns: &str) -> Result<()> {
    run_in(
        ns,
        "sysctl",
        &["-qw", "net.bridge.bridge-nf-call-iptables=1"],
    )?;
    run_in(
        ns,
        "iptables",
        &[
            "-A",
            "FORWARD",
            "-j",
            "NFQUEUE",
            "--queue-num",
            &QUEUE.to_string(),
            "--queue-bypass",
        ],
    )
}

/// Whether this kernel and machine can shape with an NFQUEUE: tried in a scratch
/// namespace (bridged packets to iptables, the queue rule).
pub fn available() -> bool {
    let ns = format!("{}probe-queue", crate::net::PREFIX);
    if Command::new("ip")
        .args(["netns", "add", &ns])
        .stderr(Stdio::null())
        .status()
        .map_or(true, |s| !s.success())
    {
        return false;
    }
    let ok = install_rule(&ns).is_ok()
        && Command::new("chrt")
            .arg("--help")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    ok
}

/// The running shaper process.
pub struct Shaper {
    child: Child,
    stats: PathBuf,
}

/// Install the bridge's queue rule and start `bee-sim shaper` in the bridge's namespace.
pub fn start(n: &Netem, dir: &Path) -> Result<Shaper> {
    install_rule(CORE)?;
    let stats = dir.join("shaper.txt");
    let log = std::fs::File::create(dir.join("shaper.log"))?;
    let exe = std::env::current_exe().context("this program's path")?;
    let child = Command::new("ip")
        .args(["netns", "exec", CORE])
        // Real-time priority: the shaper's wake-ups are the delay, and on a busy machine
        // an ordinary process wakes late (1.5 ms for 1 ms asked, seen here under load).
        .args(["chrt", "--fifo", "20"])
        .arg(exe)
        .arg("shaper")
        .args(["--delay-ms", &n.delay_ms.to_string()])
        .args(["--jitter-ms", &n.jitter_ms.to_string()])
        .args(["--loss-pct", &n.loss_pct.to_string()])
        .arg("--stats")
        .arg(&stats)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start the shaper")?;
    // The queue is bound before the first packet matters: wait for the shaper to say so.
    let t0 = Instant::now();
    while !stats.exists() {
        if t0.elapsed() > Duration::from_secs(10) {
            bail!(
                "the shaper did not start within 10 s; see {}",
                dir.join("shaper.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Shaper { child, stats })
}

impl Shaper {
    /// Stop the shaper; what it did, as a sentence for the run's summary.
    pub fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.stats)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|e| format!("(the shaper left no figures: {e})"))
    }
}

/// A small deterministic generator (xorshift64*): jitter and loss need no more.
struct Rng(u64);

impl Rng {
    /// A number in [0, 1).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Packets waiting for their time, shared by the reading thread and the releasing one.
#[derive(Default)]
struct Held {
    /// (arrived, due, packet id), in arrival order.
    queue: VecDeque<(Instant, Instant, u32)>,
    passed: u64,
    dropped: u64,
    delay_sum: Duration,
    max_held: usize,
    stop: bool,
}

/// `bee-sim shaper --delay-ms D --jitter-ms J --loss-pct L --stats FILE`: bind the queue
/// and hold, pass or drop every packet until SIGTERM. Run it at a real-time priority
/// (`chrt`): its wake-ups are the delay.
pub fn main(args: &[String]) -> Result<()> {
    let mut delay_ms = 1.0f64;
    let mut jitter_ms = 0.0f64;
    let mut loss_pct = 0.0f64;
    let mut stats = PathBuf::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--delay-ms" => delay_ms = v.parse()?,
            "--jitter-ms" => jitter_ms = v.parse()?,
            "--loss-pct" => loss_pct = v.parse()?,
            "--stats" => stats = v.into(),
            other => bail!("bee-sim shaper: unknown argument {other:?}"),
        }
    }
    let q = Arc::new(
        Queue::bind(QUEUE, 65_536, FLAG_FAIL_OPEN | FLAG_GSO)
            .context("cannot bind the netfilter queue")?,
    );
    let state = Arc::new((Mutex::new(Held::default()), Condvar::new()));

    // SIGTERM: stop after letting go of what is held.
    {
        let state = state.clone();
        crate::on_signal(false, move || {
            lock(&state.0).stop = true;
            state.1.notify_all();
        });
    }

    // The reader: each packet is dropped at once or held with its time.
    {
        let (q, state) = (q.clone(), state.clone());
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        std::thread::spawn(move || {
            let mut rng = Rng(seed);
            let mut buf = vec![0u8; 64 * 1024];
            let mut ids = Vec::new();
            let mut last_due = Instant::now();
            loop {
                ids.clear();
                if let Err(e) = q.read(&mut buf, &mut ids) {
                    // ENOBUFS: the socket overflowed; the queue fails open meanwhile.
                    if e.raw_os_error() != Some(105) {
                        eprintln!("shaper: reading the queue: {e}");
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    continue;
                }
                let now = Instant::now();
                let mut held = lock(&state.0);
                for &id in &ids {
                    if rng.next() * 100.0 < loss_pct {
                        let _ = q.verdict(id, Verdict::Drop);
                        held.dropped += 1;
                        continue;
                    }
                    let d = (delay_ms + jitter_ms * (2.0 * rng.next() - 1.0)).max(0.0);
                    // In order: never before the packet ahead of it.
                    let due = (now + Duration::from_secs_f64(d / 1000.0)).max(last_due);
                    last_due = due;
                    held.queue.push_back((now, due, id));
                }
                held.max_held = held.max_held.max(held.queue.len());
                drop(held);
                state.1.notify_one();
            }
        });
    }

    // The releaser (this thread): let each packet go at its time.
    let mut last_write = Instant::now() - Duration::from_secs(1);
    let mut held = lock(&state.0);
    loop {
        let now = Instant::now();
        while held.queue.front().is_some_and(|(_, due, _)| *due <= now) {
            if let Some((arrived, _, id)) = held.queue.pop_front() {
                q.verdict(id, Verdict::Accept).context("verdict")?;
                held.passed += 1;
                held.delay_sum += now - arrived;
            }
        }
        if last_write.elapsed() >= Duration::from_secs(1) || held.stop {
            write_stats(&stats, &held);
            last_write = Instant::now();
        }
        if held.stop {
            while let Some((arrived, _, id)) = held.queue.pop_front() {
                let _ = q.verdict(id, Verdict::Accept);
                held.passed += 1;
                held.delay_sum += arrived.elapsed();
            }
            write_stats(&stats, &held);
            return Ok(());
        }
        let wait = held
            .queue
            .front()
            .map_or(Duration::from_secs(1), |(_, due, _)| {
                due.saturating_duration_since(now)
            });
        held = state
            .1
            .wait_timeout(held, wait)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
    }
}

fn lock(m: &Mutex<Held>) -> std::sync::MutexGuard<'_, Held> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the shaper did so far, as one sentence, written atomically to `path`.
fn write_stats(path: &Path, h: &Held) {
    let total = h.passed + h.dropped;
    let mean = if h.passed > 0 {
        h.delay_sum.as_secs_f64() * 1000.0 / h.passed as f64
    } else {
        0.0
    };
    let pct = if total > 0 {
        h.dropped as f64 * 100.0 / total as f64
    } else {
        0.0
    };
    let text = format!(
        "The shaper passed {} packets (mean delay given {mean:.3} ms, at most {} held at once) and dropped {} ({pct:.3} %).\n",
        h.passed, h.max_held, h.dropped
    );
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}
