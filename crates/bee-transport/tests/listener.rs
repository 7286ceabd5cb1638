//! Listening side: raw TCP clients (well-formed and malformed) against a `Listener` on
//! 127.0.0.1 with an OS-chosen port.

mod common;

use std::time::Duration;

use bee_codec::cluster::{encode_push, encode_request, Address, SPLIT};
use bee_codec::frame::MAX_BODY;
use bee_transport::{Connection, ListenerConfig, INVALID_LARGE_REQ};
use bytes::{BufMut, Bytes, BytesMut};
use common::{expect_closed, name, pattern, read_response, Server};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A frame: 2-byte big-endian length, then `body`.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// Multi-part request header, numeric address.
fn header(addr: u32, session: u32, total: u32) -> Vec<u8> {
    let mut b = vec![0x01];
    b.extend_from_slice(&addr.to_le_bytes());
    b.extend_from_slice(&session.to_le_bytes());
    b.extend_from_slice(&total.to_le_bytes());
    frame(&b)
}

/// Multi-part piece (`last` = type 3, else 2).
fn piece(session: u32, data: &[u8], last: bool) -> Vec<u8> {
    let mut b = vec![if last { 0x03 } else { 0x02 }];
    b.extend_from_slice(&session.to_le_bytes());
    b.extend_from_slice(data);
    frame(&b)
}

/// Check the listener still serves a fresh client through a real channel.
async fn still_serves(server: &Server) {
    let ch = server.channel();
    let r = ch
        .call(name("@echo"), Bytes::from_static(b"still here"), None)
        .await
        .unwrap();
    assert_eq!(&r[..], b"still here");
    ch.close();
}

