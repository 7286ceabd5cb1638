//! The game team's kind of C/C++ services (skynet C service modules, built from
//! `cservices/` by `make`) loaded into `bee` processes with `kind = "cservice"` entries,
//! talking across nodes — every flow of kkt-frames.md "How frames travel" with a C++
//! module at one end:
//!
//! - C++ send → a Lua-style service (shop's one-way receipt; its mail.Send to mail);
//! - C++ rpc_call → a Lua service (mail's game.GetUserInfo lookup at `lpersistence`,
//!   answered with a Lua reply frame through mail's redirecting master);
//! - C++ → C++ send and rpc_call across nodes (shop `notify` → mail);
//! - Lua → C++ through a redirecting master (`shop_master`, `mail_master`);
//! - an rpc to a dead node timing out into the C++ callback;
//! - `hello.so` (skynet's C API only) loading and answering.

use std::process::Command;
use std::time::Duration;

use bee_cluster::{Cluster, ClusterSettings};
use bee_codec::kkt::{KktFrame, SUBTYPE_PROTOBUF, SUBTYPE_RPC_CLIENT, SUBTYPE_RPC_SERVER};
use bee_codec::seri::{self, Value};
use bee_proto::game::{Ping, Pong, ShopBuy, ShopReceipt};
use bee_proto::Message as _;
use bee_registry::Registry;
use bee_runtime::{Context, HandleResult, Message, Node, RuntimeConfig};
use bee_tests::{bee_bin, demo_bin, Layout};
use bytes::Bytes;
use tokio::sync::mpsc;

const CALL: Duration = Duration::from_secs(10);

use bee_tests::cpp_modules as modules;

fn pack(values: &[Value]) -> Bytes {
    seri::pack(values).expect("pack")
}

/// Start a node with `bin`, off the async runtime's threads.
fn start(layout: &Layout, bin: &std::path::Path, name: &str, body: &str) -> bee_tests::BeeProcess {
    tokio::task::block_in_place(|| layout.start_with(bin, name, body))
}

/// `hello.so` (skynet's C API only) in a `bee` process: loaded from a path relative to
/// the node config, with `[env]`, registered under a cluster name, answering cluster
/// calls through the session bridge; pushes get no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_loads_into_a_bee_process_and_answers_cluster_calls() {
    let layout = Layout::new(&["capi_hello"]);
    let mods = layout.dir.path().join("mods");
    std::fs::create_dir_all(&mods).unwrap();
    std::fs::copy(modules().join("hello.so"), mods.join("hello.so")).unwrap();
    let _n = start(
        &layout,
        &bee_bin(),
        "capi_hello",
        "[env]\nlog_dir = \"/tmp\"\nlogbufsecs = 1\n\n\
         [[service]]\nkind = \"cservice\"\nmodule = \"mods/hello.so\"\nname = \"hello\"\nargs = \".hello\"\n",
    );
    let (_node, c) = layout.client(CALL);
    for i in 0..50 {
        let reply = c
            .call(
                "capi_hello",
                "hello",
                pack(&[Value::from("text"), Value::from(format!("n{i}").as_str())]),
            )
            .await
            .expect("hello answers across the cluster");
        assert_eq!(
            seri::unpack(&reply).unwrap(),
            vec![Value::from(format!("hello:n{i}").as_str())]
        );
    }
    // A push: delivered with session 0, no answer, the node keeps serving.
    c.send(
        "capi_hello",
        "hello",
        pack(&[Value::from("text"), Value::from("push")]),
    )
    .await
    .unwrap();
    let reply = c
        .call(
            "capi_hello",
            "hello",
            pack(&[Value::from("text"), Value::from("after")]),
        )
        .await
        .unwrap();
    assert_eq!(
        seri::unpack(&reply).unwrap(),
        vec![Value::from("hello:after")]
    );
}

