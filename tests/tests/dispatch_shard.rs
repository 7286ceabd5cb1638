//! uid sharding under failure, between real sockets: a `ShardMaster` on an in-process
//! node listening on loopback, called from another in-process node. A worker that stops
//! is restarted fresh for the next message; callers whose messages were queued in it get
//! errors — every call is answered, none vanishes.

mod dispatch_common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bee_cluster::Cluster;
use bee_codec::seri::Value;
use bee_runtime::shard::{worker_for, ShardMaster, WorkerFactory};
use bee_runtime::{Addr, Dispatcher, Node, ServiceError};
use bee_tests::Layout;
use dispatch_common::*;

const WORKERS: usize = 8;

/// A worker's state: which worker it is, which incarnation, hits per uid.
struct W {
    index: usize,
    instance: i64,
    hits: HashMap<i64, i64>,
}

/// Worker factory: each worker made gets a new instance number from `counter`.
/// - `("lua", "hit", uid)` → index, instance, hits for uid so far (this one included);
/// - `("lua", "slow", uid, ms)` → index, instance after `ms` milliseconds;
/// - `("lua", "quit", uid)` → `"bye"`, then the worker stops.
fn factory(counter: Arc<AtomicI64>) -> WorkerFactory {
    Box::new(move |index| {
        let state = W {
            index,
            instance: counter.fetch_add(1, Ordering::SeqCst),
            hits: HashMap::new(),
        };
        let d = Dispatcher::new(state)
            .command("hit", |s, uid: i64| {
                let h = s.hits.entry(uid).or_default();
                *h += 1;
                Ok((s.index, s.instance, *h))
            })
            .command_async("slow", |h, (_uid, ms): (i64, u64)| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, ServiceError>(h.state(|s| (s.index, s.instance)))
            })
            .command_ctx("quit", |_s, ctx, _uid: i64| {
                ctx.exit();
                Ok("bye")
            });
        Box::new(d)
    })
}

/// The shard node (`tshard`, `@master`), and a client node (keep it alive) calling it
/// over loopback.
async fn setup() -> (Layout, Node, Node, Cluster) {
    let layout = Layout::new(&["tshard"]);
    let (node, cluster) = listening_node(&layout, "tshard").await;
    let master =
        ShardMaster::new("w", WORKERS, factory(Arc::new(AtomicI64::new(1)))).spawn(&node, "master");
    cluster.register("master", master).unwrap();
    let (client, c) = layout.client(CALL_TIMEOUT);
    (layout, node, client, c)
}

async fn hit(c: &Cluster, uid: u64) -> (usize, i64, i64) {
    let r = values(
        &c.call(
            "tshard",
            "master",
            lua(&[Value::from("hit"), Value::Integer(uid as i64)]),
        )
        .await
        .expect("hit"),
    );
    (
        r[0].as_int().unwrap() as usize,
        r[1].as_int().unwrap(),
        r[2].as_int().unwrap(),
    )
}

async fn workers(c: &Cluster) -> Vec<Addr> {
    values(
        &c.call("tshard", "master", lua(&[Value::from("shard_workers")]))
            .await
            .unwrap(),
    )
    .iter()
    .map(|v| v.as_int().unwrap() as Addr)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_worker_is_restarted_fresh() {
    let (_layout, node, _client, c) = setup().await;
    let uid = 10076447u64;
    let i = worker_for(uid, WORKERS);
    let other = (1..).find(|u| worker_for(*u, WORKERS) != i).unwrap();
    let j = worker_for(other, WORKERS);

    let (wi, inst0, n) = hit(&c, uid).await;
    assert_eq!((wi, n), (i, 1));
    assert_eq!(hit(&c, uid).await, (i, inst0, 2));
    let (wj, inst_j, _) = hit(&c, other).await;
    assert_eq!(wj, j);

    // Killed through the node API.
    let before = workers(&c).await;
    assert!(node.kill(before[i]), "worker {i} was running");
    assert!(!node.is_alive(before[i]));
    let (wi, inst1, n) = hit(&c, uid).await;
    assert_eq!(
        (wi, n),
        (i, 1),
        "served by worker {i} again, with fresh state"
    );
    assert_ne!(inst1, inst0, "a new worker, not the killed one");
    let after = workers(&c).await;
    assert_ne!(after[i], before[i]);
    assert!(node.is_alive(after[i]));
    for k in (0..WORKERS).filter(|k| *k != i) {
        assert_eq!(after[k], before[k], "worker {k} untouched");
    }
    assert_eq!(
        hit(&c, other).await,
        (j, inst_j, 2),
        "other workers keep their state"
    );

    // A worker that stops by itself (exits) is restarted the same way.
    let r = c
        .call(
            "tshard",
            "master",
            lua(&[Value::from("quit"), Value::Integer(uid as i64)]),
        )
        .await
        .unwrap();
    assert_eq!(values(&r), vec![Value::from("bye")]);
    let (wi, inst2, n) = hit(&c, uid).await;
    assert_eq!((wi, n), (i, 1));
    assert!(inst2 != inst1 && inst2 != inst0);
    node.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_queued_in_a_killed_worker_all_get_answers() {
    let (_layout, node, _client, c) = setup().await;
    let uid = 42u64;
    let i = worker_for(uid, WORKERS);
    let addr = workers(&c).await[i];
    const SENT: usize = 40;

    let calls: Vec<_> = (0..SENT)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                c.call(
                    "tshard",
                    "master",
                    lua(&[
                        Value::from("slow"),
                        Value::Integer(uid as i64),
                        Value::Integer(25),
                    ]),
                )
                .await
            })
        })
        .collect();
    // Wait until most of them sit in the worker's mailbox, then kill it.
    let queued = || {
        node.services()
            .into_iter()
            .find(|s| s.addr == addr)
            .map(|s| s.queued)
            .unwrap_or(0)
    };
    assert!(
        eventually(Duration::from_secs(5), || async { queued() >= 20 }).await,
        "calls did not queue up in worker {i} (queued {})",
        queued()
    );
    assert!(node.kill(addr));

    let (mut ok, mut gone) = (0, 0);
    for call in calls {
        match tokio::time::timeout(Duration::from_secs(5), call).await {
            Ok(Ok(Ok(r))) => {
                assert_eq!(values(&r)[0], Value::from(i));
                ok += 1;
            }
            Ok(Ok(Err(e))) => {
                let t = e.to_string();
                assert!(
                    t.contains("stopped before it replied") && t.contains("w["),
                    "not a ServiceGone: {t}"
                );
                gone += 1;
            }
            Ok(Err(join)) => panic!("caller task failed: {join}"),
            Err(_) => panic!("a call queued in the killed worker was never answered"),
        }
    }
    eprintln!("{SENT} calls: {ok} answered by the worker, {gone} refused as ServiceGone");
    assert_eq!(ok + gone, SENT, "every call answered");
    assert!(
        gone >= 1,
        "the queued calls were refused (ok {ok}, gone {gone})"
    );
    assert!(ok >= 1, "the call in hand was finished");

    // The next message for that uid gets a fresh worker.
    let r = values(
        &c.call(
            "tshard",
            "master",
            lua(&[
                Value::from("slow"),
                Value::Integer(uid as i64),
                Value::Integer(0),
            ]),
        )
        .await
        .expect("served after the kill"),
    );
    assert_eq!(r[0], Value::from(i));
    assert_ne!(workers(&c).await[i], addr);
    node.shutdown();
}
