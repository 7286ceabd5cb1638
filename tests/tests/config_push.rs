//! `bee config push` and `bee status` against real `bee` processes on loopback.
//! Every node reports what it runs; a push is answered per node (applied, rejected with
//! the reason, unreachable) and the exit code says whether every reachable node applied
//! it; an older, malformed or self-dropping config is refused by the node and the running
//! config stays exactly as it was; a node moved to a new port is reached by its peers at
//! once after the push.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bee_cluster::lifecycle::{ConfigReport, Hello, PushOutcome};
use bee_cluster::Cluster;
use bee_codec::seri::{self, Value};
use bee_tests::{bee_cli, free_port, BeeProcess, Layout};

const SERVICES: &str = "[[service]]\nkind = \"echo\"\nname = \"echo\"\n";

/// Write `text` as `name` in the layout's directory.
fn write(layout: &Layout, name: &str, text: &str) -> PathBuf {
    let p = layout.dir.path().join(name);
    std::fs::write(&p, text).expect("write config");
    p
}

/// The layout's nodes in Lua form, with `version`, and `extra` lines.
fn cluster_text(layout: &Layout, version: u64, extra: &str) -> String {
    let mut t = format!("__version = {version}\n");
    for (n, p) in &layout.nodes {
        t.push_str(&format!("{n} = \"127.0.0.1:{p}\"\n"));
    }
    t.push_str(extra);
    t
}

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The line of `out` about `node` (lines start with the node name and two spaces).
fn line_of<'a>(out: &'a str, node: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(node))
        .unwrap_or_else(|| panic!("no line for {node} in:\n{out}"))
}

async fn report(client: &Cluster, node: &str) -> ConfigReport {
    let payload = seri::pack(&[Value::from("lua"), Value::from("config")]).unwrap();
    let reply = client
        .call(node, "@bee_config", payload)
        .await
        .expect("config");
    ConfigReport::from_values(&seri::unpack(&reply).unwrap()).expect("a config report")
}

/// Push `text` to `node` directly, as `bee config push` does.
async fn push_to(client: &Cluster, node: &str, text: &str, force: bool) -> PushOutcome {
    push(client, node, text, force, "config_push test").await
}

