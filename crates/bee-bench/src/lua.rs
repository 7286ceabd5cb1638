//! LUA: skynet's Lua layer on bee against stock skynet, with the same Lua scripts
//! (`bench/lua/`) on both sides and equal worker threads:
//!
//! - same-node `skynet.call` round trips Lua → Lua, 1 caller and 64 forked callers
//!   (`bee run SKYNET_CONFIG` vs `skynet SKYNET_CONFIG`, the same file);
//! - `cluster.call` Lua → Lua across two nodes, 1 caller and 64 forked callers (two bee
//!   node configs hosting Lua, whose `skynet.cluster` goes through bee's cluster, vs
//!   two stock skynet nodes);
//! - resident memory per idle Lua service, 1,000 started (the process's RSS after them
//!   minus before, read at the script's marks).
//!
//! The scripts print `LUABENCH key value` lines; a wrong reply is a Lua error, and a run
//! that does not reach `LUABENCH done` within its time limit is a failure.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::{nodeproc, rss, BenchError};

/// What to run.
#[derive(Debug, Clone)]
pub struct LuaParams {
    /// The `bee` binary.
    pub bee: PathBuf,
    /// A built stock skynet tree (its `skynet`, `liblua.so`, `cservice/`, `lualib/`, …).
    pub skynet: PathBuf,
    /// Whether to run the stock skynet side too.
    pub with_skynet: bool,
    /// The benchmark's Lua scripts (`bench/lua`).
    pub scripts: PathBuf,
    /// Where configs and logs go.
    pub dir: PathBuf,
    /// Worker threads of every node, both sides.
    pub threads: u32,
    /// Calls per measured run.
    pub calls: u64,
    /// Idle services started for the memory figure.
    pub services: u32,
}

/// One figure on both sides.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pair {
    /// bee's figure.
    pub bee: Option<f64>,
    /// Stock skynet's figure.
    pub skynet: Option<f64>,
}

/// The results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LuaReport {
    /// Worker threads of every node.
    pub threads: u32,
    /// Calls per measured run.
    pub calls: u64,
    /// Idle services started.
    pub services: u32,
    /// Same-node `skynet.call`/s, one caller.
    pub local_1: Pair,
    /// Same-node `skynet.call`/s, 64 forked callers.
    pub local_64: Pair,
    /// `cluster.call`/s across two nodes, one caller.
    pub cluster_1: Pair,
    /// `cluster.call`/s across two nodes, 64 forked callers.
    pub cluster_64: Pair,
    /// KiB of resident memory per idle Lua service.
    pub idle_kib_per_service: Pair,
    /// Runs that failed, with why.
    pub errors: Vec<String>,
}

/// What one script run printed, and the process's memory at its marks.
struct Printed {
    values: HashMap<String, String>,
    marks: HashMap<String, u64>,
}

impl Printed {
    fn num(&self, key: &str) -> Option<f64> {
        self.values.get(key).and_then(|v| v.parse().ok())
    }
}

/// A child process killed (and reaped) on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `cmd` (stdout read here, stderr to `log`); the receiver of its stdout lines.
fn spawn(mut cmd: Command, log: &Path) -> Result<(Killed, mpsc::Receiver<String>), BenchError> {
    let stderr = std::fs::File::create(log)?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| BenchError::Setup("no stdout of the Lua node".into()))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok((Killed(child), rx))
}

/// Read `LUABENCH` lines until `until` (a key) or the time limit; the memory of `pid` is
/// read when a `mem_*` mark appears.
fn collect(
    what: &str,
    child: &Killed,
    rx: &mpsc::Receiver<String>,
    until: &str,
    within: Duration,
) -> Result<Printed, BenchError> {
    let deadline = Instant::now() + within;
    let mut p = Printed {
        values: HashMap::new(),
        marks: HashMap::new(),
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).map_err(|_| {
            BenchError::Setup(format!(
                "{what}: no \"LUABENCH {until}\" within {within:?} (so far: {:?})",
                p.values
            ))
        })?;
        let Some(rest) = line.strip_prefix("LUABENCH ") else {
            // A script that cannot load (or fails to start) never says "done".
            if line.contains("lua loader error") || line.contains("init service failed") {
                return Err(BenchError::Setup(format!("{what}: {line}")));
            }
            continue;
        };
        let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
        if key.starts_with("mem_") {
            p.marks
                .insert(key.to_string(), rss::read(child.0.id())?.rss_kb);
        }
        if key == "error" {
            return Err(BenchError::Setup(format!("{what}: {value}")));
        }
        p.values.insert(key.to_string(), value.to_string());
        if key == until {
            return Ok(p);
        }
    }
}

