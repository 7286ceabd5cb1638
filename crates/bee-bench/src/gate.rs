//! Gate echo and idle player connections: bee's socket API against stock skynet's, with
//! the very same Lua and config on both.
//!
//! The server is one Lua service on skynet's `snax.gateserver`
//! (`interop/skynet/service/gate_echo.lua`, started by `gate_echo_main.lua`) that sends
//! every netpack frame (2-byte big-endian length + payload) back. One skynet config file
//! per side, identical apart from the port, runs under `bee run CONFIG` and under the
//! stock `skynet CONFIG`; both servers run at once on their own ports and the client
//! alternates between them round by round, so load from the rest of the machine hits both
//! alike.
//!
//! - **Idle connections** (first, on the fresh servers): the server's `VmRSS` before,
//!   then `idle` client connections, each proven live by one echoed frame, then `VmRSS`
//!   again: the growth per connection, in bytes. This is done on `idle_repeats` fresh
//!   servers of each side, and the median counts: how much a Lua gate keeps after a
//!   burst of connections depends on how much garbage Lua's collector has left when the
//!   burst ends, so one reading of either side can be a third higher than its usual
//!   one. Every reading is reported.
//! - **Echo**: `conns` connections, each keeping `depth` frames of `payload` bytes in
//!   flight (a new frame is written for every echo read, in batches as they arrive);
//!   after a warm-up, echoes per second over all connections and the latency of each
//!   frame (written → its echo read) as p50/p99. Every echo is compared with what was
//!   sent; a wrong, missing or late one is an error.
//!
//! The process raises its own open-file limit to the hard limit first (the servers it
//! starts inherit it), since `idle` client sockets plus the server's need more than the
//! usual 1024.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::rss;
use crate::stats::Latencies;
use crate::BenchError;

/// How long any single socket step (connect, a write, waiting for an echo) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections opened at once during the idle phase (skynet listens with a short
/// backlog; more at once only measures SYN retries).
const CONNECT_CONCURRENCY: usize = 64;

/// What to run.
#[derive(Debug, Clone)]
pub struct GateParams {
    /// The `bee` binary.
    pub bee: PathBuf,
    /// A built stock skynet tree (holding the `skynet` executable), or none for bee only.
    pub skynet: Option<PathBuf>,
    /// The skynet tree whose Lua and C modules both sides load (the same as `skynet`
    /// when given).
    pub tree: PathBuf,
    /// The directory holding `gate_echo.lua` and `gate_echo_main.lua`.
    pub lua_dir: PathBuf,
    /// Where configs and server logs go.
    pub work_dir: PathBuf,
    /// Echo connections.
    pub conns: usize,
    /// Frames in flight per echo connection.
    pub depth: usize,
    /// Payload bytes per frame (at least 12: connection id and sequence number).
    pub payload: usize,
    /// Measured seconds per echo round (after the warm-up).
    pub seconds: f64,
    /// Echo rounds per server, alternating between them.
    pub rounds: usize,
    /// Idle connections for the memory reading.
    pub idle: usize,
    /// Fresh servers per side the idle connections are measured on (the median counts).
    pub idle_repeats: usize,
    /// `thread` of both configs.
    pub threads: u32,
}

/// One echo round against one server.
#[derive(Debug, Clone, Serialize)]
pub struct EchoRound {
    /// Echoes read within the measured window, per second.
    pub msgs_per_s: f64,
    /// Median frame latency, µs.
    pub p50_us: f64,
    /// 99th percentile frame latency, µs.
    pub p99_us: f64,
}

