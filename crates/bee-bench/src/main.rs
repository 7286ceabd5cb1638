//! `bee-bench` — the benchmark client process behind `cargo xtask bench`.
//!
//! - `bee-bench cluster --cluster FILE --node NAME [--node-pid PID] [--quick]`: B2..B5
//!   (and B6 readings of PID) against NAME's `@echo`/`@sink`; prints one JSON line.
//! - `bee-bench local [--seconds S]`: B1, in-process; prints one JSON line.
//! - `bee-bench tokio-echo [--quick]`: the bare tokio TCP echo floor, server in a child
//!   process; prints one JSON line.
//! - `bee-bench mysql --cluster FILE --node NAME [--url URL] [--seconds S]`: point
//!   selects/s through the cluster to NAME's `mysqlpool` next to mysql_async direct.
//! - `bee-bench api [--seconds S] [--rounds N]`: handler API vs raw `Service`, local and
//!   cluster (in-process nodes over loopback), interleaved; prints one JSON line.
//! - `bee-bench cpp-rpc --demo BEE_DEMO --module bench.so [--quick] [--calls N] [--rounds R]`:
//!   a C++ module's rpc_call vs a Rust `NativeEndpoint` caller, same path to a Lua-style
//!   service on a `bee-demo` node it starts; prints one JSON line.
//! - `bee-bench gate --bee BEE --tree SKYNET_TREE --lua-dir DIR [--skynet] [--quick]`:
//!   a Lua echo on skynet's gateserver under `bee run` and stock skynet (same config):
//!   msgs/s and p99 with 100 pipelining connections, RSS per idle connection.
//! - `bee-bench lua-mysql --bee BEE --tree SKYNET_TREE --lua-dir DIR [--skynet] [--quick]`:
//!   point selects/s through `skynet.db.mysql` from a Lua service, bee vs stock skynet.
//! - `bee-bench report RESULTS.json [--md OUT.md]`: the markdown table of a results file.
//!
//! Progress goes to stderr, results to stdout.

use std::path::PathBuf;

