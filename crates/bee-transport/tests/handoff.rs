//! Hand-off of a connection from one listener to another (a hot update's old and new
//! process): a raw skynet-style client keeps calling and pushing on one connection while
//! it moves; every message reaches exactly one side, in the order sent, and every call
//! is answered exactly once.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bee_codec::cluster::{encode_push, encode_request, Address};
use bee_codec::frame::MAX_BODY;
use bee_transport::{Connection, Listener, ListenerConfig};
use bytes::{Bytes, BytesMut};
use common::{name, read_response, Probe, TestAcceptor};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

struct Side {
    probe: Arc<Probe>,
    handoff: bee_transport::Handoff,
    shutdown: CancellationToken,
}

async fn side(listener: Listener) -> Side {
    let probe = Arc::new(Probe::default());
    let handoff = listener.handoff();
    let shutdown = CancellationToken::new();
    tokio::spawn(listener.run(
        Arc::new(TestAcceptor {
            probe: probe.clone(),
        }),
        shutdown.clone(),
    ));
    Side {
        probe,
        handoff,
        shutdown,
    }
}

/// A running listener on a free loopback port, and its address.
async fn one_side() -> (std::net::SocketAddr, Side) {
    let l = Listener::bind("127.0.0.1:0", ListenerConfig::default())
        .await
        .unwrap();
    (l.local_addr(), side(l).await)
}