#[tokio::test]
async fn raw_client_request_push_and_clean_eof() {
    let server = Server::start(ListenerConfig::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut out = BytesMut::new();
    encode_push(&mut out, &name("@order"), 0, b"pushed").unwrap();
    encode_request(&mut out, &Address::Id(3), 7, b"ping").unwrap();
    encode_request(&mut out, &name("@fail"), 8, b"x").unwrap();
    encode_request(&mut out, &name("@echo"), 9, &pattern(SPLIT + 3, 1)).unwrap();
    stream.write_all(&out).await.unwrap();
    stream.shutdown().await.unwrap(); // half-close: we still read the answers

    let mut conn = Connection::new(stream, MAX_BODY);
    let mut answers = Vec::new();
    while let Some(a) = read_response(&mut conn).await {
        answers.push(a);
    }
    assert_eq!(answers.len(), 3, "a push gets no answer");
    assert_eq!(answers[0], (7, Ok(Bytes::from_static(b"ping"))));
    assert_eq!(answers[1], (8, Err(Bytes::from_static(b"Invalid name"))));
    assert_eq!(answers[2].0, 9);
    assert!(answers[2].1.as_ref().unwrap() == &pattern(SPLIT + 3, 1));
    assert_eq!(
        server.probe.order.lock().unwrap().clone(),
        vec![Bytes::from_static(b"pushed")]
    );
    let reason = server.probe.wait_closed("peer closed").await;
    assert_eq!(reason, "peer closed the connection");
    server.stop().await;
}

#[tokio::test]
async fn later_answers_come_back_out_of_order_but_dispatch_is_in_order() {
    let server = Server::start(ListenerConfig::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut out = BytesMut::new();
    encode_request(&mut out, &name("@slow"), 1, b"300").unwrap();
    encode_request(&mut out, &name("@order"), 2, b"second").unwrap();
    encode_request(&mut out, &name("@slow"), 3, b"10").unwrap();
    stream.write_all(&out).await.unwrap();
    let mut conn = Connection::new(stream, MAX_BODY);
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let (s, r) = read_response(&mut conn).await.unwrap();
        assert!(r.is_ok());
        sessions.push(s);
    }
    // The slow one does not block the others.
    assert_eq!(sessions, vec![2, 3, 1]);
    let addrs = server.probe.addresses.lock().unwrap().clone();
    assert_eq!(addrs, vec![name("@slow"), name("@order"), name("@slow")]);
    server.stop().await;
}

#[tokio::test]
async fn size_mismatch_is_answered_invalid_large_req() {
    let server = Server::start(ListenerConfig::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut out = Vec::new();
    // Announces 40000 bytes, ends after 32768.
    out.extend(header(1, 5, 40000));
    out.extend(piece(5, &vec![1u8; SPLIT], true));
    // A multi-part push that does not add up: dropped, not answered.
    let mut b = vec![0x41];
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&6u32.to_le_bytes());
    b.extend_from_slice(&40000u32.to_le_bytes());
    out.extend(frame(&b));
    out.extend(piece(6, b"short", true));
    // The connection is still usable.
    let mut whole = BytesMut::new();
    encode_request(&mut whole, &Address::Id(1), 7, b"after").unwrap();
    out.extend_from_slice(&whole);
    stream.write_all(&out).await.unwrap();
    let mut conn = Connection::new(stream, MAX_BODY);
    assert_eq!(
        read_response(&mut conn).await.unwrap(),
        (5, Err(Bytes::from_static(INVALID_LARGE_REQ.as_bytes())))
    );
    assert_eq!(
        read_response(&mut conn).await.unwrap(),
        (7, Ok(Bytes::from_static(b"after")))
    );
    assert!(server.probe.closed_reasons().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn garbage_closes_that_connection_only() {
    let server = Server::start(ListenerConfig::default()).await;
    let ch = server.channel();
    ch.call(name("@echo"), Bytes::from_static(b"warm"), None)
        .await
        .unwrap();

    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // A frame of unknown type 0x77.
    stream
        .write_all(&frame(&[0x77, 1, 2, 3, 4, 5, 6, 7, 8]))
        .await
        .unwrap();
    expect_closed(&mut stream).await;
    let reason = server.probe.wait_closed("undecodable").await;
    assert!(reason.contains("0x77"), "{reason}");

    // A whole request too short to hold its session.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(&frame(&[0x00, 1, 0])).await.unwrap();
    expect_closed(&mut stream).await;

    // The established channel and a new one both still work.
    let r = ch
        .call(name("@echo"), Bytes::from_static(b"same"), None)
        .await
        .unwrap();
    assert_eq!(&r[..], b"same");
    still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn truncated_frame_is_eof_mid_frame() {
    let server = Server::start(ListenerConfig::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // Announces 16 bytes, sends 3, then closes its side.
    stream.write_all(&[0x00, 0x10, 1, 2, 3]).await.unwrap();
    stream.shutdown().await.unwrap();
    expect_closed(&mut stream).await;
    let reason = server.probe.wait_closed("mid-frame").await;
    assert!(reason.contains("5 bytes"), "{reason}");
    still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn header_past_max_message_closes() {
    let server = Server::start(ListenerConfig {
        max_message: 1 << 20,
        ..ListenerConfig::default()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(&header(1, 1, (1 << 20) + 1))
        .await
        .unwrap();
    expect_closed(&mut stream).await;
    let reason = server.probe.wait_closed("exceeds").await;
    assert!(reason.contains("1048576"), "{reason}");
    still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn endless_multipart_stream_is_cut_off() {
    let server = Server::start(ListenerConfig {
        max_message: 1 << 20,
        ..ListenerConfig::default()
    })
    .await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    // Writer: a header within the limit, then pieces that never stop.
    let writer = tokio::spawn(async move {
        let mut sent = 0usize;
        if wr.write_all(&header(1, 1, 100_000)).await.is_err() {
            return sent;
        }
        let p = piece(1, &vec![0u8; SPLIT], false);
        while sent < (256 << 20) {
            if wr.write_all(&p).await.is_err() {
                break;
            }
            sent += SPLIT;
        }
        sent
    });
    // The listener answers the broken request, then closes on the orphan pieces.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "connection not closed");
    let sent = writer.await.unwrap();
    assert!(
        sent < (256 << 20),
        "the listener kept reading an endless stream"
    );
    let reasons = server.probe.closed_reasons();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("bad multi-part request"), "{reasons:?}");
    still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn too_many_half_assembled_messages_close() {
    let server = Server::start(ListenerConfig {
        max_pending_multipart: 4,
        ..ListenerConfig::default()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut out = Vec::new();
    for s in 1..=5 {
        out.extend(header(1, s, 50_000));
    }
    stream.write_all(&out).await.unwrap();
    expect_closed(&mut stream).await;
    let reason = server.probe.wait_closed("too many").await;
    assert!(reason.contains("limit 4"), "{reason}");
    still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn trace_frames_are_accepted() {
    let server = Server::start(ListenerConfig::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut out = frame(b"\x04trace-tag");
    let mut req = BytesMut::new();
    encode_request(&mut req, &Address::Id(1), 1, b"traced").unwrap();
    out.extend_from_slice(&req);
    stream.write_all(&out).await.unwrap();
    let mut conn = Connection::new(stream, MAX_BODY);
    assert_eq!(
        read_response(&mut conn).await.unwrap(),
        (1, Ok(Bytes::from_static(b"traced")))
    );
    server.stop().await;
}

#[tokio::test]
async fn too_large_reply_becomes_an_error_response() {
    let server = Server::start(ListenerConfig {
        max_message: 2 * SPLIT,
        ..ListenerConfig::default()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut out = BytesMut::new();
    // Within the limit both ways.
    encode_request(&mut out, &name("@double"), 1, &pattern(SPLIT, 4)).unwrap();
    // The request fits, its reply (3 * SPLIT) does not.
    encode_request(
        &mut out,
        &name("@double"),
        2,
        &pattern(SPLIT + SPLIT / 2, 4),
    )
    .unwrap();
    stream.write_all(&out).await.unwrap();
    let mut conn = Connection::new(stream, MAX_BODY);
    let (s, r) = read_response(&mut conn).await.unwrap();
    assert_eq!(s, 1);
    assert_eq!(r.unwrap().len(), 2 * SPLIT);
    let (s, r) = read_response(&mut conn).await.unwrap();
    assert_eq!(s, 2);
    let text = String::from_utf8(r.unwrap_err().to_vec()).unwrap();
    assert!(text.contains("larger than the maximum"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_connections_and_stops() {
    let server = Server::start(ListenerConfig::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut out = BytesMut::new();
    encode_request(&mut out, &name("@hold"), 1, b"").unwrap();
    stream.write_all(&out).await.unwrap();
    server.probe.wait_received(1).await;
    let probe = server.probe.clone();
    let addr = server.addr;
    server.stop().await;
    expect_closed(&mut stream).await;
    assert_eq!(probe.closed_reasons(), vec!["listener shutting down"]);
    // Nothing accepts any more.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn bind_error_names_the_address() {
    let server = Server::start(ListenerConfig::default()).await;
    let taken = server.addr.to_string();
    let err = bee_transport::Listener::bind(&taken, ListenerConfig::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("cannot listen on {taken}")),
        "{err}"
    );
    server.stop().await;
}

#[tokio::test]
async fn read_frame_tells_clean_eof_from_mid_frame() {
    let (a, b) = tokio::io::duplex(64);
    let mut conn = Connection::new(a, MAX_BODY);
    let mut b = b;
    let mut bytes = BytesMut::new();
    bytes.put_u16(3);
    bytes.put_slice(b"abc");
    bytes.put_u16(2);
    bytes.put_slice(b"de");
    b.write_all(&bytes).await.unwrap();
    drop(b);
    assert_eq!(conn.read_frame().await.unwrap().unwrap(), &b"abc"[..]);
    assert_eq!(conn.read_frame().await.unwrap().unwrap(), &b"de"[..]);
    assert!(conn.read_frame().await.unwrap().is_none());

    let (a, mut b) = tokio::io::duplex(64);
    let mut conn = Connection::new(a, MAX_BODY);
    b.write_all(&[0, 9, 1, 2]).await.unwrap();
    drop(b);
    let err = conn.read_frame().await.unwrap_err();
    assert!(err.to_string().contains("mid-frame"), "{err}");
}

#[tokio::test]
async fn stops_reading_past_max_outstanding() {
    let server = Server::start(ListenerConfig {
        max_outstanding: 2,
        ..ListenerConfig::default()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut out = BytesMut::new();
    for s in 1..=3 {
        encode_request(&mut out, &name("@hold"), s, b"").unwrap();
    }
    encode_request(&mut out, &name("@echo"), 4, b"blocked").unwrap();
    stream.write_all(&out).await.unwrap();
    server.probe.wait_received(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server
            .probe
            .received
            .load(std::sync::atomic::Ordering::SeqCst),
        2,
        "requests past max_outstanding were read"
    );
    server.stop().await;
}

#[tokio::test]
async fn stops_reading_while_answers_pile_up() {
    // A client that sends requests and never reads the answers.
    let server = Server::start(ListenerConfig {
        max_queued_bytes: 1 << 20,
        ..ListenerConfig::default()
    })
    .await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (_rd, mut wr) = stream.into_split();
    let total = 4000u32;
    let writer = tokio::spawn(async move {
        let payload = vec![5u8; 30_000];
        for s in 1..=total {
            let mut out = BytesMut::new();
            encode_request(&mut out, &Address::Id(1), s, &payload).unwrap();
            if wr.write_all(&out).await.is_err() {
                break;
            }
        }
        wr
    });
    // Wait until dispatching stalls.
    let received = || {
        server
            .probe
            .received
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    let mut last = usize::MAX;
    while received() != last {
        last = received();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // 4000 x 30 KB = 120 MB were offered; only the queue limit plus kernel socket
    // buffers' worth may have been answered.
    assert!(last > 0);
    assert!(
        last < total as usize / 2,
        "{last} requests dispatched although nobody reads the answers"
    );
    writer.abort();
    server.stop().await;
}
