//! uid sharding: a master service in front of N worker services.
//!
//! The master forwards each message untouched (with its caller attached, like
//! skynet.redirect) to the worker chosen from the message's uid, read without
//! unpacking the rest of the payload:
//! - `"text"` messages (and rpc requests, which are `"text"` frames with sub_type 18):
//!   the uid in the game frame's header — the worker answers an rpc caller itself;
//! - `"lua"` messages: the first argument after the command name must be the uid (an
//!   integer): `("lua", "progress", uid, …)`.
//!
//! Two rules ([`ShardRule`], chosen in the node config with `rule = "hash"` or
//! `"modulo"`):
//! - **hash** (default): [`worker_for`]`(uid, n)` = `jump(mix(uid), n)` where `mix` is
//!   the SplitMix64 finaliser and `jump` is Lamping and Veach's jump consistent hash. It
//!   depends on nothing but the uid and `n`, so the same uid lands on the same worker on
//!   every node and after every restart; and when `n` grows only about 1/n of uids move.
//! - **modulo**: the team's Lua masters' rule — worker `uid % n` for uid > 0, every
//!   worker for uid 0 (as pushes; a waiting caller gets the number of workers), a
//!   random worker for a negative uid. Use it where workers must agree with an
//!   existing skynet master.
//!
//! The master answers two commands itself: `("lua", "shard_workers")` → the worker
//! addresses, `("lua", "shard_of", uid)` → the worker index for that uid. A worker that
//! stops (exits, is killed) is restarted from its factory before the next message is
//! forwarded to it; callers whose messages were queued in the dead worker get
//! `ServiceGone` errors, none is left hanging. A panicking handler does not stop a
//! worker: the runtime catches it and answers the caller with the panic text.

use bee_codec::kkt;
use bee_codec::seri::{self, Value};
use std::sync::{Arc, Mutex};

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

/// Extract the uid a message is sharded by (see the module docs), from its first
/// values: a `"text"` or `"rpc_response"` frame's uid (read from the frame's header
/// only), or a `"lua"` message's argument after the command.
pub fn uid_of(values: &[Value]) -> Result<i64, ServiceError> {
    match values.first().and_then(Value::as_bytes) {
        Some(b"text") | Some(b"rpc_response") => match values.get(1) {
            Some(Value::String(frame)) => kkt::peek_uid(frame)
                .map_err(|e| ServiceError::msg(format!("cannot shard: bad game frame: {e}"))),
            _ => Err(ServiceError::msg(
                "text message has no game frame to take a uid from",
            )),
        },
        Some(b"lua") => match values.get(2) {
            Some(Value::Integer(uid)) => Ok(*uid),
            Some(other) => Err(ServiceError::msg(format!(
                "cannot shard: the argument after the command must be the uid (an integer), got {}",
                other.type_name()
            ))),
            None => Err(ServiceError::msg(
                "cannot shard: a lua message needs (\"lua\", command, uid, …)",
            )),
        },
        _ => Err(ServiceError::msg(
            "cannot shard: only \"lua\", \"text\" and \"rpc_response\" messages carry a uid",
        )),
    }
}

/// How a master picks the worker for a uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShardRule {
    /// bee's stable hash ([`worker_for`]): the same uid on the same worker on every
    /// node and after every restart; only ~1/n of uids move when n grows.
    #[default]
    Hash,
    /// The team's Lua masters' rule: worker `uid % n` for uid > 0 (their 1-based
    /// `1 + uid % n`), **every** worker for uid 0, a random one for uid < 0.
    Modulo,
}

impl ShardRule {
    /// Parse a config value: `"hash"` or `"modulo"`.
    pub fn parse(s: &str) -> Result<ShardRule, String> {
        match s {
            "hash" => Ok(ShardRule::Hash),
            "modulo" | "mod" => Ok(ShardRule::Modulo),
            other => Err(format!("unknown shard rule {other:?} (hash or modulo)")),
        }
    }
}

/// Where a message for `uid` goes among `workers` workers under `rule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// To this one worker.
    One(usize),
    /// To every worker (the team's uid 0).
    All,
}

/// The pick for `uid` under `rule`.
pub fn pick(rule: ShardRule, uid: i64, workers: usize) -> Pick {
    let n = workers.max(1);
    match rule {
        ShardRule::Hash => Pick::One(worker_for(uid as u64, n)),
        ShardRule::Modulo if uid > 0 => Pick::One((uid as u64 % n as u64) as usize),
        ShardRule::Modulo if uid == 0 => Pick::All,
        ShardRule::Modulo => Pick::One(random_below(n)),
    }
}

/// A random index below `n`, from the standard library's per-process random hasher
/// keys mixed with a counter (no dependency, good enough to spread load).
fn random_below(n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    (h.finish() % n as u64) as usize
}

/// One sharded service of a node, as [`shard_maps`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    /// The master's address.
    pub master: Addr,
    /// The workers' label before `[i]`.
    pub workers_label: String,
    /// How many workers.
    pub workers: usize,
    /// How the master picks a worker.
    pub rule: ShardRule,
}

/// The node's sharded services (a node extension, filled by [`ShardMaster::spawn`]).
struct ShardMaps(Mutex<Vec<ShardMap>>);

