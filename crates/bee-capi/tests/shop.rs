//! `shop.so` (the C++ SDK's demo module, with protobuf) loaded into a bee node in this
//! process. A Rust recorder plays the node's `CServiceProxy` (found by the module as
//! `.CServiceProxy`), so every frame the module sends is checked byte for byte; the
//! module's rpc timeout runs on bee's `skynet_timeout`.
#![allow(unsafe_code)]

mod common;

use bee_capi::start;
use bee_codec::kkt::{KktFrame, SUBTYPE_PROTOBUF, SUBTYPE_RPC_CLIENT, SUBTYPE_RPC_SERVER};
use bee_proto::game::{Ping, Pong, ShopBuy, ShopReceipt};
use bee_proto::Message as _;
use bee_runtime::service::ptype;
use bee_runtime::{Addr, Message, Node, RuntimeConfig};
use bytes::Bytes;
use common::*;
use tokio::sync::mpsc;

/// mail.proto's `mail.Ack` (cservices/proto/mail.proto), as far as this test needs it.
#[derive(Clone, PartialEq, prost::Message)]
struct MailAck {
    #[prost(uint64, tag = "1")]
    to_uid: u64,
    #[prost(int64, tag = "2")]
    mail_id: i64,
    #[prost(string, tag = "4")]
    handled_by: String,
}

/// mail.proto's `mail.Send`.
#[derive(Clone, PartialEq, prost::Message)]
struct MailSend {
    #[prost(uint64, tag = "1")]
    to_uid: u64,
    #[prost(string, tag = "3")]
    title: String,
}

fn post_frame(node: &Node, to: Addr, from: Addr, ty: u8, frame: &KktFrame) {
    node.post(
        to,
        Message {
            source: from,
            ptype: ty,
            session: 0,
            payload: frame.encode().unwrap(),
        },
    )
    .unwrap();
}

/// The next frame the module handed to the proxy: (skynet session, frame).
async fn proxied(rx: &mut mpsc::UnboundedReceiver<Message>) -> (i32, KktFrame) {
    let m = next(rx, 3000).await.expect("a frame to CServiceProxy");
    assert_eq!(m.ptype, ptype::TEXT);
    (
        m.session,
        KktFrame::decode(&m.payload).expect("a valid frame"),
    )
}

