//! `bee cluster upgrade`: a rolling hot update of every node of a cluster, one at a time.
//!
//! For each node, in the order given (`--nodes`) or the cluster config's: ask it for its
//! report (incarnation, config version), start `NEW_BIN run DIR/<node>.toml --takeover`
//! (detached, its output appended to `DIR/<node>.log`), and wait until the node answers
//! with a new incarnation — healthy — or the new process gives up. A new version that
//! exits before it took over leaves the old process serving (nothing to undo); one that
//! took over but does not answer is rolled back: `OLD_BIN run … --takeover` (with
//! `--old-configs` when the upgrade changes configs) takes the node back, and when the
//! failed process does not hand back, it is stopped and `OLD_BIN` starts afresh. Either way the rollout stops there: the nodes after it keep their version,
//! the command prints its summary and exits non-zero. `--dry-run` prints the plan only.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bee_cluster::lifecycle::ConfigReport;
use bee_codec::seri::Value;
use bee_registry::NodeEntry;
use bee_transport::AuthSecret;

use crate::admin::{ask, load, table};

/// `bee cluster …`.
#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// Hot-update every node, one at a time (see docs/hot-update.md).
    Upgrade(UpgradeArgs),
}

/// Arguments of `bee cluster upgrade`.
#[derive(clap::Args)]
pub struct UpgradeArgs {
    /// The cluster config naming the nodes and their addresses.
    #[arg(long)]
    cluster: PathBuf,
    /// The directory of the node configs (`<node>.toml`); also where each node's
    /// handover socket and the new processes' logs are.
    #[arg(long)]
    configs: PathBuf,
    /// The node binary to upgrade to.
    #[arg(long)]
    bin: PathBuf,
    /// The binary to roll a failing node back to (default: this `bee`).
    #[arg(long)]
    old_bin: Option<PathBuf>,
    /// The node configs to roll back with, when the upgrade also changes them (default:
    /// `--configs`). Both must name the same handover socket for a node.
    #[arg(long)]
    old_configs: Option<PathBuf>,
    /// Upgrade these nodes, in this order (default: every node of the cluster config
    /// that has a `<node>.toml` in `--configs`, in the config's order).
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<String>,
    /// How long a node may take to come up healthy after its handover, in ms.
    #[arg(long, default_value_t = 20_000)]
    health_timeout_ms: u64,
    /// Print the plan and stop.
    #[arg(long)]
    dry_run: bool,
}

/// What happened to one node.
struct Outcome {
    node: String,
    before: Option<ConfigReport>,
    after: Option<ConfigReport>,
    took: Duration,
    result: String,
    handover: String,
    ok: bool,
}

/// Ask `node` for its report.
async fn report(
    node: &str,
    addr: &str,
    secret: Option<&AuthSecret>,
) -> Result<ConfigReport, String> {
    let values = [Value::from("lua"), Value::from("config")];
    let got = ask(node, addr, &values, Duration::from_secs(2), secret)
        .await
        .map_err(|e| e.to_string())?;
    ConfigReport::from_values(&got).map_err(|e| format!("bad report: {e}"))
}

/// The part of `log` written after `from` bytes.
fn log_since(log: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(log) {
        if f.seek(SeekFrom::Start(from)).is_ok() {
            let _ = f.read_to_string(&mut text);
        }
    }
    text
}

/// The new process's `took over` line, shortened to its numbers.
fn handover_line(log: &str) -> String {
    let Some(line) = log.lines().rev().find(|l| l.contains(" took over ")) else {
        return String::new();
    };
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or("?")
            .to_string()
    };
    // `old=drained in X ms, N messages handled meanwhile: ...`
    let drained = line
        .split("old=")
        .nth(1)
        .and_then(|s| s.split(" handled meanwhile").next())
        .unwrap_or("?");
    format!(
        "handover {} ms ({}), states carried {}/{}",
        field("took_ms="),
        drained.trim(),
        field("states_carried="),
        field("states_offered="),
    )
}

/// Start `bin run CONFIG [--takeover]`, detached (its own process group), output
/// appended to `log`.
fn start(bin: &Path, config: &Path, log: &Path, takeover: bool) -> Result<std::process::Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let err = out.try_clone()?;
    use std::os::unix::process::CommandExt;
    Command::new(bin)
        .arg("run")
        .arg(config)
        .args(takeover.then_some("--takeover"))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own process group: a Ctrl-C at this terminal does not reach the node.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))
}

