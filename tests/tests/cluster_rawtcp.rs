//! Hostile peers: a raw TCP client (`std::net::TcpStream`, frames built by hand
//! from the wire spec) sends garbage, a truncated frame, a multi-part header announcing
//! more than the maximum, and a multi-part stream that never ends. Each time the node
//! closes that connection (or answers it), holds no more than bounded memory, and keeps
//! serving its other clients — checked with a normal call afterwards.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use bee_codec::seri::{self, Value};
use bee_tests::Layout;

const SERVICES: &str = r#"
[[service]]
kind = "echo"
name = "echo"
"#;

/// One frame: 2-byte big-endian length, then the body.
fn frame(body: &[u8]) -> Vec<u8> {
    assert!(body.len() <= 0xFFFF);
    let mut out = (body.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// A whole request to a `"@name"` (type 0x80).
fn name_request(name: &str, session: u32, msg: &[u8]) -> Vec<u8> {
    let mut body = vec![0x80, name.len() as u8];
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(&session.to_le_bytes());
    body.extend_from_slice(msg);
    frame(&body)
}

/// A whole request to a numeric address (type 0x00).
fn addr_request(addr: u32, session: u32, msg: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00];
    body.extend_from_slice(&addr.to_le_bytes());
    body.extend_from_slice(&session.to_le_bytes());
    body.extend_from_slice(msg);
    frame(&body)
}

/// A multi-part request header to a `"@name"` (type 0x81).
fn name_header(name: &str, session: u32, total: u32) -> Vec<u8> {
    let mut body = vec![0x81, name.len() as u8];
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(&session.to_le_bytes());
    body.extend_from_slice(&total.to_le_bytes());
    frame(&body)
}

/// A multi-part request header to a numeric address (type 0x01, 13 bytes).
fn addr_header(addr: u32, session: u32, total: u32) -> Vec<u8> {
    let mut body = vec![0x01];
    body.extend_from_slice(&addr.to_le_bytes());
    body.extend_from_slice(&session.to_le_bytes());
    body.extend_from_slice(&total.to_le_bytes());
    frame(&body)
}

/// A multi-part piece: 0x02 (more follow) or 0x03 (last).
fn piece(session: u32, data: &[u8], last: bool) -> Vec<u8> {
    let mut body = vec![if last { 0x03 } else { 0x02 }];
    body.extend_from_slice(&session.to_le_bytes());
    body.extend_from_slice(data);
    frame(&body)
}

fn connect(layout: &Layout, node: &str) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", layout.port(node))).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("write timeout");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// One response: (session, type, data).
fn read_response(stream: &mut TcpStream) -> (u32, u8, Vec<u8>) {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).expect("response length");
    let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).expect("response body");
    assert!(body.len() >= 5, "response body too short: {body:?}");
    let session = u32::from_le_bytes(body[0..4].try_into().expect("4 bytes"));
    (session, body[4], body[5..].to_vec())
}

/// A whole reply (type 1), or a multi-part one (type 2, then 3… and 4) put together.
fn read_reply(stream: &mut TcpStream, session: u32) -> Result<Vec<u8>, String> {
    let (s, kind, data) = read_response(stream);
    assert_eq!(s, session, "response to the wrong session");
    match kind {
        0 => Err(String::from_utf8_lossy(&data).into_owned()),
        1 => Ok(data),
        2 => {
            let total = u32::from_le_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
            let mut out = Vec::new();
            loop {
                let (s, kind, data) = read_response(stream);
                assert_eq!(s, session);
                assert!(data.len() <= 0x8000, "a piece is at most 0x8000 bytes");
                out.extend_from_slice(&data);
                match kind {
                    3 => continue,
                    4 => break,
                    other => panic!("unexpected response type {other} inside a multi-part reply"),
                }
            }
            assert_eq!(out.len(), total, "multi-part reply size");
            Ok(out)
        }
        other => panic!("unexpected response type {other}"),
    }
}

/// Read until the node closes the connection; fails the test if it stays open 5 s.
/// Returns the bytes read before the close (e.g. an error response).
fn expect_closed(stream: &mut TcpStream, what: &str) -> Vec<u8> {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return seen,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == ErrorKind::ConnectionReset
                    || e.kind() == ErrorKind::ConnectionAborted =>
            {
                return seen
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                panic!(
                    "{what}: the node kept the connection open for {:?}",
                    started.elapsed()
                )
            }
            Err(e) => panic!("{what}: read failed: {e}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: the node keeps talking"
        );
    }
}

fn pack(values: &[Value]) -> Vec<u8> {
    seri::pack(values).expect("pack").to_vec()
}

