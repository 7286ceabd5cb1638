//! `cargo xtask cluster-sim [--quick] [--nodes N] [--repeats R] [--delay-ms D]
//! [--jitter-ms J] [--loss-pct L] [--no-netem] [--release]`: bee at cluster scale.
//! N bee nodes (default 50; `--quick`: 10) each in its own network namespace on one
//! bridge, with `tc netem` delay 1 ms ± 0.2 ms and 0.1 % loss on every interface, an
//! etcd and two stock skynet v1.6.0 nodes (`cargo xtask skynet`), the scenarios of
//! [`driver`], a table printed and (full run) appended to `BENCHMARKS.md`.
//!
//! Needs root (namespaces, veth, qdiscs) and makes nothing outside the namespaces it
//! creates (all named `beesim-…`): the bridge lives in a namespace of its own. They are
//! removed with every process in them at the end, on an error, on a panic and on
//! Ctrl-C/SIGTERM; a run first removes what an interrupted earlier one left.
//!
//! A kernel without netem (`sch_netem`): the full run stops and says so (`--no-netem`
//! runs without delay and loss); `--quick` runs without it and says so in its output.
//! The run fails on a hung call, a lost or duplicated push or a missing ack, never on a
//! figure.

pub mod driver;
pub mod net;
pub mod report;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use net::{Net, Netem};
use report::Report;

const USAGE: &str = "cargo xtask cluster-sim [--quick] [--nodes N] [--repeats R] [--delay-ms D] [--jitter-ms J] [--loss-pct L] [--no-netem] [--release]";

/// `cargo xtask cluster-sim`: see the module doc.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let mut nodes = if quick { 10 } else { 50 };
    let mut repeats = 3usize;
    let mut netem = Netem {
        delay_ms: 1.0,
        jitter_ms: 0.2,
        loss_pct: 0.1,
    };
    let mut no_netem = false;
    let mut release = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |flag: &str| -> Result<f64> {
            it.next()
                .and_then(|n| n.parse::<f64>().ok())
                .filter(|n| *n >= 0.0)
                .with_context(|| format!("{flag} needs a number\nusage: {USAGE}"))
        };
        match a.as_str() {
            "--quick" => {}
            "--nodes" => nodes = num("--nodes")? as usize,
            "--repeats" => repeats = (num("--repeats")? as usize).max(1),
            "--delay-ms" => netem.delay_ms = num("--delay-ms")?,
            "--jitter-ms" => netem.jitter_ms = num("--jitter-ms")?,
            "--loss-pct" => netem.loss_pct = num("--loss-pct")?,
            "--no-netem" => no_netem = true,
            "--release" => release = true,
            other => bail!("cargo xtask cluster-sim: unknown argument {other:?}\nusage: {USAGE}"),
        }
    }
    if !(2..=1000).contains(&nodes) {
        bail!("--nodes must be 2 to 1000");
    }
    let uid = Command::new("id").arg("-u").output()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        bail!("cluster-sim needs root (network namespaces, veth, tc qdiscs): run it as root");
    }
    crate::setup::ensure_net_tools()?;
    crate::setup::ensure_etcd_tools()?;
    let skynet = crate::skynet::ensure(root)?;
    let bee = crate::run_info::build_bee(root, release)?;

    let swept = net::sweep();
    if swept > 0 {
        eprintln!("cluster-sim: removed {swept} namespaces an earlier run left");
    }
    let netem = if no_netem {
        None
    } else if net::netem_available() {
        Some(netem)
    } else if quick {
        eprintln!(
            "cluster-sim: this kernel has no netem qdisc (sch_netem): the quick run goes on without delay and loss"
        );
        None
    } else {
        bail!(
            "this kernel has no netem qdisc (sch_netem; `tc qdisc add … netem` says the kind is unknown): \
             load the module, or run with --no-netem (no delay, no loss)"
        );
    };
    let dir = crate::run_info::target_dir(root).join("cluster-sim");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    install_signal_sweep();

    let started_at = crate::run_info::utc_minute();
    let t0 = Instant::now();
    let hosts = net::hosts(nodes);
    let net = Net::create(&hosts, netem)?;
    let exe = std::env::current_exe().context("this program's path")?;
    let results = dir.join("results.tsv");
    let mut driver = Command::new("ip");
    driver
        .args(["netns", "exec", &hosts[0].ns()])
        .arg(&exe)
        .arg("cluster-sim-driver")
        .args(["--nodes", &nodes.to_string()])
        .args(["--repeats", &repeats.to_string()])
        .arg("--bee")
        .arg(&bee)
        .arg("--dir")
        .arg(&dir)
        .arg("--root")
        .arg(root)
        .arg("--out")
        .arg(&results)
        .env("SKYNET_DIR", &skynet);
    if quick {
        driver.arg("--quick");
    }
    eprintln!(
        "\n== cluster-sim: {nodes} bee nodes, etcd, 2 stock skynet nodes, {} (logs in {})",
        netem_text(netem.as_ref()),
        dir.display()
    );
    let mut child = driver.spawn().context("cannot start the driver")?;
    // The whole run is bounded: a driver that hangs is killed and the run fails.
    let bound = Duration::from_secs(if quick { 300 } else { 3600 });
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if t0.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(net);
    let took = t0.elapsed();
    let Some(status) = status else {
        bail!(
            "the cluster-sim driver did not finish within {bound:?}; see {}",
            dir.display()
        );
    };
    let text = std::fs::read_to_string(&results).with_context(|| {
        format!(
            "the driver wrote no results ({status}); see the logs in {}",
            dir.display()
        )
    })?;
    let report = Report::from_lines(&text)?;
    let md = format!(
        "Run {started_at} on {} (shared with other builds), command `cargo xtask cluster-sim {}`, \
         {} build of `bee`: {nodes} bee nodes (etcd mode, operator defaults) + 2 stock skynet \
         v1.6.0 nodes + etcd, one network namespace each on one bridge, {}; {repeats} repeats; \
         took {:.0} s.\n\n{}",
        crate::run_info::machine(),
        args.join(" "),
        if release { "release" } else { "debug" },
        netem_text(netem.as_ref()),
        took.as_secs_f64(),
        report.markdown()
    );
    std::fs::write(dir.join("results.md"), &md)?;
    eprintln!(
        "\n== cluster-sim result ({})\n\n{md}",
        dir.join("results.md").display()
    );
    if !quick && report.failures.is_empty() && status.success() {
        let path = root.join("BENCHMARKS.md");
        let mut all = std::fs::read_to_string(&path).unwrap_or_default();
        all.push_str(&format!("\n## Cluster simulation ({started_at})\n\n{md}"));
        std::fs::write(&path, all)?;
        eprintln!("appended to {}", path.display());
    }
    if !report.failures.is_empty() {
        bail!(
            "cluster-sim: {} failed checks (listed above)",
            report.failures.len()
        );
    }
    if !status.success() {
        bail!(
            "the cluster-sim driver failed ({status}); see its error above and {}",
            dir.display()
        );
    }
    Ok(())
}

