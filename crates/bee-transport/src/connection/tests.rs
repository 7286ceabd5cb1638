//! Unit tests of the write queue (direct writes, batching, order) and of the busy-polling
//! reader.

use super::*;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// A queue over one end of a loopback connection, and the other end.
async fn pair() -> (WriteQueue<()>, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dial = TcpStream::connect(listener.local_addr().unwrap());
    let (ours, theirs) = tokio::join!(dial, listener.accept());
    let (_rd, wr) = ours.unwrap().into_split();
    // Our read half is dropped: only writes matter here.
    (WriteQueue::new(wr, ()), theirs.unwrap().0)
}

/// Append `bytes` and submit them, as the channel and the listener do.
fn send(queue: &WriteQueue<()>, bytes: &[u8]) -> usize {
    let mut g = queue.lock();
    let before = g.buf.len();
    g.buf.extend_from_slice(bytes);
    queue.submit(g, before)
}

async fn read_exactly(peer: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut got = vec![0u8; n];
    tokio::time::timeout(std::time::Duration::from_secs(5), peer.read_exact(&mut got))
        .await
        .expect("bytes did not arrive")
        .unwrap();
    got
}

/// Wait until the socket is known writable (its first readiness event arrived).
async fn writable(queue: &WriteQueue<()>) {
    queue.sock().writable().await.unwrap();
}

#[tokio::test]
async fn idle_queue_writes_directly_without_a_writer_task() {
    let (queue, mut peer) = pair().await;
    writable(&queue).await;
    assert_eq!(send(&queue, b"hello"), 0, "nothing should stay queued");
    assert_eq!(send(&queue, b" world"), 0);
    assert_eq!(read_exactly(&mut peer, 11).await, b"hello world");
}

#[tokio::test]
async fn no_direct_write_while_the_writer_is_writing() {
    let (queue, mut peer) = pair().await;
    writable(&queue).await;
    // The writer has taken 3 bytes and is writing them (not yet on the wire).
    queue.lock().writing = 3;
    assert_eq!(send(&queue, b"late"), 3 + 4);
    assert_eq!(
        &queue.lock().buf[..],
        b"late",
        "must wait behind the writer"
    );
    // The writer's bytes go first, then the writer takes what was queued behind.
    queue.sock().try_write(b"abc").unwrap();
    let cancel = CancellationToken::new();
    queue.lock().writing = 0;
    let writer = run_writer(&queue, &cancel);
    let read = read_exactly(&mut peer, 7);
    tokio::pin!(writer);
    let got = tokio::select! {
        got = read => got,
        end = &mut writer => panic!("writer ended early: {end:?}"),
    };
    assert_eq!(got, b"abclate");
    assert_eq!(queue.lock().queued(), 0);
}

#[tokio::test]
async fn writer_waits_while_a_caller_writes_directly() {
    let (queue, mut peer) = pair().await;
    writable(&queue).await;
    // A caller has taken "early" and is writing it outside the lock.
    {
        let mut g = queue.lock();
        g.direct = true;
        g.writing = 5;
    }
    assert_eq!(
        send(&queue, b"late"),
        5 + 4,
        "queued behind the direct write"
    );
    let cancel = CancellationToken::new();
    let writer = run_writer(&queue, &cancel);
    tokio::pin!(writer);
    // Woken by the send, the writer must not take "late" yet.
    let idle = tokio::time::timeout(std::time::Duration::from_millis(50), &mut writer);
    assert!(idle.await.is_err(), "writer ended early");
    assert_eq!(&queue.lock().buf[..], b"late");
    // The caller's write completes; it then hands over and wakes the writer.
    queue.sock().try_write(b"early").unwrap();
    {
        let mut g = queue.lock();
        g.direct = false;
        g.writing = 0;
    }
    queue.wake.notify_one();
    let got = tokio::select! {
        got = read_exactly(&mut peer, 9) => got,
        end = &mut writer => panic!("writer ended early: {end:?}"),
    };
    assert_eq!(got, b"earlylate");
}

#[tokio::test]
async fn no_direct_write_behind_queued_bytes() {
    let (queue, mut peer) = pair().await;
    writable(&queue).await;
    queue.lock().buf.extend_from_slice(b"first ");
    // Queued bytes exist (the writer was woken but has not run): append behind them.
    assert_eq!(send(&queue, b"second"), 12);
    assert_eq!(&queue.lock().buf[..], b"first second");
    let cancel = CancellationToken::new();
    let writer = run_writer(&queue, &cancel);
    tokio::pin!(writer);
    let got = tokio::select! {
        got = read_exactly(&mut peer, 12) => got,
        end = &mut writer => panic!("writer ended early: {end:?}"),
    };
    assert_eq!(got, b"first second");
}

#[tokio::test]
async fn what_does_not_fit_is_finished_by_the_writer_in_order() {
    let (queue, mut peer) = pair().await;
    writable(&queue).await;
    // Far more than the loopback socket buffers hold while nobody reads.
    let big: Vec<u8> = (0..32u32 << 20).map(|i| (i % 251) as u8).collect();
    let left = send(&queue, &big);
    assert!(left > 0 && left < big.len(), "left {left} of {}", big.len());
    // The writer is busy with the rest: a small message must queue behind it.
    let cancel = CancellationToken::new();
    let writer = run_writer(&queue, &cancel);
    tokio::pin!(writer);
    let mut got = Vec::new();
    let mut sent_tail = false;
    let mut chunk = vec![0u8; 256 * 1024];
    while got.len() < big.len() + 4 {
        tokio::select! {
            n = peer.read(&mut chunk) => {
                let n = n.unwrap();
                assert!(n > 0, "connection closed early");
                got.extend_from_slice(&chunk[..n]);
            }
            end = &mut writer => panic!("writer ended early: {end:?}"),
        }
        if !sent_tail && got.len() > big.len() / 2 {
            send(&queue, b"tail");
            sent_tail = true;
        }
    }
    assert!(got[..big.len()] == big[..], "the large write was cut into");
    assert_eq!(&got[big.len()..], b"tail");
}

