//! docs/native.md §9 ("A team's layout, step by step"), run as written: the test takes
//! the doc's `cluster.lua` and `shop_4.toml` blocks, swaps in free ports, the directory
//! of the built modules and a temporary log directory, starts the node with `bee run`,
//! and checks what the doc says happens: the logger (loaded first, configured by its
//! `[env]` keys) writes lines, the C++ shops reach CServiceProxy through the handle in
//! their parameter, and `shop_master` picks shop `1 + uid % 2`.

use std::path::{Path, PathBuf};

use bee_tests::{bee_cli, cpp_modules, free_port, BeeProcess, TempDir};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The fenced block that follows the marker `<!-- run by tests/tests/native_layout.rs:
/// NAME -->` in docs/native.md.
fn doc_block(doc: &str, name: &str) -> String {
    let marker = format!("<!-- run by tests/tests/native_layout.rs: {name} -->");
    let at = doc
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/native.md has no {marker}"));
    let rest = &doc[at + marker.len()..];
    let open = rest.find("```").expect("a fenced block after the marker");
    let body = &rest[open..];
    let body = &body[body.find('\n').expect("fence line") + 1..];
    let close = body.find("\n```").expect("the block's closing fence");
    body[..=close].to_string()
}

fn replace(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the doc's block no longer has {from:?}:\n{text}"
    );
    text.replace(from, to)
}

/// `bee call … shop_master --proto game.proto --msg game.ShopBuy … --rpc` for `uid`;
/// returns the reply JSON.
fn buy(cluster: &Path, uid: u64) -> String {
    let proto = root().join("proto/game.proto");
    let json = format!("{{\"uid\": {uid}, \"item_id\": 12, \"count\": 2}}");
    let uid_arg = uid.to_string();
    let (ok, out, err) = bee_cli(&[
        "call",
        "--cluster",
        &cluster.to_string_lossy(),
        "shop_4",
        "shop_master",
        "--proto",
        &proto.to_string_lossy(),
        "--msg",
        "game.ShopBuy",
        &json,
        "--uid",
        &uid_arg,
        "--rpc",
    ]);
    assert!(ok, "{out}{err}");
    out
}

#[test]
fn the_docs_team_layout_runs_as_written() {
    let doc = std::fs::read_to_string(root().join("docs/native.md")).expect("docs/native.md");
    let dir = TempDir::new("native-layout");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();

    // The modules where the doc's config looks for them: cservice/ beside the config.
    let modules = cpp_modules();
    std::os::unix::fs::symlink(&modules, dir.path().join("cservice")).unwrap();

    let cluster = replace(
        &replace(
            &doc_block(&doc, "cluster.lua"),
            "127.0.0.1:2528",
            &format!("127.0.0.1:{}", free_port()),
        ),
        "127.0.0.1:2531",
        &format!("127.0.0.1:{}", free_port()),
    );
    let cluster_path = dir.path().join("cluster.lua");
    std::fs::write(&cluster_path, cluster).unwrap();
    let node = replace(
        &doc_block(&doc, "shop_4.toml"),
        "\"/var/log/game\"",
        &format!("{:?}", logs.to_string_lossy()),
    );
    let node_path = dir.path().join("shop_4.toml");
    std::fs::write(&node_path, &node).unwrap();
    let _n = BeeProcess::start("shop_4", &node_path);

    // shop_master picks shop 1 + uid % 2; each shop counts its own orders.
    let r = buy(&cluster_path, 1001);
    assert_eq!(
        r,
        "{\"uid\":1001,\"item_id\":12,\"count\":2,\"order_id\":1,\"handled_by\":\"shop_4/shop2\"}\n"
    );
    let r = buy(&cluster_path, 1002);
    assert!(
        r.contains("\"order_id\":1,\"handled_by\":\"shop_4/shop1\""),
        "{r}"
    );
    let r = buy(&cluster_path, 7);
    assert!(
        r.contains("\"order_id\":2,\"handled_by\":\"shop_4/shop2\""),
        "{r}"
    );

    // The logger, configured by [env], writes what it is sent to <log_dir>/<log_name>.log.
    let (ok, out, err) = bee_cli(&[
        "send",
        "--cluster",
        &cluster_path.to_string_lossy(),
        "shop_4",
        "logger",
        "text",
        "BEEW stock low",
    ]);
    assert!(ok, "{out}{err}");
    let log = logs.join("shop_4.log");
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("W stock low") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let line = text
        .lines()
        .find(|l| l.ends_with("] W stock low"))
        .unwrap_or_else(|| panic!("no logger line in {}: {text:?}", log.display()));
    assert!(line.starts_with("[:"), "{line}");

    // Without the logger's keys, the node does not start and says which key is missing.
    // (A handover socket of its own: the running node answers on the default one.)
    let broken = replace(
        &replace(&node, "logbufsecs = 0", ""),
        "cluster = \"cluster.lua\"\n",
        "cluster = \"cluster.lua\"\nhandover_socket = \"broken.sock\"\n",
    );
    let broken_path = dir.path().join("broken.toml");
    std::fs::write(&broken_path, broken).unwrap();
    let (ok, _out, err) = bee_cli(&["run", &broken_path.to_string_lossy()]);
    assert!(!ok, "started without logbufsecs");
    assert!(err.contains("logger_init(\"\") failed"), "{err}");
}