/// Everything measured against one server.
#[derive(Debug, Clone, Serialize)]
pub struct ServerResult {
    /// `bee` or `skynet`.
    pub server: String,
    /// Each echo round.
    pub rounds: Vec<EchoRound>,
    /// Echoes per second over all rounds' measured windows.
    pub msgs_per_s: f64,
    /// Median latency over all rounds' frames, µs.
    pub p50_us: f64,
    /// 99th percentile latency over all rounds' frames, µs.
    pub p99_us: f64,
    /// Largest latency, µs.
    pub max_us: f64,
    /// Idle connections held (each proven live by one echo).
    pub idle_conns: usize,
    /// The server's VmRSS before the idle connections, KiB.
    pub rss_base_kb: u64,
    /// Its VmRSS with them all open, KiB.
    pub rss_idle_kb: u64,
    /// (idle − base) / connections, bytes: the median over the fresh servers measured
    /// (`rss_base_kb` and `rss_idle_kb` are that reading's).
    pub rss_per_conn_bytes: f64,
    /// Every reading of (idle − base) / connections, bytes, in the order measured.
    pub rss_per_conn_runs: Vec<f64>,
    /// Wrong, missing or late echoes and failed connections.
    pub errors: u64,
    /// The first of them.
    pub first_error: Option<String>,
}

/// The whole run, printed as one JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct GateReport {
    /// Echo connections.
    pub conns: usize,
    /// Frames in flight per connection.
    pub depth: usize,
    /// Payload bytes per frame.
    pub payload_bytes: usize,
    /// Measured seconds per round.
    pub seconds: f64,
    /// Rounds per server.
    pub rounds: usize,
    /// Idle connections asked for.
    pub idle: usize,
    /// Fresh servers per side the idle connections were measured on.
    pub idle_repeats: usize,
    /// Worker threads of both servers (`thread` in the config).
    pub threads: u32,
    /// The client's open-file limit after raising it.
    pub nofile: u64,
    /// bee (`bee run` of the config).
    pub bee: ServerResult,
    /// Stock skynet (`skynet` of the same config), when a tree was given.
    pub skynet: Option<ServerResult>,
}

