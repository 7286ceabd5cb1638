//! `cargo xtask soak [--secs N] [--warmup N] [--overload-secs N] [--overload-only]`: the
//! soak test — two `bee` nodes (release builds) under mixed load for `--secs` seconds
//! (default 600), their resident memory sampled every second, and a verdict on growth
//! after the warm-up; then the overload phase (`soak_overload.rs`, `--overload-secs`,
//! default 75, 0 skips it): nodes loaded far past their budgets, their RSS curve.
//!
//! ```text
//! cargo xtask soak                  # 10 minutes, then 95 s of overload (not in CI)
//! cargo xtask soak --secs 30        # a short run, to see it works
//! cargo xtask soak --overload-only  # the overload phase alone
//! ```
//!
//! Steps:
//! 1. Build `bee` and `xtask` with `--release` (the load client is this program, run from
//!    its release build as `xtask soak-client`, so the client is not the bottleneck).
//! 2. Write `target/soak/`: the cluster file (`soak_a`, `soak_b` on free loopback ports),
//!    a shared secret, and node configs with node authentication, default limits, and a
//!    Prometheus endpoint each (`metrics_listen`); start both nodes (`echo`, `sink`,
//!    `slow` services; logs in `target/soak/*.log`).
//! 3. The client runs, for `--secs`, against both nodes at once:
//!    - 8 tasks of small echo calls (checked reply = request);
//!    - 2 tasks of pushes to `sink`, 100 at a time followed by a `count` call and a 1 ms
//!      pause (the total is checked at the end: no push lost);
//!    - 1 task of large echo calls, 64 KiB to 2 MiB (multi-part both ways);
//!    - 1 task of calls that time out (`slow` 100 ms with a 20 ms timeout; the late
//!      replies must be dropped) alternating with calls that do not;
//!    - connection churn: every 2 s a fresh client node connects to both nodes, makes 20
//!      calls and goes away; every 5th round also a client *without* the secret, which
//!      must be refused (`AuthFailed`);
//!    - a scrape of both metrics endpoints every 5 s (HTTP 200 with the transport's
//!      counters in it).
//! 4. Meanwhile this process reads both nodes' `VmRSS` every second
//!    (`target/soak/rss.csv`).
//! 5. Report (`target/soak/results.md`, also printed): per node the RSS at start, at the
//!    end of the warm-up (`--warmup`, default a tenth of the run, at least 5 s), peak and
//!    end, growth after the warm-up and its least-squares slope; calls/s of each load and
//!    the error counts. The run fails if any call that should succeed failed, a reply was
//!    wrong, a push was lost or a scrape failed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bee_cluster::{CallErrorExt, Cluster, ClusterSettings};
use bee_codec::seri::{self, Value};
use bee_registry::{ClusterConfig, Registry};
use bee_runtime::{Node, RuntimeConfig};
use bee_transport::{AuthSecret, TransportError};

use crate::process::{free_port, start_node};

const NODES: [&str; 2] = ["soak_a", "soak_b"];

/// `cargo xtask soak`: see the module doc.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut secs = 600u64;
    let mut warmup: Option<u64> = None;
    let mut overload_secs = 75u64;
    let mut mixed = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |flag: &str| -> Result<u64> {
            it.next()
                .and_then(|n| n.parse().ok())
                .filter(|n| *n > 0)
                .with_context(|| format!("{flag} needs a number of seconds (at least 1)"))
        };
        match a.as_str() {
            "--secs" => secs = num("--secs")?,
            "--warmup" => warmup = Some(num("--warmup")?),
            "--overload-secs" => {
                overload_secs = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .context("--overload-secs needs a number of seconds (0 skips the phase)")?
            }
            "--overload-only" => mixed = false,
            other => {
                bail!("cargo xtask soak: unknown argument {other:?} (flags: --secs N, --warmup N, --overload-secs N, --overload-only)")
            }
        }
    }
    if !mixed && overload_secs == 0 {
        bail!("cargo xtask soak: --overload-only with --overload-secs 0 runs nothing");
    }
    let warmup = warmup.unwrap_or((secs / 10).max(5)).min(secs);
    let command = if mixed {
        format!("cargo xtask soak --secs {secs} --warmup {warmup} --overload-secs {overload_secs}")
    } else {
        format!("cargo xtask soak --overload-only --overload-secs {overload_secs}")
    };
    let started_at = crate::run_info::utc_minute();
    crate::step(
        "build (release)",
        crate::cargo().args([
            "build",
            "--release",
            "-p",
            "bee-node",
            "-p",
            "xtask",
            "--bin",
            "bee",
            "--bin",
            "xtask",
        ]),
    )?;
    let release = crate::run_info::target_dir(root).join("release");
    let dir = root.join("target").join("soak");
    std::fs::create_dir_all(&dir)?;
    let mut md = String::new();
    if mixed {
        md.push_str(&mixed_phase(
            &release,
            &dir,
            secs,
            warmup,
            &started_at,
            &command,
        )?);
    }
    if overload_secs > 0 {
        let o = crate::soak_overload::run(&release, &dir, overload_secs)?;
        std::fs::write(dir.join("overload.md"), &o)?;
        if md.is_empty() {
            md = format!(
                "Run {started_at} on {}; command `{command}` (release build; the nodes and the client on one machine).\n\n",
                crate::run_info::machine()
            );
        }
        md.push_str("\n### Overload phase\n\n");
        md.push_str(&o);
    }
    std::fs::write(dir.join("results.md"), &md)?;
    eprintln!("\n== soak result (target/soak/results.md)\n\n{md}");
    Ok(())
}

