//! `cargo xtask bench [--quick] [--node-threads N] [--busy-poll-us US]`: the benchmarks
//! behind `BENCHMARKS.md`.
//!
//! ```text
//! cargo xtask bench            # full run, stock skynet v1.6.0 side by side (~3 min)
//! cargo xtask bench --quick    # a tenth of each measurement, for a smoke check
//! cargo xtask bench --no-skynet
//!                              # bee and the tokio floor only (~1.5 min)
//! SKYNET_DIR=/path/to/skynet-1.6.0 cargo xtask bench
//!                              # stock skynet from your own build instead of
//!                              # target/skynet (SKYNET_THREADS=N: its nodes' `thread`,
//!                              # default 2)
//! cargo xtask bench --node-threads 2 --busy-poll-us 0
//!                              # the bee node's worker threads (default 1: the client
//!                              # and the node share the machine's cores) and the busy-poll
//!                              # window of the bee client and node (default: bee's)
//! ```
//!
//! Steps:
//! 1. Build `bee`, `bee-demo` and `bee-bench` with `--release`.
//! 2. B1 (`bee-bench local`): local calls in one process, 1 and 64 callers.
//! 3. The floor (`bee-bench tokio-echo`): a bare tokio TCP echo, server and client in
//!    two processes, same 2-byte big-endian framing and message sizes.
//!    Then skynet's Lua layer (`bee-bench lua`, with the skynet tree): the scripts of
//!    `bench/lua/` on bee and on stock skynet at equal threads — same-node `skynet.call`,
//!    `cluster.call` across two nodes, memory per idle Lua service.
//! 4. Start a `bee run` node `beebench` (`threads` from `--node-threads`; `@echo` is
//!    `echo_values`, which unpacks and re-packs like a skynet Lua echo — equal server
//!    work — `@echo_raw` the raw-bytes echo, `@sink`) and run `bee-bench cluster` against
//!    it from a second process: B2..B5, B3 once more against `@echo_raw` (the "transport
//!    only" row), B6 (the node's VmRSS idle, right after B3, and VmHWM at the end) and
//!    the node's CPU during B2 and when idle afterwards. The client runs one runtime
//!    worker (`bee-bench cluster --threads`, default 1), as the node does, against every
//!    server alike.
//! 5. Stock skynet v1.6.0 (`cargo xtask skynet` builds it under `target/skynet/` unless
//!    `SKYNET_DIR` names a build; nothing of it lives in this repo), through
//!    `interop/skynet/run.sh`: start a skynet node `skybench`
//!    (`run.sh node`), run the skynet reference client against it (`run.sh bench`),
//!    reading the skynet node's RSS idle, when the client reports B3, and at the end;
//!    run the same skynet client against the bee node too, and `bee-bench cluster`
//!    against the skynet node: the three views (bee→bee vs skynet→skynet, the
//!    skynet client against each server, bee-bench against each server — the view the
//!    targets are judged on). With `--no-skynet`, the
//!    table shows reference figures, labelled "reference, not measured in this run". A
//!    skynet-side run that fails (a wrong reply, a lost push, a node that did not start)
//!    fails the benchmark run.
//! 6. mysqlpool: a second node `beesql` with `mysqlpool` (pool of 8) on the
//!    local MariaDB; `bee-bench mysql` measures point selects/s through the cluster, 64
//!    in flight, next to the same queries issued directly with mysql_async.
//! 7. Handler API vs raw `Service` (`bee-bench api`): a typed `Dispatcher`
//!    command against two hand-written `Service`s doing the same work (one unpacks the
//!    payload, one reads it value by value), local (1 and 64 callers) and cluster (64 in
//!    flight, in-process nodes over loopback), interleaved in rounds; 5 s per variant per
//!    set (`--quick`: 0.5 s).
//! 8. C++ rpc_call vs a Rust caller (`bee-bench cpp-rpc`): `bench.so` (built
//!    from `cservices/bench/` with `make`) and a Rust `NativeEndpoint`, on one bee node,
//!    each make sequential rpc_calls of `game.Ping` to `lpersistence` on a `bee-demo`
//!    node through the same CServiceProxy, interleaved in 10 rounds; 20,000 calls per
//!    side (`--quick`: 2,000).
//! 9. Busy polling, scale and hot update: `bee-bench busy-poll` (the serving node's CPU with 1, 8 and
//!    32 connections at 200 calls/s each, polling on and off), `bee-bench scale` (1/8/32
//!    connections over several client processes, fan-out to 16 nodes, memory per idle
//!    peer connection with 1,000 peers, a 60 s soak with the node's RSS every second) and
//!    `bee-bench handover` (a node handed over three times under calls: handover time, the
//!    caller's longest wait, p99 during handovers vs steady).
//! 10. Gate echo (`bee-bench gate`, with stock skynet only): a Lua echo on skynet's
//!     `snax.gateserver` (`interop/skynet/service/gate_echo.lua`), the same skynet config
//!     under `bee run` and under stock skynet, 100 connections × 16 netpack frames in
//!     flight: echoes/s and p50/p99 per server in alternating rounds, and VmRSS per idle
//!     connection with 10,000 of them (the median over five fresh servers a side, three
//!     with `--quick`). Then `bee-bench lua-mysql`: `skynet.db.mysql`
//!     point selects from a Lua service (`mysql_bench_main.lua`, 8 connections × 8
//!     coroutines), the same config under `bee run` and stock skynet, alternating.
//! 11. Write the raw JSON to `target/bench/results.json`, print the markdown table
//!     (metric | bee | tokio floor | stock skynet | ratio | target met?) and write it
//!     to `target/bench/results.md`. Node logs are in `target/bench/*.log`.
//! 11. Draw the chart of that table's headline rows (`crate::chart`): `bench/chart.svg`
//!     after a full run, `target/bench/chart.svg` after `--quick` (a smoke run's figures
//!     do not replace the recorded chart).
//!
//! The run fails (non-zero exit) if a bee reply was wrong or a push was lost; missed
//! speed targets are reported in the table, not turned into a failure.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::process::{free_port, start_node};

