//! `ChannelConfig::ride_through`: while the peer is away (stopped, restarting), calls
//! wait for it and pushes are parked; when it is back within the bound they go out in
//! the order they were issued; past the bound calls fail with a clear error and parked
//! pushes are refused, counted and logged. Real listeners on 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use bee_transport::{ByteBudget, ChannelConfig, ListenerConfig, TransportError};
use bytes::Bytes;
use common::{name, wait_until, Server};

fn riding(ms: u64) -> ChannelConfig {
    ChannelConfig {
        ride_through: Duration::from_millis(ms),
        heartbeat: Duration::ZERO,
        ..ChannelConfig::default()
    }
}

/// Wait until the channel noticed that the peer closed the connection (a message issued
/// before that goes into the dying connection, as with any TCP sender).
async fn gone(ch: &bee_transport::Channel) {
    wait_until("the channel noticed the peer left", || {
        !ch.stats().connected
    })
    .await;
}

fn seq(i: usize) -> Bytes {
    Bytes::from(format!("{i:06}"))
}

#[tokio::test]
async fn calls_and_pushes_ride_through_a_restart_in_order() {
    let server = Server::start(ListenerConfig::default()).await;
    let addr = server.addr.to_string();
    let ch = server.channel_with(riding(5_000));
    // Connected, then the peer goes away.
    ch.call(name("@order"), seq(0), None).await.unwrap();
    server.stop().await;
    gone(&ch).await;

    // Issued while nobody listens: pushes are accepted (parked), a call waits.
    let t0 = Instant::now();
    for i in 1..=50 {
        ch.push(name("@order"), seq(i))
            .await
            .unwrap_or_else(|e| panic!("push {i} while away: {e}"));
    }
    assert!(
        ch.stats().parked > 0,
        "pushes are parked while the peer is away"
    );
    let caller = {
        let ch = ch.clone();
        tokio::spawn(async move { ch.call(name("@order"), seq(51), None).await })
    };
    // Let the call be issued before the next pushes.
    tokio::time::sleep(Duration::from_millis(20)).await;
    for i in 52..=60 {
        ch.push(name("@order"), seq(i)).await.unwrap();
    }

    // The peer comes back on the same address 400 ms later.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!caller.is_finished(), "the call waits for the peer");
    let server = Server::start_on(&addr, ListenerConfig::default()).await;
    let reply = tokio::time::timeout(Duration::from_secs(5), caller)
        .await
        .expect("the waiting call ends once the peer is back")
        .unwrap()
        .expect("the waiting call is answered");
    assert_eq!(&reply[..], b"ok");
    assert!(t0.elapsed() >= Duration::from_millis(400));

    server.probe.wait_received(60).await;
    let order = server.probe.order.lock().unwrap().clone();
    let want: Vec<Bytes> = (1..=60).map(seq).collect();
    assert_eq!(order, want, "every message arrives once, in issue order");
    let s = ch.stats();
    assert_eq!((s.parked, s.pushes_refused, s.failures), (0, 0, 0));
    server.stop().await;
    gone(&ch).await;
}

#[tokio::test]
async fn past_the_bound_calls_fail_and_parked_pushes_are_counted_as_refused() {
    let server = Server::start(ListenerConfig::default()).await;
    let ch = server.channel_with(riding(2_000));
    ch.call(name("@echo"), seq(0), None).await.unwrap();
    server.stop().await;
    gone(&ch).await;

    for i in 1..=5 {
        ch.push(name("@order"), seq(i)).await.unwrap();
    }
    let t0 = Instant::now();
    let err = ch
        .call(name("@echo"), seq(6), None)
        .await
        .expect_err("the peer stays away");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(1_900) && waited < Duration::from_secs(15),
        "the call waits about ride_through, not its 30 s timeout: {waited:?}"
    );
    assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("away for") && text.contains("ride_through"),
        "{text}"
    );

    wait_until("the parked pushes are refused", || {
        ch.stats().pushes_refused == 5
    })
    .await;
    let s = ch.stats();
    assert_eq!(s.parked, 0);
    assert!(s.failures >= 6, "refused pushes count as failures: {s:?}");

    // Once past the bound, messages fail at once (as without ride-through).
    let t0 = Instant::now();
    let err = ch
        .push(name("@order"), seq(7))
        .await
        .expect_err("still away");
    // Well under the 2 s ride-through: it did not wait again.
    assert!(
        t0.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        t0.elapsed()
    );
    assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");
}

#[tokio::test]
async fn a_call_waits_no_longer_than_its_own_timeout() {
    let server = Server::start(ListenerConfig::default()).await;
    let ch = server.channel_with(riding(10_000));
    ch.call(name("@echo"), seq(0), None).await.unwrap();
    server.stop().await;
    gone(&ch).await;
    let t0 = Instant::now();
    let err = ch
        .call(name("@echo"), seq(1), Some(Duration::from_millis(300)))
        .await
        .expect_err("the peer stays away");
    assert!(matches!(err, TransportError::Timeout { .. }), "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn parked_bytes_are_bounded_per_peer_and_by_the_node_budget() {
    let server = Server::start(ListenerConfig::default()).await;
    let ch = server.channel_with(ChannelConfig {
        max_parked_bytes: 1_000,
        ..riding(5_000)
    });
    ch.call(name("@echo"), seq(0), None).await.unwrap();
    server.stop().await;
    gone(&ch).await;
    let chunk = Bytes::from(vec![7u8; 400]);
    ch.push(name("@order"), chunk.clone()).await.unwrap();
    ch.push(name("@order"), chunk.clone()).await.unwrap();
    let err = ch
        .push(name("@order"), chunk.clone())
        .await
        .expect_err("past max_parked_bytes");
    assert!(
        matches!(err, TransportError::Overloaded { .. }) && err.to_string().contains("parked"),
        "{err}"
    );
    assert_eq!(ch.stats().parked, 2);

    let budget = ByteBudget::new(500);
    let server = Server::start(ListenerConfig::default()).await;
    let ch = server.channel_with(ChannelConfig {
        outbound_budget: Some(budget.clone()),
        ..riding(5_000)
    });
    ch.call(name("@echo"), seq(0), None).await.unwrap();
    server.stop().await;
    gone(&ch).await;
    ch.push(name("@order"), chunk.clone()).await.unwrap();
    assert_eq!(
        budget.used(),
        400,
        "parked bytes are charged to the node budget"
    );
    let err = ch
        .push(name("@order"), chunk)
        .await
        .expect_err("past the node budget");
    assert!(err.to_string().contains("outbound budget"), "{err}");
    ch.close();
    wait_until("the parked push is refused after close", || {
        ch.stats().pushes_refused == 1
    })
    .await;
    wait_until("its bytes go back to the budget", || budget.used() == 0).await;
}
