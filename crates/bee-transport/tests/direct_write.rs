//! Direct writes (a lone call's caller writing to the socket itself when nothing is
//! queued) mixed with writes batched by the writer task (bursts, pushes, whatever did not
//! fit the socket buffer): bytes must leave in exactly the order they were issued, none
//! lost, none duplicated; answers likewise on the listening side. On 127.0.0.1 with
//! OS-chosen ports.

mod common;

use std::time::Duration;

use bee_codec::cluster::{
    decode_request_frame, decode_response_frame, encode_request, Address, Limits, RequestAssembler,
    ResponseAssembler, SPLIT,
};
use bee_transport::{Channel, ChannelConfig, Connection, ListenerConfig};
use bytes::{Bytes, BytesMut};
use common::{name, RawServer, Server};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A payload of `len` bytes (at least 8) starting with `tag` and `seq` (little-endian),
/// filled with a byte derived from both, so a misplaced or torn message is detected.
fn tagged(tag: u32, seq: u32, len: usize) -> Bytes {
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&tag.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    let fill = (tag.wrapping_mul(31).wrapping_add(seq) % 251) as u8;
    v.resize(len.max(8), fill);
    v.into()
}

fn untag(p: &[u8]) -> (u32, u32) {
    let tag = u32::from_le_bytes(p[0..4].try_into().unwrap());
    let seq = u32::from_le_bytes(p[4..8].try_into().unwrap());
    assert_eq!(
        p,
        &tagged(tag, seq, p.len())[..],
        "message {tag}/{seq} torn"
    );
    (tag, seq)
}

/// Read one whole response (reassembling multi-part) from a raw read half.
async fn read_response(
    conn: &mut Connection<tokio::net::tcp::OwnedReadHalf>,
) -> Option<(u32, Result<Bytes, Bytes>)> {
    let mut asm = ResponseAssembler::new(Limits::default());
    loop {
        let body = conn.read_frame().await.expect("read")?;
        let frame = decode_response_frame(body).expect("response frame");
        if let Some(r) = asm.feed(frame).expect("assembly") {
            return Some((r.session, r.result));
        }
    }
}

/// These raw peers check every message they get: no heartbeat calls among them.
fn no_heartbeat() -> ChannelConfig {
    ChannelConfig {
        heartbeat: Duration::ZERO,
        ..ChannelConfig::default()
    }
}

