//! Errors, between real nodes: what a caller reads when a message cannot be
//! routed or decoded, or when the handler fails or panics — and that the service keeps
//! answering afterwards.
//!
//! Routing and decoding errors go to the demo's `lpersistence` on a `bee` process;
//! handler failures to a test service on an in-process node listening on loopback,
//! called from another in-process node and from the `bee call` command line.

mod dispatch_common;

use bee_cluster::Cluster;
use bee_codec::seri::Value;
use bee_proto::game::{GetUserInfo, Ping, Pong, ShopBuy, UserInfo};
use bee_runtime::CallError;
use bee_tests::{bee_cli, BeeProcess, Layout};
use bytes::Bytes;
use dispatch_common::*;

const N: &str = "lpersistence_3";

/// A `bee` process with lpersistence, and a client.
fn persistence() -> (Layout, BeeProcess) {
    let layout = Layout::new(&[N]);
    let p = start_demo(&layout, N);
    (layout, p)
}

/// The error text of a call that must fail.
async fn call_err(c: &Cluster, node: &str, service: &str, payload: Bytes) -> String {
    match c.call(node, service, payload).await {
        Ok(r) => panic!("call should have failed, got {:?}", values(&r)),
        Err(e @ CallError::Remote { .. }) => e.remote_text(),
        Err(other) => panic!("expected the remote's error text, got {other:?}"),
    }
}

