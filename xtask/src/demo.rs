//! `cargo xtask demo`: the demo cluster, start to finish.
//!
//! 1. Make sure MariaDB and the C/C++ packages are there (see `setup`), build the
//!    `bee-demo` binary and the C++ modules (`cservices/`: shop.so, mail.so).
//! 2. Write a cluster config (`target/demo/cluster.lua`, free loopback ports) and one node
//!    config per node: `lobby`, `lpersistence_3`, `activity_master`, `shop_master`.
//! 3. Start the four nodes as separate `bee run` processes (logs in `target/demo/*.log`).
//! 4. Ask the `lobby` service, over the cluster, to run each scenario; print what it
//!    reports: what went where, what came back, how long it took.
//! 5. Hot update: while lobby keeps calling and pushing to `lpersistence_3`,
//!    `bee cluster upgrade` hands that node over to a new process (`bee run --takeover`);
//!    lobby's report shows no failed call and every push counted by the login counter
//!    the new process took over.
//! 6. Last, move `activity_master` to a new port while lobby runs: start a new
//!    activity_master process there (reading version 2 of the cluster config), push
//!    version 2 to every node with `bee-demo config push` (the same command and code as
//!    `bee config push`; its table shows every node's ack), stop the old process, and
//!    have lobby — never restarted — call activity again; lobby's own `Cluster::watch`
//!    events show what it learnt.
//!    Before those two, the Lua node `lua_lobby` (skynet's Lua layer in a bee node,
//!    `demo_lua`) runs the team's lobby pattern against `lpersistence_3`, and its game
//!    front door (`lua/frontdoor.lua`, skynet's gateserver) serves 200 simulated players
//!    (`bee-demo players`) whose every reply is checked.
//! 7. Stop every node (also when a scenario fails or the demo is interrupted by an
//!    error), and exit 0 only if every scenario passed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bee_cluster::{Cluster, ClusterSettings};
use bee_codec::seri::{self, Value};
use bee_registry::{ClusterConfig, Registry};
use bee_runtime::{Node, RuntimeConfig};

use crate::process::{self, free_port, NodeProcess};

const NODES: [&str; 4] = ["lobby", "lpersistence_3", "activity_master", "shop_master"];

/// The scenarios, in order: (title, lobby command, arguments).
fn scenarios() -> Vec<(&'static str, &'static str, Vec<Value>)> {
    let sql = |s: &str| vec![Value::from(s)];
    vec![
        (
            "lobby → lpersistence_3: query by name, \"text\" protobuf push, \"lua\" ping, \"text\" call",
            "persistence",
            vec![],
        ),
        (
            "lobby → lpersistence_3/mysqlpool: seed pppoker.user (real MariaDB)",
            "sql",
            sql("CREATE DATABASE IF NOT EXISTS pppoker"),
        ),
        (
            "",
            "sql",
            sql("CREATE TABLE IF NOT EXISTS pppoker.user (uid BIGINT PRIMARY KEY, nickname VARCHAR(64) NOT NULL, level INT NOT NULL, coins BIGINT NOT NULL, vip DECIMAL(4,1), last_login DATETIME) DEFAULT CHARSET=utf8mb4"),
        ),
        (
            "",
            "sql",
            sql("REPLACE INTO pppoker.user VALUES (10076447, 'player10076447', 12, 88000, 2.5, '2026-11-26 08:00:00')"),
        ),
        (
            "lobby → lpersistence_3/mysqlpool: cluster.call(\"lpersistence_3\", mysqlpool, \"lua\", \"execute\", sql)",
            "sql",
            sql("select * from pppoker.user where uid = 10076447"),
        ),
        (
            "lobby → activity_master: 20 uids, each sent twice, sharded over 8 workers by the team's rule (worker 1 + uid % 8; uid 0 to every worker)",
            "activity",
            vec![Value::from(20i64), Value::from("modulo")],
        ),
                (
            "Lua → C++: rpc game.ShopBuy → shop_master → C++ shop.so, which rpc-calls C++ mail.so on another node",
            "cpp_shop",
            vec![],
        ),
        (
            "C++ → Lua send and C++ → C++ send: one-way ShopBuy, receipt pushed back to lobby, mail to mail.so",
            "cpp_send",
            vec![],
        ),
        (
            "C++ → Lua rpc_call (mail.so looks the player up at lpersistence), and an rpc to a dead node timing out in C++",
            "cpp_rpc",
            vec![],
        ),
        (
            "native lobby_native → CServiceProxy → lpersistence_3: send",
            "native_send",
            vec![],
        ),
        (
            "native lobby_native → lpersistence_3: rpc_call (sub_type 18 frame, reply by session)",
            "native_rpc",
            vec![],
        ),
        (
            "errors a caller can read: unknown node, unknown name, unknown command, unknown message",
            "errors",
            vec![],
        ),
    ]
}