/// `VmRSS` and `VmHWM` of a process, KiB.
fn rss(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.trim().strip_suffix("kB"))
            .and_then(|n| n.trim().parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Run `bee-bench ARGS`; progress shows on stderr; returns the JSON line it printed and
/// whether it exited 0.
fn bee_bench(bin: &Path, args: &[&str]) -> Result<(String, bool)> {
    eprintln!("\n== bee-bench {}", args.join(" "));
    let out = Command::new(bin)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .map(str::to_string);
    match json {
        Some(j) => Ok((j, out.status.success())),
        None => bail!(
            "bee-bench {} failed ({}) without results",
            args.join(" "),
            out.status
        ),
    }
}

/// What the skynet reference client printed, with the serving node's memory readings.
struct SkynetRun {
    bench: String,
    rss: Option<String>,
}

/// Run the skynet bench client (`interop/skynet/run.sh bench`) against `target`, reading
/// `node_pid`'s memory when the client reports B3 and at the end.
fn skynet_client(
    runner: &Path,
    target: &str,
    cluster: &Path,
    quick: bool,
    node_pid: u32,
) -> Result<SkynetRun> {
    eprintln!("\n== skynet client ({} bench {target})", runner.display());
    let mut cmd = Command::new("bash");
    cmd.arg(runner);
    cmd.args(["bench", target]).arg(cluster);
    if quick {
        cmd.envs([
            ("B2_CALLS", "2000"),
            ("B3_SECONDS", "1"),
            ("B4_PUSHES", "50000"),
            ("B5_SECONDS", "1"),
        ]);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let idle = rss(node_pid);
    let (mut after_b3, mut bench) = (None, None);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        eprintln!("  | {line}");
        if line.starts_with("B3 throughput") {
            after_b3 = rss(node_pid);
        }
        if let Some(j) = line.strip_prefix("BENCH ") {
            if j.starts_with('{') {
                bench = Some(j.to_string());
            }
        }
    }
    let status = child.wait()?;
    let end = rss(node_pid);
    let Some(bench) = bench else {
        bail!("the skynet bench client did not print its results ({status})");
    };
    let rss = match (idle, after_b3, end) {
        (Some(i), Some(b3), Some(e)) => Some(format!(
            "{{\"rss_idle_kb\":{},\"rss_after_b3_kb\":{},\"rss_end_kb\":{},\"rss_hwm_kb\":{}}}",
            i.0, b3.0, e.0, e.1
        )),
        _ => None,
    };
    Ok(SkynetRun { bench, rss })
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn machine() -> String {
    let (nproc, cpu) = crate::run_info::cpus();
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    format!(
        "{{\"nproc\":{nproc},\"cpu\":{},\"loadavg\":{}}}",
        json_string(&cpu),
        json_string(&load)
    )
}

/// Run the benchmarks (see the module doc).
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut quick = false;
    // The serving bee node's worker threads: client and node share the machine's cores.
    let mut node_threads = 1usize;
    // Stock skynet's columns are measured unless asked not to (built by `cargo xtask skynet`).
    let mut no_skynet = false;
    // Busy polling of the bee client and node: bee's default unless given.
    let mut busy_poll_us: Option<u64> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--no-skynet" => no_skynet = true,
            "--node-threads" => {
                node_threads = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .context("--node-threads needs a count of at least 1")?;
            }
            "--busy-poll-us" => {
                busy_poll_us = Some(
                    it.next()
                        .and_then(|n| n.parse().ok())
                        .context("--busy-poll-us needs a number of microseconds (0: off)")?,
                );
            }
            other => bail!(
                "cargo xtask bench: unknown argument {other:?} (flags: --quick, --no-skynet, --node-threads N, --busy-poll-us US; env SKYNET_DIR)"
            ),
        }
    }
    // The skynet side runs through our runner; SKYNET_DIR (read by it) names the build:
    // the tree `cargo xtask skynet` builds under target/skynet unless the caller set one.
    let runner = root.join("interop").join("skynet").join("run.sh");
    let lab = if no_skynet {
        None
    } else {
        Some(crate::skynet::ensure(root)?)
    };
    // Worker threads of the stock skynet nodes (read by run.sh too).
    let skynet_threads: u32 = match std::env::var("SKYNET_THREADS") {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("SKYNET_THREADS={v:?} is not a thread count"))?,
        Err(_) => 2,
    };
    let started_at = crate::run_info::utc("+%Y-%m-%dT%H:%M:%SZ");
    let machine = machine();
    crate::step(
        "build (release)",
        crate::cargo().args([
            "build",
            "--release",
            "-p",
            "bee-node",
            "--bin",
            "bee",
            "-p",
            "bee-demo",
            "--bin",
            "bee-demo",
            "-p",
            "bee-bench",
            "--bin",
            "bee-bench",
        ]),
    )?;
    let release = crate::run_info::target_dir(root).join("release");
    let (bee, bench) = (release.join("bee"), release.join("bee-bench"));
    let dir = root.join("target").join("bench");
    std::fs::create_dir_all(&dir)?;
    let q: &[&str] = if quick { &["--quick"] } else { &[] };

    let (local, local_ok) = bee_bench(
        &bench,
        &["local", "--seconds", if quick { "0.5" } else { "3" }],
    )?;
    let (api, api_ok) = bee_bench(
        &bench,
        &["api", "--seconds", if quick { "0.5" } else { "5" }],
    )?;
    // C++ rpc_call vs a Rust caller: bench.so from cservices/, lpersistence on bee-demo.
    let cpp_out = crate::cpp::build(root, false)?;
    let (demo, module) = (
        release.join("bee-demo").to_string_lossy().to_string(),
        cpp_out.join("bench.so").to_string_lossy().to_string(),
    );
    let cpp_args: Vec<&str> = [&["cpp-rpc", "--demo", &demo, "--module", &module][..], q].concat();
    let (cpp_rpc, cpp_ok) = bee_bench(&bench, &cpp_args)?;
    let floor_args: Vec<&str> = [&["tokio-echo"][..], q].concat();
    let (floor, _) = bee_bench(&bench, &floor_args)?;
    // Busy polling at scale: the node's CPU with 1, 8, 32 connections.
    let (busypoll, busypoll_ok) = bee_bench(
        &bench,
        &[
            "busy-poll",
            "--bee",
            &release.join("bee").to_string_lossy(),
            "--seconds",
            if quick { "0.5" } else { "3" },
        ],
    )?;
    // Scale: connections from several processes, fan-out, idle peers, soak.
    let bee_bin = release.join("bee").to_string_lossy().to_string();
    let scale_args: Vec<&str> = [&["scale", "--bee", bee_bin.as_str()][..], q].concat();
    let (scale, scale_ok) = bee_bench(&bench, &scale_args)?;
    // Hot update under load: a bee node handed over while a client calls it.
    let bee_path = release.join("bee").to_string_lossy().to_string();
    let (handover, handover_ok) = bee_bench(
        &bench,
        &[
            "handover",
            "--bee",
            &bee_path,
            "--handovers",
            if quick { "1" } else { "3" },
            "--steady",
            if quick { "0.5" } else { "2" },
        ],
    )?;
    // A Lua step run by bee-bench on both sides with the same skynet config (under
    // `bee run` and stock skynet; it needs the skynet tree for its Lua either way).
    let lua_step = |step: &str| -> Result<(String, bool)> {
        let Some(tree) = &lab else {
            return Ok(("null".to_string(), true));
        };
        let tree = tree.to_string_lossy().to_string();
        let lua = runner
            .with_file_name("service")
            .to_string_lossy()
            .to_string();
        let work = dir.to_string_lossy().to_string();
        let args: Vec<&str> = [
            &[
                step,
                "--bee",
                &bee_path,
                "--tree",
                &tree,
                "--skynet",
                "--lua-dir",
                &lua,
                "--work-dir",
                &work,
            ][..],
            q,
        ]
        .concat();
        bee_bench(&bench, &args)
    };
    // Gate echo and idle connections: one Lua gateserver echo.
    let (gate, gate_ok) = lua_step("gate")?;
    // skynet.db.mysql from a Lua service, against the local MariaDB (each side its own
    // database, dropped after).
    if lab.is_some() {
        crate::setup::ensure_all()?;
    }
    let (lua_mysql, lua_mysql_ok) = lua_step("lua-mysql")?;

    // skynet's Lua layer: bee vs stock skynet with the same scripts (needs a skynet tree
    // for its Lua files, so only with the lab).
    let (lua, lua_ok) = match &lab {
        Some(tree) => bee_bench(
            &bench,
            &[
                &[
                    "lua",
                    "--bee",
                    &bee_path,
                    "--skynet",
                    &tree.to_string_lossy(),
                    "--scripts",
                    &root.join("bench").join("lua").to_string_lossy(),
                    "--dir",
                    &dir.join("lua").to_string_lossy(),
                    "--threads",
                    &skynet_threads.to_string(),
                ][..],
                q,
            ]
            .concat(),
        )?,
        None => ("null".to_string(), true),
    };

    // The cluster: the bee node, and the skynet node when the lab is used.
    let cluster = dir.join("cluster.lua");
    let mut text = format!(
        "-- written by cargo xtask bench\nbeebench = \"127.0.0.1:{}\"\nbeesql = \"127.0.0.1:{}\"\n",
        free_port()?,
        free_port()?
    );
    if lab.is_some() {
        text.push_str(&format!("skybench = \"127.0.0.1:{}\"\n", free_port()?));
    }
    std::fs::write(&cluster, text)?;
    let node_cfg = dir.join("beebench.toml");
    let poll = busy_poll_us.map_or(String::new(), |us| format!("busy_poll_us = {us}\n"));
    std::fs::write(
        &node_cfg,
        format!(
            "name = \"beebench\"\ncluster = \"cluster.lua\"\nthreads = {node_threads}\n{poll}\n\
             [[service]]\nkind = \"echo_values\"\nname = \"echo\"\n\n\
             [[service]]\nkind = \"echo\"\nname = \"echo_raw\"\n\n\
             [[service]]\nkind = \"sink\"\nname = \"sink\"\n"
        ),
    )?;
    eprintln!(
        "\n== starting the bee node (log: {})",
        dir.join("beebench.log").display()
    );
    let mut cmd = Command::new(&bee);
    cmd.arg("run").arg(&node_cfg).env("BEE_LOG", "warn");
    let bee_node = start_node("beebench", cmd, &dir.join("beebench.log"), "listening on")?;
    // Let the node settle before the idle reading.
    std::thread::sleep(Duration::from_millis(500));
    let pid = bee_node.pid().to_string();
    let cluster_str = cluster.to_string_lossy().to_string();
    let mut cluster_args: Vec<&str> = [
        &[
            "cluster",
            "--cluster",
            &cluster_str,
            "--node",
            "beebench",
            "--node-pid",
            &pid,
            "--raw-echo",
            "echo_raw",
        ][..],
        q,
    ]
    .concat();
    let poll_arg = busy_poll_us.map(|us| us.to_string());
    if let Some(us) = &poll_arg {
        cluster_args.extend(["--busy-poll-us", us.as_str()]);
    }
    let (bee_cluster, cluster_ok) = bee_bench(&bench, &cluster_args)?;

    // mysqlpool: a second bee node with a pool of 8, point selects through the cluster
    // next to mysql_async direct (bee-bench seeds bee_bench.user first).
    crate::setup::ensure_all()?;
    let sql_cfg = dir.join("beesql.toml");
    std::fs::write(
        &sql_cfg,
        "name = \"beesql\"\ncluster = \"cluster.lua\"\n\n\
         [[service]]\nkind = \"mysqlpool\"\nname = \"mysqlpool\"\n\n\
         [mysql]\nhost = \"127.0.0.1\"\nport = 3306\nuser = \"root\"\npassword = \"\"\npool_size = 8\n",
    )?;
    let mut cmd = Command::new(&bee);
    cmd.arg("run").arg(&sql_cfg).env("BEE_LOG", "warn");
    let sql_node = start_node("beesql", cmd, &dir.join("beesql.log"), "listening on")?;
    let (mysql, mysql_ok) = bee_bench(
        &bench,
        &[
            "mysql",
            "--cluster",
            &cluster_str,
            "--node",
            "beesql",
            "--seconds",
            if quick { "1" } else { "5" },
        ],
    )?;
    drop(sql_node);

    let (mut skynet, mut skynet_rss, mut cross, mut bee_to_sky) = (
        "null".to_string(),
        "null".to_string(),
        "null".to_string(),
        "null".to_string(),
    );
    // Every skynet-side run that fails (a wrong reply, a lost push, a node that did not
    // start) fails the benchmark run; its speed never does.
    let mut skynet_failures: Vec<String> = Vec::new();
    if lab.is_some() {
        // The same skynet client against the bee node: the serving side alone compared.
        match skynet_client(&runner, "beebench", &cluster, quick, bee_node.pid()) {
            Ok(run) => cross = run.bench,
            Err(e) => skynet_failures.push(format!("skynet client -> bee node: {e:#}")),
        }
        drop(bee_node);
        eprintln!(
            "\n== starting the skynet node (log: {})",
            dir.join("skybench.log").display()
        );
        let mut cmd = Command::new("bash");
        cmd.arg(&runner).args(["node", "skybench"]).arg(&cluster);
        let pair =
            start_node("skybench", cmd, &dir.join("skybench.log"), "READY").and_then(|sky| {
                std::thread::sleep(Duration::from_millis(500));
                skynet_client(&runner, "skybench", &cluster, quick, sky.pid()).map(|r| (r, sky))
            });
        match pair {
            Ok((run, sky)) => {
                skynet = run.bench;
                skynet_rss = run.rss.unwrap_or_else(|| "null".into());
                // bee-bench against the skynet node: the server's capacity, with the same
                // fast client as against the bee node.
                let sky_pid = sky.pid().to_string();
                let args: Vec<&str> = [
                    &[
                        "cluster",
                        "--cluster",
                        &cluster_str,
                        "--node",
                        "skybench",
                        "--node-pid",
                        &sky_pid,
                    ][..],
                    q,
                ]
                .concat();
                match bee_bench(&bench, &args) {
                    Ok((run, ok)) => {
                        bee_to_sky = run;
                        if !ok {
                            skynet_failures
                                .push("bee-bench -> skynet node: wrong or failed replies".into());
                        }
                    }
                    Err(e) => skynet_failures.push(format!("bee-bench -> skynet node: {e:#}")),
                }
                drop(sky);
            }
            Err(e) => skynet_failures.push(format!("stock skynet pair: {e:#}")),
        }
    } else {
        drop(bee_node);
    }

    let results = format!(
        "{{\n\"date\":{},\n\"machine\":{machine},\n\"quick\":{quick},\n\"node_threads\":{node_threads},\n\"busy_poll_us\":{},\n\"skynet_threads\":{},\n\"bee_local\":{local},\n\
         \"bee_cluster\":{bee_cluster},\n\"tokio_floor\":{floor},\n\"skynet\":{skynet},\n\
         \"skynet_rss\":{skynet_rss},\n\"skynet_client_to_bee\":{cross},\n\"bee_client_to_skynet\":{bee_to_sky},\n\"mysql\":{mysql},\n\"api\":{api},\n\"cpp_rpc\":{cpp_rpc},\n\"handover\":{handover},\n\"busy_poll\":{busypoll},\n\"scale\":{scale},\n\"gate\":{gate},\n\"lua_mysql\":{lua_mysql},\n\"lua\":{lua}\n}}\n",
        json_string(&started_at),
        busy_poll_us.map_or("null".to_string(), |us| us.to_string()),
        skynet_threads
    );
    let json_path = dir.join("results.json");
    std::fs::write(&json_path, &results)?;
    let md_path = dir.join("results.md");
    eprintln!(
        "\n== results ({} and {})\n",
        json_path.display(),
        md_path.display()
    );
    crate::step(
        "report",
        Command::new(&bench)
            .arg("report")
            .arg(&json_path)
            .arg("--md")
            .arg(&md_path),
    )?;
    let chart = if quick {
        dir.join("chart.svg")
    } else {
        root.join("bench").join("chart.svg")
    };
    let table = std::fs::read_to_string(&md_path)
        .with_context(|| format!("cannot read {}", md_path.display()))?;
    let caption = format!(
        "{}, {} ({})",
        started_at,
        crate::git_head(root),
        if quick { "--quick" } else { "full run" }
    );
    crate::chart::draw(&crate::chart::parse(&table)?, &caption, &chart)?;
    eprintln!("chart: {}", chart.display());
    if !local_ok
        || !cluster_ok
        || !mysql_ok
        || !api_ok
        || !cpp_ok
        || !handover_ok
        || !busypoll_ok
        || !scale_ok
        || !gate_ok
        || !lua_mysql_ok
        || !lua_ok
    {
        bail!("bee gave wrong or failed replies, or lost pushes: see the table above");
    }
    if !skynet_failures.is_empty() {
        bail!(
            "the runs with stock skynet failed:\n  {}",
            skynet_failures.join("\n  ")
        );
    }
    Ok(())
}
