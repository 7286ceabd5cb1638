//! Issue 4, native services between real nodes: a native service (bytes in, bytes out)
//! sends and rpc_calls through its node's CServiceProxy to Lua-style services and to
//! other native services on other nodes — `bee` processes and in-process nodes
//! listening on loopback — and rpc_call's failures: timeout, remote error, remote panic.

mod dispatch_common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bee_codec::proxy::ProxyFrame;
use bee_codec::seri::Value;
use bee_dispatch::native::{NativeEndpoint, RpcError};
use bee_dispatch::shard::worker_for;
use bee_proto::game::{
    ActivityProgress, ActivityState, GetUserInfo, LoginReq, LoginResp, Ping, Pong, ShopBuy,
    ShopReceipt, UserInfo,
};
use bee_tests::Layout;
use bytes::Bytes;
use dispatch_common::*;
use futures::future::join_all;

const UID: u64 = 10076447;
const RPC: Duration = Duration::from_secs(5);

async fn logins(c: &bee_dispatch::Cluster) -> i64 {
    let r = c
        .call(
            "lpersistence_3",
            "lpersistence",
            lua(&[Value::from("logins")]),
        )
        .await
        .unwrap();
    values(&r)[0].as_int().unwrap()
}

fn rpc_ok(r: Result<Bytes, RpcError>) -> Bytes {
    r.unwrap_or_else(|e| panic!("rpc_call failed: {e}"))
}

/// native → remote send through CServiceProxy: a game frame reaches `lpersistence` on a
/// `bee` process, from an in-process native service and from the lobby's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_send_via_cservice_proxy_reaches_remote() {
    let layout = Layout::new(&["lobby", "lpersistence_3", "tnative"]);
    let _p = start_demo(&layout, "lpersistence_3");
    let _l = start_demo(&layout, "lobby");
    let (node, c) = listening_node(&layout, "tnative").await;
    let proxy = start_proxy(&node);
    let (ep, _) = start_test_native(&node, proxy, "alpha");

    let before = logins(&c).await;
    let login = LoginReq {
        uid: UID,
        token: "native".into(),
        device: "c++".into(),
    };
    ep.send("lpersistence_3", "lpersistence", &frame(UID, &login))
        .await
        .expect("native send");
    assert!(
        eventually(Duration::from_secs(5), || async {
            logins(&c).await == before + 1
        })
        .await,
        "the native LoginReq did not reach lpersistence"
    );

    // The C ABI path: the native side builds the proxy frame itself.
    let raw = ProxyFrame::encode(b"lpersistence_3", b"lpersistence", &frame(UID, &login)).unwrap();
    ep.send_raw(raw).await.expect("send_raw");
    assert!(
        eventually(Duration::from_secs(5), || async {
            logins(&c).await == before + 2
        })
        .await
    );

    // A frame CServiceProxy cannot read is refused with the reason, and the proxy keeps
    // working.
    match ep
        .send_raw(Bytes::from_static(&[0xff, 0xff, 0, 1, b'x']))
        .await
    {
        Err(RpcError::Send(text)) => assert!(text.contains("bad proxy frame"), "{text}"),
        other => panic!("garbage proxy frame: expected a send error, got {other:?}"),
    }
    ep.send("lpersistence_3", "lpersistence", &frame(UID, &login))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            logins(&c).await == before + 3
        })
        .await
    );

    // The lobby's native service does the same from its own node.
    let reply = c
        .call("lobby", "lobby", lua(&[Value::from("native_send")]))
        .await
        .expect("lobby native_send");
    let report = lines(&reply).join("\n");
    assert!(
        report.contains("CServiceProxy") && report.contains("received it"),
        "{report}"
    );
    assert_eq!(logins(&c).await, before + 4);
    node.shutdown();
}

