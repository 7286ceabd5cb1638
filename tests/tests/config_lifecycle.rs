//! What other nodes learn when a node restarts or moves. A numeric address
//! obtained by `query` before a node restarted is refused afterwards with an error saying
//! the node restarted (never delivered to whatever now has that number); the client's
//! channel learns the new incarnation on reconnect; `Cluster::watch` gives "moved" and
//! "restarted" events in the order they happened.

use std::time::{Duration, Instant};

use bee_cluster::{Cluster, ClusterSettings};
use bee_codec::seri::{self, Value};
use bee_registry::{Registry, RegistryEvent};
use bee_runtime::{Node, RuntimeConfig};
use bee_tests::{bee_cli, free_port, BeeProcess, Layout};
use tokio::sync::broadcast;

const SERVICES: &str = "[[service]]\nkind = \"echo\"\nname = \"echo\"\n\n[[service]]\nkind = \"sink\"\nname = \"sink\"\n";

/// The next `NodeMoved` or `PeerRestarted` event (others skipped), within 5 s.
async fn next_event(rx: &mut broadcast::Receiver<RegistryEvent>) -> RegistryEvent {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Ok(e @ (RegistryEvent::NodeMoved { .. } | RegistryEvent::PeerRestarted { .. }))) => {
                return e
            }
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => panic!("watch ended: {e}"),
            Err(_) => panic!("no event within 5 s"),
        }
    }
}

