//! The game team's Lua patterns, as Lua services in bee nodes (the demo's
//! `crates/bee-demo/lua/`, and `tests/lua/` for the stock skynet side), talking to
//! Rust services, C++ modules and each other with skynet's own cluster API:
//!
//! - `lobby.lua` (node `lualobby`): `cluster.query` + `cluster.send "text"` of a
//!   protobuf game frame + `cluster.call "lua"` + `cluster.call "text"`, against the
//!   demo's Rust `lpersistence` (node `rustp`, the bee-demo binary) and the Lua one;
//! - `lpersistence.lua` (node `luap`): one `"lua"` dispatch branching on `sub_type`
//!   (`"lua"` → its CMD table, `"text"` → the frame unpacked and handled by message
//!   name), answering exactly as the Rust service does;
//! - `shop_master.lua` (node `luashop`): launches the C++ demo shop twice with
//!   `skynet.launch("shop", proxy_handle)` and `skynet.redirect`s `"text"` frames to
//!   shop `1 + uid % 2`; the shops' receipts come back to the Lua lobby through the
//!   node's CServiceProxy, one-way and as rpc replies;
//! - `skylobby.lua` on a stock skynet node (`sky`): the lobby's steps against the Rust
//!   and the Lua persistence, and a buy from the Lua shop master whose receipt the C++
//!   shop sends back to the stock node.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bee_cluster::Cluster;
use bee_codec::kkt::KktFrame;
use bee_codec::seri::{self, Value};
use bee_proto::game::{GetUserInfo, LoginReq, ShopBuy, ShopReceipt, UserInfo};
use bee_proto::{Message, Name};
use bee_tests::{cpp_modules, demo_bin, skynet_dir, Layout};
use bytes::Bytes;

const CALL: Duration = Duration::from_secs(20);
const UID: i64 = 10076447;

fn lua_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("lua")
}

/// The demo's Lua services (the patterns) and `kktframe.lua`.
fn demo_lua_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crates/bee-demo/lua")
}

/// A bee node config hosting skynet's Lua (its bootstrap, then `services`), with the
/// tests' Lua services and modules on its paths, the C++ modules on its `cpath`, the
/// descriptor set of the game's messages as `pb_file` and the cluster file for
/// skynet's cluster Lua.
fn lua_node(layout: &Layout, skynet: &Path, log: &Path, pb: &Path, services: &[&str]) -> String {
    let s = skynet.display();
    let t = lua_dir().display().to_string();
    let d = demo_lua_dir().display().to_string();
    let mut body = format!(
        "[env]\n\
         cpath = \"{s}/cservice/?.so;{cpp}/?.so\"\n\
         lua_path = \"{s}/lualib/?.lua;{s}/lualib/?/init.lua;{d}/?.lua\"\n\
         lua_cpath = \"{s}/luaclib/?.so\"\n\
         luaservice = \"{s}/service/?.lua;{d}/?.lua;{t}/?.lua\"\n\
         lualoader = \"{s}/lualib/loader.lua\"\n\
         start = \"luaecho\"\n\
         cluster = \"{cluster}\"\n\
         pb_file = \"{pb}\"\n\
         logger = \"{log}\"\n\n\
         [[service]]\nkind = \"cservice_proxy\"\n\n\
         [[service]]\nkind = \"snlua\"\nliblua = \"{s}/liblua.so\"\n",
        cpp = cpp_modules().display(),
        cluster = layout.cluster_file().display(),
        pb = pb.display(),
        log = log.display()
    );
    for name in services {
        body.push_str(&format!(
            "\n[[service]]\nkind = \"snlua\"\nliblua = \"{s}/liblua.so\"\nargs = \"{name}\"\nname = \"{name}\"\n"
        ));
    }
    body
}

/// Wait (at most 30 s) until the skynet log at `path` has a line containing `what`.
fn wait_for_log(path: &Path, what: &str) -> String {
    bee_tests::wait_for(what, Duration::from_secs(30), || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(what) {
            Ok(text)
        } else {
            Err(text)
        }
    })
}

fn s(v: &str) -> Value {
    Value::from(v)
}

async fn call(c: &Cluster, node: &str, service: &str, args: Vec<Value>) -> Vec<Value> {
    let r = c
        .call(node, service, seri::pack(&args).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{node}/{service} {args:?}: {e}"));
    seri::unpack(&r).unwrap()
}

fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    match v {
        Value::Table(t) => t.get_str(key).unwrap_or(&Value::Nil),
        other => panic!("a table expected, got {other:?}"),
    }
}

