//! Dead-peer detection of a `Channel` (see `bee_transport::liveness`): heartbeats against a
//! frozen raw peer, a slow but alive peer, a stock-skynet-like peer that answers the
//! heartbeat with an error, recycling after timeouts, and reconnecting once the peer is back.

mod common;

use std::time::{Duration, Instant};

use bee_codec::cluster::encode_response;
use bee_transport::{ChannelConfig, ListenerConfig, TransportError, PING_NAME};
use bytes::{Bytes, BytesMut};
use common::{name, RawServer, Server};

fn fast_liveness() -> ChannelConfig {
    ChannelConfig {
        liveness: Duration::from_secs(1),
        heartbeat: Duration::from_millis(250),
        ..ChannelConfig::default()
    }
}

/// A peer that accepts and then neither reads nor answers: every call waiting on it fails
/// with `PeerUnreachable` within the default bound (4 s + a tick), not after its timeout.
#[tokio::test]
async fn frozen_peer_is_declared_dead_within_the_default_bound() {
    let raw = RawServer::bind().await;
    let ch = bee_transport::Channel::new("frozen", raw.addr.to_string(), ChannelConfig::default());
    let calls: Vec<_> = (0..3)
        .map(|i| {
            let ch = ch.clone();
            tokio::spawn(async move {
                let t0 = Instant::now();
                let r = ch
                    .call(
                        name("@echo"),
                        Bytes::from(vec![i; 10]),
                        Some(Duration::from_secs(60)),
                    )
                    .await;
                (r, t0.elapsed())
            })
        })
        .collect();
    // Accept, then hold the socket without ever reading it.
    let _held = tokio::time::timeout(Duration::from_secs(5), raw.accept())
        .await
        .expect("the channel connects");
    for call in calls {
        let (r, took) = tokio::time::timeout(Duration::from_secs(15), call)
            .await
            .expect("call ends well before its 60 s timeout")
            .unwrap();
        match r {
            Err(TransportError::PeerUnreachable { node, reason }) => {
                assert_eq!(node, "frozen");
                assert!(reason.contains("heartbeat"), "{reason}");
            }
            other => panic!("expected PeerUnreachable, got {other:?}"),
        }
        // Default liveness 4 s (+ 250 ms tick); generous margin for a loaded CI machine.
        assert!(took < Duration::from_secs(8), "took {took:?}");
        assert!(
            took >= Duration::from_secs(3),
            "declared dead too early: {took:?}"
        );
    }
    assert!(!ch.stats().connected);
}

