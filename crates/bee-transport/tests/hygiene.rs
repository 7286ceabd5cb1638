//! Connection hygiene of a `Listener`: stalled partial frames, idle connections, the
//! connection limit, and running out of file descriptors (in a child process started
//! with a low `ulimit -n`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bee_codec::cluster::encode_request;
use bee_codec::frame::MAX_BODY;
use bee_transport::{ChannelConfig, Connection, ListenerConfig, TransportError};
use bytes::{Bytes, BytesMut};
use common::{expect_closed, name, read_response, wait_until, Server};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Send one request on a raw connection and read its answer.
async fn round_trip(stream: TcpStream, session: u32) -> TcpStream {
    let mut stream = stream;
    let mut out = BytesMut::new();
    encode_request(&mut out, &name("@echo"), session, b"hi").unwrap();
    stream.write_all(&out).await.unwrap();
    let mut conn = Connection::new(stream, MAX_BODY);
    let answer = tokio::time::timeout(Duration::from_secs(10), read_response(&mut conn))
        .await
        .expect("answered")
        .expect("connection open");
    assert_eq!(answer, (session, Ok(Bytes::from_static(b"hi"))));
    conn.into_inner()
}

#[tokio::test]
async fn stalled_partial_frame_is_closed_after_the_read_timeout() {
    let server = Server::start(ListenerConfig {
        read_timeout: Duration::from_millis(300),
        ..ListenerConfig::default()
    })
    .await;
    // A connection that only connects is not stalled mid-frame: it stays.
    let quiet = TcpStream::connect(server.addr).await.unwrap();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // A frame announcing 100 bytes, 10 of them sent, then nothing.
    stream.write_all(&[0, 100]).await.unwrap();
    stream.write_all(&[0u8; 10]).await.unwrap();
    let t0 = Instant::now();
    expect_closed(&mut stream).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    let reason = server.probe.wait_closed("read_timeout").await;
    assert!(reason.contains("part of a frame"), "{reason}");
    // The quiet one is still served.
    round_trip(quiet, 1).await;
    server.stop().await;
}

#[tokio::test]
async fn idle_connections_are_closed_and_channels_reconnect() {
    let server = Server::start(ListenerConfig {
        idle_timeout: Duration::from_millis(400),
        ..ListenerConfig::default()
    })
    .await;
    let stream = round_trip(TcpStream::connect(server.addr).await.unwrap(), 1).await;
    // A connection waiting for a slow answer is not idle.
    let ch = server.channel_with(ChannelConfig {
        heartbeat: Duration::ZERO,
        ..ChannelConfig::default()
    });
    let r = ch
        .call(name("@slow"), Bytes::from_static(b"900"), None)
        .await
        .unwrap();
    assert_eq!(&r[..], b"900");
    let mut stream = stream;
    expect_closed(&mut stream).await;
    server.probe.wait_closed("idle timeout").await;
    // The channel's connection goes idle and is closed too; the next call reconnects.
    wait_until("the channel's connection closed", || !ch.stats().connected).await;
    let r = ch
        .call(name("@echo"), Bytes::from_static(b"again"), None)
        .await
        .unwrap();
    assert_eq!(&r[..], b"again");
    assert_eq!(ch.stats().reconnects, 1);
    server.stop().await;
}

