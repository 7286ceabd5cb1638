//! Busy polling at scale: the serving node's CPU with 1, 8 and 32 active
//! connections at a moderate fixed rate, polling on and off.
//!
//! A `bee` process serves `echo` (`threads = 2`). This process opens `conns` connections
//! to it (one [`Channel`] each, not polling themselves) and makes calls on each at a
//! fixed pace (`rate` calls/s per connection, one in flight). Over the measured seconds
//! the node's CPU time is read from `/proc/PID/schedstat`: the figure is the share of one
//! core it used. The same run with the node's `busy_poll_us = 0` shows what polling adds;
//! `busy_poll_max` (default 1) bounds how many connections poll at once.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use bee_codec::seri::{self, Value};
use bee_transport::{Address, Channel, ChannelConfig};
use bytes::Bytes;
use serde::Serialize;

use crate::stats::Latencies;
use crate::{nodeproc, rss, BenchError};

/// What to run.
#[derive(Debug, Clone)]
pub struct BusyPollParams {
    /// The `bee` binary.
    pub bee: PathBuf,
    /// Connection counts, each measured in turn.
    pub conns: Vec<usize>,
    /// Calls per second on each connection.
    pub rate: u32,
    /// Seconds measured per row.
    pub seconds: f64,
    /// The node's busy-poll window when polling is on, µs.
    pub poll_us: u64,
    /// The node's `busy_poll_max`.
    pub poll_max: usize,
}

/// One row: a connection count, polling on or off.
#[derive(Debug, Clone, Serialize)]
pub struct BusyPollRow {
    /// The node's `busy_poll_us`.
    pub poll_us: u64,
    /// Active connections.
    pub conns: usize,
    /// Calls answered per second, all connections.
    pub calls_per_s: f64,
    /// The node's CPU, percent of one core.
    pub node_cpu_pct: f64,
    /// Median call, µs.
    pub p50_us: f64,
    /// 99th percentile call, µs.
    pub p99_us: f64,
    /// Failed calls.
    pub errors: u64,
}

/// The whole table.
#[derive(Debug, Clone, Serialize)]
pub struct BusyPollResult {
    /// Calls per second on each connection.
    pub rate_per_conn: u32,
    /// `busy_poll_max` of the node.
    pub poll_max: usize,
    /// Rows, polling on first.
    pub rows: Vec<BusyPollRow>,
}

fn setup(what: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(what.to_string())
}

fn start_node(
    bee: &Path,
    dir: &Path,
    poll_us: u64,
    poll_max: usize,
) -> Result<(Child, String), BenchError> {
    let addr = format!("127.0.0.1:{}", nodeproc::free_port()?);
    std::fs::write(dir.join("cluster.lua"), format!("pollnode = \"{addr}\"\n")).map_err(setup)?;
    let config = dir.join("pollnode.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"pollnode\"\ncluster = \"cluster.lua\"\nthreads = 2\nbusy_poll_us = {poll_us}\nbusy_poll_max = {poll_max}\n\n\
             [[service]]\nkind = \"echo\"\nname = \"echo\"\n"
        ),
    )
    .map_err(setup)?;
    Ok((nodeproc::start(bee, &config, None, "warn", &[])?, addr))
}

/// One row: `conns` connections at `rate` calls/s each for `seconds`.
async fn row(
    addr: &str,
    pid: u32,
    conns: usize,
    rate: u32,
    seconds: f64,
    poll_us: u64,
) -> Result<BusyPollRow, BenchError> {
    let payload = seri::pack(&[Value::from("x".repeat(16)), Value::Integer(1)])?;
    let channels: Vec<Channel> = (0..conns)
        .map(|_| Channel::new("pollnode", addr.to_string(), ChannelConfig::default()))
        .collect();
    let echo = Address::Name(Bytes::from_static(b"@echo"));
    // Connect every channel and warm up.
    for ch in &channels {
        for _ in 0..20 {
            ch.call(echo.clone(), payload.clone(), None)
                .await
                .map_err(|e| setup(format!("warm-up call: {e}")))?;
        }
    }
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let run_for = Duration::from_secs_f64(seconds);
    let cpu0 = rss::cpu_ns(pid)?;
    let t0 = Instant::now();
    let tasks: Vec<_> = channels
        .iter()
        .enumerate()
        .map(|(i, ch)| {
            let (ch, echo, payload) = (ch.clone(), echo.clone(), payload.clone());
            tokio::spawn(async move {
                // Spread the connections over the period, then keep each one's pace.
                let start = tokio::time::Instant::now() + period.mul_f64(i as f64 / conns as f64);
                let mut tick = tokio::time::interval_at(start, period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mut lat = Latencies::with_capacity(4096);
                let mut errors = 0u64;
                let end = Instant::now() + run_for;
                while Instant::now() < end {
                    tick.tick().await;
                    let c0 = Instant::now();
                    match ch.call(echo.clone(), payload.clone(), None).await {
                        Ok(_) => lat.record(c0.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Latencies::default();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.map_err(setup)?;
        all.extend(&lat);
        errors += e;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = rss::cpu_ns(pid)?.saturating_sub(cpu0) as f64 / 1e9;
    for ch in &channels {
        ch.close();
    }
    let s = all.summary();
    Ok(BusyPollRow {
        poll_us,
        conns,
        calls_per_s: s.count as f64 / wall,
        node_cpu_pct: cpu / wall * 100.0,
        p50_us: s.p50_us,
        p99_us: s.p99_us,
        errors,
    })
}

/// Run the table: polling on (every connection count), then off.
pub async fn run(p: &BusyPollParams) -> Result<BusyPollResult, BenchError> {
    let dir = std::env::temp_dir().join(format!("bee-bench-busypoll-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(setup)?;
    let mut rows = Vec::new();
    for poll_us in [p.poll_us, 0] {
        let (node, addr) = start_node(&p.bee, &dir, poll_us, p.poll_max)?;
        let pid = node.id();
        tokio::time::sleep(Duration::from_millis(300)).await;
        for &conns in &p.conns {
            let r = row(&addr, pid, conns, p.rate, p.seconds, poll_us).await;
            match r {
                Ok(r) => {
                    eprintln!(
                        "busy_poll_us {poll_us:>3}, {conns:>2} connections: {:.0} calls/s, node CPU {:.0} % of a core, p99 {:.0} µs",
                        r.calls_per_s, r.node_cpu_pct, r.p99_us
                    );
                    rows.push(r);
                }
                Err(e) => {
                    nodeproc::stop(node);
                    return Err(e);
                }
            }
        }
        nodeproc::stop(node);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(BusyPollResult {
        rate_per_conn: p.rate,
        poll_max: p.poll_max,
        rows,
    })
}