/// A server process, killed on drop.
struct Server {
    name: &'static str,
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Raise this process's soft open-file limit to its hard limit; returns the soft limit.
pub fn raise_nofile() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(max) = limit.maximum {
        limit.current = Some(max);
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            eprintln!("gate: cannot raise the open-file limit to {max}: {e}");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

fn config_text(p: &GateParams, port: u16) -> String {
    let s = p.tree.display();
    format!(
        "-- written by bee-bench gate: the same file for stock skynet and bee run\n\
         thread = {threads}\nharbor = 0\nbootstrap = \"snlua bootstrap\"\n\
         cpath = \"{s}/cservice/?.so\"\n\
         lua_path = \"{s}/lualib/?.lua;{s}/lualib/?/init.lua\"\n\
         lua_cpath = \"{s}/luaclib/?.so\"\n\
         luaservice = \"{s}/service/?.lua;{l}/?.lua\"\n\
         lualoader = \"{s}/lualib/loader.lua\"\n\
         start = \"gate_echo_main\"\n\
         gate_port = {port}\ngate_maxclient = {max}\n",
        threads = p.threads,
        l = p.lua_dir.display(),
        max = p.idle + p.conns + 64,
    )
}

/// Start one server on a free port and wait (≤ 30 s) until its gate accepts.
fn start(p: &GateParams, name: &'static str) -> Result<Server, BenchError> {
    let port = crate::nodeproc::free_port()?;
    let config = p.work_dir.join(format!("gate-{name}.config"));
    std::fs::write(&config, config_text(p, port))?;
    let log_path = p.work_dir.join(format!("gate-{name}.log"));
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = match (name, &p.skynet) {
        ("skynet", Some(tree)) => Command::new(tree.join("skynet")),
        ("skynet", None) => return Err(BenchError::Setup("no skynet tree given".into())),
        _ => {
            let mut c = Command::new(&p.bee);
            c.arg("run").env("BEE_LOG", "warn");
            c
        }
    };
    let child = cmd
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|e| BenchError::Setup(format!("cannot start the {name} gate server: {e}")))?;
    let mut server = Server { name, child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(server);
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(BenchError::Setup(format!(
                "the {name} gate server exited ({status}); see {}",
                log_path.display()
            )));
        }
        if Instant::now() > deadline {
            return Err(BenchError::Setup(format!(
                "the {name} gate server did not listen on {port} within 30 s; see {}",
                log_path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Frame `seq` of connection `id`: 2-byte big-endian length, then id, seq and padding.
fn frame(out: &mut Vec<u8>, id: u32, seq: u64, payload: usize) {
    out.extend_from_slice(&(payload as u16).to_be_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend((12..payload).map(|i| (i as u8) ^ (seq as u8)));
}

async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(STEP_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no progress in {STEP_TIMEOUT:?}")),
    }
}

/// Connect, send one frame, read its echo back: a live, started connection.
async fn live_connection(port: u16, id: u32, payload: usize) -> Result<TcpStream, String> {
    let mut s = timed("connect", TcpStream::connect(("127.0.0.1", port))).await?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(payload + 2);
    frame(&mut out, id, 0, payload);
    timed("write", s.write_all(&out)).await?;
    let mut back = vec![0u8; out.len()];
    timed("read the echo", s.read_exact(&mut back)).await?;
    if back != out {
        return Err(format!(
            "connection {id}: the echo differs from the frame sent"
        ));
    }
    Ok(s)
}

/// The idle phase: (base RSS, RSS with them open, connections held).
async fn idle_phase(server: &Server, p: &GateParams) -> Result<(u64, u64, usize), BenchError> {
    let pid = server.child.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = rss::read(pid)?.rss_kb;
    let t0 = Instant::now();
    let held: Vec<TcpStream> = stream::iter(0..p.idle)
        .map(|i| live_connection(server.port, i as u32, p.payload))
        .buffer_unordered(CONNECT_CONCURRENCY)
        .try_collect()
        .await
        .map_err(|e| {
            BenchError::Setup(format!(
                "{}: idle connections: {e} (open-file limit {})",
                server.name,
                raise_nofile()
            ))
        })?;
    eprintln!(
        "gate {}: {} idle connections open in {:.1} s",
        server.name,
        held.len(),
        t0.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss::read(pid)?.rss_kb;
    let n = held.len();
    drop(held);
    // Let the server see the closes before the echo rounds.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok((base, idle, n))
}

/// One connection's share of an echo round.
struct ConnRun {
    lat: Latencies,
    counted: u64,
    error: Option<String>,
}

async fn echo_conn(
    mut s: TcpStream,
    id: u32,
    p: (usize, usize),
    warm_until: Instant,
    end: Instant,
) -> ConnRun {
    let (depth, payload) = p;
    let mut run = ConnRun {
        lat: Latencies::with_capacity(64 * 1024),
        counted: 0,
        error: None,
    };
    let (mut sent, mut received) = (0u64, 0u64);
    let mut sent_at: VecDeque<Instant> = VecDeque::with_capacity(depth);
    let mut out = Vec::with_capacity(depth * (payload + 2));
    let mut expect = Vec::with_capacity(payload + 2);
    let now = Instant::now();
    for _ in 0..depth {
        frame(&mut out, id, sent, payload);
        sent_at.push_back(now);
        sent += 1;
    }
    if let Err(e) = timed("write", s.write_all(&out)).await {
        run.error = Some(e);
        return run;
    }
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let result: Result<(), String> = async {
        loop {
            let n = timed("read", s.read_buf(&mut buf)).await?;
            if n == 0 {
                return Err(format!("connection {id}: closed by the server"));
            }
            let now = Instant::now();
            out.clear();
            while buf.len() >= 2 {
                let len = u16::from_be_bytes([buf[0], buf[1]]) as usize;
                if buf.len() < 2 + len {
                    break;
                }
                expect.clear();
                frame(&mut expect, id, received, payload);
                if buf[..2 + len] != expect[..] {
                    return Err(format!(
                        "connection {id}: echo {received} differs from the frame sent"
                    ));
                }
                buf.advance(2 + len);
                received += 1;
                let at = sent_at
                    .pop_front()
                    .ok_or_else(|| format!("connection {id}: an echo nobody sent"))?;
                if now >= warm_until && now < end {
                    run.lat.record(now - at);
                    run.counted += 1;
                }
                if now < end {
                    frame(&mut out, id, sent, payload);
                    sent_at.push_back(now);
                    sent += 1;
                }
            }
            if !out.is_empty() {
                timed("write", s.write_all(&out)).await?;
            }
            if now >= end && sent_at.is_empty() {
                return Ok(());
            }
        }
    }
    .await;
    run.error = result.err();
    run
}

/// One echo round: connect `conns`, run them, merge.
async fn echo_round(
    server: &Server,
    p: &GateParams,
    all: &mut Latencies,
    errors: &mut Vec<String>,
) -> Result<(EchoRound, u64), BenchError> {
    let conns: Vec<TcpStream> = stream::iter(0..p.conns)
        .map(|i| live_connection(server.port, 1_000_000 + i as u32, p.payload))
        .buffer_unordered(CONNECT_CONCURRENCY)
        .try_collect()
        .await
        .map_err(|e| BenchError::Setup(format!("{}: echo connections: {e}", server.name)))?;
    let start = Instant::now();
    let warm_until = start + Duration::from_millis(500);
    let end = warm_until + Duration::from_secs_f64(p.seconds);
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            tokio::spawn(echo_conn(
                s,
                1_000_000 + i as u32,
                (p.depth, p.payload),
                warm_until,
                end,
            ))
        })
        .collect();
    let mut round = Latencies::with_capacity(1 << 20);
    let mut counted = 0u64;
    for t in tasks {
        let run = t
            .await
            .map_err(|e| BenchError::Setup(format!("an echo task failed: {e}")))?;
        round.extend(&run.lat);
        counted += run.counted;
        if let Some(e) = run.error {
            errors.push(e);
        }
    }
    all.extend(&round);
    let s = round.summary();
    let r = EchoRound {
        msgs_per_s: counted as f64 / p.seconds,
        p50_us: s.p50_us,
        p99_us: s.p99_us,
    };
    eprintln!(
        "gate {} echo: {:.0} msgs/s, p50 {:.0} us, p99 {:.0} us",
        server.name, r.msgs_per_s, r.p50_us, r.p99_us
    );
    Ok((r, counted))
}

/// One idle phase on a fresh server.
#[derive(Debug, Clone, Copy)]
struct IdleReading {
    /// VmRSS before the connections, KiB.
    base: u64,
    /// VmRSS with them open, KiB.
    idle: u64,
    /// Connections held.
    held: usize,
}

impl IdleReading {
    /// Growth per connection, bytes.
    fn per_conn(&self) -> f64 {
        (self.idle.saturating_sub(self.base) * 1024) as f64 / self.held.max(1) as f64
    }
}

/// The reading with the median growth per connection (the lower middle one of an even
/// number); `readings` is not empty.
fn median_reading(readings: &[IdleReading]) -> IdleReading {
    let mut sorted = readings.to_vec();
    sorted.sort_by(|a, b| a.per_conn().total_cmp(&b.per_conn()));
    sorted[(sorted.len() - 1) / 2]
}

/// Run the idle phase and the echo rounds on bee and (when given) stock skynet.
pub async fn run(p: &GateParams) -> Result<GateReport, BenchError> {
    if p.payload < 12 || p.payload > usize::from(u16::MAX) {
        return Err(BenchError::Setup(format!(
            "payload {} bytes: must be 12..=65535",
            p.payload
        )));
    }
    let nofile = raise_nofile();
    std::fs::create_dir_all(&p.work_dir)?;
    let mut names = vec!["bee"];
    if p.skynet.is_some() {
        names.push("skynet");
    }
    // Idle readings on fresh servers, sides alternating; the last servers stay for the
    // echo rounds.
    let mut readings: Vec<Vec<IdleReading>> = vec![Vec::new(); names.len()];
    let mut servers = Vec::new();
    let repeats = p.idle_repeats.max(1);
    for repeat in 0..repeats {
        let last = repeat + 1 == repeats;
        let fresh = names
            .iter()
            .map(|n| start(p, n))
            .collect::<Result<Vec<_>, _>>()?;
        for (s, r) in fresh.iter().zip(readings.iter_mut()) {
            let (base, idle, held) = idle_phase(s, p).await?;
            eprintln!(
                "gate {}: VmRSS {base} KiB -> {idle} KiB with {held} idle connections",
                s.name
            );
            r.push(IdleReading { base, idle, held });
        }
        if last {
            servers = fresh;
        }
    }
    struct Acc {
        idle: Vec<IdleReading>,
        rounds: Vec<EchoRound>,
        lat: Latencies,
        counted: u64,
        errors: Vec<String>,
    }
    let mut acc: Vec<Acc> = readings
        .into_iter()
        .map(|idle| Acc {
            idle,
            rounds: Vec::new(),
            lat: Latencies::with_capacity(1 << 20),
            counted: 0,
            errors: Vec::new(),
        })
        .collect();
    for _ in 0..p.rounds {
        for (s, a) in servers.iter().zip(acc.iter_mut()) {
            let (r, counted) = echo_round(s, p, &mut a.lat, &mut a.errors).await?;
            a.rounds.push(r);
            a.counted += counted;
        }
    }
    let mut results: Vec<ServerResult> = servers
        .iter()
        .zip(acc)
        .map(|(s, a)| {
            let sum = a.lat.summary();
            let runs: Vec<f64> = a.idle.iter().map(IdleReading::per_conn).collect();
            let median = median_reading(&a.idle);
            ServerResult {
                server: s.name.to_string(),
                rounds: a.rounds,
                msgs_per_s: a.counted as f64 / (p.seconds * p.rounds as f64),
                p50_us: sum.p50_us,
                p99_us: sum.p99_us,
                max_us: sum.max_us,
                idle_conns: median.held,
                rss_base_kb: median.base,
                rss_idle_kb: median.idle,
                rss_per_conn_bytes: median.per_conn(),
                rss_per_conn_runs: runs,
                errors: a.errors.len() as u64,
                first_error: a.errors.into_iter().next(),
            }
        })
        .collect();
    drop(servers);
    let skynet = if results.len() > 1 {
        results.pop()
    } else {
        None
    };
    let bee = results.pop().expect("the bee server always runs");
    Ok(GateReport {
        conns: p.conns,
        depth: p.depth,
        payload_bytes: p.payload,
        seconds: p.seconds,
        rounds: p.rounds,
        idle: p.idle,
        idle_repeats: repeats,
        threads: p.threads,
        nofile,
        bee,
        skynet,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_reading_is_the_middle_one_by_growth_per_connection() {
        let r = |base, idle| IdleReading {
            base,
            idle,
            held: 1024,
        };
        let readings = [
            r(100, 700),
            r(100, 660),
            r(90, 950),
            r(100, 650),
            r(95, 640),
        ];
        let m = median_reading(&readings);
        assert_eq!((m.base, m.idle), (100, 660));
        assert_eq!(m.per_conn(), 560.0);
        // Even count: the lower middle one.
        let m = median_reading(&readings[..2]);
        assert_eq!((m.base, m.idle), (100, 660));
        assert_eq!(median_reading(&readings[2..3]).idle, 950);
    }

    #[test]
    fn frames_carry_length_id_and_sequence() {
        let mut out = Vec::new();
        frame(&mut out, 7, 9, 16);
        assert_eq!(out.len(), 18);
        assert_eq!(&out[..2], &16u16.to_be_bytes());
        assert_eq!(&out[2..6], &7u32.to_le_bytes());
        assert_eq!(&out[6..14], &9u64.to_le_bytes());
        let mut other = Vec::new();
        frame(&mut other, 7, 10, 16);
        assert_ne!(out, other);
    }
}
