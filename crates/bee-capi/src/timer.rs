//! skynet's timers for module instances: `skynet_timeout(handle, ticks, session)` expires
//! once `ticks` hundredths of a second have passed (never earlier), and timers expiring
//! together are delivered in the order they were set — which skynet's Lua relies on (two
//! coroutines sleeping the same time wake in the order they slept). One thread per node
//! host checks every 2.5 ms, as skynet's timer thread does.

use std::collections::BTreeMap;
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bee_runtime::{Addr, CallError};

use crate::ffi::{fire_timer, timer_message};
use crate::{lock, Host};

/// The pending timers of one host, by (expiry in µs since the host started, order set).
#[derive(Default)]
pub(crate) struct Timers {
    queue: Mutex<BTreeMap<(u64, u64), (Addr, c_int)>>,
    seq: AtomicU64,
    running: AtomicBool,
}

impl Host {
    /// `handle` gets the timer message of `session` once `ticks` hundredths of a second
    /// have passed.
    pub(crate) fn add_timer(self: &Arc<Self>, handle: Addr, ticks: u64, session: c_int) {
        // Rounded up: the timer never fires before `ticks` full hundredths have passed.
        let expire = self
            .now_us()
            .saturating_add(1)
            .saturating_add(ticks.saturating_mul(10_000));
        let seq = self.timers.seq.fetch_add(1, Ordering::Relaxed);
        lock(&self.timers.queue).insert((expire, seq), (handle, session));
        if !self.timers.running.swap(true, Ordering::AcqRel) {
            let weak = Arc::downgrade(self);
            let spawned = std::thread::Builder::new()
                .name("bee-capi-timer".into())
                .spawn(move || run(&weak));
            if let Err(e) = spawned {
                self.timers.running.store(false, Ordering::Release);
                tracing::error!(error = %e, "cannot start the timer thread; timers wait for the next try");
            }
        }
    }
}

fn run(host: &Weak<Host>) {
    loop {
        std::thread::sleep(Duration::from_micros(2500));
        let Some(h) = host.upgrade() else { return };
        let now = h.now_us();
        let due = {
            let mut q = lock(&h.timers.queue);
            let later = q.split_off(&(now.saturating_add(1), 0));
            std::mem::replace(&mut *q, later)
        };
        if due.is_empty() {
            continue;
        }
        let Some(node) = h.node() else { return };
        for (handle, session) in due.into_values() {
            match node.post(handle, timer_message(session)) {
                Ok(()) => {}
                Err(CallError::Overloaded { .. }) => {
                    // Retried from a task until the mailbox has room (never dropped
                    // while the service lives).
                    h.runtime
                        .spawn(fire_timer(node.downgrade(), handle, session));
                }
                Err(_) => {} // the service is gone: nobody waits
            }
        }
    }
}
