//! B2..B5 (and B6 readings) against a node's `@echo` and `@sink` over the cluster, as a
//! bee client node using the public [`Cluster`] API — the same steps as the skynet
//! reference client, so the figures compare directly:
//!
//! - **B2** latency with one call in flight (`"ping", i`), p50/p99/mean/max;
//! - **B3** throughput with `inflight` tasks, each looping `call().await` (`w, i`);
//! - **B4** pushes of a 64-byte string to `@sink`, counted there: the sink's `count`
//!   before, then polled until it stops moving; losses are reported;
//! - **B5** 1 MiB echo, one in flight: MiB of payload per second, one direction.
//!
//! Every echo reply is compared byte for byte with the request payload; a difference or
//! a failed call counts as an error. With `node_pid`, the serving node's `VmRSS` is read
//! before the first call (idle), right after B3, and at the end (with `VmHWM`); and its
//! CPU time is read during B2 (next to this client's own) and over one quiet second after
//! B5 — the price of busy polling, and proof that it stops when traffic does.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bee_cluster::{Cluster, ClusterSettings};
use bee_codec::seri::{self, Value};
use bee_registry::{ClusterConfig, Registry};
use bee_runtime::{Node, RuntimeConfig, Target};
use bytes::Bytes;
use serde::Serialize;

use crate::load::drive;
use crate::stats::Latencies;
use crate::{rss, BenchError};

/// What to run, and how long.
#[derive(Debug, Clone)]
pub struct ClusterParams {
    /// Cluster config naming the target node.
    pub cluster_file: PathBuf,
    /// The node serving `echo` and `sink`.
    pub node: String,
    /// Registered name of the echo service.
    pub echo: String,
    /// Registered name of the sink service.
    pub sink: String,
    /// Registered name of a raw-bytes echo (no unpack): B3 against it too, labelled
    /// "transport only".
    pub raw_echo: Option<String>,
    /// B2: calls measured (after 1000 warm-up calls).
    pub b2_calls: usize,
    /// B3: seconds.
    pub b3_seconds: f64,
    /// B3: calls in flight.
    pub b3_inflight: usize,
    /// B4: pushes.
    pub b4_pushes: usize,
    /// B5: seconds.
    pub b5_seconds: f64,
    /// Process id of the serving node, to read its memory (B6); `None` skips B6.
    pub node_pid: Option<u32>,
    /// Busy-poll window of the client's connection (bee's default unless set).
    pub busy_poll: Duration,
}

impl ClusterParams {
    /// The reference bench's sizes: 20000 calls, 5 s, 64 in flight, 500000 pushes, 5 s.
    pub fn full(cluster_file: PathBuf, node: String) -> ClusterParams {
        ClusterParams {
            cluster_file,
            node,
            echo: "echo".into(),
            sink: "sink".into(),
            raw_echo: None,
            b2_calls: 20_000,
            b3_seconds: 5.0,
            b3_inflight: 64,
            b4_pushes: 500_000,
            b5_seconds: 5.0,
            node_pid: None,
            busy_poll: bee_transport::DEFAULT_BUSY_POLL,
        }
    }

    /// A short run for smoke checks: a tenth of each.
    pub fn quick(cluster_file: PathBuf, node: String) -> ClusterParams {
        ClusterParams {
            b2_calls: 2_000,
            b3_seconds: 1.0,
            b4_pushes: 50_000,
            b5_seconds: 1.0,
            ..ClusterParams::full(cluster_file, node)
        }
    }
}

