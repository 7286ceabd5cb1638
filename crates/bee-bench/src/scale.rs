//! How bee behaves with the many peers a real cluster has: one serving node
//! (`echo_values` as `echo`, `sink`; `threads = 2`) and
//!
//! - **connections**: 1, 8 and 32 client connections spread over up to 4 client
//!   processes (`bee-bench scale-client`, each connection one call in flight, flat out):
//!   calls/s of all of them and the worst p99 among the processes;
//! - **fan-out**: this process pushes to 16 sink nodes (16 `bee` processes) round robin;
//!   pushes/s until every sink counted its share, and how many were lost;
//! - **idle peers**: 1,000 connections to the node, each after one call, idle: the node's
//!   RSS with them minus before, per connection;
//! - **soak**: calls and pushes at a fixed rate for `soak` seconds, the node's RSS every
//!   second; the growth after the warm-up (first sixth) must stay under 5 %.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bee_cluster::{Cluster, ClusterSettings};
use bee_codec::seri::{self, Value};
use bee_registry::{ClusterConfig, Registry};
use bee_runtime::{Node, RuntimeConfig};
use bee_transport::{Address, Channel, ChannelConfig};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::stats::Latencies;
use crate::{nodeproc, rss, BenchError};

/// What to run.
#[derive(Debug, Clone)]
pub struct ScaleParams {
    /// The `bee` binary.
    pub bee: PathBuf,
    /// This `bee-bench` binary (the client processes).
    pub bench: PathBuf,
    /// Seconds per connection row.
    pub seconds: f64,
    /// Pushes of the fan-out.
    pub fanout_pushes: usize,
    /// Idle connections.
    pub idle_peers: usize,
    /// Soak seconds.
    pub soak: u64,
}

/// One connection-count row.
#[derive(Debug, Clone, Serialize)]
pub struct ConnRow {
    /// Client connections.
    pub conns: usize,
    /// Client processes they were spread over.
    pub processes: usize,
    /// Calls answered per second, all of them.
    pub calls_per_s: f64,
    /// The worst p99 among the client processes, µs.
    pub p99_us: f64,
    /// Failed or wrong replies.
    pub errors: u64,
}

/// What one `scale-client` process reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientReport {
    /// Calls answered.
    pub calls: u64,
    /// Failed or wrong replies.
    pub errors: u64,
    /// Seconds measured.
    pub seconds: f64,
    /// p99, µs.
    pub p99_us: f64,
}

/// The whole result.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleResult {
    /// Connection rows.
    pub conns: Vec<ConnRow>,
    /// Fan-out: nodes pushed to.
    pub fanout_nodes: usize,
    /// Fan-out: pushes per second, sent until all counted.
    pub fanout_pushes_per_s: f64,
    /// Fan-out: pushes never counted.
    pub fanout_lost: u64,
    /// Idle connections opened.
    pub idle_peers: usize,
    /// Node RSS per idle connection, KiB.
    pub idle_kib_per_peer: f64,
    /// Soak: node RSS each second, KiB.
    pub soak_rss_kb: Vec<u64>,
    /// Soak: growth after the warm-up, percent.
    pub soak_growth_pct: f64,
    /// Soak: calls and pushes that failed.
    pub soak_errors: u64,
}

fn setup(what: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(what.to_string())
}

fn payload() -> Result<Bytes, BenchError> {
    Ok(seri::pack(&[
        Value::from("x".repeat(16)),
        Value::Integer(7),
    ])?)
}

