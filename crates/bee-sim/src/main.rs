//! `bee-sim`: bee at cluster scale (what `cargo xtask cluster-sim` runs).
//!
//! `bee-sim run [--quick] [--nodes N] [--repeats R] [--delay-ms D] [--jitter-ms J]
//! [--loss-pct L] [--no-netem] [--only S,S] --bee BEE --skynet TREE --root REPO --dir DIR`: N bee nodes
//! (default 50; `--quick`: 10) each in its own network namespace on one bridge, with a
//! delay of 1 ms ± 0.2 ms and 0.1 % loss on every packet between hosts, an etcd and two
//! stock skynet v1.6.0 nodes, the scenarios of [`driver`]; writes `DIR/summary.md` (what
//! ran and the table) and exits non-zero on a failed check.
//!
//! Needs root (namespaces, veth, iptables, qdiscs) and makes nothing outside the
//! namespaces it creates (all named `beesim-…`): the bridge lives in a namespace of its
//! own. They are removed with every process in them at the end, on an error, on a panic
//! and on Ctrl-C/SIGTERM; a run first removes what an interrupted earlier one left.
//!
//! Delay and loss come from `tc netem` on every host's interface when the kernel has it;
//! without it (no `sch_netem`) from [`shaper`]: the bridge's forwarded packets pass
//! through an NFQUEUE that holds each one for the delay and drops the lost ones. With
//! neither, the full run stops and says so (`--no-netem` runs without delay and loss);
//! `--quick` goes on without them and says so. The run fails on a hung call, a lost or
//! duplicated push or a missing ack, never on a figure. `--only partition,hub` runs the
//! cold start and then only the named scenarios (see [`driver::SCENARIOS`]): for working
//! on one figure; such a run is a partial table.

mod driver;
mod net;
mod nfqueue;
mod report;
mod shaper;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use net::{Net, Netem};
use report::Report;

