//! `cargo xtask stress TEST… --runs N [--hog] [--secs S]`: run timing-sensitive
//! integration tests again and again — optionally beside a CPU hog — and report every
//! failure with its output.
//!
//! A TEST is `FILE` (every test of `tests/tests/FILE.rs`) or `FILE::NAME` (the tests of
//! that file whose name contains NAME). The test binaries and the node binaries are built
//! once; then each run executes every selected test once, alone (`--exact
//! --test-threads 1`, the nodes' logs at `BEE_LOG`, default `debug`), in the order given.
//! `--hog` keeps one busy loop per CPU spinning meanwhile, so the tests' processes
//! compete for the cores as they do in a loaded CI run. `--secs S` ends the series after
//! S seconds (the runs done are reported). A failed test's whole output is kept in
//! `target/stress/` and its panic lines are printed; the exit status is non-zero if any
//! run failed.
//!
//! `cargo xtask ci` runs a short round ([`ci_round`]) of the drain, handover,
//! ride-through and native tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The tests of CI's stress round: restarts, handovers and cuts under load, and the
/// native send to a freshly started node.
const CI_TESTS: &[&str] = &[
    "drain",
    "handover::three_handovers_under_load",
    "ride_through",
    "native_cluster::native_send_via_cservice_proxy_reaches_remote",
];
/// Runs of each test in CI's round (beside a hog), and the time it may take at most.
const CI_RUNS: usize = 5;
const CI_SECS: u64 = 240;

/// `cargo xtask stress …` (arguments after `stress`).
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut tests = Vec::new();
    let mut runs = 20usize;
    let mut hog = false;
    let mut secs = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => runs = number(it.next(), "--runs")?,
            "--secs" => secs = Some(number(it.next(), "--secs")? as u64),
            "--hog" => hog = true,
            flag if flag.starts_with("--") => bail!("stress: unknown option {flag}\n{USAGE}"),
            test => tests.push(test.to_string()),
        }
    }
    if tests.is_empty() || runs == 0 {
        bail!("stress: name at least one test and a number of runs above 0\n{USAGE}");
    }
    let tests: Vec<&str> = tests.iter().map(String::as_str).collect();
    stress(root, &tests, runs, hog, secs.map(Duration::from_secs))
}

const USAGE: &str =
    "usage: cargo xtask stress FILE[::NAME]... --runs N [--hog] [--secs S]  (e.g. drain::ride_through --runs 200 --hog)";

/// CI's short stress round: [`CI_TESTS`], [`CI_RUNS`] runs each beside a hog, at most
/// [`CI_SECS`] seconds.
pub fn ci_round(root: &Path) -> Result<()> {
    eprintln!(
        "\n== stress round: {} runs of the drain, handover, ride-through and native tests beside a CPU hog (at most {CI_SECS} s)",
        CI_RUNS
    );
    stress(
        root,
        CI_TESTS,
        CI_RUNS,
        true,
        Some(Duration::from_secs(CI_SECS)),
    )
}

fn number(v: Option<&String>, flag: &str) -> Result<usize> {
    v.with_context(|| format!("{flag} needs a number"))?
        .parse()
        .with_context(|| format!("{flag} needs a number"))
}

/// One selected test: its binary and full name.
struct Selected {
    bin: PathBuf,
    file: String,
    name: String,
    passed: usize,
    failed: Vec<PathBuf>,
}