/// Push `text` to `node` with this `force` and `from`.
async fn push(client: &Cluster, node: &str, text: &str, force: bool, from: &str) -> PushOutcome {
    let payload = seri::pack(&[
        Value::from("lua"),
        Value::from("config_push"),
        Value::from(text),
        Value::from(force),
        Value::from(from),
    ])
    .unwrap();
    let reply = client
        .call(node, "@bee_config", payload)
        .await
        .expect("config_push");
    PushOutcome::from_values(&seri::unpack(&reply).unwrap()).expect("a push outcome")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_push_reports_every_node_with_one_down_and_the_exit_code_says_so() {
    let layout = Layout::new(&["a", "b", "c", "d"]);
    write(&layout, "cluster.lua", &cluster_text(&layout, 1, ""));
    let cluster = layout.cluster_file();
    let mut nodes: Vec<BeeProcess> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| layout.start(n, SERVICES))
        .collect();

    // Every node reports version 1 from its file.
    let (ok, out, err) = bee_cli(&["status", "--cluster", s(&cluster)]);
    assert!(ok, "status failed: {out}\n{err}");
    for n in ["a", "b", "c", "d"] {
        let line = line_of(&out, n);
        assert!(
            line.contains(" yes ") && line.contains("  1  ") && line.contains("file "),
            "{line}"
        );
    }
    assert!(out.starts_with("NODE"), "{out}");
    // The headline numbers of each node (`bee status` shows them).
    let header = out.lines().next().unwrap_or_default();
    for column in ["SERVICES", "HANDLED", "QUEUED", "PEERS IN/OUT"] {
        assert!(header.contains(column), "{header}");
    }
    assert!(line_of(&out, "a").contains(" up)"), "{out}");

    // The console command on one node says the same.
    let (ok, out, err) = bee_cli(&[
        "call",
        "--cluster",
        s(&cluster),
        "a",
        "bee_clusterd",
        "config",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("version") && out.contains("incarnation"),
        "{out}"
    );

    nodes[3].kill9();
    let v2 = write(&layout, "v2.lua", &cluster_text(&layout, 2, ""));
    let (ok, out, err) = bee_cli(&["config", "push", "--cluster", s(&cluster), s(&v2)]);
    println!("{out}{err}");
    assert!(ok, "a push every reachable node applied exits 0: {err}");
    for n in ["a", "b", "c"] {
        let line = line_of(&out, n);
        assert!(
            line.contains("applied") && line.contains("version 2") && line.contains("version 1->2"),
            "{line}"
        );
    }
    assert!(line_of(&out, "d").contains("unreachable"), "{out}");
    assert!(
        out.contains("3 applied, 0 rejected, 1 unreachable"),
        "{out}"
    );

    // --require-all fails on the unreachable node (the others already run it).
    let (ok, out, err) = bee_cli(&[
        "config",
        "push",
        "--require-all",
        "--cluster",
        s(&v2),
        s(&v2),
    ]);
    assert!(!ok, "--require-all with a node down must fail: {out}");
    assert!(
        err.contains("--require-all: 1 node(s) could not be reached"),
        "{err}"
    );
    assert!(line_of(&out, "a").contains("no change"), "{out}");

    // Status shows the new version, where it came from, and the node that is down; the
    // exit code says a node could not answer.
    let (ok, out, _) = bee_cli(&["status", "--cluster", s(&v2)]);
    assert!(!ok, "status with a node down exits non-zero");
    for n in ["a", "b", "c"] {
        let line = line_of(&out, n);
        assert!(
            line.contains("  2  ") && line.contains("push from bee config push"),
            "{line}"
        );
    }
    assert!(line_of(&out, "d").contains("no: unreachable"), "{out}");
    // Only some nodes.
    let (ok, out, _) = bee_cli(&["status", "--cluster", s(&v2), "b"]);
    assert!(ok && out.lines().count() == 2, "{out}");
    let (ok, _, err) = bee_cli(&["status", "--cluster", s(&v2), "zz"]);
    assert!(
        !ok && err.contains("node zz is not in the cluster config"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_push_refuses_older_malformed_and_self_dropping_configs_and_keeps_the_running_one() {
    let layout = Layout::new(&["a", "b", "c"]);
    write(&layout, "cluster.lua", &cluster_text(&layout, 5, ""));
    let cluster = layout.cluster_file();
    let _nodes: Vec<BeeProcess> = ["a", "b", "c"]
        .iter()
        .map(|n| layout.start(n, SERVICES))
        .collect();
    let (_client_node, client) = layout.client(Duration::from_secs(5));
    let before = report(&client, "a").await;
    assert_eq!(before.version, 5);
    assert_eq!(before.node, "a");
    assert_eq!(before.hash.len(), 16);

    // An older version: every node refuses and says why; exit code non-zero.
    let v4 = write(&layout, "v4.lua", &cluster_text(&layout, 4, ""));
    let (ok, out, err) = bee_cli(&["config", "push", "--cluster", s(&cluster), s(&v4)]);
    assert!(!ok, "{out}");
    assert!(err.contains("not every reachable node applied"), "{err}");
    for n in ["a", "b", "c"] {
        let line = line_of(&out, n);
        assert!(
            line.contains("rejected")
                && line.contains("config version 4 is older than the running version 5")
                && line.contains("still runs version 5"),
            "{line}"
        );
    }
    assert_eq!(report(&client, "b").await.version, 5);

    // Bad input is refused by the CLI before anything is sent, with the line.
    let cases = [
        (
            "dup.lua",
            format!(
                "__version = 6\na = \"127.0.0.1:{}\"\na = \"127.0.0.1:1\"\n",
                layout.port("a")
            ),
            "line 3: node `a` is set twice (first on line 2)",
        ),
        (
            "noport.lua",
            format!(
                "__version = 6\na = \"127.0.0.1:{}\"\nb = \"127.0.0.1\"\n",
                layout.port("a")
            ),
            "line 3: node `b`: \"127.0.0.1\" has no `:port`",
        ),
        (
            "malformed.lua",
            "__version = 6\na = = 1\n".to_string(),
            "line 2:",
        ),
    ];
    for (file, text, expect) in &cases {
        let p = write(&layout, file, text);
        let (ok, out, err) = bee_cli(&["config", "push", "--cluster", s(&cluster), s(&p)]);
        assert!(!ok, "{file}: {out}");
        assert!(
            err.contains(expect) && err.contains("nothing was pushed"),
            "{file}: {err}"
        );
        assert!(
            out.is_empty(),
            "{file}: nothing pushed, nothing printed: {out}"
        );
    }

    // The same bad texts sent to a node directly: refused by the node, with the line.
    let mut node_cases: Vec<(String, String)> = cases
        .iter()
        .map(|(_, text, expect)| (text.clone(), expect.to_string()))
        .collect();
    node_cases.push((
        cluster_text(&layout, 3, ""),
        "config version 3 is older than the running version 5".into(),
    ));
    node_cases.push((
        cluster_text(&layout, 5, "extra = \"127.0.0.1:9\"\n"),
        "config version 5 has content".into(),
    ));
    for (text, expect) in &node_cases {
        match push_to(&client, "a", text, false).await {
            PushOutcome::Rejected {
                reason,
                version,
                hash,
            } => {
                assert!(reason.contains(expect.as_str()), "{reason}");
                assert_eq!((version, hash), (5, before.hash.clone()));
            }
            other => panic!("expected a refusal for {text:?}, got {other:?}"),
        }
    }
    let after = report(&client, "a").await;
    assert_eq!(
        (
            after.version,
            &after.hash,
            &after.source,
            after.applied_at_ms
        ),
        (
            before.version,
            &before.hash,
            &before.source,
            before.applied_at_ms
        ),
        "the running config is intact"
    );

    // A config that drops node a: a refuses (even forced), b and c apply it.
    let drop_a = write(
        &layout,
        "drop_a.lua",
        &format!(
            "__version = 6\nb = \"127.0.0.1:{}\"\nc = \"127.0.0.1:{}\"\n",
            layout.port("b"),
            layout.port("c")
        ),
    );
    let (ok, out, _) = bee_cli(&[
        "config",
        "push",
        "--force",
        "--cluster",
        s(&cluster),
        s(&drop_a),
    ]);
    assert!(!ok, "{out}");
    assert!(
        line_of(&out, "a").contains("the new config drops this node `a`"),
        "{out}"
    );
    assert!(line_of(&out, "b").contains("applied"), "{out}");
    assert_eq!(report(&client, "a").await.version, 5);

    // --force rolls b back to an older version.
    let (ok, out, err) = bee_cli(&[
        "config",
        "push",
        "--force",
        "--cluster",
        s(&cluster),
        s(&v4),
    ]);
    assert!(ok, "{out}{err}");
    assert!(line_of(&out, "b").contains("version 4"), "{out}");
    assert_eq!(report(&client, "b").await.version, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_push_moves_a_node_and_peers_reach_it_within_a_second() {
    let layout = Layout::new(&["a", "b", "c"]);
    write(&layout, "cluster.lua", &cluster_text(&layout, 1, ""));
    let cluster = layout.cluster_file();
    let _a = layout.start("a", SERVICES);
    let _b = layout.start("b", SERVICES);
    let mut c = layout.start("c", SERVICES);
    let (_client_node, client) = layout.client(Duration::from_secs(5));

    // a's own channel to c: ask a to say hello to c.
    let ping = |node: &'static str| {
        let client = client.clone();
        async move {
            let payload =
                seri::pack(&[Value::from("lua"), Value::from("ping"), Value::from(node)]).unwrap();
            let reply = client.call("a", "@bee_clusterd", payload).await?;
            let values = seri::unpack(&reply).unwrap();
            Ok::<Hello, bee_runtime::CallError>(Hello::from_values(&values).unwrap())
        }
    };
    let first = ping("c").await.expect("a reaches c");
    assert_eq!(first.node, "c");

    // c moves: it stops, and starts again on another port with the new config.
    c.kill9();
    let new_port = free_port();
    let v2_text = format!(
        "__version = 2\na = \"127.0.0.1:{}\"\nb = \"127.0.0.1:{}\"\nc = \"127.0.0.1:{new_port}\"\n",
        layout.port("a"),
        layout.port("b")
    );
    let v2 = write(&layout, "v2.lua", &v2_text);
    let c2_cfg = write(
        &layout,
        "c2.toml",
        &format!("name = \"c\"\ncluster = \"v2.lua\"\ncall_timeout_ms = 10000\n{SERVICES}"),
    );
    let _c2 = BeeProcess::start("c", &c2_cfg);
    // Before the push a still dials the old port.
    assert!(ping("c").await.is_err(), "c's old port is closed");

    let (ok, out, err) = bee_cli(&["config", "push", "--cluster", s(&cluster), s(&v2)]);
    let pushed = Instant::now();
    println!("{out}{err}");
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("c ")).collect();
    assert_eq!(lines.len(), 2, "c at its old and its new address: {out}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!(":{new_port}")) && l.contains("applied")),
        "{out}"
    );
    assert!(
        line_of(&out, "a").contains(&format!(
            "changed c 127.0.0.1:{}->127.0.0.1:{new_port}",
            layout.port("c")
        )),
        "{out}"
    );

    let moved = loop {
        match ping("c").await {
            Ok(h) => break h,
            Err(e) => {
                assert!(
                    pushed.elapsed() < Duration::from_secs(1),
                    "a did not reach c at its new port within 1 s of the push: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert!(pushed.elapsed() < Duration::from_secs(1));
    assert_eq!(moved.node, "c");
    assert_ne!(
        moved.incarnation, first.incarnation,
        "a reached the new c process"
    );
}

/// Push `text` to `node` with this `from`.
async fn push_from(client: &Cluster, node: &str, text: &str, from: &str) -> PushOutcome {
    push(client, node, text, false, from).await
}

/// (VERSION, HASH) of `node` in `bee status` output.
fn status_of(out: &str, node: &str) -> (String, String) {
    let cols: Vec<&str> = line_of(out, node).split_whitespace().collect();
    assert_eq!(cols.get(2), Some(&"yes"), "{out}");
    (cols[3].to_string(), cols[4].to_string())
}

/// Bad input: a push that says it comes from a cluster node (`from` = `node NAME`, as
/// `Cluster::push_config_to` sends it) whose NAME is in neither the running nor the
/// pushed config is refused, naming it; the running config (version and hash, as
/// `bee status` shows them) stays exactly as it was. A node of either config may push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_push_from_a_node_not_in_the_config_is_refused_naming_it() {
    let layout = Layout::new(&["a", "b"]);
    let cluster = write(&layout, "cluster.lua", &cluster_text(&layout, 1, ""));
    let _a = layout.start("a", SERVICES);
    let _b = layout.start("b", SERVICES);
    let (ok, before, err) = bee_cli(&["status", "--cluster", s(&cluster)]);
    assert!(ok, "{before}{err}");
    let v2 = cluster_text(&layout, 2, "__motd = \"pushed by a stranger\"\n");

    // The test's client node is itself a node outside the config.
    let (_n, client) = layout.client(Duration::from_secs(5));
    let outcome = client.push_config_to("a", &v2, false).await.unwrap();
    let PushOutcome::Rejected {
        reason, version, ..
    } = &outcome
    else {
        panic!("a push from a node outside the config was applied: {outcome:?}");
    };
    assert!(
        reason.starts_with(&format!(
            "push refused: it says it comes from node {}, which is in neither the running config (version 1: a, b) nor the pushed one (version 2: a, b)",
            client.node_name()
        )),
        "{reason}"
    );
    assert_eq!(*version, 1);
    // The same over the wire from anything that says it is node ghost.
    let outcome = push_from(&client, "b", &v2, "node ghost (pid 1)").await;
    match &outcome {
        PushOutcome::Rejected { reason, .. } => {
            assert!(
                reason.contains("comes from node ghost, which is in neither"),
                "{reason}"
            )
        }
        other => panic!("node ghost's push was applied: {other:?}"),
    }
    let (ok, after, err) = bee_cli(&["status", "--cluster", s(&cluster)]);
    assert!(ok, "{after}{err}");
    for n in ["a", "b"] {
        assert_eq!(status_of(&before, n), status_of(&after, n), "{n}: {after}");
        assert_eq!(status_of(&after, n).0, "1");
    }

    // Node b pushing is fine; so is node c, which only the pushed config names.
    let outcome = push_from(&client, "a", &v2, "node b").await;
    assert!(
        matches!(outcome, PushOutcome::Applied { version: 2, .. }),
        "{outcome:?}"
    );
    let v3 = cluster_text(&layout, 3, &format!("c = \"127.0.0.1:{}\"\n", free_port()));
    let outcome = push_from(&client, "a", &v3, "node c").await;
    assert!(
        matches!(outcome, PushOutcome::Applied { version: 3, .. }),
        "{outcome:?}"
    );
}
