//! The floor: a bare tokio TCP echo with the cluster protocol's framing (2-byte
//! big-endian length, then the body) and the same message sizes as B2..B5, no
//! framework in between. Whatever bee costs on top of this is bee's own cost.
//!
//! Body of every frame: one kind byte, then data.
//! - `E`: echo — the server writes the same frame back;
//! - `P`: push — the server counts it, no reply;
//! - `C`: count — the server answers `C` + the push count (u64 big-endian).
//!
//! Like a cluster channel, the client keeps one connection; a 1 MiB message goes as
//! 32 KiB pieces (the cluster protocol's multi-part piece size). Both sides read through
//! a buffer and write whatever accumulated with one `write_all` once the read buffer is
//! drained, the same batching a well-written framework does.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use crate::stats::Latencies;
use crate::BenchError;

const ECHO: u8 = b'E';
const PUSH: u8 = b'P';
const COUNT: u8 = b'C';
/// Piece size of a large message (the cluster protocol's multi-part piece).
pub const PIECE: usize = 0x8000;

/// How much of each measurement to run.
#[derive(Debug, Clone)]
pub struct FloorParams {
    /// B2: round trips measured (after 1000 warm-up ones).
    pub b2_calls: usize,
    /// B3: seconds.
    pub b3_seconds: f64,
    /// B3: requests in flight.
    pub b3_inflight: usize,
    /// B4: pushes.
    pub b4_pushes: usize,
    /// B5: seconds.
    pub b5_seconds: f64,
}

impl FloorParams {
    /// Same sizes as the full cluster run.
    pub fn full() -> FloorParams {
        FloorParams {
            b2_calls: 20_000,
            b3_seconds: 5.0,
            b3_inflight: 64,
            b4_pushes: 500_000,
            b5_seconds: 5.0,
        }
    }

    /// A tenth of each.
    pub fn quick() -> FloorParams {
        FloorParams {
            b2_calls: 2_000,
            b3_seconds: 1.0,
            b3_inflight: 64,
            b4_pushes: 50_000,
            b5_seconds: 1.0,
        }
    }
}

/// What the floor measured (names as in [`crate::cluster::ClusterResult`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FloorResult {
    /// Which client produced this.
    pub client: String,
    /// B2 median round trip, µs (16-byte message).
    pub b2_p50_us: f64,
    /// B2 99th percentile, µs.
    pub b2_p99_us: f64,
    /// B2 mean, µs.
    pub b2_mean_us: f64,
    /// B2 largest, µs.
    pub b2_max_us: f64,
    /// B2 wrong replies.
    pub b2_errors: u64,
    /// B3 round trips per second with `b3_inflight` in flight.
    pub b3_calls_per_s: f64,
    /// B3 in flight.
    pub b3_inflight: usize,
    /// B3 wrong replies.
    pub b3_errors: u64,
    /// B4 pushes sent.
    pub b4_pushes: u64,
    /// B4 pushes counted by the server per second.
    pub b4_pushes_per_s: f64,
    /// B4 pushes never counted.
    pub b4_lost: u64,
    /// B5 MiB per second, one direction.
    pub b5_mib_per_s: f64,
    /// B5 wrong replies.
    pub b5_errors: u64,
}

/// Serve the floor protocol on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) -> Result<(), BenchError> {
    let pushes = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let pushes = pushes.clone();
        tokio::spawn(async move {
            // A closed or broken connection just ends this task.
            let _ = serve_conn(stream, &pushes).await;
        });
    }
}

async fn serve_conn(stream: TcpStream, pushes: &AtomicU64) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut body = Vec::with_capacity(PIECE + 1);
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        if !read_frame(&mut r, &mut body).await? {
            return Ok(());
        }
        match body.first() {
            Some(&ECHO) => put_frame(&mut out, &body),
            Some(&PUSH) => {
                pushes.fetch_add(1, Ordering::Relaxed);
            }
            Some(&COUNT) => {
                let mut reply = vec![COUNT];
                reply.extend_from_slice(&pushes.load(Ordering::Relaxed).to_be_bytes());
                put_frame(&mut out, &reply);
            }
            _ => return Ok(()),
        }
        if r.buffer().is_empty() && !out.is_empty() {
            w.write_all(&out).await?;
            out.clear();
        }
    }
}