/// The mixed load on two nodes (see the module doc); its Markdown report.
fn mixed_phase(
    release: &Path,
    dir: &Path,
    secs: u64,
    warmup: u64,
    started_at: &str,
    command: &str,
) -> Result<String> {
    let secret = dir.join("cluster.secret");
    std::fs::write(
        &secret,
        format!("soak-secret-{}-{}\n", std::process::id(), secs),
    )?;
    let cluster = dir.join("cluster.lua");
    let mut text = String::from("-- written by cargo xtask soak\n");
    for n in NODES {
        text.push_str(&format!("{n} = \"127.0.0.1:{}\"\n", free_port()?));
    }
    std::fs::write(&cluster, text)?;
    let mut nodes = Vec::new();
    let mut metrics = Vec::new();
    for n in NODES {
        let port = free_port()?;
        metrics.push(format!("127.0.0.1:{port}"));
        let cfg = dir.join(format!("{n}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "name = \"{n}\"\ncluster = \"cluster.lua\"\nmetrics_listen = \"127.0.0.1:{port}\"\n\n\
                 [auth]\nsecret_file = \"cluster.secret\"\n\n\
                 [[service]]\nkind = \"echo\"\nname = \"echo\"\n\n\
                 [[service]]\nkind = \"sink\"\nname = \"sink\"\n\n\
                 [[service]]\nkind = \"slow\"\nname = \"slow\"\n"
            ),
        )?;
        let mut cmd = Command::new(release.join("bee"));
        cmd.arg("run").arg(&cfg).env("BEE_LOG", "warn");
        nodes.push(start_node(
            n,
            cmd,
            &dir.join(format!("{n}.log")),
            "listening on",
        )?);
    }
    std::thread::sleep(Duration::from_millis(500));
    let pids: Vec<u32> = nodes.iter().map(|n| n.pid()).collect();

    eprintln!("\n== soak: {secs} s of mixed load (warm-up {warmup} s)");
    let mut client = Command::new(release.join("xtask"))
        .arg("soak-client")
        .arg(&cluster)
        .arg(&secret)
        .arg(secs.to_string())
        .arg(metrics.join(","))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the soak client")?;
    let (status, samples) =
        crate::process::sample_rss_until_exit(&mut client, &pids, "the soak", dir, true)?;
    if !status.success() {
        eprintln!("soak client exited with {status}");
    }
    let mut out = String::new();
    client
        .stdout
        .take()
        .context("no client stdout")?
        .read_to_string(&mut out)?;
    let status = client.wait()?;
    let report = out
        .lines()
        .rev()
        .find(|l| l.starts_with("SOAK "))
        .map(|l| l["SOAK ".len()..].replace("\\n", "\n"))
        .with_context(|| format!("the soak client printed no result ({status})"))?;
    drop(nodes);

    let mut csv = String::from("seconds");
    for n in NODES {
        csv.push_str(&format!(",{n}_rss_kb"));
    }
    csv.push('\n');
    for (t, rss) in &samples {
        csv.push_str(&format!("{t:.1}"));
        for r in rss {
            csv.push_str(&format!(",{r}"));
        }
        csv.push('\n');
    }
    std::fs::write(dir.join("rss.csv"), csv)?;

    let mut md = format!(
        "Run {started_at} on {}; command `{command}` (release build; both nodes and the \
         client on one machine).\n\n\
         | node | RSS start | RSS after warm-up ({warmup} s) | RSS peak | RSS end | growth after warm-up | slope after warm-up |\n\
         |---|---|---|---|---|---|---|\n",
        crate::run_info::machine()
    );
    for (i, n) in NODES.iter().enumerate() {
        let series: Vec<(f64, f64)> = samples.iter().map(|(t, r)| (*t, r[i] as f64)).collect();
        let start = series.first().map_or(0.0, |s| s.1);
        let warm = series
            .iter()
            .find(|(t, _)| *t >= warmup as f64)
            .or(series.last())
            .map_or(0.0, |s| s.1);
        let peak = series.iter().map(|s| s.1).fold(0.0, f64::max);
        let end = series.last().map_or(0.0, |s| s.1);
        let after: Vec<(f64, f64)> = series
            .iter()
            .copied()
            .filter(|(t, _)| *t >= warmup as f64)
            .collect();
        let slope = crate::process::slope_per_min(&after);
        md.push_str(&format!(
            "| {n} | {} | {} | {} | {} | {:+.1} MiB ({:+.1} %) | {:+.0} KiB/min |\n",
            mib(start),
            mib(warm),
            mib(peak),
            mib(end),
            (end - warm) / 1024.0,
            100.0 * (end - warm) / warm.max(1.0),
            slope
        ));
    }
    md.push('\n');
    md.push_str(&report);
    if !status.success() {
        eprintln!("{md}");
        bail!("the soak failed: see the client's lines above");
    }
    Ok(md)
}

