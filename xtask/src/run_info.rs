//! What a benchmark or simulation report says about its run: the time, this machine's
//! CPU and kernel (and its load), and the `bee` binary it ran, built as asked.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

/// The time now in UTC, `date -u` formatted with `format` (e.g. `+%Y-%m-%d %H:%M UTC`);
/// empty when `date` cannot run.
pub fn utc(format: &str) -> String {
    Command::new("date")
        .args(["-u", format])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The time now, to the minute: `2026-12-06 07:30 UTC`.
pub fn utc_minute() -> String {
    utc("+%Y-%m-%d %H:%M UTC")
}

/// How many CPUs, and the model of the first ("unknown CPU" when unreadable).
pub fn cpus() -> (usize, String) {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    (nproc, cpu)
}

/// "2 × CPU model, Linux kernel" of this machine.
pub fn machine() -> String {
    let (nproc, cpu) = cpus();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_string())
        .unwrap_or_default();
    format!("{nproc} × {cpu}, Linux {kernel}")
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, else `target/` of the project.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"))
}

/// Build the `bee` binary (`--release` when `release`) and return its path.
pub fn build_bee(root: &Path, release: bool) -> Result<PathBuf> {
    build_bin(root, "bee-node", "bee", release)
}

/// Build binary `bin` of `package` (release or debug) and return its path.
pub fn build_bin(root: &Path, package: &str, bin: &str, release: bool) -> Result<PathBuf> {
    let mut build = crate::cargo();
    build.args(["build", "-p", package, "--bin", bin]);
    if release {
        build.arg("--release");
    }
    crate::step(&format!("build {bin}"), &mut build)?;
    Ok(target_dir(root)
        .join(if release { "release" } else { "debug" })
        .join(bin))
}