/// native → remote rpc_call, with a `"lua"` and a `"text"` inner message, answered by a
/// Dispatcher on a `bee` process; concurrent calls each get their own reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_rpc_call_remote_lua_and_text() {
    let layout = Layout::new(&["lobby", "lpersistence_3", "tnative"]);
    let _p = start_demo(&layout, "lpersistence_3");
    let _l = start_demo(&layout, "lobby");
    let (node, c) = listening_node(&layout, "tnative").await;
    let proxy = start_proxy(&node);
    let (ep, _) = start_test_native(&node, proxy, "alpha");
    let n = "lpersistence_3";

    let reply = rpc_ok(
        ep.rpc_call(n, "lpersistence", &lua(&[Value::from("ping")]), RPC)
            .await,
    );
    assert_eq!(
        values(&reply),
        vec![
            Value::from("pong"),
            Value::from("lpersistence_3/lpersistence")
        ]
    );

    // "text": the reply is the reply frame's bytes themselves (not packed).
    let reply = rpc_ok(
        ep.rpc_call(
            n,
            "lpersistence",
            &text(frame(UID, &GetUserInfo { uid: UID })),
            RPC,
        )
        .await,
    );
    let (uid, info) = unframe::<UserInfo>(&reply);
    assert_eq!(
        (uid, info.uid, info.nickname.as_str()),
        (UID, UID, "player10076447")
    );
    let login = LoginReq {
        uid: 5,
        token: "rpc".into(),
        device: "native".into(),
    };
    let reply = rpc_ok(
        ep.rpc_call(n, "lpersistence", &text(frame(5, &login)), RPC)
            .await,
    );
    assert_eq!(unframe::<LoginResp>(&reply).1.nickname, "player5");

    // 50 calls in flight at once: every session is answered with its own reply.
    let calls = (0..50u64).map(|seq| {
        let ep = ep.clone();
        async move {
            let r = rpc_ok(
                ep.rpc_call(
                    n,
                    "lpersistence",
                    &text(frame(
                        seq,
                        &Ping {
                            seq,
                            sent_unix_ms: 0,
                        },
                    )),
                    RPC,
                )
                .await,
            );
            let (uid, pong) = unframe::<Pong>(&r);
            assert_eq!(
                (uid, pong.seq),
                (seq, seq),
                "reply matched to the wrong rpc session"
            );
        }
    });
    join_all(calls).await;

    // rpc send: routed by the receiver, no reply to anyone.
    let before = logins(&c).await;
    ep.rpc_send(n, "lpersistence", &text(frame(6, &login)))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            logins(&c).await == before + 1
        })
        .await
    );

    let reply = c
        .call("lobby", "lobby", lua(&[Value::from("native_rpc")]))
        .await
        .expect("lobby native_rpc");
    let report = lines(&reply).join("\n");
    assert!(
        report.contains("rpc_call") && report.contains("game.LoginResp{code=0"),
        "{report}"
    );
    node.shutdown();
}

