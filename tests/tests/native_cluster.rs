//! Native services between real nodes, in the game team's frame (`bee_codec::kkt`): a
//! native service (frames in, frames out, as the team's C++) sends and rpc_calls through
//! its node's CServiceProxy to Lua-style services and to other native services on other
//! nodes — `bee-demo` processes and in-process nodes listening on loopback — and the
//! failures: timeouts, unreachable nodes, frames that cannot be parsed.

mod dispatch_common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bee_cluster::native::{NativeEndpoint, RpcError};
use bee_codec::kkt::{KktFrame, SUBTYPE_RPC_CLIENT};
use bee_codec::seri::Value;
use bee_proto::game::{
    ActivityProgress, ActivityState, GetUserInfo, LoginReq, Ping, Pong, ShopBuy, ShopReceipt,
    UserInfo,
};
use bee_runtime::service::{ptype, Message};
use bee_runtime::shard::worker_for;
use bee_runtime::text::frame_of;
use bee_tests::Layout;
use dispatch_common::*;
use futures::future::join_all;

const UID: i64 = 10076447;
const RPC: Duration = Duration::from_secs(5);

async fn logins(c: &bee_cluster::Cluster) -> i64 {
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

fn ping(seq: u64) -> Ping {
    Ping {
        seq,
        sent_unix_ms: 0,
    }
}

async fn rpc<M: prost::Message + prost::Name + Default>(
    ep: &NativeEndpoint,
    node: &str,
    service: &str,
    request: KktFrame,
) -> (KktFrame, M) {
    let reply = ep
        .rpc_call(node, service, request, RPC)
        .await
        .unwrap_or_else(|e| panic!("rpc_call to {node}/{service} failed: {e}"));
    let m = bee_demo::open::<M>(&reply).expect("reply message");
    (reply, m)
}

/// native → remote send through CServiceProxy: a frame reaches `lpersistence` on a
/// `bee-demo` process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_send_via_cservice_proxy_reaches_remote() {
    let layout = Layout::new(&["lpersistence_3", "tnative"]);
    let _p = start_demo(&layout, "lpersistence_3");
    let (node, c) = listening_node(&layout, "tnative").await;
    let proxy = start_proxy(&node);
    let (ep, _) = start_test_native(&node, proxy, "alpha");

    let before = logins(&c).await;
    let login = LoginReq {
        uid: UID as u64,
        token: "native".into(),
        device: "c++".into(),
    };
    for _ in 0..3 {
        ep.send("lpersistence_3", "lpersistence", frame_of(UID, &login))
            .await
            .expect("send through CServiceProxy");
    }
    let c2 = c.clone();
    assert!(
        eventually(Duration::from_secs(3), || {
            let c = c2.clone();
            async move { logins(&c).await == before + 3 }
        })
        .await,
        "the three LoginReq frames reached lpersistence"
    );
}

/// native → remote rpc_call answered by a Lua-style service (a Dispatcher behind
/// RpcServer): the reply is sub_type 17 with all names empty, uid, roomid and session
/// copied; concurrent calls each get their own reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_rpc_call_to_lua_style_service() {
    let layout = Layout::new(&["lpersistence_3", "tnative"]);
    let _p = start_demo(&layout, "lpersistence_3");
    let (node, _c) = listening_node(&layout, "tnative").await;
    let proxy = start_proxy(&node);
    let (ep, _) = start_test_native(&node, proxy, "alpha");

    let request = frame_of(UID, &GetUserInfo { uid: UID as u64 }).roomid(77);
    let (reply, info) = rpc::<UserInfo>(&ep, "lpersistence_3", "lpersistence", request).await;
    assert_eq!(info.uid, UID as u64);
    assert_eq!(reply.sub_type, SUBTYPE_RPC_CLIENT);
    assert_eq!((reply.uid, reply.roomid), (UID, 77));
    assert!(reply.session > 0);
    for name in [
        &reply.remote_node,
        &reply.remote_service,
        &reply.source_node,
        &reply.source_service,
    ] {
        assert!(
            name.is_empty(),
            "a Lua-style reply carries no names: {reply:?}"
        );
    }

    let calls = (0..32).map(|seq| {
        let ep = ep.clone();
        async move {
            let (_, pong) = rpc::<Pong>(
                &ep,
                "lpersistence_3",
                "lpersistence",
                frame_of(UID, &ping(seq)),
            )
            .await;
            (seq, pong.seq)
        }
    });
    for (sent, got) in join_all(calls).await {
        assert_eq!(sent, got, "each rpc_call got its own reply");
    }
}

