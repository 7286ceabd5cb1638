//! Sending side: a `Channel` against a real `Listener` (or a scripted raw peer) on
//! 127.0.0.1 with OS-chosen ports.

mod common;

use std::time::{Duration, Instant};

use bee_codec::cluster::{encode_response, Address, SPLIT};
use bee_transport::{ChannelConfig, ListenerConfig, TransportError};
use bytes::{Bytes, BytesMut};
use common::{name, pattern, RawServer, Server};
use futures::StreamExt;

#[tokio::test]
async fn call_reply_by_id_and_by_name() {
    let server = Server::start(ListenerConfig::default()).await;
    let ch = server.channel();
    assert!(!ch.stats().connected, "a channel connects lazily");

    let r = ch
        .call(Address::Id(7), Bytes::from_static(b"hello"), None)
        .await
        .unwrap();
    assert_eq!(&r[..], b"hello");
    let r = ch
        .call(name("@echo"), Bytes::from_static(b"by name"), None)
        .await
        .unwrap();
    assert_eq!(&r[..], b"by name");
    let r = ch
        .call(name("@later"), Bytes::from_static(b"answered later"), None)
        .await
        .unwrap();
    assert_eq!(&r[..], b"answered later");

    assert_eq!(
        *server.probe.addresses.lock().unwrap(),
        vec![Address::Id(7), name("@echo"), name("@later")]
    );
    let s = ch.stats();
    assert!(s.connected);
    assert_eq!(
        (s.calls, s.failures, s.in_flight, s.reconnects),
        (3, 0, 0, 0)
    );
    assert_eq!(ch.node(), "testnode");
    assert_eq!(ch.addr(), server.addr.to_string());
    server.stop().await;
}

#[tokio::test]
async fn remote_error_keeps_its_text() {
    let server = Server::start(ListenerConfig::default()).await;
    let ch = server.channel();
    let err = ch
        .call(name("@fail"), Bytes::from_static(b"x"), None)
        .await
        .unwrap_err();
    match &err {
        TransportError::Remote { node, message } => {
            assert_eq!(node, "testnode");
            assert_eq!(message, "Invalid name");
        }
        other => panic!("expected Remote, got {other:?}"),
    }
    assert_eq!(err.to_string(), "node testnode: Invalid name");
    // The connection is still good.
    let r = ch
        .call(name("@echo"), Bytes::from_static(b"after"), None)
        .await
        .unwrap();
    assert_eq!(&r[..], b"after");
    assert_eq!(ch.stats().failures, 1);
    server.stop().await;
}

#[tokio::test]
async fn pushes_and_calls_keep_issue_order_even_multipart() {
    let server = Server::start(ListenerConfig::default()).await;
    let ch = server.channel();
    let mut expected = Vec::new();
    for i in 0..40u8 {
        // Alternate sizes around the split threshold so multi-part and whole messages mix.
        let len = match i % 4 {
            0 => 10,
            1 => SPLIT + 1000,
            2 => SPLIT - 1,
            _ => 3 * SPLIT,
        };
        let p = pattern(len, i);
        expected.push(p.clone());
        if i % 5 == 0 {
            let r = ch.call(name("@order"), p, None).await.unwrap();
            assert_eq!(&r[..], b"ok");
        } else {
            ch.push(name("@order"), p).await.unwrap();
        }
    }
    // A final call: once answered, every earlier message was dispatched (in order).
    ch.call(name("@order"), Bytes::from_static(b"end"), None)
        .await
        .unwrap();
    expected.push(Bytes::from_static(b"end"));
    let got = server.probe.order.lock().unwrap().clone();
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert!(g == e, "message {i} out of order or corrupted");
    }
    let s = ch.stats();
    assert_eq!((s.calls, s.pushes), (9, 32));
    server.stop().await;
}

#[tokio::test]
async fn payloads_around_split_and_one_mib_both_ways() {
    let server = Server::start(ListenerConfig::default()).await;
    let ch = server.channel();
    for (i, len) in [
        0,
        1,
        SPLIT - 1,
        SPLIT,
        SPLIT + 1,
        2 * SPLIT,
        2 * SPLIT + 1,
        1 << 20,
    ]
    .into_iter()
    .enumerate()
    {
        let p = pattern(len, i as u8);
        let r = ch.call(name("@echo"), p.clone(), None).await.unwrap();
        assert_eq!(r.len(), len);
        assert!(r == p, "payload of {len} bytes corrupted");
        let r = ch.call(name("@later"), p.clone(), None).await.unwrap();
        assert!(r == p, "payload of {len} bytes corrupted (later)");
    }
    server.stop().await;
}