/// A node whose cservice entry cannot start does not start, and says why in one line.
#[test]
fn a_bad_module_or_a_failing_init_stops_the_node_with_a_clear_error() {
    let layout = Layout::new(&["capi_bad"]);
    let hello = modules().join("hello.so");
    let cases = [
        (
            "[[service]]\nkind = \"cservice\"\nmodule = \"nowhere/shop.so\"\n".to_string(),
            "cannot load C service module",
        ),
        (
            format!(
                "[[service]]\nkind = \"cservice\"\nmodule = \"{0}\"\nargs = \".x\"\n\n\
                 [[service]]\nkind = \"cservice\"\nmodule = \"{0}\"\nargs = \".x\"\n",
                hello.display()
            ),
            "hello_init(\".x\") failed",
        ),
        (
            format!(
                "[[service]]\nkind = \"cservice\"\nmodule = \"{}\"\nargz = \"typo\"\n",
                hello.display()
            ),
            "unknown option \"argz\"",
        ),
        (
            "[[service]]\nkind = \"cservice\"\n".to_string(),
            "needs module =",
        ),
        // A parameter naming a service nobody starts, or one started only further down
        // (services start in file order): the error names the entry and the name.
        (
            format!(
                "[[service]]\nkind = \"cservice\"\nmodule = \"{}\"\nname = \"shop\"\nargs = \".x {{handle:.CServiceProxy}}\"\n\n\
                 [[service]]\nkind = \"cservice_proxy\"\n",
                hello.display()
            ),
            "[[service]] #1 (kind \"cservice\", name \"shop\"): args \".x {handle:.CServiceProxy}\": \
             {handle:.CServiceProxy} names no service started so far",
        ),
        (
            format!(
                "[[service]]\nkind = \"cservice_proxy\"\n\n\
                 [[service]]\nkind = \"cservice\"\nmodule = \"{}\"\nargs = \".x {{hex:logger}}\"\n",
                hello.display()
            ),
            "[[service]] #2 (kind \"cservice\"): args \".x {hex:logger}\": {hex:logger} names no service",
        ),
    ];
    for (body, expected) in cases {
        let path = layout.dir.path().join("capi_bad.toml");
        std::fs::write(
            &path,
            format!("name = \"capi_bad\"\ncluster = \"cluster.lua\"\n{body}"),
        )
        .unwrap();
        let out = Command::new(bee_bin())
            .arg("run")
            .arg(&path)
            .env("BEE_LOG", "warn")
            .output()
            .expect("run bee");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "bee started with:\n{body}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in:\n{stderr}"
        );
    }
}

/// mail.proto (`cservices/proto/mail.proto`): the generated types in bee-proto.
use bee_proto::mail;

/// A Lua-style service of the test node: every cluster push it gets, as
/// `(kind, frame)` (`"text"` or `"rpc_response"`).
struct Inbox(mpsc::UnboundedSender<(String, KktFrame)>);

impl bee_runtime::Service for Inbox {
    async fn handle(&mut self, _ctx: &mut Context, msg: Message) -> HandleResult {
        let values = seri::unpack(&msg.payload)?;
        match values.as_slice() {
            [Value::String(kind), Value::String(frame)] => {
                let frame = KktFrame::decode(frame)
                    .map_err(|e| bee_runtime::ServiceError::msg(e.to_string()))?;
                let _ = self
                    .0
                    .send((String::from_utf8_lossy(kind).into_owned(), frame));
                Ok(None)
            }
            _ => Err(bee_runtime::ServiceError::msg("Inbox takes (kind, frame)")),
        }
    }
}

/// The node the test runs as: listening on its layout port, with `lobby` (an [`Inbox`]).
async fn test_node(
    layout: &Layout,
    name: &str,
) -> (Node, Cluster, mpsc::UnboundedReceiver<(String, KktFrame)>) {
    let node = Node::new(
        name,
        RuntimeConfig {
            call_timeout: CALL,
            ..RuntimeConfig::default()
        },
    );
    let mut settings = ClusterSettings::default();
    settings.channel.call_timeout = CALL;
    settings.wait_for_node = Some(Duration::ZERO);
    let cluster = Cluster::start(&node, Registry::new(layout.config()), settings);
    cluster.open(name).await.expect("the test node listens");
    let (tx, rx) = mpsc::unbounded_channel();
    node.spawn_named("lobby", Inbox(tx));
    (node, cluster, rx)
}

/// The next push to the test node's `lobby`, within 10 s.
async fn inbox(rx: &mut mpsc::UnboundedReceiver<(String, KktFrame)>) -> (String, KktFrame) {
    tokio::time::timeout(CALL, rx.recv())
        .await
        .expect("a frame reached the test node within 10 s")
        .expect("inbox open")
}

