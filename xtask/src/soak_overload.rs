//! The soak's overload phase (`cargo xtask soak --overload-secs N`; default 75, 0 skips
//! it): two release `bee` nodes, each running only a `slow` service (it answers each
//! request with itself after the number of milliseconds the request names, holding it
//! meanwhile), loaded far past what they can hold at once, their resident memory sampled
//! every second.
//!
//! 1. **Tight budget, 20 s**: node `over_tight` with `[limits] inbound_bytes = 8 MiB`;
//!    six client nodes each keep 32 calls of 256 KiB in flight (48 MiB wanted at once,
//!    six times the budget), each request held 3 s. Expected: some calls served, the rest
//!    answered `Overloaded` at once, none `NodeDown`/`PeerUnreachable`, the RSS
//!    high-water mark under 128 MiB.
//! 2. **Slow consumer at the default budgets, N s**: node `over_slow` with the limits
//!    `docs/operations.md` gives (1 GiB inbound); 8,000 callers (8 client nodes × 1,000)
//!    each keep one call of 4 KiB in flight, each request held 2 s. Expected: no call fails
//!    but by `Overloaded`, the RSS flat after the warm-up (a fifth of the phase, at least
//!    10 s).
//!
//! Both nodes log at `warn`; the report counts their warning lines per second (the
//! busiest second), which the throttled warnings keep to a few. The load runs in a child
//! process (`xtask soak-overload-client`, the release build) so that the client's own
//! memory is not the node's. Results: `target/soak/overload.md` and
//! `target/soak/overload-rss.csv`; the run fails when an expectation above does not hold.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bee_cluster::{CallErrorExt, Cluster, ClusterSettings};
use bee_codec::seri::{self, Value};
use bee_registry::{ClusterConfig, Registry};
use bee_runtime::{Node, RuntimeConfig};
use bee_transport::TransportError;

use crate::process::{free_port, start_node};

/// The tight node's inbound budget, and the high-water mark its RSS must stay under.
const TIGHT_BUDGET: u64 = 8 << 20;
const TIGHT_HWM_LIMIT: u64 = 128 << 20;
const TIGHT_SECS: u64 = 20;
/// Growth of the slow consumer's RSS after the warm-up that still counts as flat.
const FLAT_MIB: f64 = 32.0;