fn mib(kb: f64) -> String {
    format!("{:.1} MiB", kb / 1024.0)
}

/// Counters of the client's loads.
#[derive(Default)]
struct Counts {
    small: AtomicU64,
    pushes: AtomicU64,
    big: AtomicU64,
    big_bytes: AtomicU64,
    timeouts: AtomicU64,
    after_timeout_ok: AtomicU64,
    churn_rounds: AtomicU64,
    refused: AtomicU64,
    scrapes: AtomicU64,
    errors: AtomicU64,
}

impl Counts {
    fn error(&self, what: &str, e: impl std::fmt::Display) {
        // The first errors are worth reading; after that, only the count.
        if self.errors.fetch_add(1, Ordering::Relaxed) < 20 {
            eprintln!("soak error: {what}: {e}");
        }
    }
}

fn pack(values: &[Value]) -> bytes::Bytes {
    seri::pack(values).expect("packing plain values cannot fail")
}

fn client_node(cluster: &ClusterConfig, secret: Option<AuthSecret>, tag: &str) -> (Node, Cluster) {
    use std::sync::atomic::AtomicU32;
    static N: AtomicU32 = AtomicU32::new(0);
    let node = Node::new(
        format!("soak-{tag}-{}", N.fetch_add(1, Ordering::Relaxed)),
        RuntimeConfig::default(),
    );
    let mut settings = ClusterSettings {
        wait_for_node: Some(Duration::ZERO),
        ..ClusterSettings::default()
    };
    settings.channel.call_timeout = Duration::from_secs(10);
    settings.channel.auth_secret = secret;
    let c = Cluster::start(&node, Registry::new(cluster.clone()), settings);
    (node, c)
}

/// `xtask soak-client CLUSTER SECRET_FILE SECS METRICS_ADDRS`: the load (see the module
/// doc); prints `SOAK <markdown>` at the end and exits non-zero on any failure.
pub fn client(args: &[String]) -> Result<()> {
    let [cluster, secret, secs, metrics] = args else {
        bail!("usage: xtask soak-client CLUSTER SECRET_FILE SECS METRICS_ADDRS");
    };
    let cluster = ClusterConfig::load(Path::new(cluster)).context("cluster config")?;
    let mut key = std::fs::read(secret).context("secret file")?;
    while key.last() == Some(&b'\n') {
        key.pop();
    }
    let secret = AuthSecret::new(key);
    let secs: u64 = secs.parse().context("seconds")?;
    let metrics: Vec<String> = metrics.split(',').map(str::to_string).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(load(cluster, secret, secs, metrics))
}

