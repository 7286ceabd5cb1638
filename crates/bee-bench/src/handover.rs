//! Hot update under load: what a caller sees while the node it calls is
//! handed over to a new process (`bee run --takeover`).
//!
//! A `bee` process runs node `hotnode` (`echo`); this process runs node `hotclient`
//! (listening, so the old process's `goaway` reaches it; `ride_through` 5 s) and makes
//! sequential calls (one in flight) to `echo` the whole time. After a steady phase the
//! node is handed over `handovers` times, a second apart. Measured, per call: when it
//! completed and how long it took. Reported:
//!
//! - **steady**: p50/p99 of the calls outside the handover windows;
//! - **during**: p99 and max of the calls that completed inside a window (from starting
//!   the new process until the old one exited, plus 200 ms);
//! - **gap**: the longest time between two consecutive replies inside a window — how
//!   long the caller saw no answer (the service interruption, from the caller's side);
//! - **handover time**: the new process's own figure (`took_ms` of its `took over` line:
//!   from asking for the sockets to serving them, which includes the old process's drain);
//! - errors: calls that failed (the target is zero).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bee_cluster::{Cluster, ClusterSettings};
use bee_codec::seri::{self, Value};
use bee_registry::{ClusterConfig, Registry};
use bee_runtime::{Node, RuntimeConfig};
use serde::Serialize;

use crate::stats::Latencies;
use crate::{nodeproc, BenchError};

/// What to run.
#[derive(Debug, Clone)]
pub struct HandoverParams {
    /// The `bee` binary.
    pub bee: PathBuf,
    /// Steady calls before the first handover.
    pub steady: Duration,
    /// Handovers, a second apart.
    pub handovers: usize,
}

/// What the run measured.
#[derive(Debug, Clone, Serialize)]
pub struct HandoverResult {
    /// Handovers done.
    pub handovers: usize,
    /// Calls answered.
    pub calls: u64,
    /// Calls that failed.
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Steady state: median and 99th percentile, µs.
    pub steady_p50_us: f64,
    /// Steady state p99, µs.
    pub steady_p99_us: f64,
    /// Calls completed inside the handover windows.
    pub during_calls: usize,
    /// p99 of those, µs.
    pub during_p99_us: f64,
    /// Slowest of those, µs.
    pub during_max_us: f64,
    /// `during_p99_us / steady_p99_us`.
    pub ratio_p99: f64,
    /// Longest time between two consecutive replies inside a window, µs.
    pub gap_max_us: f64,
    /// The new processes' own handover times (`took_ms`), each.
    pub took_ms: Vec<u64>,
}

fn err(what: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(what.to_string())
}

/// Run it.
pub async fn run(p: &HandoverParams) -> Result<HandoverResult, BenchError> {
    let dir = std::env::temp_dir().join(format!("bee-bench-handover-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(err)?;
    let cluster_text = format!(
        "hotnode = \"127.0.0.1:{}\"\nhotclient = \"127.0.0.1:{}\"\n",
        nodeproc::free_port()?,
        nodeproc::free_port()?
    );
    std::fs::write(dir.join("cluster.lua"), &cluster_text).map_err(err)?;
    let config = dir.join("hotnode.toml");
    std::fs::write(
        &config,
        "name = \"hotnode\"\ncluster = \"cluster.lua\"\nthreads = 1\n\n[[service]]\nkind = \"echo\"\nname = \"echo\"\n",
    )
    .map_err(err)?;
    let log = dir.join("hotnode.log");
    let _ = std::fs::remove_file(&log);
    let mut current = nodeproc::start(&p.bee, &config, Some(&log), "info", &[])?;

    let node = Node::new("hotclient", RuntimeConfig::default());
    let mut settings = ClusterSettings::default();
    settings.channel.ride_through = Duration::from_secs(5);
    settings.channel.call_timeout = Duration::from_secs(10);
    let cfg = ClusterConfig::parse_lua(&cluster_text).map_err(err)?;
    let cluster = Cluster::start(&node, Registry::new(cfg), settings);
    cluster.open("hotclient").await.map_err(err)?;

    let stop = Arc::new(AtomicBool::new(false));
    // (completed at, latency) of every answered call; failures counted apart.
    type Samples = Vec<(Instant, Duration)>;
    let samples: Arc<Mutex<Samples>> = Arc::default();
    let failures: Arc<Mutex<(u64, Option<String>)>> = Arc::default();
    let caller = {
        let (c, stop, samples, failures) = (
            cluster.clone(),
            stop.clone(),
            samples.clone(),
            failures.clone(),
        );
        tokio::spawn(async move {
            let payload = seri::pack(&[Value::from("x".repeat(16))]).expect("pack");
            let mut local: Samples = Vec::with_capacity(1 << 20);
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                match c.call("hotnode", "echo", payload.clone()).await {
                    Ok(_) => local.push((Instant::now(), t0.elapsed())),
                    Err(e) => {
                        let mut f = failures.lock().unwrap_or_else(|e| e.into_inner());
                        f.0 += 1;
                        f.1.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            *samples.lock().unwrap_or_else(|e| e.into_inner()) = local;
        })
    };
    tokio::time::sleep(p.steady).await;
    let mut windows = Vec::new();
    for _ in 0..p.handovers {
        let from = Instant::now();
        let (bee, config, log) = (p.bee.clone(), config.clone(), log.clone());
        let new = tokio::task::spawn_blocking(move || {
            nodeproc::start(&bee, &config, Some(&log), "info", &["--takeover"])
        })
        .await
        .map_err(err)??;
        let mut old = std::mem::replace(&mut current, new);
        let exited = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = old.try_wait() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = old.kill();
            let _ = old.wait();
            false
        })
        .await
        .map_err(err)?;
        if !exited {
            return Err(err("the old process did not exit after the handover"));
        }
        windows.push((from, Instant::now() + Duration::from_millis(200)));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    caller.await.map_err(err)?;
    node.shutdown();
    nodeproc::stop(current);

    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    let (mut steady, mut during) = (Latencies::default(), Latencies::default());
    let mut gap = Duration::ZERO;
    let mut prev: Option<Instant> = None;
    for &(at, lat) in &samples {
        let inside = windows.iter().any(|(a, b)| at >= *a && at <= *b);
        if inside {
            during.record(lat);
            if let Some(p) = prev {
                gap = gap.max(at - p);
            }
        } else {
            steady.record(lat);
        }
        prev = Some(at);
    }
    let took_ms: Vec<u64> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" took over "))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("took_ms="))
                .and_then(|v| v.parse().ok())
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    let (s, d) = (steady.summary(), during.summary());
    let (errors, first_error) = failures.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(HandoverResult {
        handovers: windows.len(),
        calls: samples.len() as u64,
        errors,
        first_error,
        steady_p50_us: s.p50_us,
        steady_p99_us: s.p99_us,
        during_calls: d.count,
        during_p99_us: d.p99_us,
        during_max_us: d.max_us,
        ratio_p99: if s.p99_us > 0.0 {
            d.p99_us / s.p99_us
        } else {
            0.0
        },
        gap_max_us: gap.as_secs_f64() * 1e6,
        took_ms,
    })
}
