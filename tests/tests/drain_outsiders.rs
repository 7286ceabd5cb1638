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

/// The `goaway` a draining node sends its config peers through their `bee_clusterd` is a
/// notice: it is recorded, and it retires no connection. Only the in-band `goaway` on a
/// connection retires that connection. (The notice travels on another connection and can
/// arrive after the peer has connected to the draining node's successor; retiring that
/// connection put the peer's next messages on a third one, where they could overtake
/// messages still held on the second.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goaway_notice_through_bee_clusterd_retires_no_connection() {
    let layout = Layout::new(&["target"]);
    let _target = tokio::task::block_in_place(|| {
        layout.start("target", "[[service]]\nkind = \"echo\"\nname = \"echo\"\n")
    });
    let (node, client) = layout.client(Duration::from_secs(5));
    let payload = seri::pack(&[Value::from("hi")]).expect("pack");
    client
        .call("target", "echo", payload.clone())
        .await
        .expect("first call");
    let channel = |c: &bee_cluster::Cluster| {
        c.senders()
            .into_iter()
            .find(|(n, ..)| n == "target")
            .map(|(_, stats, _)| stats)
            .expect("a channel to target")
    };
    let before = channel(&client);
    assert!(before.connected, "connected after the first call");

    let has_channel: bool = client
        .call_lua(node.name(), "bee_clusterd", "goaway", "target")
        .await
        .expect("the goaway notice is answered");
    assert!(
        has_channel,
        "the notice says the client has a channel to target"
    );
    assert!(
        client
            .recent_events()
            .iter()
            .any(|(_, e)| e.contains("target is draining")),
        "the notice is recorded: {:?}",
        client.recent_events()
    );

    client
        .call("target", "echo", payload)
        .await
        .expect("a call after the notice");
    let after = channel(&client);
    assert!(
        after.connected && after.reconnects == before.reconnects,
        "the call after the notice went on the same connection (reconnects {} -> {})",
        before.reconnects,
        after.reconnects
    );
}