/// The skynet config both sides read (single-node runs) or the `[env]` keys (bee node
/// configs), for `mode`.
fn env_lines(p: &LuaParams, mode: &str, extra: &[(&str, String)]) -> Vec<(String, String)> {
    let s = p.skynet.display();
    let l = p.scripts.display();
    let mut v: Vec<(String, String)> = vec![
        ("cpath".into(), format!("{s}/cservice/?.so")),
        (
            "lua_path".into(),
            format!("{s}/lualib/?.lua;{s}/lualib/?/init.lua"),
        ),
        ("lua_cpath".into(), format!("{s}/luaclib/?.so")),
        ("luaservice".into(), format!("{s}/service/?.lua;{l}/?.lua")),
        ("lualoader".into(), format!("{s}/lualib/loader.lua")),
        ("start".into(), "luabench".into()),
        ("luabench_mode".into(), mode.into()),
        ("luabench_calls".into(), p.calls.to_string()),
        ("luabench_services".into(), p.services.to_string()),
    ];
    v.extend(extra.iter().map(|(k, x)| (k.to_string(), x.clone())));
    v
}

fn skynet_config(
    p: &LuaParams,
    name: &str,
    mode: &str,
    extra: &[(&str, String)],
) -> Result<PathBuf, BenchError> {
    let mut text = format!(
        "-- written by bee-bench lua\nthread = {}\nharbor = 0\nbootstrap = \"snlua bootstrap\"\n",
        p.threads
    );
    for (k, v) in env_lines(p, mode, extra) {
        text.push_str(&format!("{k} = {v:?}\n"));
    }
    let path = p.dir.join(format!("{name}.config"));
    std::fs::write(&path, text)?;
    Ok(path)
}

fn bee_node_config(
    p: &LuaParams,
    name: &str,
    mode: &str,
    extra: &[(&str, String)],
) -> Result<PathBuf, BenchError> {
    let mut text = format!(
        "# written by bee-bench lua\nname = \"{name}\"\ncluster = \"luacluster.lua\"\nthreads = {}\n\n[env]\n",
        p.threads
    );
    for (k, v) in env_lines(p, mode, extra) {
        text.push_str(&format!("{k} = {v:?}\n"));
    }
    text.push_str(&format!(
        "\n[[service]]\nkind = \"snlua\"\nliblua = {:?}\n",
        p.skynet.join("liblua.so").display().to_string()
    ));
    let path = p.dir.join(format!("{name}.toml"));
    std::fs::write(&path, text)?;
    Ok(path)
}

fn skynet_cmd(p: &LuaParams, config: &Path) -> Command {
    let mut c = Command::new(p.skynet.join("skynet"));
    c.arg(config).current_dir(&p.skynet);
    c
}

fn bee_cmd(p: &LuaParams, config: &Path) -> Command {
    let mut c = Command::new(&p.bee);
    c.arg("run").arg(config).env("BEE_LOG", "warn");
    c
}