/// `bee-bench scale-client`: `conns` connections to `addr`, one call in flight each, for
/// `seconds`; the report as one JSON line.
pub async fn client(addr: &str, conns: usize, seconds: f64) -> Result<ClientReport, BenchError> {
    let payload = payload()?;
    let echo = Address::Name(Bytes::from_static(b"@echo"));
    let channels: Vec<Channel> = (0..conns)
        .map(|_| Channel::new("scalenode", addr.to_string(), ChannelConfig::default()))
        .collect();
    for ch in &channels {
        ch.call(echo.clone(), payload.clone(), None)
            .await
            .map_err(|e| setup(format!("first call: {e}")))?;
    }
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let t0 = Instant::now();
    let tasks: Vec<_> = channels
        .iter()
        .map(|ch| {
            let (ch, echo, payload) = (ch.clone(), echo.clone(), payload.clone());
            tokio::spawn(async move {
                let mut lat = Latencies::with_capacity(1 << 16);
                let mut errors = 0u64;
                while Instant::now() < end {
                    let c0 = Instant::now();
                    match ch.call(echo.clone(), payload.clone(), None).await {
                        Ok(r) if r == payload => lat.record(c0.elapsed()),
                        _ => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Latencies::default();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.map_err(setup)?;
        all.extend(&l);
        errors += e;
    }
    let secs = t0.elapsed().as_secs_f64();
    let s = all.summary();
    Ok(ClientReport {
        calls: s.count as u64,
        errors,
        seconds: secs,
        p99_us: s.p99_us,
    })
}

fn write_node(dir: &Path, name: &str, services: &str) -> Result<PathBuf, BenchError> {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!("name = \"{name}\"\ncluster = \"cluster.lua\"\nthreads = 2\n\n{services}"),
    )?;
    Ok(config)
}

/// Connection rows: `conns` over up to 4 client processes.
fn conn_row(p: &ScaleParams, addr: &str, conns: usize) -> Result<ConnRow, BenchError> {
    let processes = conns.clamp(1, 4);
    let per = conns.div_ceil(processes);
    let children: Vec<Child> = (0..processes)
        .map(|_| {
            Command::new(&p.bench)
                .args(["scale-client", "--addr", addr, "--conns"])
                .arg(per.to_string())
                .arg("--seconds")
                .arg(p.seconds.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(setup)
        })
        .collect::<Result<_, _>>()?;
    let mut row = ConnRow {
        conns: per * processes,
        processes,
        calls_per_s: 0.0,
        p99_us: 0.0,
        errors: 0,
    };
    for c in children {
        let out = c.wait_with_output().map_err(setup)?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .ok_or_else(|| setup(format!("a scale client printed no result: {text}")))?;
        let r: ClientReport = serde_json::from_str(line).map_err(setup)?;
        row.calls_per_s += r.calls as f64 / r.seconds.max(1e-9);
        row.p99_us = row.p99_us.max(r.p99_us);
        row.errors += r.errors;
    }
    Ok(row)
}

/// Run it.
pub async fn run(p: &ScaleParams) -> Result<ScaleResult, BenchError> {
    let dir = std::env::temp_dir().join(format!("bee-bench-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    const FANOUT: usize = 16;
    let mut cluster_text = format!("scalenode = \"127.0.0.1:{}\"\n", nodeproc::free_port()?);
    for i in 0..FANOUT {
        cluster_text.push_str(&format!(
            "fan{i} = \"127.0.0.1:{}\"\n",
            nodeproc::free_port()?
        ));
    }
    std::fs::write(dir.join("cluster.lua"), &cluster_text)?;
    let cfg = ClusterConfig::parse_lua(&cluster_text).map_err(setup)?;
    let addr = match cfg.nodes.get("scalenode") {
        Some(bee_registry::NodeEntry::Up(a)) => a.clone(),
        _ => return Err(setup("no scalenode address")),
    };
    let node_cfg = write_node(
        &dir,
        "scalenode",
        "[[service]]\nkind = \"echo_values\"\nname = \"echo\"\n\n[[service]]\nkind = \"sink\"\nname = \"sink\"\n",
    )?;
    let node = nodeproc::start(&p.bee, &node_cfg, None, "warn", &[])?;
    let pid = node.id();

    // Connections.
    let mut conns = Vec::new();
    for n in [1usize, 8, 32] {
        let (p2, a2) = (p.clone(), addr.clone());
        let row = tokio::task::spawn_blocking(move || conn_row(&p2, &a2, n))
            .await
            .map_err(setup)??;
        eprintln!(
            "scale: {} connections over {} processes: {:.0} calls/s, p99 {:.0} µs, {} errors",
            row.conns, row.processes, row.calls_per_s, row.p99_us, row.errors
        );
        conns.push(row);
    }

    // Idle peers.
    let echo = Address::Name(Bytes::from_static(b"@echo"));
    let payload = payload()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss::read(pid)?.rss_kb;
    let mut idle = Vec::with_capacity(p.idle_peers);
    let quiet = ChannelConfig {
        heartbeat: Duration::ZERO,
        ..ChannelConfig::default()
    };
    for _ in 0..p.idle_peers {
        let ch = Channel::new("scalenode", addr.clone(), quiet.clone());
        ch.call(echo.clone(), payload.clone(), None)
            .await
            .map_err(|e| setup(format!("idle peer call: {e}")))?;
        idle.push(ch);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with = rss::read(pid)?.rss_kb;
    let idle_kib_per_peer = with.saturating_sub(before) as f64 / p.idle_peers.max(1) as f64;
    eprintln!(
        "scale: {} idle connections: node RSS {before} KiB -> {with} KiB, {idle_kib_per_peer:.1} KiB each",
        p.idle_peers
    );
    for ch in &idle {
        ch.close();
    }
    drop(idle);

    // Soak: a client node at a fixed rate, RSS every second.
    let local = Node::new("scaleclient", RuntimeConfig::default());
    let c = Cluster::start(&local, Registry::new(cfg), ClusterSettings::default());
    let soak_end = Instant::now() + Duration::from_secs(p.soak);
    let load = {
        let (c, payload) = (c.clone(), payload.clone());
        tokio::spawn(async move {
            let mut errors = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            while Instant::now() < soak_end {
                tick.tick().await;
                if c.call("scalenode", "echo", payload.clone()).await.is_err() {
                    errors += 1;
                }
                if c.send("scalenode", "sink", payload.clone()).await.is_err() {
                    errors += 1;
                }
            }
            errors
        })
    };
    let mut soak_rss_kb = Vec::new();
    while Instant::now() < soak_end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        soak_rss_kb.push(rss::read(pid)?.rss_kb);
    }
    let soak_errors = load.await.map_err(setup)?;
    let warm = soak_rss_kb.len() / 6;
    let soak_growth_pct = match (soak_rss_kb.get(warm), soak_rss_kb.last()) {
        (Some(&a), Some(&b)) if a > 0 => (b as f64 - a as f64) / a as f64 * 100.0,
        _ => 0.0,
    };
    eprintln!(
        "scale: soak {} s: RSS {:?} KiB, growth after warm-up {soak_growth_pct:.1} %, {soak_errors} errors",
        p.soak,
        soak_rss_kb
    );
    nodeproc::stop(node);

    // Fan-out: 16 sink nodes, pushes round robin from this process.
    let mut sinks = Vec::new();
    for i in 0..FANOUT {
        let name = format!("fan{i}");
        let cfg_path = write_node(
            &dir,
            &name,
            "[[service]]\nkind = \"sink\"\nname = \"sink\"\n",
        )?;
        sinks.push(nodeproc::start(&p.bee, &cfg_path, None, "warn", &[])?);
    }
    let per = p.fanout_pushes / FANOUT;
    let t0 = Instant::now();
    let mut refused = 0u64;
    for i in 0..per * FANOUT {
        if c.send(&format!("fan{}", i % FANOUT), "sink", payload.clone())
            .await
            .is_err()
        {
            refused += 1;
        }
    }
    let count_call = seri::pack(&[Value::from("count")])?;
    let mut counted = 0u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        counted = 0;
        for i in 0..FANOUT {
            let r = c
                .call(&format!("fan{i}"), "sink", count_call.clone())
                .await
                .map_err(|e| setup(format!("fan{i} count: {e}")))?;
            counted += seri::unpack(&r)?
                .first()
                .and_then(Value::as_int)
                .unwrap_or(0) as u64;
        }
        if counted >= (per * FANOUT) as u64 - refused {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let sent = (per * FANOUT) as u64;
    let fanout_lost = sent.saturating_sub(counted);
    eprintln!(
        "scale: fan-out to {FANOUT} nodes: {sent} pushes, {:.0}/s, {fanout_lost} lost",
        sent as f64 / secs
    );
    for s in sinks {
        nodeproc::stop(s);
    }
    local.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ScaleResult {
        conns,
        fanout_nodes: FANOUT,
        fanout_pushes_per_s: sent as f64 / secs,
        fanout_lost,
        idle_peers: p.idle_peers,
        idle_kib_per_peer,
        soak_rss_kb,
        soak_growth_pct,
        soak_errors,
    })
}