/// What B2..B5 (and B6, with a pid) measured. Field names follow the skynet reference
/// client's `BENCH` line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterResult {
    /// Which client produced this.
    pub client: String,
    /// The target node.
    pub target: String,
    /// B2 calls measured.
    pub b2_calls: usize,
    /// B2 median latency, µs.
    pub b2_p50_us: f64,
    /// B2 99th percentile, µs.
    pub b2_p99_us: f64,
    /// B2 mean, µs.
    pub b2_mean_us: f64,
    /// B2 largest, µs.
    pub b2_max_us: f64,
    /// B2 failed or wrong replies.
    pub b2_errors: u64,
    /// B2: CPU time of the serving node during the measured calls, in % of one core.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b2_node_cpu_pct: Option<f64>,
    /// B2: CPU time of this client process during the measured calls, % of one core.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b2_client_cpu_pct: Option<f64>,
    /// B3 calls in flight.
    pub b3_inflight: usize,
    /// B3 calls completed.
    pub b3_calls: u64,
    /// B3 seconds.
    pub b3_seconds: f64,
    /// B3 calls per second.
    pub b3_calls_per_s: f64,
    /// B3 failed or wrong replies.
    pub b3_errors: u64,
    /// B3 against the raw-bytes echo (transport only), calls per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b3_raw_calls_per_s: Option<f64>,
    /// B4 pushes sent.
    pub b4_pushes: u64,
    /// B4 pushes counted by the sink.
    pub b4_received: u64,
    /// B4 pushes sent but never counted.
    pub b4_lost: u64,
    /// B4 seconds from the first push to the last count change.
    pub b4_seconds: f64,
    /// B4 pushes counted per second.
    pub b4_pushes_per_s: f64,
    /// B4 seconds to hand every push to the channel.
    pub b4_enqueue_seconds: f64,
    /// B5 1 MiB calls completed.
    pub b5_calls: u64,
    /// B5 seconds.
    pub b5_seconds: f64,
    /// B5 MiB of payload per second, one direction.
    pub b5_mib_per_s: f64,
    /// B5 milliseconds per call.
    pub b5_ms_per_call: f64,
    /// B5 failed or wrong replies.
    pub b5_errors: u64,
    /// CPU time of the serving node over one second of no traffic after B5, in % of one
    /// core (busy polling must have stopped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_cpu_idle_pct: Option<f64>,
    /// B6: node `VmRSS` before the first call, KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_idle_kb: Option<u64>,
    /// B6: node `VmRSS` right after B3, KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_after_b3_kb: Option<u64>,
    /// B6: node `VmRSS` at the end (after B5), KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_end_kb: Option<u64>,
    /// B6: node `VmHWM` (peak resident) at the end, KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_hwm_kb: Option<u64>,
}

/// The client: a cluster handle plus where to send.
struct Client {
    cluster: Cluster,
    node: String,
    echo: Target,
    sink: Target,
    /// Keeps the client node alive while the benchmark runs.
    _local: Node,
}

impl Client {
    async fn echo(&self, payload: Bytes) -> Result<bool, String> {
        match self
            .cluster
            .call(&self.node, self.echo.clone(), payload.clone())
            .await
        {
            Ok(reply) => Ok(reply == payload),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn sink_count(&self) -> Result<u64, BenchError> {
        let what = || format!("call {} \"count\" on {}", self.sink, self.node);
        let reply = self
            .cluster
            .call(
                &self.node,
                self.sink.clone(),
                seri::pack(&[Value::from("count")])?,
            )
            .await
            .map_err(|e| BenchError::Call {
                what: what(),
                reason: e.to_string(),
            })?;
        let values = seri::unpack(&reply).map_err(|e| BenchError::BadReply {
            what: what(),
            reason: e.to_string(),
        })?;
        values
            .first()
            .and_then(Value::as_int)
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| BenchError::BadReply {
                what: what(),
                reason: format!(
                    "expected a non-negative integer, got {} value(s)",
                    values.len()
                ),
            })
    }
}

fn read_rss(pid: Option<u32>) -> Option<rss::Rss> {
    let pid = pid?;
    match rss::read(pid) {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("bee-bench: B6 skipped: {e}");
            None
        }
    }
}

/// CPU time of a process over a stretch of wall time.
struct CpuWatch {
    pid: u32,
    cpu_ns: Option<u64>,
    t0: Instant,
}

impl CpuWatch {
    fn start(pid: u32) -> CpuWatch {
        CpuWatch {
            pid,
            cpu_ns: rss::cpu_ns(pid).ok(),
            t0: Instant::now(),
        }
    }

    /// CPU time since `start` in % of one core (`None` if /proc could not be read).
    fn pct(&self) -> Option<f64> {
        let wall = self.t0.elapsed().as_nanos() as f64;
        let used = rss::cpu_ns(self.pid).ok()?.checked_sub(self.cpu_ns?)?;
        Some(100.0 * used as f64 / wall)
    }
}

