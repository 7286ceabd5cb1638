//! `cargo xtask status-bench [--nodes N] [--secs S] [--release]`: what the status page
//! costs. Starts N `bee` nodes on loopback (an `echo` service and `metrics_listen` each),
//! then measures on the first one:
//!
//! - loading the page: `/`, `/app.js`, `/style.css` and a fresh `/api/v1/cluster` (which
//!   asks all N nodes for their status), ten times, a view never served from the
//!   one-second cache;
//! - the CPU the page costs while open: the node's CPU time (`/proc/PID/stat`) over S
//!   seconds with nobody looking, then over S seconds while a client asks for
//!   `/api/v1/cluster` every 3 s as the page does, and the same for one of the other
//!   nodes (each answers `bee_clusterd status` on every poll).
//!
//! Prints a Markdown table for `BENCHMARKS.md`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::process::{free_port, start_node, NodeProcess};

/// How often the page asks for the cluster view.
const POLL: Duration = Duration::from_secs(3);

/// GET `path` from `port`: the body and how long the answer took.
fn get(port: u16, path: &str) -> Result<(String, Duration)> {
    let t0 = Instant::now();
    let mut s =
        TcpStream::connect(("127.0.0.1", port)).with_context(|| format!("connect {port}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: status-bench\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let took = t0.elapsed();
    let (head, body) = text.split_once("\r\n\r\n").context("not an HTTP answer")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok((body.to_string(), took))
}

/// CPU time (user + system) of process `pid` so far.
fn cpu(pid: u32, tick: f64) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after ')'.
    let rest = stat.rsplit_once(')').context("bad /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(Duration::from_secs_f64(ticks / tick))
}

fn clock_tick() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Run the measurement.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut nodes = 50usize;
    let mut secs = 30u64;
    let mut release = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--nodes" => {
                nodes = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .context("--nodes N")?
            }
            "--secs" => secs = it.next().and_then(|v| v.parse().ok()).context("--secs S")?,
            "--release" => release = true,
            other => {
                bail!("status-bench: unknown argument {other:?} (--nodes N, --secs S, --release)")
            }
        }
    }
    if nodes < 2 {
        bail!("status-bench needs at least 2 nodes");
    }
    let bee = crate::run_info::build_bee(root, release)?;
    let dir = crate::run_info::target_dir(root).join("status-bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let names: Vec<String> = (0..nodes).map(|i| format!("n{i:02}")).collect();
    let mut cluster = String::from("-- written by cargo xtask status-bench\n__nowaiting = true\n");
    for n in &names {
        cluster.push_str(&format!("{n} = \"127.0.0.1:{}\"\n", free_port()?));
    }
    std::fs::write(dir.join("cluster.lua"), cluster)?;
    eprintln!("== starting {nodes} nodes ({})", bee.display());
    let mut ports = Vec::new();
    let mut procs: Vec<NodeProcess> = Vec::new();
    for n in &names {
        let port = free_port()?;
        let cfg = dir.join(format!("{n}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "name = \"{n}\"\ncluster = \"cluster.lua\"\nthreads = 1\nmetrics_listen = \"127.0.0.1:{port}\"\n\
                 [[service]]\nkind = \"echo\"\nname = \"echo\"\n"
            ),
        )?;
        let mut cmd = Command::new(&bee);
        cmd.arg("run").arg(&cfg).env("BEE_LOG", "warn");
        procs.push(start_node(
            n,
            cmd,
            &dir.join(format!("{n}.log")),
            "listening on",
        )?);
        ports.push(port);
    }
    let (page, peer) = (ports[0], procs[1].pid());
    let page_pid = procs[0].pid();
    std::thread::sleep(Duration::from_secs(2));

    // Loading the page, ten times, each with a fresh cluster view.
    let mut loads = Vec::new();
    let mut size = 0;
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(1100));
        let t0 = Instant::now();
        get(page, "/")?;
        get(page, "/app.js")?;
        get(page, "/style.css")?;
        let (body, _) = get(page, "/api/v1/cluster")?;
        loads.push(t0.elapsed());
        size = body.len();
        if !body.contains(&format!("\"header\":{{\"up\":{nodes},")) {
            let header = body.split("\"nodes\"").next().unwrap_or("");
            bail!("not all {nodes} nodes up in the view: {header}");
        }
    }
    loads.sort();

    let tick = clock_tick();
    let window = Duration::from_secs(secs);
    eprintln!("== {secs} s with the page closed");
    let (a0, b0) = (cpu(page_pid, tick)?, cpu(peer, tick)?);
    std::thread::sleep(window);
    let (a1, b1) = (cpu(page_pid, tick)?, cpu(peer, tick)?);
    eprintln!("== {secs} s with the page open (a view every {POLL:?})");
    let start = Instant::now();
    let mut polls = 0;
    while start.elapsed() < window {
        let t = Instant::now();
        get(page, "/api/v1/cluster")?;
        polls += 1;
        if let Some(rest) = POLL.checked_sub(t.elapsed()) {
            std::thread::sleep(rest.min(window.saturating_sub(start.elapsed())));
        }
    }
    let open = start.elapsed();
    let (a2, b2) = (cpu(page_pid, tick)?, cpu(peer, tick)?);
    let pct = |d: Duration, over: Duration| 100.0 * d.as_secs_f64() / over.as_secs_f64();
    let closed_page = pct(a1 - a0, window);
    let open_page = pct(a2 - a1, open);
    let closed_peer = pct(b1 - b0, window);
    let open_peer = pct(b2 - b1, open);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let md = format!(
        "| nodes | build | page load (HTML+JS+CSS+fresh cluster view) min / median / max | view size | page node CPU closed → open | other node CPU closed → open |\n\
         |---|---|---|---|---|---|\n\
         | {nodes} | {} | {:.0} / {:.0} / {:.0} ms | {} KiB | {closed_page:.2} % → {open_page:.2} % of a core | {closed_peer:.2} % → {open_peer:.2} % |\n\n\
         {polls} views in {:.0} s; load average at the end: {}",
        if release { "release" } else { "debug" },
        ms(loads[0]),
        ms(loads[loads.len() / 2]),
        ms(loads[loads.len() - 1]),
        size / 1024,
        open.as_secs_f64(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    );
    println!("{md}");
    drop(procs);
    Ok(())
}
