//! Byte budgets: node-wide outbound and inbound budgets shared by channels and listener
//! connections, expiry of unfinished multi-part requests, and calls that stopped waiting
//! being left out of the send queue.

mod common;

use std::time::{Duration, Instant};

use bee_codec::cluster::{encode_request, Address};
use bee_codec::frame::MAX_BODY;
use bee_transport::{
    ByteBudget, Channel, ChannelConfig, Connection, ListenerConfig, TransportError,
    MULTIPART_EXPIRED, OVERLOADED, PING_NAME,
};
use bytes::{Bytes, BytesMut};
use common::{expect_closed, name, read_response, wait_until, RawServer, Server};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A frame: 2-byte big-endian length, then `body`.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// No liveness machinery: these tests hold peers frozen on purpose.
fn quiet(budget: Option<ByteBudget>) -> ChannelConfig {
    ChannelConfig {
        liveness: Duration::ZERO,
        heartbeat: Duration::ZERO,
        max_timeouts: 0,
        outbound_budget: budget,
        ..ChannelConfig::default()
    }
}

/// Two channels to peers that never read share a 1 MiB outbound budget: once it is
/// used up, pushes and calls on either fail at once with `Overloaded`, memory queued stays
/// within the budget, and closing a channel gives its bytes back.
#[tokio::test]
async fn slow_consumers_are_held_under_the_node_outbound_budget() {
    let budget = ByteBudget::new(1 << 20);
    let (a, b) = (RawServer::bind().await, RawServer::bind().await);
    let cha = Channel::new("slow_a", a.addr.to_string(), quiet(Some(budget.clone())));
    let chb = Channel::new("slow_b", b.addr.to_string(), quiet(Some(budget.clone())));
    let payload = Bytes::from(vec![7u8; 4096]);
    let mut accepted = 0usize;
    let overloaded = loop {
        match cha.push(name("@sink"), payload.clone()).await {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 10_000, "never overloaded");
    };
    let _peer_a = a.accept().await;
    assert!(
        matches!(&overloaded, TransportError::Overloaded { node, what } if node == "slow_a" && what.contains("node outbound budget")),
        "{overloaded:?}"
    );
    // Kernel socket buffers took some; the rest is queued, within the budget.
    assert!(budget.used() <= budget.limit());
    assert!(
        budget.used() > budget.limit() - 8192,
        "used {}",
        budget.used()
    );
    // The other channel shares the budget: refused at once, calls too.
    let t0 = Instant::now();
    let r = chb
        .call(name("@x"), payload.clone(), Some(Duration::from_secs(30)))
        .await;
    let _peer_b = b.accept().await;
    assert!(matches!(r, Err(TransportError::Overloaded { .. })), "{r:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "not at once: {:?}",
        t0.elapsed()
    );
    // Closing the first channel gives its queued bytes back.
    cha.close();
    assert_eq!(budget.used(), 0);
    chb.push(name("@x"), payload).await.unwrap();
    assert!(budget.rejected() >= 2);
}