fn rpc(uid: i64, name: &str, body: Vec<u8>, session: u64) -> KktFrame {
    KktFrame::new(SUBTYPE_RPC_SERVER, uid, name.to_string(), body)
        .to("shop_node", "shop")
        .from("lobby", "lobby")
        .session(session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shop_answers_rpcs_sends_through_the_proxy_and_times_out_its_own_rpcs() {
    capture_log();
    let node = Node::new("shop_node", RuntimeConfig::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let proxy = node.spawn_named("CServiceProxy", Recorder(tx));
    let shop = start(
        &node,
        &modules().join("shop.so"),
        "service=shop rpc_timeout_ms=200 notify=mail_node/mail",
    )
    .expect("shop.so starts")
    .addr;
    // node= defaults to skynet_getenv("node").
    wait_logged(&["shop: shop_node/shop ready, mailing receipts to mail_node/mail"]).await;

    // rpc Ping → a native reply (names swapped, sub_type 17, the request's session)
    // handed to the proxy with skynet session 1.
    post_frame(
        &node,
        shop,
        proxy,
        ptype::TEXT,
        &rpc(
            5,
            "game.Ping",
            Ping {
                seq: 41,
                sent_unix_ms: 0,
            }
            .encode_to_vec(),
            7,
        ),
    );
    let (s, f) = proxied(&mut rx).await;
    assert_eq!(
        (s, f.sub_type, f.session, f.uid),
        (1, SUBTYPE_RPC_CLIENT, 7, 5)
    );
    assert_eq!(
        (&f.remote_node[..], &f.remote_service[..]),
        (&b"lobby"[..], &b"lobby"[..])
    );
    assert_eq!(
        (&f.source_node[..], &f.source_service[..]),
        (&b"shop_node"[..], &b"shop"[..])
    );
    assert_eq!(&f.name[..], b"game.Pong");
    let pong = Pong::decode(f.body.clone()).unwrap();
    assert_eq!((pong.seq, pong.served_by.as_str()), (41, "shop_node/shop"));

    // rpc ShopBuy: shop first rpc_calls mail_node/mail; nobody answers, so its timer
    // (skynet_timeout, fired with source 0) ends the call after 200 ms and the receipt
    // goes out anyway.
    let buy = ShopBuy {
        uid: 9,
        item_id: 3,
        count: 2,
    }
    .encode_to_vec();
    let started = std::time::Instant::now();
    post_frame(
        &node,
        shop,
        proxy,
        ptype::TEXT,
        &rpc(9, "game.ShopBuy", buy.clone(), 8),
    );
    let (s, mail_rpc) = proxied(&mut rx).await;
    assert_eq!(
        (s, mail_rpc.sub_type, &mail_rpc.name[..]),
        (0, SUBTYPE_RPC_SERVER, &b"mail.Send"[..])
    );
    assert_eq!(
        (&mail_rpc.remote_node[..], &mail_rpc.remote_service[..]),
        (&b"mail_node"[..], &b"mail"[..])
    );
    assert_eq!(
        MailSend::decode(mail_rpc.body.clone()).unwrap().title,
        "receipt 1"
    );
    let (s, receipt) = proxied(&mut rx).await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(200));
    assert_eq!(
        (s, receipt.session, &receipt.name[..]),
        (1, 8, &b"game.ShopReceipt"[..])
    );
    assert_eq!(
        ShopReceipt::decode(receipt.body.clone()).unwrap().order_id,
        1
    );
    wait_logged(&[
        "receipt mail of order 1 failed: rpc mail.Send to mail_node/mail timed out after 200 ms",
    ])
    .await;

    // The late reply to that timed-out rpc is logged and dropped.
    let late =
        KktFrame::new(SUBTYPE_RPC_CLIENT, 9, "mail.Ack", Bytes::new()).session(mail_rpc.session);
    post_frame(&node, shop, proxy, ptype::RESPONSE, &late);
    wait_logged(&["for session", "dropped: no rpc waits for it"]).await;

    // Next order: the mail rpc is answered (PTYPE_RESPONSE, session 0, non-zero source,
    // as a master redirects an "rpc_response"), then the receipt goes out.
    post_frame(
        &node,
        shop,
        proxy,
        ptype::TEXT,
        &rpc(9, "game.ShopBuy", buy, 10),
    );
    let (_, mail_rpc) = proxied(&mut rx).await;
    let ack = MailAck {
        to_uid: 9,
        mail_id: 77,
        handled_by: "mail_node/mail".into(),
    };
    let answer = KktFrame::new(SUBTYPE_RPC_CLIENT, 9, "mail.Ack", ack.encode_to_vec())
        .to("shop_node", "shop")
        .from("mail_node", "mail")
        .session(mail_rpc.session);
    post_frame(&node, shop, proxy, ptype::RESPONSE, &answer);
    let (s, receipt) = proxied(&mut rx).await;
    assert_eq!((s, receipt.session), (1, 10));
    assert_eq!(
        ShopReceipt::decode(receipt.body.clone()).unwrap().order_id,
        2
    );
    wait_logged(&["receipt mail of order 2 stored as mail 77 by mail_node/mail"]).await;

    // A one-way ShopBuy: the receipt goes back one-way to the frame's source, and a
    // one-way mail.Send to notify.
    let oneway = KktFrame::new(
        SUBTYPE_PROTOBUF,
        4,
        "game.ShopBuy",
        ShopBuy {
            uid: 4,
            item_id: 1,
            count: 1,
        }
        .encode_to_vec(),
    )
    .to("shop_node", "shop")
    .from("lobby", "buyer");
    post_frame(&node, shop, proxy, ptype::TEXT, &oneway);
    let (s, f) = proxied(&mut rx).await;
    assert_eq!(
        (s, f.sub_type, &f.remote_service[..], &f.name[..]),
        (0, SUBTYPE_PROTOBUF, &b"buyer"[..], &b"game.ShopReceipt"[..])
    );
    let (_, f) = proxied(&mut rx).await;
    assert_eq!(&f.name[..], b"mail.Send");

    // Malformed frames: logged with the reason, dropped, the service goes on.
    for junk in [
        &b""[..],
        b"\x00",
        b"\x00\x05\x00\x00\x00\x00\x00\x00abc",
        &[0xff; 64],
    ] {
        node.post(
            shop,
            Message {
                source: proxy,
                ptype: ptype::TEXT,
                session: 0,
                payload: Bytes::copy_from_slice(junk),
            },
        )
        .unwrap();
    }
    wait_logged(&["shop: malformed frame (64 bytes, type 0)"]).await;
    post_frame(
        &node,
        shop,
        proxy,
        ptype::TEXT,
        &rpc(
            5,
            "game.Ping",
            Ping {
                seq: 42,
                sent_unix_ms: 0,
            }
            .encode_to_vec(),
            11,
        ),
    );
    let (_, f) = proxied(&mut rx).await;
    assert_eq!(Pong::decode(f.body.clone()).unwrap().seq, 42);
    assert!(next(&mut rx, 100).await.is_none(), "nothing else was sent");

    // Many rpcs in a row, each answered once.
    for i in 0..2000u64 {
        post_frame(
            &node,
            shop,
            proxy,
            ptype::TEXT,
            &rpc(
                5,
                "game.Ping",
                Ping {
                    seq: i,
                    sent_unix_ms: 0,
                }
                .encode_to_vec(),
                100 + i,
            ),
        );
        let (_, f) = proxied(&mut rx).await;
        assert_eq!(
            (f.session, Pong::decode(f.body.clone()).unwrap().seq),
            (100 + i, i)
        );
    }
    // Released with the node's services.
    node.shutdown();
    wait_logged(&["C service released", &bee_capi::fmt_handle(shop), "shop"]).await;
}
