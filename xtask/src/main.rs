//! `cargo xtask` — the project's automation, one subcommand per job:
//!
//! - `cargo xtask demo`: set up (MariaDB), build, start the demo cluster and walk through
//!   every scenario, printing a transcript; exits 0 only if every scenario passed.
//! - `cargo xtask ci`: set up, build stock skynet, then formatting, lints and the whole
//!   test suite, the skynet interop tests included (what `.ci/run` calls).
//! - `cargo xtask skynet`: build stock skynet v1.6.0 under `target/skynet/` (a test peer)
//!   and print where it is.
//! - `cargo xtask bench`: the benchmarks whose figures go in `BENCHMARKS.md`.
//! - `cargo xtask bench-chart [TABLE.md]`: draw `bench/chart.svg` from a recorded results
//!   table (default: the summary in `BENCHMARKS.md`).
//! - `cargo xtask fuzz [TARGET] [--secs N]`: run the codec fuzz targets.
//! - `cargo xtask layers`: fail on a crate dependency the layering does not allow, or an
//!   import cycle between the modules of any crate.
//! - `cargo xtask cpp [--asan]`: build the C/C++ service modules (`cservices/`).
//! - `cargo xtask soak [--secs N] [--warmup N] [--overload-secs N] [--overload-only]`:
//!   two nodes under mixed load for 10 minutes (or N s), then nodes loaded far past their
//!   budgets (75 s, or N), memory sampled every second (not in CI).
//! - `cargo xtask status-bench [--nodes N] [--secs S]`: what the status page costs on a
//!   cluster of N nodes (load time, CPU while open; not in CI).
//! - `cargo xtask stress TEST… --runs N [--hog] [--secs S]`: run timing-sensitive tests
//!   again and again beside a CPU hog and report the failures with their output (CI
//!   runs a short round).
//! - `cargo xtask cluster-sim [--quick] [--nodes N]`: N bee nodes (default 50), etcd and
//!   two stock skynet nodes in network namespaces with delay and loss (netem, or an
//!   NFQUEUE shaper on kernels without it; `crates/bee-sim`); scenarios
//!   with p50/p99 (root; `--quick` runs in CI).

mod bench;
mod chart;
mod cpp;
mod demo;
mod demo_lua;
mod fuzz;
mod layers;
mod process;
mod run_info;
mod setup;
mod sim;
mod skynet;
mod soak;
mod soak_overload;
mod status_bench;
mod stress;

use std::process::Command;

use anyhow::{bail, Context, Result};

