//! The cluster API end to end: three real `bee` nodes on loopback and in-process
//! client nodes using every part of `skynet.cluster`'s API — `call`, `send`, `query`,
//! `register`/`unregister` (through `bee_clusterd`'s commands and through a client's
//! [`Cluster`]), `open`, `reload` and `proxy` — addressing services by `"@name"` and by
//! the numeric address a query returned.

use std::future::Future;
use std::time::Duration;

use bee_cluster::{Cluster, ClusterSettings};
use bee_codec::seri::{self, Value};
use bee_registry::{ClusterConfig, Registry};
use bee_runtime::builtin::{Echo, Sink};
use bee_runtime::{Node, RuntimeConfig, Target};
use bee_tests::Layout;
use bytes::Bytes;

/// What every node of these tests runs: `echo` and `sink`, registered under those names.
const SERVICES: &str = r#"
[[service]]
kind = "echo"
name = "echo"

[[service]]
kind = "sink"
name = "sink"
"#;

fn pack(values: &[Value]) -> Bytes {
    seri::pack(values).expect("pack")
}

fn unpack(bytes: &Bytes) -> Vec<Value> {
    seri::unpack(bytes).expect("the reply is not a skynet.pack payload")
}

fn s(text: &str) -> Value {
    Value::from(text)
}

/// Await `fut`, failing the test if it takes longer than `secs` seconds.
async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {secs} s"))
}

