//! B2..B5 of the cluster client against an in-process bee node serving `echo` and
//! `sink` on 127.0.0.1 (OS-chosen port), with small counts: every reply must check out,
//! every push must be counted, and the B6 readings must be present.

use std::time::Duration;

use bee_bench::cluster::{run, ClusterParams};
use bee_cluster::{Cluster, ClusterSettings};
use bee_registry::{ClusterConfig, Registry};
use bee_runtime::builtin::{Echo, Sink};
use bee_runtime::{Node, RuntimeConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_client_measures_and_checks() {
    let server = Node::new("benchsrv", RuntimeConfig::default());
    let cluster = Cluster::start(
        &server,
        Registry::new(ClusterConfig::parse_lua("__nowaiting = true\n").unwrap()),
        ClusterSettings::default(),
    );
    cluster
        .register("echo", server.spawn("echo", Echo))
        .unwrap();
    cluster
        .register("sink", server.spawn("sink", Sink::default()))
        .unwrap();
    let addr = cluster.open("127.0.0.1:0").await.unwrap();

    let dir = std::env::temp_dir().join(format!("bee-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cluster.lua");
    std::fs::write(&file, format!("benchsrv = \"{addr}\"\n")).unwrap();

    let p = ClusterParams {
        b2_calls: 300,
        b3_seconds: 0.3,
        b3_inflight: 16,
        b4_pushes: 3_000,
        b5_seconds: 0.3,
        node_pid: Some(std::process::id()),
        ..ClusterParams::quick(file, "benchsrv".into())
    };
    let r = tokio::time::timeout(Duration::from_secs(60), run(&p))
        .await
        .expect("bench finished in time")
        .expect("bench ran");
    server.shutdown();
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!((r.b2_errors, r.b3_errors, r.b5_errors), (0, 0, 0), "{r:?}");
    assert_eq!(r.b2_calls, 300);
    assert!(r.b2_p50_us > 0.0 && r.b2_p99_us >= r.b2_p50_us, "{r:?}");
    assert!(r.b3_calls > 0 && r.b3_calls_per_s > 0.0, "{r:?}");
    assert_eq!(
        (r.b4_pushes, r.b4_received, r.b4_lost),
        (3_000, 3_000, 0),
        "{r:?}"
    );
    assert!(r.b5_calls > 0 && r.b5_mib_per_s > 0.0, "{r:?}");
    assert!(r.rss_idle_kb.is_some() && r.rss_after_b3_kb.is_some() && r.rss_hwm_kb.is_some());
}

#[tokio::test]
async fn unreachable_node_is_a_readable_error() {
    let dir = std::env::temp_dir().join(format!("bee-bench-test-down-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cluster.lua");
    // A port nobody listens on (reserved for this process, below the ephemeral range).
    let port = bee_testkit::free_port();
    std::fs::write(&file, format!("down = \"127.0.0.1:{port}\"\n")).unwrap();
    let err = run(&ClusterParams::quick(file, "down".into()))
        .await
        .unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    let text = err.to_string();
    assert!(text.contains("cannot reach @echo on node down"), "{text}");
}
