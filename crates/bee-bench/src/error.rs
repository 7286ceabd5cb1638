//! The error type of the benchmark library.

use std::path::PathBuf;

/// Why a benchmark could not run or complete.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The cluster config file could not be loaded.
    #[error("cannot load the cluster config {path}: {reason}")]
    ClusterConfig {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The target node did not answer the first call (not running, wrong name or port,
    /// no `@echo` registered there).
    #[error("cannot reach {target} on node {node}: {reason} (is the node running and does it register {target}?)")]
    Unreachable {
        /// The node asked.
        node: String,
        /// The service asked.
        target: String,
        /// The error of the call.
        reason: String,
    },
    /// A call that the benchmark depends on (e.g. the sink's `count`) failed.
    #[error("{what} failed: {reason}")]
    Call {
        /// Which call.
        what: String,
        /// Its error.
        reason: String,
    },
    /// A reply had the wrong shape (e.g. the sink's count was not an integer).
    #[error("unexpected reply to {what}: {reason}")]
    BadReply {
        /// Which call.
        what: String,
        /// What was wrong.
        reason: String,
    },
    /// Reading a process's memory figures from `/proc` failed.
    #[error("cannot read /proc/{pid}/status: {reason}")]
    Proc {
        /// The process.
        pid: u32,
        /// The OS error or parse failure.
        reason: String,
    },
    /// A socket or process operation of the tokio floor failed.
    #[error("tokio floor: {0}")]
    Io(#[from] std::io::Error),
    /// Packing a payload failed.
    #[error("cannot pack a payload: {0}")]
    Pack(#[from] bee_codec::seri::SeriError),
    /// Starting or driving the processes of a benchmark failed.
    #[error("benchmark setup: {0}")]
    Setup(String),
    /// The results file given to the report is not what `cargo xtask bench` writes.
    #[error("bad results file: {0}")]
    Results(String),
}