fn stress(
    root: &Path,
    specs: &[&str],
    runs: usize,
    hog: bool,
    budget: Option<Duration>,
) -> Result<()> {
    let mut selected = select(root, specs)?;
    // The node binaries the tests start (each test process would otherwise build them
    // on its first run, inside the timing).
    crate::step(
        "node binaries",
        crate::cargo().args(["build", "-q", "-p", "bee-node", "-p", "bee-demo", "--bins"]),
    )?;
    let logs = root.join("target/stress");
    std::fs::create_dir_all(&logs).with_context(|| format!("create {}", logs.display()))?;
    let _hog = hog.then(Hog::start);
    eprintln!(
        "stress: {} test(s), {runs} run(s){}{}:",
        selected.len(),
        if hog { " beside a CPU hog" } else { "" },
        budget.map_or(String::new(), |b| format!(", at most {} s", b.as_secs()))
    );
    for t in &selected {
        eprintln!("  {}::{}", t.file, t.name);
    }
    let t0 = Instant::now();
    let mut done = 0;
    'runs: for run in 1..=runs {
        for t in selected.iter_mut() {
            if budget.is_some_and(|b| t0.elapsed() >= b) {
                eprintln!("stress: time is up after {} s", t0.elapsed().as_secs());
                break 'runs;
            }
            let out = Command::new(&t.bin)
                .args([
                    t.name.as_str(),
                    "--exact",
                    "--test-threads",
                    "1",
                    "--nocapture",
                ])
                .env(
                    "BEE_LOG",
                    std::env::var("BEE_LOG").unwrap_or_else(|_| "debug".into()),
                )
                // Built above: the test does not run cargo itself (which would wait
                // for any other cargo using the target directory, inside the timing).
                .env("BEE_TEST_PREBUILT", "1")
                .current_dir(root.join("tests"))
                .stdin(Stdio::null())
                .output()
                .with_context(|| format!("cannot run {}", t.bin.display()))?;
            if out.status.success() {
                t.passed += 1;
                continue;
            }
            let path = logs.join(format!("{}-{}-run{run}.log", t.file, t.name));
            let mut text = out.stdout;
            text.extend_from_slice(&out.stderr);
            std::fs::write(&path, &text).with_context(|| format!("write {}", path.display()))?;
            let text = String::from_utf8_lossy(&text);
            eprintln!(
                "stress: run {run}: {}::{} FAILED ({}); output in {}",
                t.file,
                t.name,
                out.status,
                path.display()
            );
            for line in panic_lines(&text) {
                eprintln!("    {line}");
            }
            t.failed.push(path);
        }
        done = run;
        if run % 10 == 0 || run == runs {
            let failed: usize = selected.iter().map(|t| t.failed.len()).sum();
            eprintln!(
                "stress: {run}/{runs} runs, {failed} failure(s), {} s",
                t0.elapsed().as_secs()
            );
        }
    }
    eprintln!(
        "\nstress summary ({done} full run(s) in {} s{}):",
        t0.elapsed().as_secs(),
        if hog { ", beside a CPU hog" } else { "" }
    );
    let mut failures = 0;
    for t in &selected {
        let runs = t.passed + t.failed.len();
        eprintln!(
            "  {:<70} {:>4} runs {:>4} passed {:>3} failed",
            format!("{}::{}", t.file, t.name),
            runs,
            t.passed,
            t.failed.len()
        );
        for f in &t.failed {
            eprintln!("      {}", f.display());
        }
        failures += t.failed.len();
    }
    if failures > 0 {
        bail!(
            "stress: {failures} failed run(s); their output is in {}",
            logs.display()
        );
    }
    Ok(())
}

/// The panic message and assertion lines of a failed test's output.
fn panic_lines(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.contains("panicked at") {
            out.extend(lines[i..].iter().take(4));
        }
    }
    out.truncate(12);
    out
}

/// Build the test binaries of the files named in `specs` and list the tests selected.
fn select(root: &Path, specs: &[&str]) -> Result<Vec<Selected>> {
    let mut files: Vec<&str> = specs
        .iter()
        .map(|s| s.split("::").next().unwrap_or(s))
        .collect();
    files.dedup();
    let mut build = crate::cargo();
    build.args([
        "test",
        "-p",
        "bee-tests",
        "--no-run",
        "--message-format=json",
    ]);
    for f in &files {
        build.args(["--test", f]);
    }
    eprintln!("\n== test binaries: {build:?}");
    let out = build
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the test binaries failed ({})", out.status);
    }
    let json = String::from_utf8_lossy(&out.stdout);
    let mut selected = Vec::new();
    for spec in specs {
        let (file, name) = spec.split_once("::").unwrap_or((spec, ""));
        let bin = executable(&json, file)
            .with_context(|| format!("no test binary for tests/tests/{file}.rs"))?;
        let list = Command::new(&bin)
            .args(["--list", "--format", "terse"])
            .output()
            .with_context(|| format!("cannot list the tests of {}", bin.display()))?;
        let names: Vec<String> = String::from_utf8_lossy(&list.stdout)
            .lines()
            .filter_map(|l| l.strip_suffix(": test"))
            .filter(|n| n.contains(name))
            .map(str::to_string)
            .collect();
        if names.is_empty() {
            bail!("no test of tests/tests/{file}.rs matches {name:?}");
        }
        for name in names {
            selected.push(Selected {
                bin: bin.clone(),
                file: file.to_string(),
                name,
                passed: 0,
                failed: Vec::new(),
            });
        }
    }
    Ok(selected)
}

/// The executable cargo reported for the integration test `file` (one JSON message a
/// line: `{"reason":"compiler-artifact",…,"target":{…"name":"drain"…},…,"executable":"…"}`).
fn executable(json: &str, file: &str) -> Option<PathBuf> {
    let name = format!("\"name\":\"{file}\"");
    json.lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\"") && l.contains(&name))
        .filter(|l| l.contains("\"kind\":[\"test\"]"))
        .find_map(|l| {
            let rest = l.split("\"executable\":\"").nth(1)?;
            Some(PathBuf::from(rest.split('"').next()?))
        })
}

/// One busy loop per CPU, spinning until dropped.
struct Hog {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Hog {
    fn start() -> Hog {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        Hog { stop, threads }
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
