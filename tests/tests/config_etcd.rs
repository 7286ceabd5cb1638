//! etcd mode: `bee` nodes whose config says `cluster = "etcd://…/PREFIX"` read
//! the cluster config from etcd at start, apply each new version and ack it (an older one
//! is refused in the ack), register under a lease, and mark a peer down when its lease
//! expires — until it registers again. A private etcd on free loopback ports, as in
//! `crates/bee-etcd/tests/etcd.rs`; without the etcd binary the test says so and passes,
//! unless CI is set.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bee_cluster::lifecycle::{ConfigReport, Hello};
use bee_cluster::Cluster;
use bee_codec::seri::{self, Value};
use bee_etcd::{EtcdOptions, EtcdStore};
use bee_tests::{bee_cli, free_port, BeeProcess, Layout, TempDir};

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
    start_etcd_on(free_port()).await
}

/// A private etcd answering clients on `port`.
async fn start_etcd_on(port: u16) -> Option<Etcd> {
    let bin =
        PathBuf::from(std::env::var("BEE_ETCD_BIN").unwrap_or_else(|_| "/usr/bin/etcd".into()));
    assert!(
        bin.exists(),
        "{} is missing: these tests need etcd (Debian's etcd-server: cargo xtask setup)",
        bin.display()
    );
    let dir = TempDir::new("etcd");
    let peer_port = free_port();
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
    let start = |name: &str| start_etcd_node(&layout, name, &url);
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

/// The line of `node` in a push table.
fn line_of<'a>(out: &'a str, node: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(node))
        .unwrap_or_else(|| panic!("no line for {node} in:\n{out}"))
}

/// Start node `name` of `layout` in etcd mode (its node config says `cluster = URL`).
fn start_etcd_node(layout: &Layout, name: &str, url: &str) -> BeeProcess {
    start_etcd_node_with(layout, name, url, "")
}

/// [`start_etcd_node`] with `extra` top-level keys in its node config.
fn start_etcd_node_with(layout: &Layout, name: &str, url: &str, extra: &str) -> BeeProcess {
    let path = layout.dir.path().join(format!("{name}-etcd.toml"));
    std::fs::write(
        &path,
        format!("name = \"{name}\"\ncluster = \"{url}\"\n{extra}[[service]]\nkind = \"echo\"\nname = \"echo\"\n"),
    )
    .unwrap();
    BeeProcess::start(name, &path)
}