/// native → native across nodes: an in-process native service sends to and rpc_calls
/// the native `shop` on a `bee` process; two in-process nodes' native services call
/// each other both ways; and the lobby's native service does it from its node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_to_native_send_and_rpc_across_nodes() {
    let layout = Layout::new(&["lobby", "shop_master", "tnative", "tnative2"]);
    let _s = start_demo(&layout, "shop_master");
    let _l = start_demo(&layout, "lobby");
    let (node_a, c) = listening_node(&layout, "tnative").await;
    let (node_b, _) = listening_node(&layout, "tnative2").await;
    let (alpha, alpha_frames) = start_test_native(&node_a, start_proxy(&node_a), "alpha");
    let (beta, beta_frames) = start_test_native(&node_b, start_proxy(&node_b), "beta");

    let orders = |ep: NativeEndpoint| async move {
        let r = rpc_ok(
            ep.rpc_call("shop_master", "shop", &lua(&[Value::from("orders")]), RPC)
                .await,
        );
        values(&r)[0].as_int().expect("orders")
    };
    let before = orders(alpha.clone()).await;
    let buy = ShopBuy {
        uid: UID,
        item_id: 7,
        count: 2,
    };
    alpha
        .send("shop_master", "shop", &frame(UID, &buy))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || orders_is(
            alpha.clone(),
            before + 1
        ))
        .await,
        "the native send did not reach the native shop"
    );
    let reply = rpc_ok(
        alpha
            .rpc_call("shop_master", "shop", &text(frame(UID, &buy)), RPC)
            .await,
    );
    let (_, receipt) = unframe::<ShopReceipt>(&reply);
    assert_eq!(
        (receipt.item_id, receipt.count, receipt.order_id),
        (7, 2, before + 2)
    );
    assert_eq!(receipt.handled_by, "shop_master/shop");

    // In-process native ↔ native, both directions.
    let r = rpc_ok(
        alpha
            .rpc_call("tnative2", "beta", &lua(&[Value::from("ping")]), RPC)
            .await,
    );
    assert_eq!(values(&r), vec![Value::from("pong"), Value::from("beta")]);
    let r = rpc_ok(
        beta.rpc_call("tnative", "alpha", &lua(&[Value::from("ping")]), RPC)
            .await,
    );
    assert_eq!(values(&r), vec![Value::from("pong"), Value::from("alpha")]);
    alpha
        .send("tnative2", "beta", &frame(1, &Ping::default()))
        .await
        .unwrap();
    beta.send("tnative", "alpha", &frame(2, &Ping::default()))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            beta_frames.load(Ordering::SeqCst) == 1 && alpha_frames.load(Ordering::SeqCst) == 1
        })
        .await
    );

    let reply = c
        .call("lobby", "lobby", lua(&[Value::from("native_native")]))
        .await
        .expect("lobby native_native");
    let report = lines(&reply).join("\n");
    assert!(
        report.contains("native → native") && report.contains("game.ShopReceipt"),
        "{report}"
    );
    node_a.shutdown();
    node_b.shutdown();
}

async fn orders_is(ep: NativeEndpoint, want: i64) -> bool {
    let r = rpc_ok(
        ep.rpc_call("shop_master", "shop", &lua(&[Value::from("orders")]), RPC)
            .await,
    );
    values(&r)[0].as_int() == Some(want)
}

/// rpc_call to a service that takes the request but never answers it → Timeout, after
/// about the time given; likewise when the reply cannot find its way back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_call_times_out_when_no_reply_comes() {
    let layout = Layout::new(&["lpersistence_3", "tnative"]);
    let _p = start_demo(&layout, "lpersistence_3");
    let (node, c) = listening_node(&layout, "tnative").await;
    let proxy = start_proxy(&node);
    let (ep, _) = start_test_native(&node, proxy, "alpha");
    let wait = Duration::from_millis(400);

    // `sink` counts the envelope as a push and never replies.
    let started = Instant::now();
    let r = ep
        .rpc_call("lpersistence_3", "sink", &lua(&[Value::from("ping")]), wait)
        .await;
    let took = started.elapsed();
    assert_eq!(r, Err(RpcError::Timeout(wait)));
    assert!(
        took >= wait && took < wait + Duration::from_secs(2),
        "timed out after {took:?}"
    );
    let count = values(
        &c.call("lpersistence_3", "sink", pack(&[Value::from("count")]))
            .await
            .unwrap(),
    );
    assert_eq!(
        count,
        vec![Value::Integer(1)],
        "the request did arrive; only the reply is missing"
    );

    // The reply path is broken: the caller's service name is registered nowhere, so the
    // reply envelope is dropped at the caller's node.
    let ghost = NativeEndpoint::new(&node, proxy, "ghost");
    let r = ghost
        .rpc_call(
            "lpersistence_3",
            "lpersistence",
            &lua(&[Value::from("ping")]),
            wait,
        )
        .await;
    assert_eq!(r, Err(RpcError::Timeout(wait)));

    // The endpoint is fine afterwards.
    let r = rpc_ok(
        ep.rpc_call(
            "lpersistence_3",
            "lpersistence",
            &lua(&[Value::from("ping")]),
            RPC,
        )
        .await,
    );
    assert_eq!(values(&r)[0], Value::from("pong"));
    node.shutdown();
}