/// Run the whole set.
pub fn run(p: &LuaParams) -> Result<LuaReport, BenchError> {
    std::fs::create_dir_all(&p.dir)?;
    // Absolute paths: stock skynet runs in its tree's directory.
    let mut p = p.clone();
    for path in [&mut p.bee, &mut p.skynet, &mut p.scripts, &mut p.dir] {
        *path = path
            .canonicalize()
            .map_err(|e| BenchError::Setup(format!("{}: {e}", path.display())))?;
    }
    let p = &p;
    let mut r = LuaReport {
        threads: p.threads,
        calls: p.calls,
        services: p.services,
        ..LuaReport::default()
    };
    let limit = Duration::from_secs(120);
    let sides: &[&str] = if p.with_skynet {
        &["bee", "skynet"]
    } else {
        &["bee"]
    };
    for side in sides {
        let pick = |pair: &mut Pair, v: Option<f64>| {
            if *side == "bee" {
                pair.bee = v
            } else {
                pair.skynet = v
            }
        };
        // Same node: calls.
        let cfg = skynet_config(p, &format!("{side}_local"), "local", &[])?;
        let cmd = if *side == "bee" {
            bee_cmd(p, &cfg)
        } else {
            skynet_cmd(p, &cfg)
        };
        eprintln!("== lua: same-node calls on {side}");
        match spawn(cmd, &p.dir.join(format!("{side}_local.log")))
            .and_then(|(c, rx)| collect(&format!("{side} local"), &c, &rx, "done", limit))
        {
            Ok(out) => {
                pick(&mut r.local_1, out.num("local_1"));
                pick(&mut r.local_64, out.num("local_64"));
            }
            Err(e) => r.errors.push(e.to_string()),
        }
        // Same node: memory per idle service.
        let cfg = skynet_config(p, &format!("{side}_mem"), "mem", &[])?;
        let cmd = if *side == "bee" {
            bee_cmd(p, &cfg)
        } else {
            skynet_cmd(p, &cfg)
        };
        eprintln!("== lua: {} idle services on {side}", p.services);
        match spawn(cmd, &p.dir.join(format!("{side}_mem.log")))
            .and_then(|(c, rx)| collect(&format!("{side} mem"), &c, &rx, "done", limit))
        {
            Ok(out) => {
                let (a, b) = (out.marks.get("mem_base"), out.marks.get("mem_after"));
                let per = match (a, b) {
                    (Some(a), Some(b)) => {
                        Some(b.saturating_sub(*a) as f64 / f64::from(p.services.max(1)))
                    }
                    _ => None,
                };
                pick(&mut r.idle_kib_per_service, per);
            }
            Err(e) => r.errors.push(e.to_string()),
        }
        // Two nodes: cluster.call.
        eprintln!("== lua: cluster.call across two {side} nodes");
        match cluster_pair(p, side, limit) {
            Ok(out) => {
                pick(&mut r.cluster_1, out.num("cluster_1"));
                pick(&mut r.cluster_64, out.num("cluster_64"));
            }
            Err(e) => r.errors.push(e.to_string()),
        }
    }
    Ok(r)
}

/// A server node and a client node of `side`; what the client printed.
fn cluster_pair(p: &LuaParams, side: &str, limit: Duration) -> Result<Printed, BenchError> {
    let (server, client) = (format!("{side}_pong"), format!("{side}_ping"));
    let cluster = p.dir.join("luacluster.lua");
    std::fs::write(
        &cluster,
        format!(
            "-- written by bee-bench lua\n{server} = \"127.0.0.1:{}\"\n{client} = \"127.0.0.1:{}\"\n",
            nodeproc::free_port()?,
            nodeproc::free_port()?
        ),
    )?;
    let file = cluster.display().to_string();
    let extra = |me: &str| {
        vec![
            ("cluster", file.clone()),
            ("luabench_node", me.to_string()),
            ("luabench_peer", server.clone()),
        ]
    };
    let (scmd, ccmd) = if side == "bee" {
        (
            bee_cmd(p, &bee_node_config(p, &server, "server", &extra(&server))?),
            bee_cmd(p, &bee_node_config(p, &client, "client", &extra(&client))?),
        )
    } else {
        (
            skynet_cmd(p, &skynet_config(p, &server, "server", &extra(&server))?),
            skynet_cmd(p, &skynet_config(p, &client, "client", &extra(&client))?),
        )
    };
    let (s, srx) = spawn(scmd, &p.dir.join(format!("{server}.log")))?;
    collect(
        &format!("{side} cluster server"),
        &s,
        &srx,
        "listening",
        Duration::from_secs(30),
    )?;
    let (c, crx) = spawn(ccmd, &p.dir.join(format!("{client}.log")))?;
    let out = collect(&format!("{side} cluster client"), &c, &crx, "done", limit);
    drop(c);
    drop(s);
    out
}