/// The sharded services of `node` whose master still runs, in the order they started.
pub fn shard_maps(node: &crate::service::Node) -> Vec<ShardMap> {
    match node.extension::<ShardMaps>() {
        Some(maps) => maps
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|m| node.is_alive(m.master))
            .cloned()
            .collect(),
        None => Vec::new(),
    }
}

impl ShardRule {
    /// The config word for the rule (`hash`, `modulo`).
    pub fn name(self) -> &'static str {
        match self {
            ShardRule::Hash => "hash",
            ShardRule::Modulo => "modulo",
        }
    }
}

/// Makes worker number `i` (called at start and to restart a worker that stopped).
pub type WorkerFactory = Box<dyn Fn(usize) -> BoxService + Send + Sync>;

/// The master service: owns the workers and forwards by uid.
pub struct ShardMaster {
    label: String,
    factory: WorkerFactory,
    workers: Vec<Addr>,
    rule: ShardRule,
}

impl ShardMaster {
    /// A master whose workers are labelled `<label>[i]` and made by `factory`. Workers
    /// start when the master is spawned with [`ShardMaster::spawn`].
    pub fn new(label: &str, count: usize, factory: WorkerFactory) -> Self {
        ShardMaster {
            label: label.to_string(),
            factory,
            workers: vec![0; count.max(1)],
            rule: ShardRule::Hash,
        }
    }

    /// Pick workers by `rule` instead of the default stable hash.
    pub fn rule(mut self, rule: ShardRule) -> Self {
        self.rule = rule;
        self
    }

    /// Spawn the workers and the master on `node`; returns the master's address. The
    /// master is listed in [`shard_maps`] (what the status page shows).
    pub fn spawn(mut self, node: &crate::service::Node, master_label: &str) -> Addr {
        for i in 0..self.workers.len() {
            self.workers[i] = node.spawn_boxed(&format!("{}[{i}]", self.label), (self.factory)(i));
        }
        let map = ShardMap {
            workers_label: self.label.clone(),
            workers: self.workers.len(),
            rule: self.rule,
            master: 0,
        };
        let master = node.spawn(master_label, self);
        let maps = node.extension_or_insert_with(|| Arc::new(ShardMaps(Mutex::new(Vec::new()))));
        maps.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ShardMap { master, ..map });
        master
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
                    let i = match pick(self.rule, uid, self.workers.len()) {
                        Pick::One(i) => i as i64,
                        Pick::All => -1,
                    };
                    return Ok(Some(seri::pack(&[Value::Integer(i)])?));
                }
                _ => {}
            }
        }
        let uid = uid_of(&values)?;
        match pick(self.rule, uid, self.workers.len()) {
            Pick::One(i) => {
                let target = self.worker(ctx, i);
                ctx.redirect(target, msg).await?;
                Ok(None)
            }
            Pick::All => {
                // The team's uid 0: every worker gets the message as a push; a waiting
                // caller is answered with how many workers it reached.
                let n = self.workers.len();
                for i in 0..n {
                    let target = self.worker(ctx, i);
                    ctx.send(target, msg.payload.clone()).await?;
                }
                Ok(Some(seri::pack(&[Value::Integer(n as i64)])?))
            }
        }
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
        fn uid_of_reads_text_rpc_and_lua_uids(uid in any::<i64>(), session in 1u64..0x7FFF_FFFF) {
            let frame = bee_codec::kkt::KktFrame::new(16, uid, "game.Ping", "")
                .to("activity_master", "activity_master")
                .from("lobby", "lobby");
            let text = [Value::from("text"), Value::String(frame.encode().unwrap())];
            prop_assert_eq!(uid_of(&text).unwrap(), uid);
            // An rpc request is a "text" frame with sub_type 18 and a session.
            let mut rpc = frame.session(session);
            rpc.sub_type = 18;
            let rpc = [Value::from("text"), Value::String(rpc.encode().unwrap())];
            prop_assert_eq!(uid_of(&rpc).unwrap(), uid);
            let lua = [Value::from("lua"), Value::from("progress"), Value::Integer(uid)];
            prop_assert_eq!(uid_of(&lua).unwrap(), uid);
        }

        #[test]
        fn modulo_rule_is_the_teams(uid in 1i64..i64::MAX, n in 1usize..64) {
            prop_assert_eq!(pick(ShardRule::Modulo, uid, n), Pick::One((uid % n as i64) as usize));
            prop_assert_eq!(pick(ShardRule::Modulo, 0, n), Pick::All);
            match pick(ShardRule::Modulo, -uid, n) {
                Pick::One(i) => prop_assert!(i < n),
                Pick::All => prop_assert!(false, "a negative uid goes to one worker"),
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
            e.message()
                .contains("only \"lua\", \"text\" and \"rpc_response\""),
            "{e}"
        );
        let e = uid_of(&[Value::from("text")]).unwrap_err();
        assert!(e.message().contains("no game frame"), "{e}");
        let e = uid_of(&[Value::from("text"), Value::from(&b"short"[..])]).unwrap_err();
        assert!(
            e.message().contains("bad game frame") && e.message().contains("truncated"),
            "{e}"
        );
    }
}
