//! The example as a user runs it: the `greeter` binary started twice (nodes `hall` and
//! `bank`, from the shipped `config/*.toml` on free loopback ports), called from an
//! in-process client node through the public cluster API:
//!
//! - `"lua"` commands with typed arguments on both nodes;
//! - a `"text"` call to `hall` whose handler calls `bank` and then updates its state;
//! - errors matched on their [`CallError`] variant: wrong arity, a handler's own error,
//!   and a node that is not running.
//!
//! The node processes are killed when the test ends (pass or fail); every wait is
//! bounded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bee_cluster::{Cluster, ClusterSettings};
use bee_codec::kkt::KktFrame;
use bee_codec::seri::{self, Value};
use bee_example_greeter::proto::{Greet, Welcome};
use bee_registry::{ClusterConfig, Registry};
use bee_runtime::{CallError, Node};
use bee_testkit::{free_port, NodeProcess, Start, TempDir};
use bytes::Bytes;
use prost::{Message, Name};

const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config");

/// The `greeter` binary, built if missing or stale.
fn greeter_bin() -> PathBuf {
    bee_testkit::workspace_bin(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        "bee-example-greeter",
        "greeter",
    )
}

/// Start `greeter run CONFIG` and wait (at most 30 s) until it listens.
fn start_node(bin: &Path, config: &Path) -> NodeProcess {
    let mut cmd = Command::new(bin);
    cmd.arg("run").arg(config).env("BEE_LOG", "warn");
    let name = config
        .file_stem()
        .and_then(|n| n.to_str())
        .unwrap_or("greeter");
    NodeProcess::start(cmd, Start::listening(name))
}

/// A `"text"` request as a client sends it: `("text", game frame of msg)`.
fn text_request(msg: &Greet) -> Bytes {
    let frame = bee_runtime::text::frame_of(msg.uid as _, msg);
    let frame = bee_runtime::text::encode_frame(&frame).expect("frame encodes");
    seri::pack(&[Value::from("text"), Value::String(frame)]).expect("payload packs")
}

/// The `greeter.Welcome` inside a `"text"` reply (one string: the reply frame).
fn welcome_of(reply: &Bytes) -> Welcome {
    let values = seri::unpack(reply).expect("reply unpacks");
    let [Value::String(frame)] = values.as_slice() else {
        panic!("a text reply is one string, got {values:?}");
    };
    let frame = KktFrame::decode(frame).expect("reply is a game frame");
    assert_eq!(frame.name_str().expect("name"), Welcome::full_name());
    Welcome::decode(frame.body.as_ref()).expect("body decodes")
}

/// Expect a `CallError::Remote` from `node` whose text contains `needle`.
fn assert_remote<T: std::fmt::Debug>(r: Result<T, CallError>, node: &str, needle: &str) {
    match r {
        Err(CallError::Remote {
            node: from,
            message,
        }) => {
            assert_eq!(from, node, "error from the wrong node: {message}");
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
        other => panic!("expected CallError::Remote from {node}, got {other:?}"),
    }
}

#[test]
fn greeter_calls_the_wallet_on_the_other_node() {
    let bin = greeter_bin();
    let dir = TempDir::new("greeter");
    // The shipped node configs, unchanged; a cluster config with free ports, plus a node
    // `down` that nobody serves.
    for node in ["hall", "bank"] {
        std::fs::copy(
            Path::new(CONFIG).join(format!("{node}.toml")),
            dir.path().join(format!("{node}.toml")),
        )
        .expect("copy node config");
    }
    let cluster_file = dir.path().join("cluster.lua");
    std::fs::write(
        &cluster_file,
        format!(
            "__nowaiting = true\nhall = \"127.0.0.1:{}\"\nbank = \"127.0.0.1:{}\"\ndown = \"127.0.0.1:{}\"\n",
            free_port(),
            free_port(),
            free_port()
        ),
    )
    .expect("write cluster.lua");
    let bank = start_node(&bin, &dir.path().join("bank.toml"));
    let _hall = start_node(&bin, &dir.path().join("hall.toml"));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        tokio::time::timeout(Duration::from_secs(60), scenario(&cluster_file, bank))
            .await
            .expect("the scenario finished within 60 s")
    });
}

