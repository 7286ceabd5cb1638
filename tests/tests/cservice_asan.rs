//! The demo modules built with ASan/UBSan (`make SANITIZE=1`, `target/cpp-asan/`) in two
//! `bee` processes run with libasan preloaded, each with the real CServiceProxy, driven
//! hard from other processes: shop.so on one node rpc-calls mail.so on the other (the
//! team's C++ → C++ path across nodes), a second shop's rpcs go nowhere and time out,
//! malformed frames arrive among good ones, hello.so answers calls with `DONTCOPY`
//! blocks. Any memory error, undefined behaviour or leak in the modules, or in how bee
//! hands them memory, makes a node exit non-zero at SIGTERM (UBSan aborts at once;
//! LeakSanitizer reports at exit).
//!
//! One test in this binary on purpose: it sets `LD_PRELOAD` for the nodes it starts, and
//! nothing else in this process may start programs meanwhile.

mod dispatch_common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bee_codec::kkt::{KktFrame, SUBTYPE_RPC_SERVER};
use bee_codec::seri::{self, Value};
use bee_proto::game::{Ping, ShopBuy};
use bee_proto::mail;
use bee_proto::Message as _;
use bee_runtime::text::frame_of;
use bee_tests::{bee_bin, Layout};
use bytes::Bytes;
use dispatch_common::{listening_node, start_proxy, start_test_native};

const N: usize = 10_000;

/// `target/cpp-asan/` with the sanitized modules (built under a file lock if missing).
fn asan_modules() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = root.join("target/cpp-asan");
    std::fs::create_dir_all(&out).expect("create target/cpp-asan");
    let status = Command::new("flock")
        .arg(out.join(".build.lock"))
        .args(["make", "-s", "-C"])
        .arg(root.join("cservices"))
        .args(["-j2", "SANITIZE=1", "modules"])
        .arg(format!("OUT={}", out.display()))
        .status()
        .expect("cannot run flock make");
    assert!(status.success(), "building the sanitized modules failed");
    out.canonicalize().expect("target/cpp-asan")
}

