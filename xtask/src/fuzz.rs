//! `cargo xtask fuzz`: build bee-codec's fuzz targets (the separate `fuzz/` crate) with
//! libFuzzer coverage instrumentation on stable Rust, run them, and report per target the
//! executions, coverage and crashes.
//!
//! No cargo-fuzz needed: the crate is built with plain `cargo build --release` and the
//! sanitizer-coverage flags in [`RUSTFLAGS`], for an explicit `--target` so that build
//! scripts and proc macros stay uninstrumented. Each target runs as
//! `fuzz/target/<host>/release/<target> fuzz/corpus/<target> fuzz/seeds/<target>`: the
//! corpus directory (gitignored) collects what libFuzzer finds, the committed seeds are
//! read as extra starting inputs, crashing inputs go to `fuzz/artifacts/<target>/` and the
//! whole libFuzzer output to `fuzz/target/fuzz-logs/<target>.log`. See docs/fuzzing.md.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// Every fuzz target, in the order `all` runs them (the `[[bin]]`s of fuzz/Cargo.toml).
const TARGETS: &[&str] = &[
    "frame",
    "seri",
    "cluster_request",
    "cluster_response",
    "kkt",
];

/// Coverage instrumentation libFuzzer needs, available on stable rustc.
const RUSTFLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing -Cdebug-assertions -Coverflow-checks";

const USAGE: &str = "usage: cargo xtask fuzz [TARGET|all] [--secs N] [--jobs J] [--repro FILE] [-- LIBFUZZER_ARGS...]
  TARGET   one of: frame seri cluster_request cluster_response kkt (default: all)
  --secs   seconds per target (default 60)
  --jobs   targets run at once (default 1)
  --repro  run TARGET once on FILE (e.g. a crash artifact) and show its panic";

/// What the command line asked for.
#[derive(Debug)]
struct Options {
    targets: Vec<&'static str>,
    secs: u64,
    jobs: usize,
    repro: Option<PathBuf>,
    extra: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut opts = Options {
        targets: TARGETS.to_vec(),
        secs: 60,
        jobs: 1,
        repro: None,
        extra: Vec::new(),
    };
    let mut chosen = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .with_context(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--secs" => {
                let v = value("--secs")?;
                opts.secs = v.parse().ok().filter(|&s| s > 0).with_context(|| {
                    format!("--secs {v:?}: expected a whole number of seconds above 0")
                })?;
            }
            "--jobs" => {
                let v = value("--jobs")?;
                opts.jobs = v
                    .parse()
                    .ok()
                    .filter(|&j| j > 0)
                    .with_context(|| format!("--jobs {v:?}: expected a number above 0"))?;
            }
            "--repro" => opts.repro = Some(PathBuf::from(value("--repro")?)),
            "-h" | "--help" => bail!("{USAGE}"),
            "--" => {
                opts.extra = it.by_ref().cloned().collect();
            }
            "all" if chosen.is_none() => chosen = Some(TARGETS.to_vec()),
            name if !name.starts_with('-') && chosen.is_none() => {
                let Some(t) = TARGETS.iter().find(|t| **t == name) else {
                    bail!("unknown fuzz target {name:?}\n{USAGE}");
                };
                chosen = Some(vec![*t]);
            }
            other => bail!("unexpected argument {other:?}\n{USAGE}"),
        }
    }
    if let Some(targets) = chosen {
        opts.targets = targets;
    }
    if opts.repro.is_some() && opts.targets.len() != 1 {
        bail!("--repro needs exactly one TARGET (the one whose artifact it is)\n{USAGE}");
    }
    Ok(opts)
}