/// A busy-polling reader over one end of a loopback connection, its activity, and
/// the other end (to write frames with).
async fn polling_pair(window: Duration) -> (Connection<OwnedReadHalf>, Arc<Activity>, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dial = TcpStream::connect(listener.local_addr().unwrap());
    let (ours, theirs) = tokio::join!(dial, listener.accept());
    let (rd, wr) = ours.unwrap().into_split();
    // The write half stays open with the test: dropping it would shut our side down.
    std::mem::forget(wr);
    let activity = Arc::new(Activity::default());
    let conn = Connection::new(rd, 1024).busy_poll(window, activity.clone());
    (conn, activity, theirs.unwrap().0)
}

async fn write_all(peer: &mut TcpStream, bytes: &[u8]) {
    use tokio::io::AsyncWriteExt;
    peer.write_all(bytes).await.unwrap();
    peer.flush().await.unwrap();
}

/// Bounded wait for something that must finish promptly.
async fn soon<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .expect("did not finish")
}

/// Poll (bounded) and expect the poller to give up without data.
async fn expect_idle(conn: &mut Connection<OwnedReadHalf>) {
    assert!(matches!(
        soon(conn.poll_socket()).await.unwrap(),
        Polled::Idle
    ));
}

#[tokio::test]
async fn busy_polling_reader_reads_frames_then_a_clean_eof() {
    let (mut conn, _activity, mut peer) = polling_pair(Duration::from_secs(10)).await;
    write_all(&mut peer, b"\x00\x03abc").await;
    assert_eq!(&soon(conn.read_frame()).await.unwrap().unwrap()[..], b"abc");
    // Written while the reader spins (it is inside its window): picked up by polling.
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        write_all(&mut peer, b"\x00\x02de").await;
        peer
    });
    assert_eq!(&soon(conn.read_frame()).await.unwrap().unwrap()[..], b"de");
    drop(late.await.unwrap());
    assert!(
        soon(conn.read_frame()).await.unwrap().is_none(),
        "clean EOF"
    );
}

#[tokio::test]
async fn busy_polling_reader_reports_eof_mid_frame() {
    let (mut conn, _activity, mut peer) = polling_pair(Duration::from_secs(10)).await;
    write_all(&mut peer, b"\x00\x05ab").await;
    drop(peer);
    match soon(conn.read_frame()).await {
        Err(ReadError::EofMidFrame { buffered }) => assert_eq!(buffered, 4),
        other => panic!("expected EOF mid-frame, got {other:?}"),
    }
}

#[tokio::test]
async fn polling_finds_data_written_while_it_spins() {
    let (mut conn, _activity, mut peer) = polling_pair(Duration::from_secs(10)).await;
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        write_all(&mut peer, b"\x00\x01z").await;
        peer
    });
    assert!(matches!(
        soon(conn.poll_socket()).await.unwrap(),
        Polled::Data
    ));
    assert_eq!(&conn.buffered_frame().unwrap().unwrap()[..], b"z");
    drop(writer.await.unwrap());
}

#[tokio::test]
async fn polling_stops_when_the_window_has_passed() {
    let (mut conn, _activity, _peer) = polling_pair(Duration::from_millis(1)).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    expect_idle(&mut conn).await;
}

#[tokio::test]
async fn no_polling_while_many_requests_are_outstanding() {
    // A window of 10 s: were the gate ignored, `soon` would give up first.
    let (mut conn, activity, _peer) = polling_pair(Duration::from_secs(10)).await;
    activity.set_outstanding(SPIN_MAX_OUTSTANDING + 1);
    expect_idle(&mut conn).await;
}

#[tokio::test]
async fn no_polling_after_a_read_that_brought_several_frames() {
    let (mut conn, _activity, mut peer) = polling_pair(Duration::from_secs(10)).await;
    write_all(&mut peer, b"\x00\x01a\x00\x01b").await;
    // Let both frames land in the socket buffer, so one read takes them together.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(&soon(conn.read_frame()).await.unwrap().unwrap()[..], b"a");
    assert_eq!(&soon(conn.read_frame()).await.unwrap().unwrap()[..], b"b");
    assert_eq!(conn.spin.as_ref().unwrap().frames, 2);
    expect_idle(&mut conn).await;
    // Asked again without new data (the owner's `select!` dropped the read and made
    // a new one): still no polling, the count holds until a read brings data.
    expect_idle(&mut conn).await;
    // A read that brings one frame counts afresh.
    write_all(&mut peer, b"\x00\x01c").await;
    assert_eq!(&soon(conn.read_frame()).await.unwrap().unwrap()[..], b"c");
    assert_eq!(conn.spin.as_ref().unwrap().frames, 1);
}

#[tokio::test]
async fn queued_frames_extend_the_window() {
    let (mut conn, activity, _peer) = polling_pair(Duration::from_millis(200)).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    activity.stamp();
    let t0 = Instant::now();
    expect_idle(&mut conn).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(150),
        "stopped polling {:?} after a frame was queued",
        t0.elapsed()
    );
}
