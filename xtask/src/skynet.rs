//! `cargo xtask skynet`: stock skynet v1.6.0, built under `target/skynet/` as a test peer
//! (like a database server: built and run, never copied into the project).
//!
//! Where the source comes from, first found wins:
//! 1. `SKYNET_SRC` — a skynet tree or a `.tar.gz` of one (a user's own copy);
//! 2. `../shared/vendor/skynet-1.6.0.tar.gz` beside the project, checked against the
//!    sha256 of the v1.6.0 tag's `git archive`;
//! 3. a shallow `git clone` of the v1.6.0 tag, for a machine with network access.
//!
//! `SKYNET_DIR`, when set, names a tree someone already built and wins over all three:
//! nothing is built then. The build is skynet's own `make linux` without jemalloc, and is
//! redone only when the source changes (a stamp file records which source was built).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// sha256 of `skynet-1.6.0.tar.gz` (`git archive` of tag v1.6.0, commit 98311b9b).
const VENDOR_SHA256: &str = "0017836f40a965bbdf1b0245bd0c22e54c4cfd81827a81a0db3057b4a02f781d";
const TAG: &str = "v1.6.0";
const GIT_URL: &str = "https://github.com/cloudwu/skynet.git";
/// The file in the built tree that says which source it was built from.
const STAMP: &str = ".bee-built-from";

/// `cargo xtask skynet`: build (when needed) and print where the tree is.
pub fn run(root: &Path) -> Result<()> {
    let dir = ensure(root)?;
    println!("{}", dir.display());
    Ok(())
}

/// The built stock skynet tree: `SKYNET_DIR` when set, else `target/skynet/`, built or
/// rebuilt first when its source changed.
pub fn ensure(root: &Path) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SKYNET_DIR") {
        let dir = PathBuf::from(dir);
        if !dir.join("skynet").is_file() {
            bail!(
                "SKYNET_DIR={} holds no skynet binary (build it there, or unset SKYNET_DIR to build one under target/skynet)",
                dir.display()
            );
        }
        eprintln!("skynet: using SKYNET_DIR={}", dir.display());
        ensure_liblua(&dir)?;
        return Ok(dir);
    }
    let out = root.join("target").join("skynet");
    let source = Source::find(root)?;
    let stamp = source.stamp()?;
    if out.join("skynet").is_file()
        && fs::read_to_string(out.join(STAMP)).ok().as_deref() == Some(stamp.as_str())
    {
        eprintln!("skynet: up to date in {} ({stamp})", out.display());
        ensure_liblua(&out)?;
        return Ok(out);
    }
    ensure_build_tools()?;
    let staging = root.join("target").join("skynet.build");
    if staging.exists() {
        fs::remove_dir_all(&staging)
            .with_context(|| format!("cannot remove {}", staging.display()))?;
    }
    fs::create_dir_all(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
    eprintln!("skynet: building {stamp} in {}", staging.display());
    source.unpack(&staging)?;
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    crate::step(
        "skynet build",
        Command::new("make")
            .arg("-C")
            .arg(&staging)
            .args([
                "linux",
                "MALLOC_STATICLIB=",
                "SKYNET_DEFINES=-DNOUSE_JEMALLOC",
            ])
            .arg(format!("-j{jobs}")),
    )?;
    for needed in [
        "skynet",
        "cservice/snlua.so",
        "luaclib/skynet.so",
        "lualib/skynet.lua",
    ] {
        if !staging.join(needed).exists() {
            bail!("the skynet build finished without {needed}");
        }
    }
    ensure_liblua(&staging)?;
    fs::write(staging.join(STAMP), &stamp)?;
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("cannot remove {}", out.display()))?;
    }
    fs::rename(&staging, &out)
        .with_context(|| format!("cannot move {} to {}", staging.display(), out.display()))?;
    eprintln!("skynet: built {}", out.display());
    Ok(out)
}

