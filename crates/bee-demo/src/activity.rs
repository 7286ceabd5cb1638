//! `activity_master` and its `activity` workers: progress in a timed activity,
//! sharded by uid so one player's progress always lives in one worker.
//!
//! The master is bee-dispatch's [`ShardMaster`]: it forwards each message untouched to
//! worker `worker_for(uid, n)` (a documented, stable hash — see
//! [`bee_dispatch::shard`]). A worker answers `game.ActivityProgress` with
//! `game.ActivityState`, which says which worker holds the uid.

use std::collections::HashMap;

use bee_dispatch::native::RpcServer;
use bee_dispatch::shard::{ShardMaster, ShardRule};
use bee_dispatch::{Addr, BoxService, Dispatcher, Node};
use bee_proto::game::{ActivityProgress, ActivityState};

/// One worker's state: progress per (uid, activity).
#[derive(Debug, Default)]
pub struct Worker {
    index: usize,
    progress: HashMap<(u64, i32), i64>,
}

/// Build worker number `index`.
pub fn worker(index: usize) -> BoxService {
    let d = Dispatcher::new(Worker {
        index,
        progress: HashMap::new(),
    })
    // ("lua", "progress", uid, activity_id) → progress, worker index
    .command("progress", |s, _ctx, (uid, act): (i64, i32)| {
        let p = s.progress.get(&(uid as u64, act)).copied().unwrap_or(0);
        Ok((p, s.index))
    })
    .on(|s, _ctx, _frame, m: ActivityProgress| {
        let p = s.progress.entry((m.uid, m.activity_id)).or_default();
        *p += i64::from(m.delta);
        Ok(Some(ActivityState {
            uid: m.uid,
            activity_id: m.activity_id,
            progress: *p,
            worker: s.index as i32,
        }))
    });
    Box::new(RpcServer::new(d))
}

/// Start `activity_master` with `workers` workers on `node`; returns the master.
pub fn start(node: &Node, workers: usize, rule: ShardRule) -> Addr {
    ShardMaster::new("activity", workers, Box::new(worker))
        .rule(rule)
        .spawn(node, "activity_master")
}
