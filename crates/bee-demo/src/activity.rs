//! `activity_master` and its `activity` workers: progress in a timed activity,
//! sharded by uid so one player's progress always lives in one worker.
//!
//! The master is bee-dispatch's [`ShardMaster`]: it forwards each message untouched to
//! worker `worker_for(uid, n)` (a documented, stable hash — see
//! [`bee_dispatch::shard`]). A worker answers `game.ActivityProgress` with
//! `game.ActivityState`, which says which worker holds the uid.

use std::collections::HashMap;

use bee_codec::Value;
use bee_dispatch::shard::ShardMaster;
use bee_dispatch::{Addr, Dispatcher, LuaTable, Node, Service, TextTable};
use bee_proto::game::{ActivityProgress, ActivityState};

/// One worker's state: progress per (uid, activity).
#[derive(Debug, Default)]
pub struct Worker {
    index: usize,
    progress: HashMap<(u64, i32), i64>,
}

/// Build worker number `index`.
pub fn worker(index: usize) -> Box<dyn Service> {
    Box::new(
        Dispatcher::new(Worker {
            index,
            progress: HashMap::new(),
        })
        .lua(
            LuaTable::new().command("progress", |s: &mut Worker, _ctx, args| {
                // ("lua", "progress", uid, activity_id) → progress, worker index
                let uid = args.first().and_then(Value::as_int).unwrap_or(0) as u64;
                let act = args.get(1).and_then(Value::as_int).unwrap_or(0) as i32;
                let p = s.progress.get(&(uid, act)).copied().unwrap_or(0);
                Ok(vec![Value::from(p), Value::from(s.index as i64)])
            }),
        )
        .text(
            TextTable::new().on(|s: &mut Worker, _ctx, _frame, m: ActivityProgress| {
                let p = s.progress.entry((m.uid, m.activity_id)).or_default();
                *p += i64::from(m.delta);
                Ok(Some(ActivityState {
                    uid: m.uid,
                    activity_id: m.activity_id,
                    progress: *p,
                    worker: s.index as i32,
                }))
            }),
        ),
    )
}

/// Start `activity_master` with `workers` workers on `node`; returns the master.
pub fn start(node: &Node, workers: usize) -> Addr {
    ShardMaster::new("activity", workers, Box::new(worker)).spawn(node, "activity_master")
}
