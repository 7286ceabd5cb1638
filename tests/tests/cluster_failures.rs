//! Failure behaviour: every way a cluster call can fail gives the caller a prompt,
//! readable error, and the nodes keep serving. Unknown node, a node in the config that is
//! not up, a peer killed with SIGKILL while 64 calls wait (then restarted on the same
//! port, reached again by the same caller), unknown names, a dead service, a handler
//! error, a call timeout, and a clean SIGTERM shutdown.

use std::future::Future;
use std::time::{Duration, Instant};

use bee_cluster::{CallErrorExt, Cluster};
use bee_codec::seri::{self, Value};
use bee_registry::RegistryError;
use bee_runtime::{CallError, Target};
use bee_tests::Layout;
use bee_transport::TransportError;
use bytes::Bytes;

const SERVICES: &str = r#"
[[service]]
kind = "echo"
name = "echo"

[[service]]
kind = "sink"
name = "sink"

[[service]]
kind = "slow"
name = "slow"
"#;

fn pack(values: &[Value]) -> Bytes {
    seri::pack(values).expect("pack")
}

fn s(text: &str) -> Value {
    Value::from(text)
}

/// Await `fut`, failing the test if it takes longer than `limit`.
async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {limit:?}"))
}

/// A call that must fail within `limit`; returns the error text.
async fn fails(
    client: &Cluster,
    node: &str,
    target: impl Into<Target>,
    payload: Bytes,
    limit: Duration,
) -> String {
    fails_with(client, node, target, payload, limit).await.1
}

/// [`fails`], also handing back the error itself, to match on its kind.
async fn fails_with(
    client: &Cluster,
    node: &str,
    target: impl Into<Target>,
    payload: Bytes,
    limit: Duration,
) -> (CallError, String) {
    let started = Instant::now();
    let result = within(limit, "a failing call", client.call(node, target, payload)).await;
    let err = result.expect_err("the call must fail");
    println!("failed after {:?}: {err}", started.elapsed());
    if let CallError::Remote { node: said_by, .. } = &err {
        // An error the remote node answered with names that node.
        assert_eq!(said_by, node);
        assert!(
            err.to_string()
                .ends_with(&format!("(error from node {node})")),
            "{err}"
        );
    }
    // The remote's own words, as a Lua caller sees them.
    let text = err.remote_text();
    (err, text)
}