#[tokio::test]
async fn sixty_four_mib_both_ways() {
    let server = Server::start(ListenerConfig::default()).await;
    let ch = server.channel();
    let p = pattern(64 << 20, 9);
    let r = ch.call(name("@echo"), p.clone(), None).await.unwrap();
    assert_eq!(r.len(), 64 << 20);
    assert!(r == p, "64 MiB payload corrupted");
    // And a 64 MiB push followed by a small call: order kept, both delivered.
    ch.push(name("@order"), p.clone()).await.unwrap();
    ch.call(name("@order"), Bytes::from_static(b"after"), None)
        .await
        .unwrap();
    let order = server.probe.order.lock().unwrap().clone();
    assert_eq!(order.len(), 2);
    assert!(order[0] == p);
    assert_eq!(&order[1][..], b"after");
    server.stop().await;
}

#[tokio::test]
async fn thousand_calls_sixty_four_in_flight() {
    let server = Server::start(ListenerConfig::default()).await;
    let ch = server.channel();
    let results: Vec<_> = futures::stream::iter(0..1000u32)
        .map(|i| {
            let ch = ch.clone();
            async move {
                let target = if i % 2 == 0 {
                    name("@echo")
                } else {
                    name("@later")
                };
                let p = Bytes::from(format!("call {i}"));
                let r = ch.call(target, p.clone(), None).await;
                (p, r)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    assert_eq!(results.len(), 1000);
    for (p, r) in results {
        assert_eq!(r.unwrap(), p);
    }
    let s = ch.stats();
    assert_eq!((s.calls, s.failures, s.in_flight), (1000, 0, 0));
    server.stop().await;
}

#[tokio::test]
async fn connect_refused_fails_fast_and_backs_off() {
    // A port that nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ch = bee_transport::Channel::new(
        "ghost",
        format!("127.0.0.1:{port}"),
        ChannelConfig {
            backoff_min: Duration::from_secs(5),
            backoff_max: Duration::from_secs(5),
            ..ChannelConfig::default()
        },
    );
    let t = Instant::now();
    let err = ch
        .call(Address::Id(1), Bytes::from_static(b"x"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot connect to node ghost at 127.0.0.1:{port}")),
        "{err}"
    );
    // Backing off: the next attempts fail at once without dialling.
    let err = ch
        .push(Address::Id(1), Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("next attempt in"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(2));
    let s = ch.stats();
    assert_eq!((s.calls, s.pushes, s.failures), (1, 1, 2));
    assert!(!s.connected);
}

#[tokio::test]
async fn refused_connects_are_retried_every_backoff_min_so_a_node_coming_back_is_reached() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let ch = bee_transport::Channel::new(
        "restarting",
        addr.clone(),
        ChannelConfig {
            backoff_min: Duration::from_millis(30),
            backoff_max: Duration::from_secs(5),
            ..ChannelConfig::default()
        },
    );
    // Every attempt past the 30 ms back-off dials again (a doubling back-off would have
    // reached 240 ms by the fourth and answered "next attempt in" instead).
    for round in 0..5 {
        let err = ch
            .call(name("@echo"), Bytes::from_static(b"x"), None)
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");
        assert!(
            !err.to_string().contains("next attempt in"),
            "round {round}: still backing off: {err}"
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    // The node comes up: the first call after one back-off period reaches it.
    let server = Server::start_on(&addr, ListenerConfig::default()).await;
    tokio::time::sleep(Duration::from_millis(40)).await;
    let reply = ch
        .call(name("@echo"), Bytes::from_static(b"back"), None)
        .await
        .expect("the node is listening again");
    assert_eq!(&reply[..], b"back");
    server.stop().await;
}

#[tokio::test]
async fn listener_dropped_with_calls_in_flight_then_back_on_same_port() {
    let server = Server::start(ListenerConfig::default()).await;
    let addr = server.addr;
    let ch = server.channel_with(ChannelConfig {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        ..ChannelConfig::default()
    });
    let calls: Vec<_> = (0..64)
        .map(|i| {
            let ch = ch.clone();
            tokio::spawn(async move {
                ch.call(name("@hold"), Bytes::from(format!("held {i}")), None)
                    .await
            })
        })
        .collect();
    server.probe.wait_received(64).await;
    assert_eq!(ch.stats().in_flight, 64);

    let t = Instant::now();
    let probe = server.probe.clone();
    server.stop().await;
    assert!(probe
        .closed_reasons()
        .iter()
        .any(|r| r == "listener shutting down"));
    for c in calls {
        let err = tokio::time::timeout(Duration::from_secs(5), c)
            .await
            .expect("a call hung after its connection dropped")
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, TransportError::NodeDown { .. }), "{err:?}");
    }
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "calls did not fail promptly"
    );
    assert_eq!(ch.stats().in_flight, 0);

    // Nobody listens now: a call fails with Connect (refused or backing off).
    let err = ch
        .call(name("@echo"), Bytes::from_static(b"x"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");

    // The node comes back on the same port; the same channel reconnects.
    let server = Server::start_on(&addr.to_string(), ListenerConfig::default()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        match ch
            .call(name("@echo"), Bytes::from_static(b"back"), None)
            .await
        {
            Ok(r) => break r,
            Err(TransportError::Connect { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("unexpected error after restart: {e:?}"),
        }
    };
    assert_eq!(&reply[..], b"back");
    let s = ch.stats();
    assert!(s.connected);
    assert_eq!(s.reconnects, 1);
    server.stop().await;
}

#[tokio::test]
async fn timeout_per_call_and_default_late_reply_dropped() {
    let server = Server::start(ListenerConfig::default()).await;
    let ch = server.channel_with(ChannelConfig {
        call_timeout: Duration::from_millis(100),
        ..ChannelConfig::default()
    });
    // Default timeout from the config.
    // The reply would come after 3 s: failing well before it is the timeout's doing.
    let t = Instant::now();
    let err = ch
        .call(name("@slow"), Bytes::from_static(b"3000"), None)
        .await
        .unwrap_err();
    match err {
        TransportError::Timeout { after, .. } => assert_eq!(after, Duration::from_millis(100)),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(ch.stats().in_flight, 0, "a timed-out session is forgotten");
    // Per-call override, longer than the default: succeeds.
    let r = ch
        .call(
            name("@slow"),
            Bytes::from_static(b"200"),
            Some(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    assert_eq!(&r[..], b"200");
    // Per-call override, shorter.
    let err = ch
        .call(
            name("@slow"),
            Bytes::from_static(b"300"),
            Some(Duration::from_millis(20)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::Timeout { after, .. } if after == Duration::from_millis(20))
    );
    // Let the late replies arrive (dropped as unknown sessions); the connection survives.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let r = ch
        .call(name("@echo"), Bytes::from_static(b"still fine"), None)
        .await
        .unwrap();
    assert_eq!(&r[..], b"still fine");
    assert_eq!(ch.stats().reconnects, 0);
    server.stop().await;
}

#[tokio::test]
async fn overloaded_when_too_many_calls_wait() {
    let server = Server::start(ListenerConfig::default()).await;
    let ch = server.channel_with(ChannelConfig {
        max_in_flight: 2,
        ..ChannelConfig::default()
    });
    let held: Vec<_> = (0..2)
        .map(|_| {
            let ch = ch.clone();
            tokio::spawn(async move { ch.call(name("@hold"), Bytes::new(), None).await })
        })
        .collect();
    server.probe.wait_received(2).await;
    let err = ch
        .call(name("@echo"), Bytes::from_static(b"x"), None)
        .await
        .unwrap_err();
    match &err {
        TransportError::Overloaded { what, .. } => assert!(what.contains("max_in_flight 2")),
        other => panic!("expected Overloaded, got {other:?}"),
    }
    // Pushes are not limited by calls in flight.
    ch.push(name("@order"), Bytes::from_static(b"p"))
        .await
        .unwrap();
    ch.close();
    for h in held {
        let err = h.await.unwrap().unwrap_err();
        assert!(matches!(err, TransportError::Closed { .. }), "{err:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn overloaded_when_too_many_bytes_queued() {
    // A peer that accepts and never reads: socket buffers fill up, then our queue.
    let raw = RawServer::bind().await;
    let ch = bee_transport::Channel::new(
        "stuck",
        raw.addr.to_string(),
        ChannelConfig {
            max_queued_bytes: 1 << 20,
            ..ChannelConfig::default()
        },
    );
    let accept = tokio::spawn(async move {
        let conn = raw.accept().await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(conn);
    });
    let chunk = Bytes::from(vec![7u8; 64 * 1024]);
    let mut overloaded = None;
    // Kernel buffers on loopback hold at most a few tens of MiB; 4000 x 64 KiB is 250 MiB.
    for i in 0..4000 {
        match ch.push(Address::Id(1), chunk.clone()).await {
            Ok(()) => tokio::task::yield_now().await,
            Err(e) => {
                overloaded = Some((i, e));
                break;
            }
        }
    }
    let (i, err) = overloaded.expect("the byte limit was never hit");
    assert!(i > 0);
    match &err {
        TransportError::Overloaded { what, .. } => {
            assert!(what.contains("max_queued_bytes 1048576"), "{what}")
        }
        other => panic!("expected Overloaded, got {other:?}"),
    }
    ch.close();
    accept.abort();
}

#[tokio::test]
async fn too_large_is_refused_before_sending() {
    let server = Server::start(ListenerConfig::default()).await;
    let ch = server.channel_with(ChannelConfig {
        max_message: 1000,
        ..ChannelConfig::default()
    });
    let err = ch
        .call(name("@echo"), Bytes::from(vec![0u8; 1001]), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::TooLarge {
                size: 1001,
                max: 1000,
                ..
            }
        ),
        "{err:?}"
    );
    let err = ch
        .push(name("@echo"), Bytes::from(vec![0u8; 1001]))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::TooLarge { .. }), "{err:?}");
    assert!(!ch.stats().connected, "nothing was sent");
    server.stop().await;
}

#[tokio::test]
async fn bad_name_is_a_codec_error() {
    let server = Server::start(ListenerConfig::default()).await;
    let ch = server.channel();
    let err = ch
        .call(Address::Name(Bytes::new()), Bytes::from_static(b"x"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Codec(_)), "{err:?}");
    // Nothing half-written: the connection still works.
    let r = ch
        .call(name("@echo"), Bytes::from_static(b"ok"), None)
        .await
        .unwrap();
    assert_eq!(&r[..], b"ok");
    server.stop().await;
}

#[tokio::test]
async fn close_fails_waiting_and_later_calls() {
    let server = Server::start(ListenerConfig::default()).await;
    let ch = server.channel();
    let waiting = {
        let ch = ch.clone();
        tokio::spawn(async move { ch.call(name("@hold"), Bytes::new(), None).await })
    };
    server.probe.wait_received(1).await;
    ch.close();
    let err = waiting.await.unwrap().unwrap_err();
    assert!(matches!(err, TransportError::Closed { .. }), "{err:?}");
    let err = ch
        .call(name("@echo"), Bytes::new(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Closed { .. }), "{err:?}");
    let err = ch.push(name("@echo"), Bytes::new()).await.unwrap_err();
    assert!(matches!(err, TransportError::Closed { .. }), "{err:?}");
    assert!(!ch.stats().connected);
    server.probe.wait_closed("peer closed the connection").await;
    server.stop().await;
}

#[tokio::test]
async fn sessions_on_the_wire() {
    let raw = RawServer::bind().await;
    let ch = bee_transport::Channel::new("raw", raw.addr.to_string(), ChannelConfig::default());
    let peer = tokio::spawn(async move {
        let mut conn = raw.accept().await;
        let mut seen = Vec::new();
        while let Some(req) = conn.next_request().await {
            if !req.push {
                conn.reply(req.session, &req.payload).await;
            }
            let done = &req.payload[..] == b"last";
            seen.push((req.session, req.push, req.payload.len()));
            if done {
                break;
            }
        }
        seen
    });
    ch.call(Address::Id(5), Bytes::from_static(b"a"), None)
        .await
        .unwrap();
    ch.call(Address::Id(5), Bytes::from_static(b"b"), None)
        .await
        .unwrap();
    ch.push(Address::Id(5), Bytes::from_static(b"whole push"))
        .await
        .unwrap();
    ch.push(Address::Id(5), pattern(SPLIT, 1)).await.unwrap();
    ch.call(Address::Id(5), pattern(SPLIT + 5, 2), None)
        .await
        .unwrap();
    ch.call(Address::Id(5), Bytes::from_static(b"last"), None)
        .await
        .unwrap();
    let seen = peer.await.unwrap();
    assert_eq!(
        seen,
        vec![
            (1, false, 1),
            (2, false, 1),
            (0, true, 10),
            (3, true, SPLIT),
            (4, false, SPLIT + 5),
            (5, false, 4),
        ]
    );
}

#[tokio::test]
async fn unknown_response_session_is_dropped() {
    let raw = RawServer::bind().await;
    let ch = bee_transport::Channel::new("raw", raw.addr.to_string(), ChannelConfig::default());
    let peer = tokio::spawn(async move {
        let mut conn = raw.accept().await;
        let req = conn.next_request().await.unwrap();
        // A reply nobody waits for (whole and multi-part), then the real one.
        conn.reply(999, b"stray").await;
        conn.reply(1000, &pattern(3 * SPLIT, 3)).await;
        let mut out = BytesMut::new();
        encode_response(&mut out, 1001, Err(b"stray error")).unwrap();
        conn.write(&out).await;
        conn.reply(req.session, b"real").await;
        let req = conn.next_request().await.unwrap();
        conn.reply(req.session, b"second").await;
        conn
    });
    let r = ch
        .call(Address::Id(1), Bytes::from_static(b"q"), None)
        .await
        .unwrap();
    assert_eq!(&r[..], b"real");
    let r = ch
        .call(Address::Id(1), Bytes::from_static(b"q2"), None)
        .await
        .unwrap();
    assert_eq!(&r[..], b"second");
    assert_eq!(ch.stats().reconnects, 0);
    drop(peer.await.unwrap());
}

#[tokio::test]
async fn malformed_response_fails_every_waiting_call_with_protocol() {
    let raw = RawServer::bind().await;
    let ch = bee_transport::Channel::new("raw", raw.addr.to_string(), ChannelConfig::default());
    let peer = tokio::spawn(async move {
        let mut conn = raw.accept().await;
        for _ in 0..3 {
            conn.next_request().await.unwrap();
        }
        // Response body: session 1, unknown type 9.
        conn.write(&[0, 5, 1, 0, 0, 0, 9]).await;
        // The channel closes the connection.
        let end = conn.reader.read_frame().await;
        assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
        // The next call reconnects.
        let mut conn = raw.accept().await;
        let req = conn.next_request().await.unwrap();
        conn.reply(req.session, b"fresh").await;
        conn
    });
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let ch = ch.clone();
            tokio::spawn(async move {
                ch.call(Address::Id(1), Bytes::from_static(b"q"), None)
                    .await
            })
        })
        .collect();
    for c in calls {
        let err = tokio::time::timeout(Duration::from_secs(5), c)
            .await
            .expect("call hung")
            .unwrap()
            .unwrap_err();
        match &err {
            TransportError::Protocol { reason, .. } => {
                assert!(reason.contains("unknown"), "{reason}")
            }
            other => panic!("expected Protocol, got {other:?}"),
        }
    }
    let r = ch
        .call(Address::Id(1), Bytes::from_static(b"q"), None)
        .await
        .unwrap();
    assert_eq!(&r[..], b"fresh");
    assert_eq!(ch.stats().reconnects, 1);
    drop(peer.await.unwrap());
}

#[tokio::test]
async fn peer_drop_fails_calls_with_node_down() {
    let raw = RawServer::bind().await;
    let ch = bee_transport::Channel::new("raw", raw.addr.to_string(), ChannelConfig::default());
    let peer = tokio::spawn(async move {
        let mut conn = raw.accept().await;
        for _ in 0..5 {
            conn.next_request().await.unwrap();
        }
        drop(conn); // killed without answering
    });
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let ch = ch.clone();
            tokio::spawn(async move {
                ch.call(Address::Id(1), Bytes::from_static(b"q"), None)
                    .await
            })
        })
        .collect();
    peer.await.unwrap();
    for c in calls {
        let err = tokio::time::timeout(Duration::from_secs(5), c)
            .await
            .expect("call hung")
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, TransportError::NodeDown { .. }), "{err:?}");
    }
    assert_eq!(ch.stats().failures, 5);
}

#[tokio::test]
async fn dropping_the_last_clone_closes_the_connection() {
    let server = Server::start(ListenerConfig::default()).await;
    let ch = server.channel();
    let clone = ch.clone();
    ch.call(name("@echo"), Bytes::from_static(b"x"), None)
        .await
        .unwrap();
    drop(ch);
    // Still one clone: the connection stays.
    clone
        .call(name("@echo"), Bytes::from_static(b"y"), None)
        .await
        .unwrap();
    assert!(server.probe.closed_reasons().is_empty());
    drop(clone);
    server.probe.wait_closed("peer closed the connection").await;
    server.stop().await;
}