fn main() {
    if let Err(e) = run() {
        // One readable line with its causes; a backtrace would only hide it.
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = project_root();
    std::env::set_current_dir(&root).with_context(|| format!("cannot enter {}", root.display()))?;
    match args.first().map(String::as_str) {
        Some("bench") => bench::run(&root, &args[1..]),
        Some("bench-chart") => chart::run(&root, &args[1..]),
        Some("demo") => demo::run(&root),
        Some("ci") => ci(),
        Some("setup") => setup::ensure_all(),
        Some("skynet") => skynet::run(&root),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("layers") => layers::run(&root),
        Some("soak") => soak::run(&root, &args[1..]),
        Some("status-bench") => status_bench::run(&root, &args[1..]),
        Some("stress") => stress::run(&root, &args[1..]),
        Some("cluster-sim") => sim::run(&root, &args[1..]),
        // The soak's load client, run from the release build by `soak`.
        Some("soak-client") => soak::client(&args[1..]),
        // The overload phase's load client, run from the release build by `soak`.
        Some("soak-overload-client") => soak_overload::client(&args[1..]),
        Some("cpp") => {
            let dir = cpp::build(&root, args.iter().any(|a| a == "--asan"))?;
            eprintln!("C/C++ modules built in {}", dir.display());
            Ok(())
        }
        Some(other) => bail!("unknown xtask {other:?}\n{USAGE}"),
        None => {
            eprintln!("{USAGE}");
            Ok(())
        }
    }
}

const USAGE: &str = "usage: cargo xtask <demo | ci | setup | skynet | layers | cpp [--asan] | bench [--quick] [--no-skynet] | bench-chart [TABLE.md] | soak [--secs N] [--warmup N] [--overload-secs N] [--overload-only] | status-bench [--nodes N] [--secs S] [--release] | stress TEST... --runs N [--hog] [--secs S] | cluster-sim [--quick] [--nodes N] [--repeats R] [--no-netem] [--release] | fuzz [TARGET|all] [--secs N] [--jobs J] [--repro FILE]>";

fn project_root() -> std::path::PathBuf {
    let manifest = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or(manifest)
}

/// Run a command, failing with its name when it fails.
pub(crate) fn step(name: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("\n== {name}: {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("{name}: cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(())
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The whole test suite: setup, stock skynet (built or found), formatting, lints, doc
/// tests, the C/C++ tests, the benchmarks' smoke run with the skynet columns, a short
/// stress round of the timing-sensitive tests beside a CPU hog, then every test with
/// nextest, the skynet interop tests included (its summary line ends the output).
fn ci() -> Result<()> {
    setup::ensure_all()?;
    // Stock skynet first: the interop tests and the benchmarks' skynet columns need it,
    // and a CI run without it fails here with where it was looked for.
    eprintln!("\n== stock skynet v1.6.0: cargo xtask skynet");
    let skynet = skynet::ensure(&project_root())?;
    step("format", cargo().args(["fmt", "--all", "--check"]))?;
    eprintln!("\n== layers");
    layers::run(&project_root())?;
    step(
        "lints",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    // An embedder's bee-node: without etcd, MySQL and the C host.
    step(
        "lints, bee-node without default features",
        cargo().args([
            "clippy",
            "-p",
            "bee-node",
            "--no-default-features",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    step(
        "doc tests",
        cargo().args(["test", "--workspace", "--doc", "-q"]),
    )?;
    eprintln!("\n== C/C++: headers, SDK frame test and modules under ASan/UBSan");
    cpp::test(&project_root())?;
    // A smoke test of the benchmarks (release build): fails on a wrong reply, a failed
    // call or a lost push, never on speed.
    eprintln!("\n== benchmark smoke test: cargo xtask bench --quick");
    bench::run(&project_root(), &["--quick".to_string()])?;
    // Ten nodes in network namespaces (root): fails on a hung call, a lost or doubled
    // push or a missing ack, never on speed.
    eprintln!("\n== cluster simulation: cargo xtask cluster-sim --quick");
    sim::run(&project_root(), &["--quick".to_string()])?;
    // Timing-sensitive tests again and again beside a CPU hog (a few minutes at most);
    // its verdict is given after the full run so that nextest's summary ends the output.
    let stress = stress::ci_round(&project_root());
    step(
        "tests",
        cargo()
            .args(["nextest", "run", "--workspace", "--no-fail-fast"])
            .env("SKYNET_DIR", &skynet),
    )?;
    stress
}

/// `apt-get update` then `apt-get install -y` of `packages`, failing with a line that says
/// what to install by hand.
pub(crate) fn apt_install(packages: &[&str]) -> Result<()> {
    eprintln!(
        "setup: installing the Debian packages {}",
        packages.join(" ")
    );
    if !Command::new("apt-get")
        .arg("update")
        .arg("-q")
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
    {
        bail!(
            "apt-get update failed; install {} by hand and retry",
            packages.join(" ")
        );
    }
    if !Command::new("apt-get")
        .args(["install", "-y", "-q"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
    {
        bail!(
            "apt-get install {} failed; install it by hand and retry",
            packages.join(" ")
        );
    }
    Ok(())
}

/// The checked-out commit, short (`unknown` outside a git checkout).
pub(crate) fn git_head(root: &std::path::Path) -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}
