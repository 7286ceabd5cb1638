//! The one handler shape (`Dispatcher::handler`, `Dispatcher::text_handler`) between
//! real nodes: in-process nodes `hall` and `bank` listening on loopback, called from a
//! client node over the cluster.
//!
//! - the same handler written first with a body that awaits nothing, then after it
//!   learned to await a call to another node: same registration, same signature, and
//!   the caller gets what it expects both times;
//! - a `"text"` handler that reads its frame from the handle and awaits the other node;
//! - a handler's error, a panic, and the other node's refusal reach the caller in the
//!   same words as from the synchronous shortcut (`.command`), before and after an
//!   await, and the service keeps serving.

mod dispatch_common;

use bee_cluster::Cluster;
use bee_codec::seri::Value;
use bee_proto::game::{Ping, Pong};
use bee_runtime::{CallError, Dispatcher, ServiceError};
use bee_tests::Layout;
use bytes::Bytes;
use dispatch_common::*;

/// The hall's state: points per uid, and which node holds the bank.
struct Hall {
    bank: String,
    points: std::collections::HashMap<i64, i64>,
}

/// `award` in the one shape, synchronous (`award_local`: the hall's own rule) and after
/// it learned to ask the bank (`award`); the failures of both kinds; a Ping handler.
fn hall(bank: &str) -> Dispatcher<Hall> {
    Dispatcher::new(Hall {
        bank: bank.to_string(),
        points: Default::default(),
    })
    // Version 1: the bonus is the hall's own rule; nothing awaited.
    .handler("award_local", |h, (uid, n): (i64, i64)| async move {
        let bonus = n * 10;
        Ok(h.state(|s| {
            let p = s.points.entry(uid).or_default();
            *p += n + bonus;
            *p
        }))
    })
    // Version 2, the same handler once the bonus comes from the bank node: only the
    // body changed (one line became an awaited call).
    .handler("award", |h, (uid, n): (i64, i64)| async move {
        let bank = h.state(|s| s.bank.clone());
        let bonus: i64 = h.call_lua(&bank, "@bank", "bonus", n).await?;
        Ok(h.state(|s| {
            let p = s.points.entry(uid).or_default();
            *p += n + bonus;
            *p
        }))
    })
    .handler("points", |h, uid: i64| async move {
        Ok(h.state(|s| s.points.get(&uid).copied().unwrap_or(0)))
    })
    .handler("fail", |_h, text: String| async move {
        Err::<(), _>(ServiceError::msg(text))
    })
    .handler("panic", |_h, text: String| async move {
        if !text.is_empty() {
            panic!("{text}");
        }
        Ok(())
    })
    .handler("fail_after_bank", |h, text: String| async move {
        let bank = h.state(|s| s.bank.clone());
        let _: i64 = h.call_lua(&bank, "@bank", "bonus", 1).await?;
        Err::<(), _>(ServiceError::msg(text))
    })
    .handler("panic_after_bank", |h, text: String| async move {
        let bank = h.state(|s| s.bank.clone());
        let _: i64 = h.call_lua(&bank, "@bank", "bonus", 1).await?;
        if !text.is_empty() {
            panic!("{text}");
        }
        Ok(())
    })
    .handler("bank_refuses", |h, ()| async move {
        let bank = h.state(|s| s.bank.clone());
        let v: i64 = h.call_lua(&bank, "@bank", "nosuch", ()).await?;
        Ok(v)
    })
    // A game frame: its uid read from the handle, the bonus from the bank.
    .text_handler(|h, m: Ping| async move {
        let uid = h.frame().map(|f| f.uid).unwrap_or(-1);
        let bank = h.state(|s| s.bank.clone());
        let bonus: i64 = h.call_lua(&bank, "@bank", "bonus", uid).await?;
        Ok(Some(Pong {
            seq: m.seq,
            served_by: format!("{}/{} uid {uid} bonus {bonus}", h.node().name(), h.label()),
        }))
    })
}

/// The same failures with the synchronous shortcut.
fn old_shape() -> Dispatcher<()> {
    Dispatcher::new(())
        .command("fail", |_s, text: String| {
            Err::<(), _>(ServiceError::msg(text))
        })
        .command("panic", |_s, text: String| -> Result<(), ServiceError> {
            panic!("{text}")
        })
}