/// Read one frame's body into `body`; `false` on a clean end of stream.
async fn read_frame(r: &mut BufReader<OwnedReadHalf>, body: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut head = [0u8; 2];
    if r.fill_buf().await?.is_empty() {
        return Ok(false);
    }
    r.read_exact(&mut head).await?;
    let len = u16::from_be_bytes(head) as usize;
    body.resize(len, 0);
    r.read_exact(body).await?;
    Ok(true)
}

fn put_frame(out: &mut Vec<u8>, body: &[u8]) {
    let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body[..len as usize]);
}

/// One client connection.
struct Conn {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
    out: Vec<u8>,
    body: Vec<u8>,
}

impl Conn {
    async fn connect(addr: &str) -> Result<Conn, BenchError> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let (r, w) = s.into_split();
        Ok(Conn {
            r: BufReader::with_capacity(64 * 1024, r),
            w,
            out: Vec::with_capacity(64 * 1024),
            body: Vec::with_capacity(PIECE + 1),
        })
    }

    async fn flush(&mut self) -> Result<(), BenchError> {
        if !self.out.is_empty() {
            self.w.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// The next frame's body (an error at end of stream).
    async fn next(&mut self) -> Result<&[u8], BenchError> {
        if !read_frame(&mut self.r, &mut self.body).await? {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            )
            .into());
        }
        Ok(&self.body)
    }

    async fn count(&mut self) -> Result<u64, BenchError> {
        put_frame(&mut self.out, &[COUNT]);
        self.flush().await?;
        let b = self.next().await?;
        match b {
            [COUNT, n @ ..] if n.len() == 8 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(n);
                Ok(u64::from_be_bytes(a))
            }
            _ => Err(BenchError::BadReply {
                what: "floor count".into(),
                reason: format!("{} bytes", b.len()),
            }),
        }
    }
}

/// A 16-byte echo body: kind, then the 15 low bytes identifying the request.
fn small(id: u64) -> [u8; 16] {
    let mut b = [b'.'; 16];
    b[0] = ECHO;
    b[8..16].copy_from_slice(&id.to_be_bytes());
    b
}