async fn echo_works(client: &Cluster, node: &str) {
    let request = pack(&[s("still"), s("serving")]);
    let reply = within(
        Duration::from_secs(10),
        "echo",
        client.call(node, "@echo", request.clone()),
    )
    .await
    .unwrap_or_else(|e| panic!("echo on {node}: {e}"));
    assert_eq!(reply, request);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_node_error_names_the_known_nodes() {
    let layout = Layout::new(&["a", "b", "c"]);
    let _a = layout.start("a", SERVICES);
    let (_node, client) = layout.client(Duration::from_secs(10));

    let err = fails(
        &client,
        "nosuchnode",
        "@echo",
        pack(&[s("x")]),
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(
        err,
        "node nosuchnode is not in the cluster config (known: a, b, c)"
    );
    let err = within(
        Duration::from_secs(1),
        "send",
        client.send("nosuchnode", "@sink", pack(&[])),
    )
    .await
    .expect_err("send to an unknown node");
    assert!(
        matches!(err.registry(), Some(RegistryError::UnknownNode { node, .. }) if node == "nosuchnode"),
        "send error: {err:?}"
    );
    assert!(
        err.to_string().contains("not in the cluster config"),
        "send error: {err}"
    );
    let err = within(
        Duration::from_secs(1),
        "query",
        client.query("nosuchnode", "echo"),
    )
    .await
    .expect_err("query on an unknown node");
    assert!(
        err.to_string().contains("not in the cluster config"),
        "query error: {err}"
    );
    echo_works(&client, "a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_in_config_but_not_up_fails_promptly() {
    let layout = Layout::new(&["a", "down"]);
    let _a = layout.start("a", SERVICES);
    let (_node, client) = layout.client(Duration::from_secs(10));
    let port = layout.port("down");

    for attempt in 0..3 {
        let err = fails(
            &client,
            "down",
            "@echo",
            pack(&[s("x")]),
            Duration::from_secs(2),
        )
        .await;
        assert!(
            err.contains(&format!("cannot connect to node down at 127.0.0.1:{port}")),
            "attempt {attempt}: {err}"
        );
    }
    let err = within(
        Duration::from_secs(2),
        "send",
        client.send("down", "@sink", pack(&[])),
    )
    .await
    .expect_err("push to a node that is not up");
    assert!(
        matches!(err.transport(), Some(TransportError::Connect { node, .. }) if node == "down"),
        "send error: {err:?}"
    );
    assert!(err.is_node_down(), "{err:?}");
    assert!(
        err.to_string().contains("cannot connect to node down"),
        "send error: {err}"
    );
    // The node that is up is not disturbed.
    echo_works(&client, "a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_killed_with_calls_in_flight_then_restarted() {
    let layout = Layout::new(&["victim"]);
    let mut victim = layout.start("victim", SERVICES);
    let (_node, client) = layout.client(Duration::from_secs(60));
    echo_works(&client, "victim").await;

    // 64 calls that would take 30 s each.
    let calls: Vec<_> = (0..64)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let r = client
                    .call(
                        "victim",
                        "@slow",
                        pack(&[Value::Integer(30_000), Value::Integer(i)]),
                    )
                    .await;
                (r, Instant::now())
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let in_flight = client.senders().first().map_or(0, |(_, s, _)| s.in_flight);
        if in_flight == 64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {in_flight} of 64 calls got in flight"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let killed = Instant::now();
    victim.kill9();
    for (i, call) in calls.into_iter().enumerate() {
        let (result, at) = within(Duration::from_secs(5), "a call to the killed node", call)
            .await
            .expect("task");
        let err = result
            .expect_err("the node was killed before it answered")
            .to_string();
        if i == 0 {
            println!("a call waiting when the node was killed: {err}");
        }
        assert!(err.contains("node victim went down"), "call {i}: {err}");
        assert!(
            at.duration_since(killed) < Duration::from_secs(3),
            "call {i} failed late"
        );
    }
    assert_eq!(
        client.senders()[0].1.in_flight,
        0,
        "no call is left waiting"
    );

    // While it is down: prompt connect errors.
    let err = fails(
        &client,
        "victim",
        "@echo",
        pack(&[s("x")]),
        Duration::from_secs(2),
    )
    .await;
    assert!(err.contains("cannot connect to node victim"), "{err}");

    // Restart on the same port: the same caller reaches it again. Its last attempt was
    // refused, so it backs off only `backoff_min` (50 ms): once that has passed, the
    // first call goes through.
    victim.restart();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let request = pack(&[s("back")]);
    let reply = within(
        Duration::from_secs(5),
        "call after restart",
        client.call("victim", "@echo", request.clone()),
    )
    .await
    .expect("the first call after the restart");
    assert_eq!(reply, request);
    // Full service again, including calls in flight at once.
    let calls: Vec<_> = (0..64)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .call(
                        "victim",
                        "@slow",
                        pack(&[Value::Integer(10), Value::Integer(i)]),
                    )
                    .await
            })
        })
        .collect();
    for call in calls {
        within(Duration::from_secs(10), "slow call after restart", call)
            .await
            .expect("task")
            .expect("slow call after restart");
    }
    assert!(client.senders()[0].1.reconnects >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names() {
    let layout = Layout::new(&["a"]);
    let _a = layout.start("a", SERVICES);
    let (_node, client) = layout.client(Duration::from_secs(10));

    let err = fails(
        &client,
        "a",
        "@nosuch",
        pack(&[s("x")]),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(err, "Invalid name");
    let err = within(Duration::from_secs(2), "query", client.query("a", "nosuch"))
        .await
        .expect_err("query of an unknown name");
    assert!(matches!(err, CallError::NameNotFound { .. }), "{err:?}");
    assert_eq!(err.remote_text(), "name not found");
    // A 255-byte name is legal on the wire and simply unknown; a longer one cannot be sent.
    let long = "n".repeat(254);
    let err = fails(
        &client,
        "a",
        long.as_str(),
        pack(&[]),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(err, "Invalid name");
    let too_long = "n".repeat(300);
    let err = fails(
        &client,
        "a",
        too_long.as_str(),
        pack(&[]),
        Duration::from_secs(2),
    )
    .await;
    assert!(err.contains("cannot encode"), "{err}");
    // A push to an unknown name is dropped by the node; the connection keeps working.
    within(
        Duration::from_secs(2),
        "send",
        client.send("a", "@nosuch", pack(&[s("lost")])),
    )
    .await
    .expect("a push is queued even if the name is unknown there");
    echo_works(&client, "a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_to_a_dead_service() {
    let layout = Layout::new(&["a"]);
    let _a = layout.start("a", SERVICES);
    let (_node, client) = layout.client(Duration::from_secs(10));

    // An address where nothing ever lived.
    let err = fails(
        &client,
        "a",
        Target::Addr(0x00AB_CDEF),
        pack(&[s("x")]),
        Duration::from_secs(2),
    )
    .await;
    // (The node says this run never had it, e.g. it is from before a restart.)
    assert!(
        err.starts_with("no service at address :00abcdef on node a: this run of a (up "),
        "{err}"
    );

    // An address where something lived: the agent serving another client's connection,
    // which stops when that client goes away.
    let agents = |listing: Vec<Value>| -> Vec<u32> {
        listing
            .iter()
            .filter_map(Value::as_table)
            .filter(|t| {
                t.get_str("label")
                    .and_then(Value::as_str)
                    .is_some_and(|l| l.starts_with("bee_clusteragent"))
            })
            .filter_map(|t| t.get_str("addr").and_then(Value::as_str))
            .map(|a| u32::from_str_radix(a.trim_start_matches(':'), 16).expect("address"))
            .collect()
    };
    let services = || async {
        let reply = client
            .call("a", "@bee_clusterd", pack(&[s("services")]))
            .await
            .expect("services");
        seri::unpack(&reply).expect("unpack")
    };
    let mine = agents(services().await);
    assert_eq!(mine.len(), 1, "one connection so far");
    let (other_node, other) = layout.client(Duration::from_secs(10));
    echo_works(&other, "a").await;
    let both = agents(services().await);
    let gone: u32 = *both
        .iter()
        .find(|a| !mine.contains(a))
        .expect("the other client's agent");
    other_node.shutdown();
    drop((other_node, other));
    let deadline = Instant::now() + Duration::from_secs(5);
    while agents(services().await).contains(&gone) {
        assert!(
            Instant::now() < deadline,
            "the agent of a closed connection never stopped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = fails(
        &client,
        "a",
        Target::Addr(gone),
        pack(&[s("x")]),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(
        err,
        format!("no service at address :{gone:08x} on node a: it has stopped")
    );
    // A push to it is dropped without harm.
    client
        .send("a", Target::Addr(gone), pack(&[s("lost")]))
        .await
        .expect("push");
    echo_works(&client, "a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_errors_reach_the_caller() {
    let layout = Layout::new(&["a"]);
    let _a = layout.start("a", SERVICES);
    let (_node, client) = layout.client(Duration::from_secs(10));

    let err = fails(
        &client,
        "a",
        "@bee_clusterd",
        pack(&[s("lua"), s("bogus")]),
        Duration::from_secs(2),
    )
    .await;
    assert!(
        err.starts_with("bee_clusterd: unknown command \"bogus\""),
        "{err}"
    );
    let err = fails(
        &client,
        "a",
        "@slow",
        pack(&[s("soon")]),
        Duration::from_secs(2),
    )
    .await;
    assert!(
        err.starts_with("slow: the first argument must be the delay in milliseconds"),
        "{err}"
    );
    // A payload that is not skynet.pack at all: the service's decode error comes back.
    let err = fails(
        &client,
        "a",
        "@sink",
        Bytes::from_static(b"\x07\x07\x07"),
        Duration::from_secs(2),
    )
    .await;
    assert!(!err.is_empty(), "the decode error has a text");
    // The services keep running after failing.
    let reply = client
        .call("a", "@slow", pack(&[Value::Integer(1)]))
        .await
        .expect("slow still works");
    assert_eq!(reply, pack(&[Value::Integer(1)]));
    echo_works(&client, "a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_timeouts() {
    let layout = Layout::new(&["a"]);
    let _a = layout.start("a", SERVICES);
    let (_node, client) = layout.client(Duration::from_millis(800));
    echo_works(&client, "a").await;

    // A per-call timeout shorter than the service takes.
    let first = Instant::now();
    let err = within(
        Duration::from_secs(3),
        "timed call",
        client.call_timeout(
            "a",
            "@slow",
            pack(&[Value::Integer(1500)]),
            Some(Duration::from_millis(200)),
        ),
    )
    .await
    .expect_err("the reply comes after 1.5 s");
    let took = first.elapsed();
    assert!(
        matches!(err.transport(), Some(TransportError::Timeout { node, after }) if node == "a" && *after == Duration::from_millis(200)),
        "{err:?}"
    );
    assert!(err.is_timeout());
    assert_eq!(err.to_string(), "call to node a timed out after 200ms");
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(1400),
        "took {took:?}"
    );

    // The default timeout of the client (800 ms) applies without a per-call one.
    let second = Instant::now();
    let err = fails(
        &client,
        "a",
        "@slow",
        pack(&[Value::Integer(2000)]),
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(err, "call to node a timed out after 800ms");
    let took = second.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(1900),
        "took {took:?}"
    );

    // A call that does finish in time, then the late replies of the timed-out calls arrive
    // and are dropped: the connection keeps working and nothing mixes up.
    let reply = client
        .call_timeout(
            "a",
            "@slow",
            pack(&[Value::Integer(50), s("in time")]),
            Some(Duration::from_secs(2)),
        )
        .await
        .expect("in time");
    assert_eq!(reply, pack(&[Value::Integer(50), s("in time")]));
    let late = (first + Duration::from_millis(1500)).max(second + Duration::from_millis(2000));
    tokio::time::sleep_until((late + Duration::from_millis(200)).into()).await;
    for i in 0..20 {
        let request = pack(&[s("after late replies"), Value::Integer(i)]);
        let reply = client
            .call("a", "@echo", request.clone())
            .await
            .expect("echo");
        assert_eq!(reply, request);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_promptly() {
    let layout = Layout::new(&["a"]);
    let mut a = layout.start("a", SERVICES);
    let (_node, client) = layout.client(Duration::from_secs(30));
    echo_works(&client, "a").await;
    // A call waits on the node while it stops.
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .call("a", "@slow", pack(&[Value::Integer(20_000)]))
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.senders()[0].1.in_flight == 0 {
        assert!(
            Instant::now() < deadline,
            "the slow call never got in flight"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let started = Instant::now();
    let clean = tokio::task::spawn_blocking(move || {
        let ok = a.terminate();
        (ok, a)
    });
    let (clean, _a) = within(Duration::from_secs(15), "SIGTERM", clean)
        .await
        .expect("task");
    let took = started.elapsed();
    assert!(clean, "bee exits with status 0 on SIGTERM");
    assert!(took < Duration::from_secs(3), "bee took {took:?} to stop");

    // The waiting caller learns at once that the node went away.
    let err = within(Duration::from_secs(3), "the waiting call", waiting)
        .await
        .expect("task")
        .expect_err("the node stopped before answering");
    println!("the call waiting on the stopped node: {err}");
    assert!(err.to_string().contains("node a"), "{err}");
    assert!(err.is_node_down(), "{err:?}");
    let (kind, err) = fails_with(&client, "a", "@echo", pack(&[]), Duration::from_secs(2)).await;
    assert!(
        matches!(kind.transport(), Some(TransportError::Connect { .. })),
        "{kind:?}"
    );
    assert!(err.contains("cannot connect to node a"), "{err}");
}

/// Calls that fail without waiting (an unknown node, a node backing off after a refused
/// connect, a node marked down in the config) still give way to the other tasks of the caller's
/// runtime: a caller retrying them in a tight loop must not hold its thread. On a
/// one-thread runtime the timer below only fires if the loop yields.
#[test]
fn retrying_failed_calls_in_a_loop_does_not_starve_the_runtime() {
    // "a" is in the cluster config but never started: its connects are refused.
    let layout = Layout::new(&["a"]);
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let (_node, client) = layout.client(Duration::from_secs(1));
            for (node, target) in [("nosuchnode", "@echo"), ("a", "@echo"), ("down", "@echo")] {
                if node == "down" {
                    // A node marked down in the config fails every call at once.
                    let config =
                        bee_registry::ClusterConfig::parse_lua("down = false\n").expect("config");
                    client.reload(config);
                }
                let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let looper = {
                    let (client, stop) = (client.clone(), stop.clone());
                    tokio::spawn(async move {
                        let mut failed = 0u64;
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            if client.call(node, target, pack(&[s("x")])).await.is_err() {
                                failed += 1;
                            }
                        }
                        failed
                    })
                };
                tokio::time::sleep(Duration::from_millis(20)).await;
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                let failed = looper.await.expect("looper");
                assert!(failed > 0, "calls to {node} should fail");
            }
        });
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(20))
        .expect("a task retrying failed calls held its runtime thread");
}