/// A bee listener answers heartbeats itself, so a call that takes longer than the
/// liveness bound on the remote side is not mistaken for a dead peer, and the heartbeat
/// never reaches the service.
#[tokio::test]
async fn slow_call_on_a_live_bee_peer_survives_heartbeats() {
    let server = Server::start(ListenerConfig::default()).await;
    let ch = server.channel_with(fast_liveness());
    let r = ch
        .call(
            name("@slow"),
            Bytes::from_static(b"2500"),
            Some(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    assert_eq!(&r[..], b"2500");
    let seen = server.probe.addresses.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![name("@slow")],
        "heartbeats must not be dispatched"
    );
    server.stop().await;
}

/// A stock skynet node answers `@bee_ping` with the error `Invalid name`: still proof of
/// life. Here a raw peer does just that and answers the real call after 2.5 s.
#[tokio::test]
async fn error_answer_to_the_heartbeat_counts_as_alive() {
    let raw = RawServer::bind().await;
    let ch = bee_transport::Channel::new("skynet", raw.addr.to_string(), fast_liveness());
    let caller = {
        let ch = ch.clone();
        tokio::spawn(async move {
            ch.call(
                name("@work"),
                Bytes::from_static(b"w"),
                Some(Duration::from_secs(10)),
            )
            .await
        })
    };
    let mut conn = raw.accept().await;
    let started = Instant::now();
    let mut work = None;
    let mut pings = 0;
    while started.elapsed() < Duration::from_millis(2500) || work.is_none() {
        let req = tokio::time::timeout(Duration::from_secs(5), conn.next_request())
            .await
            .expect("heartbeats keep coming")
            .expect("connection open");
        if req.address == name(PING_NAME) {
            pings += 1;
            let mut out = BytesMut::new();
            encode_response(&mut out, req.session, Err(b"Invalid name")).unwrap();
            conn.write(&out).await;
        } else {
            work = Some(req.session);
        }
    }
    conn.reply(work.unwrap(), b"done").await;
    let r = caller.await.unwrap().unwrap();
    assert_eq!(&r[..], b"done");
    assert!(pings >= 3, "only {pings} heartbeats in 2.5 s");
}

/// Calls that time out one after another with nothing received recycle the connection:
/// a call still waiting on it fails with `PeerUnreachable` at once.
#[tokio::test]
async fn consecutive_timeouts_recycle_the_connection() {
    let raw = RawServer::bind().await;
    let config = ChannelConfig {
        heartbeat: Duration::ZERO,
        max_timeouts: 3,
        ..ChannelConfig::default()
    };
    let ch = bee_transport::Channel::new("mute", raw.addr.to_string(), config);
    let long = {
        let ch = ch.clone();
        tokio::spawn(async move {
            ch.call(
                name("@x"),
                Bytes::from_static(b"long"),
                Some(Duration::from_secs(60)),
            )
            .await
        })
    };
    let _conn = raw.accept().await;
    for _ in 0..3 {
        let r = ch
            .call(
                name("@x"),
                Bytes::from_static(b"short"),
                Some(Duration::from_millis(200)),
            )
            .await;
        assert!(matches!(r, Err(TransportError::Timeout { .. })), "{r:?}");
    }
    let r = tokio::time::timeout(Duration::from_secs(5), long)
        .await
        .expect("the waiting call fails at once")
        .unwrap();
    match r {
        Err(TransportError::PeerUnreachable { reason, .. }) => {
            assert!(reason.contains("3 calls in a row timed out"), "{reason}")
        }
        other => panic!("expected PeerUnreachable, got {other:?}"),
    }
    assert!(!ch.stats().connected);
}

/// After a frozen peer was declared dead and the node comes back on the same port, the
/// next call reconnects at once: a call succeeds within 1 s of the listener being back.
#[tokio::test]
async fn reconnects_within_a_second_after_the_peer_is_back() {
    let raw = RawServer::bind().await;
    let addr = raw.addr;
    let ch = bee_transport::Channel::new("phoenix", addr.to_string(), fast_liveness());
    let caller = {
        let ch = ch.clone();
        tokio::spawn(async move {
            ch.call(
                name("@echo"),
                Bytes::from_static(b"x"),
                Some(Duration::from_secs(30)),
            )
            .await
        })
    };
    let held = raw.accept().await;
    let r = tokio::time::timeout(Duration::from_secs(10), caller)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(r, Err(TransportError::PeerUnreachable { .. })),
        "{r:?}"
    );
    // The node is down for a while: calls fail fast.
    drop(held);
    drop(raw);
    for _ in 0..5 {
        let r = ch.call(name("@echo"), Bytes::from_static(b"x"), None).await;
        assert!(matches!(r, Err(TransportError::Connect { .. })), "{r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Back on the same port; a caller retrying every 20 ms gets through within 1 s.
    let server = Server::start_on(&addr.to_string(), ListenerConfig::default()).await;
    let back = Instant::now();
    loop {
        match ch
            .call(
                name("@echo"),
                Bytes::from_static(b"again"),
                Some(Duration::from_secs(5)),
            )
            .await
        {
            Ok(r) => {
                assert_eq!(&r[..], b"again");
                break;
            }
            Err(e) => {
                assert!(
                    back.elapsed() < Duration::from_secs(1),
                    "still failing: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(
        back.elapsed() <= Duration::from_secs(1),
        "took {:?}",
        back.elapsed()
    );
    server.stop().await;
}