/// One node of the rollout.
struct Target<'a> {
    node: &'a str,
    addr: &'a str,
    config: &'a Path,
    /// The config to roll back with.
    old_config: &'a Path,
    log: &'a Path,
    secret: Option<&'a AuthSecret>,
}

/// Why a new process is not serving the node.
struct Failed {
    why: String,
    /// It took the node over (the old process is gone).
    took_over: bool,
    /// Its process group, when it may still run (to stop it in a roll-back).
    group: Option<u32>,
}

/// Stop every process of group `pgid` (a node started by [`start`], and anything it
/// started), even a stopped one.
fn kill_group(pgid: u32) {
    if let Some(pid) = i32::try_from(pgid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// Start `bin` on the node (taking it over, or afresh when nothing runs it) and wait
/// until it is healthy: it answers with an incarnation other than `before`'s.
async fn hand_over(
    t: &Target<'_>,
    bin: &Path,
    before: &ConfigReport,
    health: Duration,
    takeover: bool,
) -> Result<ConfigReport, Failed> {
    let (node, addr, log, secret) = (t.node, t.addr, t.log, t.secret);
    let mut child = start(bin, t.config, log, takeover).map_err(|e| Failed {
        why: format!("{e:#}"),
        took_over: false,
        group: None,
    })?;
    println!("{node}: new process pid {}", child.id());
    let deadline = Instant::now() + health;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            // It stopped: did it hand back, or never take over?
            let still = report(node, addr, secret).await;
            let took_over = !matches!(&still, Ok(r) if r.incarnation == before.incarnation);
            return Err(Failed {
                why: format!("the new process exited ({status}) — see {}", log.display()),
                took_over,
                group: None,
            });
        }
        if let Ok(r) = report(node, addr, secret).await {
            if r.incarnation != before.incarnation {
                return Ok(r);
            }
        }
        if Instant::now() > deadline {
            let took_over = !matches!(
                report(node, addr, secret).await,
                Ok(r) if r.incarnation == before.incarnation
            );
            if !took_over {
                let _ = child.kill();
                let _ = child.wait();
            }
            return Err(Failed {
                why: format!(
                    "not healthy within {} ms — see {}",
                    health.as_millis(),
                    log.display()
                ),
                took_over,
                group: took_over.then(|| child.id()),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Give the node back to `old_bin`: a handover from the failed process if it still
/// hands over; if not, stop it and start `old_bin` afresh. The result column's text.
async fn rollback(
    t: &Target<'_>,
    old_bin: &Path,
    before: &ConfigReport,
    health: Duration,
    failed: Option<u32>,
) -> String {
    let old = old_bin.display();
    let t = &Target {
        config: t.old_config,
        ..*t
    };
    match hand_over(t, old_bin, before, health, true).await {
        Ok(_) => format!("FAILED, rolled back to {old} (the new process handed back)"),
        Err(back) => {
            // The new process does not hand back (frozen, or gone): stop whatever is
            // left of it and of this attempt, then start the old binary afresh.
            for group in [failed, back.group].into_iter().flatten() {
                kill_group(group);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            match hand_over(t, old_bin, before, health, false).await {
                Ok(_) => format!(
                    "FAILED, rolled back to {old} (the new process did not hand back: stopped, the old binary started afresh)"
                ),
                Err(again) => format!("FAILED, roll-back failed too ({})", again.why),
            }
        }
    }
}

/// `bee cluster upgrade`.
pub async fn upgrade(a: UpgradeArgs) -> Result<()> {
    let cfg = load(&a.cluster)?;
    let secret = crate::ops::client_secret()?;
    let secret = secret.as_ref();
    let old_bin = match &a.old_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("cannot find this bee binary")?,
    };
    let order: Vec<String> = if a.nodes.is_empty() {
        cfg.nodes
            .keys()
            .filter(|n| a.configs.join(format!("{n}.toml")).exists())
            .cloned()
            .collect()
    } else {
        a.nodes.clone()
    };
    if order.is_empty() {
        bail!(
            "no node to upgrade: no <node>.toml of the cluster config's nodes in {}",
            a.configs.display()
        );
    }
    let mut plan = Vec::new();
    for (i, n) in order.iter().enumerate() {
        let addr = match cfg.nodes.get(n) {
            Some(NodeEntry::Up(addr)) => addr.clone(),
            Some(NodeEntry::Down) => bail!("node {n} is marked down in the cluster config"),
            None => bail!(
                "node {n} is not in the cluster config {}",
                a.cluster.display()
            ),
        };
        let config = a.configs.join(format!("{n}.toml"));
        if !config.exists() {
            bail!("no node config {} for node {n}", config.display());
        }
        plan.push((n.clone(), addr, config));
        println!(
            "plan {}/{}: {n} at {} — {} run {} --takeover",
            i + 1,
            order.len(),
            plan[i].1,
            a.bin.display(),
            plan[i].2.display()
        );
    }
    if a.dry_run {
        println!("dry run: nothing changed");
        return Ok(());
    }
    let health = Duration::from_millis(a.health_timeout_ms);
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut failed = false;
    for (node, addr, config) in &plan {
        let log = a.configs.join(format!("{node}.log"));
        let t0 = Instant::now();
        let before = match report(node, addr, secret).await {
            Ok(r) => r,
            Err(e) => {
                outcomes.push(Outcome {
                    node: node.clone(),
                    before: None,
                    after: None,
                    took: t0.elapsed(),
                    result: format!("not upgraded: cannot ask it before ({e})"),
                    handover: String::new(),
                    ok: false,
                });
                failed = true;
                break;
            }
        };
        let offset = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        println!("{node}: handing over to {} ...", a.bin.display());
        let old_config = a
            .old_configs
            .as_ref()
            .map(|d| d.join(format!("{node}.toml")))
            .unwrap_or_else(|| config.clone());
        let target = Target {
            node,
            addr,
            config,
            old_config: &old_config,
            log: &log,
            secret,
        };
        let outcome = hand_over(&target, &a.bin, &before, health, true).await;
        let took = t0.elapsed();
        let new_log = log_since(&log, offset);
        let handover = handover_line(&new_log);
        // What the new process said last when it failed (e.g. its config error).
        let last_words = new_log
            .lines()
            .rev()
            .find(|l| l.contains("error") || l.contains("ERROR"))
            .map(|l| format!(" (it said: {})", l.trim()))
            .unwrap_or_default();
        match outcome {
            Ok(after) => {
                println!(
                    "{node}: healthy, incarnation {} -> {}",
                    before.incarnation, after.incarnation
                );
                outcomes.push(Outcome {
                    node: node.clone(),
                    before: Some(before),
                    after: Some(after),
                    took,
                    result: "upgraded".into(),
                    handover,
                    ok: true,
                });
            }
            Err(f) => {
                failed = true;
                let why = format!("{}{last_words}", f.why);
                let result = if !f.took_over {
                    format!("FAILED, old process kept serving (nothing to roll back): {why}")
                } else {
                    println!("{node}: {why}; rolling back to {}", old_bin.display());
                    rollback(&target, &old_bin, &before, health, f.group).await
                        + &format!(": {why}")
                };
                let after = report(node, addr, secret).await.ok();
                outcomes.push(Outcome {
                    node: node.clone(),
                    before: Some(before),
                    after,
                    took,
                    result,
                    handover,
                    ok: false,
                });
                break;
            }
        }
    }
    let mut rows = vec![[
        "NODE",
        "INCARNATION",
        "CONFIG VERSION",
        "TOOK",
        "RESULT",
        "HANDOVER",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect::<Vec<_>>()];
    for o in &outcomes {
        let inc = |r: &Option<ConfigReport>| {
            r.as_ref()
                .map_or("?".to_string(), |r| r.incarnation.to_string())
        };
        let ver = |r: &Option<ConfigReport>| {
            r.as_ref()
                .map_or("?".to_string(), |r| r.version.to_string())
        };
        rows.push(vec![
            o.node.clone(),
            format!("{} -> {}", inc(&o.before), inc(&o.after)),
            format!("{} -> {}", ver(&o.before), ver(&o.after)),
            format!("{} ms", o.took.as_millis()),
            o.result.clone(),
            o.handover.clone(),
        ]);
    }
    let left: Vec<&str> = plan
        .iter()
        .skip(outcomes.len())
        .map(|(n, _, _)| n.as_str())
        .collect();
    for n in &left {
        rows.push(vec![
            n.to_string(),
            "-".into(),
            "-".into(),
            "-".into(),
            "not upgraded (the rollout stopped)".into(),
            String::new(),
        ]);
    }
    print!("{}", table(&rows));
    let upgraded = outcomes.iter().filter(|o| o.ok).count();
    println!("{upgraded} of {} nodes upgraded", plan.len());
    if failed {
        bail!(
            "the rolling upgrade stopped at {}",
            outcomes.last().map_or("?", |o| o.node.as_str())
        );
    }
    Ok(())
}
