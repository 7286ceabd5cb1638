//! The C/C++ side: bee's skynet-named headers (`include/`), the C++ SDK (`sdk/cpp/`) and
//! the demo native service modules (`cservices/`), built by `cservices/Makefile`.
//!
//! - [`ensure_packages`]: installs the Debian packages the build needs when missing.
//! - [`build`]: the modules (and the test programs) into `target/cpp/`, or with ASan/UBSan
//!   into `target/cpp-asan/`.
//! - [`test`]: builds with the sanitizers and runs the header checks, `frame_test`, the
//!   module symbol check and `host_test`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Debian packages of the build: compilers, make, protoc and the protobuf headers and
/// library (the demo modules' messages), python3 (generates the frame vectors header).
const PACKAGES: &[&str] = &[
    "g++",
    "make",
    "protobuf-compiler",
    "libprotobuf-dev",
    "python3",
];

/// What must be present for the build, and the package that brings it.
const NEEDED: &[(&str, &str)] = &[
    ("/usr/bin/g++", "g++"),
    ("/usr/bin/make", "make"),
    ("/usr/bin/protoc", "protobuf-compiler"),
    ("/usr/include/google/protobuf/message.h", "libprotobuf-dev"),
    ("/usr/bin/python3", "python3"),
];

/// Install g++, make, protoc, libprotobuf-dev and python3 with apt-get when one of them
/// is missing.
pub fn ensure_packages() -> Result<()> {
    let missing: Vec<&str> = NEEDED
        .iter()
        .filter(|(path, _)| !Path::new(path).exists())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        eprintln!("setup: the C++ toolchain and protobuf are installed");
        return Ok(());
    }
    eprintln!("setup: missing {}", missing.join(", "));
    crate::apt_install(PACKAGES)?;
    Ok(())
}

/// The directory a build writes to: `target/cpp/`, or `target/cpp-asan/` with sanitizers.
pub fn out_dir(root: &Path, sanitize: bool) -> PathBuf {
    root.join("target")
        .join(if sanitize { "cpp-asan" } else { "cpp" })
}

/// Build the modules (`hello.so`, `shop.so`, `mail.so`, `libbee_demo_proto.so`) and the
/// test programs; returns the output directory. With `sanitize`, everything is built
/// with ASan and UBSan (a host loading those modules must itself run with ASan).
pub fn build(root: &Path, sanitize: bool) -> Result<PathBuf> {
    ensure_packages()?;
    let out = out_dir(root, sanitize);
    run(make(root, sanitize).arg("all"))
        .with_context(|| format!("building the C++ side into {}", out.display()))?;
    for module in ["hello.so", "shop.so", "mail.so"] {
        if !out.join(module).exists() {
            bail!("the build did not produce {}", out.join(module).display());
        }
    }
    Ok(out)
}

/// Build with ASan/UBSan and run the C/C++ tests: the header checks, `frame_test` (every
/// case of the frame vectors, random round-trips and rejects), the check that each module
/// needs only skynet functions bee exports, and `host_test` (the modules loaded and driven
/// through bee's skynet C API subset).
pub fn test(root: &Path) -> Result<()> {
    ensure_packages()?;
    run(make(root, true).arg("test")).context("the C/C++ tests failed")
}

fn make(root: &Path, sanitize: bool) -> Command {
    let mut cmd = Command::new("make");
    cmd.arg("-C")
        .arg(root.join("cservices"))
        .arg("-j2")
        .arg(format!("OUT={}", out_dir(root, sanitize).display()));
    if sanitize {
        cmd.arg("SANITIZE=1");
    }
    cmd
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("\n== {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}