#[tokio::test]
async fn connections_past_the_limit_are_refused_at_once() {
    let server = Server::start(ListenerConfig {
        max_connections: 3,
        ..ListenerConfig::default()
    })
    .await;
    let mut served = Vec::new();
    for i in 0..3 {
        served.push(round_trip(TcpStream::connect(server.addr).await.unwrap(), i + 1).await);
    }
    // The fourth connects (the kernel accepts it) and is closed at once.
    let mut extra = TcpStream::connect(server.addr).await.unwrap();
    expect_closed(&mut extra).await;
    // A channel past the limit fails at once instead of hanging.
    let ch = server.channel_with(ChannelConfig {
        heartbeat: Duration::ZERO,
        ..ChannelConfig::default()
    });
    let t0 = Instant::now();
    let r = ch
        .call(
            name("@echo"),
            Bytes::from_static(b"x"),
            Some(Duration::from_secs(30)),
        )
        .await;
    assert!(matches!(r, Err(TransportError::NodeDown { .. })), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    // One slot frees up: new peers are served again.
    drop(served.pop());
    let mut ok = false;
    for _ in 0..100 {
        if let Ok(r) = ch
            .call(name("@echo"), Bytes::from_static(b"in"), None)
            .await
        {
            assert_eq!(&r[..], b"in");
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "not served after a slot freed up");
    server.stop().await;
}

/// The child side of `out_of_file_descriptors_refuses_cleanly_and_recovers` (does nothing
/// unless started by it): a listener in a process whose descriptors run out.
#[test]
#[ignore = "child process of out_of_file_descriptors_refuses_cleanly_and_recovers"]
fn fd_exhaustion_child() {
    if std::env::var_os("BEE_FD_CHILD").is_none() {
        return;
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = Server::start(ListenerConfig::default()).await;
        println!("PORT {}", server.addr.port());
        let mut hog = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            hog.push(f);
        }
        println!("EXHAUSTED {}", hog.len());
        std::io::stdout().flush().unwrap();
        // "free" on stdin gives the descriptors back; EOF ends the child.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(line) = rx.recv().await {
            if line == "free" {
                hog.clear();
                println!("FREED");
                std::io::stdout().flush().unwrap();
            }
        }
        server.stop().await;
    });
}

/// At the descriptor limit the listener refuses new peers cleanly (accept and close with
/// its spare descriptor) instead of leaving them hanging, logs about once per second with
/// a count, and serves again once descriptors are free.
#[tokio::test]
async fn out_of_file_descriptors_refuses_cleanly_and_recovers() {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -n 128 && exec "$0" --ignored --exact fd_exhaustion_child --nocapture --test-threads 1"#)
        .arg(&exe)
        .env("BEE_FD_CHILD", "1")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the child listener");
    let mut stdin = child.stdin.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let expect = |prefix: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines_rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("child never printed {prefix}"));
            // The test harness may print its own words before ours on the line.
            if let Some(at) = line.find(prefix) {
                return line[at + prefix.len()..].trim().to_string();
            }
        }
    };
    let port: u16 = expect("PORT ").parse().unwrap();
    expect("EXHAUSTED ");
    let addr = format!("127.0.0.1:{port}");
    let ch = bee_transport::Channel::new(
        "starved",
        addr.clone(),
        ChannelConfig {
            heartbeat: Duration::ZERO,
            backoff_min: Duration::from_millis(10),
            ..ChannelConfig::default()
        },
    );
    // For about two seconds, every call fails at once: refused cleanly, not hanging.
    let t0 = Instant::now();
    let mut failures = 0;
    while t0.elapsed() < Duration::from_secs(2) {
        let started = Instant::now();
        let r = ch
            .call(
                name("@echo"),
                Bytes::from_static(b"x"),
                Some(Duration::from_secs(30)),
            )
            .await;
        assert!(
            matches!(
                r,
                Err(TransportError::NodeDown { .. } | TransportError::Connect { .. })
            ),
            "{r:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "a call hung");
        failures += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(failures >= 10, "{failures}");
    writeln!(stdin, "free").unwrap();
    expect("FREED");
    let mut served = false;
    for _ in 0..100 {
        if let Ok(r) = ch
            .call(name("@echo"), Bytes::from_static(b"back"), None)
            .await
        {
            assert_eq!(&r[..], b"back");
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "not served after descriptors were freed");
    ch.close();
    drop(stdin);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "child failed: {status}");
    let log = log.join().unwrap();
    let lines: Vec<_> = log
        .iter()
        .filter(|l| l.contains("out of file descriptors"))
        .collect();
    assert!(
        !lines.is_empty(),
        "no log line about the exhaustion: {log:?}"
    );
    // Once per second with a count (about 2 s of refusals; generous margin).
    assert!(lines.len() <= 5, "{} lines: {lines:?}", lines.len());
    assert!(lines.iter().any(|l| l.contains("refused=")), "{lines:?}");
}