async fn scenario(cluster_file: &Path, bank: NodeProcess) {
    // An in-process client node, not listening: it only calls.
    let client = Node::new("greeter-test-client", Default::default());
    let mut settings = ClusterSettings::default();
    settings.channel.call_timeout = Duration::from_secs(10);
    settings.wait_for_node = Some(Duration::ZERO);
    let config = ClusterConfig::load(cluster_file).expect("cluster config");
    let c = Cluster::start(&client, Registry::new(config), settings);
    const UID: i64 = 10076447;

    // "lua" commands with typed arguments, on each node.
    let hello: String = c
        .call_lua("hall", "@greeter", "hello", "Ann")
        .await
        .unwrap();
    assert_eq!(hello, "hello, Ann");
    let coins: i64 = c
        .call_lua("bank", "@wallet", "deposit", (UID, 250))
        .await
        .unwrap();
    assert_eq!(coins, 250);
    let coins: i64 = c
        .call_lua("bank", "@wallet", "deposit", (UID, 50))
        .await
        .unwrap();
    assert_eq!(coins, 300);

    // "text": hall's handler asks bank's wallet, then counts the visit in its state.
    let greet = Greet {
        uid: UID,
        name: "Ann".into(),
    };
    for visit in 1..=2 {
        let reply = c
            .call("hall", "@greeter", text_request(&greet))
            .await
            .unwrap();
        let w = welcome_of(&reply);
        assert_eq!(
            (w.uid, w.text.as_str(), w.visits, w.coins),
            (UID, "welcome, Ann", visit, 300)
        );
    }
    let other = Greet {
        uid: 7,
        name: "Bo".into(),
    };
    let w = welcome_of(
        &c.call("hall", "@greeter", text_request(&other))
            .await
            .unwrap(),
    );
    assert_eq!((w.uid, w.visits, w.coins), (7, 1, 0));
    let visits: u32 = c.call_lua("hall", "@greeter", "visits", UID).await.unwrap();
    assert_eq!(visits, 2);

    // Errors, matched on their variant. Wrong arity and wrong type name the signature.
    let r: Result<String, _> = c.call_lua("hall", "@greeter", "hello", ("Ann", 2)).await;
    assert_remote(r, "hall", "command hello takes (string), got 2 values");
    let r: Result<String, _> = c.call_lua("hall", "@greeter", "hello", 42).await;
    assert_remote(r, "hall", "command hello takes (string)");
    // A handler's own error, in its own words.
    let r: Result<i64, _> = c.call_lua("bank", "@wallet", "deposit", (UID, -5)).await;
    assert_remote(r, "bank", "the amount must be positive");
    let r: Result<i64, _> = c.call_lua("bank", "@wallet", "withdraw", (UID, 5)).await;
    assert_remote(r, "bank", "unknown command \"withdraw\"");
    // The balance is untouched by the failed calls.
    let coins: i64 = c.call_lua("bank", "@wallet", "balance", UID).await.unwrap();
    assert_eq!(coins, 300);
    // A node in the config that nobody serves.
    let r: Result<String, _> = c.call_lua("down", "@greeter", "hello", ("Ann",)).await;
    match r {
        Err(e) => assert!(e.is_node_down(), "expected a node-down error, got {e:?}"),
        Ok(v) => panic!("a call to a node nobody serves answered {v:?}"),
    }

    // The bank node stops: the greeter's call to it fails, and that failure reaches the
    // client as hall's error; hall itself keeps serving.
    drop(bank);
    let r = c.call("hall", "@greeter", text_request(&greet)).await;
    assert_remote(r, "hall", "bank");
    let hello: String = c
        .call_lua("hall", "@greeter", "hello", "Ann")
        .await
        .unwrap();
    assert_eq!(hello, "hello, Ann");

    client.shutdown();
}
