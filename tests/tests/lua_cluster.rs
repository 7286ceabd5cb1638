//! `cluster.*` from Lua through bee's own cluster (`docs/lua.md` §7): a bee node config
//! hosting skynet's Lua (`kind = "snlua"`) serves skynet's `clusterd` with bee's, so
//! the unchanged `skynet.cluster` library's calls, pushes, queries and proxies travel
//! bee's channels — counted by the node's `bee_transport_channel_*` metrics — to a bee
//! node and a stock skynet node, and a bee client and a stock skynet node call the Lua
//! service by its registered name. Calls to an unknown or dead node fail in bounded time.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bee_cluster::Cluster;
use bee_codec::seri::{self, Value};
use bee_tests::{free_port, skynet_dir, BeeProcess, Layout};

fn words(ws: &[&str]) -> Vec<Value> {
    ws.iter().map(|w| Value::from(*w)).collect()
}

/// A stock skynet node (`interop/skynet/run.sh node NAME`), killed on drop.
struct SkynetNode(Child);

impl Drop for SkynetNode {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_listening(port: u16, what: &str) {
    bee_tests::wait_until(
        &format!("{what} to listen on {port}"),
        Duration::from_secs(20),
        || TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
}

fn start_skynet(layout: &Layout, name: &str) -> SkynetNode {
    let log = std::fs::File::create(layout.dir.path().join(format!("{name}.log"))).unwrap();
    let child = Command::new("bash")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../interop/skynet/run.sh"))
        .args(["node", name])
        .arg(layout.cluster_file())
        .env("SKYNET_DIR", skynet_dir())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start a stock skynet node");
    let node = SkynetNode(child);
    wait_listening(layout.port(name), "the stock skynet node");
    node
}

fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the scrape");
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn call(c: &Cluster, node: &str, service: &str, args: Vec<Value>) -> Vec<Value> {
    let reply = c
        .call(node, service, seri::pack(&args).unwrap())
        .await
        .unwrap_or_else(|e| panic!("call {service} on {node}: {e}"));
    seri::unpack(&reply).unwrap()
}

/// `luanode.toml`: node `luanode` of the layout (calls time out after 3 s) hosting
/// skynet's Lua from the stock tree with `tests/lua/beecluster.lua` as its start
/// service, skynet's log lines in `log`; `extra` goes before its tables.
fn lua_node_config(layout: &Layout, log: &std::path::Path, extra: &str) -> PathBuf {
    let sky = skynet_dir();
    let lua_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("lua");
    let config = layout.dir.path().join("luanode.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"luanode\"\ncluster = \"cluster.lua\"\ncall_timeout_ms = 3000\n{extra}\n\
             [env]\n\
             cpath = \"{s}/cservice/?.so\"\n\
             lua_path = \"{s}/lualib/?.lua;{s}/lualib/?/init.lua\"\n\
             lua_cpath = \"{s}/luaclib/?.so\"\n\
             luaservice = \"{s}/service/?.lua;{l}/?.lua\"\n\
             lualoader = \"{s}/lualib/loader.lua\"\n\
             start = \"beecluster\"\n\
             lua_node_name = \"luanode\"\n\
             logger = \"{log}\"\n\n\
             [[service]]\nkind = \"snlua\"\nliblua = \"{s}/liblua.so\"\n",
            s = sky.display(),
            l = lua_dir.display(),
            log = log.display(),
        ),
    )
    .unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_calls_from_lua_go_through_bee_to_bee_and_stock_skynet() {
    let layout = Layout::new(&["luanode", "bee1", "sky1"]);
    // A node in the config with nothing behind its address: dead.
    let dead = free_port();
    layout.write_cluster(&[&format!("deadnode = \"127.0.0.1:{dead}\"")]);
    let metrics = free_port();
    let log = layout.dir.path().join("skynet.log");
    let config = lua_node_config(
        &layout,
        &log,
        &format!(
            "metrics_listen = \"127.0.0.1:{metrics}\"\n\n\
             [liveness]\nbound_ms = 1500\nheartbeat_ms = 300\n"
        ),
    );
    let _bee = tokio::task::block_in_place(|| {
        layout.start(
            "bee1",
            "[[service]]\nkind = \"echo\"\nname = \"echo\"\n\n[[service]]\nkind = \"sink\"\nname = \"sink\"\n",
        )
    });
    let _sky = tokio::task::block_in_place(|| start_skynet(&layout, "sky1"));
    let _lua = tokio::task::block_in_place(|| BeeProcess::start("luanode", &config));
    let text = tokio::task::block_in_place(|| {
        bee_tests::wait_for(
            "the Lua service's cluster.open",
            Duration::from_secs(20),
            || {
                let t = std::fs::read_to_string(&log).unwrap_or_default();
                if t.contains("cluster open as luanode") {
                    Ok(t)
                } else {
                    Err(t)
                }
            },
        )
    });
    // skynet's launcher started bee's clusterd; no skynet clusterd, sender or gate ran.
    assert!(text.contains("LAUNCH snlua clusterd (bee)"), "{text}");
    for absent in [
        "LAUNCH snlua clustersender",
        "LAUNCH snlua gate",
        "LAUNCH snlua clusterd\n",
    ] {
        assert!(!text.contains(absent), "{absent:?} in the log:\n{text}");
    }
    assert!(
        text.contains(&format!(
            "cluster open as luanode (127.0.0.1:{})",
            layout.port("luanode")
        )),
        "cluster.open of the node's own name answers its listener: {text}"
    );
    let (_node, c) = layout.client(Duration::from_secs(10));

    // bee -> Lua, by the name Lua registered with cluster.register.
    assert_eq!(
        call(&c, "luanode", "luaecho", words(&["ping", "a"])).await,
        words(&["lua-pong", "a"])
    );
    let before = scrape(metrics);
    let calls = |body: &str, node: &str| {
        sample(
            body,
            &format!("bee_transport_channel_calls_total{{node=\"{node}\"}}"),
        )
    };
    // Lua -> bee and Lua -> stock skynet with cluster.call.
    const N: usize = 10;
    for i in 0..N {
        let msg = format!("to bee {i}");
        assert_eq!(
            call(
                &c,
                "luanode",
                "luaecho",
                words(&["callout", "bee1", "@echo", &msg])
            )
            .await,
            vec![Value::Boolean(true), Value::from(msg.as_str())]
        );
    }
    assert_eq!(
        call(
            &c,
            "luanode",
            "luaecho",
            words(&["callout", "sky1", "@echo", "to skynet"])
        )
        .await,
        vec![Value::Boolean(true), Value::from("to skynet")]
    );
    // cluster.query and cluster.proxy.
    let q = call(&c, "luanode", "luaecho", words(&["query", "bee1", "echo"])).await;
    assert_eq!(q.first(), Some(&Value::Boolean(true)), "{q:?}");
    assert!(
        q.get(1).and_then(Value::as_int).is_some_and(|a| a > 0),
        "{q:?}"
    );
    let q = call(&c, "luanode", "luaecho", words(&["query", "sky1", "echo"])).await;
    assert_eq!(q.first(), Some(&Value::Boolean(true)), "{q:?}");
    let p = call(
        &c,
        "luanode",
        "luaecho",
        words(&["proxycall", "bee1", "@echo", "via proxy"]),
    )
    .await;
    assert_eq!(p, vec![Value::Boolean(true), Value::from("via proxy")]);
    // An unknown name fails in Lua; the service lives on.
    let failed = call(
        &c,
        "luanode",
        "luaecho",
        words(&["callout", "bee1", "@nobody", "x"]),
    )
    .await;
    assert_eq!(failed.first(), Some(&Value::Boolean(false)), "{failed:?}");
    // cluster.send: pushes counted by bee1's sink.
    let count = || async {
        call(&c, "bee1", "sink", words(&["count"])).await[0]
            .as_int()
            .unwrap()
    };
    let sunk = count().await;
    for _ in 0..20 {
        call(
            &c,
            "luanode",
            "luaecho",
            words(&["sendout", "bee1", "@sink", "hit"]),
        )
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while count().await < sunk + 20 {
        assert!(
            Instant::now() < deadline,
            "Lua's cluster.send pushes did not all arrive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // They went through bee's channels: the Lua node's transport metrics counted them.
    let after = scrape(metrics);
    assert!(
        calls(&after, "bee1") - calls(&before, "bee1") >= N as f64,
        "bee1 channel calls: before {} after {}\n{after}",
        calls(&before, "bee1"),
        calls(&after, "bee1")
    );
    assert!(calls(&after, "sky1") >= 1.0, "{after}");
    let pushes = sample(&after, "bee_transport_channel_pushes_total{node=\"bee1\"}");
    assert!(pushes >= 20.0, "pushes {pushes}\n{after}");

    // Stock skynet -> Lua on bee, through skynet's own cluster library on sky1.
    let reply = c
        .call(
            "sky1",
            "relay",
            seri::pack(&words(&[
                "lua",
                "call",
                "luanode",
                "luaecho",
                "from skynet",
            ]))
            .unwrap(),
        )
        .await
        .expect("relay on sky1");
    assert_eq!(
        seri::unpack(&reply).unwrap(),
        vec![
            Value::Boolean(true),
            Value::from("lua"),
            Value::from("from skynet")
        ]
    );

    // cluster.open of another name is refused, readably.
    let o = call(&c, "luanode", "luaecho", words(&["open", "lobby"])).await;
    assert_eq!(o.first(), Some(&Value::Boolean(false)), "{o:?}");
    let t = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        t.contains("cluster.open \"lobby\": this bee node is \"luanode\""),
        "the reason in the log: {t}"
    );

    // A dead node and an unknown node: the call fails within the bounds, not hanging.
    for node in ["deadnode", "nowhere"] {
        let t0 = Instant::now();
        let r = call(&c, "luanode", "luaecho", words(&["timed", node, "@echo"])).await;
        assert_eq!(r.first(), Some(&Value::Boolean(false)), "{node}: {r:?}");
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "{node}: the call took {:?}",
            t0.elapsed()
        );
    }
    let t = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        t.contains("cluster.call deadnode @echo:"),
        "the error in the log: {t}"
    );

    // cluster.reload with a table: a new node name reaches bee1.
    let r = call(
        &c,
        "luanode",
        "luaecho",
        vec![
            Value::from("reload"),
            Value::from("alias"),
            Value::from(format!("127.0.0.1:{}", layout.port("bee1")).as_str()),
        ],
    )
    .await;
    assert_eq!(r.first(), Some(&Value::Boolean(true)), "{r:?}");
    assert_eq!(
        call(
            &c,
            "luanode",
            "luaecho",
            words(&["callout", "alias", "@echo", "renamed"])
        )
        .await,
        vec![Value::Boolean(true), Value::from("renamed")]
    );
}

/// Hot update and config push with Lua inside: a bee node config hosting skynet's Lua is
/// taken over in place (`bee run --takeover`; its Lua services start afresh in the new
/// process and register again) and keeps serving bee callers and calling out through
/// bee's cluster; a cluster config pushed with `bee config push` reaches the Lua
/// service's `cluster.call` (a node added by the push is called by name at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_hosting_lua_hot_updates_and_follows_a_config_push() {
    let layout = Layout::new(&["luanode", "bee1", "bee2"]);
    let (p_lua, p_bee1, p_bee2) = (
        layout.port("luanode"),
        layout.port("bee1"),
        layout.port("bee2"),
    );
    // Version 1 names luanode and bee1; version 2 adds bee2.
    let v1 =
        format!("__version = 1\nluanode = \"127.0.0.1:{p_lua}\"\nbee1 = \"127.0.0.1:{p_bee1}\"\n");
    let v2 = format!("__version = 2\nluanode = \"127.0.0.1:{p_lua}\"\nbee1 = \"127.0.0.1:{p_bee1}\"\nbee2 = \"127.0.0.1:{p_bee2}\"\n");
    std::fs::write(layout.cluster_file(), &v1).unwrap();
    let v2_file = layout.dir.path().join("cluster-v2.lua");
    std::fs::write(&v2_file, &v2).unwrap();
    let log = layout.dir.path().join("skynet.log");
    let config = lua_node_config(&layout, &log, "");
    let echo = "[[service]]\nkind = \"echo\"\nname = \"echo\"\n";
    let _bee1 = tokio::task::block_in_place(|| layout.start("bee1", echo));
    let bee2_config = layout.dir.path().join("bee2.toml");
    std::fs::write(
        &bee2_config,
        format!("name = \"bee2\"\ncluster = \"cluster-v2.lua\"\n{echo}"),
    )
    .unwrap();
    let _bee2 = tokio::task::block_in_place(|| BeeProcess::start("bee2", &bee2_config));
    let mut lua = tokio::task::block_in_place(|| BeeProcess::start("luanode", &config));
    let (_node, c) = layout.client(Duration::from_secs(10));
    // The Lua service is up once it answers (its start script registers it).
    let ping = |c: Cluster| async move {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let p = seri::pack(&words(&["ping", "x"])).unwrap();
            match c.call("luanode", "luaecho", p).await {
                Ok(r) => break seri::unpack(&r).unwrap(),
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "the Lua service never answered: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    };
    assert_eq!(ping(c.clone()).await, words(&["lua-pong", "x"]));
    let out = |c: Cluster, to: &'static str| async move {
        call(
            &c,
            "luanode",
            "luaecho",
            words(&["callout", to, "@echo", "hi"]),
        )
        .await
    };
    let ok = vec![Value::Boolean(true), Value::from("hi")];
    assert_eq!(out(c.clone(), "bee1").await, ok);
    // bee2 is not in the running config yet.
    assert_eq!(
        out(c.clone(), "bee2").await.first(),
        Some(&Value::Boolean(false))
    );

    // Hot update in place: the old process hands over and exits cleanly; the new one's
    // Lua services start afresh and serve the same names.
    let clean = tokio::task::block_in_place(|| lua.take_over(None));
    assert!(clean, "the old process did not exit cleanly");
    assert_eq!(ping(c.clone()).await, words(&["lua-pong", "x"]));
    assert_eq!(out(c.clone(), "bee1").await, ok);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        text.matches("LAUNCH snlua clusterd (bee)").count(),
        2,
        "bee's clusterd once per process:\n{text}"
    );

    // A config push reaches Lua's cluster.call: bee2, added by version 2, answers.
    let (ok_push, o, e) = bee_tests::bee_cli(&[
        "config",
        "push",
        "--cluster",
        layout.cluster_file().to_str().unwrap(),
        v2_file.to_str().unwrap(),
    ]);
    assert!(ok_push, "bee config push: {o}{e}");
    assert_eq!(out(c.clone(), "bee2").await, ok);
}
