//! The demo modules built with ASan/UBSan (`make SANITIZE=1`, `target/cpp-asan/`) in a
//! `bee` process run with libasan preloaded, driven hard from another process: any
//! memory error, undefined behaviour or leak in the modules, or in how bee hands them
//! memory, makes the node exit non-zero at SIGTERM (UBSan aborts at once; LeakSanitizer
//! reports at exit).
//!
//! One test in this binary on purpose: it sets `LD_PRELOAD` for the node it starts, and
//! nothing else in this process may start programs meanwhile.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bee_codec::kkt::{KktFrame, SUBTYPE_RPC_SERVER};
use bee_codec::seri::{self, Value};
use bee_proto::game::Ping;
use bee_proto::Message as _;
use bee_tests::{bee_bin, Layout};
use bytes::Bytes;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sanitized_modules_survive_ten_thousand_messages_each_way() {
    let mods = asan_modules();
    let bee = bee_bin(); // builds the binaries before LD_PRELOAD is set
    let layout = Layout::new(&["capi_asan"]);
    // A sink stands in for CServiceProxy: it counts the frames shop hands it.
    let body = format!(
        "[[service]]\nkind = \"sink\"\nname = \"CServiceProxy\"\n\n\
         [[service]]\nkind = \"cservice\"\nmodule = \"{0}/hello.so\"\nname = \"hello\"\n\n\
         [[service]]\nkind = \"cservice\"\nmodule = \"{0}/shop.so\"\nname = \"shop\"\nargs = \"rpc_timeout_ms=50 notify=nowhere/mail\"\n",
        mods.display()
    );
    // SAFETY of set_var: this binary has one test, and it starts no other thread that
    // reads the environment while the node starts.
    std::env::set_var("LD_PRELOAD", libasan());
    std::env::set_var(
        "ASAN_OPTIONS",
        "detect_leaks=1:abort_on_error=0:exitcode=23",
    );
    std::env::set_var("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1");
    let mut node = tokio::task::block_in_place(|| layout.start_with(&bee, "capi_asan", &body));
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
    // shop: N frames in, a third malformed (truncated, garbage, empty), a third rpc
    // Pings, a third ShopBuy rpcs whose notify rpc goes nowhere and times out (50 ms).
    let ping = KktFrame::new(
        SUBTYPE_RPC_SERVER,
        1,
        "game.Ping",
        Ping {
            seq: 1,
            sent_unix_ms: 0,
        }
        .encode_to_vec(),
    )
    .to("capi_asan", "shop")
    .from("nowhere", "lobby")
    .session(5)
    .encode()
    .unwrap();
    let buy = KktFrame::new(
        SUBTYPE_RPC_SERVER,
        2,
        "game.ShopBuy",
        bee_proto::game::ShopBuy {
            uid: 2,
            item_id: 1,
            count: 1,
        }
        .encode_to_vec(),
    )
    .to("capi_asan", "shop")
    .from("nowhere", "lobby")
    .session(6)
    .encode()
    .unwrap();
    for i in 0..N {
        let frame: Bytes = match i % 6 {
            0 => ping.clone(),
            1 => buy.clone(),
            2 => ping.slice(..ping.len() - 1 - i % 20),
            3 => Bytes::from(vec![(i % 251) as u8; i % 97]),
            4 => ping.slice(..i % 30),
            _ => Bytes::new(),
        };
        c.send(
            "capi_asan",
            "shop",
            pack(&[Value::from("text"), Value::String(frame)]),
        )
        .await
        .unwrap();
        if i % 500 == 0 {
            // Let the rpc timeouts fire while traffic goes on.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Every Ping answered once (1 frame), every ShopBuy mailed (1) and answered after
    // its mail rpc timed out (1): the timeouts all fired.
    let frames_with = |r: usize| (0..N).filter(|i| i % 6 == r).count();
    let expected = frames_with(0) + 2 * frames_with(1);
    let mut count = 0;
    for _ in 0..200 {
        let r = c
            .call("capi_asan", "CServiceProxy", pack(&[Value::from("count")]))
            .await
            .unwrap();
        count = seri::unpack(&r).unwrap()[0].as_int().unwrap() as usize;
        if count >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count, expected, "frames shop handed to the proxy");
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
    assert!(
        tokio::task::block_in_place(|| node.terminate()),
        "the sanitized node did not exit cleanly (see its ASan/UBSan report above)"
    );
}