/// Requests held unanswered by a listener count against the node inbound budget for as
/// long as the service keeps them, whatever happens to the connection. A request that
/// does not fit is answered `Overloaded` at once, on its own session; the connection
/// stays up and keeps being read (heartbeats answered); a bee caller gets the typed
/// error. Only a message larger than the whole budget closes the connection.
#[tokio::test]
async fn listener_sheds_requests_past_the_node_inbound_budget_and_keeps_the_connection() {
    let budget = ByteBudget::new(64 * 1024);
    let server = Server::start(ListenerConfig {
        inbound_budget: Some(budget.clone()),
        ..ListenerConfig::default()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut out = BytesMut::new();
    for session in 1..=20u32 {
        encode_request(&mut out, &name("@keep"), session, &[1u8; 8000]).unwrap();
    }
    encode_request(&mut out, &name(PING_NAME), 21, b"").unwrap();
    stream.write_all(&out).await.unwrap();
    let mut conn = Connection::new(stream, MAX_BODY);
    // Eight 8000-byte requests fit in 64 KiB; the twelve others are shed one by one,
    // and the heartbeat after them is answered on the same connection.
    let mut answers = Vec::new();
    for _ in 0..13 {
        let a = tokio::time::timeout(Duration::from_secs(10), read_response(&mut conn))
            .await
            .expect("answered")
            .expect("connection open");
        answers.push(a);
    }
    for (i, (session, result)) in answers.iter().take(12).enumerate() {
        assert_eq!(*session, 9 + i as u32);
        let text = String::from_utf8_lossy(result.as_ref().unwrap_err()).into_owned();
        assert!(text.starts_with(OVERLOADED), "{text}");
        assert!(text.contains("65536"), "{text}");
    }
    assert_eq!(answers[12], (21, Ok(Bytes::new())));
    assert_eq!(server.probe.kept.lock().unwrap().len(), 8);
    assert_eq!(budget.used(), 8 * 8000);
    assert!(server.probe.closed_reasons().is_empty());

    // A bee caller tells overload from a node that is down.
    let ch = server.channel();
    let r = ch
        .call(name("@echo"), Bytes::from(vec![2u8; 8000]), None)
        .await;
    assert!(
        matches!(&r, Err(TransportError::Overloaded { node, what }) if node == "testnode" && what.contains("inbound budget")),
        "{r:?}"
    );

    // The connection goes; the service still holds the requests, so their bytes stay
    // charged until it lets them go.
    drop(conn);
    server.probe.wait_closed("peer closed").await;
    assert_eq!(budget.used(), 8 * 8000);
    server.probe.kept.lock().unwrap().clear();
    assert_eq!(budget.used(), 0);
    let r = ch
        .call(name("@echo"), Bytes::from_static(b"served again"), None)
        .await
        .unwrap();
    assert_eq!(&r[..], b"served again");

    // A multi-part message larger than the whole budget can never fit: that connection
    // is closed.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut header = vec![0x01];
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&7u32.to_le_bytes());
    header.extend_from_slice(&(100u32 << 10).to_le_bytes());
    stream.write_all(&frame(&header)).await.unwrap();
    let reason = server
        .probe
        .wait_closed("larger than the whole node inbound budget")
        .await;
    assert!(reason.contains("102400"), "{reason}");
    expect_closed(&mut stream).await;
    assert_eq!(budget.used(), 0);
    server.stop().await;
}

/// A multi-part request whose last piece never comes expires: the caller gets the
/// `MULTIPART_EXPIRED` error, the budget its header took is given back, late pieces are
/// ignored and the connection keeps working.
#[tokio::test]
async fn unfinished_multipart_request_expires() {
    let budget = ByteBudget::new(1 << 30);
    let server = Server::start(ListenerConfig {
        inbound_budget: Some(budget.clone()),
        multipart_timeout: Duration::from_millis(300),
        ..ListenerConfig::default()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // Header: request, numeric address 1, session 5, 59 MiB announced; then one piece.
    let mut header = vec![0x01];
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&5u32.to_le_bytes());
    header.extend_from_slice(&(59u32 << 20).to_le_bytes());
    let mut piece = vec![0x02];
    piece.extend_from_slice(&5u32.to_le_bytes());
    piece.extend_from_slice(&[3u8; 1000]);
    stream.write_all(&frame(&header)).await.unwrap();
    stream.write_all(&frame(&piece)).await.unwrap();
    wait_until("the header is charged", || budget.used() == 59 << 20).await;
    wait_until("the message expired and its budget was given back", || {
        budget.used() == 0
    })
    .await;
    // A late piece (last) is ignored; the next request is served normally.
    let mut last = vec![0x03];
    last.extend_from_slice(&5u32.to_le_bytes());
    last.extend_from_slice(&[3u8; 10]);
    stream.write_all(&frame(&last)).await.unwrap();
    let mut out = BytesMut::new();
    encode_request(&mut out, &Address::Id(1), 6, b"after").unwrap();
    stream.write_all(&out).await.unwrap();
    let mut conn = Connection::new(stream, MAX_BODY);
    let mut answers = Vec::new();
    for _ in 0..2 {
        let a = tokio::time::timeout(Duration::from_secs(10), read_response(&mut conn))
            .await
            .expect("answered")
            .expect("connection open");
        answers.push(a);
    }
    assert_eq!(
        answers,
        vec![
            (5, Err(Bytes::from_static(MULTIPART_EXPIRED.as_bytes()))),
            (6, Ok(Bytes::from_static(b"after")))
        ]
    );
    assert_eq!(
        server
            .probe
            .received
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    server.stop().await;
}

/// Calls that time out or are cancelled while their request still waits in the send
/// queue (behind a large push the peer is slow to read) are never written.
#[tokio::test]
async fn requests_of_calls_that_stopped_waiting_are_not_written() {
    let raw = RawServer::bind().await;
    let budget = ByteBudget::new(1 << 30);
    let ch = Channel::new("slow", raw.addr.to_string(), quiet(Some(budget.clone())));
    // 32 MiB push: far more than the loopback socket buffers hold while nobody reads.
    let big = Bytes::from(vec![1u8; 32 << 20]);
    ch.push(name("@big"), big.clone()).await.unwrap();
    let mut conn = raw.accept().await;
    for i in 0..5 {
        let r = ch
            .call(
                name("@doomed"),
                Bytes::from(format!("doomed {i}")),
                Some(Duration::from_millis(100)),
            )
            .await;
        assert!(matches!(r, Err(TransportError::Timeout { .. })), "{r:?}");
    }
    // Cancelled: the caller's future is dropped.
    let cancelled = tokio::time::timeout(
        Duration::from_millis(100),
        ch.call(name("@doomed"), Bytes::from_static(b"cancelled"), None),
    )
    .await;
    assert!(cancelled.is_err());
    let survivor = {
        let ch = ch.clone();
        tokio::spawn(async move {
            ch.call(
                name("@ok"),
                Bytes::from_static(b"survivor"),
                Some(Duration::from_secs(30)),
            )
            .await
        })
    };
    // Now read everything that was written.
    let first = conn.next_request().await.unwrap();
    assert_eq!(first.address, name("@big"));
    let next = tokio::time::timeout(Duration::from_secs(10), conn.next_request())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.address, name("@ok"), "a doomed request was written");
    conn.reply(next.session, b"fine").await;
    assert_eq!(&survivor.await.unwrap().unwrap()[..], b"fine");
    wait_until("queue drained and budget given back", || budget.used() == 0).await;
}

/// A listener that stops accepting tells each bee connection `goaway` in-band: the
/// channel retires it, so its next call opens a new connection (refused here: nobody
/// listens any more) instead of being served on the old one.
#[tokio::test]
async fn stop_accepting_tells_bee_connections_goaway() {
    use std::sync::Arc;
    use tokio_util::sync::CancellationToken;
    let listener = bee_transport::Listener::bind("127.0.0.1:0", ListenerConfig::default())
        .await
        .unwrap();
    let addr = listener.local_addr();
    let probe = Arc::new(common::Probe::default());
    let (stop, shutdown) = (CancellationToken::new(), CancellationToken::new());
    let task = tokio::spawn(listener.run_until(
        Arc::new(common::TestAcceptor {
            probe: probe.clone(),
        }),
        stop.clone(),
        shutdown.clone(),
    ));
    let ch = Channel::new("drainer", addr.to_string(), quiet(None));
    // A bee name marks the connection as a bee peer's.
    let r = ch.call(name("@bee_hello"), Bytes::new(), None).await;
    assert!(matches!(r, Err(TransportError::Remote { .. })), "{r:?}");
    ch.call(name("@echo"), Bytes::from_static(b"a"), None)
        .await
        .unwrap();
    stop.cancel();
    wait_until("the old connection retired and closed", || {
        probe.closed_reasons().len() == 1
    })
    .await;
    let r = ch.call(name("@echo"), Bytes::from_static(b"b"), None).await;
    assert!(matches!(r, Err(TransportError::Connect { .. })), "{r:?}");
    shutdown.cancel();
    task.await.unwrap();
}

/// Answers queued for a caller that does not read are held against the node's outbound
/// budget until written: past it, an answer is replaced by a short `Overloaded` error,
/// the bytes held stay within the budget, and they come back once the caller reads.
#[tokio::test]
async fn answers_to_a_caller_that_does_not_read_are_held_under_the_outbound_budget() {
    let budget = ByteBudget::new(1 << 20);
    let server = Server::start(ListenerConfig {
        outbound_budget: Some(budget.clone()),
        ..ListenerConfig::default()
    })
    .await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (rd, mut wr) = stream.into_split();
    // 400 echo requests of 32 KiB: 12.5 MiB of answers, more than the kernel's socket
    // buffers take, while the caller reads nothing.
    const N: u32 = 400;
    let writer = tokio::spawn(async move {
        let mut out = BytesMut::new();
        for session in 1..=N {
            out.clear();
            encode_request(&mut out, &name("@echo"), session, &[3u8; 32 * 1024]).unwrap();
            wr.write_all(&out).await.unwrap();
        }
        wr
    });
    let mut most = 0;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        most = most.max(budget.used());
        assert!(budget.used() <= budget.limit(), "used {}", budget.used());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        most > budget.limit() / 2,
        "answers were not held against the budget: {most}"
    );
    // The caller reads now: every request was answered, the ones past the budget with
    // Overloaded, and the budget is given back as the answers are written.
    let wr = writer.await.unwrap();
    let mut conn = Connection::new(rd.reunite(wr).unwrap(), MAX_BODY);
    let (mut echoed, mut overloaded) = (0, 0);
    for _ in 0..N {
        let (_, result) = tokio::time::timeout(Duration::from_secs(10), read_response(&mut conn))
            .await
            .expect("answered")
            .expect("connection open");
        match result {
            Ok(reply) => {
                assert_eq!(reply.len(), 32 * 1024);
                echoed += 1;
            }
            Err(text) => {
                let text = String::from_utf8_lossy(&text).into_owned();
                assert!(
                    text.starts_with(OVERLOADED) && text.contains("outbound budget"),
                    "{text}"
                );
                overloaded += 1;
            }
        }
    }
    assert!(
        echoed > 0 && overloaded > 0,
        "echoed {echoed}, overloaded {overloaded}"
    );
    wait_until("the answers' bytes given back", || budget.used() == 0).await;
    assert!(budget.rejected() > 0);
    server.stop().await;
}
