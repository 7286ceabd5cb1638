//! C++ `rpc_call` vs a Rust caller on the same path.
//!
//! One bee node in this process, `cppbench`, runs the team's native-service shape:
//! `CServiceProxy`, the C++ module `bench.so` (`cservices/bench/`, loaded by bee-capi
//! exactly as a `kind = "cservice"` entry loads it) behind a `NativeMaster` named
//! `bench_master`, and a Rust native caller `rust_caller` ([`spawn_native`], a
//! [`NativeEndpoint`]). A second process, `bee-demo`, runs node `lpersistence_3` with
//! the Lua-style `lpersistence` service (a `Dispatcher` behind `RpcServer`, answering
//! `game.Ping` with a Lua reply frame: names empty, sub_type 17, session copied).
//!
//! Both callers make the same sequential rpc_calls (one in flight) of
//! `game.Ping {seq}` to `lpersistence_3/lpersistence`:
//!
//! - **C++**: `bench.so` gets an rpc `bench.Run` ("target=… calls=N"), issues N
//!   `bee::Service::rpc_call`s — frame sub_type 18 with its own session, handed to
//!   CServiceProxy as `PTYPE_TEXT`, pushed across as `"text"`; the reply comes back as
//!   `"rpc_response"` to `bench_master`, which hands it to the module as `PTYPE_RESPONSE`
//!   — and answers with every round trip timed by its own steady clock;
//! - **Rust**: `NativeEndpoint::rpc_call` of `rust_caller`, through the same
//!   CServiceProxy, the same connection, to the same service; its reply comes back as
//!   `"rpc_response"` to `rust_caller`.
//!
//! Every reply is checked (a `game.Pong` with the request's seq and a `served_by`; on the
//! Rust side also sub_type 17, the call's session and the empty names of a Lua reply);
//! the C++ module does the same checks and reports failures. The two sides run in
//! interleaved rounds (C++ first in even rounds, Rust first in odd ones), after a short
//! warm-up of each, so a machine whose load drifts treats both alike.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bee_cluster::native::{
    spawn_native, CServiceProxy, NativeEndpoint, NativeHandler, NativeMaster,
};
use bee_cluster::{Cluster, ClusterSettings};
use bee_codec::kkt::{KktFrame, SUBTYPE_RPC_CLIENT, SUBTYPE_RPC_SERVER};
use bee_proto::game::{Ping, Pong};
use bee_proto::Message as _;
use bee_registry::{ClusterConfig, Registry};
use bee_runtime::text::TextReply;
use bee_runtime::{Node, RuntimeConfig};
use serde::Serialize;

use crate::nodeproc::free_port;
use crate::stats::Latencies;
use crate::BenchError;

/// The server node (a `bee-demo` process) and service.
const SERVER_NODE: &str = "lpersistence_3";
const SERVER_SERVICE: &str = "lpersistence";
/// The node of this process and its services.
const BENCH_NODE: &str = "cppbench";
const CPP_MASTER: &str = "bench_master";
const CPP_MODULE_NAME: &str = "bench";
const RUST_CALLER: &str = "rust_caller";

/// What to run.
#[derive(Debug, Clone)]
pub struct CppRpcParams {
    /// The `bee-demo` binary (serves `lpersistence`).
    pub demo: PathBuf,
    /// `bench.so`, built from `cservices/` (`make -C cservices modules`).
    pub module: PathBuf,
    /// Calls per side, summed over the rounds.
    pub calls: usize,
    /// Rounds (each runs both sides once).
    pub rounds: usize,
    /// Per-call timeout of both callers.
    pub call_timeout: Duration,
}

impl CppRpcParams {
    /// 20,000 calls per side in 10 rounds.
    pub fn full(demo: PathBuf, module: PathBuf) -> CppRpcParams {
        CppRpcParams {
            demo,
            module,
            calls: 20_000,
            rounds: 10,
            call_timeout: Duration::from_secs(5),
        }
    }

    /// A tenth of that.
    pub fn quick(demo: PathBuf, module: PathBuf) -> CppRpcParams {
        CppRpcParams {
            calls: 2_000,
            ..CppRpcParams::full(demo, module)
        }
    }
}

