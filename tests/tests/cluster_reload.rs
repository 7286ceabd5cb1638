//! `reload` while traffic runs. A client keeps calling nodes `a` and `b` while its
//! cluster config is reloaded: adding `c` makes calls to `c` work; marking `c` down
//! (`c = false`) makes them fail fast with a readable error; bringing it back makes them
//! work again — and not one call to `a` or `b` fails meanwhile.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bee_cluster::{Cluster, ClusterSettings};
use bee_codec::seri::{self, Value};
use bee_registry::{ClusterConfig, Registry};
use bee_runtime::{Node, RuntimeConfig};
use bee_tests::Layout;

const SERVICES: &str = r#"
[[service]]
kind = "echo"
name = "echo"
"#;

fn config(layout: &Layout, nodes: &[(&str, bool)]) -> ClusterConfig {
    let mut text = String::new();
    for (name, up) in nodes {
        if *up {
            text.push_str(&format!("{name} = \"127.0.0.1:{}\"\n", layout.port(name)));
        } else {
            text.push_str(&format!("{name} = false\n"));
        }
    }
    ClusterConfig::parse_lua(&text).expect("config text")
}

/// Calls `node`'s echo in a loop until stopped; counts successes, records failures.
struct Traffic {
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

fn traffic(client: &Cluster, node: &'static str, stop: &Arc<AtomicBool>) -> Traffic {
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let task = {
        let (client, stop, ok, failures) =
            (client.clone(), stop.clone(), ok.clone(), failures.clone());
        tokio::spawn(async move {
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let request = seri::pack(&[Value::from(node), Value::Integer(i)]).expect("pack");
                match tokio::time::timeout(
                    Duration::from_secs(5),
                    client.call(node, "@echo", request.clone()),
                )
                .await
                {
                    Ok(Ok(reply)) if reply == request => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok(_)) => failures
                        .lock()
                        .unwrap()
                        .push(format!("call {i} to {node}: wrong reply")),
                    Ok(Err(e)) => {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("call {i} to {node}: {e}"));
                        // As a game service would: do not retry a refused call at once.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(_) => failures
                        .lock()
                        .unwrap()
                        .push(format!("call {i} to {node}: no reply within 5 s")),
                }
            }
        })
    };
    Traffic { ok, failures, task }
}