fn string_of(v: &Value) -> String {
    match v {
        Value::String(b) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("a string expected, got {other:?}"),
    }
}

/// A game frame with a GetUserInfo for `uid`, as the Rust side writes it.
fn get_user_frame(uid: i64) -> Bytes {
    KktFrame::new(
        16,
        uid,
        GetUserInfo::full_name(),
        GetUserInfo { uid: uid as u64 }.encode_to_vec(),
    )
    .encode()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_teams_lua_patterns_run_in_bee_nodes() {
    let skynet = skynet_dir();
    let layout = Layout::new(&["lualobby", "luap", "luashop", "rustp", "sky"]);
    let dir = layout.dir.path().to_path_buf();
    let pb = dir.join("game.pb");
    std::fs::write(&pb, bee_proto::DESCRIPTOR_SET).unwrap();
    let logs: Vec<PathBuf> = ["lualobby", "luap", "luashop", "sky"]
        .iter()
        .map(|n| dir.join(format!("{n}.skynet.log")))
        .collect();

    let _dump = DumpLogs(logs.clone());
    let _sky = tokio::task::block_in_place(|| StockSkynet::start(&layout, &skynet, &logs[3]));
    let _rustp = tokio::task::block_in_place(|| {
        layout.start_with(
            &demo_bin(),
            "rustp",
            "[[service]]\nkind = \"lpersistence\"\nname = \"lpersistence\"\n",
        )
    });
    let _luap = tokio::task::block_in_place(|| {
        let body = lua_node(&layout, &skynet, &logs[1], &pb, &["lpersistence"]);
        let p = layout.start("luap", &body);
        wait_for_log(&logs[1], "lpersistence ready");
        p
    });
    let _luashop = tokio::task::block_in_place(|| {
        let body = lua_node(&layout, &skynet, &logs[2], &pb, &["shop_master"]);
        let p = layout.start("luashop", &body);
        wait_for_log(&logs[2], "shop_master ready with 2 shops");
        p
    });
    let _lualobby = tokio::task::block_in_place(|| {
        let body = lua_node(&layout, &skynet, &logs[0], &pb, &["lobby"]);
        let p = layout.start("lualobby", &body);
        wait_for_log(&logs[0], "lobby ready");
        p
    });
    let (_client, c) = layout.client(CALL);

    // The Lua lobby against the Rust persistence, then against the Lua one: the same
    // steps, the same answers.
    let mut replies = Vec::new();
    for node in ["rustp", "luap"] {
        let r = call(
            &c,
            "lualobby",
            "lobby",
            vec![s("lua"), s("persistence"), s(node), Value::Integer(UID)],
        )
        .await;
        let t = &r[0];
        assert!(
            matches!(field(t, "addr"), Value::Integer(a) if *a > 0),
            "cluster.query gave {:?}",
            field(t, "addr")
        );
        assert_eq!(field(t, "pong"), &s("pong"), "{node}: {t:?}");
        assert_eq!(
            string_of(field(t, "served_by")),
            format!("{node}/lpersistence")
        );
        let (Value::Integer(before), Value::Integer(after)) =
            (field(t, "before"), field(t, "after"))
        else {
            panic!("{node}: logins {t:?}");
        };
        assert_eq!(
            after - before,
            1,
            "{node}: the pushed LoginReq frame was counted"
        );
        assert_eq!(field(t, "reply_name"), &s("game.UserInfo"), "{node}");
        assert_eq!(field(t, "reply_uid"), &Value::Integer(UID));
        assert_eq!(field(t, "uid"), &Value::Integer(UID));
        assert_eq!(string_of(field(t, "nickname")), format!("player{UID}"));
        assert_eq!(field(t, "level"), &Value::Integer(UID % 60 + 1));
        assert_eq!(field(t, "coins"), &Value::Integer(UID % 100_000 * 10));
        replies.push(field(t, "reply").clone());
    }

    // Rust calling each persistence with the same frame: the Lua service's reply frame
    // decodes with prost to what the Rust service answers.
    let mut infos = Vec::new();
    for node in ["rustp", "luap"] {
        let r = call(
            &c,
            node,
            "lpersistence",
            vec![s("text"), Value::String(get_user_frame(42))],
        )
        .await;
        let Some(Value::String(bytes)) = r.first() else {
            panic!("{node} answered {r:?}");
        };
        let f = KktFrame::decode(bytes).unwrap_or_else(|e| panic!("{node}'s reply frame: {e}"));
        assert_eq!(f.uid, 42, "{node}");
        assert_eq!(&f.name[..], UserInfo::full_name().as_bytes(), "{node}");
        infos.push(UserInfo::decode(&f.body[..]).unwrap());
    }
    assert_eq!(infos[0], infos[1], "Rust and Lua persistence answer alike");
    // A frame that is not one fails that call with the Lua error (in the node's log),
    // and the service keeps serving.
    let bad = c
        .call(
            "luap",
            "lpersistence",
            seri::pack(&[s("text"), Value::from(&b"\x00\x05abc"[..])]).unwrap(),
        )
        .await;
    assert!(bad.is_err(), "a truncated frame: {bad:?}");
    tokio::task::block_in_place(|| wait_for_log(&logs[1], "frame: 5 bytes, shorter than"));
    let r = call(&c, "luap", "lpersistence", vec![s("lua"), s("ping")]).await;
    assert_eq!(r[0], s("pong"));
    // And the reply frames the Lua lobby got from each are the same bytes.
    assert_eq!(field_bytes(&replies[0]), field_bytes(&replies[1]));

    // The Lua shop master and the C++ shops: one-way buys land on shop 1 + uid % 2 and
    // the receipts come back to the Lua lobby as "text" frames; an rpc buy's answer as an
    // "rpc_response" frame with the caller's session.
    for (uid, item) in [(1001, 12), (1002, 13)] {
        let r = call(
            &c,
            "lualobby",
            "lobby",
            vec![
                s("lua"),
                s("buy"),
                s("luashop"),
                s("shop_master"),
                Value::Integer(uid),
                Value::Integer(item),
                Value::Integer(2),
            ],
        )
        .await;
        assert_eq!(r, vec![Value::Boolean(true)]);
    }
    let r = call(
        &c,
        "lualobby",
        "lobby",
        vec![
            s("lua"),
            s("buy_rpc"),
            s("luashop"),
            s("shop_master"),
            Value::Integer(1003),
            Value::Integer(14),
            Value::Integer(3),
            Value::Integer(77),
        ],
    )
    .await;
    assert_eq!(r, vec![Value::Boolean(true)]);
    let mut receipts = Vec::new();
    for _ in 0..100 {
        let r = call(&c, "lualobby", "lobby", vec![s("lua"), s("receipts")]).await;
        receipts = match &r[0] {
            Value::Table(t) => t.array.clone(),
            other => panic!("receipts: {other:?}"),
        };
        if receipts.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(receipts.len(), 3, "three receipts: {receipts:?}");
    let by_uid = |uid: i64| {
        receipts
            .iter()
            .find(|r| field(r, "uid") == &Value::Integer(uid))
            .unwrap_or_else(|| panic!("no receipt for uid {uid}: {receipts:?}"))
    };
    let r = by_uid(1001);
    assert_eq!(field(r, "how"), &s("text"));
    assert_eq!(field(r, "sub_type"), &Value::Integer(16));
    assert_eq!(field(r, "name"), &s("game.ShopReceipt"));
    assert_eq!(field(r, "item_id"), &Value::Integer(12));
    assert_eq!(field(r, "handled_by"), &s("luashop/shop2"), "1 + 1001 % 2");
    assert_eq!(field(r, "order_id"), &Value::Integer(1));
    let r = by_uid(1002);
    assert_eq!(field(r, "handled_by"), &s("luashop/shop1"), "1 + 1002 % 2");
    assert_eq!(field(r, "order_id"), &Value::Integer(1));
    let r = by_uid(1003);
    assert_eq!(field(r, "how"), &s("rpc_response"));
    assert_eq!(field(r, "sub_type"), &Value::Integer(17));
    assert_eq!(field(r, "session"), &Value::Integer(77));
    assert_eq!(field(r, "handled_by"), &s("luashop/shop2"));
    assert_eq!(field(r, "count"), &Value::Integer(3));
    assert_eq!(field(r, "order_id"), &Value::Integer(2));

    // A stock skynet node's Lua lobby against the same bee nodes.
    for node in ["rustp", "luap"] {
        let login = LoginReq {
            uid: UID as u64,
            token: "sky".into(),
            device: "android".into(),
        };
        let r = call(
            &c,
            "sky",
            "lobby",
            vec![
                s("lua"),
                s("persistence"),
                s(node),
                Value::Integer(UID),
                Value::from(login.encode_to_vec()),
                Value::from(GetUserInfo { uid: UID as u64 }.encode_to_vec()),
            ],
        )
        .await;
        let [Value::Integer(addr), Value::Integer(before), Value::Integer(after), pong, served_by, Value::String(reply)] =
            r.as_slice()
        else {
            panic!("sky lobby against {node}: {r:?}");
        };
        assert!(*addr > 0);
        assert_eq!(
            after - before,
            1,
            "{node} counted the stock node's LoginReq"
        );
        assert_eq!(pong, &s("pong"));
        assert_eq!(string_of(served_by), format!("{node}/lpersistence"));
        let f = KktFrame::decode(reply).unwrap();
        assert_eq!(f.uid, UID);
        let info = UserInfo::decode(&f.body[..]).unwrap();
        assert_eq!(info.nickname, format!("player{UID}"), "{node}");
        assert_eq!(
            reply,
            field_bytes(&replies[0]),
            "{node}: the same reply frame"
        );
    }
    let buy = ShopBuy {
        uid: 1005,
        item_id: 21,
        count: 1,
    };
    let r = call(
        &c,
        "sky",
        "lobby",
        vec![
            s("lua"),
            s("buy"),
            s("luashop"),
            s("shop_master"),
            Value::Integer(1005),
            Value::from(buy.encode_to_vec()),
        ],
    )
    .await;
    assert_eq!(r, vec![Value::Boolean(true)]);
    let mut frames = Vec::new();
    for _ in 0..100 {
        let r = call(&c, "sky", "lobby", vec![s("lua"), s("receipts")]).await;
        frames = match &r[0] {
            Value::Table(t) => t.array.clone(),
            other => panic!("receipts: {other:?}"),
        };
        if !frames.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(frames.len(), 1, "the stock node's receipt: {frames:?}");
    let f = KktFrame::decode(&Bytes::copy_from_slice(field_bytes(&frames[0]))).unwrap();
    assert_eq!(&f.name[..], ShopReceipt::full_name().as_bytes());
    let receipt = ShopReceipt::decode(&f.body[..]).unwrap();
    assert_eq!(receipt.uid, 1005);
    assert_eq!(receipt.handled_by, "luashop/shop2", "1 + 1005 % 2");
    assert_eq!(receipt.order_id, 3, "shop2's third order");
}

/// A stock skynet node running `skylobby.lua` as its start service (cluster name
/// `sky`), killed on drop.
struct StockSkynet(Child);

impl StockSkynet {
    fn start(layout: &Layout, skynet: &Path, log: &Path) -> StockSkynet {
        let s = skynet.display();
        let t = lua_dir().display().to_string();
        let d = demo_lua_dir().display().to_string();
        let config = layout.dir.path().join("sky.config");
        std::fs::write(
            &config,
            format!(
                "thread = 2\nharbor = 0\nstart = \"skylobby\"\nbootstrap = \"snlua bootstrap\"\n\
                 cpath = \"{s}/cservice/?.so\"\n\
                 lua_path = \"{s}/lualib/?.lua;{s}/lualib/?/init.lua;{d}/?.lua\"\n\
                 lua_cpath = \"{s}/luaclib/?.so\"\n\
                 luaservice = \"{s}/service/?.lua;{t}/?.lua\"\n\
                 lualoader = \"{s}/lualib/loader.lua\"\n\
                 cluster = \"{cluster}\"\n\
                 sky_name = \"sky\"\n\
                 logger = \"{log}\"\n",
                cluster = layout.cluster_file().display(),
                log = log.display()
            ),
        )
        .unwrap();
        let child = Command::new(skynet.join("skynet"))
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start stock skynet");
        let node = StockSkynet(child);
        wait_for_log(log, "skylobby ready");
        node
    }
}

impl Drop for StockSkynet {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// On a failing test, the Lua nodes' skynet logs (dropped before the layout's directory).
struct DumpLogs(Vec<PathBuf>);

impl Drop for DumpLogs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for p in &self.0 {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                eprintln!("--- {}:\n{text}", p.display());
            }
        }
    }
}

fn field_bytes(v: &Value) -> &[u8] {
    match v {
        Value::String(b) => b,
        other => panic!("a string expected, got {other:?}"),
    }
}
