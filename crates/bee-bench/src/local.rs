//! B1: local calls inside one node — an in-process [`Node`] with an
//! [`Echo`] service, called by 1 and by 64 concurrent
//! callers with a 16-byte string; calls per second, every reply checked.

use bee_codec::seri::{self, Value};
use bee_runtime::builtin::Echo;
use bee_runtime::{Addr, Node, RuntimeConfig};
use serde::Serialize;

use crate::load::{drive, Load};
use crate::BenchError;

/// What B1 measured.
#[derive(Debug, Clone, Serialize)]
pub struct LocalResult {
    /// Seconds each caller count ran.
    pub seconds: f64,
    /// Calls per second with one caller.
    pub b1_1_calls_per_s: f64,
    /// Calls per second with 64 concurrent callers.
    pub b1_64_calls_per_s: f64,
    /// Replies that differed from what was sent, or failed (both runs).
    pub b1_errors: u64,
}

/// Calls made by `callers` concurrent tasks in `seconds`, every reply checked.
async fn run_callers(node: &Node, echo: Addr, callers: usize, seconds: f64) -> Load {
    let payload = seri::pack(&[Value::from("0123456789abcdef")]).unwrap_or_default();
    let node = node.clone();
    drive(callers, seconds, move |_, _| {
        let (node, payload) = (node.clone(), payload.clone());
        async move { matches!(node.call(echo, payload.clone()).await, Ok(r) if r == payload) }
    })
    .await
}

/// Run B1 for `seconds` per caller count (after a short warm-up).
pub async fn run(seconds: f64) -> Result<LocalResult, BenchError> {
    let node = Node::new("bee-bench-local", RuntimeConfig::default());
    let echo = node.spawn_named("echo", Echo);
    // Warm-up: the first calls allocate the mailbox and spawn paths.
    run_callers(&node, echo, 4, 0.1_f64.min(seconds)).await;
    let one = run_callers(&node, echo, 1, seconds).await;
    let many = run_callers(&node, echo, 64, seconds).await;
    node.shutdown();
    Ok(LocalResult {
        seconds,
        b1_1_calls_per_s: one.per_second(),
        b1_64_calls_per_s: many.per_second(),
        b1_errors: one.errors + many.errors,
    })
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn local_calls_are_counted_and_checked() {
        let r = super::run(0.2).await.expect("B1 runs");
        assert_eq!(r.b1_errors, 0);
        assert!(r.b1_1_calls_per_s > 100.0, "{r:?}");
        assert!(r.b1_64_calls_per_s > 100.0, "{r:?}");
    }
}