/// Entry point: `args` are the words after `fuzz`.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let opts = parse(args)?;
    let fuzz_dir = std::env::current_dir()?.join("fuzz");
    let triple = host_triple()?;
    build(&fuzz_dir, &triple, &opts.targets)?;
    let bin_dir = fuzz_dir.join("target").join(&triple).join("release");

    if let Some(file) = &opts.repro {
        return repro(&bin_dir, opts.targets[0], file, &opts.extra);
    }

    let log_dir = fuzz_dir.join("target").join("fuzz-logs");
    fs::create_dir_all(&log_dir).with_context(|| format!("cannot create {}", log_dir.display()))?;
    eprintln!(
        "\n== fuzzing {} target(s), {} s each, {} at a time (logs in {})",
        opts.targets.len(),
        opts.secs,
        opts.jobs,
        log_dir.display()
    );

    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Result<Stats>)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..opts.jobs.min(opts.targets.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&target) = opts.targets.get(i) else {
                    break;
                };
                eprintln!("-- {target}: started");
                let result = fuzz_one(&fuzz_dir, &bin_dir, &log_dir, target, &opts);
                match &result {
                    Ok(stats) => eprintln!("-- {}", stats.line()),
                    Err(e) => eprintln!("-- {target}: {e:#}"),
                }
                results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((i, result));
            });
        }
    });

    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(i, _)| *i);
    println!("\n| target | seconds | executions | exec/s | coverage (cov) | features (ft) | corpus | crashes |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut failures = Vec::new();
    for (i, result) in results {
        match result {
            Ok(stats) => {
                println!("{}", stats.row());
                if let Some(artifact) = &stats.artifact {
                    failures.push(format!(
                        "{}: crash saved to {} (log {}); reproduce with `cargo xtask fuzz {} --repro {}`",
                        stats.target,
                        artifact.display(),
                        stats.log.display(),
                        stats.target,
                        artifact.display()
                    ));
                }
            }
            Err(e) => {
                println!("| {} | failed to run | | | | | | |", opts.targets[i]);
                failures.push(format!("{}: {e:#}", opts.targets[i]));
            }
        }
    }
    if !failures.is_empty() {
        bail!("fuzzing found problems:\n  {}", failures.join("\n  "));
    }
    println!("\nno crashes");
    Ok(())
}

/// The host's target triple, from `rustc -vV`.
fn host_triple() -> Result<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&rustc)
        .arg("-vV")
        .output()
        .with_context(|| format!("cannot run {rustc} -vV"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|h| h.trim().to_string())
        .with_context(|| format!("no `host:` line in the output of {rustc} -vV"))
}

/// Build the chosen targets with coverage instrumentation into fuzz/target.
fn build(fuzz_dir: &Path, triple: &str, targets: &[&str]) -> Result<()> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(fuzz_dir)
        .args([
            "build",
            "--release",
            "--target",
            triple,
            "--target-dir",
            "target",
        ])
        .env("RUSTFLAGS", RUSTFLAGS)
        // Would take precedence over RUSTFLAGS if inherited from an outer cargo.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS");
    for t in targets {
        cmd.args(["--bin", t]);
    }
    eprintln!("== building fuzz targets: {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!(
            "building the fuzz targets failed ({status}); the compiler output above says why.\n\
             Notes: the fuzz crate is {}/Cargo.toml (its own workspace, built with the flags \
             above); libfuzzer-sys compiles libFuzzer from C++ source, so a C++ compiler (g++) \
             must be installed.",
            fuzz_dir.display()
        );
    }
    Ok(())
}

/// Run one target once on `file` with its output shown, for reproducing a crash.
fn repro(bin_dir: &Path, target: &str, file: &Path, extra: &[String]) -> Result<()> {
    if !file.is_file() {
        bail!("--repro {}: no such file", file.display());
    }
    let bin = bin_dir.join(target);
    let status = Command::new(&bin)
        .arg(file)
        .args(extra)
        .status()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    if status.success() {
        println!("{target} ran {} without a crash", file.display());
        Ok(())
    } else {
        bail!(
            "{target} crashed on {} ({status}); the panic message is above",
            file.display()
        )
    }
}

/// What one libFuzzer run reported.
#[derive(Debug)]
struct Stats {
    target: &'static str,
    seconds: f64,
    executions: u64,
    exec_per_sec: u64,
    cov: u64,
    ft: u64,
    corpus: u64,
    artifact: Option<PathBuf>,
    log: PathBuf,
}

impl Stats {
    fn crashes(&self) -> u32 {
        u32::from(self.artifact.is_some())
    }

    fn line(&self) -> String {
        format!(
            "{}: {:.0} s, {} executions ({} exec/s), cov {}, ft {}, corpus {}, crashes {}",
            self.target,
            self.seconds,
            self.executions,
            self.exec_per_sec,
            self.cov,
            self.ft,
            self.corpus,
            self.crashes()
        )
    }

    fn row(&self) -> String {
        format!(
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            self.target,
            self.seconds,
            self.executions,
            self.exec_per_sec,
            self.cov,
            self.ft,
            self.corpus,
            self.crashes()
        )
    }
}

