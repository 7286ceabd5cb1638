//! `cargo xtask cluster-sim [--quick] [--nodes N] [--repeats R] [--delay-ms D]
//! [--jitter-ms J] [--loss-pct L] [--no-netem] [--only S,S] [--release]`: bee at cluster scale.
//!
//! The simulation itself is the `bee-sim` program (`crates/bee-sim`: network namespaces,
//! delay and loss, the nodes, the scenarios, the table). This step installs what it needs
//! (`ip`, `iptables`, `etcd`), builds stock skynet, `bee` and `bee-sim`, runs it, prints
//! its table under a line saying when, where and how it ran, and appends that to
//! `BENCHMARKS.md` after a full run with no failed check. bee-sim is a program of its own
//! because it talks to etcd (bee-etcd, whose build needs `protoc`): xtask itself must
//! build on a fresh machine before `cargo xtask setup` has installed anything.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const USAGE: &str = "cargo xtask cluster-sim [--quick] [--nodes N] [--repeats R] [--delay-ms D] [--jitter-ms J] [--loss-pct L] [--no-netem] [--only S,S] [--release]";

/// `cargo xtask cluster-sim`: see the module doc.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let release = args.iter().any(|a| a == "--release");
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("usage: {USAGE}");
        return Ok(());
    }
    let uid = Command::new("id").arg("-u").output()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        bail!("cluster-sim needs root (network namespaces, veth, iptables, tc): run it as root");
    }
    crate::setup::ensure_net_tools()?;
    crate::setup::ensure_etcd_tools()?;
    let skynet = crate::skynet::ensure(root)?;
    let bee = crate::run_info::build_bee(root, release)?;
    let sim = crate::run_info::build_bin(root, "bee-sim", "bee-sim", release)?;

    let dir = crate::run_info::target_dir(root).join("cluster-sim");
    let started_at = crate::run_info::utc_minute();
    let t0 = Instant::now();
    let mut cmd = Command::new(&sim);
    cmd.arg("run")
        .args(args.iter().filter(|a| *a != "--release"))
        .arg("--bee")
        .arg(&bee)
        .arg("--skynet")
        .arg(&skynet)
        .arg("--root")
        .arg(root)
        .arg("--dir")
        .arg(&dir);
    let mut child = cmd.spawn().context("cannot start bee-sim")?;
    // bee-sim bounds its own run; this is the bound on bee-sim itself (it sweeps its
    // namespaces when killed by the signal handler, and at the start of the next run).
    let bound = Duration::from_secs(if quick { 420 } else { 4200 });
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if t0.elapsed() > bound {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            std::thread::sleep(Duration::from_secs(5));
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "bee-sim did not finish within {bound:?}; see {}",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let summary = std::fs::read_to_string(dir.join("summary.md")).with_context(|| {
        format!(
            "bee-sim wrote no summary ({status}); see the logs in {}",
            dir.display()
        )
    })?;
    let md = format!(
        "Run {started_at} on {} (shared with other work), command `cargo xtask cluster-sim {}`, \
         {} build of `bee`: {summary}",
        crate::run_info::machine(),
        args.join(" "),
        if release { "release" } else { "debug" },
    );
    std::fs::write(dir.join("results.md"), &md)?;
    eprintln!(
        "\n== cluster-sim result ({})\n\n{md}",
        dir.join("results.md").display()
    );
    if !status.success() {
        bail!(
            "cluster-sim failed ({status}): the failed checks are listed above; logs in {}",
            dir.display()
        );
    }
    // A partial run (`--only`) is not a benchmark result.
    if !quick && !args.iter().any(|a| a == "--only") {
        let path = root.join("BENCHMARKS.md");
        let mut all = std::fs::read_to_string(&path).unwrap_or_default();
        all.push_str(&format!("\n### Cluster simulation ({started_at})\n\n{md}"));
        std::fs::write(&path, all)?;
        eprintln!("appended to {}", path.display());
    }
    Ok(())
}
