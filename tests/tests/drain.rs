//! Graceful drain and riding through a restart (issue 12): a `bee` node serving three
//! steady streams of sequenced calls and pushes from another node is stopped with SIGTERM
//! and started again. The stopped node refuses new peers, tells its bee peers `goaway`,
//! answers what it accepted and exits; the caller (with `ride_through`) holds what it
//! sends meanwhile and delivers it to the new process. Checked: zero failed calls, every
//! push delivered exactly once (the old process's drain line + the new one's count), and
//! — the control — without `ride_through` the same restart does fail calls.

mod dispatch_common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bee_codec::seri::Value;
use bee_dispatch::Cluster;
use bee_tests::Layout;
use dispatch_common::{pack, riding_node, values};

const TARGET: &str = "[[service]]\nkind = \"echo\"\nname = \"echo\"\n\n\
                      [[service]]\nkind = \"sink\"\nname = \"sink\"\n";

struct Load {
    calls: AtomicU64,
    failed: AtomicU64,
    pushes: AtomicU64,
    refused: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
    stop: AtomicBool,
}

/// One stream: call `echo` with a sequence number (the reply must be that number), push
/// it to `sink`, again, until told to stop.
async fn stream(c: Cluster, load: Arc<Load>, id: i64) {
    let mut seq = 0i64;
    while !load.stop.load(Ordering::Relaxed) {
        seq += 1;
        let v = id * 1_000_000 + seq;
        match c.call("target", "echo", pack(&[Value::Integer(v)])).await {
            Ok(r) if values(&r) == vec![Value::Integer(v)] => {}
            Ok(r) => panic!("echo answered {:?} to {v}", values(&r)),
            Err(e) => {
                load.failed.fetch_add(1, Ordering::Relaxed);
                load.first_error
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| e.to_string());
            }
        }
        load.calls.fetch_add(1, Ordering::Relaxed);
        match c.send("target", "sink", pack(&[Value::Integer(v)])).await {
            Ok(()) => load.pushes.fetch_add(1, Ordering::Relaxed),
            Err(_) => load.refused.fetch_add(1, Ordering::Relaxed),
        };
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Run the restart under load; returns the load counters, the pushes the old process
/// handled (from its drain line) and the pushes the new one counted.
async fn restart_under_load(ride_through_ms: u64) -> (Arc<Load>, Option<u64>, u64) {
    // The drain line is logged at info.
    std::env::set_var("BEE_LOG", "info");
    let layout = Layout::new(&["target", "client"]);
    let mut target = tokio::task::block_in_place(|| layout.start_logged("target", TARGET));
    let (node, cluster) = riding_node(
        &layout,
        "client",
        "client",
        Duration::from_millis(ride_through_ms),
    )
    .await;

    let load = Arc::new(Load {
        calls: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        pushes: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        first_error: Default::default(),
        stop: AtomicBool::new(false),
    });
    let streams: Vec<_> = (1..=3)
        .map(|id| tokio::spawn(stream(cluster.clone(), load.clone(), id)))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = load.calls.load(Ordering::Relaxed);
    assert!(before > 10, "the load runs: {before} calls");
    // SIGTERM: waits until the old process has drained and exited; then a new one.
    let clean = tokio::task::block_in_place(|| target.terminate());
    assert!(clean, "the drained node exits cleanly:\n{}", target.log());
    tokio::task::block_in_place(|| target.restart());
    tokio::time::sleep(Duration::from_millis(700)).await;
    load.stop.store(true, Ordering::Relaxed);
    for s in streams {
        s.await.unwrap();
    }
    let log = target.log();
    let old = log
        .lines()
        .find(|l| l.contains("drained in"))
        .and_then(|l| l.split("sink:").nth(1))
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        });
    let new = if ride_through_ms > 0 {
        let r = cluster
            .call("target", "sink", pack(&[Value::from("count")]))
            .await
            .expect("the new process counts");
        values(&r)[0].as_int().unwrap() as u64
    } else {
        0
    };
    println!("{log}");
    node.shutdown();
    (load, old, new)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_drain_and_ride_through_loses_nothing() {
    let (load, old, new) = restart_under_load(5_000).await;
    let calls = load.calls.load(Ordering::Relaxed);
    let failed = load.failed.load(Ordering::Relaxed);
    assert_eq!(
        failed,
        0,
        "no call fails across the restart ({calls} calls; first error: {:?})",
        load.first_error.lock().unwrap()
    );
    assert_eq!(load.refused.load(Ordering::Relaxed), 0, "no push refused");
    let pushes = load.pushes.load(Ordering::Relaxed);
    let old = old.expect("the old process logged its drain line with the sink's count");
    assert!(
        old > 0 && new > 0,
        "both processes got pushes: {old} + {new}"
    );
    assert_eq!(
        old + new,
        pushes,
        "every push delivered exactly once: old {old} + new {new} of {pushes}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ride_through_the_same_restart_fails_calls() {
    let (load, old, _) = restart_under_load(0).await;
    assert!(old.is_some(), "the old process drained");
    let failed = load.failed.load(Ordering::Relaxed) + load.refused.load(Ordering::Relaxed);
    assert!(
        failed > 0,
        "calls and pushes to a node that is not there fail at once without ride_through"
    );
}
