//! Game frames from the command line: `bee call/send --proto FILE --msg NAME JSON` build
//! the team's frame from a `.proto` file and a message written as JSON, send it as
//! `"text"`, and `bee call` prints the reply frame's message as JSON. Against the demo's
//! C++ shop (`shop.so`, loaded as the team loads it: its parameter is CServiceProxy's
//! handle) behind a redirecting master, in a plain `bee` process.

use std::path::PathBuf;

use bee_tests::{bee_cli, cpp_modules, Layout};

fn game_proto() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../proto/game.proto")
        .to_string_lossy()
        .into_owned()
}

/// A node of the team's shape: CServiceProxy, the C++ shop told the proxy's handle in
/// its parameter, and `shop_master` in front of it.
fn shop_node() -> String {
    format!(
        "[[service]]\nkind = \"cservice_proxy\"\n\n\
         [[service]]\nkind = \"cservice\"\nmodule = \"{}\"\nname = \"shop\"\n\
         args = \"{{handle:.CServiceProxy}} service=shop_master\"\n\n\
         [[service]]\nkind = \"native_master\"\nname = \"shop_master\"\ntarget = \"shop\"\n",
        cpp_modules().join("shop.so").display()
    )
}

/// `bee COMMAND --cluster FILE capi_cli shop_master --proto game.proto REST…`.
fn frame_cli(layout: &Layout, command: &str, rest: &[&str]) -> (bool, String, String) {
    let cluster = layout.cluster_file().to_string_lossy().into_owned();
    let proto = game_proto();
    let mut args = vec![
        command,
        "--cluster",
        &cluster,
        "capi_cli",
        "shop_master",
        "--proto",
        &proto,
    ];
    args.extend_from_slice(rest);
    bee_cli(&args)
}

#[test]
fn bee_call_rpc_gets_the_cpp_shops_reply_as_json_and_bad_messages_are_clear_errors() {
    let layout = Layout::new(&["capi_cli"]);
    let _n = layout.start("capi_cli", &shop_node());

    // An rpc request (sub_type 18): the C++ shop's rpc_response comes back and is printed
    // as JSON, every field of game.ShopReceipt under its .proto name.
    let buy = r#"{"uid": 1001, "item_id": 12, "count": 2}"#;
    let (ok, out, err) = frame_cli(
        &layout,
        "call",
        &["--msg", "game.ShopBuy", buy, "--uid", "1001", "--rpc"],
    );
    assert!(ok, "{out}{err}");
    assert_eq!(
        out,
        "{\"uid\":1001,\"item_id\":12,\"count\":2,\"order_id\":1,\"handled_by\":\"capi_cli/shop_master\"}\n",
        "{err}"
    );
    assert!(
        err.contains("game.ShopReceipt (sub_type 17, uid 1001, session 1, roomid 0) from @shop_master on capi_cli"),
        "{err}"
    );
    // A second rpc, another message of the file (lowerCamelCase JSON names work too).
    let (ok, out, err) = frame_cli(
        &layout,
        "call",
        &[
            "--msg",
            "game.Ping",
            r#"{"seq": 9, "sentUnixMs": 5}"#,
            "--rpc",
        ],
    );
    assert!(ok, "{out}{err}");
    assert_eq!(
        out, "{\"seq\":9,\"served_by\":\"capi_cli/shop_master\"}\n",
        "{err}"
    );

    // A one-way frame (sub_type 16): the shop takes the order (its receipt goes to the
    // frame's source, the one-shot client, which is not a cluster node: the proxy logs
    // that). The next rpc order is number 3.
    let (ok, out, err) = frame_cli(
        &layout,
        "send",
        &[
            "--msg",
            "game.ShopBuy",
            buy,
            "--uid",
            "1001",
            "--roomid",
            "7",
        ],
    );
    assert!(
        ok && err.contains("sent to @shop_master on capi_cli"),
        "{out}{err}"
    );
    let mut order = 0;
    for _ in 0..50 {
        let (ok, out, err) = frame_cli(
            &layout,
            "call",
            &["--msg", "game.ShopBuy", buy, "--uid", "1001", "--rpc"],
        );
        assert!(ok, "{out}{err}");
        let at = out.find("\"order_id\":").expect("order_id") + "\"order_id\":".len();
        order = out[at..].split(',').next().unwrap().parse::<i64>().unwrap();
        if order >= 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        order >= 3,
        "the one-way order reached the shop (last order {order})"
    );

    // Malformed JSON, a field the message lacks, a wrong type, an unknown message name,
    // --rpc on send: clear errors, nothing on stdout, the node keeps serving.
    let cases: [(&[&str], &[&str]); 5] = [
        (
            &["--msg", "game.ShopBuy", r#"{"uid": 1001,"#, "--rpc"],
            &["the JSON is not a game.ShopBuy", "line 1"],
        ),
        (
            &[
                "--msg",
                "game.ShopBuy",
                r#"{"uid": 1, "colour": 3}"#,
                "--rpc",
            ],
            &["the JSON is not a game.ShopBuy", "colour"],
        ),
        (
            &["--msg", "game.ShopBuy", r#"{"count": "many"}"#, "--rpc"],
            &["the JSON is not a game.ShopBuy"],
        ),
        (
            &["--msg", "game.ShopBuyy", "{}", "--rpc"],
            &["no message \"game.ShopBuyy\"", "game.ShopBuy"],
        ),
        (
            &["--msg", "game.ShopBuy", "{}", "extra"],
            &["unexpected arguments"],
        ),
    ];
    for (rest, needles) in cases {
        let (ok, out, err) = frame_cli(&layout, "call", rest);
        assert!(!ok && out.is_empty(), "{rest:?}: {out}");
        for n in needles {
            assert!(err.contains(n), "{rest:?}: expected {n:?} in {err}");
        }
    }
    let (ok, _out, err) = frame_cli(&layout, "send", &["--msg", "game.Ping", "{}", "--rpc"]);
    assert!(!ok && err.contains("use bee call"), "{err}");
    let (ok, out, err) = frame_cli(
        &layout,
        "call",
        &["--msg", "game.Ping", r#"{"seq": 1}"#, "--rpc"],
    );
    assert!(ok && out.contains("\"seq\":1"), "{out}{err}");
}