/// The C++ modules' entries: a module behind a redirecting master (`native_master`), its
/// frames naming the master as their source, as the team's C++ does; its parameter
/// starts with CServiceProxy's handle, as the team's Lua launches it.
fn cpp_service(module: &Path, name: &str, args: &str) -> String {
    format!(
        "[[service]]\nkind = \"cservice\"\nmodule = \"{}\"\nname = \"{name}\"\nargs = \"{{handle:.CServiceProxy}} service={name}_master {args}\"\n\n\
         [[service]]\nkind = \"native_master\"\nname = \"{name}_master\"\ntarget = \"{name}\"\n\n",
        module.display()
    )
}

fn node_config(name: &str, cpp: &Path) -> String {
    match name {
        "lpersistence_3" => format!(
            "[[service]]\nkind = \"cservice_proxy\"\n\n[[service]]\nkind = \"lpersistence\"\nname = \"lpersistence\"\n\n\
             [[service]]\nkind = \"mysqlpool\"\nname = \"mysqlpool\"\n\n{}{}\
             [mysql]\nhost = \"127.0.0.1\"\nport = 3306\nuser = \"root\"\npassword = \"\"\npool_size = 8\n",
            cpp_service(&cpp.join("mail.so"), "mail", "lookup=lpersistence_3/lpersistence"),
            cpp_service(
                &cpp.join("mail.so"),
                "mail_ghost",
                "lookup=ghost/lpersistence lookup_timeout_ms=300"
            ),
        ),
        "shop_master" => format!(
            "[[service]]\nkind = \"cservice_proxy\"\n\n{}",
            cpp_service(&cpp.join("shop.so"), "shop", "notify=lpersistence_3/mail_master")
        ),
        other => fixed_node_config(other).to_string(),
    }
}

fn fixed_node_config(name: &str) -> &'static str {
    match name {
        // lobby rides through its peers' restarts and hot updates.
        "lobby" => {
            "[liveness]\nride_through_ms = 5000\n\n[[service]]\nkind = \"cservice_proxy\"\n\n[[service]]\nkind = \"lobby\"\nname = \"lobby\"\n"
        }
                _ => "[[service]]\nkind = \"activity_master\"\nname = \"activity_master\"\nworkers = 8\nrule = \"modulo\"\n",
    }
}

fn start_node(bee: &Path, dir: &Path, cpp: &Path, name: &str) -> Result<NodeProcess> {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "name = \"{name}\"\ncluster = \"cluster.lua\"\ncall_timeout_ms = 10000\n\n{}",
            node_config(name, cpp)
        ),
    )?;
    let mut cmd = Command::new(bee);
    cmd.arg("run").arg(&cfg).env(
        "BEE_LOG",
        std::env::var("BEE_LOG").unwrap_or_else(|_| "info".into()),
    );
    process::start_node(name, cmd, &dir.join(format!("{name}.log")), "listening on")
}

fn build_bee(root: &Path) -> Result<PathBuf> {
    crate::step(
        "build",
        // The demo's services live in their own binary (`bee` plus the demo's kinds).
        crate::cargo().args(["build", "-p", "bee-demo", "--bin", "bee-demo"]),
    )?;
    Ok(crate::run_info::target_dir(root)
        .join("debug")
        .join("bee-demo"))
}