/// The phase; returns its Markdown report (fails when an expectation does not hold).
pub fn run(release: &Path, dir: &Path, secs: u64) -> Result<String> {
    let cluster = dir.join("overload-cluster.lua");
    let names = ["over_tight", "over_slow"];
    let mut text = String::from("-- written by cargo xtask soak (overload phase)\n");
    for n in names {
        text.push_str(&format!("{n} = \"127.0.0.1:{}\"\n", free_port()?));
    }
    std::fs::write(&cluster, text)?;
    let mut nodes = Vec::new();
    let mut logs = Vec::new();
    for n in names {
        let limits = if n == "over_tight" {
            format!("[limits]\ninbound_bytes = {TIGHT_BUDGET}\n\n")
        } else {
            String::new()
        };
        let cfg = dir.join(format!("{n}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "name = \"{n}\"\ncluster = \"overload-cluster.lua\"\n\n{limits}\
                 [[service]]\nkind = \"slow\"\nname = \"slow\"\n"
            ),
        )?;
        let log = dir.join(format!("{n}.log"));
        let mut cmd = Command::new(release.join("bee"));
        cmd.arg("run").arg(&cfg).env("BEE_LOG", "warn");
        nodes.push(start_node(n, cmd, &log, "listening on")?);
        logs.push(log);
    }
    let pids: Vec<u32> = nodes.iter().map(|n| n.pid()).collect();
    eprintln!(
        "\n== soak overload phase: {TIGHT_SECS} s at an 8 MiB budget, then {secs} s of a slow consumer at the default budgets"
    );
    let mut client = Command::new(release.join("xtask"))
        .arg("soak-overload-client")
        .arg(&cluster)
        .arg(secs.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the overload client")?;
    let (status, samples) = crate::process::sample_rss_until_exit(
        &mut client,
        &pids,
        "the overload phase",
        dir,
        false,
    )?;
    let hwm: Vec<u64> = pids
        .iter()
        .map(|p| crate::process::status_kib(*p, "VmHWM").unwrap_or(0) * 1024)
        .collect();
    let mut out = String::new();
    client
        .stdout
        .take()
        .context("no client stdout")?
        .read_to_string(&mut out)?;
    drop(nodes);
    if !status.success() {
        bail!("the overload client failed ({status}); see its lines above");
    }
    let tally = |phase: &str| -> Result<HashMap<String, u64>> {
        let line = out
            .lines()
            .find_map(|l| l.strip_prefix(&format!("OVERLOAD {phase} ")))
            .with_context(|| format!("the overload client printed no {phase} result"))?;
        Ok(line
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect())
    };
    let tight = tally("tight")?;
    let slow = tally("slow")?;
    let get = |t: &HashMap<String, u64>, k: &str| t.get(k).copied().unwrap_or(0);

    let mut csv = String::from("seconds,over_tight_rss_kb,over_slow_rss_kb\n");
    for (t, r) in &samples {
        csv.push_str(&format!("{t:.1},{},{}\n", r[0], r[1]));
    }
    std::fs::write(dir.join("overload-rss.csv"), csv)?;

    // The slow consumer's part of the samples: from the end of the tight phase on.
    let slow_start = samples
        .iter()
        .find(|(t, _)| *t >= TIGHT_SECS as f64 + 1.0)
        .map_or(0.0, |s| s.0);
    let series: Vec<(f64, f64)> = samples
        .iter()
        .filter(|(t, _)| *t >= slow_start)
        .map(|(t, r)| (t - slow_start, r[1] as f64))
        .collect();
    let warmup = (secs as f64 / 5.0).max(10.0);
    let warm = series
        .iter()
        .find(|(t, _)| *t >= warmup)
        .or(series.last())
        .map_or(0.0, |s| s.1);
    let end = series.last().map_or(0.0, |s| s.1);
    let peak = series.iter().map(|s| s.1).fold(0.0, f64::max);
    let after: Vec<(f64, f64)> = series
        .iter()
        .copied()
        .filter(|(t, _)| *t >= warmup)
        .collect();
    let slope = crate::process::slope_per_min(&after);
    let growth_mib = (end - warm) / 1024.0;
    let warn_tight = busiest_second(&logs[0]);
    let warn_slow = busiest_second(&logs[1]);

    let mut md = format!(
        "**Tight budget** (`inbound_bytes = 8 MiB`, 6 clients × 32 calls × 256 KiB in flight, \
         each held 3 s, {TIGHT_SECS} s): {} calls served, {} answered `Overloaded`, {} `NodeDown`/`PeerUnreachable`, \
         {} other errors; serving node's RSS high-water mark **{:.1} MiB** (limit {} MiB); \
         busiest second of its log: {} warning line(s).\n\n\
         **Slow consumer at the default budgets** (8,000 callers × 4 KiB, each held 2 s, {secs} s): \
         {} calls served ({:.0}/s), {} `Overloaded`, {} `NodeDown`/`PeerUnreachable`, {} other errors; \
         RSS after the {warmup:.0} s warm-up {:.1} MiB, peak {:.1} MiB, end {:.1} MiB: growth after warm-up \
         **{growth_mib:+.1} MiB**, slope {slope:+.0} KiB/min; busiest second of its log: {} warning line(s).\n\n\
         The slow consumer's RSS, every 5 s (MiB):\n\n| s |",
        get(&tight, "ok"),
        get(&tight, "overloaded"),
        get(&tight, "down"),
        get(&tight, "other"),
        hwm[0] as f64 / (1 << 20) as f64,
        TIGHT_HWM_LIMIT >> 20,
        warn_tight,
        get(&slow, "ok"),
        get(&slow, "ok") as f64 / secs as f64,
        get(&slow, "overloaded"),
        get(&slow, "down"),
        get(&slow, "other"),
        warm / 1024.0,
        peak / 1024.0,
        end / 1024.0,
        warn_slow,
    );
    let points: Vec<&(f64, f64)> = series
        .iter()
        .filter(|(t, _)| (t.round() as u64).is_multiple_of(5))
        .collect();
    for (t, _) in &points {
        md.push_str(&format!(" {:.0} |", t));
    }
    md.push_str("\n|---|");
    for _ in &points {
        md.push_str("---|");
    }
    md.push_str("\n| RSS |");
    for (_, r) in &points {
        md.push_str(&format!(" {:.0} |", r / 1024.0));
    }
    md.push('\n');

    let mut failed = Vec::new();
    if get(&tight, "down") + get(&slow, "down") > 0 {
        failed.push("a call saw a live node as down or unreachable");
    }
    if get(&tight, "other") + get(&slow, "other") > 0 {
        failed.push("a call failed with an error other than Overloaded");
    }
    if get(&tight, "ok") == 0 || get(&slow, "ok") == 0 {
        failed.push("no call was served");
    }
    if get(&tight, "overloaded") == 0 {
        failed.push("six times the budget wanted, and nothing was answered Overloaded");
    }
    if hwm[0] > TIGHT_HWM_LIMIT {
        failed.push("the tight node's RSS went past 128 MiB");
    }
    if growth_mib > FLAT_MIB {
        failed.push("the slow consumer's RSS grew after the warm-up");
    }
    if !failed.is_empty() {
        eprintln!("{md}");
        bail!("overload phase: {}", failed.join("; "));
    }
    Ok(md)
}

/// The most warning lines a log has within one second (lines start with an RFC 3339
/// time; the second is its first 19 characters).
fn busiest_second(log: &Path) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut per: HashMap<&str, usize> = HashMap::new();
    for line in text.lines().filter(|l| l.contains(" WARN ")) {
        if let Some(second) = line.get(..19) {
            *per.entry(second).or_default() += 1;
        }
    }
    per.values().copied().max().unwrap_or(0)
}

