//! Closed-loop load: N concurrent tasks, each issuing one request after the other for a
//! fixed time. Shared by B1 (local calls), B3 (cluster calls) and the mysqlpool bench.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a run of [`drive`] did.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Load {
    /// Requests that succeeded (and whose answer was right).
    pub done: u64,
    /// Requests that failed or answered wrongly (a task that panicked counts as one).
    pub errors: u64,
    /// Seconds from the start until every task had stopped.
    pub seconds: f64,
}

impl Load {
    /// Successful requests per second.
    pub fn per_second(&self) -> f64 {
        self.done as f64 / self.seconds
    }
}

/// Run `tasks` concurrent tasks for `seconds`; task `w` calls `one(w, i)` for
/// i = 1, 2, … until the time is up, each call answering whether it succeeded.
pub async fn drive<F, Fut>(tasks: usize, seconds: f64, one: F) -> Load
where
    F: Fn(usize, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = bool> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|w| {
            let (stop, one) = (stop.clone(), one.clone());
            tokio::spawn(async move {
                let (mut done, mut errors, mut i) = (0u64, 0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    if one(w, i).await {
                        done += 1;
                    } else {
                        errors += 1;
                    }
                }
                (done, errors)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut done, mut errors) = (0, 0);
    for h in handles {
        match h.await {
            Ok((d, e)) => {
                done += d;
                errors += e;
            }
            Err(_) => errors += 1,
        }
    }
    Load {
        done,
        errors,
        seconds: started.elapsed().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_successes_and_failures_per_task() {
        // Task 0 always succeeds, task 1 fails every other request.
        let load = drive(2, 0.05, |w, i| async move {
            tokio::task::yield_now().await;
            w == 0 || i % 2 == 0
        })
        .await;
        assert!(load.done > 0 && load.errors > 0, "{load:?}");
        assert!(load.done > load.errors, "{load:?}");
        assert!(load.seconds >= 0.05);
    }
}