/// Run B2..B5 (and the B6 readings) as described in the module doc.
pub async fn run(p: &ClusterParams) -> Result<ClusterResult, BenchError> {
    let config = ClusterConfig::load(&p.cluster_file).map_err(|e| BenchError::ClusterConfig {
        path: p.cluster_file.clone(),
        reason: e.to_string(),
    })?;
    let local = Node::new(
        format!("bee-bench-{}", std::process::id()),
        RuntimeConfig::default(),
    );
    let mut settings = ClusterSettings {
        wait_for_node: Some(Duration::ZERO),
        ..ClusterSettings::default()
    };
    settings.channel.busy_poll = p.busy_poll;
    let cluster = Cluster::start(&local, Registry::new(config), settings);
    let client = Arc::new(Client {
        cluster,
        node: p.node.clone(),
        echo: Target::from(p.echo.as_str()),
        sink: Target::from(p.sink.as_str()),
        _local: local.clone(),
    });
    let mut r = ClusterResult {
        client: "bee".into(),
        target: p.node.clone(),
        ..ClusterResult::default()
    };
    r.rss_idle_kb = read_rss(p.node_pid).map(|m| m.rss_kb);

    let hello = seri::pack(&[Value::from("hello")])?;
    match client.echo(hello).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(BenchError::BadReply {
                what: format!("call {} on {}", client.echo, p.node),
                reason: "the reply differs from the request (is it an echo service?)".into(),
            })
        }
        Err(reason) => {
            return Err(BenchError::Unreachable {
                node: p.node.clone(),
                target: client.echo.to_string(),
                reason,
            })
        }
    }

    b2(&client, p, &mut r).await?;
    b3(&client, p, &mut r).await?;
    if let Some(m) = read_rss(p.node_pid) {
        r.rss_after_b3_kb = Some(m.rss_kb);
    }
    if let Some(raw) = &p.raw_echo {
        // The same B3 against the echo that returns its bytes untouched.
        let raw_client = Arc::new(Client {
            cluster: client.cluster.clone(),
            node: client.node.clone(),
            echo: Target::from(raw.as_str()),
            sink: client.sink.clone(),
            _local: client._local.clone(),
        });
        let mut raw_r = ClusterResult::default();
        b3(&raw_client, p, &mut raw_r).await?;
        r.b3_raw_calls_per_s = Some(raw_r.b3_calls_per_s);
        r.b3_errors += raw_r.b3_errors;
    }
    b4(&client, p, &mut r).await?;
    b5(&client, p, &mut r).await?;
    if let Some(m) = read_rss(p.node_pid) {
        r.rss_end_kb = Some(m.rss_kb);
        r.rss_hwm_kb = Some(m.hwm_kb);
    }
    if let Some(pid) = p.node_pid {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let idle = CpuWatch::start(pid);
        tokio::time::sleep(Duration::from_secs(1)).await;
        r.node_cpu_idle_pct = idle.pct();
    }
    local.shutdown();
    Ok(r)
}

async fn b2(c: &Client, p: &ClusterParams, r: &mut ClusterResult) -> Result<(), BenchError> {
    for i in 0..1000i64 {
        c.echo(seri::pack(&[Value::from("ping"), Value::Integer(i)])?)
            .await
            .map_err(|reason| BenchError::Call {
                what: "B2 warm-up call".into(),
                reason,
            })?;
    }
    let mut lat = Latencies::with_capacity(p.b2_calls);
    let mut errors = 0u64;
    let node_cpu = p.node_pid.map(CpuWatch::start);
    let own_cpu = CpuWatch::start(std::process::id());
    for i in 0..p.b2_calls {
        let payload = seri::pack(&[Value::from("ping"), Value::Integer(i as i64)])?;
        let t0 = Instant::now();
        let ok = c.echo(payload).await;
        lat.record(t0.elapsed());
        if ok != Ok(true) {
            errors += 1;
        }
    }
    r.b2_node_cpu_pct = node_cpu.and_then(|w| w.pct());
    r.b2_client_cpu_pct = own_cpu.pct();
    let s = lat.summary();
    r.b2_calls = p.b2_calls;
    r.b2_p50_us = s.p50_us;
    r.b2_p99_us = s.p99_us;
    r.b2_mean_us = s.mean_us;
    r.b2_max_us = s.max_us;
    r.b2_errors = errors;
    eprintln!(
        "B2 latency 1 in flight: p50 {:.1} us, p99 {:.1} us, mean {:.1} us, max {:.1} us ({} calls, {errors} errors)",
        s.p50_us, s.p99_us, s.mean_us, s.max_us, p.b2_calls
    );
    Ok(())
}