async fn echo(
    client: &Cluster,
    node: &str,
    target: impl Into<bee_runtime::Target>,
) -> Result<(), String> {
    let payload = seri::pack(&[Value::from("hi")]).unwrap();
    match client.call(node, target, payload.clone()).await {
        Ok(r) if r == payload => Ok(()),
        Ok(_) => Err("wrong reply".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// `w`: an in-process node of the layout's cluster, listening (so pushes and name
/// notices reach it too), to watch the others from.
async fn watcher(layout: &Layout) -> (Node, Cluster) {
    let node = Node::new("w", RuntimeConfig::default());
    let mut settings = ClusterSettings::default();
    settings.channel.call_timeout = Duration::from_secs(5);
    let w = Cluster::start(
        &node,
        Registry::load_file("w", &layout.cluster_file()).unwrap(),
        settings,
    );
    w.open("w").await.expect("w listens");
    (node, w)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_stale_numeric_address_is_refused_after_a_restart_with_a_clear_error() {
    let layout = Layout::new(&["b"]);
    let mut b = layout.start("b", SERVICES);
    let (_client_node, client) = layout.client(Duration::from_secs(5));
    let mut events = client.watch();

    let echo_addr = client.query("b", "echo").await.expect("query echo");
    let sink_addr = client.query("b", "sink").await.expect("query sink");
    echo(&client, "b", echo_addr)
        .await
        .expect("the queried address works");
    // The first hello is learnt, not announced.
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.registry().peer_incarnation("b").is_none() {
        assert!(Instant::now() < deadline, "no hello from b");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first = client.registry().peer_incarnation("b").unwrap();

    b.restart();
    // The old numbers are refused, saying why, however the new run numbered its services.
    let mut err = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    for addr in [echo_addr, sink_addr] {
        loop {
            match echo(&client, "b", addr).await {
                Ok(()) => panic!("a stale address reached a service of the new run"),
                // The first call after the restart may meet the dying connection.
                Err(e) if e.contains("from before b restarted") => {
                    err = e;
                    break;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "no clear error: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    assert!(
        err.contains("on node b: this run of b (up ")
            && err.contains("never had that address; it is from before b restarted")
            && err.contains("query the name again"),
        "{err}"
    );
    // The name works, and gives a new address.
    echo(&client, "b", "@echo")
        .await
        .expect("@echo after restart");
    let new_addr = client.query("b", "echo").await.unwrap();
    assert_ne!(new_addr, echo_addr);
    echo(&client, "b", new_addr)
        .await
        .expect("the new address works");

    match next_event(&mut events).await {
        RegistryEvent::PeerRestarted {
            node,
            previous,
            incarnation,
        } => {
            assert_eq!((node.as_str(), previous), ("b", first));
            assert!(incarnation > first);
        }
        other => panic!("expected b restarted, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_watch_sees_moved_and_restarted_in_order() {
    let layout = Layout::new(&["w", "a", "b"]);
    std::fs::write(
        layout.cluster_file(),
        format!(
            "__version = 1\nw = \"127.0.0.1:{}\"\na = \"127.0.0.1:{}\"\nb = \"127.0.0.1:{}\"\n",
            layout.port("w"),
            layout.port("a"),
            layout.port("b")
        ),
    )
    .unwrap();
    let mut a = layout.start("a", SERVICES);
    let mut b = layout.start("b", SERVICES);

    // w: an in-process node of the cluster, listening, so pushes reach it too.
    let (_node, w) = watcher(&layout).await;
    let mut events = w.watch();
    for n in ["a", "b"] {
        w.hello(n).await.expect("hello");
    }

    // a moves: a new process on another port, announced by a push.
    a.kill9();
    let new_port = free_port();
    let v2_text = format!(
        "__version = 2\nw = \"127.0.0.1:{}\"\na = \"127.0.0.1:{new_port}\"\nb = \"127.0.0.1:{}\"\n",
        layout.port("w"),
        layout.port("b")
    );
    let v2 = layout.dir.path().join("v2.lua");
    std::fs::write(&v2, &v2_text).unwrap();
    let a2_cfg = layout.dir.path().join("a2.toml");
    std::fs::write(
        &a2_cfg,
        format!("name = \"a\"\ncluster = \"v2.lua\"\n{SERVICES}"),
    )
    .unwrap();
    let _a2 = BeeProcess::start("a", &a2_cfg);
    let cluster = layout.cluster_file();
    let (ok, out, err) = bee_cli(&[
        "config",
        "push",
        "--cluster",
        cluster.to_str().unwrap(),
        v2.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("w ") && l.contains("applied")),
        "{out}"
    );
    assert_eq!(w.registry().meta().version, 2);
    let first = next_event(&mut events).await;
    assert_eq!(
        first,
        RegistryEvent::NodeMoved {
            node: "a".into(),
            from: format!("127.0.0.1:{}", layout.port("a")),
            to: format!("127.0.0.1:{new_port}"),
        }
    );
    assert_eq!(
        first.to_string(),
        format!(
            "a moved 127.0.0.1:{} -> 127.0.0.1:{new_port}",
            layout.port("a")
        )
    );

    // b restarts; w's next call to it reconnects and learns the new run.
    b.restart();
    let deadline = Instant::now() + Duration::from_secs(5);
    while echo(&w, "b", "@echo").await.is_err() {
        assert!(Instant::now() < deadline, "b does not come back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = next_event(&mut events).await;
    assert!(
        matches!(&second, RegistryEvent::PeerRestarted { node, .. } if node == "b"),
        "{second}"
    );
    assert!(second.to_string().starts_with("b restarted "), "{second}");

    // Then w calls the moved a: a new process there too.
    echo(&w, "a", "@echo").await.expect("a at its new port");
    let third = next_event(&mut events).await;
    assert!(
        matches!(&third, RegistryEvent::PeerRestarted { node, .. } if node == "a"),
        "{third}"
    );
}

/// The next `PeerNamesChanged` or `PeerRestarted` event (others skipped), within 5 s.
async fn next_peer_event(rx: &mut broadcast::Receiver<RegistryEvent>) -> RegistryEvent {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Ok(
                e @ (RegistryEvent::PeerNamesChanged { .. } | RegistryEvent::PeerRestarted { .. }),
            )) => return e,
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => panic!("watch ended: {e}"),
            Err(_) => panic!("no peer event within 5 s"),
        }
    }
}

/// `bee_clusterd` on `node`: a console command.
async fn clusterd(client: &Cluster, node: &str, args: &[Value]) -> Vec<Value> {
    let mut payload = vec![Value::from("lua")];
    payload.extend_from_slice(args);
    let reply = client
        .call(node, "@bee_clusterd", seri::pack(&payload).unwrap())
        .await
        .expect("bee_clusterd answers");
    seri::unpack(&reply).unwrap()
}

/// Wait until node `node`'s recent events (`bee_clusterd events`) hold a line containing
/// `text`; returns how long that took.
async fn wait_event_line(client: &Cluster, node: &str, text: &str) -> Duration {
    let started = Instant::now();
    loop {
        let lines = clusterd(client, node, &[Value::from("events")]).await;
        if lines
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains(text)))
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{node} did not see {text:?} within 3 s; its events: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// "Names of X changed": b registers a name, re-points one and drops one while running;
/// a (a real bee process) and w (in process, `Cluster::watch`) that talked to b learn it
/// within a bounded time, without b restarting. After b restarts, w sees the restart
/// first, then the names of the new run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_watch_sees_names_of_a_peer_change_without_a_restart() {
    let layout = Layout::new(&["w", "a", "b"]);
    let _a = layout.start("a", SERVICES);
    let mut b = layout.start("b", SERVICES);
    let (_node, w) = watcher(&layout).await;
    let mut events = w.watch();
    // w and a say hello to b: they learn its names (no event: nothing known before).
    let hello = w.hello("b").await.expect("hello b");
    let (_, names) = hello.names.expect("a bee node sends its names");
    assert!(
        names.contains_key("echo") && names.contains_key("sink"),
        "{names:?}"
    );
    assert!(!names.keys().any(|n| n.starts_with('.')), "{names:?}");
    clusterd(&w, "a", &[Value::from("ping"), Value::from("b")]).await;

    // b registers a new name (its echo service, as "extra").
    let echo_addr = w.query("b", "echo").await.unwrap();
    clusterd(
        &w,
        "b",
        &[
            Value::from("register"),
            Value::from("extra"),
            Value::Integer(i64::from(echo_addr)),
        ],
    )
    .await;
    let event = next_peer_event(&mut events).await;
    assert_eq!(
        event,
        RegistryEvent::PeerNamesChanged {
            node: "b".into(),
            added: vec!["extra".into()],
            removed: vec![],
            moved: vec![],
        }
    );
    assert_eq!(event.to_string(), "names of b changed: added extra");
    let took = wait_event_line(&w, "a", "names of b changed: added extra").await;
    println!("a saw b's new name after {took:?}");

    // b points "sink" at echo and drops "extra": one event each, in order.
    clusterd(
        &w,
        "b",
        &[
            Value::from("register"),
            Value::from("sink"),
            Value::Integer(i64::from(echo_addr)),
        ],
    )
    .await;
    let event = next_peer_event(&mut events).await;
    assert_eq!(event.to_string(), "names of b changed: moved sink");
    clusterd(&w, "b", &[Value::from("unregister"), Value::from("extra")]).await;
    let event = next_peer_event(&mut events).await;
    assert_eq!(event.to_string(), "names of b changed: removed extra");
    wait_event_line(&w, "a", "names of b changed: removed extra").await;
    assert!(!w
        .registry()
        .peer_names("b")
        .unwrap()
        .names
        .contains_key("extra"));

    // b restarts: w's next call learns the new run, then its names (all at new addresses).
    b.restart();
    let deadline = Instant::now() + Duration::from_secs(5);
    while echo(&w, "b", "@echo").await.is_err() {
        assert!(Instant::now() < deadline, "b does not come back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = next_peer_event(&mut events).await;
    assert!(
        matches!(&first, RegistryEvent::PeerRestarted { node, .. } if node == "b"),
        "{first}"
    );
    let second = next_peer_event(&mut events).await;
    match &second {
        RegistryEvent::PeerNamesChanged {
            node,
            added,
            removed,
            moved,
        } => {
            assert_eq!(node, "b");
            // The new run has its config names again ("sink" at the sink service);
            // "extra" was gone already.
            assert!(added.is_empty() && removed.is_empty(), "{second}");
            assert!(moved.contains(&"echo".to_string()), "{second}");
        }
        other => panic!("expected the names of b's new run, got {other}"),
    }
}