/// A C++ node of the team's shape: CServiceProxy, the module, and the master in front
/// of it (frames name the master as their source service, so answers come back there).
/// The module is told CServiceProxy's handle in its parameter, as the team's Lua master
/// does (`skynet.launch("shop", string.format("%d", proxy))`): `{handle:NAME}` in
/// `args` is that handle in decimal, `{hex:NAME}` as `:%08x`. The SDK takes a number
/// or `:hex` as the proxy's handle without looking any name up, so a wrong or missing
/// handle would leave every frame of the module undelivered.
fn cpp_node(module: &str, name: &str, args: &str) -> String {
    let proxy = if module == "mail.so" {
        "proxy={hex:CServiceProxy}"
    } else {
        "proxy={handle:.CServiceProxy}"
    };
    format!(
        "[[service]]\nkind = \"cservice_proxy\"\n\n\
         [[service]]\nkind = \"cservice\"\nmodule = \"{}\"\nname = \"{name}\"\nargs = \"{proxy} service={name}_master {args}\"\n\n\
         [[service]]\nkind = \"shop_master\"\nname = \"{name}_master\"\ntarget = \"{name}\"\n",
        modules().join(module).display()
    )
}

fn frame(sub_type: u32, uid: i64, name: &str, body: Vec<u8>) -> KktFrame {
    KktFrame::new(sub_type, uid, name.to_string(), body).from("capi_test", "lobby")
}

async fn push(c: &Cluster, node: &str, service: &str, f: KktFrame) {
    let f = f.to(node.to_string(), service.to_string());
    c.send(
        node,
        service,
        pack(&[Value::from("text"), Value::String(f.encode().unwrap())]),
    )
    .await
    .expect("push");
}

/// C++ ↔ Lua and C++ ↔ C++ across three `bee-demo` processes and the test's node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpp_and_lua_services_exchange_frames_across_bee_processes() {
    let layout = Layout::new(&["capi_shop", "capi_mail", "lpersistence_3", "capi_test"]);
    let demo = demo_bin();
    let _p = start(
        &layout,
        &demo,
        "lpersistence_3",
        "[[service]]\nkind = \"lpersistence\"\nname = \"lpersistence\"\n",
    );
    let _m = start(
        &layout,
        &demo,
        "capi_mail",
        &cpp_node("mail.so", "mail", "lookup=lpersistence_3/lpersistence"),
    );
    let _s = start(
        &layout,
        &demo,
        "capi_shop",
        &cpp_node("shop.so", "shop", "notify=capi_mail/mail_master"),
    );
    let (_node, c, mut rx) = test_node(&layout, "capi_test").await;

    // Lua → C++ through a redirecting master, C++ answering: rpc game.Ping to shop.
    push(
        &c,
        "capi_shop",
        "shop_master",
        frame(
            SUBTYPE_RPC_SERVER,
            5,
            "game.Ping",
            Ping {
                seq: 3,
                sent_unix_ms: 0,
            }
            .encode_to_vec(),
        )
        .session(21),
    )
    .await;
    let (kind, f) = inbox(&mut rx).await;
    assert_eq!(
        (kind.as_str(), f.sub_type, f.session, f.uid),
        ("rpc_response", SUBTYPE_RPC_CLIENT, 21, 5)
    );
    assert_eq!(
        (&f.source_node[..], &f.source_service[..]),
        (&b"capi_shop"[..], &b"shop_master"[..]),
        "names swapped"
    );
    let pong = Pong::decode(f.body.clone()).unwrap();
    assert_eq!(
        (pong.seq, pong.served_by.as_str()),
        (3, "capi_shop/shop_master")
    );

    // C++ → Lua rpc_call: rpc mail.Send to mail; mail first asks lpersistence (a
    // Lua-style service) for the player's nickname; the Lua reply frame comes back
    // through mail_master as PTYPE_RESPONSE and resumes mail's callback.
    let send = mail::Send {
        to_uid: 1001,
        from_uid: 7,
        title: "hi".into(),
        text: "x".into(),
    };
    push(
        &c,
        "capi_mail",
        "mail_master",
        frame(SUBTYPE_RPC_SERVER, 1001, "mail.Send", send.encode_to_vec()).session(22),
    )
    .await;
    let (kind, f) = inbox(&mut rx).await;
    assert_eq!(
        (kind.as_str(), f.session, &f.name[..]),
        ("rpc_response", 22, &b"mail.Ack"[..])
    );
    let ack = mail::Ack::decode(f.body.clone()).unwrap();
    assert_eq!(
        (ack.nickname.as_str(), ack.lookup_error.as_str()),
        ("player1001", ""),
        "{ack:?}"
    );
    assert_eq!(
        (ack.mail_id, ack.handled_by.as_str()),
        (1, "capi_mail/mail_master")
    );

    // C++ → C++ rpc_call across nodes: rpc ShopBuy to shop; shop rpc_calls mail.Send at
    // capi_mail/mail_master (which itself asks lpersistence), then answers the buyer.
    let buy = ShopBuy {
        uid: 1001,
        item_id: 12,
        count: 2,
    }
    .encode_to_vec();
    push(
        &c,
        "capi_shop",
        "shop_master",
        frame(SUBTYPE_RPC_SERVER, 1001, "game.ShopBuy", buy).session(23),
    )
    .await;
    let (kind, f) = inbox(&mut rx).await;
    assert_eq!(
        (kind.as_str(), f.session, &f.name[..]),
        ("rpc_response", 23, &b"game.ShopReceipt"[..])
    );
    let receipt = ShopReceipt::decode(f.body.clone()).unwrap();
    assert_eq!(
        (receipt.order_id, receipt.item_id, receipt.count),
        (1, 12, 2)
    );

    // C++ send → a Lua-style service (the test's lobby) and C++ → C++ send across nodes:
    // a one-way ShopBuy; shop sends the receipt one-way to the frame's source and a
    // one-way mail.Send to mail.
    let buy = ShopBuy {
        uid: 1001,
        item_id: 13,
        count: 1,
    }
    .encode_to_vec();
    push(
        &c,
        "capi_shop",
        "shop_master",
        frame(SUBTYPE_PROTOBUF, 1001, "game.ShopBuy", buy),
    )
    .await;
    let (kind, f) = inbox(&mut rx).await;
    assert_eq!(
        (kind.as_str(), f.sub_type, f.session, &f.name[..]),
        ("text", SUBTYPE_PROTOBUF, 0, &b"game.ShopReceipt"[..])
    );
    assert_eq!(
        (&f.remote_node[..], &f.remote_service[..]),
        (&b"capi_test"[..], &b"lobby"[..])
    );
    assert_eq!(ShopReceipt::decode(f.body.clone()).unwrap().order_id, 2);
    // Mail's inbox of 1001 holds, oldest first: the test's mail, the rpc receipt
    // mail (shop → mail rpc), the one-way receipt mail (shop → mail send).
    let mut titles = Vec::new();
    for attempt in 0..50 {
        push(
            &c,
            "capi_mail",
            "mail_master",
            frame(
                SUBTYPE_RPC_SERVER,
                1001,
                "mail.ListReq",
                mail::ListReq { uid: 1001 }.encode_to_vec(),
            )
            .session(100 + attempt),
        )
        .await;
        let (_, f) = inbox(&mut rx).await;
        titles = mail::List::decode(f.body.clone()).unwrap().titles;
        if titles.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(titles, vec!["hi", "receipt 1", "receipt 2"]);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err(),
        "nothing else was sent"
    );
}