/// Run B2..B5 of the floor against a server at `addr`.
pub async fn run_client(addr: &str, p: &FloorParams) -> Result<FloorResult, BenchError> {
    let mut c = Conn::connect(addr).await?;
    let mut res = FloorResult {
        client: "tokio-floor".into(),
        ..FloorResult::default()
    };

    // B2: one in flight.
    let mut lat = Latencies::with_capacity(p.b2_calls);
    for i in 0..(1000 + p.b2_calls) as u64 {
        let req = small(i);
        let t0 = Instant::now();
        put_frame(&mut c.out, &req);
        c.flush().await?;
        let ok = c.next().await? == req;
        if i >= 1000 {
            lat.record(t0.elapsed());
            if !ok {
                res.b2_errors += 1;
            }
        }
    }
    let s = lat.summary();
    (res.b2_p50_us, res.b2_p99_us, res.b2_mean_us, res.b2_max_us) =
        (s.p50_us, s.p99_us, s.mean_us, s.max_us);

    // B3: `inflight` requests outstanding; each reply is checked and replaced.
    let inflight = p.b3_inflight.max(1) as u64;
    let mut expect = std::collections::VecDeque::with_capacity(inflight as usize);
    let t0 = Instant::now();
    let stop = t0 + Duration::from_secs_f64(p.b3_seconds);
    let mut next_id = 0u64;
    for _ in 0..inflight {
        put_frame(&mut c.out, &small(next_id));
        expect.push_back(next_id);
        next_id += 1;
    }
    c.flush().await?;
    let mut done = 0u64;
    let mut sending = true;
    while let Some(id) = expect.pop_front() {
        if c.next().await? == small(id) {
            done += 1;
        } else {
            res.b3_errors += 1;
        }
        if sending && Instant::now() >= stop {
            sending = false;
        }
        if sending {
            put_frame(&mut c.out, &small(next_id));
            expect.push_back(next_id);
            next_id += 1;
        }
        if c.r.buffer().is_empty() {
            c.flush().await?;
        }
    }
    res.b3_inflight = inflight as usize;
    res.b3_calls_per_s = done as f64 / t0.elapsed().as_secs_f64();

    // B4: pushes of 64 bytes, counted by the server.
    let mut push = vec![b'x'; 65];
    push[0] = PUSH;
    let base = c.count().await?;
    let t0 = Instant::now();
    for _ in 0..p.b4_pushes {
        put_frame(&mut c.out, &push);
        if c.out.len() >= 64 * 1024 {
            c.flush().await?;
        }
    }
    c.flush().await?;
    // The count request travels behind every push on the same connection.
    let got = c.count().await?.saturating_sub(base);
    let secs = t0.elapsed().as_secs_f64();
    res.b4_pushes = p.b4_pushes as u64;
    res.b4_lost = res.b4_pushes.saturating_sub(got);
    res.b4_pushes_per_s = got as f64 / secs;

    // B5: 1 MiB in 32 KiB pieces, one message in flight.
    let pieces: Vec<Vec<u8>> = (0..(1 << 20) / PIECE)
        .map(|k| {
            let mut b = Vec::with_capacity(PIECE + 1);
            b.push(ECHO);
            b.extend((0..PIECE).map(|j| b"0123456789abcdef"[(j + k) % 16]));
            b
        })
        .collect();
    let t0 = Instant::now();
    let stop = t0 + Duration::from_secs_f64(p.b5_seconds);
    let mut calls = 0u64;
    while Instant::now() < stop {
        for piece in &pieces {
            put_frame(&mut c.out, piece);
        }
        c.flush().await?;
        let mut ok = true;
        for piece in &pieces {
            if c.next().await? != &piece[..] {
                ok = false;
            }
        }
        if ok {
            calls += 1;
        } else {
            res.b5_errors += 1;
        }
    }
    res.b5_mib_per_s = calls as f64 / t0.elapsed().as_secs_f64();
    Ok(res)
}

/// The floor as two processes: start `exe tokio-echo-server` (this binary), run the
/// client against it, then close the server's stdin so it exits.
pub async fn run_two_processes(
    exe: &std::path::Path,
    p: &FloorParams,
) -> Result<FloorResult, BenchError> {
    let mut child = tokio::process::Command::new(exe)
        .arg("tokio-echo-server")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout of the floor server"))?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).await?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| {
            std::io::Error::other(format!(
                "floor server said {line:?}, not \"listening on ADDR\""
            ))
        })?
        .to_string();
    let result = run_client(&addr, p).await;
    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    result
}

/// The server process: listen on 127.0.0.1 (OS-chosen port), print `listening on ADDR`,
/// serve until stdin closes.
pub async fn server_main() -> Result<(), BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on {}", listener.local_addr()?);
    let server = tokio::spawn(serve(listener));
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    while stdin.read(&mut sink).await? > 0 {}
    server.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn floor_round_trips_are_checked() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(serve(listener));
        let p = FloorParams {
            b2_calls: 200,
            b3_seconds: 0.2,
            b3_inflight: 8,
            b4_pushes: 5_000,
            b5_seconds: 0.2,
        };
        let r = run_client(&addr, &p).await.expect("floor runs");
        server.abort();
        assert_eq!(
            (r.b2_errors, r.b3_errors, r.b4_lost, r.b5_errors),
            (0, 0, 0, 0),
            "{r:?}"
        );
        assert!(r.b2_p50_us > 0.0 && r.b2_p99_us >= r.b2_p50_us);
        assert!(r.b3_calls_per_s > 0.0 && r.b4_pushes_per_s > 0.0 && r.b5_mib_per_s > 0.0);
    }

    #[test]
    fn frames_carry_a_big_endian_length() {
        let mut out = Vec::new();
        put_frame(&mut out, &small(258));
        assert_eq!(&out[..3], &[0, 16, ECHO]);
        assert_eq!(&out[10..], &[0, 0, 0, 0, 0, 0, 1, 2]);
    }
}