/// Fuzz one target for `opts.secs` seconds and read its statistics from the log.
fn fuzz_one(
    fuzz_dir: &Path,
    bin_dir: &Path,
    log_dir: &Path,
    target: &'static str,
    opts: &Options,
) -> Result<Stats> {
    let bin = bin_dir.join(target);
    let corpus = fuzz_dir.join("corpus").join(target);
    let seeds = fuzz_dir.join("seeds").join(target);
    let artifacts = fuzz_dir.join("artifacts").join(target);
    for dir in [&corpus, &artifacts] {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let log_path = log_dir.join(format!("{target}.log"));
    let log = fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut cmd = Command::new(&bin);
    cmd.arg(&corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg(format!("-max_total_time={}", opts.secs))
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .args(&opts.extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let seconds = start.elapsed().as_secs_f64();
    let text = fs::read_to_string(&log_path)
        .with_context(|| format!("cannot read {}", log_path.display()))?;
    let stats = parse_log(target, &text, seconds, log_path.clone());
    if !status.success() && stats.artifact.is_none() {
        bail!(
            "exited with {status} without writing a crash artifact; see {}",
            log_path.display()
        );
    }
    if seconds + 5.0 < opts.secs as f64 && stats.artifact.is_none() {
        bail!(
            "stopped after {seconds:.0} s instead of {} s; see {}",
            opts.secs,
            log_path.display()
        );
    }
    Ok(stats)
}

/// Read libFuzzer's output: the last `cov:`/`ft:`/`corp:` status line, the
/// `-print_final_stats` block and any "Test unit written to" line.
fn parse_log(target: &'static str, text: &str, seconds: f64, log: PathBuf) -> Stats {
    let mut stats = Stats {
        target,
        seconds,
        executions: 0,
        exec_per_sec: 0,
        cov: 0,
        ft: 0,
        corpus: 0,
        artifact: None,
        log,
    };
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("stat::number_of_executed_units:") {
            stats.executions = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("stat::average_exec_per_sec:") {
            stats.exec_per_sec = v.trim().parse().unwrap_or(0);
        } else if let Some((_, path)) = line.split_once("Test unit written to ") {
            stats.artifact = Some(PathBuf::from(path.trim()));
        } else if line.starts_with('#') && line.contains(" cov: ") {
            stats.cov = field(line, "cov:").unwrap_or(stats.cov);
            stats.ft = field(line, "ft:").unwrap_or(stats.ft);
            stats.corpus = field(line, "corp:").unwrap_or(stats.corpus);
        }
    }
    if stats.exec_per_sec == 0 && seconds > 0.0 {
        stats.exec_per_sec = (stats.executions as f64 / seconds) as u64;
    }
    stats
}

/// The number after `name` in a libFuzzer status line (`corp: 12/3Kb` gives 12).
fn field(line: &str, name: &str) -> Option<u64> {
    let rest = line.split_once(name)?.1.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn parses_options() {
        let o = parse(&args(&[])).unwrap();
        assert_eq!((o.targets.len(), o.secs, o.jobs), (TARGETS.len(), 60, 1));
        let o = parse(&args(&[
            "seri",
            "--secs",
            "5",
            "--jobs",
            "2",
            "--",
            "-max_len=64",
        ]))
        .unwrap();
        assert_eq!(o.targets, vec!["seri"]);
        assert_eq!((o.secs, o.jobs), (5, 2));
        assert_eq!(o.extra, vec!["-max_len=64"]);
        assert!(parse(&args(&["nosuch"])).is_err());
        assert!(parse(&args(&["--secs", "0"])).is_err());
        assert!(parse(&args(&["--repro", "x"])).is_err());
        assert!(parse(&args(&["kkt", "--repro", "x"])).is_ok());
    }

    #[test]
    fn reads_libfuzzer_output() {
        let text = "INFO: Seed: 1\n\
            #2\tINITED cov: 8 ft: 8 corp: 1/1b exec/s: 0 rss: 27Mb\n\
            #720660\tDONE   cov: 73 ft: 304 corp: 78/28Kb lim: 4096 exec/s: 144132 rss: 27Mb\n\
            stat::number_of_executed_units: 720660\n\
            stat::average_exec_per_sec:     144132\n";
        let s = parse_log("frame", text, 5.0, PathBuf::from("x.log"));
        assert_eq!((s.executions, s.exec_per_sec), (720660, 144132));
        assert_eq!((s.cov, s.ft, s.corpus), (73, 304, 78));
        assert!(s.artifact.is_none());
        let crash = "==1== ERROR: libFuzzer: deadly signal\n\
            artifact_prefix='fuzz/artifacts/seri/'; Test unit written to fuzz/artifacts/seri/crash-abc\n";
        let s = parse_log("seri", crash, 1.0, PathBuf::from("x.log"));
        assert_eq!(
            s.artifact,
            Some(PathBuf::from("fuzz/artifacts/seri/crash-abc"))
        );
        assert_eq!(s.crashes(), 1);
    }
}