/// A C++ rpc_call to a node nobody runs: CServiceProxy cannot deliver it, no reply ever
/// comes, and the module's timeout (on bee's skynet_timeout) calls the callback with
/// the error — here mail's lookup, which then answers with `lookup_error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpc_to_a_dead_node_times_out_into_the_cpp_callback() {
    let layout = Layout::new(&["capi_mail2", "capi_gone", "capi_test2"]);
    let _m = start(
        &layout,
        &demo_bin(),
        "capi_mail2",
        &cpp_node(
            "mail.so",
            "mail",
            "lookup=capi_gone/lpersistence lookup_timeout_ms=300",
        ),
    );
    let (_node, c, mut rx) = test_node(&layout, "capi_test2").await;
    let send = mail::Send {
        to_uid: 5,
        from_uid: 1,
        title: "t".into(),
        text: "x".into(),
    };
    let started = std::time::Instant::now();
    let f = KktFrame::new(SUBTYPE_RPC_SERVER, 5, "mail.Send", send.encode_to_vec())
        .from("capi_test2", "lobby")
        .session(31);
    push(&c, "capi_mail2", "mail_master", f).await;
    let (kind, f) = inbox(&mut rx).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!((kind.as_str(), f.session), ("rpc_response", 31));
    let ack = mail::Ack::decode(f.body.clone()).unwrap();
    assert_eq!(
        ack.lookup_error,
        "rpc game.GetUserInfo to capi_gone/lpersistence timed out after 300 ms"
    );
    assert_eq!(
        (ack.nickname.as_str(), ack.mail_id),
        ("", 1),
        "stored anyway"
    );
    // The node goes on answering.
    let f = KktFrame::new(
        SUBTYPE_RPC_SERVER,
        5,
        "game.Ping",
        Ping {
            seq: 9,
            sent_unix_ms: 0,
        }
        .encode_to_vec(),
    )
    .from("capi_test2", "lobby")
    .session(32);
    push(&c, "capi_mail2", "mail_master", f).await;
    let (_, f) = inbox(&mut rx).await;
    assert_eq!(
        (f.session, Pong::decode(f.body.clone()).unwrap().seq),
        (32, 9)
    );
}
