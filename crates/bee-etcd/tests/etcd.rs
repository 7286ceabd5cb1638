//! bee-etcd against a real etcd: each test starts Debian's `etcd` on its own free loopback
//! ports with its own data dir under `target/`, and kills it at the end. Without the etcd
//! binary they fail, saying so. The partition test also needs root and `iptables`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bee_etcd::{ConfigUpdate, EtcdError, EtcdOptions, EtcdStore, MemberEvent};
use bee_registry::{ClusterConfig, ConfigForm, ConfigSource, Registry, RegistryError};

static STARTED: AtomicUsize = AtomicUsize::new(0);

fn etcd_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("BEE_ETCD_BIN") {
        return Some(PathBuf::from(p));
    }
    let debian = PathBuf::from("/usr/bin/etcd");
    if debian.exists() {
        return Some(debian);
    }
    Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| PathBuf::from("etcd"))
}

use bee_testkit::free_port;

/// One etcd server for one test.
struct EtcdServer {
    bin: PathBuf,
    child: Option<Child>,
    dir: PathBuf,
    client_port: u16,
    /// A second client port (the partition test cuts one and watches through the other).
    second_port: u16,
    peer_port: u16,
}

impl EtcdServer {
    /// Start etcd and wait until it answers; fails the test when the binary is missing.
    async fn start() -> Option<EtcdServer> {
        let Some(bin) = etcd_binary() else {
            panic!("the etcd binary is missing (install Debian's etcd-server: cargo xtask setup)");
        };
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let dir = target.join(format!("etcd-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the etcd data dir");
        let mut server = EtcdServer {
            bin,
            child: None,
            dir,
            client_port: free_port(),
            second_port: free_port(),
            peer_port: free_port(),
        };
        server.spawn().await;
        Some(server)
    }

    fn url(&self, prefix: &str) -> String {
        format!("etcd://127.0.0.1:{}/{prefix}", self.client_port)
    }

    /// The same etcd through its second client port.
    fn second_url(&self, prefix: &str) -> String {
        format!("etcd://127.0.0.1:{}/{prefix}", self.second_port)
    }

    async fn spawn(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let listen = format!("{client},http://127.0.0.1:{}", self.second_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.join("etcd.log")).expect("create etcd.log");
        let child = Command::new(&self.bin)
            .args(["--name", "bee-test"])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &listen])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("bee-test={peer}")])
            .args(["--initial-cluster-state", "new"])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        let started = Instant::now();
        let options = EtcdOptions {
            connect_timeout: Duration::from_millis(500),
            ..EtcdOptions::default()
        };
        loop {
            if EtcdStore::connect_with(&self.url("probe"), options)
                .await
                .is_ok()
            {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
                panic!("etcd exited ({status}) before answering; its log:\n{log}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "etcd did not answer on {client} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn lua(text: &str) -> ClusterConfig {
    ClusterConfig::parse_lua(text).unwrap()
}

async fn next_config(watch: &mut bee_etcd::ConfigWatch, within: Duration) -> ConfigUpdate {
    watch
        .next_within(within)
        .await
        .unwrap_or_else(|| panic!("no config update within {within:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_put_get_watch_in_order() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let store = EtcdStore::connect(&etcd.url("bee/test")).await.unwrap();
    assert_eq!(store.get_config().await.unwrap(), None);
    let mut watch = store.watch_config();

    let v1 = lua("__version = 1\nlobby = \"127.0.0.1:2528\"\n");
    let v2 = lua("__version = 2\nlobby = \"127.0.0.1:2529\"\nshop = false\n");
    let r1 = store.put_config(&v1, ConfigForm::Lua, false).await.unwrap();
    let r2 = store
        .put_config(&v2, ConfigForm::Toml, false)
        .await
        .unwrap();
    let r3 = store
        .put_config_text(
            "# hand-written\nversion = 3\n[nodes]\nlobby = \"127.0.0.1:2530\"\n",
            false,
        )
        .await
        .unwrap();
    assert!(r1 < r2 && r2 < r3, "{r1} {r2} {r3}");

    let mut seen = Vec::new();
    for _ in 0..3 {
        match next_config(&mut watch, Duration::from_secs(10)).await {
            ConfigUpdate::Config(c) => seen.push((c.config.version, c.revision)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seen, vec![(1, r1), (2, r2), (3, r3)]);

    let now = store.get_config().await.unwrap().unwrap();
    assert_eq!(now.config.version, 3);
    assert_eq!(now.revision, r3);
    assert!(
        now.text.starts_with("# hand-written"),
        "the text is kept as written"
    );

    // Storing the same text again writes nothing.
    assert_eq!(store.put_config_text(&now.text, false).await.unwrap(), r3);
    // An older version is refused; the stored one stays.
    let e = store
        .put_config(&v2, ConfigForm::Lua, false)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            EtcdError::Refused {
                error: RegistryError::VersionBehind {
                    offered: 2,
                    running: 3
                },
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("config version 2 is older than the running version 3"),
        "{e}"
    );
    // Malformed text: refused before anything is written, with its line.
    let e = store
        .put_config_text("__version = 9\nlobby = \"127.0.0.1\"\n", false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("line 2: node `lobby`"), "{e}");
    assert_eq!(store.get_config().await.unwrap().unwrap().revision, r3);
    assert!(
        watch
            .next_within(Duration::from_millis(300))
            .await
            .is_none(),
        "nothing was written"
    );

    // Garbage written behind bee's back reaches the watch as Invalid, with the line.
    let mut raw =
        etcd_client::Client::connect([format!("http://127.0.0.1:{}", etcd.client_port)], None)
            .await
            .unwrap();
    raw.put(
        "/bee/test/config",
        "version = 4\n[nodes]\nlobby = 12\n",
        None,
    )
    .await
    .unwrap();
    match next_config(&mut watch, Duration::from_secs(10)).await {
        ConfigUpdate::Invalid { error, .. } => {
            let text = error.to_string();
            assert!(
                text.contains("/bee/test/config") && text.contains("line 3"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.get_config().await,
        Err(EtcdError::Config { .. })
    ));
    // Forced: a lower version is stored over the broken text, and seen.
    let r5 = store.put_config(&v1, ConfigForm::Lua, true).await.unwrap();
    match next_config(&mut watch, Duration::from_secs(10)).await {
        ConfigUpdate::Config(c) => assert_eq!((c.config.version, c.revision), (1, r5)),
        other => panic!("{other:?}"),
    }
    raw.delete("/bee/test/config", None).await.unwrap();
    assert!(matches!(
        next_config(&mut watch, Duration::from_secs(10)).await,
        ConfigUpdate::Deleted { .. }
    ));
}

/// The watch outlives an etcd restart: it logs, backs off, reads again and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_watch_survives_an_etcd_restart() {
    let Some(mut etcd) = EtcdServer::start().await else {
        return;
    };
    let store = EtcdStore::connect(&etcd.url("bee/restart")).await.unwrap();
    store
        .put_config(
            &lua("__version = 1\na = \"127.0.0.1:1\""),
            ConfigForm::Lua,
            false,
        )
        .await
        .unwrap();
    let mut watch = store.watch_config();
    assert!(matches!(
        next_config(&mut watch, Duration::from_secs(10)).await,
        ConfigUpdate::Config(c) if c.config.version == 1
    ));
    etcd.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    etcd.spawn().await;
    // A second connection writes the next version.
    let writer = EtcdStore::connect(&etcd.url("bee/restart")).await.unwrap();
    writer
        .put_config(
            &lua("__version = 2\na = \"127.0.0.1:2\""),
            ConfigForm::Lua,
            false,
        )
        .await
        .unwrap();
    match next_config(&mut watch, Duration::from_secs(20)).await {
        ConfigUpdate::Config(c) => assert_eq!(c.config.version, 2),
        other => panic!("{other:?}"),
    }
}

/// The whole loop of one node: read, apply into the registry, ack; the pusher waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_written_read_and_waited_for() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let store = EtcdStore::connect(&etcd.url("bee/acks")).await.unwrap();
    let v3 = lua("__version = 3\na = \"127.0.0.1:1\"\nb = \"127.0.0.1:2\"\n");
    store.put_config(&v3, ConfigForm::Lua, false).await.unwrap();

    // Node a applies it and acks.
    let stored = store.get_config().await.unwrap().unwrap();
    let registry = Registry::with_self("a", lua("a = \"127.0.0.1:1\""));
    let key = store.url().config_key();
    registry
        .apply(
            stored.config.clone(),
            ConfigSource::Etcd { key: key.clone() },
            false,
        )
        .unwrap();
    let meta = registry.meta();
    assert_eq!(meta.source, ConfigSource::Etcd { key });
    store
        .put_ack("a", meta.version, &meta.hash.short(), Ok(()))
        .await
        .unwrap();
    // Node b refuses it (as a node whose running config is newer would).
    let b = Registry::with_self("b", lua("__version = 5\nb = \"127.0.0.1:2\""));
    let refused = b
        .apply(
            stored.config.clone(),
            ConfigSource::Etcd { key: "k".into() },
            false,
        )
        .unwrap_err();
    store
        .put_ack(
            "b",
            3,
            &stored.config.content_hash().short(),
            Err(refused.to_string()),
        )
        .await
        .unwrap();

    let acks = store.read_acks().await.unwrap();
    assert_eq!(acks.len(), 2);
    assert!(acks["a"].ok && acks["a"].version == 3 && acks["a"].error.is_none());
    assert_eq!(acks["a"].hash, v3.content_hash().short());
    assert!(!acks["b"].ok);
    assert!(acks["b"]
        .error
        .as_deref()
        .unwrap()
        .contains("older than the running version 5"));

    // c never answers: reported missing when the time is up, not an error.
    let started = Instant::now();
    let report = store
        .wait_acks(&["a", "b", "c"], 3, Duration::from_millis(800))
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    assert_eq!(report.applied.keys().collect::<Vec<_>>(), vec!["a"]);
    assert_eq!(report.failed.keys().collect::<Vec<_>>(), vec!["b"]);
    assert_eq!(report.missing, vec!["c".to_string()]);
    assert!(!report.all_applied());
    assert!(
        report
            .to_string()
            .starts_with("version 3: applied a; failed b (config version 3 is older"),
        "{report}"
    );

    // c answers a little later: the wait ends then, well before its timeout.
    let late = store.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        late.put_ack("c", 3, "0123456789abcdef", Ok(()))
            .await
            .unwrap();
    });
    let started = Instant::now();
    let report = store
        .wait_acks(&["a", "c"], 3, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(report.all_applied(), "{report}");
    writer.await.unwrap();

    // An ack that is not bee's is a clear error naming the key.
    let mut raw =
        etcd_client::Client::connect([format!("http://127.0.0.1:{}", etcd.client_port)], None)
            .await
            .unwrap();
    raw.put("/bee/acks/acks/d", "not json", None).await.unwrap();
    let e = store.read_acks().await.unwrap_err();
    assert!(
        e.to_string().contains("/bee/acks/acks/d") && e.to_string().contains("not an ack"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_come_and_go_with_their_lease() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let store = EtcdStore::connect(&etcd.url("bee/members")).await.unwrap();
    let ttl = Duration::from_secs(2);
    let n1 = store
        .register_member("n1", "127.0.0.1:7001", 11, ttl)
        .await
        .unwrap();
    let n2 = store
        .register_member("n2", "127.0.0.1:7002", 22, ttl)
        .await
        .unwrap();
    assert_eq!(n1.key(), "/bee/members/members/n1");

    let members = store.members().await.unwrap();
    assert_eq!(members.len(), 2);
    assert_eq!(members["n1"].addr, "127.0.0.1:7001");
    assert_eq!(members["n2"].incarnation, 22);
    assert_eq!(members["n1"].lease, n1.lease());

    let mut watch = store.watch_members();
    let mut up = Vec::new();
    for _ in 0..2 {
        match watch.next_within(Duration::from_secs(10)).await {
            Some(MemberEvent::Up(m)) => up.push(m.node),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(up, vec!["n1", "n2"]);

    // n1's keep-alives stop: gone within the TTL plus a margin, and the watch says so.
    drop(n1);
    let dropped_at = Instant::now();
    match watch.next_within(ttl + Duration::from_secs(4)).await {
        Some(MemberEvent::Down { node, revision }) => {
            assert_eq!(node, "n1");
            assert!(revision > 0);
        }
        other => panic!("expected n1 down, got {other:?}"),
    }
    let gone_after = dropped_at.elapsed();
    assert!(gone_after < ttl + Duration::from_secs(4), "{gone_after:?}");
    // n2, kept alive, outlived several TTLs.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let members = store.members().await.unwrap();
    assert_eq!(
        members.keys().collect::<Vec<_>>(),
        vec!["n2"],
        "after {gone_after:?}"
    );

    // n2 restarts under the same name: Up with the new incarnation.
    let n2b = store
        .register_member("n2", "127.0.0.1:7003", 23, ttl)
        .await
        .unwrap();
    match watch.next_within(Duration::from_secs(5)).await {
        Some(MemberEvent::Up(m)) => assert_eq!(
            (m.node.as_str(), m.incarnation, m.addr.as_str()),
            ("n2", 23, "127.0.0.1:7003")
        ),
        other => panic!("{other:?}"),
    }
    drop(n2);
    // Leaving on purpose: gone at once.
    let started = Instant::now();
    n2b.revoke().await.unwrap();
    match watch.next_within(Duration::from_secs(2)).await {
        Some(MemberEvent::Down { node, .. }) => assert_eq!(node, "n2"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(store.members().await.unwrap().is_empty());
}

/// Packets to one loopback TCP port dropped (iptables, this test's own port only) until
/// dropped itself: a network cut that sends no reset, as a partition does.
struct Cut(u16);

impl Cut {
    fn rule(port: u16, op: &str) -> Result<(), String> {
        let port = port.to_string();
        let out = Command::new("iptables")
            .args([
                op, "INPUT", "-i", "lo", "-p", "tcp", "--dport", &port, "-j", "DROP",
            ])
            .output()
            .map_err(|e| format!("iptables: {e} (needs root and iptables: cargo xtask setup)"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "iptables {op}: {} (needs root)",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn start(port: u16) -> Cut {
        Cut::rule(port, "-I").expect("cut the port");
        Cut(port)
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        let _ = Cut::rule(self.0, "-D");
    }
}

/// A member cut off from etcd longer than its TTL is registered again as soon as the
/// network is back: its reconnect notices the way open (a bare TCP connect every 100 ms)
/// instead of waiting for its next paced dial or a SYN retransmission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_past_its_ttl_is_back_soon_after_the_cut_heals() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let ttl = Duration::from_secs(2);
    let member = EtcdStore::connect(&etcd.url("bee/cut")).await.unwrap();
    let observer = EtcdStore::connect(&etcd.second_url("bee/cut"))
        .await
        .unwrap();
    let _n1 = member
        .register_member("n1", "127.0.0.1:7001", 11, ttl)
        .await
        .unwrap();
    let mut watch = observer.watch_members();
    match watch.next_within(Duration::from_secs(10)).await {
        Some(MemberEvent::Up(m)) => assert_eq!(m.node, "n1"),
        other => panic!("{other:?}"),
    }

    // Cut: the lease runs out, and the reconnect keeps dialling into the cut for a
    // while (its dials in flight wait for SYN retransmissions seconds apart).
    let cut = Cut::start(etcd.client_port);
    match watch.next_within(ttl + Duration::from_secs(5)).await {
        Some(MemberEvent::Down { node, .. }) => assert_eq!(node, "n1"),
        other => panic!("expected n1 down, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    drop(cut);
    let healed = Instant::now();
    match watch.next_within(Duration::from_secs(10)).await {
        Some(MemberEvent::Up(m)) => assert_eq!((m.node.as_str(), m.incarnation), ("n1", 11)),
        other => panic!("expected n1 up again, got {other:?}"),
    }
    let back = healed.elapsed();
    eprintln!("registered again {back:?} after the cut healed");
    // A reconnect left to SYN retransmissions would take a second or more.
    assert!(back <= Duration::from_millis(750), "took {back:?}");
}

/// Nothing listens: a clear error within the connect timeout. No etcd needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_is_a_clear_error_within_the_timeout() {
    let port = free_port();
    let url = format!("etcd://127.0.0.1:{port}/bee");
    let timeout = Duration::from_millis(1500);
    let started = Instant::now();
    let e = EtcdStore::connect_with(
        &url,
        EtcdOptions {
            connect_timeout: timeout,
            ..EtcdOptions::default()
        },
    )
    .await
    .unwrap_err();
    let took = started.elapsed();
    assert!(took < timeout + Duration::from_millis(500), "{took:?}");
    match &e {
        EtcdError::Unreachable {
            endpoint,
            timeout: t,
            ..
        } => {
            assert_eq!(endpoint, &format!("http://127.0.0.1:{port}"));
            assert_eq!(*t, timeout);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string().starts_with(&format!(
            "etcd at http://127.0.0.1:{port} did not answer within 1.5s"
        )),
        "{e}"
    );
    let e = EtcdStore::connect("etcd://127.0.0.1:2379")
        .await
        .unwrap_err();
    assert!(matches!(e, EtcdError::BadUrl { .. }), "{e:?}");
}