/// The service still answers normally.
async fn still_serves(c: &Cluster) {
    let r = c
        .call(N, "lpersistence", lua(&[Value::from("ping")]))
        .await
        .expect("ping after an error");
    assert_eq!(values(&r)[0], Value::from("pong"));
    let r = c
        .call(N, "lpersistence", text(frame(9, &GetUserInfo { uid: 9 })))
        .await
        .expect("text after an error");
    assert_eq!(unframe::<UserInfo>(&reply_frame(&r)).1.uid, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_subtype_is_named() {
    let (layout, _p) = persistence();
    let (_node, c) = layout.client(CALL_TIMEOUT);
    let e = call_err(
        &c,
        N,
        "lpersistence",
        pack(&[Value::from("json"), Value::from("{}")]),
    )
    .await;
    assert_eq!(
        e,
        "unknown sub-type \"json\" (this service takes \"lua\" and \"text\")"
    );
    let e = call_err(
        &c,
        N,
        "lpersistence",
        pack(&[Value::Integer(5), Value::from("ping")]),
    )
    .await;
    assert!(
        e.contains("message has no sub-type: first value is integer"),
        "{e}"
    );
    let e = call_err(&c, N, "lpersistence", pack(&[])).await;
    assert!(e.contains("message has no sub-type"), "{e}");
    // Not even skynet.pack bytes.
    let e = call_err(
        &c,
        N,
        "lpersistence",
        Bytes::from_static(&[0xff, 0x00, 0x13]),
    )
    .await;
    assert!(!e.is_empty(), "the seri error is reported");
    still_serves(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_command_lists_known_ones() {
    let (layout, _p) = persistence();
    let (_node, c) = layout.client(CALL_TIMEOUT);
    let e = call_err(
        &c,
        N,
        "lpersistence",
        lua(&[Value::from("nosuchcmd"), Value::Integer(1)]),
    )
    .await;
    assert_eq!(
        e,
        "unknown command \"nosuchcmd\" for service lpersistence (known: logins, ping)"
    );
    let e = call_err(&c, N, "lpersistence", lua(&[])).await;
    assert!(e.contains("lua message has no command name"), "{e}");
    let e = call_err(&c, N, "lpersistence", lua(&[Value::Integer(3)])).await;
    assert!(
        e.contains("lua command name must be a string, got integer"),
        "{e}"
    );
    still_serves(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_message_name_lists_handled_ones() {
    let (layout, _p) = persistence();
    let (_node, c) = layout.client(CALL_TIMEOUT);
    let e = call_err(&c, N, "lpersistence", text(frame(1, &ShopBuy::default()))).await;
    assert_eq!(
        e,
        "unknown message name \"game.ShopBuy\" for service lpersistence (handles: game.GetUserInfo, game.LoginReq, game.Ping)"
    );
    still_serves(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_string_that_is_not_a_game_frame() {
    let (layout, _p) = persistence();
    let (_node, c) = layout.client(CALL_TIMEOUT);
    let garbage = |b: Vec<u8>| text(Bytes::from(b));
    // Shorter than the four name lengths.
    let e = call_err(&c, N, "lpersistence", garbage(b"garb".to_vec())).await;
    assert!(
        e.starts_with("text message is not a game frame") && e.contains("truncated"),
        "{e}"
    );
    // Name lengths running past the end of the buffer.
    let e = call_err(&c, N, "lpersistence", garbage(vec![0xff; 64])).await;
    assert!(
        e.starts_with("text message is not a game frame") && e.contains("truncated"),
        "{e}"
    );
    // A message name length running past the end (after a complete fixed part).
    let mut f = vec![0u8; 8]; // four empty names
    f.extend_from_slice(&16u32.to_be_bytes()); // sub_type
    f.extend_from_slice(&1i64.to_be_bytes()); // uid
    f.extend_from_slice(&200u16.to_be_bytes()); // name length
    f.push(b'g');
    let e = call_err(&c, N, "lpersistence", garbage(f)).await;
    assert!(e.contains("truncated at name"), "{e}");
    // A message name that is not UTF-8.
    let bad = bee_codec::kkt::KktFrame::new(16, 1, Bytes::from_static(&[0xc3, 0x28]), "")
        .encode()
        .unwrap();
    let e = call_err(&c, N, "lpersistence", text(bad)).await;
    assert!(e.contains("game frame name") && e.contains("UTF-8"), "{e}");
    // "text" without a string.
    let e = call_err(
        &c,
        N,
        "lpersistence",
        pack(&[Value::from("text"), Value::Integer(1)]),
    )
    .await;
    assert!(
        e.contains("text message must carry a game frame string, got integer"),
        "{e}"
    );
    let e = call_err(&c, N, "lpersistence", pack(&[Value::from("text")])).await;
    assert!(e.contains("text message has no game frame"), "{e}");
    still_serves(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn game_frame_with_garbage_protobuf_body() {
    let (layout, _p) = persistence();
    let (_node, c) = layout.client(CALL_TIMEOUT);
    // A well-formed frame for a handled name, whose body is not a GetUserInfo.
    let f = bee_codec::kkt::KktFrame::new(16, 7, "game.GetUserInfo", vec![0xff, 0xff, 0xff, 0xff])
        .encode()
        .unwrap();
    let e = call_err(&c, N, "lpersistence", text(f)).await;
    assert!(
        e.starts_with("game.GetUserInfo body does not decode"),
        "{e}"
    );
    still_serves(&c).await;
}

/// An in-process node `tfaulty` serving [`faulty_service`] as `@faulty`.
async fn faulty_node(layout: &Layout) -> bee_runtime::Node {
    let (node, cluster) = listening_node(layout, "tfaulty").await;
    let addr = node.spawn("faulty", faulty_service());
    cluster.register("faulty", addr).unwrap();
    node
}

async fn pings(c: &Cluster) -> i64 {
    let r = c
        .call("tfaulty", "faulty", lua(&[Value::from("ping")]))
        .await
        .expect("ping");
    values(&r)[1].as_int().unwrap()
}

/// `bee call` against the faulty node, off the async runtime.
async fn cli(layout: &Layout, args: &[&str]) -> (bool, String, String) {
    let cluster = layout.cluster_file().display().to_string();
    let mut argv: Vec<String> = vec![
        "call".into(),
        "--cluster".into(),
        cluster,
        "tfaulty".into(),
        "faulty".into(),
    ];
    argv.extend(args.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        bee_cli(&argv)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_error_reaches_the_caller() {
    let layout = Layout::new(&["tfaulty"]);
    let node = faulty_node(&layout).await;
    let (_client, c) = layout.client(CALL_TIMEOUT);

    let first = pings(&c).await;
    // The handler's own words, unchanged.
    let e = call_err(
        &c,
        "tfaulty",
        "faulty",
        lua(&[Value::from("fail"), Value::from("no coins left")]),
    )
    .await;
    assert_eq!(e, "no coins left");
    let e = call_err(
        &c,
        "tfaulty",
        "faulty",
        text(frame(
            1,
            &Ping {
                seq: 66,
                sent_unix_ms: 0,
            },
        )),
    )
    .await;
    assert_eq!(e, "Ping 66 refused");
    assert_eq!(
        pings(&c).await,
        first + 1,
        "the service kept its state and answers"
    );

    // From another process: the `bee` command line prints it and exits non-zero.
    let (ok, _out, err) = cli(&layout, &["lua", "fail", "out of stock"]).await;
    assert!(!ok, "bee call must fail");
    assert!(err.contains("out of stock"), "stderr: {err}");
    assert_eq!(pings(&c).await, first + 2);
    node.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_panic_reaches_the_caller_and_service_survives() {
    let layout = Layout::new(&["tfaulty"]);
    let node = faulty_node(&layout).await;
    let (_client, c) = layout.client(CALL_TIMEOUT);

    let first = pings(&c).await;
    let e = call_err(
        &c,
        "tfaulty",
        "faulty",
        lua(&[Value::from("panic"), Value::from("kaboom 42")]),
    )
    .await;
    assert_eq!(e, "handler panicked: kaboom 42");
    assert_eq!(
        pings(&c).await,
        first + 1,
        "same service, same state after the panic"
    );
    let e = call_err(
        &c,
        "tfaulty",
        "faulty",
        text(frame(
            1,
            &Ping {
                seq: 13,
                sent_unix_ms: 0,
            },
        )),
    )
    .await;
    assert_eq!(e, "handler panicked: Ping 13 is unlucky");
    let r = c
        .call(
            "tfaulty",
            "faulty",
            text(frame(
                1,
                &Ping {
                    seq: 14,
                    sent_unix_ms: 0,
                },
            )),
        )
        .await
        .unwrap();
    assert_eq!(
        unframe::<Pong>(&reply_frame(&r)).1.served_by,
        "tfaulty/faulty"
    );

    // A pushed message that panics is logged; the service goes on.
    c.send(
        "tfaulty",
        "faulty",
        lua(&[Value::from("panic"), Value::from("pushed")]),
    )
    .await
    .unwrap();
    let (ok, _out, err) = cli(&layout, &["lua", "panic", "from the command line"]).await;
    assert!(!ok, "bee call must fail");
    assert!(
        err.contains("handler panicked: from the command line"),
        "stderr: {err}"
    );
    assert_eq!(pings(&c).await, first + 3);
    node.shutdown();
}
