//! Hot update in place: a `bee-demo` node is upgraded three times in a row
//! with `bee run --takeover` while three client nodes send it sequenced calls and pushes.
//! Each new process receives the listening socket and the services' state from the old
//! one, which drains and exits. Checked: no call fails, every push arrives exactly once
//! and in order per sender (the `sequence` service's table is itself carried across the
//! three handovers), the demo's `lpersistence` login counter survives, and each old
//! process exits cleanly. Also: `--takeover` with nothing to take over is a clear error,
//! and a second process of a running node without it is refused.

mod dispatch_common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bee_cluster::Cluster;
use bee_codec::seri::Value;
use bee_proto::game::LoginReq;
use bee_runtime::Node;
use bee_tests::{demo_bin, Layout};
use dispatch_common::{frame, pack, riding_node, text, values};

const TARGET: &str = "[[service]]\nkind = \"echo\"\nname = \"echo\"\n\n\
                      [[service]]\nkind = \"sequence\"\nname = \"seq\"\n\n\
                      [[service]]\nkind = \"lpersistence\"\nname = \"lpersistence\"\n";

#[derive(Default)]
struct Load {
    calls: AtomicU64,
    retried: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
    stop: AtomicBool,
}

/// A client node with ride-through, listening (a node of the cluster config, as callers
/// of a real backend are).
async fn client(layout: &Layout, name: &str) -> (Node, Cluster) {
    riding_node(layout, name, name, Duration::from_secs(5)).await
}