/// The tree's own patched Lua 5.4 (`3rd/lua`), as the shared library `liblua.so` at the
/// top of the tree: a bee node hosting Lua services loads it before `snlua.so` (stock
/// skynet links the same sources into its executable; see `docs/lua.md`). Built with
/// `-fPIC` from the tree's sources when missing or older than them.
pub fn ensure_liblua(tree: &Path) -> Result<PathBuf> {
    let lua = tree.join("3rd").join("lua");
    let out = tree.join("liblua.so");
    let mut sources = Vec::new();
    for entry in fs::read_dir(&lua).with_context(|| format!("cannot read {}", lua.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // The library: every .c of the tree's Lua except the two programs, the
        // single-file amalgamation and Lua's internal test hooks.
        if name.ends_with(".c") && !["lua.c", "luac.c", "onelua.c", "ltests.c"].contains(&name) {
            sources.push(path);
        }
    }
    if sources.is_empty() {
        bail!(
            "{} holds no Lua sources (not a skynet tree?)",
            lua.display()
        );
    }
    sources.sort();
    let built = fs::metadata(&out).and_then(|m| m.modified()).ok();
    let newest = sources
        .iter()
        .filter_map(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
        .max();
    if let (Some(built), Some(newest)) = (built, newest) {
        if built >= newest {
            return Ok(out);
        }
    }
    crate::step(
        "skynet liblua.so",
        Command::new("cc")
            .args([
                "-std=gnu99",
                "-O2",
                "-g",
                "-fPIC",
                "-shared",
                "-DLUA_USE_LINUX",
            ])
            .arg("-I")
            .arg(tree.join("skynet-src"))
            .arg("-I")
            .arg(&lua)
            .args(&sources)
            .arg("-o")
            .arg(&out)
            .args(["-lm", "-ldl"]),
    )?;
    Ok(out)
}

/// Where the source of a build comes from.
enum Source {
    Tree(PathBuf),
    Tarball(PathBuf),
    Git,
}

impl Source {
    fn find(root: &Path) -> Result<Source> {
        if let Some(src) = std::env::var_os("SKYNET_SRC") {
            let src = PathBuf::from(src);
            if src.is_dir() {
                if !src.join("Makefile").is_file() || !src.join("skynet-src").is_dir() {
                    bail!(
                        "SKYNET_SRC={} is not a skynet tree (no Makefile and skynet-src/)",
                        src.display()
                    );
                }
                return Ok(Source::Tree(src));
            }
            if src.is_file() {
                return Ok(Source::Tarball(src));
            }
            bail!("SKYNET_SRC={} does not exist", src.display());
        }
        let vendor = vendor_tarball(root);
        if vendor.is_file() {
            let sum = sha256_file(&vendor)?;
            if sum != VENDOR_SHA256 {
                bail!(
                    "{} has sha256 {sum}, not stock skynet v1.6.0's {VENDOR_SHA256}",
                    vendor.display()
                );
            }
            return Ok(Source::Tarball(vendor));
        }
        if git_reaches_origin() {
            return Ok(Source::Git);
        }
        bail!(
            "no stock skynet v1.6.0 source found. Looked, in order, at: \
             (1) SKYNET_SRC (unset; a skynet tree or .tar.gz), \
             (2) {} (missing), \
             (3) a shallow git clone of tag {TAG} from {GIT_URL} (not reachable). \
             Or set SKYNET_DIR to a skynet tree you built yourself.",
            vendor.display()
        )
    }

    /// What was built, in one line: rebuilt when it changes.
    fn stamp(&self) -> Result<String> {
        Ok(match self {
            Source::Tarball(path) => format!("tarball sha256 {}", sha256_file(path)?),
            Source::Tree(path) => format!("tree {} state {}", path.display(), tree_state(path)?),
            Source::Git => format!("git {GIT_URL} tag {TAG}"),
        })
    }

    fn unpack(&self, into: &Path) -> Result<()> {
        match self {
            Source::Tarball(path) => crate::step(
                "skynet unpack",
                Command::new("tar")
                    .arg("-xzf")
                    .arg(path)
                    .arg("--strip-components=1")
                    .arg("-C")
                    .arg(into),
            ),
            Source::Tree(path) => crate::step(
                "skynet copy",
                Command::new("cp").arg("-a").arg(path.join(".")).arg(into),
            ),
            Source::Git => {
                fs::remove_dir(into)?;
                crate::step(
                    "skynet clone",
                    Command::new("git")
                        .args(["clone", "-q", "--depth", "1", "--branch", TAG, GIT_URL])
                        .arg(into)
                        .env("GIT_TERMINAL_PROMPT", "0"),
                )
            }
        }
    }
}

/// `../shared/vendor/skynet-1.6.0.tar.gz`, beside the project's checkout.
fn vendor_tarball(root: &Path) -> PathBuf {
    root.join("..")
        .join("shared")
        .join("vendor")
        .join("skynet-1.6.0.tar.gz")
}

fn git_reaches_origin() -> bool {
    Command::new("git")
        .args(["ls-remote", "--tags", GIT_URL, TAG])
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A digest of every file's path, size and modification time under a source tree: a
/// change to any of them rebuilds.
fn tree_state(dir: &Path) -> Result<String> {
    let mut entries = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                entries.push(format!("{} {} {mtime}", entry.path().display(), meta.len()));
            }
        }
    }
    entries.sort();
    let mut hasher = Sha256::new();
    for e in entries {
        hasher.update(e.as_bytes());
        hasher.update(b"\n");
    }
    Ok(hex::encode(hasher.finalize())[..16].to_string())
}

/// `make` and a C compiler, installed with apt-get when missing (as `cargo xtask setup`).
fn ensure_build_tools() -> Result<()> {
    let have = |tool: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .stdout(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if have("make") && have("cc") && have("tar") {
        return Ok(());
    }
    crate::apt_install(&["make", "gcc", "libc6-dev", "tar"])
}
