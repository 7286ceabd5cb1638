//! bee and stock skynet v1.6.0 in one cluster, both directions — skynet.pack calls and
//! pushes, and the game team's frames between a Lua service of ours inside the skynet
//! node and bee's C++ modules. The skynet side is a stock v1.6.0 built by
//! `cargo xtask skynet` (or the tree `SKYNET_DIR` names); without one these tests fail
//! with the places skynet's source was looked for (see `interop/skynet/README.md`):
//!
//! ```sh
//! cargo nextest run -p bee-tests --test skynet_interop
//! ```

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bee_cluster::native::{spawn_native, CServiceProxy, NativeEndpoint, NativeHandler};
use bee_cluster::{Cluster, ClusterSettings};
use bee_codec::kkt::{KktFrame, SUBTYPE_RPC_CLIENT, SUBTYPE_RPC_SERVER};
use bee_codec::seri::{self, Table, Value};
use bee_proto::game::{Ping, Pong};
use bee_proto::Message as _;
use bee_registry::Registry;
use bee_runtime::text::TextReply;
use bee_runtime::{Node, RuntimeConfig};
use bee_tests::BeeProcess;
use bee_tests::{demo_bin, Layout};
use bytes::Bytes;

fn runner() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../interop/skynet/run.sh")
}

fn skynet_dir() -> PathBuf {
    bee_tests::skynet_dir()
}

/// A skynet node process, killed on drop.
struct SkynetNode(Child);

