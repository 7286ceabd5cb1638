//! `bee cluster upgrade` over the demo's four nodes (`bee-demo` processes on
//! loopback) while a client node keeps calling and pushing: every node is handed over to
//! a new process in turn, no call fails, every LoginReq push is counted by
//! `lpersistence` (its counter carried across its upgrade). Then a rollout where one
//! node's new config is bad: that node's old process keeps serving, the nodes after it
//! are not touched, the command exits non-zero and says so.

mod dispatch_common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bee_cluster::Cluster;
use bee_codec::seri::Value;
use bee_proto::game::LoginReq;
use bee_tests::{bee_bin, demo_bin, Layout};
use bytes::Bytes;
use dispatch_common::{frame, lua, riding_node, start_demo, text, values};

const NODES: [&str; 4] = ["lobby", "lpersistence_3", "activity_master", "shop_master"];

/// Kills every process whose command line names the layout's directory (the nodes the
/// upgrade started, detached, are not children of this test).
struct Reaper(String);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .arg("-9")
            .arg("-f")
            .arg(&self.0)
            .status();
    }
}

/// `bee cluster upgrade` of the layout's cluster with the node configs in `configs`
/// (default: the layout's directory), to and from `bee-demo`.
fn upgrade(layout: &Layout, configs: Option<&Path>, extra: &[&str]) -> (bool, String) {
    let dir = layout.dir.path();
    let out = Command::new(bee_bin())
        .args(["cluster", "upgrade", "--cluster"])
        .arg(dir.join("cluster.lua"))
        .arg("--configs")
        .arg(configs.unwrap_or(dir))
        .arg("--bin")
        .arg(demo_bin())
        .arg("--old-bin")
        .arg(demo_bin())
        .args(extra)
        // The new nodes log their handover at info (the summary quotes it).
        .env("BEE_LOG", "info")
        .output()
        .expect("run bee cluster upgrade");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// activity_master's `("progress", 7, 1)`: uid 7 advances one step.
fn progress_of_7() -> Bytes {
    lua(&[
        Value::from("progress"),
        Value::Integer(7),
        Value::Integer(1),
    ])
}

/// The incarnation of every demo node, in `NODES` order.
async fn incarnations(c: &Cluster) -> Vec<i64> {
    let mut v = Vec::new();
    for n in NODES {
        v.push(incarnation(c, n).await);
    }
    v
}

async fn incarnation(c: &Cluster, node: &str) -> i64 {
    let r = c
        .call(node, "bee_config", lua(&[Value::from("config")]))
        .await
        .unwrap_or_else(|e| panic!("{node} answers: {e}"));
    let report = bee_cluster::lifecycle::ConfigReport::from_values(&values(&r)).unwrap();
    report.incarnation as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_upgrade_of_the_demo_cluster_under_load_then_a_bad_config_stops_it() {
    let mut names: Vec<&str> = NODES.to_vec();
    names.push("client");
    let layout = Layout::new(&names);
    let _reaper = Reaper(layout.dir.path().display().to_string());
    let _procs: Vec<_> = NODES.iter().map(|n| start_demo(&layout, n)).collect();

    let (node, c) = riding_node(&layout, "client", "client", Duration::from_secs(5)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failed, pushes) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let load = {
        let (c, stop, calls, failed, pushes, first_error) = (
            c.clone(),
            stop.clone(),
            calls.clone(),
            failed.clone(),
            pushes.clone(),
            first_error.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                for (node, service, payload) in [
                    (
                        "lpersistence_3",
                        "lpersistence",
                        lua(&[Value::from("ping")]),
                    ),
                    ("activity_master", "activity_master", progress_of_7()),
                ] {
                    calls.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = c.call(node, service, payload).await {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap()
                            .get_or_insert_with(|| format!("{node}: {e}"));
                    }
                }
                let login = LoginReq {
                    uid: i,
                    ..LoginReq::default()
                };
                if c.send("lpersistence_3", "lpersistence", text(frame(i, &login)))
                    .await
                    .is_ok()
                {
                    pushes.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let before = incarnations(&c).await;
    let (ok, out) = tokio::task::block_in_place(|| upgrade(&layout, None, &[]));
    println!("{out}");
    assert!(ok, "the rolling upgrade succeeds:\n{out}");
    assert!(out.contains("4 of 4 nodes upgraded"), "{out}");
    assert!(
        out.contains("handover") && out.contains("states carried"),
        "{out}"
    );
    for (n, b) in NODES.iter().zip(&before) {
        assert_ne!(incarnation(&c, n).await, *b, "{n} runs a new process");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no call failed during the rolling upgrade ({} calls; first error {:?})",
        calls.load(Ordering::Relaxed),
        first_error.lock().unwrap()
    );
    let logins = values(
        &c.call(
            "lpersistence_3",
            "lpersistence",
            lua(&[Value::from("logins")]),
        )
        .await
        .unwrap(),
    );
    assert_eq!(
        logins,
        vec![Value::Integer(pushes.load(Ordering::Relaxed) as i64)],
        "every login push counted once, the counter carried over the upgrade"
    );

    // A bad config for activity_master's new version: it cannot start; the old process
    // keeps serving; shop_master, after it in the order, is not touched.
    let bad = layout.dir.path().join("activity_master.toml");
    let good = std::fs::read_to_string(&bad).unwrap();
    std::fs::write(&bad, format!("no_such_key = 1\n{good}")).unwrap();
    let mid = incarnations(&c).await;
    let (ok, out) = tokio::task::block_in_place(|| {
        upgrade(
            &layout,
            None,
            &["--nodes", "lpersistence_3,activity_master,shop_master"],
        )
    });
    println!("{out}");
    assert!(!ok, "the rollout fails:\n{out}");
    assert!(
        out.contains("FAILED, old process kept serving"),
        "activity_master's old process kept serving:\n{out}"
    );
    assert!(out.contains("not upgraded (the rollout stopped)"), "{out}");
    assert!(out.contains("1 of 3 nodes upgraded"), "{out}");
    assert!(out.contains("stopped at activity_master"), "{out}");
    let after = incarnations(&c).await;
    assert_eq!(after[0], mid[0], "lobby was not in this rollout");
    assert_ne!(after[1], mid[1], "lpersistence_3 was upgraded");
    assert_eq!(
        after[2], mid[2],
        "activity_master still runs its old process"
    );
    assert_eq!(after[3], mid[3], "shop_master was left as it was");
    let progress = c
        .call("activity_master", "activity_master", progress_of_7())
        .await;
    assert!(progress.is_ok(), "activity_master still answers");

    // A new version that takes the node over but is not healthy (it demands node
    // authentication the tool cannot give): rolled back by a handover to the old binary
    // with the old config (`--old-configs`).
    let dir = layout.dir.path();
    let new_dir = dir.join("v2");
    std::fs::create_dir_all(&new_dir).unwrap();
    let old_cfg = std::fs::read_to_string(dir.join("shop_master.toml")).unwrap();
    let (first, rest) = old_cfg.split_once('\n').unwrap();
    let new_cfg = format!(
        "{first}\nhandover_socket = \"{}\"\n{}\n[auth]\nsecret = \"only-v2-knows\"\n",
        dir.join("shop_master.handover.sock").display(),
        rest.replace(
            "cluster = \"cluster.lua\"",
            &format!("cluster = \"{}\"", dir.join("cluster.lua").display())
        )
    );
    std::fs::write(new_dir.join("shop_master.toml"), new_cfg).unwrap();
    let before_shop = incarnation(&c, "shop_master").await;
    let old_configs = dir.display().to_string();
    let (ok, out) = tokio::task::block_in_place(|| {
        upgrade(
            &layout,
            Some(&new_dir),
            &[
                "--old-configs",
                &old_configs,
                "--nodes",
                "shop_master",
                "--health-timeout-ms",
                "3000",
            ],
        )
    });
    println!("{out}");
    assert!(!ok, "an unhealthy new version fails the rollout:\n{out}");
    assert!(
        out.contains("FAILED, rolled back to") && out.contains("the new process handed back"),
        "{out}"
    );
    assert!(out.contains("0 of 1 nodes upgraded"), "{out}");
    let after_shop = incarnation(&c, "shop_master").await;
    assert_ne!(
        after_shop, before_shop,
        "shop_master runs the old binary again, in a new process, without auth"
    );
    node.shutdown();
}
