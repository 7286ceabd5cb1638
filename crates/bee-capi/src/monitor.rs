//! skynet's endless-loop report for module instances: every second a thread of the
//! node's host looks at each instance; one seen inside the same callback for 5 s gets
//! its endless flag set (read and cleared by `STAT endless`, which `skynet.endless()`
//! uses) and the line `A message from [ :src ] to [ :dst ] maybe in an endless loop
//! (version = n)`, repeated every 5 s while the callback runs, as skynet writes it.
//!
//! skynet's monitor looks only every 5 s and reports a callback seen at two looks in a
//! row, so it reports between 5 and 10 s into the callback, by the phase of its looks;
//! an 8-second callback may or may not be reported. Looking every second, bee reports
//! between 5 and 6 s into it, whatever the phase.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bee_runtime::Addr;

use crate::{lock, Host};

/// How long an instance must be inside one callback before it is reported, and then
/// how often the report repeats (skynet's monitor period).
const PERIOD: Duration = Duration::from_secs(5);

/// How often the monitor looks.
const LOOK: Duration = Duration::from_secs(1);

/// What the monitor reads of one instance.
#[derive(Default)]
pub(crate) struct Probe {
    /// Incremented when a callback starts and when it ends.
    version: AtomicU64,
    /// The source of the message being handled, 0 between callbacks.
    source: AtomicU32,
    busy: AtomicBool,
    endless: AtomicBool,
}

impl Probe {
    pub(crate) fn enter(&self, source: Addr) {
        self.source.store(source, Ordering::Relaxed);
        self.busy.store(true, Ordering::Relaxed);
        self.version.fetch_add(1, Ordering::Release);
    }

    pub(crate) fn leave(&self) {
        self.busy.store(false, Ordering::Relaxed);
        self.source.store(0, Ordering::Relaxed);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// `STAT endless`: whether a report was made since the last ask (then cleared).
    pub(crate) fn take_endless(&self) -> bool {
        self.endless.swap(false, Ordering::AcqRel)
    }
}

/// Start the host's monitor thread, once.
pub(crate) fn ensure_started(host: &Arc<Host>, started: &AtomicBool) {
    if started.swap(true, Ordering::AcqRel) {
        return;
    }
    let weak = Arc::downgrade(host);
    if let Err(e) = std::thread::Builder::new()
        .name("bee-capi-monitor".into())
        .spawn(move || run(&weak))
    {
        started.store(false, Ordering::Release);
        tracing::error!(error = %e, "cannot start the endless-loop monitor thread");
    }
}

fn run(host: &Weak<Host>) {
    // Per instance: the callback version last seen, since when it has been seen, and
    // when it was last reported.
    let mut seen: HashMap<Addr, (u64, Instant, Option<Instant>)> = HashMap::new();
    loop {
        std::thread::sleep(LOOK);
        let Some(h) = host.upgrade() else { return };
        let live: Vec<_> = lock(&h.contexts)
            .iter()
            .filter_map(|(a, w)| w.upgrade().map(|c| (*a, c)))
            .collect();
        seen.retain(|a, _| live.iter().any(|(l, _)| l == a));
        let now = Instant::now();
        for (addr, ctx) in live {
            let p = &ctx.probe;
            let version = p.version.load(Ordering::Acquire);
            let entry = seen.entry(addr).or_insert((version, now, None));
            if entry.0 != version {
                *entry = (version, now, None);
                continue;
            }
            let due = entry
                .2
                .map_or(now.duration_since(entry.1) >= PERIOD, |last| {
                    now.duration_since(last) >= PERIOD
                });
            if !p.busy.load(Ordering::Relaxed) || !due {
                continue;
            }
            entry.2 = Some(now);
            p.endless.store(true, Ordering::Release);
            let line = format!(
                "A message from [ :{:08x} ] to [ :{addr:08x} ] maybe in an endless loop (version = {version})",
                p.source.load(Ordering::Relaxed)
            );
            if !h.write_skynet_log(0, &line) {
                tracing::warn!(target: "skynet", "{line}");
            }
        }
    }
}