/// A normal call on a fresh raw connection and through an in-process client.
fn node_still_serves(layout: &Layout, node: &str) {
    let mut raw = connect(layout, node);
    let msg = pack(&[Value::from("still serving")]);
    raw.write_all(&name_request("@echo", 1, &msg))
        .expect("write");
    assert_eq!(read_reply(&mut raw, 1).expect("echo"), msg);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (_node, client) = layout.client(Duration::from_secs(5));
        let reply = client
            .call(node, "@echo", bytes::Bytes::from(msg.clone()))
            .await
            .expect("a normal call after the bad client");
        assert_eq!(&reply[..], &msg[..]);
    });
}

#[test]
fn raw_requests_get_skynet_responses() {
    let layout = Layout::new(&["raw"]);
    let _node = layout.start("raw", SERVICES);
    let mut s = connect(&layout, "raw");

    // "@name" request, answered whole.
    let msg = pack(&[Value::from("lua"), Value::from("ping")]);
    s.write_all(&name_request("@echo", 1, &msg)).expect("write");
    assert_eq!(read_reply(&mut s, 1).expect("echo"), msg);

    // Name query (numeric address 0), then a request to the address it gave.
    s.write_all(&addr_request(0, 2, &pack(&[Value::from("echo")])))
        .expect("write");
    let reply = seri::unpack(&read_reply(&mut s, 2).expect("query").into()).expect("unpack");
    let addr = reply[0].as_int().expect("an address") as u32;
    s.write_all(&addr_request(addr, 3, &msg)).expect("write");
    assert_eq!(read_reply(&mut s, 3).expect("by address"), msg);

    // Errors, as stock skynet words them.
    s.write_all(&name_request("@nosuch", 4, &msg))
        .expect("write");
    assert_eq!(read_reply(&mut s, 4), Err("Invalid name".to_string()));
    s.write_all(&addr_request(0, 5, &pack(&[Value::from("nosuch")])))
        .expect("write");
    assert_eq!(read_reply(&mut s, 5), Err("name not found".to_string()));

    // A multi-part request put together by hand (header + 0x8000-byte pieces); the reply
    // comes back multi-part.
    let big = pack(&[Value::from(vec![0x5Au8; 100_000])]);
    let mut out = name_header("@echo", 6, big.len() as u32);
    let chunks: Vec<&[u8]> = big.chunks(0x8000).collect();
    for (i, c) in chunks.iter().enumerate() {
        out.extend(piece(6, c, i + 1 == chunks.len()));
    }
    s.write_all(&out).expect("write");
    assert_eq!(read_reply(&mut s, 6).expect("multi-part echo"), big);

    // Pieces that do not add up to the announced size: "Invalid large req", and the
    // connection stays usable.
    let mut out = addr_header(addr, 7, 40_000);
    out.extend(piece(7, &[1u8; 30_000], false));
    out.extend(piece(7, &[2u8; 5_000], true));
    s.write_all(&out).expect("write");
    assert_eq!(read_reply(&mut s, 7), Err("Invalid large req".to_string()));
    s.write_all(&name_request("@echo", 8, &msg)).expect("write");
    assert_eq!(
        read_reply(&mut s, 8).expect("echo after a bad multi-part"),
        msg
    );

    // A trace frame (0x04) is accepted and ignored.
    s.write_all(&frame(b"\x04trace-tag")).expect("write");
    s.write_all(&name_request("@echo", 9, &msg)).expect("write");
    assert_eq!(
        read_reply(&mut s, 9).expect("echo after a trace frame"),
        msg
    );
}

#[test]
fn garbage_closes_that_connection_only() {
    let layout = Layout::new(&["raw"]);
    let _node = layout.start("raw", SERVICES);

    // A well-framed body with an unknown type byte.
    let mut s = connect(&layout, "raw");
    s.write_all(&frame(b"\xEEthis is no request"))
        .expect("write");
    expect_closed(&mut s, "unknown request type");

    // An empty frame body.
    let mut s = connect(&layout, "raw");
    s.write_all(&frame(b"")).expect("write");
    expect_closed(&mut s, "empty frame");

    // A numeric multi-part header of the wrong size.
    let mut s = connect(&layout, "raw");
    s.write_all(&frame(b"\x01\x02\x00\x00\x00\x01\x00\x00\x00"))
        .expect("write");
    expect_closed(&mut s, "short multi-part header");

    // A piece for a session nobody announced.
    let mut s = connect(&layout, "raw");
    s.write_all(&piece(42, b"orphan", true)).expect("write");
    expect_closed(&mut s, "orphan piece");

    // Text that is not the protocol at all (an HTTP request), then the client leaves.
    let mut s = connect(&layout, "raw");
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: bee\r\n\r\n");
    let mut noise = Vec::new();
    let mut x: u32 = 12345;
    for _ in 0..64 * 1024 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        noise.push((x >> 16) as u8);
    }
    let _ = s.write_all(&noise);
    let _ = s.shutdown(Shutdown::Write);
    expect_closed(&mut s, "random bytes");

    node_still_serves(&layout, "raw");
}