use anyhow::{Context, Result};
use bee_bench::{api, cluster, cpp_rpc, floor, local, mysql, report};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bee-bench",
    about = "bee benchmark client: B1..B6 and the tokio floor"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// B2..B5 (and B6 with --node-pid) against a running node's @echo and @sink.
    Cluster {
        /// Cluster config (skynet clustername form or TOML) naming the node.
        #[arg(long)]
        cluster: PathBuf,
        /// The node serving echo and sink.
        #[arg(long)]
        node: String,
        /// Registered name of the echo service.
        #[arg(long, default_value = "echo")]
        echo: String,
        /// Registered name of the sink service.
        #[arg(long, default_value = "sink")]
        sink: String,
        /// Also run B3 against this raw-bytes echo (no unpack): the "transport only" row.
        #[arg(long)]
        raw_echo: Option<String>,
        /// Process id of the node, to read its VmRSS/VmHWM (B6).
        #[arg(long)]
        node_pid: Option<u32>,
        /// A tenth of each measurement.
        #[arg(long)]
        quick: bool,
        /// Busy-poll window of this client's connection, µs (0: off; default: bee's).
        #[arg(long)]
        busy_poll_us: Option<u64>,
        /// Worker threads of this client's runtime. Default 1, like the serving bee node
        /// of B2..B6: on a 2-core machine client and node each get a core, and the
        /// client's tasks do not hand wake-ups across threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// B1: local calls in one process, 1 and 64 callers.
    Local {
        /// Seconds per caller count.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// Handler API vs raw Service: local (1 and 64 callers) and cluster (64 in flight).
    Api {
        /// Seconds per variant per pair (split over the rounds).
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Rounds per pair (each runs both variants once, alternating which goes first).
        #[arg(long, default_value_t = 10)]
        rounds: usize,
    },
    /// C++ rpc_call (bench.so) vs a Rust NativeEndpoint caller, same path, interleaved.
    CppRpc {
        /// The `bee-demo` binary (runs the `lpersistence_3` node it calls).
        #[arg(long)]
        demo: PathBuf,
        /// `bench.so`, built from `cservices/` (`make -C cservices modules`).
        #[arg(long)]
        module: PathBuf,
        /// A tenth of the calls.
        #[arg(long)]
        quick: bool,
        /// Calls per side (default 20000, 2000 with --quick).
        #[arg(long)]
        calls: Option<usize>,
        /// Rounds (each runs both sides once, alternating which goes first).
        #[arg(long, default_value_t = 10)]
        rounds: usize,
    },
    /// The floor: bare tokio TCP echo, same framing and sizes, server in a child process.
    TokioEcho {
        /// A tenth of each measurement.
        #[arg(long)]
        quick: bool,
    },
    /// The floor's server (started by `tokio-echo`); serves until stdin closes.
    #[command(hide = true)]
    TokioEchoServer,
    /// Point selects/s through the cluster to `mysqlpool` vs mysql_async direct.
    Mysql {
        /// Cluster config naming the node that runs `mysqlpool`.
        #[arg(long)]
        cluster: PathBuf,
        /// That node.
        #[arg(long)]
        node: String,
        /// The MariaDB server, for the direct side and the seed.
        #[arg(long, default_value = "mysql://root@127.0.0.1:3306")]
        url: String,
        /// Concurrent callers on each side.
        #[arg(long, default_value_t = 64)]
        inflight: usize,
        /// Connections of the direct pool (match the node's `pool_size`).
        #[arg(long, default_value_t = 8)]
        pool: usize,
        /// Seconds each side runs.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Hot update under load: call latency and the longest gap while a `bee` node is
    /// handed over to a new process (`bee run --takeover`), vs steady state.
    Handover {
        /// The `bee` binary.
        #[arg(long)]
        bee: PathBuf,
        /// Handovers, a second apart.
        #[arg(long, default_value_t = 3)]
        handovers: usize,
        /// Seconds of steady calls before the first handover.
        #[arg(long, default_value_t = 2.0)]
        steady: f64,
    },
    /// Busy polling at scale: the serving node's CPU with 1, 8 and 32 active connections
    /// at a fixed rate each, polling on and off.
    BusyPoll {
        /// The `bee` binary.
        #[arg(long)]
        bee: PathBuf,
        /// Calls per second on each connection.
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// Seconds per row.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// The node's `busy_poll_max` (connections polling at once).
        #[arg(long, default_value_t = 1)]
        poll_max: usize,
        /// Connection counts.
        #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
        conns: Vec<usize>,
    },
    /// Scale: 1/8/32 client connections from several processes, fan-out to 16 nodes,
    /// memory per idle peer connection, a soak with the node's RSS every second.
    Scale {
        /// The `bee` binary.
        #[arg(long)]
        bee: PathBuf,
        /// Shorter rows, 100 idle peers, a 6 s soak.
        #[arg(long)]
        quick: bool,
    },
    /// skynet's Lua layer on bee vs stock skynet: same-node calls, cluster calls,
    /// memory per idle Lua service (the scripts of `bench/lua`).
    Lua {
        /// The `bee` binary.
        #[arg(long)]
        bee: PathBuf,
        /// A built stock skynet tree.
        #[arg(long)]
        skynet: PathBuf,
        /// The benchmark's Lua scripts.
        #[arg(long)]
        scripts: PathBuf,
        /// Where configs and logs go.
        #[arg(long)]
        dir: PathBuf,
        /// Worker threads of every node.
        #[arg(long, default_value_t = 2)]
        threads: u32,
        /// bee only.
        #[arg(long)]
        no_skynet: bool,
        /// Fewer calls.
        #[arg(long)]
        quick: bool,
    },
    /// One client process of `scale` (prints its report as JSON).
    #[command(hide = true)]
    ScaleClient {
        /// The node's address.
        #[arg(long)]
        addr: String,
        /// Connections.
        #[arg(long)]
        conns: usize,
        /// Seconds.
        #[arg(long)]
        seconds: f64,
    },
    /// Gate echo and idle connections: the same Lua gateserver echo on bee and on stock
    /// skynet.
    Gate {
        /// The `bee` binary.
        #[arg(long)]
        bee: PathBuf,
        /// The stock skynet tree whose Lua and C modules both sides load.
        #[arg(long)]
        tree: PathBuf,
        /// Also run the tree's own `skynet` executable as the second server.
        #[arg(long)]
        skynet: bool,
        /// The directory holding `gate_echo.lua` and `gate_echo_main.lua`.
        #[arg(long)]
        lua_dir: PathBuf,
        /// Where the configs and server logs go.
        #[arg(long, default_value = "target/bench")]
        work_dir: PathBuf,
        /// Echo connections.
        #[arg(long, default_value_t = 100)]
        conns: usize,
        /// Frames in flight per connection.
        #[arg(long, default_value_t = 16)]
        depth: usize,
        /// Payload bytes per frame.
        #[arg(long, default_value_t = 16)]
        payload: usize,
        /// Idle connections for the memory reading.
        #[arg(long, default_value_t = 10_000)]
        idle: usize,
        /// Fresh servers per side the idle connections are measured on; the median
        /// counts (default 5, 3 with --quick).
        #[arg(long)]
        idle_repeats: Option<usize>,
        /// `thread` of both servers' configs.
        #[arg(long, default_value_t = 2)]
        threads: u32,
        /// 2 rounds of 2 s per server instead of 3 of 5 s.
        #[arg(long)]
        quick: bool,
    },
    /// skynet.db.mysql point selects from a Lua service, bee vs stock skynet (same config).
    LuaMysql {
        /// The `bee` binary.
        #[arg(long)]
        bee: PathBuf,
        /// The stock skynet tree whose Lua and C modules both sides load.
        #[arg(long)]
        tree: PathBuf,
        /// Also run the tree's own `skynet` executable.
        #[arg(long)]
        skynet: bool,
        /// The directory holding `mysql_bench_main.lua`.
        #[arg(long)]
        lua_dir: PathBuf,
        /// Where the configs and logs go.
        #[arg(long, default_value = "target/bench")]
        work_dir: PathBuf,
        /// MySQL connections.
        #[arg(long, default_value_t = 8)]
        conns: u32,
        /// Coroutines querying on each connection.
        #[arg(long, default_value_t = 8)]
        per_conn: u32,
        /// `thread` of both configs.
        #[arg(long, default_value_t = 2)]
        threads: u32,
        /// 1 round of 2 s per side instead of 3 of 5 s.
        #[arg(long)]
        quick: bool,
    },
    /// Print the markdown table of a results file written by `cargo xtask bench`.
    Report {
        /// The results JSON.
        results: PathBuf,
        /// Also write the table here.
        #[arg(long)]
        md: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Cluster { threads, .. } = &args.command {
        builder.worker_threads((*threads).max(1));
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match args.command {
            Command::Cluster {
                cluster: file,
                node,
                echo,
                sink,
                raw_echo,
                node_pid,
                quick,
                busy_poll_us,
                threads: _,
            } => {
                let mut p = if quick {
                    cluster::ClusterParams::quick(file, node)
                } else {
                    cluster::ClusterParams::full(file, node)
                };
                p.echo = echo;
                p.sink = sink;
                p.raw_echo = raw_echo;
                p.node_pid = node_pid;
                if let Some(us) = busy_poll_us {
                    p.busy_poll = std::time::Duration::from_micros(us);
                }
                // On a runtime worker, as a service's calls run in a node: `block_on`'s
                // own future runs on the main thread, and every reply to B2's one call
                // in flight would have to wake it from another thread.
                let r = tokio::spawn(async move { cluster::run(&p).await })
                    .await
                    .context("the cluster benchmark task failed")??;
                println!("{}", serde_json::to_string(&r)?);
                let wrong = r.b2_errors + r.b3_errors + r.b5_errors;
                if wrong > 0 || r.b4_lost > 0 {
                    anyhow::bail!("{wrong} wrong or failed replies, {} pushes lost", r.b4_lost);
                }
            }
            Command::Local { seconds } => {
                let r = local::run(seconds).await?;
                eprintln!(
                    "B1 local call: {:.0} calls/s (1 caller), {:.0} calls/s (64 callers), {} errors",
                    r.b1_1_calls_per_s, r.b1_64_calls_per_s, r.b1_errors
                );
                println!("{}", serde_json::to_string(&r)?);
                if r.b1_errors > 0 {
                    anyhow::bail!("{} wrong or failed local replies", r.b1_errors);
                }
            }
            Command::Api { seconds, rounds } => {
                let r = api::run(&api::ApiParams { seconds, rounds }).await?;
                println!("{}", serde_json::to_string(&r)?);
                if r.errors > 0 {
                    anyhow::bail!("handler API vs raw: {} wrong or failed replies", r.errors);
                }
            }
            Command::CppRpc {
                demo,
                module,
                quick,
                calls,
                rounds,
            } => {
                let mut p = if quick {
                    cpp_rpc::CppRpcParams::quick(demo, module)
                } else {
                    cpp_rpc::CppRpcParams::full(demo, module)
                };
                if let Some(n) = calls {
                    p.calls = n;
                }
                p.rounds = rounds;
                let r = cpp_rpc::run(&p).await?;
                println!("{}", serde_json::to_string(&r)?);
                if r.errors > 0 {
                    anyhow::bail!(
                        "C++ vs Rust rpc_call: {} failed or wrong replies (first: {})",
                        r.errors,
                        r.first_error.as_deref().unwrap_or("?")
                    );
                }
            }
            Command::Lua {
                bee,
                skynet,
                scripts,
                dir,
                threads,
                no_skynet,
                quick,
            } => {
                let p = bee_bench::lua::LuaParams {
                    bee,
                    skynet,
                    with_skynet: !no_skynet,
                    scripts,
                    dir,
                    threads,
                    calls: if quick { 20_000 } else { 200_000 },
                    services: 1_000,
                };
                let r = tokio::task::spawn_blocking(move || bee_bench::lua::run(&p))
                    .await
                    .context("the Lua benchmark task failed")??;
                println!("{}", serde_json::to_string(&r)?);
                if !r.errors.is_empty() {
                    anyhow::bail!("lua: {}", r.errors.join("; "));
                }
            }
            Command::Scale { bee, quick } => {
                let p = bee_bench::scale::ScaleParams {
                    bee,
                    bench: std::env::current_exe()?,
                    seconds: if quick { 0.5 } else { 3.0 },
                    fanout_pushes: if quick { 32_000 } else { 320_000 },
                    idle_peers: if quick { 100 } else { 1_000 },
                    soak: if quick { 6 } else { 60 },
                };
                let r = bee_bench::scale::run(&p).await?;
                println!("{}", serde_json::to_string(&r)?);
                let errors: u64 = r.conns.iter().map(|c| c.errors).sum::<u64>() + r.soak_errors;
                if errors > 0 || r.fanout_lost > 0 {
                    anyhow::bail!("scale: {errors} failed calls, {} pushes lost", r.fanout_lost);
                }
            }
            Command::ScaleClient {
                addr,
                conns,
                seconds,
            } => {
                let r = bee_bench::scale::client(&addr, conns, seconds).await?;
                println!("{}", serde_json::to_string(&r)?);
            }
            Command::BusyPoll {
                bee,
                rate,
                seconds,
                poll_max,
                conns,
            } => {
                let p = bee_bench::busypoll::BusyPollParams {
                    bee,
                    conns,
                    rate,
                    seconds,
                    poll_us: 100,
                    poll_max,
                };
                let r = bee_bench::busypoll::run(&p).await?;
                println!("{}", serde_json::to_string(&r)?);
                let errors: u64 = r.rows.iter().map(|r| r.errors).sum();
                if errors > 0 {
                    anyhow::bail!("busy poll: {errors} calls failed");
                }
            }
            Command::Handover {
                bee,
                handovers,
                steady,
            } => {
                let p = bee_bench::handover::HandoverParams {
                    bee,
                    handovers,
                    steady: std::time::Duration::from_secs_f64(steady),
                };
                let r = bee_bench::handover::run(&p).await?;
                println!("{}", serde_json::to_string(&r)?);
                if r.errors > 0 {
                    anyhow::bail!(
                        "hot update: {} calls failed (first: {})",
                        r.errors,
                        r.first_error.as_deref().unwrap_or("?")
                    );
                }
            }
            Command::TokioEcho { quick } => {
                let p = if quick {
                    floor::FloorParams::quick()
                } else {
                    floor::FloorParams::full()
                };
                let exe = std::env::current_exe().context("cannot find this executable")?;
                let r = floor::run_two_processes(&exe, &p).await?;
                eprintln!(
                    "tokio floor: p50 {:.1} us, p99 {:.1} us, {:.0} calls/s, {:.0} pushes/s ({} lost), {:.1} MiB/s",
                    r.b2_p50_us, r.b2_p99_us, r.b3_calls_per_s, r.b4_pushes_per_s, r.b4_lost, r.b5_mib_per_s
                );
                println!("{}", serde_json::to_string(&r)?);
                let wrong = r.b2_errors + r.b3_errors + r.b5_errors;
                if wrong > 0 || r.b4_lost > 0 {
                    anyhow::bail!("tokio floor: {wrong} wrong replies, {} pushes lost", r.b4_lost);
                }
            }
            Command::TokioEchoServer => floor::server_main().await?,
            Command::Mysql {
                cluster: file,
                node,
                url,
                inflight,
                pool,
                seconds,
            } => {
                let p = mysql::MysqlParams {
                    url,
                    cluster_file: file,
                    node,
                    inflight,
                    pool,
                    seconds,
                };
                let r = mysql::run(&p).await?;
                eprintln!(
                    "mysql point selects: {:.0}/s through the cluster, {:.0}/s direct ({} errors)",
                    r.cluster_qps, r.direct_qps, r.errors
                );
                println!("{}", serde_json::to_string(&r)?);
                if r.errors > 0 {
                    anyhow::bail!("{} failed or wrong point selects", r.errors);
                }
            }
            Command::Gate {
                bee,
                tree,
                skynet,
                lua_dir,
                work_dir,
                conns,
                depth,
                payload,
                idle,
                idle_repeats,
                threads,
                quick,
            } => {
                let p = bee_bench::gate::GateParams {
                    bee,
                    skynet: skynet.then(|| tree.clone()),
                    tree,
                    lua_dir,
                    work_dir,
                    conns,
                    depth,
                    payload,
                    seconds: if quick { 2.0 } else { 5.0 },
                    rounds: if quick { 2 } else { 3 },
                    idle,
                    idle_repeats: idle_repeats.unwrap_or(if quick { 3 } else { 5 }),
                    threads,
                };
                let r = bee_bench::gate::run(&p).await?;
                println!("{}", serde_json::to_string(&r)?);
                let errors = r.bee.errors + r.skynet.as_ref().map_or(0, |s| s.errors);
                if errors > 0 {
                    anyhow::bail!(
                        "gate echo: {errors} wrong or failed echoes (bee: {}; skynet: {})",
                        r.bee.first_error.as_deref().unwrap_or("none"),
                        r.skynet.as_ref().and_then(|s| s.first_error.as_deref()).unwrap_or("none")
                    );
                }
            }
            Command::LuaMysql {
                bee,
                tree,
                skynet,
                lua_dir,
                work_dir,
                conns,
                per_conn,
                threads,
                quick,
            } => {
                let p = bee_bench::luasql::LuaSqlParams {
                    bee,
                    tree,
                    skynet,
                    lua_dir,
                    work_dir,
                    rows: 10_000,
                    conns,
                    per_conn,
                    seconds: if quick { 2.0 } else { 5.0 },
                    rounds: if quick { 1 } else { 3 },
                    threads,
                };
                let r = tokio::task::spawn_blocking(move || bee_bench::luasql::run(&p))
                    .await
                    .context("the lua-mysql benchmark task failed")??;
                println!("{}", serde_json::to_string(&r)?);
                let errors = r.bee.errors + r.skynet.as_ref().map_or(0, |s| s.errors);
                if errors > 0 {
                    anyhow::bail!(
                        "lua-mysql: {errors} failed or wrong point selects (bee: {}; skynet: {})",
                        r.bee.first_error.as_deref().unwrap_or("none"),
                        r.skynet.as_ref().and_then(|s| s.first_error.as_deref()).unwrap_or("none")
                    );
                }
            }
            Command::Report { results, md } => {
                let text = std::fs::read_to_string(&results)
                    .with_context(|| format!("cannot read {}", results.display()))?;
                let value: serde_json::Value = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", results.display()))?;
                let table = report::render(&value)?;
                print!("{table}");
                if let Some(md) = md {
                    std::fs::write(&md, &table).with_context(|| format!("cannot write {}", md.display()))?;
                }
            }
        }
        Ok(())
    })
}