/// native → native across nodes: two in-process nodes' native services send to and
/// rpc_call each other (replies have the names swapped, roomid 0); and the native
/// `shop` on a `bee-demo` process, reached through its master (the team's Lua → C++
/// redirect) and directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_to_native_send_and_rpc_across_nodes() {
    let layout = Layout::new(&["tn1", "tn2", "shop_master"]);
    let _s = start_demo(&layout, "shop_master");
    let (n1, _c1) = listening_node(&layout, "tn1").await;
    let (n2, _c2) = listening_node(&layout, "tn2").await;
    let (alpha, _) = start_test_native(&n1, start_proxy(&n1), "alpha");
    let (beta, beta_frames) = start_test_native(&n2, start_proxy(&n2), "beta");

    let (reply, pong) = rpc::<Pong>(&alpha, "tn2", "beta", frame_of(UID, &ping(5)).roomid(9)).await;
    assert_eq!((pong.seq, pong.served_by.as_str()), (5, "beta"));
    assert_eq!(reply.sub_type, SUBTYPE_RPC_CLIENT);
    assert_eq!(reply.roomid, 0, "a native reply has roomid 0");
    assert_eq!(
        (&reply.remote_node[..], &reply.remote_service[..]),
        (&b"tn1"[..], &b"alpha"[..]),
        "a native reply's remote is the caller"
    );
    assert_eq!(
        (&reply.source_node[..], &reply.source_service[..]),
        (&b"tn2"[..], &b"beta"[..])
    );
    let (_, pong) = rpc::<Pong>(&beta, "tn1", "alpha", frame_of(UID, &ping(6))).await;
    assert_eq!(pong.served_by, "alpha");

    let before = beta_frames.load(Ordering::SeqCst);
    alpha
        .send("tn2", "beta", frame_of(UID, &ShopBuy::default()))
        .await
        .unwrap();
    let frames = beta_frames.clone();
    assert!(
        eventually(Duration::from_secs(3), || {
            let f = frames.clone();
            async move { f.load(Ordering::SeqCst) > before }
        })
        .await,
        "beta got the one-way frame"
    );

    let buy = ShopBuy {
        uid: UID as u64,
        item_id: 1001,
        count: 2,
    };
    let (_, direct) = rpc::<ShopReceipt>(&alpha, "shop_master", "shop", frame_of(UID, &buy)).await;
    let (_, via_master) =
        rpc::<ShopReceipt>(&alpha, "shop_master", "shop_master", frame_of(UID, &buy)).await;
    assert_eq!(via_master.order_id, direct.order_id + 1);
    assert_eq!(via_master.handled_by, "shop_master/shop");
}

/// An rpc_call that gets no reply ends in Timeout after about the time given: no
/// handler for the message, a handler that panics (the service keeps answering), a
/// service that does not exist on the remote node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_call_times_out_when_no_reply_comes() {
    let layout = Layout::new(&["lpersistence_3", "tn1", "tn2"]);
    let _p = start_demo(&layout, "lpersistence_3");
    let (n1, _c1) = listening_node(&layout, "tn1").await;
    let (n2, _c2) = listening_node(&layout, "tn2").await;
    let (alpha, _) = start_test_native(&n1, start_proxy(&n1), "alpha");
    let _beta = start_test_native(&n2, start_proxy(&n2), "beta");
    let short = Duration::from_millis(400);

    let cases: [(&str, &str, KktFrame); 3] = [
        (
            "lpersistence_3",
            "lpersistence",
            frame_of(UID, &ShopBuy::default()),
        ),
        ("tn2", "beta", frame_of(UID, &ping(13))),
        ("lpersistence_3", "nosuchservice", frame_of(UID, &ping(1))),
    ];
    for (node, service, request) in cases {
        let started = Instant::now();
        let err = alpha
            .rpc_call(node, service, request, short)
            .await
            .expect_err("no reply comes");
        let took = started.elapsed();
        assert_eq!(err, RpcError::Timeout(short), "{node}/{service}");
        assert!(
            took >= short && took < short * 4,
            "{node}/{service}: {took:?}"
        );
    }
    // beta panicked on seq 13 and keeps answering.
    let (_, pong) = rpc::<Pong>(&alpha, "tn2", "beta", frame_of(UID, &ping(14))).await;
    assert_eq!(pong.seq, 14);
}