/// The markdown table of a [`LuaReport`] (as JSON) for the results of `cargo xtask bench`.
pub fn table(l: &serde_json::Value) -> String {
    let get = |row: &str, side: &str| {
        l.get(row)
            .and_then(|r| r.get(side))
            .and_then(serde_json::Value::as_f64)
    };
    let fmt = |v: Option<f64>, unit: &str| match v {
        Some(v) if unit == "KiB" => format!("{v:.1} KiB"),
        Some(v) => format!("{v:.0}"),
        None => "—".into(),
    };
    let mut out = format!(
        "\nskynet's Lua layer (the same scripts, `bench/lua/`; thread = {} on both sides, {} calls per run):\n\n\
         | Lua figure | bee | stock skynet | bee ÷ skynet | target |\n|---|---:|---:|---:|---|\n",
        l.get("threads").map(ToString::to_string).unwrap_or_else(|| "?".into()),
        l.get("calls").map(ToString::to_string).unwrap_or_else(|| "?".into()),
    );
    let rows: [(&str, &str, &str, &str, bool); 5] = [
        (
            "local_1",
            "same-node skynet.call/s, 1 caller",
            "",
            "≥ 1.0×",
            true,
        ),
        (
            "local_64",
            "same-node skynet.call/s, 64 callers",
            "",
            "≥ 1.0×",
            true,
        ),
        (
            "cluster_1",
            "cluster.call/s across two nodes, 1 caller",
            "",
            "≥ 2×",
            true,
        ),
        (
            "cluster_64",
            "cluster.call/s across two nodes, 64 callers",
            "",
            "≥ 2×",
            true,
        ),
        (
            "idle_kib_per_service",
            "memory per idle Lua service (1,000 started)",
            "KiB",
            "≤ 1.0×",
            false,
        ),
    ];
    for (key, label, unit, target, higher_better) in rows {
        let (b, s) = (get(key, "bee"), get(key, "skynet"));
        let ratio = match (b, s) {
            (Some(b), Some(s)) if s > 0.0 => format!("{:.2}×", b / s),
            _ => "—".into(),
        };
        let met = match (b, s) {
            (Some(b), Some(s)) if s > 0.0 => {
                let r = b / s;
                let bar = if key.starts_with("cluster") { 2.0 } else { 1.0 };
                if (higher_better && r >= bar) || (!higher_better && r <= bar) {
                    "met"
                } else {
                    "NOT met"
                }
            }
            _ => "?",
        };
        out.push_str(&format!(
            "| {label} | {} | {} | {ratio} | {target} {met} |\n",
            fmt(b, unit),
            fmt(s, unit)
        ));
    }
    if let Some(errs) = l
        .get("errors")
        .and_then(serde_json::Value::as_array)
        .filter(|e| !e.is_empty())
    {
        out.push_str(&format!("\nLua runs that failed: {}\n", errs.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_gives_ratios_and_whether_each_target_is_met() {
        let v = serde_json::json!({
            "threads": 2, "calls": 200000, "services": 1000,
            "local_1": {"bee": 150000.0, "skynet": 100000.0},
            "local_64": {"bee": 90000.0, "skynet": 100000.0},
            "cluster_1": {"bee": 30000.0, "skynet": 10000.0},
            "cluster_64": {"bee": 15000.0, "skynet": 10000.0},
            "idle_kib_per_service": {"bee": 40.0, "skynet": 50.0},
            "errors": []
        });
        let t = table(&v);
        assert!(
            t.contains(
                "| same-node skynet.call/s, 1 caller | 150000 | 100000 | 1.50× | ≥ 1.0× met |"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "| same-node skynet.call/s, 64 callers | 90000 | 100000 | 0.90× | ≥ 1.0× NOT met |"
            ),
            "{t}"
        );
        assert!(
            t.contains("1 caller | 30000 | 10000 | 3.00× | ≥ 2× met |"),
            "{t}"
        );
        assert!(
            t.contains("64 callers | 15000 | 10000 | 1.50× | ≥ 2× NOT met |"),
            "{t}"
        );
        assert!(
            t.contains("| 40.0 KiB | 50.0 KiB | 0.80× | ≤ 1.0× met |"),
            "{t}"
        );
        let none = table(&serde_json::json!({"local_1": {"bee": 1.0, "skynet": null}}));
        assert!(none.contains("| 1 | — | — | ≥ 1.0× ? |"), "{none}");
    }
}