/// Sizes cycling through tiny, mid, just under the split and multi-part.
fn size(seq: u32) -> usize {
    match seq % 5 {
        0 => 16,
        1 => 3000,
        2 => SPLIT - 1,
        3 => 40_000,
        _ => 2 * SPLIT + 7,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_keeps_issue_order_while_the_peer_stalls_then_reads() {
    const TASKS: u32 = 4;
    const PER_TASK: u32 = 300;
    let raw = RawServer::bind().await;
    let ch = Channel::new("stalling", raw.addr.to_string(), no_heartbeat());
    let peer = tokio::spawn(async move {
        let mut conn = raw.accept().await;
        // Not reading at first: the socket buffers fill and later messages queue up.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut next = vec![0u32; TASKS as usize];
        let mut calls = Vec::new();
        let mut seen = 0;
        while seen < TASKS * PER_TASK {
            let req = conn.next_request().await.expect("a message");
            let (tag, seq) = untag(&req.payload);
            assert_eq!(req.payload.len(), size(seq));
            assert_eq!(seq, next[tag as usize], "task {tag}: message out of order");
            next[tag as usize] += 1;
            if !req.push {
                calls.push(req.session);
                conn.reply(req.session, &req.payload[..8]).await;
            }
            seen += 1;
            if seen.is_multiple_of(8) {
                // Then reading slowly, so the socket turns writable again and again while
                // callers keep issuing: direct and queued writes interleave in time.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        calls
    });
    let mut tasks = Vec::new();
    for tag in 0..TASKS {
        let ch = ch.clone();
        tasks.push(tokio::spawn(async move {
            let mut replies = Vec::new();
            for seq in 0..PER_TASK {
                let p = tagged(tag, seq, size(seq));
                if seq % 50 == 49 {
                    // A call is queued before its future first returns Pending: poll it
                    // once here (issue order), await the reply at the end.
                    let ch = ch.clone();
                    let head = p.slice(..8);
                    let mut call = Box::pin(async move { ch.call(Address::Id(9), p, None).await });
                    assert!(futures::poll!(&mut call).is_pending());
                    replies.push((head, call));
                } else {
                    ch.push(Address::Id(9), p).await.unwrap();
                }
            }
            for (head, reply) in replies {
                assert_eq!(reply.await.unwrap(), head);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let calls = peer.await.unwrap();
    assert_eq!(calls.len(), (TASKS * PER_TASK / 50) as usize);
    let s = ch.stats();
    assert_eq!((s.failures, s.in_flight), (0, 0));
    ch.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_calls_never_cut_into_a_large_write_in_progress() {
    // A large push that cannot fit the socket buffers is written over many wake-ups of
    // the writer while the peer reads slowly; a call issued meanwhile (alone on the
    // connection, nothing queued, so it would be written directly were the writer idle)
    // must wait its turn, not be written into the middle of the push when the socket
    // turns writable for a moment. Then lone calls follow, written directly.
    const BIG: usize = 6 << 20;
    const ROUNDS: u32 = 3;
    const SMALL: u32 = 100;
    let raw = RawServer::bind().await;
    let ch = Channel::new("slow", raw.addr.to_string(), no_heartbeat());
    let peer = tokio::spawn(async move {
        let mut conn = raw.accept().await;
        let mut asm = RequestAssembler::new(Limits::default());
        let mut next = 0u32;
        let mut frames = 0u64;
        while next < ROUNDS * (SMALL + 1) {
            let body = conn
                .reader
                .read_frame()
                .await
                .expect("read")
                .expect("a frame");
            let frame = decode_request_frame(body).expect("a request frame, not a torn one");
            frames += 1;
            if frames.is_multiple_of(16) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if let Some(req) = asm.feed(frame).expect("assembly") {
                let (tag, seq) = untag(&req.payload);
                assert_eq!((tag, seq), (3, next), "message out of order");
                next += 1;
                if !req.push {
                    conn.reply(req.session, b"ok").await;
                }
            }
        }
    });
    let mut seq = 0;
    for _ in 0..ROUNDS {
        ch.push(Address::Id(9), tagged(3, seq, BIG)).await.unwrap();
        seq += 1;
        for _ in 0..SMALL {
            let reply = ch.call(Address::Id(9), tagged(3, seq, 40), None).await;
            assert_eq!(&reply.unwrap()[..], b"ok");
            seq += 1;
        }
    }
    tokio::time::timeout(Duration::from_secs(20), peer)
        .await
        .expect("the peer did not get every message")
        .unwrap();
    ch.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_answers_in_order_when_the_client_reads_late() {
    const N: u32 = 600;
    let server = Server::start(ListenerConfig::default()).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        for s in 1..=N {
            let mut out = BytesMut::new();
            encode_request(&mut out, &Address::Id(1), s, &tagged(1, s, size(s))).unwrap();
            wr.write_all(&out).await.unwrap();
        }
        wr
    });
    // Answers are written while nobody reads: the socket buffers fill, the rest queues.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut conn = Connection::new(rd, bee_codec::frame::MAX_BODY);
    for s in 1..=N {
        let (session, result) =
            tokio::time::timeout(Duration::from_secs(10), read_response(&mut conn))
                .await
                .expect("answers stopped coming")
                .expect("connection closed early");
        assert_eq!(session, s, "answers out of order");
        let reply = result.expect("an ok reply");
        assert_eq!(untag(&reply), (1, s));
        assert_eq!(reply.len(), size(s));
    }
    drop(writer.await.unwrap());
    server.stop().await;
}

#[tokio::test]
async fn ready_and_later_answers_all_arrive_exactly_once() {
    let server = Server::start(ListenerConfig::default()).await;
    let ch = server.channel();
    let mut calls = Vec::new();
    for s in 0..400u32 {
        let to = if s % 3 == 0 {
            name("@later")
        } else {
            name("@echo")
        };
        let ch = ch.clone();
        calls.push(tokio::spawn(async move {
            let p = tagged(2, s, size(s));
            let r = ch.call(to, p.clone(), None).await.unwrap();
            assert_eq!(r, p);
        }));
    }
    for c in calls {
        c.await.unwrap();
    }
    let s = ch.stats();
    assert_eq!((s.calls, s.failures, s.in_flight), (400, 0, 0));
    ch.close();
    server.stop().await;
}