/// Call `node`'s `bee_clusterd` with a console command.
async fn clusterd(client: &Cluster, node: &str, args: &[Value]) -> Result<Vec<Value>, String> {
    let mut values = vec![s("lua")];
    values.extend_from_slice(args);
    let reply = within(
        10,
        "bee_clusterd command",
        client.call(node, "@bee_clusterd", pack(&values)),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(unpack(&reply))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_send_query_on_three_nodes_by_name_and_by_address() {
    let layout = Layout::new(&["a", "b", "c"]);
    let _nodes: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| layout.start(n, SERVICES))
        .collect();
    let (_node, client) = layout.client(Duration::from_secs(10));

    for node in ["a", "b", "c"] {
        // call by "@name" (with and without the '@').
        let request = pack(&[s("lua"), s("ping"), s(node), Value::Integer(7)]);
        let reply = within(
            10,
            "call @echo",
            client.call(node, "@echo", request.clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("call {node} @echo: {e}"));
        assert_eq!(
            reply, request,
            "echo on {node} must answer its arguments unchanged"
        );
        let reply = within(10, "call echo", client.call(node, "echo", request.clone()))
            .await
            .unwrap_or_else(|e| panic!("call {node} echo: {e}"));
        assert_eq!(reply, request);

        // query, then call by the numeric address it gave.
        let echo = within(10, "query", client.query(node, "echo"))
            .await
            .unwrap_or_else(|e| panic!("query {node} echo: {e}"));
        assert_ne!(echo, 0, "a query never answers address 0");
        let by_addr = pack(&[s("by address"), Value::Integer(echo as i64)]);
        let reply = within(
            10,
            "call by address",
            client.call(node, Target::Addr(echo), by_addr.clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("call {node} :{echo:08x}: {e}"));
        assert_eq!(reply, by_addr);
        let sink = within(10, "query", client.query(node, "@sink"))
            .await
            .unwrap_or_else(|e| panic!("query {node} @sink: {e}"));
        assert_ne!(sink, echo, "echo and sink are different services");

        // send (pushes) by name and by address, then count them with a call: requests of
        // one connection are handled in order, so every push is counted before the call.
        for i in 0..10 {
            let target: Target = if i % 2 == 0 {
                "@sink".into()
            } else {
                Target::Addr(sink)
            };
            within(
                10,
                "send",
                client.send(node, target, pack(&[s("hit"), Value::Integer(i)])),
            )
            .await
            .unwrap_or_else(|e| panic!("send to {node} sink: {e}"));
        }
        let count = within(
            10,
            "sink count",
            client.call(node, "@sink", pack(&[s("count")])),
        )
        .await
        .unwrap_or_else(|e| panic!("call {node} sink count: {e}"));
        assert_eq!(
            unpack(&count),
            vec![Value::Integer(10)],
            "pushes counted by {node}'s sink"
        );
        let reset = within(
            10,
            "sink reset",
            client.call(node, "@sink", pack(&[s("reset")])),
        )
        .await
        .expect("sink reset");
        assert_eq!(unpack(&reset), vec![Value::Integer(10)]);
    }

    // Three nodes, three senders, all connected.
    let senders = client.senders();
    let names: Vec<&str> = senders.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(
        senders.iter().all(|(_, stats, _)| stats.connected),
        "every channel is connected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_register_query_unregister_across_nodes() {
    let layout = Layout::new(&["a", "b", "c"]);
    let _nodes: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| layout.start(n, SERVICES))
        .collect();
    let (_node, client) = layout.client(Duration::from_secs(10));

    let echo_a = client.query("a", "echo").await.expect("query a echo");
    let sink_b = client.query("b", "sink").await.expect("query b sink");

    // The same name on two nodes points at different services, each on its own node.
    let reply = clusterd(
        &client,
        "a",
        &[s("register"), s("shared"), Value::Integer(echo_a as i64)],
    )
    .await
    .expect("register on a");
    assert_eq!(reply, vec![Value::Integer(echo_a as i64)]);
    let reply = clusterd(
        &client,
        "b",
        &[s("register"), s("shared"), Value::Integer(sink_b as i64)],
    )
    .await
    .expect("register on b");
    assert_eq!(reply, vec![Value::Integer(sink_b as i64)]);

    assert_eq!(
        client.query("a", "shared").await.expect("query a shared"),
        echo_a
    );
    assert_eq!(
        client.query("b", "shared").await.expect("query b shared"),
        sink_b
    );
    let err = client
        .query("c", "shared")
        .await
        .expect_err("c has no name 'shared'");
    assert!(
        matches!(err, bee_runtime::CallError::NameNotFound { ref node, ref name } if node == "c" && name == "shared"),
        "{err:?}"
    );
    assert_eq!(err.remote_text(), "name not found");

    // "@shared" reaches echo on a and sink on b.
    let request = pack(&[s("hello")]);
    let reply = client
        .call("a", "@shared", request.clone())
        .await
        .expect("call a @shared");
    assert_eq!(reply, request, "a's @shared is its echo");
    let reply = client
        .call("b", "@shared", pack(&[s("count")]))
        .await
        .expect("call b @shared");
    assert_eq!(
        unpack(&reply),
        vec![Value::Integer(0)],
        "b's @shared is its sink"
    );

    // The console lists it; the same command works without the "lua" sub-type too.
    let names = clusterd(&client, "a", &[s("names")]).await.expect("names");
    let listed: Vec<String> = names
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    assert!(
        listed
            .iter()
            .any(|l| l == &format!("shared = :{echo_a:08x}")),
        "names on a: {listed:?}"
    );
    let raw = client
        .call("a", "@bee_clusterd", pack(&[s("query"), s("shared")]))
        .await
        .expect("bee_clusterd query without the lua sub-type");
    assert_eq!(unpack(&raw), vec![Value::Integer(echo_a as i64)]);

    // Registering the name again on a moves it (a name points at one service).
    let sink_a = client.query("a", "sink").await.expect("query a sink");
    clusterd(
        &client,
        "a",
        &[s("register"), s("shared"), Value::Integer(sink_a as i64)],
    )
    .await
    .expect("move the name on a");
    assert_eq!(
        client.query("a", "shared").await.expect("query moved"),
        sink_a
    );
    // Agents cache "@name" lookups; the move must reach the cached connection too.
    let reply = client
        .call("a", "@shared", pack(&[s("count")]))
        .await
        .expect("call moved name");
    assert_eq!(
        unpack(&reply),
        vec![Value::Integer(0)],
        "a's @shared is now its sink"
    );

    // Unregister on a: gone there, still there on b.
    let reply = clusterd(&client, "a", &[s("unregister"), s("shared")])
        .await
        .expect("unregister");
    assert_eq!(
        reply,
        vec![Value::Integer(sink_a as i64)],
        "unregister answers the old address"
    );
    let err = client.query("a", "shared").await.expect_err("unregistered");
    assert_eq!(err.remote_text(), "name not found");
    let err = client
        .call("a", "@shared", request.clone())
        .await
        .expect_err("unregistered");
    assert_eq!(err.remote_text(), "Invalid name");
    assert_eq!(
        client.query("b", "shared").await.expect("b keeps its name"),
        sink_b
    );
    let reply = clusterd(&client, "a", &[s("unregister"), s("shared")])
        .await
        .expect("unregister twice");
    assert_eq!(
        reply,
        vec![Value::Nil],
        "unregistering an unknown name answers nil"
    );

    // A name that cannot be registered is refused with the reason.
    let err = clusterd(
        &client,
        "a",
        &[s("register"), s(""), Value::Integer(echo_a as i64)],
    )
    .await
    .expect_err("empty name");
    assert!(
        err.contains("cannot register name"),
        "register error: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_register_and_reload_in_process_nodes() {
    // "inproc" is in the cluster config but runs in this test process, not as `bee`.
    let layout = Layout::new(&["a", "b", "c", "inproc"]);
    let _nodes: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| layout.start(n, SERVICES))
        .collect();

    let server = Node::new("inproc", RuntimeConfig::default());
    let server_cluster = Cluster::start(
        &server,
        Registry::new(layout.config()),
        ClusterSettings::default(),
    );
    // open by node name: listens on the config's address for "inproc".
    let local = server_cluster.open("inproc").await.expect("open inproc");
    assert_eq!(local.port(), layout.port("inproc"));
    assert_eq!(local.ip().to_string(), "127.0.0.1");
    // open by host:port (port 0 = a free one) works too, and is listed.
    let extra = server_cluster
        .open("127.0.0.1:0")
        .await
        .expect("open 127.0.0.1:0");
    assert_ne!(extra.port(), 0);
    assert_eq!(server_cluster.listening(), vec![local, extra]);
    let err = server_cluster
        .open("no-such-node")
        .await
        .expect_err("nonsense open");
    assert!(
        err.to_string().contains("no-such-node"),
        "open error: {err}"
    );

    // register: a local service reachable from other nodes as "@name" and by query.
    let echo = server.spawn("echo", Echo);
    let sink = server.spawn("sink", Sink::default());
    server_cluster
        .register("echo", echo)
        .expect("register echo");
    server_cluster
        .register("sink", sink)
        .expect("register sink");

    let (_client_node, client) = layout.client(Duration::from_secs(10));
    let request = pack(&[s("to"), s("inproc")]);
    let reply = within(
        10,
        "call inproc",
        client.call("inproc", "@echo", request.clone()),
    )
    .await
    .expect("call inproc @echo");
    assert_eq!(reply, request);
    assert_eq!(
        client.query("inproc", "echo").await.expect("query inproc"),
        echo
    );
    let reply = client
        .call("inproc", Target::Addr(sink), pack(&[s("count")]))
        .await
        .expect("call inproc sink by address");
    assert_eq!(unpack(&reply), vec![Value::Integer(0)]);

    // The second listener serves the same services: a node config naming it reaches it.
    let other = ClusterConfig::parse_lua(&format!("inproc2 = \"127.0.0.1:{}\"\n", extra.port()))
        .expect("config");
    let diff = client.reload(other);
    assert_eq!(
        diff.added,
        vec![("inproc2".to_string(), format!("127.0.0.1:{}", extra.port()))]
    );
    let reply = client
        .call("inproc2", "@echo", request.clone())
        .await
        .expect("call inproc2");
    assert_eq!(reply, request);

    // unregister: gone for callers (including the connection that cached the name).
    assert_eq!(server_cluster.unregister("echo"), Some(echo));
    assert_eq!(server_cluster.unregister("echo"), None);
    let err = client
        .call("inproc", "@echo", request.clone())
        .await
        .expect_err("unregistered");
    assert_eq!(err.remote_text(), "Invalid name");
    let err = client
        .query("inproc", "echo")
        .await
        .expect_err("unregistered");
    assert_eq!(err.remote_text(), "name not found");
    // The service itself still answers by address.
    let reply = client
        .call("inproc", Target::Addr(echo), request.clone())
        .await
        .expect("by address");
    assert_eq!(reply, request);

    // reload through bee_clusterd on a bee node: the answer is the diff, "nodes" shows it.
    let port = layout.port("b");
    let reply = clusterd(
        &client,
        "a",
        &[
            s("reload"),
            Value::from(format!("bnew = \"127.0.0.1:{port}\"\nc = false\n")),
        ],
    )
    .await
    .expect("reload on a");
    let text = reply
        .first()
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    assert!(text.contains("bnew"), "reload diff: {text}");
    assert!(text.contains('c'), "reload diff: {text}");
    let nodes = clusterd(&client, "a", &[s("nodes")]).await.expect("nodes");
    let nodes = nodes
        .first()
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    assert!(
        nodes.contains(&format!("bnew = \"127.0.0.1:{port}\"")),
        "nodes on a: {nodes}"
    );
    assert!(nodes.contains("c = false"), "nodes on a: {nodes}");
    let err = clusterd(&client, "a", &[s("reload"), s("this is = = not lua")])
        .await
        .expect_err("bad config text");
    assert!(err.contains("line 1"), "reload error: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_forwards_calls_and_sends() {
    let layout = Layout::new(&["a", "b", "c"]);
    let _nodes: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| layout.start(n, SERVICES))
        .collect();
    let (node, client) = layout.client(Duration::from_secs(10));

    let echo_b = client.proxy("b", "echo").expect("proxy b echo");
    assert_eq!(
        client.proxy("b", "@echo").expect("again"),
        echo_b,
        "one proxy per node and name"
    );
    let echo_c = client.proxy("c", "echo").expect("proxy c echo");
    assert_ne!(echo_b, echo_c);
    assert!(node
        .services()
        .iter()
        .any(|s| s.addr == echo_b && s.label.contains("bee_proxy")));

    // A local call to the proxy is a cluster call to b's echo.
    let request = pack(&[s("via"), s("proxy"), Value::Boolean(true)]);
    let reply = within(10, "proxy call", node.call(echo_b, request.clone()))
        .await
        .expect("call through proxy");
    assert_eq!(reply, request);
    let reply = within(10, "proxy call", node.call(echo_c, request.clone()))
        .await
        .expect("call through proxy");
    assert_eq!(reply, request);

    // Calls through one proxy overlap (the proxy does not wait for one reply before the next).
    let calls: Vec<_> = (0..32)
        .map(|i| {
            let node = node.clone();
            tokio::spawn(async move { node.call(echo_b, pack(&[Value::Integer(i)])).await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let reply = within(10, "proxy call", call)
            .await
            .expect("task")
            .expect("proxy call");
        assert_eq!(unpack(&reply), vec![Value::Integer(i as i64)]);
    }

    // Local sends become cluster pushes, in order with later calls through the same proxy.
    let sink_a = client.proxy("a", "sink").expect("proxy a sink");
    for i in 0..5 {
        node.send(sink_a, pack(&[Value::Integer(i)]))
            .await
            .expect("send through proxy");
    }
    let reply = within(10, "proxy count", node.call(sink_a, pack(&[s("count")])))
        .await
        .expect("count through proxy");
    assert_eq!(unpack(&reply), vec![Value::Integer(5)]);

    // A proxy to a name that does not exist answers its callers with the remote error.
    let nobody = client.proxy("a", "nobody").expect("proxy a nobody");
    let err = within(10, "proxy error", node.call(nobody, request.clone()))
        .await
        .expect_err("no such name on a");
    assert_eq!(err.remote_text(), "Invalid name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_calls_across_nodes_get_their_own_replies() {
    let layout = Layout::new(&["a", "b", "c"]);
    let _nodes: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| layout.start(n, SERVICES))
        .collect();
    let (_node, client) = layout.client(Duration::from_secs(20));

    let calls: Vec<_> = (0..1500i64)
        .map(|i| {
            let client = client.clone();
            let node = ["a", "b", "c"][(i % 3) as usize];
            tokio::spawn(async move {
                // Mixed sizes: whole and multi-part requests and replies interleave.
                let filler = "x".repeat(if i % 50 == 0 {
                    70_000
                } else {
                    (i % 97) as usize
                });
                let request = pack(&[s(node), Value::Integer(i), Value::from(filler)]);
                let reply = client.call(node, "@echo", request.clone()).await;
                (request, reply)
            })
        })
        .collect();
    for call in calls {
        let (request, reply) = within(30, "concurrent call", call).await.expect("task");
        assert!(
            reply.expect("concurrent call") == request,
            "a reply went to the wrong caller"
        );
    }
}
