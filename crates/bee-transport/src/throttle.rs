//! Throttled warnings: under a flood (a peer that keeps sending what is refused, a
//! thousand connections timing out at once) a node must not write a log line per event.
//!
//! [`warn_allowed`] says whether a warning of one *kind* about one *peer* may be logged
//! now: at most one line per kind per peer per [`INTERVAL`], and the line that is
//! allowed carries how many were suppressed since the last one. Every event, logged or
//! not, is counted in [`crate::telemetry::WARNINGS`] (label `kind`), so a dashboard sees
//! the real rate.
//!
//! The table is process-wide (a peer that reconnects is still the same peer) and
//! bounded: past [`MAX_KEYS`] entries, the ones quiet for an interval are forgotten
//! (and if none is, the table is cleared: at worst one extra line per key).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use metrics::counter;

use crate::telemetry::WARNINGS;

/// At most one line per kind per peer this often.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Keys (kind, peer) remembered at most.
pub const MAX_KEYS: usize = 4096;

/// Counts events and says when to log them: at most once per `interval`, with the count
/// of events since the last line.
#[derive(Debug)]
pub(crate) struct Throttle {
    last: Option<Instant>,
    count: u64,
    interval: Duration,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            last: None,
            count: 0,
            interval: INTERVAL,
        }
    }
}

impl Throttle {
    /// One event; `Some(n)` when a line may be logged now (`n` events since the last
    /// line, this one included).
    pub(crate) fn hit(&mut self) -> Option<u64> {
        self.hit_n(1)
    }

    /// `n` events at once (see [`Throttle::hit`]).
    pub(crate) fn hit_n(&mut self, n: u64) -> Option<u64> {
        self.count += n;
        if self.last.is_some_and(|t| t.elapsed() < self.interval) {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.count))
    }

    fn quiet(&self) -> bool {
        self.last.is_none_or(|t| t.elapsed() >= self.interval)
    }
}

fn table() -> &'static Mutex<HashMap<(&'static str, String), Throttle>> {
    static TABLE: OnceLock<Mutex<HashMap<(&'static str, String), Throttle>>> = OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// A warning of `kind` about `peer` happened: count it, and say whether to log it now.
/// `Some(suppressed)`: log one line, mentioning the `suppressed` lines of this kind and
/// peer left out since the last one; `None`: leave it out.
pub fn warn_allowed(kind: &'static str, peer: &dyn std::fmt::Display) -> Option<u64> {
    counter!(WARNINGS, "kind" => kind).increment(1);
    let mut t = table().lock().unwrap_or_else(|e| e.into_inner());
    let key = (kind, peer.to_string());
    if !t.contains_key(&key) && t.len() >= MAX_KEYS {
        t.retain(|_, th| !th.quiet());
        if t.len() >= MAX_KEYS {
            t.clear();
        }
    }
    t.entry(key).or_default().hit().map(|n| n - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_and_peer_per_interval_with_the_count_left_out() {
        let peer = "10.9.8.7:1";
        assert_eq!(warn_allowed("test_kind", &peer), Some(0));
        for _ in 0..5 {
            assert_eq!(warn_allowed("test_kind", &peer), None);
        }
        // Another peer, another kind: their own lines.
        assert_eq!(warn_allowed("test_kind", &"10.9.8.7:2"), Some(0));
        assert_eq!(warn_allowed("test_other", &peer), Some(0));

        let mut t = Throttle {
            interval: Duration::ZERO,
            ..Throttle::default()
        };
        assert_eq!(t.hit_n(3), Some(3));
        assert_eq!(t.hit(), Some(1));
    }
}