const USAGE: &str = "bee-sim run [--quick] [--nodes N] [--repeats R] [--delay-ms D] [--jitter-ms J] [--loss-pct L] [--no-netem] [--only S,S] --bee BEE --skynet TREE --root REPO --dir DIR";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => run(&args[1..]),
        // The scenarios, run by `run` inside the driver's namespace.
        Some("driver") => driver_main(&args[1..]),
        // The delay-and-loss queue, run by `run` inside the bridge's namespace.
        Some("shaper") => shaper::main(&args[1..]),
        _ => Err(anyhow::anyhow!("usage: {USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bee-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `bee-sim run`: see the module doc.
fn run(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let mut nodes = if quick { 10 } else { 50 };
    let mut repeats = 3usize;
    let mut netem = Netem {
        delay_ms: 1.0,
        jitter_ms: 0.2,
        loss_pct: 0.1,
    };
    let mut no_netem = false;
    let mut only = String::new();
    let (mut bee, mut skynet, mut root, mut dir) = (
        PathBuf::new(),
        PathBuf::new(),
        PathBuf::new(),
        PathBuf::new(),
    );
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
            "--only" => {
                only = it.next().cloned().unwrap_or_default();
                for s in only.split(',') {
                    if !driver::SCENARIOS.contains(&s) {
                        bail!(
                            "--only takes scenarios of {:?}, not {s:?}\nusage: {USAGE}",
                            driver::SCENARIOS
                        );
                    }
                }
            }
            "--bee" | "--skynet" | "--root" | "--dir" => {
                let v = it
                    .next()
                    .map(PathBuf::from)
                    .with_context(|| format!("{a} needs a path\nusage: {USAGE}"))?;
                match a.as_str() {
                    "--bee" => bee = v,
                    "--skynet" => skynet = v,
                    "--root" => root = v,
                    _ => dir = v,
                }
            }
            other => bail!("unknown argument {other:?}\nusage: {USAGE}"),
        }
    }
    if !(2..=1000).contains(&nodes) {
        bail!("--nodes must be 2 to 1000");
    }
    for (flag, p) in [
        ("--bee", &bee),
        ("--skynet", &skynet),
        ("--root", &root),
        ("--dir", &dir),
    ] {
        if p.as_os_str().is_empty() {
            bail!("{flag} is required\nusage: {USAGE}");
        }
    }

    let swept = net::sweep();
    if swept > 0 {
        eprintln!("cluster-sim: removed {swept} namespaces an earlier run left");
    }
    let shaping = if no_netem {
        None
    } else if net::netem_available() {
        Some(Shaping::Netem(netem))
    } else if shaper::available() {
        Some(Shaping::Queue(netem))
    } else if quick {
        eprintln!(
            "cluster-sim: this kernel has neither the netem qdisc (sch_netem) nor NFQUEUE: \
             the quick run goes on without delay and loss"
        );
        None
    } else {
        bail!(
            "this kernel has neither the netem qdisc (sch_netem) nor NFQUEUE with iptables, so \
             no delay or loss can be added: run with --no-netem (no delay, no loss)"
        );
    };
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    install_signal_sweep();

    let t0 = Instant::now();
    let hosts = net::hosts(nodes);
    let net = Net::create(&hosts, shaping.as_ref().and_then(Shaping::netem))?;
    let _shaper = match &shaping {
        Some(Shaping::Queue(n)) => Some(shaper::start(n, &dir)?),
        _ => None,
    };
    let exe = std::env::current_exe().context("this program's path")?;
    let results = dir.join("results.tsv");
    let mut driver = Command::new("ip");
    driver
        .args(["netns", "exec", &hosts[0].ns()])
        .arg(&exe)
        .arg("driver")
        .args(["--nodes", &nodes.to_string()])
        .args(["--repeats", &repeats.to_string()])
        .arg("--bee")
        .arg(&bee)
        .arg("--dir")
        .arg(&dir)
        .arg("--root")
        .arg(&root)
        .arg("--out")
        .arg(&results)
        .env("SKYNET_DIR", &skynet);
    if quick {
        driver.arg("--quick");
    }
    if !only.is_empty() {
        driver.args(["--only", &only]);
    }
    eprintln!(
        "\n== cluster-sim: {nodes} bee nodes, etcd, 2 stock skynet nodes, {} (logs in {})",
        shaping_text(shaping.as_ref()),
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
    let shaped = _shaper.map(|s| s.stop());
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
    let summary = format!(
        "{nodes} bee nodes (etcd mode, operator defaults) + 2 stock skynet v1.6.0 nodes + \
         etcd, one network namespace each on one bridge, {}; {repeats} repeats; took {:.0} s.{}\n\n{}",
        shaping_text(shaping.as_ref()),
        took.as_secs_f64(),
        shaped.map(|s| format!(" {s}")).unwrap_or_default(),
        report.markdown()
    );
    std::fs::write(dir.join("summary.md"), &summary)?;
    if !report.failures.is_empty() {
        bail!(
            "cluster-sim: {} failed checks (listed in the table)",
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

/// How delay and loss are added, when they are.
enum Shaping {
    /// `tc netem` on every host's interface.
    Netem(Netem),
    /// The bridge's NFQUEUE ([`shaper`]).
    Queue(Netem),
}

impl Shaping {
    fn netem(&self) -> Option<Netem> {
        match self {
            Shaping::Netem(n) => Some(*n),
            Shaping::Queue(_) => None,
        }
    }
}

fn shaping_text(s: Option<&Shaping>) -> String {
    match s {
        Some(Shaping::Netem(n)) => format!(
            "netem delay {} ms ± {} ms, loss {} % on every interface",
            n.delay_ms, n.jitter_ms, n.loss_pct
        ),
        Some(Shaping::Queue(n)) => format!(
            "delay {} ms ± {} ms and loss {} % on every packet crossing the bridge \
             (NFQUEUE shaper: this kernel has no netem)",
            n.delay_ms, n.jitter_ms, n.loss_pct
        ),
        None => "no delay, no loss".into(),
    }
}

/// On Ctrl-C or SIGTERM: remove every namespace (and process in it), then exit.
fn install_signal_sweep() {
    on_signal(true, || {
        eprintln!("\ncluster-sim: interrupted; cleaning up");
        let n = net::sweep();
        eprintln!("cluster-sim: removed {n} network namespaces and everything in them");
        std::process::exit(130);
    });
}

/// Run `then` on a thread of its own once SIGTERM (or, with `ctrl_c`, SIGINT) comes.
fn on_signal(ctrl_c: bool, then: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        let came = rt.block_on(async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return false;
            };
            if ctrl_c {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            } else {
                term.recv().await;
            }
            true
        });
        if came {
            then();
        }
    });
}

/// `bee-sim driver …` (run by `bee-sim run` inside the driver's namespace).
fn driver_main(args: &[String]) -> Result<()> {
    let mut opts = driver::Opts {
        nodes: 10,
        repeats: 1,
        quick: false,
        bee: PathBuf::new(),
        root: PathBuf::new(),
        dir: PathBuf::new(),
        only: Vec::new(),
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
            "--only" => opts.only = val()?.split(',').map(str::to_string).collect(),
            other => bail!("bee-sim driver: unknown argument {other:?}"),
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