async fn call_c(client: &Cluster) -> Result<(), String> {
    let request = seri::pack(&[Value::from("to c")]).expect("pack");
    match tokio::time::timeout(
        Duration::from_secs(5),
        client.call("c", "@echo", request.clone()),
    )
    .await
    {
        Ok(Ok(reply)) if reply == request => Ok(()),
        Ok(Ok(_)) => panic!("c answered something else"),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => panic!("call to c hung for 5 s"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_marks_down_a_node_while_traffic_runs() {
    let layout = Layout::new(&["a", "b", "c"]);
    let _nodes: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| layout.start(n, SERVICES))
        .collect();

    // The client starts knowing only a and b.
    let node = Node::new("reload-client", RuntimeConfig::default());
    let mut settings = ClusterSettings::default();
    settings.channel.call_timeout = Duration::from_secs(5);
    settings.wait_for_node = Some(Duration::ZERO);
    let client = Cluster::start(
        &node,
        Registry::new(config(&layout, &[("a", true), ("b", true)])),
        settings,
    );

    let stop = Arc::new(AtomicBool::new(false));
    let to_a = traffic(&client, "a", &stop);
    let to_b = traffic(&client, "b", &stop);
    let wait_for_traffic = |t: &Traffic, at_least: u64| {
        let ok = t.ok.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while ok.load(Ordering::Relaxed) < at_least {
                assert!(
                    Instant::now() < deadline,
                    "background traffic does not flow"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for_traffic(&to_a, 20).await;
    wait_for_traffic(&to_b, 20).await;

    // c is unknown: the error says so and names the nodes the config knows.
    let err = call_c(&client)
        .await
        .expect_err("c is not in the config yet");
    assert!(
        err.contains("node c is not in the cluster config") && err.contains("a, b"),
        "error: {err}"
    );

    // Add c: calls to it work at once.
    let diff = client.reload(config(&layout, &[("c", true)]));
    assert_eq!(diff.added.len(), 1, "diff: {diff:?}");
    call_c(&client)
        .await
        .expect("c works after the reload that adds it");

    // A caller of c keeps calling while c is marked down.
    let to_c = traffic(&client, "c", &stop);
    wait_for_traffic(&to_c, 20).await;
    let before = to_a.ok.load(Ordering::Relaxed) + to_b.ok.load(Ordering::Relaxed);
    let diff = client.reload(config(&layout, &[("c", false)]));
    assert_eq!(diff.marked_down, vec!["c".to_string()], "diff: {diff:?}");
    for _ in 0..20 {
        let started = Instant::now();
        let err = call_c(&client).await.expect_err("c is marked down");
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "a call to a down node fails fast"
        );
        assert!(err.contains("node c is marked down"), "error: {err}");
    }
    // Traffic to a and b went on through the reload.
    wait_for_traffic(&to_a, before / 2 + 20).await;

    // Bring c back (same address): calls to it work again.
    let diff = client.reload(config(&layout, &[("c", true)]));
    assert_eq!(diff.brought_up.len(), 1, "diff: {diff:?}");
    call_c(&client)
        .await
        .expect("c works again after it is brought back");

    // A reload that changes nothing about a and b (same addresses) leaves their channels.
    let reconnects_before: u64 = client.senders().iter().map(|(_, s, _)| s.reconnects).sum();
    client.reload(config(&layout, &[("a", true), ("b", true), ("c", true)]));
    let reconnects_after: u64 = client.senders().iter().map(|(_, s, _)| s.reconnects).sum();
    assert_eq!(
        reconnects_before, reconnects_after,
        "an unchanged node keeps its connection"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;

    stop.store(true, Ordering::Relaxed);
    for t in [&to_a, &to_b] {
        assert!(
            t.failures.lock().unwrap().is_empty(),
            "traffic to a/b failed: {:?}",
            t.failures.lock().unwrap()
        );
    }
    let (a, b) = (
        to_a.ok.load(Ordering::Relaxed),
        to_b.ok.load(Ordering::Relaxed),
    );
    println!(
        "calls during the reloads: a {a}, b {b}, c ok {}",
        to_c.ok.load(Ordering::Relaxed)
    );
    // The caller of c saw only readable errors while c was down (never a hang).
    for f in to_c.failures.lock().unwrap().iter() {
        assert!(
            f.contains("marked down") || f.contains("closed"),
            "unexpected failure of a call to c: {f}"
        );
    }
    for t in [to_a, to_b, to_c] {
        tokio::time::timeout(Duration::from_secs(10), t.task)
            .await
            .expect("traffic task stops")
            .expect("traffic task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_moving_a_node_to_a_new_address() {
    let layout = Layout::new(&["a", "b"]);
    let _nodes: Vec<_> = ["a", "b"]
        .iter()
        .map(|n| layout.start(n, SERVICES))
        .collect();
    let node = Node::new("move-client", RuntimeConfig::default());
    let mut settings = ClusterSettings::default();
    settings.channel.call_timeout = Duration::from_secs(5);
    settings.wait_for_node = Some(Duration::ZERO);
    let client = Cluster::start(
        &node,
        Registry::new(config(&layout, &[("a", true), ("b", true)])),
        settings,
    );

    // A name only b has, so the answer shows which process "svc" reaches.
    let echo_b = client.query("b", "echo").await.expect("query b");
    let register = seri::pack(&[
        Value::from("register"),
        Value::from("only_on_b"),
        Value::Integer(echo_b as i64),
    ])
    .expect("pack");
    client
        .call("b", "@bee_clusterd", register)
        .await
        .expect("register on b");

    // "svc" first points at a…
    let svc_at = |port: u16| {
        ClusterConfig::parse_lua(&format!("svc = \"127.0.0.1:{port}\"\n")).expect("config")
    };
    client.reload(svc_at(layout.port("a")));
    let ping = seri::pack(&[Value::from("ping")]).expect("pack");
    assert_eq!(
        client
            .call("svc", "@echo", ping.clone())
            .await
            .expect("svc is a"),
        ping
    );
    let err = client
        .call("svc", "@only_on_b", ping.clone())
        .await
        .expect_err("svc is a, not b");
    assert_eq!(err.remote_text(), "Invalid name");

    // …then moves to b's address: the old connection is closed, the next call uses b.
    let diff = client.reload(svc_at(layout.port("b")));
    assert_eq!(diff.changed.len(), 1, "diff: {diff:?}");
    let reply = client
        .call("svc", "@only_on_b", ping.clone())
        .await
        .expect("svc is now b");
    assert_eq!(reply, ping);
    // a itself was never touched.
    assert_eq!(
        client.call("a", "@echo", ping.clone()).await.expect("a"),
        ping
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_a_node_not_yet_in_the_config_waits_for_the_reload() {
    let layout = Layout::new(&["a", "late"]);
    let _nodes: Vec<_> = ["a", "late"]
        .iter()
        .map(|n| layout.start(n, SERVICES))
        .collect();
    let node = Node::new("wait-client", RuntimeConfig::default());
    let mut settings = ClusterSettings::default();
    settings.channel.call_timeout = Duration::from_secs(5);
    settings.wait_for_node = Some(Duration::from_secs(2));
    let client = Cluster::start(
        &node,
        Registry::new(config(&layout, &[("a", true)])),
        settings,
    );

    // skynet's default: a call to a node the config does not name waits for a reload.
    // The clock starts before the task is spawned: under load the task may first run
    // some milliseconds after the 300 ms below began.
    let started = Instant::now();
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move {
            let r = client
                .call(
                    "late",
                    "@echo",
                    seri::pack(&[Value::from("hi")]).expect("pack"),
                )
                .await;
            (r, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the call waits for the config to name the node"
    );
    client.reload(config(&layout, &[("late", true)]));
    let (result, took) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting call ends after the reload")
        .expect("task");
    result.expect("the call goes through once the node is named");
    assert!(took >= Duration::from_millis(300), "it did wait: {took:?}");

    // With __nowaiting = true such a call fails at once instead.
    let nowait = ClusterConfig::parse_lua("__nowaiting = true\n").expect("config");
    client.reload(nowait);
    let started = Instant::now();
    let err = client
        .call("never", "@echo", seri::pack(&[]).expect("pack"))
        .await
        .expect_err("never is not in the config");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "no wait with __nowaiting"
    );
    assert!(
        err.to_string()
            .contains("node never is not in the cluster config"),
        "{err}"
    );

    // Without it, a node that never appears fails after the wait, naming what is known.
    client.reload(ClusterConfig::parse_lua("__nowaiting = false\n").expect("config"));
    let started = Instant::now();
    let err = client
        .call("never", "@echo", seri::pack(&[]).expect("pack"))
        .await
        .expect_err("never is not in the config");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "waited {took:?}"
    );
    assert!(err.to_string().contains("known: a, late"), "{err}");
}