impl Drop for SkynetNode {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl SkynetNode {
    /// Start `run.sh MODE NAME` (a stock skynet node registering `@echo`, `@sink`,
    /// `@bee_config` and `@relay` for `node`), its output in `<layout>/<name>.log`, and
    /// wait until it listens.
    fn start(layout: &Layout, mode: &str, name: &str) -> SkynetNode {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(layout.dir.path().join(format!("{name}.log")))
            .unwrap();
        let child = Command::new("bash")
            .arg(runner())
            .args([mode, name])
            .arg(layout.cluster_file())
            .env("SKYNET_DIR", skynet_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start a skynet node");
        let node = SkynetNode(child);
        wait_listening(layout.port(name), "the skynet node");
        node
    }
}

/// Strings as packed values, for the relay's requests.
fn words(ws: &[&str]) -> Vec<Value> {
    ws.iter().map(|w| Value::from(*w)).collect()
}

/// A stock skynet node's `@relay` (`interop/skynet/service/skylab_relay.lua`): make the
/// skynet node act through its own cluster library. Returns the relay's reply values.
async fn relay(c: &Cluster, sky: &str, args: Vec<Value>) -> Vec<Value> {
    let mut all = vec![Value::from("lua")];
    all.extend(args);
    let reply = c
        .call(sky, "relay", seri::pack(&all).unwrap())
        .await
        .unwrap_or_else(|e| panic!("relay on {sky}: {e}"));
    seri::unpack(&reply).unwrap()
}

#[test]
fn stock_skynet_client_against_a_bee_node() {
    let dir = skynet_dir();
    let layout = Layout::new(&["bee1", "skylab_client"]);
    let _bee = layout.start(
        "bee1",
        "[[service]]\nkind = \"echo\"\nname = \"echo\"\n\n[[service]]\nkind = \"sink\"\nname = \"sink\"\n",
    );
    let out = Command::new("bash")
        .arg(runner())
        .args(["client", "bee1"])
        .arg(layout.cluster_file())
        .arg("2000")
        .env("SKYNET_DIR", dir)
        .env("SKY_TIMEOUT", "300")
        .stdin(Stdio::null())
        .output()
        .expect("run interop/skynet/run.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text
        .lines()
        .filter(|l| l.starts_with("FAIL") || l.starts_with("RESULT"))
    {
        println!("{line}");
    }
    assert!(out.status.success(), "skynet client failed:\n{text}");
    assert!(text.contains("RESULT PASS"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bee_client_against_a_stock_skynet_node() {
    let layout = Layout::new(&["sky1"]);
    let _sky = SkynetNode::start(&layout, "node", "sky1");
    let (_node, c) = layout.client(Duration::from_secs(20));

    let mut t = Table::new();
    t.push(Value::from(1i64));
    t.push(Value::from("two"));
    t.insert(Value::from("k"), Value::Real(0.5));
    let big = Value::String(Bytes::from(vec![b'z'; 1 << 20]));
    let args = vec![
        Value::Nil,
        Value::Boolean(true),
        Value::Integer(i64::MIN),
        Value::Integer(-7),
        Value::Real(-0.0),
        Value::from("hello"),
        Value::Table(t),
        big,
    ];
    let reply = c
        .call("sky1", "echo", seri::pack(&args).unwrap())
        .await
        .expect("call skynet echo");
    let back = seri::unpack(&reply).unwrap();
    assert_eq!(back.len(), args.len());
    for (a, b) in args.iter().zip(&back) {
        match (a, b) {
            (Value::Real(x), Value::Real(y)) => assert_eq!(x.to_bits(), y.to_bits()),
            _ => assert_eq!(a, b),
        }
    }

    let addr = c.query("sky1", "echo").await.expect("query skynet echo");
    assert!(addr > 0);
    let before = count(&c).await;
    for i in 0..500i64 {
        c.send("sky1", "sink", seri::pack(&[Value::from(i)]).unwrap())
            .await
            .expect("push to skynet sink");
    }
    assert_eq!(count(&c).await, before + 500);

    let err = c
        .call(
            "sky1",
            "nosuchname",
            seri::pack(&[Value::from("x")]).unwrap(),
        )
        .await
        .expect_err("unknown name");
    assert_eq!(err.remote_text(), "Invalid name");
    let err = c
        .call("sky1", "sink", seri::pack(&[Value::from("bad")]).unwrap())
        .await
        .expect_err("sink raises on a call other than count");
    assert!(err.remote_text().contains("call failed"), "{err}");
}

/// The config commands against stock skynet: `bee status` and `bee config push` reach a skynet node
/// through `interop/skynet/service/bee_config.lua`, which checks the pushed text, calls
/// `cluster.reload` and acks; an older version is refused with bee's words.
#[test]
fn bee_status_and_config_push_against_a_stock_skynet_node() {
    let layout = Layout::new(&["sky1", "bee1"]);
    let (sky, bee) = (layout.port("sky1"), layout.port("bee1"));
    let v1 = format!("__version = 1\nsky1 = \"127.0.0.1:{sky}\"\nbee1 = \"127.0.0.1:{bee}\"\n");
    std::fs::write(layout.cluster_file(), &v1).unwrap();
    let _bee = layout.start("bee1", "");
    let _sky = SkynetNode::start(&layout, "node", "sky1");
    let cluster = layout.cluster_file();
    let cluster = cluster.to_str().unwrap();
    let line = |out: &str, node: &str| -> String {
        out.lines()
            .find(|l| l.starts_with(&format!("{node} ")))
            .unwrap_or_else(|| panic!("no line for {node}:\n{out}"))
            .to_string()
    };

    let (ok, out, err) = bee_tests::bee_cli(&["status", "--cluster", cluster]);
    assert!(ok, "{out}{err}");
    assert!(
        line(&out, "sky1").contains(" yes ") && line(&out, "sky1").contains("  1  "),
        "{out}"
    );

    let v2 = layout.dir.path().join("v2.lua");
    std::fs::write(&v2, v1.replace("__version = 1", "__version = 2")).unwrap();
    let (ok, out, err) =
        bee_tests::bee_cli(&["config", "push", "--cluster", cluster, v2.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert!(
        line(&out, "sky1").contains("applied") && line(&out, "sky1").contains("version 1->2"),
        "{out}"
    );
    assert!(line(&out, "bee1").contains("applied"), "{out}");

    let (ok, out, _) = bee_tests::bee_cli(&[
        "config",
        "push",
        "--cluster",
        cluster,
        layout.cluster_file().to_str().unwrap(),
    ]);
    assert!(!ok, "{out}");
    assert!(
        line(&out, "sky1").contains("config version 1 is older than the running version 2"),
        "{out}"
    );
    let (ok, out, _) = bee_tests::bee_cli(&["status", "--cluster", v2.to_str().unwrap()]);
    assert!(
        ok && line(&out, "sky1").contains("push from bee config push"),
        "{out}"
    );
}

async fn count(c: &bee_cluster::Cluster) -> i64 {
    let r = c
        .call("sky1", "sink", seri::pack(&[Value::from("count")]).unwrap())
        .await
        .expect("sink count");
    seri::unpack(&r).unwrap()[0].as_int().expect("a count")
}

/// Wait (≤ 20 s) until something listens on `port`.
fn wait_listening(port: u16, what: &str) {
    bee_tests::wait_until(
        &format!("{what} to listen on {port}"),
        Duration::from_secs(20),
        || TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
}

use bee_tests::cpp_modules as modules;

/// A bee node of the team's C++ shape: CServiceProxy, the module (its frames name
/// `<name>_master` as their source service) and the master redirecting frames to it.
fn cpp_node(module: &str, name: &str, args: &str) -> String {
    format!(
        "[[service]]\nkind = \"cservice_proxy\"\n\n\
         [[service]]\nkind = \"cservice\"\nmodule = \"{}\"\nname = \"{name}\"\nargs = \"service={name}_master {args}\"\n\n\
         [[service]]\nkind = \"native_master\"\nname = \"{name}_master\"\ntarget = \"{name}\"\n",
        modules().join(module).display()
    )
}

/// mail.proto (`cservices/proto/mail.proto`): the generated types in bee-proto.
use bee_proto::mail;

/// The test node's native caller: it only calls; a frame sent to it is unexpected.
struct Lobby;

impl NativeHandler for Lobby {
    async fn on_frame(&mut self, _ep: &NativeEndpoint, frame: KktFrame) -> Option<TextReply> {
        panic!(
            "unexpected frame {:?} at the test's lobby",
            String::from_utf8_lossy(&frame.name)
        );
    }
}

fn table_int(t: &Table, key: &str) -> i64 {
    t.get_str(key)
        .and_then(Value::as_int)
        .unwrap_or_else(|| panic!("no integer {key:?} in {t:?}"))
}

/// The game team's frames between stock skynet and bee's C++ modules: a Lua service of
/// ours (`interop/skynet/service/skylab_kkt.lua`, registered as `kktlua` in a stock
/// skynet node) rpc-calls bee's C++ `shop.so` and answers rpcs from bee's C++ (`mail.so`,
/// `bench.so`) and from a bee `NativeEndpoint` with Lua-style replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_frames_between_a_skynet_lua_service_and_bee_cpp_modules() {
    let layout = Layout::new(&["skykkt", "kkt_shop", "kkt_mail", "kkt_bench", "kkt_test"]);
    let demo = demo_bin();
    let start = |name: &str, body: &str| {
        tokio::task::block_in_place(|| layout.start_with(&demo, name, body))
    };
    // mail looks players up at the skynet Lua service; shop mails its receipts to mail.
    let _mail = start(
        "kkt_mail",
        &cpp_node(
            "mail.so",
            "mail",
            "lookup=skykkt/kktlua lookup_timeout_ms=5000",
        ),
    );
    let _shop = start(
        "kkt_shop",
        &cpp_node("shop.so", "shop", "notify=kkt_mail/mail_master"),
    );
    let _bench = start("kkt_bench", &cpp_node("bench.so", "bench", ""));
    let _sky = tokio::task::block_in_place(|| SkynetNode::start(&layout, "kkt", "skykkt"));
    let sky_log =
        || std::fs::read_to_string(layout.dir.path().join("skykkt.log")).unwrap_or_default();

    // The test's node: CServiceProxy and a native caller `lobby` (a NativeEndpoint).
    let node = Node::new(
        "kkt_test",
        RuntimeConfig {
            call_timeout: Duration::from_secs(20),
            ..RuntimeConfig::default()
        },
    );
    let mut settings = ClusterSettings::default();
    settings.channel.call_timeout = Duration::from_secs(60);
    let cluster = Cluster::start(&node, Registry::new(layout.config()), settings);
    cluster
        .open("kkt_test")
        .await
        .expect("the test node listens");
    let proxy = CServiceProxy::spawn(&node);
    let ep = spawn_native(&node, proxy, "lobby", Lobby).expect("lobby");
    let wait = Duration::from_secs(10);

    // (b1) bee NativeEndpoint → skynet Lua: rpc game.Ping, a Lua-style reply (names
    // empty, sub_type 17, uid/roomid/session copied) pushed back as "rpc_response".
    for seq in 1..=20u64 {
        let body = Ping {
            seq,
            sent_unix_ms: 0,
        }
        .encode_to_vec();
        let request = KktFrame::new(SUBTYPE_RPC_SERVER, 9000 + seq as i64, "game.Ping", body)
            .roomid(0x8000_0001);
        let reply = ep
            .rpc_call("skykkt", "kktlua", request, wait)
            .await
            .unwrap_or_else(|e| panic!("rpc game.Ping to skynet: {e}\n{}", sky_log()));
        assert_eq!(
            (reply.sub_type, reply.uid, reply.roomid, &reply.name[..]),
            (
                SUBTYPE_RPC_CLIENT,
                9000 + seq as i64,
                0x8000_0001,
                &b"game.Pong"[..]
            )
        );
        assert!(
            reply.session > 0,
            "session copied (the endpoint matched it)"
        );
        for name in [
            &reply.remote_node,
            &reply.remote_service,
            &reply.source_node,
            &reply.source_service,
        ] {
            assert!(name.is_empty(), "a Lua reply has empty names: {reply:?}");
        }
        let pong = Pong::decode(reply.body.clone()).unwrap();
        assert_eq!((pong.seq, pong.served_by.as_str()), (seq, "skykkt/kktlua"));
    }

    // (b2) bee's C++ mail.so → skynet Lua: mail.Send to mail makes mail rpc_call
    // game.GetUserInfo on the skynet service; its Lua reply resumes mail's callback.
    let send = mail::Send {
        to_uid: 1001,
        from_uid: 7,
        title: "hi".into(),
        text: "x".into(),
    };
    let request = KktFrame::new(SUBTYPE_RPC_SERVER, 1001, "mail.Send", send.encode_to_vec());
    let reply = ep
        .rpc_call("kkt_mail", "mail_master", request, wait)
        .await
        .expect("mail answers");
    let ack = mail::Ack::decode(reply.body.clone()).unwrap();
    assert_eq!(
        (ack.nickname.as_str(), ack.lookup_error.as_str()),
        ("sky1001", ""),
        "{ack:?}\n{}",
        sky_log()
    );

    // (b3) bee's C++ bench.so → skynet Lua: 200 sequential rpc_calls of game.Ping; the
    // module checks every Pong (seq, served_by) itself.
    let request = KktFrame::new(
        SUBTYPE_RPC_SERVER,
        0,
        "bench.Run",
        &b"target=skykkt/kktlua calls=200 timeout_ms=5000"[..],
    );
    let reply = ep
        .rpc_call(
            "kkt_bench",
            "bench_master",
            request,
            Duration::from_secs(60),
        )
        .await
        .expect("bench.so answers");
    let text = String::from_utf8_lossy(&reply.body);
    let head = text.lines().next().unwrap_or("");
    assert!(
        head.starts_with("ok=200 errors=0 elapsed_ns="),
        "{head}\n{}",
        sky_log()
    );
    assert_eq!(text.lines().nth(1).unwrap_or("").split(' ').count(), 200);

    // (a) skynet Lua → bee's C++ shop.so: the Lua service's own checks, run on request.
    let r = cluster
        .call(
            "skykkt",
            "kktlua",
            seri::pack(&[
                Value::from("check_shop"),
                Value::from("kkt_shop"),
                Value::from("shop_master"),
            ])
            .unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("check_shop: {e}\n{}", sky_log()));
    let values = seri::unpack(&r).unwrap();
    let lines = values[0].as_table().expect("a list of result lines");
    let lines: Vec<String> = (1..=lines.len() as i64)
        .map(|i| {
            lines
                .get(&Value::from(i))
                .and_then(Value::as_str)
                .expect("a line")
                .to_string()
        })
        .collect();
    for l in &lines {
        println!("skynet kktlua: {l}");
    }
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(
        lines.iter().all(|l| l.starts_with("PASS ")),
        "{lines:#?}\n{}",
        sky_log()
    );

    // What the skynet service answered, and that nothing went astray.
    let r = cluster
        .call(
            "skykkt",
            "kktlua",
            seri::pack(&[Value::from("stats")]).unwrap(),
        )
        .await
        .expect("stats");
    let values = seri::unpack(&r).unwrap();
    let stats = values[0].as_table().expect("stats table");
    println!("skynet kktlua stats: {stats:?}");
    let answered = stats
        .get_str("answered")
        .and_then(Value::as_table)
        .expect("answered");
    let n = |k: &str| answered.get_str(k).and_then(Value::as_int).unwrap_or(0);
    assert_eq!(
        n("game.Ping"),
        220,
        "20 from the endpoint, 200 from bench.so"
    );
    // mail's lookups: the test's mail.Send, and one per accepted rpc ShopBuy of the
    // checks (shop mails every receipt; 1 + 20).
    assert!(n("game.GetUserInfo") >= 22, "{stats:?}");
    for k in ["unanswered", "bad", "stray"] {
        assert_eq!(table_int(stats, k), 0, "{k}: {stats:?}\n{}", sky_log());
    }
    node.shutdown();
}

/// Every kind of value skynet.pack carries, for the round trips below: nested tables with
/// mixed keys, nil holes and trailing nils, strings on both sides of the multi-part
/// threshold (a skynet cluster message above 32 KiB travels in parts), integers at the
/// widths the format distinguishes, reals, booleans, empty string and table.
fn every_value_kind() -> Vec<Value> {
    let mut leaf = Table::new();
    leaf.push(Value::from("deep"));
    leaf.insert(Value::from("pi"), Value::Real(3.25));
    let mut nested = leaf;
    for depth in 0..6i64 {
        let mut t = Table::new();
        t.push(Value::Integer(depth));
        t.push(Value::Boolean(depth % 2 == 0));
        t.insert(Value::from("child"), Value::Table(nested));
        t.insert(Value::Integer(1000 + depth), Value::from("sparse key"));
        nested = t;
    }
    let mut list = Table::new();
    for i in 0..300i64 {
        list.push(Value::Integer(i * i));
    }
    vec![
        Value::Integer(1),
        Value::Nil,
        Value::Integer(3),
        Value::Table(nested),
        Value::Table(list),
        Value::Table(Table::new()),
        Value::from(""),
        Value::String(Bytes::from(vec![b'm'; 100 * 1024])),
        Value::String(Bytes::from(
            (0..(1 << 20)).map(|i| (i % 251) as u8).collect::<Vec<u8>>(),
        )),
        Value::Integer(0),
        Value::Integer(-1),
        Value::Integer(255),
        Value::Integer(65_536),
        Value::Integer(i64::from(i32::MIN) - 1),
        Value::Integer(i64::MAX),
        Value::Real(-1.5e300),
        Value::Boolean(false),
        Value::Nil,
        Value::Nil,
    ]
}

/// Whether two values are the same, a table's hash part compared as a set (skynet packs
/// it in its own iteration order) and reals bit for bit.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Real(x), Value::Real(y)) => x.to_bits() == y.to_bits(),
        (Value::Table(x), Value::Table(y)) => {
            x.array.len() == y.array.len()
                && x.array.iter().zip(&y.array).all(|(p, q)| same_value(p, q))
                && x.hash.len() == y.hash.len()
                && x.hash
                    .iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

fn assert_same_values(sent: &[Value], got: &[Value], what: &str) {
    assert_eq!(sent.len(), got.len(), "{what}: value count");
    for (i, (a, b)) in sent.iter().zip(got).enumerate() {
        assert!(same_value(a, b), "{what}: value {i}: sent {a:?}, got {b:?}");
    }
}

/// `cluster.call` both ways with every value kind: bee calls the skynet node's `@echo`
/// directly, and the skynet node (its own cluster library, through `@relay`) calls the bee
/// node's `echo` and hands bee what it got back — skynet decodes bee's reply and
/// re-encodes it, so both codecs meet on every value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_kind_both_ways_between_bee_and_stock_skynet() {
    let layout = Layout::new(&["sky1", "bee1"]);
    let _bee = tokio::task::block_in_place(|| {
        layout.start(
            "bee1",
            "[[service]]\nkind = \"echo\"\nname = \"echo\"\n\n[[service]]\nkind = \"sink\"\nname = \"sink\"\n",
        )
    });
    let _sky = tokio::task::block_in_place(|| SkynetNode::start(&layout, "node", "sky1"));
    let (_node, c) = layout.client(Duration::from_secs(30));
    let values = every_value_kind();

    let reply = c
        .call("sky1", "echo", seri::pack(&values).unwrap())
        .await
        .expect("bee -> skynet echo");
    assert_same_values(&values, &seri::unpack(&reply).unwrap(), "bee -> skynet");

    let mut args = words(&["call", "bee1", "echo"]);
    args.extend(values.iter().cloned());
    let back = relay(&c, "sky1", args).await;
    assert_eq!(
        back.first(),
        Some(&Value::Boolean(true)),
        "skynet -> bee call failed: {back:?}"
    );
    assert_same_values(&values, &back[1..], "skynet -> bee");

    // Pushes from skynet to bee (small ones and one with every value kind), then a call
    // behind them on the same skynet connection: bee's sink has counted every one. (The
    // count is asked through skynet too: a call from the test's own client travels on
    // another connection and may overtake pushes skynet still has queued.)
    for i in 0..50i64 {
        let mut args = words(&["send", "bee1", "sink"]);
        if i == 25 {
            args.extend(values.iter().cloned());
        } else {
            args.push(Value::Integer(i));
        }
        assert_eq!(relay(&c, "sky1", args).await, vec![Value::Boolean(true)]);
    }
    let n = relay(&c, "sky1", words(&["call", "bee1", "sink", "count"])).await;
    assert_eq!(
        n,
        vec![Value::Boolean(true), Value::Integer(50)],
        "bee's sink count, asked behind the pushes"
    );
}

/// `cluster.query` and `cluster.register` both ways: a name the skynet node registers at
/// run time is found by bee's query with the address skynet gave it; a name bee registers
/// at run time (`bee_clusterd register`) is found by skynet's `cluster.query`; unknown
/// names fail on both sides with an error, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_and_register_both_ways_between_bee_and_stock_skynet() {
    let layout = Layout::new(&["sky1", "bee1"]);
    let _bee = tokio::task::block_in_place(|| {
        layout.start("bee1", "[[service]]\nkind = \"echo\"\nname = \"echo\"\n")
    });
    let _sky = tokio::task::block_in_place(|| SkynetNode::start(&layout, "node", "sky1"));
    let (_node, c) = layout.client(Duration::from_secs(20));

    let reg = relay(&c, "sky1", words(&["register", "late_name"])).await;
    let skynet_addr = reg[0].as_int().expect("relay's address") as u32;
    assert_eq!(
        c.query("sky1", "late_name")
            .await
            .expect("bee queries a skynet name"),
        skynet_addr
    );
    let err = c
        .query("sky1", "never_registered")
        .await
        .expect_err("unknown skynet name");
    assert!(!err.to_string().is_empty());

    let echo = c.query("bee1", "echo").await.expect("query bee echo");
    let q = relay(&c, "sky1", words(&["query", "bee1", "echo"])).await;
    assert_eq!(
        q,
        vec![Value::Boolean(true), Value::Integer(i64::from(echo))],
        "skynet queries bee"
    );

    let r = c
        .call(
            "bee1",
            "bee_clusterd",
            seri::pack(&[
                Value::from("register"),
                Value::from("echo_alias"),
                Value::Integer(i64::from(echo)),
            ])
            .unwrap(),
        )
        .await
        .expect("register on bee1");
    assert_eq!(
        seri::unpack(&r).unwrap(),
        vec![Value::Integer(i64::from(echo))]
    );
    let q = relay(&c, "sky1", words(&["query", "bee1", "echo_alias"])).await;
    assert_eq!(
        q,
        vec![Value::Boolean(true), Value::Integer(i64::from(echo))],
        "skynet queries a name bee registered"
    );
    let call = relay(
        &c,
        "sky1",
        words(&["call", "bee1", "echo_alias", "via alias"]),
    )
    .await;
    assert_eq!(call, vec![Value::Boolean(true), Value::from("via alias")]);
    let q = relay(&c, "sky1", words(&["query", "bee1", "no_such_name"])).await;
    assert_eq!(
        q.first(),
        Some(&Value::Boolean(false)),
        "skynet's query of an unknown bee name: {q:?}"
    );
}

/// A stock skynet node restarts while bee calls it: the calls made while it is gone fail
/// with a typed error within the call timeout (none hangs), and calls succeed again once
/// it is back, on a new connection, with nothing to do by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bee_keeps_calling_a_stock_skynet_node_that_restarts() {
    let layout = Layout::new(&["sky1"]);
    let mut sky = tokio::task::block_in_place(|| SkynetNode::start(&layout, "node", "sky1"));
    let timeout = Duration::from_secs(2);
    let (_node, c) = layout.client(timeout);
    let echo = |i: i64| {
        let c = c.clone();
        async move {
            let started = Instant::now();
            let r = c
                .call("sky1", "echo", seri::pack(&[Value::Integer(i)]).unwrap())
                .await;
            (r, started.elapsed())
        }
    };
    for i in 0..20 {
        let (r, _) = echo(i).await;
        assert_eq!(
            seri::unpack(&r.expect("before the restart")).unwrap(),
            vec![Value::Integer(i)]
        );
    }
    drop(sky);
    let (mut failed, mut longest) = (0, Duration::ZERO);
    for i in 0..10 {
        let (r, took) = echo(100 + i).await;
        longest = longest.max(took);
        if r.is_err() {
            failed += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failed > 0, "calls to a skynet node that is gone must fail");
    sky = tokio::task::block_in_place(|| SkynetNode::start(&layout, "node", "sky1"));
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut back = None;
    let mut i = 1000;
    while Instant::now() < deadline {
        let (r, took) = echo(i).await;
        longest = longest.max(took);
        if let Ok(r) = r {
            back = Some(seri::unpack(&r).unwrap());
            break;
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        back,
        Some(vec![Value::Integer(i)]),
        "no call succeeded after skynet came back"
    );
    assert!(
        longest <= timeout + Duration::from_secs(1),
        "a call outlived its {timeout:?} timeout: {longest:?}"
    );
    for j in 0..20 {
        let (r, _) = echo(j).await;
        assert!(r.is_ok(), "after the restart: {r:?}");
    }
    drop(sky);
}

/// A bee node restarts (killed, started again) while a stock skynet node calls it in a
/// loop through its own cluster library: skynet's calls fail while it is gone and succeed
/// again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_skynet_node_keeps_calling_a_bee_node_that_restarts() {
    let layout = Layout::new(&["sky1", "bee1"]);
    let mut bee = tokio::task::block_in_place(|| {
        layout.start("bee1", "[[service]]\nkind = \"echo\"\nname = \"echo\"\n")
    });
    let _sky = tokio::task::block_in_place(|| SkynetNode::start(&layout, "node", "sky1"));
    let (_node, c) = layout.client(Duration::from_secs(30));
    let looping = {
        let c = c.clone();
        tokio::spawn(async move {
            relay(
                &c,
                "sky1",
                vec![
                    Value::from("loop"),
                    Value::from("bee1"),
                    Value::from("echo"),
                    Value::Integer(6),
                ],
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| {
        bee.kill9();
        std::thread::sleep(Duration::from_millis(500));
        bee.restart();
        wait_listening(layout.port("bee1"), "the restarted bee node");
    });
    let stats = looping.await.unwrap();
    let t = stats[0].as_table().expect("loop stats");
    let (ok, failed) = (table_int(t, "ok"), table_int(t, "failed"));
    assert!(ok > 0, "skynet's calls to bee never succeeded: {t:?}");
    assert!(
        failed > 0,
        "skynet's calls to a killed bee node must fail while it is gone: {t:?}"
    );
    assert_eq!(
        t.get_str("recovered"),
        Some(&Value::Boolean(true)),
        "skynet's calls did not succeed again after bee came back: {t:?}"
    );
    let after = relay(&c, "sky1", words(&["call", "bee1", "echo", "after"])).await;
    assert_eq!(after, vec![Value::Boolean(true), Value::from("after")]);
}

/// skynet's `cluster.reload` moves a bee node: the bee node comes back on another port, a
/// `bee config push` of the new layout reaches the stock skynet node (its `@bee_config`
/// calls `cluster.reload`), and skynet's next call reaches the bee node at its new address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_skynet_cluster_reload_moves_a_bee_node() {
    let layout = Layout::new(&["sky1", "bee1"]);
    let (sky_port, old_port) = (layout.port("sky1"), layout.port("bee1"));
    let v1 = format!(
        "__version = 1\nsky1 = \"127.0.0.1:{sky_port}\"\nbee1 = \"127.0.0.1:{old_port}\"\n"
    );
    std::fs::write(layout.cluster_file(), &v1).unwrap();
    let mut old = tokio::task::block_in_place(|| {
        layout.start("bee1", "[[service]]\nkind = \"echo\"\nname = \"echo\"\n")
    });
    let _sky = tokio::task::block_in_place(|| SkynetNode::start(&layout, "node", "sky1"));
    let (_node, c) = layout.client(Duration::from_secs(20));
    let call = |tag: &'static str| {
        let c = c.clone();
        async move {
            relay(
                &c,
                "sky1",
                vec![
                    Value::from("call"),
                    Value::from("bee1"),
                    Value::from("echo"),
                    Value::from(tag),
                ],
            )
            .await
        }
    };
    assert_eq!(
        call("old").await,
        vec![Value::Boolean(true), Value::from("old")]
    );

    // bee1 moves: the old process goes, a new one listens on another port.
    tokio::task::block_in_place(|| old.kill9());
    let new_port = bee_tests::free_port();
    let v2 = layout.dir.path().join("v2.lua");
    std::fs::write(
        &v2,
        format!(
            "__version = 2\nsky1 = \"127.0.0.1:{sky_port}\"\nbee1 = \"127.0.0.1:{new_port}\"\n"
        ),
    )
    .unwrap();
    let cfg = layout.dir.path().join("bee1-moved.toml");
    std::fs::write(
        &cfg,
        "name = \"bee1\"\ncluster = \"v2.lua\"\n[[service]]\nkind = \"echo\"\nname = \"echo\"\n",
    )
    .unwrap();
    let _moved = tokio::task::block_in_place(|| {
        let p = BeeProcess::start("bee1", &cfg);
        wait_listening(new_port, "the moved bee node");
        p
    });
    let before = call("before reload").await;
    assert_eq!(
        before.first(),
        Some(&Value::Boolean(false)),
        "bee1's old address still answered: {before:?}"
    );

    let cluster = layout.cluster_file();
    let (_, out, err) = tokio::task::block_in_place(|| {
        bee_tests::bee_cli(&[
            "config",
            "push",
            "--cluster",
            cluster.to_str().unwrap(),
            v2.to_str().unwrap(),
        ])
    });
    let sky_line = out
        .lines()
        .find(|l| l.starts_with("sky1 "))
        .unwrap_or_else(|| panic!("no line for sky1:\n{out}{err}"));
    assert!(
        sky_line.contains("applied") && sky_line.contains("changed bee1"),
        "{out}{err}"
    );
    assert_eq!(
        call("moved").await,
        vec![Value::Boolean(true), Value::from("moved")]
    );
}

/// A bee node `bee1` (echo, sink), a stock skynet node `sky1` and a Lua node run by
/// `bee run` of a skynet config whose start service is `start` (from `tests/lua/`),
/// with `first` — a tree of Lua copies with `service/` and `lualib/` — ahead of the
/// stock tree on its paths; a client of the three.
struct LuaCluster {
    _bee: BeeProcess,
    _sky: SkynetNode,
    _lua: BeeProcess,
    _node: Node,
    c: Cluster,
}

fn start_lua_cluster(
    layout: &Layout,
    lua_node: &str,
    start: &str,
    first: Option<&std::path::Path>,
) -> LuaCluster {
    let sky = skynet_dir();
    let lua_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("lua");
    let (lua_path, luaservice) = match first {
        Some(t) => (
            format!("{}/lualib/?.lua;", t.display()),
            format!("{}/service/?.lua;", t.display()),
        ),
        None => (String::new(), String::new()),
    };
    let config = layout.dir.path().join(format!("{lua_node}.config"));
    std::fs::write(
        &config,
        format!(
            "thread = 2\nharbor = 0\n\
             cpath = \"{s}/cservice/?.so\"\n\
             lua_path = \"{lua_path}{s}/lualib/?.lua;{s}/lualib/?/init.lua\"\n\
             lua_cpath = \"{s}/luaclib/?.so\"\n\
             luaservice = \"{luaservice}{s}/service/?.lua;{l}/?.lua\"\n\
             lualoader = \"{s}/lualib/loader.lua\"\n\
             start = \"{start}\"\n\
             cluster = \"{c}\"\n\
             lua_node_name = \"{lua_node}\"\n",
            s = sky.display(),
            l = lua_dir.display(),
            c = layout.cluster_file().display()
        ),
    )
    .unwrap();
    let bee = layout.start(
        "bee1",
        "[[service]]\nkind = \"echo\"\nname = \"echo\"\n\n[[service]]\nkind = \"sink\"\nname = \"sink\"\n",
    );
    let sky = SkynetNode::start(layout, "node", "sky1");
    let lua = BeeProcess::start(lua_node, &config);
    wait_listening(layout.port(lua_node), "the Lua node's cluster gate");
    let (node, c) = layout.client(Duration::from_secs(20));
    LuaCluster {
        _bee: bee,
        _sky: sky,
        _lua: lua,
        _node: node,
        c,
    }
}

/// Call `service` on `node` with `args`; its reply values.
async fn call_values(c: &Cluster, node: &str, service: &str, args: Vec<Value>) -> Vec<Value> {
    let reply = c
        .call(node, service, seri::pack(&args).unwrap())
        .await
        .unwrap_or_else(|e| panic!("call {service} on {node}: {e}"));
    seri::unpack(&reply).unwrap()
}

/// What a Lua service on `lua_node` using a cluster library does both ways: a bee client
/// calls it (`ping` answered `{tag}-pong`), it calls bee1 and sky1 (`callout`), a call to
/// a name nobody registered fails in Lua readably and it lives on, its 20 pushes reach
/// bee1's sink (`sendout`), and the stock skynet node calls it (other commands are
/// answered `tag, command`).
async fn lua_cluster_both_ways(c: &Cluster, lua_node: &str, service: &str, tag: &str) {
    let pong = format!("{tag}-pong");
    assert_eq!(
        call_values(c, lua_node, service, words(&["ping", "a", "b"])).await,
        words(&[pong.as_str(), "a", "b"])
    );
    for (to, text) in [("bee1", "to bee"), ("sky1", "to skynet")] {
        assert_eq!(
            call_values(c, lua_node, service, words(&["callout", to, "@echo", text])).await,
            vec![Value::Boolean(true), Value::from(text)]
        );
    }
    let failed = call_values(
        c,
        lua_node,
        service,
        words(&["callout", "bee1", "@nobody", "x"]),
    )
    .await;
    assert_eq!(failed.first(), Some(&Value::Boolean(false)), "{failed:?}");
    let before = call_values(c, "bee1", "sink", words(&["count"])).await[0]
        .as_int()
        .expect("a count");
    for _ in 0..20 {
        call_values(
            c,
            lua_node,
            service,
            words(&["sendout", "bee1", "@sink", "hit"]),
        )
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while call_values(c, "bee1", "sink", words(&["count"])).await[0].as_int() < Some(before + 20) {
        assert!(
            Instant::now() < deadline,
            "{tag}'s cluster.send pushes did not all arrive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        relay(
            c,
            "sky1",
            words(&["call", lua_node, service, "from skynet"])
        )
        .await,
        vec![
            Value::Boolean(true),
            Value::from(tag),
            Value::from("from skynet")
        ]
    );
}

/// skynet's own cluster Lua (`skynet.cluster`: clusterd, clustersender, clusteragent and
/// the gate, unchanged) in a Lua service on a bee node (`bee run` of a skynet config),
/// over bee's socket API: a bee client and a stock skynet node call it by its cluster
/// name, and it calls a bee node and the stock skynet node with `cluster.call`, and
/// pushes to them with `cluster.send`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skynet_cluster_lua_on_bee_talks_to_bee_and_stock_skynet() {
    let layout = Layout::new(&["luanode", "bee1", "sky1"]);
    let lc =
        tokio::task::block_in_place(|| start_lua_cluster(&layout, "luanode", "clusterlua", None));
    lua_cluster_both_ways(&lc.c, "luanode", "luaecho", "lua").await;
}

/// A hot update while a stock skynet node keeps calling: the old process cannot tell
/// skynet `goaway`, so it hands the skynet node's connection itself to the successor
/// once every call read from it is answered (the skynet node sees one connection that
/// never closed), and its drain ends without waiting for the skynet calls to pause. The
/// bee callers it told `goaway` move to the successor, which accepts them at once and
/// answers their heartbeats, holding their requests until it has its services' state.
/// No call fails, bee's or skynet's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_update_under_stock_skynet_load_hands_its_connection_over_and_fails_no_call() {
    let layout = Layout::new(&["bee1", "sky1"]);
    let mut bee = tokio::task::block_in_place(|| {
        layout.start_logged(
            "bee1",
            "drain_timeout_ms = 10000\n[[service]]\nkind = \"echo\"\nname = \"echo\"\n",
        )
    });
    let _sky = tokio::task::block_in_place(|| SkynetNode::start(&layout, "node", "sky1"));
    let mut settings = ClusterSettings::default();
    settings.channel.call_timeout = Duration::from_secs(20);
    // Shorter than the old process's drain: before the successor served at once, the
    // moved callers saw nothing for this long and failed.
    settings.channel.liveness = Duration::from_secs(2);
    let (_node, c) = layout.client_with(settings);
    // The skynet node's load is started through a client of its own with the default
    // liveness bound: the short one above is for the bee callers under test, and a stock
    // skynet node starved of CPU for two seconds (seen beside a CPU hog and parallel
    // builds) would fail the relay, not the hot update.
    let (_relay_node, relay_client) = layout.client(Duration::from_secs(60));
    let skynet_load = tokio::spawn(async move {
        relay(
            &relay_client,
            "sky1",
            words(&["loop", "bee1", "echo", "12"]),
        )
        .await
    });
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut callers = Vec::new();
    for t in 0..4i64 {
        let (c, stop) = (c.clone(), stop.clone());
        callers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, Vec::new());
            let mut i = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let p = seri::pack(&[Value::Integer(t), Value::Integer(i)]).unwrap();
                match c.call("bee1", "echo", p.clone()).await {
                    Ok(r) if r == p => ok += 1,
                    Ok(r) => failed.push(format!("wrong reply {r:?}")),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t0 = Instant::now();
    let clean = tokio::task::block_in_place(|| bee.take_over(None));
    let took = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for c in callers {
        let (o, f) = c.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    let sky = skynet_load.await.unwrap();
    println!(
        "takeover took {took:?}; bee calls: {ok} answered, {} failed; skynet loop: {sky:?}",
        failed.len()
    );
    assert!(
        clean,
        "the old process did not exit cleanly:\n{}",
        bee.log()
    );
    // Before connections were handed over, the skynet calls kept the drain busy until
    // its deadline (10 s here).
    assert!(
        took < Duration::from_secs(7),
        "the old process's drain ran to its deadline: the skynet connection kept it busy ({took:?})"
    );
    let t = sky[0].as_table().expect("loop stats");
    assert!(
        table_int(t, "ok") > 0,
        "skynet's calls never succeeded: {t:?}"
    );
    assert_eq!(
        table_int(t, "failed"),
        0,
        "skynet's calls failed across the hot update: {t:?}"
    );
    assert!(ok > 0, "no bee call was answered");
    assert!(
        failed.is_empty(),
        "{} of {} bee calls failed across the hot update, first: {:?}",
        failed.len(),
        ok + failed.len() as u64,
        failed.first()
    );
}

/// Build, from the stock tree at `sky`, the game team's copy of skynet's cluster in
/// `dir`: `service/bee_clusterd.lua`, `bee_clusteragent.lua`, `bee_clustersender.lua`,
/// `bee_clusterproxy.lua` and `lualib/bee_cluster.lua`, each with the service and module
/// names it uses rewritten. Every file must contain at least one of the names it is
/// expected to rename, so a tree laid out differently fails here, not later.
fn team_cluster_copy(sky: &std::path::Path, dir: &std::path::Path) {
    const RENAMES: [(&str, &str); 5] = [
        ("\"clusterd\"", "\"bee_clusterd\""),
        ("\"clusteragent\"", "\"bee_clusteragent\""),
        ("\"clustersender\"", "\"bee_clustersender\""),
        ("\"clusterproxy\"", "\"bee_clusterproxy\""),
        ("\"skynet.cluster\"", "\"bee_cluster\""),
    ];
    let files = [
        ("service/clusterd.lua", "service/bee_clusterd.lua", 3),
        (
            "service/clusteragent.lua",
            "service/bee_clusteragent.lua",
            0,
        ),
        (
            "service/clustersender.lua",
            "service/bee_clustersender.lua",
            0,
        ),
        (
            "service/clusterproxy.lua",
            "service/bee_clusterproxy.lua",
            2,
        ),
        ("lualib/skynet/cluster.lua", "lualib/bee_cluster.lua", 1),
    ];
    std::fs::create_dir_all(dir.join("service")).unwrap();
    std::fs::create_dir_all(dir.join("lualib")).unwrap();
    for (from, to, at_least) in files {
        let src = sky.join(from);
        let mut text =
            std::fs::read_to_string(&src).unwrap_or_else(|e| panic!("read {}: {e}", src.display()));
        let mut renamed = 0;
        for (old, new) in RENAMES {
            renamed += text.matches(old).count();
            text = text.replace(old, new);
        }
        assert!(
            renamed >= at_least,
            "{}: {renamed} names renamed, expected at least {at_least}",
            src.display()
        );
        std::fs::write(dir.join(to), text).unwrap();
    }
}

/// A game team's copy of skynet's cluster Lua, renamed into its own framework
/// (`require "bee_cluster"` starting `bee_clusterd`, which starts `bee_clustersender`s
/// and `bee_clusteragent`s), built at run time from the stock tree, in a Lua service on a
/// bee node (`bee run` of a skynet config whose paths put the copy first): a bee client
/// and a stock skynet node call it, and it calls and pushes to a bee node and the stock
/// skynet node. The node's launcher shows the renamed services did the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_renamed_cluster_lua_on_bee_talks_to_bee_and_stock_skynet() {
    let layout = Layout::new(&["teamnode", "bee1", "sky1"]);
    let team = layout.dir.path().join("team");
    team_cluster_copy(&skynet_dir(), &team);
    let lc = tokio::task::block_in_place(|| {
        start_lua_cluster(&layout, "teamnode", "teamcluster", Some(&team))
    });
    lua_cluster_both_ways(&lc.c, "teamnode", "teamecho", "team").await;
    // The renamed services carried all of it; skynet's own names never started.
    let services: Vec<String> = call_values(&lc.c, "teamnode", "teamecho", words(&["services"]))
        .await
        .iter()
        .map(|v| match v {
            Value::String(s) => String::from_utf8_lossy(s).into_owned(),
            other => panic!("a launcher line: {other:?}"),
        })
        .collect();
    for renamed in ["bee_clusterd", "bee_clustersender", "bee_clusteragent"] {
        assert!(
            services
                .iter()
                .any(|l| l.split_whitespace().nth(1) == Some(renamed)),
            "no {renamed} in the node's services: {services:?}"
        );
    }
    for stock in ["clusterd", "clustersender", "clusteragent"] {
        assert!(
            !services
                .iter()
                .any(|l| l.split_whitespace().nth(1) == Some(stock)),
            "skynet's own {stock} started: {services:?}"
        );
    }
}