/// Run the demo.
pub fn run(root: &Path) -> Result<()> {
    crate::setup::ensure_all()?;
    let bee = build_bee(root)?;
    // The C++ shop and mail modules, built from cservices/ with g++.
    let cpp = crate::cpp::build(root, false)?;
    let dir = root.join("target").join("demo");
    std::fs::create_dir_all(&dir)?;
    let lua = crate::demo_lua::LuaNode::prepare(root, &dir)?;
    let mut cluster = String::from(
        "-- the demo cluster, written by cargo xtask demo\n__version = 1\n__nowaiting = true\n",
    );
    for n in NODES.into_iter().chain([crate::demo_lua::NODE]) {
        cluster.push_str(&format!("{n} = \"127.0.0.1:{}\"\n", free_port()?));
    }
    // A node in the config that never runs: the C++ mail_ghost's lookups go there.
    cluster.push_str(&format!("ghost = \"127.0.0.1:{}\"\n", free_port()?));
    std::fs::write(dir.join("cluster.lua"), &cluster)?;
    println!(
        "\n== the demo cluster ({})\n{cluster}",
        dir.join("cluster.lua").display()
    );
    eprintln!("== starting nodes (logs: {}/<node>.log)", dir.display());
    let mut nodes = Vec::new();
    for n in NODES {
        nodes.push((n.to_string(), start_node(&bee, &dir, &cpp, n)?));
    }
    nodes.push((
        crate::demo_lua::NODE.to_string(),
        lua.start(root, &bee, &dir)?,
    ));
    let mut demo = Demo {
        bee,
        dir: dir.clone(),
        cpp,
        nodes,
        adopted: Vec::new(),
        frontdoor_port: lua.frontdoor_port,
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(walk(&mut demo));
    eprintln!("\n== stopping nodes");
    drop(demo);
    result
}

/// The running demo: the binary, its directory, and the node processes by name.
struct Demo {
    bee: PathBuf,
    dir: PathBuf,
    cpp: PathBuf,
    nodes: Vec<(String, NodeProcess)>,
    /// Node processes started by `bee cluster upgrade` (not children of this job).
    adopted: Vec<process::Adopted>,
    /// Where the Lua node's front door listens for players.
    frontdoor_port: u16,
}

const UPGRADE_TITLE: &str = "hot update: lpersistence_3 upgraded in place (bee cluster upgrade → bee run --takeover) under a steady load from lobby";

/// Ask lobby to run `command`; its lines.
async fn lobby(cluster: &Cluster, command: &str) -> Result<Vec<String>> {
    let reply = cluster
        .call(
            "lobby",
            "lobby",
            seri::pack(&[Value::from("lua"), Value::from(command)])?,
        )
        .await
        .map_err(|e| anyhow::anyhow!("lobby {command}: {e}"))?;
    Ok(seri::unpack(&reply)?
        .into_iter()
        .map(|l| {
            l.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| l.to_string())
        })
        .collect())
}