async fn b3(c: &Arc<Client>, p: &ClusterParams, r: &mut ClusterResult) -> Result<(), BenchError> {
    let client = c.clone();
    let load = drive(p.b3_inflight, p.b3_seconds, move |w, i| {
        let c = client.clone();
        async move {
            match seri::pack(&[Value::Integer(w as i64), Value::Integer(i as i64)]) {
                Ok(payload) => c.echo(payload).await == Ok(true),
                Err(_) => false,
            }
        }
    })
    .await;
    let (done, errors, secs) = (load.done, load.errors, load.seconds);
    r.b3_inflight = p.b3_inflight;
    r.b3_calls = done;
    r.b3_seconds = secs;
    r.b3_calls_per_s = done as f64 / secs;
    r.b3_errors = errors;
    eprintln!(
        "B3 throughput {} in flight: {:.0} calls/s ({done} calls in {secs:.2} s, {errors} errors)",
        p.b3_inflight, r.b3_calls_per_s
    );
    Ok(())
}

async fn b4(c: &Client, p: &ClusterParams, r: &mut ClusterResult) -> Result<(), BenchError> {
    let payload = seri::pack(&[Value::from("x".repeat(64))])?;
    let base = c.sink_count().await?;
    let t0 = Instant::now();
    let mut refused = 0u64;
    for _ in 0..p.b4_pushes {
        if c.cluster
            .send(&c.node, c.sink.clone(), payload.clone())
            .await
            .is_err()
        {
            refused += 1;
        }
    }
    let t_sent = Instant::now();
    if refused > 0 {
        eprintln!("B4: {refused} pushes were refused by the channel (counted as lost)");
    }
    // The first count call queues behind every push on the same connection; then poll
    // until every push is counted or the count has not moved for 3 s.
    let (mut got, mut t_last, mut last_change) = (0u64, t_sent, Instant::now());
    loop {
        let now_count = c.sink_count().await?.saturating_sub(base);
        let now = Instant::now();
        if now_count != got {
            got = now_count;
            t_last = now;
            last_change = now;
        }
        if got >= p.b4_pushes as u64 || last_change.elapsed() > Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = (t_last - t0).as_secs_f64();
    r.b4_pushes = p.b4_pushes as u64;
    r.b4_received = got;
    r.b4_lost = (p.b4_pushes as u64).saturating_sub(got);
    r.b4_seconds = secs;
    r.b4_pushes_per_s = if secs > 0.0 { got as f64 / secs } else { 0.0 };
    r.b4_enqueue_seconds = (t_sent - t0).as_secs_f64();
    eprintln!(
        "B4 pushes (64 B): {:.0} pushes/s received ({} sent, {got} counted, {} lost, {secs:.2} s; enqueue took {:.2} s)",
        r.b4_pushes_per_s, p.b4_pushes, r.b4_lost, r.b4_enqueue_seconds
    );
    Ok(())
}

async fn b5(c: &Client, p: &ClusterParams, r: &mut ClusterResult) -> Result<(), BenchError> {
    let mib: Vec<u8> = b"0123456789abcdef".repeat(65536);
    let payload = seri::pack(&[Value::from(mib)])?;
    match c.echo(payload.clone()).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(BenchError::BadReply {
                what: "B5 warm-up 1 MiB echo".into(),
                reason: "the reply differs from the request".into(),
            })
        }
        Err(reason) => {
            return Err(BenchError::Call {
                what: "B5 warm-up 1 MiB echo".into(),
                reason,
            })
        }
    }
    let (mut calls, mut errors) = (0u64, 0u64);
    let t0 = Instant::now();
    let stop = t0 + Duration::from_secs_f64(p.b5_seconds);
    while Instant::now() < stop {
        if c.echo(payload.clone()).await == Ok(true) {
            calls += 1;
        } else {
            errors += 1;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    r.b5_calls = calls;
    r.b5_seconds = secs;
    r.b5_mib_per_s = calls as f64 / secs;
    r.b5_ms_per_call = secs * 1e3 / calls.max(1) as f64;
    r.b5_errors = errors;
    eprintln!(
        "B5 1 MiB echo: {:.1} MiB/s one-way payload ({calls} calls in {secs:.2} s, {:.2} ms/call, {errors} errors)",
        r.b5_mib_per_s, r.b5_ms_per_call
    );
    Ok(())
}