fn libasan() -> String {
    let out = Command::new("gcc")
        .arg("-print-file-name=libasan.so")
        .output()
        .expect("gcc");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn pack(values: &[Value]) -> Bytes {
    seri::pack(values).expect("pack")
}

/// A frame from `asan_sink/lobby` (where the modules send replies and receipts).
fn from_sink(name: &'static str, body: Vec<u8>, to: &'static str, session: u64) -> Bytes {
    KktFrame::new(SUBTYPE_RPC_SERVER, 2, name, body)
        .to(
            if to == "mail" {
                "capi_mail"
            } else {
                "capi_asan"
            },
            to,
        )
        .from("asan_sink", "lobby")
        .session(session)
        .encode()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sanitized_modules_survive_ten_thousand_messages_each_way() {
    let mods = asan_modules();
    let bee = bee_bin(); // builds the binaries before LD_PRELOAD is set
    let layout = Layout::new(&["capi_asan", "capi_mail", "asan_sink", "asan_probe"]);
    // Frames to a node the config does not name fail at once (shop_lost's notify).
    layout.write_cluster(&["__nowaiting = true"]);
    let module = |file: &str, name: &str, args: &str| {
        format!(
            "[[service]]\nkind = \"cservice\"\nmodule = \"{}/{file}\"\nname = \"{name}\"\nargs = \"{args}\"\n\n",
            mods.display()
        )
    };
    let proxy = "[[service]]\nkind = \"cservice_proxy\"\n\n";
    let shop_node = format!(
        "{proxy}{}{}{}",
        module("hello.so", "hello", ""),
        module(
            "shop.so",
            "shop",
            "notify=capi_mail/mail rpc_timeout_ms=5000"
        ),
        module(
            "shop.so",
            "shop_lost",
            "service=shop_lost notify=nowhere/mail rpc_timeout_ms=50"
        ),
    );
    let mail_node = format!("{proxy}{}", module("mail.so", "mail", ""));
    // Where replies and receipts go: a plain (not sanitized) node counting them.
    let _sink = tokio::task::block_in_place(|| {
        layout.start_with(
            &bee,
            "asan_sink",
            "[[service]]\nkind = \"sink\"\nname = \"lobby\"\n",
        )
    });
    // SAFETY of set_var: this binary has one test, and it starts no other thread that
    // reads the environment while the nodes start.
    std::env::set_var("LD_PRELOAD", libasan());
    std::env::set_var(
        "ASAN_OPTIONS",
        "detect_leaks=1:abort_on_error=0:exitcode=23",
    );
    std::env::set_var("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1");
    let (mut shop, mut mailer) = tokio::task::block_in_place(|| {
        (
            layout.start_with(&bee, "capi_asan", &shop_node),
            layout.start_with(&bee, "capi_mail", &mail_node),
        )
    });
    std::env::remove_var("LD_PRELOAD");
    std::env::remove_var("ASAN_OPTIONS");
    std::env::remove_var("UBSAN_OPTIONS");

    let (_client, c) = layout.client(Duration::from_secs(20));
    // hello: N calls in (each answered with a DONTCOPY block), N pushes.
    for i in 0..N {
        let body = format!("m{i}-{}", "x".repeat(i % 300));
        let reply = c
            .call(
                "capi_asan",
                "hello",
                pack(&[Value::from("text"), Value::from(body.as_str())]),
            )
            .await
            .expect("hello answers");
        assert_eq!(
            seri::unpack(&reply).unwrap(),
            vec![Value::from(format!("hello:{body}").as_str())]
        );
        c.send(
            "capi_asan",
            "hello",
            pack(&[Value::from("text"), Value::from("p")]),
        )
        .await
        .unwrap();
    }
    // N frames through the real CServiceProxy: rpc Pings to shop, rpc ShopBuys to shop
    // (each rpc-calls mail.so on capi_mail, then sends the receipt), ShopBuys to
    // shop_lost (its mail rpc goes nowhere and times out after 50 ms, then the receipt),
    // rpc mail.Sends straight to mail.so, and malformed frames (truncated, garbage,
    // short, empty) among them.
    let ping = from_sink(
        "game.Ping",
        Ping {
            seq: 1,
            sent_unix_ms: 0,
        }
        .encode_to_vec(),
        "shop",
        5,
    );
    let buy = |to: &'static str| {
        from_sink(
            "game.ShopBuy",
            ShopBuy {
                uid: 2,
                item_id: 1,
                count: 1,
            }
            .encode_to_vec(),
            to,
            6,
        )
    };
    let (buy_shop, buy_lost) = (buy("shop"), buy("shop_lost"));
    let letter = from_sink(
        "mail.Send",
        mail::Send {
            to_uid: 3,
            from_uid: 2,
            title: "hi".into(),
            text: "x".repeat(100),
        }
        .encode_to_vec(),
        "mail",
        7,
    );
    for i in 0..N {
        let (node, service, frame): (&str, &str, Bytes) = match i % 8 {
            0 => ("capi_asan", "shop", ping.clone()),
            1 => ("capi_asan", "shop", buy_shop.clone()),
            2 => ("capi_asan", "shop", ping.slice(..ping.len() - 1 - i % 20)),
            3 => (
                "capi_asan",
                "shop",
                Bytes::from(vec![(i % 251) as u8; i % 97]),
            ),
            4 => ("capi_mail", "mail", letter.slice(..i % 30)),
            5 => ("capi_asan", "shop", Bytes::new()),
            6 => ("capi_asan", "shop_lost", buy_lost.clone()),
            _ => ("capi_mail", "mail", letter.clone()),
        };
        c.send(
            node,
            service,
            pack(&[Value::from("text"), Value::String(frame)]),
        )
        .await
        .unwrap();
        if i % 500 == 0 {
            // Let the rpc timeouts fire while traffic goes on.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Malformed frames handed to CServiceProxy itself (it refuses them with a log line
    // and keeps forwarding).
    for i in 0..500usize {
        let frame = match i % 3 {
            0 => ping.slice(..ping.len() - 1 - i % 20),
            1 => Bytes::from(vec![(i % 251) as u8; i % 97]),
            _ => Bytes::new(),
        };
        c.send(
            "capi_asan",
            "CServiceProxy",
            pack(&[Value::from("text"), Value::String(frame)]),
        )
        .await
        .unwrap();
    }
    // At the sink: every Ping answered, every ShopBuy (both shops) receipted once its
    // mail rpc answered or timed out, every mail.Send rpc acked.
    let frames_with = |r: usize| (0..N).filter(|i| i % 8 == r).count();
    let expected = frames_with(0) + frames_with(1) + frames_with(6) + frames_with(7);
    let mut count = 0;
    for _ in 0..400 {
        let r = c
            .call("asan_sink", "lobby", pack(&[Value::from("count")]))
            .await
            .unwrap();
        count = seri::unpack(&r).unwrap()[0].as_int().unwrap() as usize;
        if count >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        count, expected,
        "replies and receipts that reached asan_sink"
    );
    // shop's mails really went across to mail.so: uid 2's inbox holds one receipt per
    // order of `shop` (shop_lost's went nowhere). Asked by a native caller in this
    // process, through its own CServiceProxy.
    let (probe_node, _probe_cluster) = listening_node(&layout, "asan_probe").await;
    let (probe, _) = start_test_native(&probe_node, start_proxy(&probe_node), "probe");
    let list = probe
        .rpc_call(
            "capi_mail",
            "mail",
            frame_of(2, &mail::ListReq { uid: 2 }),
            Duration::from_secs(10),
        )
        .await
        .expect("mail lists uid 2's inbox");
    let list = bee_demo::open::<mail::List>(&list).expect("a mail.List");
    assert_eq!(list.titles.len(), frames_with(1), "receipts mailed by shop");
    assert_eq!(list.handled_by, "capi_mail/mail");
    // Still answering after all that, then a clean stop: ASan's leak check runs at exit.
    let reply = c
        .call(
            "capi_asan",
            "hello",
            pack(&[Value::from("text"), Value::from("end")]),
        )
        .await
        .unwrap();
    assert_eq!(
        seri::unpack(&reply).unwrap(),
        vec![Value::from("hello:end")]
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    for node in [&mut shop, &mut mailer] {
        let name = node.name.clone();
        assert!(
            tokio::task::block_in_place(|| node.terminate()),
            "the sanitized node {name} did not exit cleanly (see its ASan/UBSan report above)"
        );
    }
}