/// One caller's figures.
#[derive(Debug, Clone, Serialize)]
pub struct CallerFigures {
    /// Calls answered correctly.
    pub calls: u64,
    /// Calls that failed, timed out or were answered wrongly.
    pub errors: u64,
    /// Seconds the measured batches took, in total (first request out to last reply in).
    pub seconds: f64,
    /// `calls / seconds` (one call in flight).
    pub calls_per_s: f64,
    /// Median round trip, µs.
    pub p50_us: f64,
    /// 99th percentile round trip, µs.
    pub p99_us: f64,
    /// Mean round trip, µs.
    pub mean_us: f64,
    /// Slowest round trip, µs.
    pub max_us: f64,
}

/// What the run measured.
#[derive(Debug, Clone, Serialize)]
pub struct CppRpcResult {
    /// `node/service` both sides called.
    pub target: String,
    /// Rounds.
    pub rounds: usize,
    /// The C++ module's `rpc_call` (bee C++ SDK in `bench.so`).
    pub cpp: CallerFigures,
    /// `NativeEndpoint::rpc_call` from Rust.
    pub rust: CallerFigures,
    /// `cpp.calls_per_s / rust.calls_per_s`.
    pub ratio_calls_per_s: f64,
    /// `cpp.p50_us / rust.p50_us`.
    pub ratio_p50: f64,
    /// Errors of both sides.
    pub errors: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

/// The Rust caller answers nothing (it only calls).
struct Caller;

impl NativeHandler for Caller {
    async fn on_frame(&mut self, _endpoint: &NativeEndpoint, frame: KktFrame) -> Option<TextReply> {
        eprintln!(
            "cpp-rpc: rust_caller got an unexpected frame {:?} (sub_type {})",
            String::from_utf8_lossy(&frame.name),
            frame.sub_type
        );
        None
    }
}

/// The `bee-demo` process, killed on drop.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn setup(what: &str, reason: impl std::fmt::Display) -> BenchError {
    BenchError::Call {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

/// Start `bee-demo run` for `lpersistence_3` in `dir` and wait (≤ 30 s) until it listens.
fn start_server(demo: &Path, dir: &Path, port: u16) -> Result<ServerProcess, BenchError> {
    let cfg = dir.join("lpersistence_3.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"{SERVER_NODE}\"\ncluster = \"cluster.lua\"\n\n\
             [[service]]\nkind = \"lpersistence\"\nname = \"{SERVER_SERVICE}\"\n"
        ),
    )?;
    let log = std::fs::File::create(dir.join("lpersistence_3.log"))?;
    let child = Command::new(demo)
        .arg("run")
        .arg(&cfg)
        .env("BEE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|e| setup(&format!("start {}", demo.display()), e))?;
    let mut server = ServerProcess(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = server.0.try_wait() {
            let text = std::fs::read_to_string(dir.join("lpersistence_3.log")).unwrap_or_default();
            return Err(setup(
                "start the lpersistence_3 node",
                format!("bee-demo exited ({status}):\n{text}"),
            ));
        }
        if Instant::now() > deadline {
            return Err(setup(
                "start the lpersistence_3 node",
                format!("nothing listens on 127.0.0.1:{port} after 30 s"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(server)
}

/// What one batch of one side gave.
#[derive(Default)]
struct Batch {
    ok: u64,
    errors: u64,
    elapsed: Duration,
    lat: Vec<Duration>,
    first_error: Option<String>,
}

/// Parse `bench.so`'s `bench.Result` body (see `cservices/bench/bench.cpp`).
fn parse_cpp_result(body: &[u8]) -> Result<Batch, String> {
    let text = std::str::from_utf8(body).map_err(|_| "bench.Result is not UTF-8".to_string())?;
    let (head, lats) = text.split_once('\n').unwrap_or((text, ""));
    let (fields, first_error) = match head.split_once(" first_error=") {
        Some((f, e)) => (f, Some(e.to_string())),
        None => (head, None),
    };
    let mut b = Batch {
        first_error,
        ..Batch::default()
    };
    let mut seen = 0;
    for tok in fields.split(' ') {
        let (k, v) = tok
            .split_once('=')
            .ok_or_else(|| format!("bench.Result: {tok:?} is not key=value"))?;
        let n: u64 = v
            .parse()
            .map_err(|_| format!("bench.Result: {k}={v:?} is not a number"))?;
        match k {
            "ok" => b.ok = n,
            "errors" => b.errors = n,
            "elapsed_ns" => b.elapsed = Duration::from_nanos(n),
            _ => return Err(format!("bench.Result: unknown key {k:?}")),
        }
        seen += 1;
    }
    if seen != 3 {
        return Err(format!("bench.Result: summary line {head:?} incomplete"));
    }
    for l in lats.split_ascii_whitespace() {
        let n: u64 = l
            .parse()
            .map_err(|_| format!("bench.Result: latency {l:?} is not a number"))?;
        b.lat.push(Duration::from_nanos(n));
    }
    Ok(b)
}

/// Check one reply of the Rust caller; `None` when right.
fn check_reply(reply: &KktFrame, seq: u64) -> Option<String> {
    if reply.sub_type != SUBTYPE_RPC_CLIENT {
        return Some(format!("reply sub_type {}, not 17", reply.sub_type));
    }
    if !(reply.remote_node.is_empty()
        && reply.remote_service.is_empty()
        && reply.source_node.is_empty()
        && reply.source_service.is_empty())
    {
        return Some("reply names are not empty (not a Lua-style reply)".into());
    }
    if &reply.name[..] != b"game.Pong" {
        return Some(format!(
            "reply is {}, not game.Pong",
            String::from_utf8_lossy(&reply.name)
        ));
    }
    match Pong::decode(reply.body.clone()) {
        Ok(p) if p.seq == seq && !p.served_by.is_empty() => None,
        Ok(p) => Some(format!(
            "Pong seq {} served_by {:?} for Ping seq {seq}",
            p.seq, p.served_by
        )),
        Err(e) => Some(format!("game.Pong body does not parse: {e}")),
    }
}

/// `calls` sequential rpc_calls from the Rust endpoint.
async fn rust_batch(ep: &NativeEndpoint, calls: usize, timeout: Duration) -> Batch {
    let mut b = Batch {
        lat: Vec::with_capacity(calls),
        ..Batch::default()
    };
    let started = Instant::now();
    for seq in 1..=calls as u64 {
        let body = Ping {
            seq,
            sent_unix_ms: 0,
        }
        .encode_to_vec();
        let request = KktFrame::new(SUBTYPE_RPC_SERVER, seq as i64, "game.Ping", body);
        let t0 = Instant::now();
        let r = ep
            .rpc_call(SERVER_NODE, SERVER_SERVICE, request, timeout)
            .await;
        b.lat.push(t0.elapsed());
        let why = match r {
            Ok(reply) => check_reply(&reply, seq),
            Err(e) => Some(e.to_string()),
        };
        match why {
            None => b.ok += 1,
            Some(w) => {
                b.errors += 1;
                b.first_error.get_or_insert(w);
            }
        }
    }
    b.elapsed = started.elapsed();
    b
}

/// `calls` sequential rpc_calls from `bench.so`, triggered by an rpc from the Rust
/// endpoint (the trigger's own round trip is not measured).
async fn cpp_batch(
    ep: &NativeEndpoint,
    calls: usize,
    timeout: Duration,
) -> Result<Batch, BenchError> {
    let body = format!(
        "target={SERVER_NODE}/{SERVER_SERVICE} calls={calls} timeout_ms={}",
        timeout.as_millis().max(1)
    );
    let trigger = KktFrame::new(SUBTYPE_RPC_SERVER, 0, "bench.Run", body.into_bytes());
    // Generous: every call may time out once before the module answers.
    let wait = Duration::from_secs(30) + Duration::from_millis(10) * calls as u32;
    let reply = ep
        .rpc_call(BENCH_NODE, CPP_MASTER, trigger, wait)
        .await
        .map_err(|e| setup("the bench.Run trigger to bench.so", e))?;
    if &reply.name[..] != b"bench.Result" || reply.sub_type != SUBTYPE_RPC_CLIENT {
        return Err(BenchError::BadReply {
            what: "bench.Run".into(),
            reason: format!(
                "{} (sub_type {}), not bench.Result",
                String::from_utf8_lossy(&reply.name),
                reply.sub_type
            ),
        });
    }
    let b = parse_cpp_result(&reply.body).map_err(|reason| BenchError::BadReply {
        what: "bench.Run".into(),
        reason,
    })?;
    if b.ok + b.errors != calls as u64 {
        return Err(BenchError::BadReply {
            what: "bench.Run".into(),
            reason: format!(
                "{} ok + {} errors for {calls} calls{}",
                b.ok,
                b.errors,
                b.first_error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ),
        });
    }
    Ok(b)
}

/// Batches of one side, summed.
#[derive(Default)]
struct Side {
    ok: u64,
    errors: u64,
    elapsed: Duration,
    lat: Latencies,
    first_error: Option<String>,
}

impl Side {
    fn add(&mut self, b: Batch) {
        self.ok += b.ok;
        self.errors += b.errors;
        self.elapsed += b.elapsed;
        for d in b.lat {
            self.lat.record(d);
        }
        if self.first_error.is_none() {
            self.first_error = b.first_error;
        }
    }

    fn figures(&self) -> CallerFigures {
        let s = self.lat.summary();
        let secs = self.elapsed.as_secs_f64();
        CallerFigures {
            calls: self.ok,
            errors: self.errors,
            seconds: secs,
            calls_per_s: if secs > 0.0 {
                self.ok as f64 / secs
            } else {
                0.0
            },
            p50_us: s.p50_us,
            p99_us: s.p99_us,
            mean_us: s.mean_us,
            max_us: s.max_us,
        }
    }
}

/// Run the comparison (see the module doc).
pub async fn run(p: &CppRpcParams) -> Result<CppRpcResult, BenchError> {
    // Keeps the skynet_* functions in the executable for the module to find.
    bee_capi::link_exports();
    for (what, path) in [("bee-demo binary", &p.demo), ("bench.so", &p.module)] {
        if !path.is_file() {
            return Err(setup(
                &format!("find the {what}"),
                format!("{} does not exist", path.display()),
            ));
        }
    }
    let module = p.module.canonicalize()?;
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "bee-bench-cpp-rpc-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(p, &module, &dir).await;
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("cpp-rpc: logs kept in {}", dir.display());
    }
    result
}

async fn run_in(p: &CppRpcParams, module: &Path, dir: &Path) -> Result<CppRpcResult, BenchError> {
    let (server_port, bench_port) = (free_port()?, free_port()?);
    let cluster_text = format!(
        "{SERVER_NODE} = \"127.0.0.1:{server_port}\"\n{BENCH_NODE} = \"127.0.0.1:{bench_port}\"\n"
    );
    std::fs::write(dir.join("cluster.lua"), &cluster_text)?;
    let _server = start_server(&p.demo, dir, server_port)?;

    let node = Node::new(BENCH_NODE, RuntimeConfig::default());
    let config =
        ClusterConfig::parse_lua(&cluster_text).map_err(|e| BenchError::ClusterConfig {
            path: dir.join("cluster.lua"),
            reason: e.to_string(),
        })?;
    let cluster = Cluster::start(&node, Registry::new(config), ClusterSettings::default());
    let result = async {
        cluster
            .open(BENCH_NODE)
            .await
            .map_err(|e| setup("listen as cppbench", e))?;
        let proxy = CServiceProxy::spawn(&node);
        let started = bee_capi::start(
            &node,
            module,
            &format!(
                "service={CPP_MASTER} rpc_timeout_ms={}",
                p.call_timeout.as_millis().max(1)
            ),
        )
        .map_err(|e| setup("start bench.so", e))?;
        node.set_name(CPP_MODULE_NAME, started.addr);
        node.set_name(
            CPP_MASTER,
            node.spawn(CPP_MASTER, NativeMaster::new(CPP_MODULE_NAME)),
        );
        let ep = spawn_native(&node, proxy, RUST_CALLER, Caller)
            .map_err(|e| setup("start the Rust caller", e))?;
        measure(p, &ep).await
    }
    .await;
    node.shutdown();
    result
}

async fn measure(p: &CppRpcParams, ep: &NativeEndpoint) -> Result<CppRpcResult, BenchError> {
    let rounds = p.rounds.max(1);
    let per_round = (p.calls / rounds).max(1);
    let warm = per_round.min(200);
    // Warm-up (connections, caches); its figures are dropped but its errors are not.
    let mut warm_errors = rust_batch(ep, warm, p.call_timeout).await;
    let cpp_warm = cpp_batch(ep, warm, p.call_timeout).await?;
    warm_errors.errors += cpp_warm.errors;
    let (mut cpp, mut rust) = (Side::default(), Side::default());
    for round in 0..rounds {
        for cpp_turn in [round % 2 == 0, round % 2 != 0] {
            if cpp_turn {
                cpp.add(cpp_batch(ep, per_round, p.call_timeout).await?);
            } else {
                rust.add(rust_batch(ep, per_round, p.call_timeout).await);
            }
        }
    }
    let (c, r) = (cpp.figures(), rust.figures());
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let out = CppRpcResult {
        target: format!("{SERVER_NODE}/{SERVER_SERVICE}"),
        rounds,
        ratio_calls_per_s: ratio(c.calls_per_s, r.calls_per_s),
        ratio_p50: ratio(c.p50_us, r.p50_us),
        errors: c.errors + r.errors + warm_errors.errors,
        first_error: cpp
            .first_error
            .or(rust.first_error)
            .or(warm_errors.first_error)
            .or(cpp_warm.first_error),
        cpp: c,
        rust: r,
    };
    eprintln!(
        "C++ rpc_call vs Rust caller ({} calls each, {rounds} rounds): C++ {:.0} calls/s p50 {:.1} us p99 {:.1} us; \
         Rust {:.0} calls/s p50 {:.1} us p99 {:.1} us; C++/Rust {:.3} ({} errors)",
        out.cpp.calls,
        out.cpp.calls_per_s,
        out.cpp.p50_us,
        out.cpp.p99_us,
        out.rust.calls_per_s,
        out.rust.p50_us,
        out.rust.p99_us,
        out.ratio_calls_per_s,
        out.errors
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpp_result_is_parsed_and_checked() {
        let b = parse_cpp_result(b"ok=2 errors=1 elapsed_ns=3000 first_error=rpc game.Ping to a/b timed out after 5 ms\n10 20 30").unwrap();
        assert_eq!(
            (b.ok, b.errors, b.elapsed),
            (2, 1, Duration::from_nanos(3000))
        );
        assert_eq!(
            b.first_error.as_deref(),
            Some("rpc game.Ping to a/b timed out after 5 ms")
        );
        assert_eq!(b.lat, [10, 20, 30].map(Duration::from_nanos).to_vec());
        let b = parse_cpp_result(b"ok=1 errors=0 elapsed_ns=5\n7").unwrap();
        assert_eq!((b.ok, b.lat.len(), b.first_error), (1, 1, None));
        for bad in [
            &b"ok=1 errors=0\n1"[..],
            b"ok=1 errors=0 elapsed_ns=x\n",
            b"ok=1 errors=0 elapsed_ns=1 extra=2\n",
            b"ok=1 errors=0 elapsed_ns=1\n1 two",
            b"\xff",
        ] {
            assert!(parse_cpp_result(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_wrong_reply_is_named() {
        let pong = |seq, by: &str| {
            Pong {
                seq,
                served_by: by.into(),
            }
            .encode_to_vec()
        };
        let good = KktFrame::new(SUBTYPE_RPC_CLIENT, 1, "game.Pong", pong(4, "n/s")).session(9);
        assert_eq!(check_reply(&good, 4), None);
        assert!(check_reply(&good, 5).unwrap().contains("seq 4"));
        let mut f = good.clone();
        f.sub_type = SUBTYPE_RPC_SERVER;
        assert!(check_reply(&f, 4).unwrap().contains("sub_type"));
        assert!(check_reply(&good.clone().from("x", "y"), 4)
            .unwrap()
            .contains("Lua-style"));
        let f = KktFrame::new(SUBTYPE_RPC_CLIENT, 1, "game.Pong", pong(4, ""));
        assert!(check_reply(&f, 4).is_some());
        let f = KktFrame::new(SUBTYPE_RPC_CLIENT, 1, "game.Other", pong(4, "n/s"));
        assert!(check_reply(&f, 4).unwrap().contains("game.Other"));
    }
}