async fn load(
    cluster: ClusterConfig,
    secret: AuthSecret,
    secs: u64,
    metrics: Vec<String>,
) -> Result<()> {
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (_node, c) = client_node(&cluster, Some(secret.clone()), "main");
    for n in NODES {
        c.call(n, "sink", pack(&[Value::from("reset")]))
            .await
            .with_context(|| format!("reset sink on {n}"))?;
    }
    let mut tasks = tokio::task::JoinSet::new();
    let t0 = Instant::now();
    for w in 0..8usize {
        let (c, counts, stop) = (c.clone(), counts.clone(), stop.clone());
        tasks.spawn(async move {
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let node = NODES[(w + i as usize) % 2];
                let p = pack(&[Value::from("ping"), Value::Integer(i)]);
                match c.call(node, "echo", p.clone()).await {
                    Ok(r) if r == p => counts.small.fetch_add(1, Ordering::Relaxed),
                    Ok(_) => {
                        counts.error("small call", "wrong reply");
                        0
                    }
                    Err(e) => {
                        counts.error("small call", e);
                        0
                    }
                };
            }
        });
    }
    let sent = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    for w in 0..2usize {
        let (c, counts, stop, sent) = (c.clone(), counts.clone(), stop.clone(), sent.clone());
        tasks.spawn(async move {
            let node = NODES[w];
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..100 {
                    i += 1;
                    match c
                        .send(node, "sink", pack(&[Value::from("hit"), Value::Integer(i)]))
                        .await
                    {
                        Ok(()) => {
                            sent[w].fetch_add(1, Ordering::Relaxed);
                            counts.pushes.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => counts.error("push", e),
                    }
                }
                // Flow control: the count call comes back after the pushes before it.
                if let Err(e) = c.call(node, "sink", pack(&[Value::from("count")])).await {
                    counts.error("sink count", e);
                }
                // Leave the nodes' cores to the other loads too.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
    }
    {
        let (c, counts, stop) = (c.clone(), counts.clone(), stop.clone());
        tasks.spawn(async move {
            let sizes = [64 << 10, 256 << 10, 1 << 20, 2 << 20];
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let size = sizes[i % sizes.len()];
                let blob: Vec<u8> = (0..size).map(|k| (k * 31 + i) as u8).collect();
                let p = pack(&[Value::from(blob)]);
                match c.call(NODES[i % 2], "echo", p.clone()).await {
                    Ok(r) if r == p => {
                        counts.big.fetch_add(1, Ordering::Relaxed);
                        counts
                            .big_bytes
                            .fetch_add(p.len() as u64, Ordering::Relaxed);
                    }
                    Ok(_) => counts.error("large call", "wrong reply"),
                    Err(e) => counts.error("large call", e),
                }
            }
        });
    }
    {
        let (c, counts, stop) = (c.clone(), counts.clone(), stop.clone());
        tasks.spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let node = NODES[i % 2];
                let late = pack(&[Value::Integer(100), Value::Integer(i as i64)]);
                match c
                    .call_timeout(node, "slow", late, Some(Duration::from_millis(20)))
                    .await
                {
                    Err(ref e) if matches!(e.transport(), Some(TransportError::Timeout { .. })) => {
                        counts.timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => counts.error("timed call", "answered before its timeout"),
                    Err(e) => counts.error("timed call", e),
                }
                let quick = pack(&[Value::Integer(1), Value::Integer(i as i64)]);
                match c.call(node, "slow", quick.clone()).await {
                    Ok(r) if r == quick => {
                        counts.after_timeout_ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => counts.error("call after a timeout", "wrong reply"),
                    Err(e) => counts.error("call after a timeout", e),
                }
            }
        });
    }
    {
        let (cluster, secret, counts, stop) = (
            cluster.clone(),
            secret.clone(),
            counts.clone(),
            stop.clone(),
        );
        tasks.spawn(async move {
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let (node, c) = client_node(&cluster, Some(secret.clone()), "churn");
                for i in 0..20i64 {
                    let p = pack(&[Value::from("churn"), Value::Integer(i)]);
                    for n in NODES {
                        match c.call(n, "echo", p.clone()).await {
                            Ok(r) if r == p => {}
                            Ok(_) => counts.error("churn call", "wrong reply"),
                            Err(e) => counts.error("churn call", e),
                        }
                    }
                }
                c.shutdown();
                node.shutdown();
                if round.is_multiple_of(5) {
                    let (node, c) = client_node(&cluster, None, "noauth");
                    // A node with the secret answers the authentication name only to
                    // peers that authenticate: this one must be refused.
                    for n in NODES {
                        match c.call(n, "echo", pack(&[Value::from("intruder")])).await {
                            Err(_) => {
                                counts.refused.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(_) => counts.error("unauthenticated call", "was served"),
                        }
                    }
                    c.shutdown();
                    node.shutdown();
                }
                counts.churn_rounds.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
    }
    {
        let (counts, stop) = (counts.clone(), stop.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for m in &metrics {
                    let m = m.clone();
                    match tokio::task::spawn_blocking(move || scrape(&m)).await {
                        Ok(Ok(())) => {
                            counts.scrapes.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(e)) => counts.error("scrape", format!("{e:#}")),
                        Err(e) => counts.error("scrape", e),
                    }
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
    }
    let mut ticker = tokio::time::interval(Duration::from_secs(60));
    ticker.tick().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = ticker.tick() => eprintln!(
                "  {:.0} s: {} small calls, {} pushes, {} large, {} timeouts, {} errors",
                t0.elapsed().as_secs_f64(),
                counts.small.load(Ordering::Relaxed),
                counts.pushes.load(Ordering::Relaxed),
                counts.big.load(Ordering::Relaxed),
                counts.timeouts.load(Ordering::Relaxed),
                counts.errors.load(Ordering::Relaxed),
            ),
        }
    }
    stop.store(true, Ordering::Relaxed);
    // Every task ends after its current step (a churn round: at most ~20 calls).
    let drained = tokio::time::timeout(Duration::from_secs(60), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        counts.error("stopping", "load tasks did not stop within 60 s");
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let mut lost = Vec::new();
    for (w, n) in NODES.iter().enumerate() {
        let reply = c.call(n, "sink", pack(&[Value::from("count")])).await?;
        let got = match seri::unpack(&reply)?.first() {
            Some(Value::Integer(k)) => *k as u64,
            other => bail!("sink count on {n}: {other:?}"),
        };
        let want = sent[w].load(Ordering::Relaxed);
        if got != want {
            lost.push(format!("{n}: {want} pushes sent, sink counted {got}"));
        }
    }
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let per_s = |a: &AtomicU64| g(a) as f64 / elapsed;
    let errors = g(&counts.errors);
    let md = format!(
        "| load (client, {elapsed:.0} s) | count | per second |\n|---|---|---|\n\
         | small echo calls (8 tasks) | {} | {:.0} |\n\
         | pushes to sink (2 tasks, 100 then a count call, 1 ms pause) | {} | {:.0} |\n\
         | large echo calls, 64 KiB–2 MiB (1 task) | {} ({:.0} MiB each way) | {:.1} |\n\
         | calls timing out as meant (20 ms on a 100 ms reply) | {} | {:.1} |\n\
         | calls right after a timed-out one | {} | {:.1} |\n\
         | churn rounds (new client node, 40 calls, gone) | {} | |\n\
         | unauthenticated clients refused | {} | |\n\
         | metrics scrapes (HTTP 200, transport counters present) | {} | |\n\
         | **errors** (calls that should have succeeded, wrong replies, failed scrapes) | **{errors}** | |\n\
         | **pushes lost** | **{}** | |\n",
        g(&counts.small),
        per_s(&counts.small),
        g(&counts.pushes),
        per_s(&counts.pushes),
        g(&counts.big),
        g(&counts.big_bytes) as f64 / (1 << 20) as f64,
        per_s(&counts.big),
        g(&counts.timeouts),
        per_s(&counts.timeouts),
        g(&counts.after_timeout_ok),
        per_s(&counts.after_timeout_ok),
        g(&counts.churn_rounds),
        g(&counts.refused),
        g(&counts.scrapes),
        if lost.is_empty() { "0".to_string() } else { lost.join("; ") },
    );
    println!("SOAK {}", md.replace('\n', "\\n"));
    if errors > 0 || !lost.is_empty() {
        bail!("{errors} errors, lost pushes: {lost:?}");
    }
    Ok(())
}

/// GET the Prometheus text from `addr` and check it carries the transport's counters.
fn scrape(addr: &str) -> Result<()> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: soak\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    if !body.starts_with("HTTP/1.0 200") && !body.starts_with("HTTP/1.1 200") {
        bail!("{addr}: {}", body.lines().next().unwrap_or("empty answer"));
    }
    if !body.contains("bee_transport_listener_requests_total") {
        bail!("{addr}: no bee_transport_listener_requests_total in the scrape");
    }
    Ok(())
}