/// Sequenced calls to `echo` (each retried until it succeeds, counted) and pushes
/// `(name, seq)` to `seq`, until told to stop. Returns how many pushes it sent.
async fn stream(c: Cluster, name: String, load: Arc<Load>) -> i64 {
    let mut seq = 0i64;
    while !load.stop.load(Ordering::Relaxed) {
        seq += 1;
        loop {
            match c.call("target", "echo", pack(&[Value::Integer(seq)])).await {
                Ok(r) => {
                    assert_eq!(values(&r), vec![Value::Integer(seq)], "echo of {seq}");
                    break;
                }
                Err(e) => {
                    load.retried.fetch_add(1, Ordering::Relaxed);
                    load.first_error
                        .lock()
                        .unwrap()
                        .get_or_insert_with(|| e.to_string());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        load.calls.fetch_add(1, Ordering::Relaxed);
        c.send(
            "target",
            "seq",
            pack(&[Value::from(name.as_str()), Value::Integer(seq)]),
        )
        .await
        .unwrap_or_else(|e| panic!("push {seq} of {name} refused: {e}"));
        if seq % 4 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_handovers_under_load_lose_nothing_and_carry_state() {
    std::env::set_var("BEE_LOG", "info");
    let layout = Layout::new(&["target", "c1", "c2", "c3"]);
    let mut target = tokio::task::block_in_place(|| {
        let path = layout.dir.path().join("target.toml");
        std::fs::write(
            &path,
            format!("name = \"target\"\ncluster = \"cluster.lua\"\n{TARGET}"),
        )
        .unwrap();
        bee_tests::BeeProcess::start_logged_bin(&demo_bin(), "target", &path, &layout)
    });
    let mut clients = Vec::new();
    for name in ["c1", "c2", "c3"] {
        clients.push((name.to_string(), client(&layout, name).await));
    }
    let c = clients[0].1 .1.clone();
    for uid in 1..=5u64 {
        c.call(
            "target",
            "lpersistence",
            text(frame(
                uid,
                &LoginReq {
                    uid,
                    ..LoginReq::default()
                },
            )),
        )
        .await
        .expect("login");
    }
    let load = Arc::new(Load::default());
    let streams: Vec<_> = clients
        .iter()
        .map(|(name, (_, cluster))| {
            tokio::spawn(stream(cluster.clone(), name.clone(), load.clone()))
        })
        .collect();
    // Every stream is under way before the first handover.
    bee_tests::wait_until_async(
        "calls flowing before the handovers",
        Duration::from_secs(30),
        || load.calls.load(Ordering::Relaxed) > 50,
    )
    .await;
    for round in 1..=3 {
        let before = load.calls.load(Ordering::Relaxed);
        let clean = tokio::task::block_in_place(|| target.take_over(None));
        assert!(
            clean,
            "round {round}: the old process exits cleanly:\n{}",
            target.log()
        );
        bee_tests::wait_until_async(
            &format!("round {round}: calls flowing after the handover"),
            Duration::from_secs(30),
            || load.calls.load(Ordering::Relaxed) > before + 50,
        )
        .await;
    }
    load.stop.store(true, Ordering::Relaxed);
    let mut sent = Vec::new();
    for s in streams {
        sent.push(s.await.unwrap());
    }
    let calls = load.calls.load(Ordering::Relaxed);
    assert_eq!(
        load.retried.load(Ordering::Relaxed),
        0,
        "no call needed a retry across three handovers ({calls} calls; first error {:?})",
        load.first_error.lock().unwrap()
    );
    // Each sender asks on its own connection, behind its own last push.
    for ((name, (_, cluster)), n) in clients.iter().zip(&sent) {
        let last = values(
            &cluster
                .call(
                    "target",
                    "seq",
                    pack(&[Value::from("last"), Value::from(name.as_str())]),
                )
                .await
                .unwrap(),
        );
        assert_eq!(last, vec![Value::Integer(*n)], "{name}'s last push");
    }
    let report = values(
        &c.call("target", "seq", pack(&[Value::from("report")]))
            .await
            .unwrap(),
    );
    let total: i64 = sent.iter().sum();
    assert_eq!(
        report,
        vec![Value::Integer(total), Value::Integer(0), Value::Integer(3)],
        "every push once and in order per sender, counted across all four processes"
    );
    let logins = values(
        &c.call(
            "target",
            "lpersistence",
            pack(&[Value::from("lua"), Value::from("logins")]),
        )
        .await
        .unwrap(),
    );
    assert_eq!(
        logins,
        vec![Value::Integer(5)],
        "the login counter survived"
    );
    let log = target.log();
    assert_eq!(log.matches(" took over ").count(), 3, "{log}");
    assert_eq!(log.matches("handed over: ").count(), 3, "{log}");
    println!("{calls} calls, {total} pushes across three handovers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_without_a_running_node_and_a_second_process_are_refused() {
    let layout = Layout::new(&["lonely"]);
    let path = layout.dir.path().join("lonely.toml");
    std::fs::write(
        &path,
        "name = \"lonely\"\ncluster = \"cluster.lua\"\n[[service]]\nkind = \"echo\"\nname = \"echo\"\n",
    )
    .unwrap();
    let bee = bee_tests::bee_bin();
    let out = std::process::Command::new(&bee)
        .args(["run", path.to_str().unwrap(), "--takeover"])
        .env("BEE_LOG", "warn")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--takeover: no running process of this node answers"),
        "{err}"
    );
    let _running = tokio::task::block_in_place(|| bee_tests::BeeProcess::start("lonely", &path));
    let out = std::process::Command::new(&bee)
        .args(["run", path.to_str().unwrap()])
        .env("BEE_LOG", "warn")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("a process of this node already runs"), "{err}");

    // Something that is not a successor knocks on the handover socket: refused, and the
    // node keeps serving.
    tokio::task::block_in_place(|| {
        use std::io::{Read, Write};
        let mut s =
            std::os::unix::net::UnixStream::connect(layout.dir.path().join("lonely.handover.sock"))
                .expect("the handover socket answers");
        s.write_all(b"GET / HTTP/1.1\n").unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("closed, not hanging");
        assert!(rest.is_empty(), "no sockets for a stranger: {rest:?}");
    });
    let (ok, out, err) = bee_tests::bee_cli(&[
        "call",
        "--cluster",
        layout.cluster_file().to_str().unwrap(),
        "lonely",
        "echo",
        "still",
    ]);
    assert!(
        ok && out.contains("still"),
        "the node still serves: {out} {err}"
    );
}