/// Node `a` of a one-node layout, its config (version 1) stored at etcd `PREFIX`: the
/// URL, the store and the layout.
async fn one_node_in_etcd(etcd: &Etcd, prefix: &str) -> (String, EtcdStore, Layout) {
    let url = format!("etcd://127.0.0.1:{}{prefix}", etcd.port);
    let store = EtcdStore::connect(&url).await.unwrap();
    let layout = Layout::new(&["a"]);
    store
        .put_config_text(
            &format!("__version = 1\na = \"127.0.0.1:{}\"\n", layout.port("a")),
            false,
        )
        .await
        .unwrap();
    (url, store, layout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_etcd_bee_config_push_through_etcd_prints_every_nodes_ack() {
    let Some(etcd) = start_etcd().await else {
        return;
    };
    let url = format!("etcd://127.0.0.1:{}/bee/p", etcd.port);
    let store = EtcdStore::connect(&url).await.unwrap();
    // c is in the config but never runs; d is marked down.
    let layout = Layout::new(&["a", "b", "c"]);
    let text = |version: u64, extra: &str| {
        format!(
            "__version = {version}\na = \"127.0.0.1:{}\"\nb = \"127.0.0.1:{}\"\nc = \"127.0.0.1:{}\"\nd = false\n{extra}",
            layout.port("a"),
            layout.port("b"),
            layout.port("c")
        )
    };
    store.put_config_text(&text(1, ""), false).await.unwrap();
    let _a = start_etcd_node(&layout, "a", &url);
    let _b = start_etcd_node(&layout, "b", &url);
    let acks = store
        .wait_acks(&["a", "b"], 1, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(acks.all_applied(), "{acks:?}");
    let file = |name: &str, body: &str| {
        let p = layout.dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.to_string_lossy().into_owned()
    };

    // Version 2 through etcd: a and b ack it, c never runs (no membership key), d skipped.
    let v2 = file("v2.lua", &text(2, "__motd = \"two\"\n"));
    let started = Instant::now();
    let (ok, out, err) = bee_cli(&[
        "config",
        "push",
        "--cluster",
        &url,
        &v2,
        "--timeout-ms",
        "3000",
    ]);
    println!("{out}{err}");
    assert!(
        ok,
        "one unreachable node is not a failure without --require-all:\n{out}{err}"
    );
    assert!(
        out.starts_with("wrote /bee/p/config (etcd revision "),
        "{out}"
    );
    for n in ["a", "b"] {
        let l = line_of(&out, n);
        assert!(
            l.contains("applied") && l.contains("version 2 hash "),
            "{l}"
        );
    }
    let c = line_of(&out, "c");
    assert!(
        c.contains("unreachable")
            && c.contains("no /bee/p/members/c")
            && c.contains("it never acked"),
        "{c}"
    );
    assert!(line_of(&out, "d").contains("skipped"), "{out}");
    assert!(
        out.contains(": 2 applied, 0 rejected, 1 unreachable, 0 timed out, 0 failed (of 3)"),
        "{out}"
    );
    // The wait is bounded by --timeout-ms (c never answers).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let (_n, client) = layout.client(Duration::from_secs(5));
    let r = report(&client, "b").await;
    assert_eq!(
        (r.version, r.source.as_str()),
        (2, "etcd key /bee/p/config")
    );
    let v2_hash = r.hash.clone();
    // bee status reads the nodes from etcd too: a and b run version 2 from etcd; c
    // cannot answer (exit 1); d is marked down.
    let (ok, out, _err) = bee_cli(&["status", "--cluster", &url, "--timeout-ms", "1000"]);
    assert!(!ok, "c cannot answer:\n{out}");
    for n in ["a", "b"] {
        let l = line_of(&out, n);
        assert!(
            l.contains(" yes ") && l.contains(&v2_hash) && l.contains("etcd key /bee/p/config"),
            "{l}"
        );
    }
    assert!(line_of(&out, "c").contains("no: unreachable"), "{out}");
    assert!(line_of(&out, "d").contains("marked down"), "{out}");

    // --require-all: the same push fails because of c (the key already holds it: no write).
    let (ok, out, err) = bee_cli(&[
        "config",
        "push",
        "--cluster",
        &url,
        &v2,
        "--timeout-ms",
        "1500",
        "--require-all",
    ]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("--require-all: 1 node(s) could not be reached"),
        "{err}"
    );
    assert!(line_of(&out, "a").contains("applied"), "{out}");

    // An older version: etcd refuses it before anything is written.
    let v1 = file("v1.lua", &text(1, "__motd = \"old\"\n"));
    let (ok, out, err) = bee_cli(&["config", "push", "--cluster", &url, &v1]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("nothing was pushed")
            && err.contains("config version 1 is older than the running version 2"),
        "{err}"
    );
    assert_eq!(store.get_config().await.unwrap().unwrap().config.version, 2);

    // Forced into etcd, the nodes refuse it themselves: each row says why, exit 1, and
    // the nodes still run version 2 with the same hash.
    let (ok, out, err) = bee_cli(&[
        "config",
        "push",
        "--cluster",
        &url,
        &v1,
        "--force",
        "--timeout-ms",
        "3000",
    ]);
    println!("{out}{err}");
    assert!(!ok, "{out}");
    for n in ["a", "b"] {
        let l = line_of(&out, n);
        assert!(
            l.contains("rejected")
                && l.contains("config version 1 is older than the running version 2"),
            "{l}"
        );
    }
    assert!(
        out.contains(": 0 applied, 2 rejected, 1 unreachable"),
        "{out}"
    );
    assert!(
        err.contains("not every reachable node applied the config"),
        "{err}"
    );
    for n in ["a", "b"] {
        let r = report(&client, n).await;
        assert_eq!((r.version, r.hash.as_str()), (2, v2_hash.as_str()), "{n}");
    }

    // etcd itself unreachable: nothing pushed, the URL named.
    let dead = format!("etcd://127.0.0.1:{}/bee/p", free_port());
    let (ok, _out, err) = bee_cli(&[
        "config",
        "push",
        "--cluster",
        &dead,
        &v2,
        "--timeout-ms",
        "500",
    ]);
    assert!(!ok);
    assert!(
        err.contains("nothing was pushed: cannot reach etcd at") && err.contains(&dead),
        "{err}"
    );
}

/// Run `bee run CONFIG` to its end (at most `limit`); returns (exit ok, stderr).
fn run_to_end(config: &std::path::Path, limit: Duration) -> (bool, String) {
    let mut child = Command::new(bee_tests::bee_bin())
        .arg("run")
        .arg(config)
        .env("BEE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start bee");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.success(), err);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("bee run did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// etcd unreachable at start, no fallback: bounded retries, logged, then a clear error
/// naming the URL and a non-zero exit. (Needs no etcd: nothing listens on the port.)
#[test]
fn config_etcd_unreachable_at_start_without_fallback_retries_then_exits_naming_the_url() {
    let dir = TempDir::new("etcd-down");
    let url = format!("etcd://127.0.0.1:{}/bee/down", free_port());
    let path = dir.path().join("a.toml");
    std::fs::write(
        &path,
        format!("name = \"a\"\ncluster = \"{url}\"\netcd_start_retry_ms = 1500\n"),
    )
    .unwrap();
    let started = Instant::now();
    let (ok, err) = run_to_end(&path, Duration::from_secs(30));
    println!("{err}");
    assert!(!ok, "the node must not run without a config");
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "it gave up before etcd_start_retry_ms: {:?}",
        started.elapsed()
    );
    let retries = err
        .matches("etcd unreachable at start; retrying in")
        .count();
    assert!(retries >= 2, "each retry is logged:\n{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "bee: error: node a: cannot reach etcd at {url} after "
        )) && last.contains("attempt(s) in ")
            && last.contains("cluster_fallback = \"cluster.lua\""),
        "{last}"
    );

    // A fallback only makes sense with etcd: a file cluster with one is a config error.
    let bad = dir.path().join("b.toml");
    std::fs::write(
        &bad,
        "name = \"b\"\ncluster = \"cluster.lua\"\ncluster_fallback = \"other.lua\"\n",
    )
    .unwrap();
    let (ok, err) = run_to_end(&bad, Duration::from_secs(10));
    assert!(!ok);
    assert!(
        err.contains("cluster_fallback is for a cluster config in etcd"),
        "{err}"
    );
}

/// etcd unreachable at start, with `cluster_fallback`: the node runs the file (source
/// shown as the file), keeps trying etcd, and follows it once it is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_etcd_unreachable_at_start_runs_the_fallback_file_then_follows_etcd() {
    let layout = Layout::new(&["a", "b"]);
    let port = free_port();
    let url = format!("etcd://127.0.0.1:{port}/bee/f");
    let text = |version: u64, extra: &str| {
        format!(
            "__version = {version}\na = \"127.0.0.1:{}\"\nb = \"127.0.0.1:{}\"\n{extra}",
            layout.port("a"),
            layout.port("b")
        )
    };
    std::fs::write(layout.dir.path().join("fallback.lua"), text(3, "")).unwrap();
    let path = layout.dir.path().join("a-etcd.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"a\"\ncluster = \"{url}\"\ncluster_fallback = \"fallback.lua\"\netcd_start_retry_ms = 800\n\
             [[service]]\nkind = \"echo\"\nname = \"echo\"\n"
        ),
    )
    .unwrap();
    let _a = BeeProcess::start("a", &path);
    let (_n, client) = layout.client(Duration::from_secs(5));
    let r = report(&client, "a").await;
    assert_eq!(r.version, 3);
    assert!(
        r.source.starts_with("file ") && r.source.ends_with("fallback.lua"),
        "{}",
        r.source
    );
    let file_hash = r.hash.clone();
    // bee status shows it too.
    let status_file = layout.dir.path().join("fallback.lua");
    let (_ok, out, _err) = bee_cli(&["status", "--cluster", &status_file.to_string_lossy(), "a"]);
    assert!(
        out.contains("fallback.lua") && out.contains(&file_hash),
        "{out}"
    );

    // Later, etcd comes up holding version 4: the node switches to it.
    let etcd = start_etcd_on(port).await.expect("etcd");
    let store = EtcdStore::connect(&url).await.unwrap();
    store
        .put_config_text(&text(4, "__motd = \"from etcd\"\n"), false)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        let r = report(&client, "a").await;
        if r.version == 4 {
            break r;
        }
        assert!(Instant::now() < deadline, "a never followed etcd: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r.source, "etcd key /bee/f/config");
    let acks = store
        .wait_acks(&["a"], 4, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(acks.all_applied(), "{acks:?}");
    assert!(store.members().await.unwrap().contains_key("a"));
    drop(etcd);
}

/// `bee call`, `bee send` and `bee query` take `--cluster etcd://…/PREFIX` as `bee status`
/// does: the nodes' addresses come from the config key; an etcd with no config there is
/// an error naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_etcd_call_send_and_query_find_the_nodes_through_etcd() {
    let Some(etcd) = start_etcd().await else {
        return;
    };
    let (url, _store, layout) = one_node_in_etcd(&etcd, "/bee/cli").await;
    let _a = start_etcd_node(&layout, "a", &url);
    let (ok, out, err) = bee_cli(&["call", "--cluster", &url, "a", "echo", "hi", "42"]);
    assert!(ok, "{out}{err}");
    assert_eq!(out, "\"hi\"\n42\n", "{err}");
    let (ok, out, err) = bee_cli(&["send", "--cluster", &url, "a", "echo", "x"]);
    assert!(ok && err.contains("sent to @echo on a"), "{out}{err}");
    let (ok, out, err) = bee_cli(&["query", "--cluster", &url, "a", "echo"]);
    assert!(
        ok && out.starts_with(':') && out.trim().len() == 9,
        "{out}{err}"
    );
    // A prefix that holds no config: the error names the key, nothing is printed.
    let empty = format!("etcd://127.0.0.1:{}/bee/none", etcd.port);
    let (ok, out, err) = bee_cli(&["call", "--cluster", &empty, "a", "echo", "hi"]);
    assert!(!ok && out.is_empty(), "{out}");
    assert!(
        err.contains("etcd key /bee/none/config holds no cluster config"),
        "{err}"
    );
}