/// The old side (peers connect to its address) and the new side of a hand-off.
async fn two_sides() -> (std::net::SocketAddr, Side, Side) {
    let (addr, old) = one_side().await;
    let (_, new) = one_side().await;
    (addr, old, new)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skynet_peer_keeps_its_connection_across_a_handoff_and_loses_nothing() {
    let (addr, old, new) = two_sides().await;

    let stream = TcpStream::connect(addr).await.unwrap();
    let (rd, mut wr) = stream.into_split();
    // The answers, read as they come, until none comes for a second after the last
    // call was written (`done`) or the connection closes.
    let done = Arc::new(tokio::sync::Notify::new());
    let reader = tokio::spawn({
        let done = done.clone();
        async move {
            let mut conn = Connection::new(rd, MAX_BODY);
            let mut answers: HashMap<u32, Vec<Result<Bytes, Bytes>>> = HashMap::new();
            let finished = done.notified();
            tokio::pin!(finished);
            let mut quiet = Duration::from_secs(10);
            loop {
                tokio::select! {
                    _ = &mut finished, if quiet > Duration::from_secs(1) => {
                        quiet = Duration::from_secs(1);
                    }
                    r = tokio::time::timeout(quiet, read_response(&mut conn)) => match r {
                        Ok(Some((session, result))) => {
                            answers.entry(session).or_default().push(result)
                        }
                        _ => break,
                    },
                }
            }
            answers
        }
    });
    // 2,000 messages in bursts of 20: odd ones calls, even ones pushes, all recording
    // their payload in order; one slow call per burst keeps an answer pending.
    let total = 2_000u32;
    let mut calls = Vec::new();
    let mut handed = false;
    for burst in 0..(total / 20) {
        let mut out = BytesMut::new();
        for i in burst * 20..burst * 20 + 20 {
            let payload = i.to_string();
            if i % 2 == 1 {
                encode_request(&mut out, &name("@order"), i, payload.as_bytes()).unwrap();
                calls.push(i);
            } else {
                encode_push(&mut out, &name("@order"), 0, payload.as_bytes()).unwrap();
            }
        }
        let slow = 100_000 + burst;
        encode_request(
            &mut out,
            &Address::Name(Bytes::from_static(b"@slow")),
            slow,
            b"30",
        )
        .unwrap();
        calls.push(slow);
        wr.write_all(&out).await.unwrap();
        if burst == 30 {
            // The old side hands the connection off while requests are in flight.
            old.handoff.start();
        }
        if burst >= 30 && !handed {
            let mut conns = old.handoff.take();
            if let Some(conn) = conns.pop() {
                assert!(conns.is_empty());
                assert!(new.handoff.adopt(conn).is_ok(), "the new side takes it");
                handed = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The hand-off waits for the slow answer of its last burst.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !handed {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the connection was never handed off"
        );
        if let Some(conn) = old.handoff.take().pop() {
            assert!(new.handoff.adopt(conn).is_ok());
            handed = true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    done.notify_one();
    let answers = reader.await.unwrap();

    for s in &calls {
        let got = answers.get(s).map(Vec::len).unwrap_or(0);
        assert_eq!(got, 1, "call {s} answered {got} times");
    }
    assert_eq!(
        answers.len(),
        calls.len(),
        "no answer to a session never asked"
    );
    for (s, r) in &answers {
        assert!(r[0].is_ok(), "call {s} failed: {:?}", r[0]);
    }
    let before = old.probe.order.lock().unwrap().clone();
    let after = new.probe.order.lock().unwrap().clone();
    assert!(!before.is_empty(), "the old side served the first part");
    assert!(!after.is_empty(), "the new side served the rest");
    let seen: Vec<u32> = before
        .iter()
        .chain(after.iter())
        .map(|b| std::str::from_utf8(b).unwrap().parse().unwrap())
        .collect();
    assert_eq!(seen, (0..total).collect::<Vec<_>>(), "each once, in order");
    let closed = old.probe.closed.lock().unwrap().clone();
    assert_eq!(closed, vec!["handed over to the successor".to_string()]);
    drop(wr);
    old.shutdown.cancel();
    new.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bee_peer_is_told_goaway_not_handed_off() {
    let (addr, old) = one_side().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut out = BytesMut::new();
    // A heartbeat makes the connection a bee peer's.
    encode_request(&mut out, &name(bee_transport::PING_NAME), 1, b"").unwrap();
    stream.write_all(&out).await.unwrap();
    let mut conn = Connection::new(stream, MAX_BODY);
    assert_eq!(read_response(&mut conn).await.unwrap().0, 1);
    old.handoff.start();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(old.handoff.take().is_empty(), "a bee peer stays");
    // Still served.
    let mut stream = conn.into_inner();
    let mut out = BytesMut::new();
    encode_request(&mut out, &name("@echo"), 2, b"here").unwrap();
    stream.write_all(&out).await.unwrap();
    let mut conn = Connection::new(stream, MAX_BODY);
    let (s, r) = read_response(&mut conn).await.unwrap();
    assert_eq!((s, r), (2, Ok(Bytes::from_static(b"here"))));
    old.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_read_but_not_taken_go_with_the_connection() {
    let (addr, old, new) = two_sides().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // One write: a call that holds the old side's dispatch, then 50 pushes the old side
    // has read into its buffer by the time the hand-off starts.
    let mut out = BytesMut::new();
    encode_request(&mut out, &name("@block"), 1, b"300").unwrap();
    for i in 0..50u32 {
        encode_push(&mut out, &name("@order"), 0, i.to_string().as_bytes()).unwrap();
    }
    encode_request(&mut out, &name("@echo"), 2, b"last").unwrap();
    stream.write_all(&out).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    old.handoff.start();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let conn = loop {
        if let Some(c) = old.handoff.take().pop() {
            break c;
        }
        assert!(tokio::time::Instant::now() < deadline, "never handed off");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(
        !conn.buffered.is_empty(),
        "the old side had frames buffered that it did not take"
    );
    assert_eq!(old.handoff.pending(), 0, "nothing left handing off");
    assert!(new.handoff.adopt(conn).is_ok());
    let mut conn = Connection::new(stream, MAX_BODY);
    let a = tokio::time::timeout(Duration::from_secs(10), read_response(&mut conn))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        a,
        (1, Ok(Bytes::from_static(b"300"))),
        "answered by the old side"
    );
    let b = tokio::time::timeout(Duration::from_secs(10), read_response(&mut conn))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        b,
        (2, Ok(Bytes::from_static(b"last"))),
        "answered by the new side"
    );
    let seen: Vec<Bytes> = old
        .probe
        .order
        .lock()
        .unwrap()
        .iter()
        .chain(new.probe.order.lock().unwrap().iter())
        .cloned()
        .collect();
    let want: Vec<Bytes> = (0..50u32).map(|i| Bytes::from(i.to_string())).collect();
    assert_eq!(seen, want, "each push once, in order");
    old.shutdown.cancel();
    new.shutdown.cancel();
}
