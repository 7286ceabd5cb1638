//! uid sharding: a master service in front of N worker services.
//!
//! The master forwards each message untouched (with its caller attached, like
//! skynet.redirect) to the worker chosen by [`worker_for`] from the message's uid:
//! - `"text"` messages: the uid of the game frame;
//! - `"lua"` messages: the first argument after the command name must be the uid (an
//!   integer): `("lua", "progress", uid, …)`;
//! - `"rpc"` envelopes from native callers: the uid of their inner `"text"` or `"lua"`
//!   message, as above (the worker answers the rpc caller itself).
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
use bee_codec::rpc::{RpcEnvelope, RpcKind};
use bee_codec::seri::{self, Value};

use crate::service::{
    fmt_addr, Addr, BoxService, Context, HandleResult, Message, Service, ServiceError,
};

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
    if values.first().and_then(Value::as_bytes) == Some(b"rpc") {
        let envelope = match values.get(1) {
            Some(Value::String(b)) => b,
            _ => {
                return Err(ServiceError::msg(
                    "cannot shard: rpc message has no envelope string",
                ))
            }
        };
        let env = RpcEnvelope::decode(envelope)
            .map_err(|e| ServiceError::msg(format!("cannot shard: bad rpc envelope: {e}")))?;
        if !matches!(env.kind, RpcKind::Call | RpcKind::Send) {
            return Err(ServiceError::msg(format!(
                "cannot shard: rpc reply (session {}) sent to a shard master, which makes no rpc calls",
                env.session
            )));
        }
        let inner = seri::unpack(&env.message)?;
        // One level only: an envelope inside an envelope is not a message a worker routes.
        return plain_uid_of(&inner);
    }
    plain_uid_of(values)
}

/// The uid of a `"text"` or `"lua"` message.
fn plain_uid_of(values: &[Value]) -> Result<u64, ServiceError> {
    match values.first().and_then(Value::as_bytes) {
        Some(b"text") => match values.get(1) {
            Some(Value::String(frame)) => Ok(GameFrame::decode(frame)?.uid),
            _ => Err(ServiceError::msg(
                "text message has no game frame to take a uid from",
            )),
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
            "cannot shard: only \"lua\", \"text\" and \"rpc\" messages carry a uid",
        )),
    }
}