/// The other node's error text, for a call that must fail.
async fn remote_error(c: &Cluster, service: &str, payload: Bytes) -> String {
    match tokio::time::timeout(CALL_TIMEOUT, c.call("hall", service, payload)).await {
        Ok(Err(e @ CallError::Remote { .. })) => e.remote_text(),
        other => panic!("expected the hall's error, got {other:?}"),
    }
}

/// One integer reply.
async fn int(c: &Cluster, payload: Bytes) -> i64 {
    let r = tokio::time::timeout(CALL_TIMEOUT, c.call("hall", "hall", payload))
        .await
        .expect("answered in time")
        .expect("the call succeeds");
    values(&r)[0].as_int().expect("an integer reply")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_handler_shape_between_nodes() {
    let layout = Layout::new(&["hall", "bank"]);
    let (bank_node, bank_cluster) = listening_node(&layout, "bank").await;
    let bank = bank_node.spawn(
        "bank",
        Dispatcher::new(()).command("bonus", |_s, n: i64| Ok(n * 100)),
    );
    bank_cluster.register("bank", bank).unwrap();
    let (hall_node, hall_cluster) = listening_node(&layout, "hall").await;
    let addr = hall_node.spawn("hall", hall("bank"));
    hall_cluster.register("hall", addr).unwrap();
    let old = hall_node.spawn("old", old_shape());
    hall_cluster.register("old", old).unwrap();
    let (_client, c) = layout.client(CALL_TIMEOUT);

    let award = |cmd: &str, uid: i64, n: i64| {
        lua(&[Value::from(cmd), Value::Integer(uid), Value::Integer(n)])
    };
    // Synchronous body: 2 + 20.
    assert_eq!(int(&c, award("award_local", 7, 2)).await, 22);
    // The same handler awaiting the bank node: 22 + 3 + 300.
    assert_eq!(int(&c, award("award", 7, 3)).await, 325);
    assert_eq!(
        int(&c, lua(&[Value::from("points"), Value::Integer(7)])).await,
        325
    );

    // A game frame, answered after an await of the bank node.
    let r = tokio::time::timeout(
        CALL_TIMEOUT,
        c.call(
            "hall",
            "hall",
            text(frame(
                4,
                &Ping {
                    seq: 9,
                    sent_unix_ms: 0,
                },
            )),
        ),
    )
    .await
    .expect("answered in time")
    .expect("the Ping is answered");
    let (uid, pong) = unframe::<Pong>(&reply_frame(&r));
    assert_eq!((uid, pong.seq), (4, 9));
    assert_eq!(pong.served_by, "hall/hall uid 4 bonus 400");

    // Failures read as they do from the synchronous shortcut.
    let p = |cmd: &str, t: &str| lua(&[Value::from(cmd), Value::from(t)]);
    for cmd in ["fail", "panic"] {
        let want = remote_error(&c, "old", p(cmd, "out of stock")).await;
        assert_eq!(remote_error(&c, "hall", p(cmd, "out of stock")).await, want);
    }
    assert_eq!(
        remote_error(&c, "hall", p("fail", "out of stock")).await,
        "out of stock"
    );
    assert_eq!(
        remote_error(&c, "hall", p("panic", "boom")).await,
        "handler panicked: boom"
    );
    // After awaiting the other node: the same words.
    assert_eq!(
        remote_error(&c, "hall", p("fail_after_bank", "late")).await,
        "late"
    );
    assert_eq!(
        remote_error(&c, "hall", p("panic_after_bank", "late boom")).await,
        "handler panicked: late boom"
    );
    // The bank's refusal comes back through `?`, naming the command.
    let refused = remote_error(&c, "hall", lua(&[Value::from("bank_refuses")])).await;
    assert!(refused.contains("nosuch"), "{refused}");
    // Arguments that do not fit are refused as for any command.
    let bad = remote_error(&c, "hall", lua(&[Value::from("award"), Value::from("x")])).await;
    assert!(bad.contains("command award takes"), "{bad}");

    // The hall kept serving through all of it, its state intact.
    assert_eq!(int(&c, award("award", 7, 1)).await, 325 + 1 + 100);
    hall_node.shutdown();
    bank_node.shutdown();
}