/// The hot-update scenario: lobby loads lpersistence_3 while `bee cluster upgrade` hands
/// it over to a new process; lobby's load report must show no failed call and every
/// push counted (by a login counter that crossed the handover).
async fn upgrade_persistence(cluster: &Cluster, demo: &mut Demo) -> Result<Vec<String>> {
    let mut lines = lobby(cluster, "load_start").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cluster_file = demo.dir.join("cluster.lua");
    let out = tokio::task::block_in_place(|| {
        Command::new(&demo.bee)
            .args(["cluster", "upgrade", "--cluster"])
            .arg(&cluster_file)
            .arg("--configs")
            .arg(&demo.dir)
            .arg("--bin")
            .arg(&demo.bee)
            .arg("--old-bin")
            .arg(&demo.bee)
            .args(["--nodes", "lpersistence_3"])
            .env(
                "BEE_LOG",
                std::env::var("BEE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .output()
    })?;
    lines.push(format!(
        "$ bee cluster upgrade --cluster {} --configs {} --bin bee-demo --nodes lpersistence_3",
        cluster_file.display(),
        demo.dir.display()
    ));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    for l in stdout.lines() {
        if let Some(pid) = l
            .strip_prefix("lpersistence_3: new process pid ")
            .and_then(|p| p.trim().parse().ok())
        {
            demo.adopted
                .push(process::Adopted::new("lpersistence_3 (upgraded)", pid));
        }
        lines.push(format!("  {l}"));
    }
    // Keep the load on the new process a moment, then stop it and read its report.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = lobby(cluster, "load_stop").await;
    if !out.status.success() {
        bail!(
            "bee cluster upgrade failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    lines.extend(report?);
    Ok(lines)
}

const MOVE_TITLE: &str = "config push: activity_master moves to a new port (version 1 → 2) and its process restarts there; lobby, never restarted, keeps calling it";

/// The last scenario: move `activity_master` to a new port while lobby runs (see the
/// module doc). Returns the transcript lines, or the error that stopped it.
async fn move_activity(cluster: &Cluster, demo: &mut Demo) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    let v1_path = demo.dir.join("cluster.lua");
    let v1 = ClusterConfig::load(&v1_path)?;
    let old = match v1.nodes.get("activity_master") {
        Some(bee_registry::NodeEntry::Up(a)) => a.clone(),
        _ => bail!("activity_master has no address in {}", v1_path.display()),
    };
    let new = format!("127.0.0.1:{}", free_port()?);
    let v2_text = std::fs::read_to_string(&v1_path)?
        .replace("__version = 1", "__version = 2")
        .replace(
            &format!("activity_master = \"{old}\""),
            &format!("activity_master = \"{new}\""),
        );
    let v2_path = demo.dir.join("cluster-v2.lua");
    std::fs::write(&v2_path, &v2_text)?;
    lines.push(format!(
        "wrote {}: version 2, activity_master {old} -> {new}",
        v2_path.display()
    ));

    // The new process first (it reads version 2, so it listens at the new port).
    let cfg = demo.dir.join("activity_master-moved.toml");
    std::fs::write(
        &cfg,
        format!(
            // A second process of the node, on purpose (not a takeover): its own
            // handover socket.
            "name = \"activity_master\"\ncluster = \"cluster-v2.lua\"\ncall_timeout_ms = 10000\nhandover_socket = \"activity_master-moved.handover.sock\"\n\n{}",
            node_config("activity_master", &demo.cpp)
        ),
    )?;
    let mut cmd = Command::new(&demo.bee);
    cmd.arg("run").arg(&cfg).env(
        "BEE_LOG",
        std::env::var("BEE_LOG").unwrap_or_else(|_| "info".into()),
    );
    let log = demo.dir.join("activity_master-moved.log");
    let moved = tokio::task::block_in_place(|| {
        process::start_node("activity_master (new)", cmd, &log, "listening on")
    })?;
    lines.push(format!(
        "started a new activity_master process (pid {}) at {new}",
        moved.pid()
    ));

    // The push, as an operator types it; every running node answers (`ghost` is in the
    // config but never runs: unreachable, which fails the push only with --require-all).
    let out = tokio::task::block_in_place(|| {
        Command::new(&demo.bee)
            .args(["config", "push", "--cluster"])
            .arg(&v1_path)
            .arg(&v2_path)
            .env("BEE_LOG", "warn")
            .output()
    })?;
    lines.push(format!(
        "$ bee config push --cluster {} {}",
        v1_path.display(),
        v2_path.display()
    ));
    lines.extend(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| format!("  {l}")),
    );
    if !out.status.success() {
        bail!(
            "bee config push failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    // The old process goes; the new one takes its place in the list.
    let i = demo
        .nodes
        .iter()
        .position(|(n, _)| n == "activity_master")
        .ok_or_else(|| anyhow::anyhow!("no activity_master process"))?;
    let (_, old_process) = std::mem::replace(&mut demo.nodes[i], ("activity_master".into(), moved));
    let old_pid = old_process.pid();
    tokio::task::block_in_place(|| drop(old_process));
    lines.push(format!(
        "stopped the old activity_master process (pid {old_pid}) at {old}"
    ));

    // lobby calls activity_master again: its channel was re-targeted by the push.
    let reply = cluster
        .call(
            "lobby",
            "lobby",
            seri::pack(&[
                Value::from("lua"),
                Value::from("activity"),
                Value::from(20i64),
                Value::from("modulo"),
            ])?,
        )
        .await
        .map_err(|e| anyhow::anyhow!("lobby → activity_master after the move: {e}"))?;
    lines.push("lobby → activity_master at its new port (lobby not restarted):".into());
    for l in seri::unpack(&reply)? {
        lines.push(format!(
            "  {}",
            l.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| l.to_string())
        ));
    }

    // What lobby's Cluster::watch saw (its bee_clusterd keeps the last events); the
    // hello that finds the new run goes out after the first call, so wait for it a little.
    let deadline = Instant::now() + Duration::from_secs(3);
    let events = loop {
        let events = cluster
            .call(
                "lobby",
                "@bee_clusterd",
                seri::pack(&[Value::from("lua"), Value::from("events")])?,
            )
            .await
            .map_err(|e| anyhow::anyhow!("lobby's events: {e}"))?;
        let events = seri::unpack(&events)?;
        let restarted = events.iter().any(|e| {
            e.as_str()
                .is_some_and(|e| e.contains("activity_master restarted"))
        });
        if restarted || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    lines.push("lobby's Cluster::watch events:".into());
    for e in events {
        let e = e.as_str().unwrap_or_default().to_string();
        if e.contains("activity_master") || e.contains("version 1->2") {
            // "<ms since 1970> <event>": the event.
            let text = e.split_once(' ').map_or(e.as_str(), |(_, t)| t);
            lines.push(format!("  {text}"));
        }
    }
    Ok(lines)
}

async fn walk(demo: &mut Demo) -> Result<()> {
    let dir = demo.dir.clone();
    let config = ClusterConfig::load(&dir.join("cluster.lua"))?;
    let node = Node::new("demo-console", RuntimeConfig::default());
    let mut settings = ClusterSettings::default();
    settings.channel.call_timeout = Duration::from_secs(30);
    let cluster = Cluster::start(&node, Registry::new(config), settings);
    let mut passed = 0;
    let mut failed = Vec::new();
    let list = scenarios();
    let titled = list.iter().filter(|s| !s.0.is_empty()).count();
    let mut current = "";
    let mut current_ok = true;
    for (i, (title, command, args)) in list.iter().enumerate() {
        if !title.is_empty() {
            current = title;
            current_ok = true;
            println!("\n▶ {title}");
        }
        let mut payload = vec![Value::from("lua"), Value::from(*command)];
        payload.extend(args.iter().cloned());
        let started = Instant::now();
        let reply = cluster.call("lobby", "lobby", seri::pack(&payload)?).await;
        match reply
            .map_err(|e| e.to_string())
            .and_then(|r| seri::unpack(&r).map_err(|e| e.to_string()))
        {
            Ok(lines) => {
                for l in lines {
                    match l.as_str() {
                        Some(s) => println!("  {s}"),
                        None => println!("  {l}"),
                    }
                }
            }
            Err(e) => {
                current_ok = false;
                println!("  ✗ FAILED after {:?}: {e}", started.elapsed());
            }
        }
        // A scenario ends where the next titled one starts (or at the end).
        let ends = list.get(i + 1).map(|n| !n.0.is_empty()).unwrap_or(true);
        if ends {
            if current_ok {
                passed += 1;
                println!("  ✓ passed");
            } else {
                failed.push(current.to_string());
            }
        }
    }
    for title in [
        crate::demo_lua::TITLE,
        crate::demo_lua::FRONTDOOR_TITLE,
        UPGRADE_TITLE,
        MOVE_TITLE,
    ] {
        println!("\n▶ {title}");
        let started = Instant::now();
        let outcome = if title == UPGRADE_TITLE {
            upgrade_persistence(&cluster, demo).await
        } else if title == MOVE_TITLE {
            move_activity(&cluster, demo).await
        } else if title == crate::demo_lua::FRONTDOOR_TITLE {
            crate::demo_lua::frontdoor(&cluster, &demo.bee, &demo.dir, demo.frontdoor_port).await
        } else {
            crate::demo_lua::scenario(&cluster).await
        };
        match outcome {
            Ok(lines) => {
                for l in lines {
                    println!("  {l}");
                }
                passed += 1;
                println!("  ✓ passed ({:?})", started.elapsed());
            }
            Err(e) => {
                println!("  ✗ FAILED after {:?}: {e:#}", started.elapsed());
                failed.push(title.to_string());
            }
        }
    }
    let titled = titled + 4;
    node.shutdown();
    println!("\n== {passed} of {titled} scenarios passed");
    if !failed.is_empty() {
        bail!("failed scenarios: {}", failed.join("; "));
    }
    Ok(())
}
