//! `activity_master` and its `activity` workers: progress in a timed activity,
//! sharded by uid so one player's progress always lives in one worker.
//!
//! The master is bee-runtime's [`ShardMaster`]: it forwards each message untouched to
//! the worker its rule picks — bee's stable hash `worker_for(uid, n)` by default, or
//! with `rule = "modulo"` the team's own rule, worker `1 + uid % n` (index `uid % n`)
//! and uid 0 to every worker, which `cargo xtask demo` runs (see
//! [`bee_runtime::shard`]). A worker answers `game.ActivityProgress` with
//! `game.ActivityState`, which says which worker (0-based index) holds the uid.

use std::collections::HashMap;

use bee_cluster::native::RpcServer;
use bee_proto::game::{ActivityProgress, ActivityState};
use bee_runtime::shard::{ShardMaster, ShardRule};
use bee_runtime::{Addr, BoxService, Dispatcher, Node, ServiceError};

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
    // Hot update: each worker's progress table survives `bee run --takeover`.
    .carry(export_progress, import_progress)
    // ("lua", "progress", uid, activity_id) → progress, worker index
    .command("progress", |s, (uid, act): (i64, i32)| {
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

/// A worker's progress as bytes: per entry uid (8), activity (4), progress (8),
/// big-endian.
fn export_progress(w: &Worker) -> Vec<u8> {
    let mut out = Vec::with_capacity(w.progress.len() * 20);
    for (&(uid, act), &p) in &w.progress {
        out.extend_from_slice(&uid.to_be_bytes());
        out.extend_from_slice(&act.to_be_bytes());
        out.extend_from_slice(&p.to_be_bytes());
    }
    out
}

fn import_progress(w: &mut Worker, b: &[u8]) -> Result<(), ServiceError> {
    if !b.len().is_multiple_of(20) {
        return Err(ServiceError::msg(format!(
            "activity worker state is 20-byte entries, got {} bytes",
            b.len()
        )));
    }
    for e in b.chunks_exact(20) {
        let uid = u64::from_be_bytes(e[0..8].try_into().expect("8 bytes"));
        let act = i32::from_be_bytes(e[8..12].try_into().expect("4 bytes"));
        let p = i64::from_be_bytes(e[12..20].try_into().expect("8 bytes"));
        w.progress.insert((uid, act), p);
    }
    Ok(())
}

/// Start `activity_master` with `workers` workers on `node`; returns the master.
pub fn start(node: &Node, workers: usize, rule: ShardRule) -> Addr {
    ShardMaster::new("activity", workers, Box::new(worker))
        .rule(rule)
        .spawn(node, "activity_master")
}