#[test]
fn truncated_frame_then_close() {
    let layout = Layout::new(&["raw"]);
    let _node = layout.start("raw", SERVICES);

    // The length says 100 bytes, 10 arrive, then the client closes its side.
    let mut s = connect(&layout, "raw");
    s.write_all(&[0x00, 100]).expect("write");
    s.write_all(&[0x80; 10]).expect("write");
    s.shutdown(Shutdown::Write).expect("shutdown");
    expect_closed(&mut s, "truncated frame");

    // Only the first byte of a length prefix.
    let mut s = connect(&layout, "raw");
    s.write_all(&[0x01]).expect("write");
    s.shutdown(Shutdown::Write).expect("shutdown");
    expect_closed(&mut s, "half a length prefix");

    // A multi-part request cut off after its first piece.
    let mut s = connect(&layout, "raw");
    let mut out = name_header("@echo", 1, 100_000);
    out.extend(piece(1, &[7u8; 0x8000], false));
    s.write_all(&out).expect("write");
    s.shutdown(Shutdown::Write).expect("shutdown");
    expect_closed(&mut s, "cut-off multi-part request");

    node_still_serves(&layout, "raw");
}

#[test]
fn multipart_header_announcing_more_than_the_maximum() {
    let layout = Layout::new(&["raw"]);
    let _node = layout.start("raw", SERVICES);

    for (what, total) in [
        ("4 GiB", u32::MAX),
        ("65 MiB + 1", 65 * 1024 * 1024 + 1),
        ("1 GiB", 1 << 30),
    ] {
        // Request and push headers, numeric and named.
        for header in [addr_header(5, 1, total), name_header("@echo", 1, total), {
            let mut h = addr_header(5, 1, total);
            h[2] = 0x41; // numeric multi-part push
            h
        }] {
            let mut s = connect(&layout, "raw");
            s.write_all(&header).expect("write");
            // A piece after it: the node must not be waiting to buffer 4 GiB.
            let _ = s.write_all(&piece(1, &[0u8; 0x8000], false));
            expect_closed(&mut s, &format!("header announcing {what}"));
        }
    }
    node_still_serves(&layout, "raw");
}

#[test]
fn multipart_stream_that_never_ends() {
    let layout = Layout::new(&["raw"]);
    let _node = layout.start("raw", SERVICES);

    // A header announcing 1 MiB, then pieces that never stop (and never say "last").
    let mut s = connect(&layout, "raw");
    s.write_all(&name_header("@echo", 1, 1 << 20))
        .expect("write");
    let writer = {
        let mut w = s.try_clone().expect("clone");
        std::thread::spawn(move || {
            let chunk = piece(1, &[0xABu8; 0x8000], false);
            let mut sent = 0usize;
            // Up to 256 MiB: far more than any limit; a write error means the node hung up.
            while sent < 256 << 20 {
                if w.write_all(&chunk).is_err() {
                    return (sent, true);
                }
                sent += chunk.len();
            }
            (sent, false)
        })
    };
    let seen = expect_closed(&mut s, "endless multi-part stream");
    let (sent, cut_off) = writer.join().expect("writer thread");
    assert!(
        cut_off,
        "the node read {sent} bytes of an endless stream without hanging up"
    );
    println!(
        "node hung up after {sent} bytes; answered {} bytes first",
        seen.len()
    );
    // If it answered before closing, the answer is skynet's error for a bad multi-part.
    if !seen.is_empty() {
        assert!(
            String::from_utf8_lossy(&seen).contains("Invalid large req"),
            "unexpected answer: {seen:?}"
        );
    }

    // Many multi-part requests begun and never finished: past the per-connection limit
    // the node hangs up instead of holding them all.
    let mut s = connect(&layout, "raw");
    let mut out = Vec::new();
    for session in 1..=1000u32 {
        out.extend(addr_header(5, session, 1 << 20));
        out.extend(piece(session, &[1u8; 16], false));
    }
    let _ = s.write_all(&out);
    expect_closed(&mut s, "1000 unfinished multi-part requests");

    node_still_serves(&layout, "raw");
}