/// In etcd mode the cluster view's header says whether etcd answers (and how many nodes
/// are registered in it), on the status page's JSON and in `bee status --json`; with
/// etcd stopped it says unreachable, with the error, and the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_etcd_status_header_shows_etcd_health() {
    let Some(etcd) = start_etcd().await else {
        return;
    };
    let (url, store, layout) = one_node_in_etcd(&etcd, "/bee/h").await;
    let metrics = free_port();
    let _a = start_etcd_node_with(
        &layout,
        "a",
        &url,
        &format!("metrics_listen = \"127.0.0.1:{metrics}\"\n"),
    );
    let header = |what: &str| {
        let (code, body) = bee_tests::http_get(metrics, "/api/v1/cluster");
        assert_eq!(code, 200, "{what}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["header"]["etcd"].clone()
    };
    let h = header("etcd up");
    assert_eq!(h["healthy"], true, "{h}");
    assert_eq!(h["members"], 1, "{h}");
    assert_eq!(h["url"], url.as_str(), "{h}");
    let (ok, out, err) = bee_cli(&["status", "--json", "--cluster", &url]);
    assert!(ok, "bee status --json: {out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["header"]["etcd"]["healthy"], true, "{out}");
    assert_eq!(v["nodes"][0]["state"], "up", "{out}");

    // etcd gone: the header says so (after the probe's cache of a few seconds).
    drop(store);
    drop(etcd);
    let started = Instant::now();
    let h = loop {
        let h = header("etcd down");
        if h["healthy"] == false {
            break h;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "etcd stopped, the header still says healthy: {h}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(h["error"].as_str().is_some_and(|e| !e.is_empty()), "{h}");
    assert!(h["members"].is_null(), "{h}");
}