/// How the calls of one load ended.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    overloaded: AtomicU64,
    down: AtomicU64,
    other: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn line(&self, phase: &str) -> String {
        format!(
            "OVERLOAD {phase} ok={} overloaded={} down={} other={}",
            self.ok.load(Ordering::Relaxed),
            self.overloaded.load(Ordering::Relaxed),
            self.down.load(Ordering::Relaxed),
            self.other.load(Ordering::Relaxed)
        )
    }
}

/// One caller: call `node`'s `slow` with `payload` until `end`; a caller answered
/// `Overloaded` (or failed) waits `pause` before its next call.
async fn call_until(
    client: Cluster,
    node: &'static str,
    payload: bytes::Bytes,
    end: Instant,
    tally: Arc<Tally>,
    pause: Duration,
) {
    while Instant::now() < end {
        match client.call(node, "slow", payload.clone()).await {
            Ok(reply) if reply == payload => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Ok(_) => {
                tally.other.fetch_add(1, Ordering::Relaxed);
                note(&tally, "a reply that is not the request".into());
            }
            Err(ref e) if matches!(e.transport(), Some(TransportError::Overloaded { .. })) => {
                tally.overloaded.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let down = matches!(
                    e.transport(),
                    Some(TransportError::NodeDown { .. } | TransportError::PeerUnreachable { .. })
                );
                let t = if down { &tally.down } else { &tally.other };
                t.fetch_add(1, Ordering::Relaxed);
                note(&tally, e.to_string());
            }
        }
        tokio::time::sleep(pause).await;
    }
}

fn note(tally: &Tally, e: String) {
    let mut errors = tally.errors.lock().unwrap_or_else(|p| p.into_inner());
    if errors.len() < 5 {
        eprintln!("overload client: {e}");
        errors.push(e);
    }
}

fn client_node(cluster: &ClusterConfig, tag: &str, i: usize) -> (Node, Cluster) {
    let node = Node::new(format!("overload-{tag}-{i}"), RuntimeConfig::default());
    let mut settings = ClusterSettings {
        wait_for_node: Some(Duration::ZERO),
        ..ClusterSettings::default()
    };
    settings.channel.call_timeout = Duration::from_secs(20);
    let c = Cluster::start(&node, Registry::new(cluster.clone()), settings);
    (node, c)
}

/// `xtask soak-overload-client CLUSTER SECS`: the two loads (see the module doc), one
/// after the other; prints one `OVERLOAD phase k=v…` line for each.
pub fn client(args: &[String]) -> Result<()> {
    let [cluster, secs] = args else {
        bail!("usage: xtask soak-overload-client CLUSTER SECS");
    };
    let cluster = ClusterConfig::load(Path::new(cluster)).context("cluster config")?;
    let secs: u64 = secs.parse().context("seconds")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let load = |tag: &'static str,
                    node: &'static str,
                    clients: usize,
                    each: usize,
                    hold_ms: i64,
                    bytes: usize,
                    secs: u64| {
            let cluster = cluster.clone();
            async move {
                let payload = seri::pack(&[
                    Value::Integer(hold_ms),
                    Value::from("x".repeat(bytes).as_str()),
                ])
                .expect("packing plain values cannot fail");
                let tally = Arc::new(Tally::default());
                let nodes: Vec<_> = (0..clients)
                    .map(|i| client_node(&cluster, tag, i))
                    .collect();
                let end = Instant::now() + Duration::from_secs(secs);
                let mut tasks = tokio::task::JoinSet::new();
                for (_node, c) in &nodes {
                    for _ in 0..each {
                        tasks.spawn(call_until(
                            c.clone(),
                            node,
                            payload.clone(),
                            end,
                            tally.clone(),
                            Duration::from_millis(200),
                        ));
                    }
                }
                while tasks.join_next().await.is_some() {}
                println!("{}", tally.line(tag));
            }
        };
        load("tight", "over_tight", 6, 32, 3000, 256 << 10, TIGHT_SECS).await;
        load("slow", "over_slow", 8, 1000, 2000, 4 << 10, secs).await;
    });
    Ok(())
}