fn netem_text(n: Option<&Netem>) -> String {
    match n {
        Some(n) => format!(
            "netem delay {} ms ± {} ms, loss {} % on every interface",
            n.delay_ms, n.jitter_ms, n.loss_pct
        ),
        None => "no netem (no delay, no loss)".into(),
    }
}

/// On Ctrl-C or SIGTERM: remove every namespace (and process in it), then exit.
fn install_signal_sweep() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("\ncluster-sim: interrupted; cleaning up");
            let n = net::sweep();
            eprintln!("cluster-sim: removed {n} network namespaces and everything in them");
            std::process::exit(130);
        });
    });
}

/// `xtask cluster-sim-driver …` (run by `cluster-sim` inside the driver's namespace).
pub fn driver_main(args: &[String]) -> Result<()> {
    let mut opts = driver::Opts {
        nodes: 10,
        repeats: 1,
        quick: false,
        bee: PathBuf::new(),
        root: PathBuf::new(),
        dir: PathBuf::new(),
    };
    let mut out = PathBuf::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .with_context(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--nodes" => opts.nodes = val()?.parse()?,
            "--repeats" => opts.repeats = val()?.parse()?,
            "--bee" => opts.bee = val()?.into(),
            "--root" => opts.root = val()?.into(),
            "--dir" => opts.dir = val()?.into(),
            "--out" => out = val()?.into(),
            "--quick" => opts.quick = true,
            other => bail!("cluster-sim-driver: unknown argument {other:?}"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut report = Report::default();
    let result = rt.block_on(driver::run(opts, &mut report));
    if let Err(e) = &result {
        // What was measured before the error is kept; the error is a failed check.
        report.fail(format!("the run stopped: {e:#}"));
    }
    std::fs::write(&out, report.to_lines())?;
    result
}
