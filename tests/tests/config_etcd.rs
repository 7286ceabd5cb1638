//! Issue 11, etcd mode: `bee` nodes whose config says `cluster = "etcd://…/PREFIX"` read
//! the cluster config from etcd at start, apply each new version and ack it (an older one
//! is refused in the ack), register under a lease, and mark a peer down when its lease
//! expires — until it registers again. A private etcd on free loopback ports, as in
//! `crates/bee-etcd/tests/etcd.rs`; without the etcd binary the test says so and passes,
//! unless CI is set.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bee_codec::seri::{self, Value};
use bee_dispatch::lifecycle::{ConfigReport, Hello};
use bee_dispatch::Cluster;
use bee_etcd::{EtcdOptions, EtcdStore};
use bee_tests::{free_port, BeeProcess, Layout, TempDir};

struct Etcd {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_etcd() -> Option<Etcd> {
    let bin =
        PathBuf::from(std::env::var("BEE_ETCD_BIN").unwrap_or_else(|_| "/usr/bin/etcd".into()));
    if !bin.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the etcd binary is missing (Debian's etcd-server: cargo xtask setup)"
        );
        eprintln!("SKIPPED: no etcd binary (apt-get install etcd-server); this test did not run");
        return None;
    }
    let dir = TempDir::new("etcd");
    let (port, peer_port) = (free_port(), free_port());
    let client = format!("http://127.0.0.1:{port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let child = Command::new(&bin)
        .args(["--name", "bee-test"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen-client-urls", &client])
        .args(["--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer])
        .args(["--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("bee-test={peer}")])
        .args(["--initial-cluster-state", "new"])
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd");
    let etcd = Etcd {
        child,
        port,
        _dir: dir,
    };
    let options = EtcdOptions {
        connect_timeout: Duration::from_millis(500),
        ..EtcdOptions::default()
    };
    let started = Instant::now();
    while EtcdStore::connect_with(&format!("etcd://127.0.0.1:{port}/probe"), options)
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "etcd did not answer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some(etcd)
}

async fn report(client: &Cluster, node: &str) -> ConfigReport {
    let payload = seri::pack(&[Value::from("lua"), Value::from("config")]).unwrap();
    let reply = client
        .call(node, "@bee_config", payload)
        .await
        .expect("config");
    ConfigReport::from_values(&seri::unpack(&reply).unwrap()).unwrap()
}

/// Node `from` says hello to `to` (its own channel, its own view of `to`).
async fn ping(client: &Cluster, from: &str, to: &str) -> Result<Hello, String> {
    let payload = seri::pack(&[Value::from("lua"), Value::from("ping"), Value::from(to)]).unwrap();
    let reply = client
        .call(from, "@bee_clusterd", payload)
        .await
        .map_err(|e| e.to_string())?;
    Hello::from_values(&seri::unpack(&reply).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_etcd_nodes_follow_the_key_ack_and_see_a_lease_expire() {
    let Some(etcd) = start_etcd().await else {
        return;
    };
    let url = format!("etcd://127.0.0.1:{}/bee/t", etcd.port);
    let store = EtcdStore::connect(&url).await.unwrap();
    let layout = Layout::new(&["a", "b"]);
    let text = |version: u64| {
        format!(
            "__version = {version}\na = \"127.0.0.1:{}\"\nb = \"127.0.0.1:{}\"\n",
            layout.port("a"),
            layout.port("b")
        )
    };
    store.put_config_text(&text(1), false).await.unwrap();
    let start = |name: &str| {
        let path = layout.dir.path().join(format!("{name}-etcd.toml"));
        std::fs::write(
            &path,
            format!("name = \"{name}\"\ncluster = \"{url}\"\n[[service]]\nkind = \"echo\"\nname = \"echo\"\n"),
        )
        .unwrap();
        BeeProcess::start(name, &path)
    };
    let _a = start("a");
    let mut b = start("b");
    let acks = store
        .wait_acks(&["a", "b"], 1, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(acks.all_applied(), "{acks:?}");
    let (_n, client) = layout.client(Duration::from_secs(5));
    let r = report(&client, "a").await;
    assert_eq!(
        (r.version, r.source.as_str()),
        (1, "etcd key /bee/t/config")
    );

    // A new version: applied and acked by both.
    store.put_config_text(&text(2), false).await.unwrap();
    let acks = store
        .wait_acks(&["a", "b"], 2, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(acks.all_applied(), "{acks:?}");
    assert_eq!(report(&client, "b").await.version, 2);

    // An older one forced into etcd: the nodes refuse it and say why in their acks.
    store.put_config_text(&text(1), true).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let acks = store.read_acks().await.unwrap();
        if acks.values().filter(|a| !a.ok).count() == 2 {
            break acks;
        }
        assert!(Instant::now() < deadline, "no refusals acked: {acks:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for ack in failed.values() {
        let why = ack.error.as_deref().unwrap_or_default();
        assert!(
            why.contains("config version 1 is older than the running version 2"),
            "{why}"
        );
    }
    assert_eq!(report(&client, "a").await.version, 2);

    // Membership: both registered with their incarnations.
    let members = store.members().await.unwrap();
    assert_eq!(members.len(), 2, "{members:?}");
    let first_b = ping(&client, "a", "b").await.expect("a reaches b");
    assert_eq!(first_b.incarnation, members["b"].incarnation);

    // b dies without a word: its lease expires and a marks it down.
    b.kill9();
    let died = Instant::now();
    let down = loop {
        match ping(&client, "a", "b").await {
            Err(e) if e.contains("node b is down: its etcd membership key is gone") => break e,
            other => {
                assert!(
                    died.elapsed() < Duration::from_secs(20),
                    "a never marked b down: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    println!("b marked down after {:?}: {down}", died.elapsed());

    // b comes back: registered again, reachable again, another run.
    let _b2 = start("b");
    let deadline = Instant::now() + Duration::from_secs(20);
    let again = loop {
        match ping(&client, "a", "b").await {
            Ok(h) => break h,
            Err(e) => {
                assert!(Instant::now() < deadline, "b never came back at a: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_ne!(again.incarnation, first_b.incarnation);
}