/// native → a uid-sharded master on a `bee-demo` process: the rpc request is sharded by
/// the uid in its frame, and the worker answers the native caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_rpc_call_to_sharded_master() {
    let layout = Layout::new(&["activity_master", "tnative"]);
    let _a = start_demo(&layout, "activity_master");
    let (node, _c) = listening_node(&layout, "tnative").await;
    let (ep, _) = start_test_native(&node, start_proxy(&node), "alpha");
    for i in 0..20i64 {
        let uid = UID + i * 7919;
        let progress = ActivityProgress {
            uid: uid as u64,
            activity_id: 3,
            delta: 1,
        };
        let (reply, state) = rpc::<ActivityState>(
            &ep,
            "activity_master",
            "activity_master",
            frame_of(uid, &progress),
        )
        .await;
        assert_eq!(reply.uid, uid);
        assert_eq!(
            state.worker as usize,
            worker_for(uid as u64, 8),
            "uid {uid}"
        );
    }
}

/// A native send or rpc_call that cannot leave the node (unknown node, node in the
/// config but not up) fails at once with CServiceProxy's reason, not after a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_send_to_unreachable_node_fails_fast() {
    let layout = Layout::new(&["tnative", "down"]);
    let (node, _c) = listening_node(&layout, "tnative").await;
    let (ep, _) = start_test_native(&node, start_proxy(&node), "alpha");
    for target in ["nosuchnode", "down"] {
        let started = Instant::now();
        let err = ep
            .send(target, "svc", frame_of(UID, &ping(1)))
            .await
            .expect_err("cannot leave");
        assert!(matches!(err, RpcError::Send(_)), "{err:?}");
        assert!(err.to_string().contains(target), "{err}");
        let err = ep
            .rpc_call(target, "svc", frame_of(UID, &ping(1)), RPC)
            .await
            .expect_err("cannot leave");
        assert!(matches!(err, RpcError::Send(_)), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{target}: not prompt"
        );
    }
}

/// CServiceProxy refuses what it cannot forward with an error that says why — bytes
/// that are not a frame, a frame naming no remote service — and keeps forwarding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cservice_proxy_refuses_frames_it_cannot_parse() {
    let layout = Layout::new(&["lpersistence_3", "tnative"]);
    let _p = start_demo(&layout, "lpersistence_3");
    let (node, c) = listening_node(&layout, "tnative").await;
    let proxy = start_proxy(&node);
    let (ep, _) = start_test_native(&node, proxy, "alpha");
    let raw = |payload: bytes::Bytes| Message {
        source: 0,
        ptype: ptype::TEXT,
        session: 0,
        payload,
    };
    let err = node
        .call_message(proxy, raw(bytes::Bytes::from_static(b"\x00\x05ab")), None)
        .await
        .expect_err("garbage");
    assert!(err.to_string().contains("cannot parse the frame"), "{err}");
    let nameless = frame_of(UID, &ping(1)).encode().unwrap();
    let err = node
        .call_message(proxy, raw(nameless), None)
        .await
        .expect_err("no remote");
    assert!(
        err.to_string().contains("names no remote node/service"),
        "{err}"
    );

    let before = logins(&c).await;
    let login = LoginReq {
        uid: UID as u64,
        token: "t".into(),
        device: "d".into(),
    };
    ep.send("lpersistence_3", "lpersistence", frame_of(UID, &login))
        .await
        .expect("the proxy still forwards");
    let c2 = c.clone();
    assert!(
        eventually(Duration::from_secs(3), || {
            let c = c2.clone();
            async move { logins(&c).await > before }
        })
        .await
    );
}
