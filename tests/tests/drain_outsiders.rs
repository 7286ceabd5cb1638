//! Draining with a caller that is not in the node's cluster config (a client node, a
//! tool): SIGTERM'd while such a caller keeps calling it, a `bee` node tells that
//! connection `goaway` in-band, serves it no new calls, and finishes its drain instead of
//! serving the outsider until the drain deadline.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bee_codec::seri::{self, Value};
use bee_tests::Layout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_outside_the_config_does_not_hold_a_draining_node() {
    let layout = Layout::new(&["target"]);
    // The drain deadline is shorter than the 10 s `terminate` waits for the exit.
    let mut target = layout.start_logged(
        "target",
        "drain_timeout_ms = 8000\n\n[[service]]\nkind = \"echo\"\nname = \"echo\"\n",
    );
    // An in-process client node: not in the cluster config.
    let (_node, client) = layout.client(Duration::from_secs(5));
    let payload = seri::pack(&[Value::from("hi")]).expect("pack");
    client
        .call("target", "echo", payload.clone())
        .await
        .expect("served before the drain");
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (client, payload, stop, served) = (
                client.clone(),
                payload.clone(),
                stop.clone(),
                served.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if client.call("target", "echo", payload.clone()).await.is_ok() {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();
    // Load running (the hello that marks the connection as a bee node's went out).
    while served.load(Ordering::Relaxed) < 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let exited = tokio::task::spawn_blocking(move || {
        let ok = target.terminate();
        (ok, target)
    })
    .await
    .expect("terminate");
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.await.expect("caller");
    }
    let (clean, target) = exited;
    let log = target.log();
    assert!(clean, "the node exits cleanly after SIGTERM:\n{log}");
    assert!(
        !log.contains("drain deadline passed"),
        "the outsider kept the node from draining:\n{log}"
    );
}