/// Makes worker number `i` (called at start and to restart a worker that stopped).
pub type WorkerFactory = Box<dyn Fn(usize) -> BoxService + Send + Sync>;

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
    async fn handle(&mut self, ctx: &mut Context, msg: Message) -> HandleResult {
        // Only the sub-type, the command and the uid are read; the payload travels on
        // to the worker untouched (and is unpacked once, there).
        let values = seri::unpack_first(&msg.payload, 3)?;
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn jump_matches_published_values() {
        // Buckets for n = 1, 2, … as computed by the paper's reference C++ code (the
        // vectors other implementations test against, e.g. go-jump's).
        let vectors: [(u64, &[usize]); 4] = [
            (0, &[0; 20]),
            (
                1,
                &[0, 0, 0, 0, 0, 0, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 17, 17],
            ),
            (
                0xdead_beef,
                &[0, 1, 2, 3, 3, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 16, 16, 16],
            ),
            (
                0x0ddc_0ffe_ebad_f00d,
                &[0, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 15, 15, 15, 15],
            ),
        ];
        for (key, buckets) in vectors {
            for (i, want) in buckets.iter().enumerate() {
                assert_eq!(jump(key, i + 1), *want, "jump({key:#x}, {})", i + 1);
            }
        }
    }

    #[test]
    fn mix_is_splitmix64() {
        // SplitMix64's first outputs for seeds 0 and 1 (its published sequence).
        assert_eq!(mix(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(mix(1), 0x910a_2dec_8902_5cc1);
    }

    #[test]
    fn worker_for_frozen_values() {
        // Computed once by this implementation and frozen: if one of these changes,
        // every deployed cluster would move its players to other workers.
        let cases: [(u64, usize, usize); 14] = [
            (0, 8, 7),
            (1, 8, 3),
            (2, 8, 0),
            (3, 8, 4),
            (42, 8, 0),
            (7919, 8, 2),
            (10076447, 8, 2),
            (1 << 32, 8, 0),
            (i64::MAX as u64, 8, 1),
            (u64::MAX, 8, 3),
            (0, 100, 26),
            (1, 100, 72),
            (10076447, 100, 41),
            (u64::MAX, 100, 26),
        ];
        for (uid, n, want) in cases {
            assert_eq!(worker_for(uid, n), want, "worker_for({uid}, {n})");
        }
        // One worker (or a nonsensical 0): everything goes to worker 0.
        assert_eq!(worker_for(10076447, 1), 0);
        assert_eq!(worker_for(10076447, 0), 0);
    }

    #[test]
    fn spread_within_ten_percent_over_8_workers() {
        let mut counts = [0usize; 8];
        for uid in 0..100_000u64 {
            counts[worker_for(uid, 8)] += 1;
        }
        // 12,500 each ideally; allow ±10%.
        for (i, c) in counts.iter().enumerate() {
            assert!(
                (11_250..=13_750).contains(c),
                "worker {i} got {c} of 100k uids: {counts:?}"
            );
        }
        // Same for uids that are not consecutive (e.g. ids with a common stride).
        let mut counts = [0usize; 8];
        for i in 0..100_000u64 {
            counts[worker_for(10076447 + i * 7919, 8)] += 1;
        }
        for (i, c) in counts.iter().enumerate() {
            assert!(
                (11_250..=13_750).contains(c),
                "strided: worker {i} got {c}: {counts:?}"
            );
        }
    }

    #[test]
    fn growing_moves_few() {
        let moved = (0..100_000u64)
            .filter(|u| worker_for(*u, 8) != worker_for(*u, 9))
            .count();
        // Ideal is 1/9 ≈ 11.1%.
        assert!(moved < 14_000, "moved {moved}");
    }

    proptest! {
        #[test]
        fn worker_for_is_stable_and_in_range(uid in any::<u64>(), n in 1usize..512) {
            let w = worker_for(uid, n);
            prop_assert!(w < n);
            prop_assert_eq!(w, worker_for(uid, n));
            prop_assert_eq!(w, jump(mix(uid), n));
        }

        #[test]
        fn adding_a_worker_moves_uids_only_to_it(uid in any::<u64>(), n in 1usize..512) {
            // Jump hash's defining property: with one more worker a uid either stays or
            // moves to the new worker, never between old ones.
            let before = worker_for(uid, n);
            let after = worker_for(uid, n + 1);
            prop_assert!(after == before || after == n, "uid {} moved {} -> {} with n {}", uid, before, after, n);
        }

        #[test]
        fn uid_of_reads_text_and_lua_uids(uid in 0u64..=bee_codec::protopack::MAX_UID) {
            let mut frame = bytes::BytesMut::new();
            GameFrame::encode_into(uid, b"game.Ping", b"", &mut frame).unwrap();
            let text = [Value::from("text"), Value::String(frame.freeze())];
            prop_assert_eq!(uid_of(&text).unwrap(), uid);
            let lua = [Value::from("lua"), Value::from("progress"), Value::Integer(uid as i64)];
            prop_assert_eq!(uid_of(&lua).unwrap(), uid);
            // rpc envelopes (call and send) shard by their inner message's uid.
            for (kind, session, inner) in [(RpcKind::Call, 9, &text[..]), (RpcKind::Send, 0, &lua[..])] {
                let env = RpcEnvelope::encode(kind, session, b"lobby", b"lobby_native", &seri::pack(inner).unwrap()).unwrap();
                prop_assert_eq!(uid_of(&[Value::from("rpc"), Value::String(env)]).unwrap(), uid);
            }
        }
    }

    #[test]
    fn uid_of_explains_what_is_missing() {
        let e = uid_of(&[Value::from("lua"), Value::from("progress")]).unwrap_err();
        assert!(e.message().contains("(\"lua\", command, uid"), "{e}");
        let e = uid_of(&[
            Value::from("lua"),
            Value::from("progress"),
            Value::from("x"),
        ])
        .unwrap_err();
        assert!(e.message().contains("got string"), "{e}");
        let e = uid_of(&[Value::from("json")]).unwrap_err();
        assert!(
            e.message().contains("only \"lua\", \"text\" and \"rpc\""),
            "{e}"
        );
        let e = uid_of(&[Value::from("rpc")]).unwrap_err();
        assert!(e.message().contains("no envelope"), "{e}");
        let e = uid_of(&[Value::from("rpc"), Value::from("not an envelope")]).unwrap_err();
        assert!(e.message().contains("bad rpc envelope"), "{e}");
        let e = uid_of(&[Value::from("text"), Value::from(&b"short"[..])]).unwrap_err();
        assert!(e.message().contains("too short"), "{e}");
    }
}