/// rpc_call whose remote handler fails → RpcError::Remote with the handler's text:
/// Dispatchers (on a `bee` process and in-process) and a native handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_call_remote_failure_is_remote_error() {
    let layout = Layout::new(&["lpersistence_3", "tnative", "tnative2"]);
    let _p = start_demo(&layout, "lpersistence_3");
    let (node_a, _) = listening_node(&layout, "tnative").await;
    let (node_b, cb) = listening_node(&layout, "tnative2").await;
    let (ep, _) = start_test_native(&node_a, start_proxy(&node_a), "alpha");
    start_test_native(&node_b, start_proxy(&node_b), "beta");
    cb.register("faulty", node_b.spawn("faulty", faulty_service()))
        .unwrap();

    let r = ep
        .rpc_call(
            "lpersistence_3",
            "lpersistence",
            &lua(&[Value::from("nosuchcmd")]),
            RPC,
        )
        .await;
    match r {
        Err(RpcError::Remote(t)) => assert!(
            t.contains("unknown command \"nosuchcmd\"") && t.contains("known: logins, ping"),
            "{t}"
        ),
        other => panic!("expected Remote, got {other:?}"),
    }
    let r = ep
        .rpc_call(
            "tnative2",
            "faulty",
            &lua(&[Value::from("fail"), Value::from("no coins left")]),
            RPC,
        )
        .await;
    assert_eq!(r, Err(RpcError::Remote("no coins left".into())));
    let r = ep
        .rpc_call(
            "tnative2",
            "faulty",
            &text(frame(
                1,
                &Ping {
                    seq: 66,
                    sent_unix_ms: 0,
                },
            )),
            RPC,
        )
        .await;
    assert_eq!(r, Err(RpcError::Remote("Ping 66 refused".into())));
    let r = ep
        .rpc_call("tnative2", "beta", &lua(&[Value::from("what")]), RPC)
        .await;
    assert_eq!(
        r,
        Err(RpcError::Remote(
            "beta answers (\"lua\", \"ping\") only".into()
        ))
    );
    node_a.shutdown();
    node_b.shutdown();
}

/// rpc_call whose remote handler panics → RpcError::Remote with the panic text, at once
/// (not a timeout); the remote service keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_call_remote_panic_is_remote_error() {
    let layout = Layout::new(&["tnative", "tnative2"]);
    let (node_a, _) = listening_node(&layout, "tnative").await;
    let (node_b, cb) = listening_node(&layout, "tnative2").await;
    let (ep, _) = start_test_native(&node_a, start_proxy(&node_a), "alpha");
    start_test_native(&node_b, start_proxy(&node_b), "beta");
    cb.register("faulty", node_b.spawn("faulty", faulty_service()))
        .unwrap();

    let started = Instant::now();
    let r = ep
        .rpc_call(
            "tnative2",
            "faulty",
            &lua(&[Value::from("panic"), Value::from("kaboom 42")]),
            RPC,
        )
        .await;
    match r {
        Err(RpcError::Remote(t)) => assert!(t.contains("kaboom 42"), "{t}"),
        other => panic!("expected Remote with the panic text, got {other:?}"),
    }
    assert!(
        started.elapsed() < RPC / 2,
        "answered at once, not by timeout"
    );
    let r = ep
        .rpc_call(
            "tnative2",
            "faulty",
            &text(frame(
                1,
                &Ping {
                    seq: 13,
                    sent_unix_ms: 0,
                },
            )),
            RPC,
        )
        .await;
    assert!(
        matches!(&r, Err(RpcError::Remote(t)) if t.contains("Ping 13 is unlucky")),
        "{r:?}"
    );
    let r = rpc_ok(
        ep.rpc_call("tnative2", "faulty", &lua(&[Value::from("ping")]), RPC)
            .await,
    );
    assert_eq!(values(&r)[0], Value::from("pong"));

    // A native handler that panics: same contract.
    let r = ep
        .rpc_call("tnative2", "beta", &lua(&[Value::from("panic")]), RPC)
        .await;
    assert!(
        matches!(&r, Err(RpcError::Remote(t)) if t.contains("native beta panicked on request")),
        "{r:?}"
    );
    let r = rpc_ok(
        ep.rpc_call("tnative2", "beta", &lua(&[Value::from("ping")]), RPC)
            .await,
    );
    assert_eq!(values(&r), vec![Value::from("pong"), Value::from("beta")]);
    node_a.shutdown();
    node_b.shutdown();
}

