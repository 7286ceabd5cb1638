//! `bee` node processes the benchmarks start: write a config, start `bee run`, wait for
//! its ready line.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::BenchError;

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16, BenchError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Start `bee run CONFIG [extra…]` (stderr appended to `log`, or dropped), and wait (at
/// most 30 s) until it says it listens.
pub fn start(
    bee: &Path,
    config: &Path,
    log: Option<&Path>,
    log_level: &str,
    extra: &[&str],
) -> Result<Child, BenchError> {
    let stderr = match log {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
        None => Stdio::null(),
    };
    let mut child = Command::new(bee)
        .arg("run")
        .arg(config)
        .args(extra)
        .env("BEE_LOG", log_level)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| BenchError::Setup("no stdout of the bee node".into()))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("listening on") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        return Err(BenchError::Setup(format!(
            "bee run {} did not start within 30 s",
            config.display()
        )));
    }
    Ok(child)
}

/// Stop a node process (SIGKILL: benchmarks do not need its drain) and reap it.
pub fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}
