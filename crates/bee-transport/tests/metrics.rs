//! The transport's metrics, read back through `metrics-util`'s debugging recorder
//! (installed process-wide, so this file holds one test).

mod common;

use std::time::Duration;

use bee_transport::telemetry::*;
use bee_transport::{ByteBudget, ChannelConfig, ListenerConfig, TransportError};
use bytes::Bytes;
use common::{expect_closed, name, Server};
use metrics::{SharedString, Unit};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::CompositeKey;
use tokio::net::TcpStream;

type Snap = Vec<(CompositeKey, Option<Unit>, Option<SharedString>, DebugValue)>;

/// The value of metric `name` whose labels include all of `labels`.
fn value<'a>(snap: &'a Snap, name: &str, labels: &[(&str, &str)]) -> Option<&'a DebugValue> {
    snap.iter()
        .find(|(k, ..)| {
            let key = k.key();
            key.name() == name
                && labels
                    .iter()
                    .all(|(l, v)| key.labels().any(|x| x.key() == *l && x.value() == *v))
        })
        .map(|(.., v)| v)
}

fn counter(snap: &Snap, name: &str, labels: &[(&str, &str)]) -> u64 {
    match value(snap, name, labels) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name} {labels:?}: {other:?}"),
    }
}

#[tokio::test]
async fn channel_and_listener_metrics_are_emitted() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");

    let server = Server::start(ListenerConfig {
        max_connections: 1,
        ..ListenerConfig::default()
    })
    .await;
    let listener = server.addr.to_string();
    let ch = server.channel_with(ChannelConfig {
        outbound_budget: Some(ByteBudget::new(100)),
        ..ChannelConfig::default()
    });
    for _ in 0..3 {
        ch.call(name("@echo"), Bytes::from_static(b"m"), None)
            .await
            .unwrap();
    }
    let remote = ch.call(name("@fail"), Bytes::from_static(b"m"), None).await;
    assert!(matches!(remote, Err(TransportError::Remote { .. })));
    ch.push(name("@order"), Bytes::from_static(b"p"))
        .await
        .unwrap();
    ch.push(name("@order"), Bytes::from_static(b"p"))
        .await
        .unwrap();
    // Larger than the whole outbound budget: refused.
    let big = ch.push(name("@order"), Bytes::from(vec![0u8; 200])).await;
    assert!(matches!(big, Err(TransportError::Overloaded { .. })));
    // A second connection is past max_connections.
    let mut extra = TcpStream::connect(server.addr).await.unwrap();
    expect_closed(&mut extra).await;
    // A final call: the pushes before it were dispatched.
    ch.call(name("@echo"), Bytes::from_static(b"end"), None)
        .await
        .unwrap();

    // One snapshot: the debugging recorder drains counters and histograms as it reads.
    let snap = snap.snapshot().into_vec();
    let node = [("node", "testnode")];
    assert_eq!(counter(&snap, CHANNEL_CALLS, &node), 5);
    assert_eq!(counter(&snap, CHANNEL_PUSHES, &node), 3);
    assert_eq!(
        counter(
            &snap,
            CHANNEL_ERRORS,
            &[("node", "testnode"), ("kind", "remote")]
        ),
        1
    );
    assert_eq!(
        counter(
            &snap,
            CHANNEL_ERRORS,
            &[("node", "testnode"), ("kind", "overloaded")]
        ),
        1
    );
    assert_eq!(
        counter(
            &snap,
            CHANNEL_REJECTIONS,
            &[("node", "testnode"), ("limit", "outbound_budget")]
        ),
        1
    );
    assert_eq!(counter(&snap, CHANNEL_CONNECTS, &node), 1);
    assert!(counter(&snap, CHANNEL_BYTES_OUT, &node) > 0);
    assert!(counter(&snap, CHANNEL_BYTES_IN, &node) > 0);
    match value(&snap, CHANNEL_CALL_SECONDS, &node) {
        // Five answered calls (an error answer is an answer).
        Some(DebugValue::Histogram(samples)) => assert_eq!(samples.len(), 5),
        other => panic!("latency histogram: {other:?}"),
    }
    match value(&snap, CHANNEL_CONNECTED, &node) {
        Some(DebugValue::Gauge(v)) => assert_eq!(v.into_inner(), 1.0),
        other => panic!("connected gauge: {other:?}"),
    }

    let l = [("listener", listener.as_str())];
    assert_eq!(counter(&snap, LISTENER_ACCEPTED, &l), 1);
    assert_eq!(
        counter(
            &snap,
            LISTENER_REFUSED,
            &[
                ("listener", listener.as_str()),
                ("reason", "max_connections")
            ]
        ),
        1
    );
    assert_eq!(counter(&snap, LISTENER_REQUESTS, &l), 7);
    assert!(counter(&snap, LISTENER_BYTES_IN, &l) > 0);
    assert!(counter(&snap, LISTENER_BYTES_OUT, &l) > 0);
    match value(&snap, LISTENER_OPEN, &l) {
        Some(DebugValue::Gauge(v)) => assert_eq!(v.into_inner(), 1.0),
        other => panic!("open connections gauge: {other:?}"),
    }
    ch.close();
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
}