/// native → a uid-sharded master: an rpc_call to `activity_master` (a `bee` process) is
/// sharded by its inner message's uid, and the worker answers the native caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_rpc_call_to_sharded_master() {
    let layout = Layout::new(&["activity_master", "tnative"]);
    let _a = start_demo(&layout, "activity_master");
    let (node, c) = listening_node(&layout, "tnative").await;
    let (ep, _) = start_test_native(&node, start_proxy(&node), "alpha");

    for uid in [UID, 1, 2, 3, 999_999_937] {
        let msg = ActivityProgress {
            uid,
            activity_id: 4,
            delta: 5,
        };
        for round in 1..=2i64 {
            let r = rpc_ok(
                ep.rpc_call(
                    "activity_master",
                    "activity_master",
                    &text(frame(uid, &msg)),
                    RPC,
                )
                .await,
            );
            let (_, state) = unframe::<ActivityState>(&r);
            assert_eq!(
                (state.uid, state.worker),
                (uid, worker_for(uid, 8) as i32),
                "uid {uid}"
            );
            assert_eq!(
                state.progress,
                5 * round,
                "uid {uid}: both rounds on one worker"
            );
        }
        // "lua" inner message: sharded by its uid argument, same worker, same state.
        let inner = lua(&[
            Value::from("progress"),
            Value::Integer(uid as i64),
            Value::Integer(4),
        ]);
        let r = rpc_ok(
            ep.rpc_call("activity_master", "activity_master", &inner, RPC)
                .await,
        );
        assert_eq!(
            values(&r),
            vec![
                Value::Integer(10),
                Value::Integer(worker_for(uid, 8) as i64)
            ]
        );
    }
    // A Lua-side caller sees the same state.
    let r = c
        .call(
            "activity_master",
            "activity_master",
            lua(&[
                Value::from("progress"),
                Value::Integer(UID as i64),
                Value::Integer(4),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(values(&r)[0], Value::Integer(10));
    node.shutdown();
}

/// A native send or rpc_call that cannot leave the node (unknown node, node in the
/// config but not up) fails at once with CServiceProxy's reason, not after the rpc
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_send_to_unreachable_node_fails_fast() {
    // `ghostnode` is in the config but nothing listens on its port.
    let layout = Layout::new(&["tnative", "ghostnode"]);
    let (node, _c) = listening_node(&layout, "tnative").await;
    let proxy = start_proxy(&node);
    let (ep, _) = start_test_native(&node, proxy, "alpha");
    let long = Duration::from_secs(20);

    for target in ["ghostnode", "nosuchnode"] {
        let started = Instant::now();
        let r = ep
            .rpc_call(target, "lpersistence", &lua(&[Value::from("ping")]), long)
            .await;
        let took = started.elapsed();
        match r {
            Err(RpcError::Send(text)) => assert!(
                text.contains(target),
                "the error should name the node {target}: {text}"
            ),
            other => panic!("rpc_call to {target}: expected a send error, got {other:?}"),
        }
        assert!(
            took < Duration::from_secs(5),
            "{target}: failed only after {took:?}"
        );
        let r = ep.send(target, "lpersistence", &[0u8; 16]).await;
        assert!(
            matches!(r, Err(RpcError::Send(_))),
            "send to {target}: {r:?}"
        );
    }
    node.shutdown();
}
