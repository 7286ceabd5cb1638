//! Overload without collapse, against a real `bee run` node: a node whose inbound budget
//! is far smaller than what its callers want at once serves what fits, answers the rest
//! `Overloaded` at once, keeps every connection up, and stays within its budget in
//! memory.
//!
//! Bounded in time (the load runs for a fixed number of seconds); nothing is asserted
//! about speed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bee_cluster::{CallErrorExt, ClusterSettings};
use bee_codec::seri::{self, Value};
use bee_tests::{proc_status_kib, Layout};
use bee_transport::TransportError;

/// The serving node's inbound budget.
const BUDGET: u64 = 8 << 20;

/// What the serving node may take beyond its inbound budget: the process itself (a
/// debug build: code, runtime threads, allocator arenas), one 64 KiB read buffer and a
/// write queue per connection, and the replies on their way out. See "Memory under
/// overload" in `docs/operations.md`.
const SLACK: u64 = 96 << 20;

/// Client nodes, calls each keeps in flight, bytes per call: 6 × 32 × 256 KiB = 48 MiB
/// wanted at once, six times the budget.
const CLIENTS: usize = 6;
const IN_FLIGHT: usize = 32;
const CALL_BYTES: usize = 256 << 10;

/// How long the service holds each request before answering, and how long the load runs.
const HOLD_MS: i64 = 3000;
const LOAD: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    overloaded: AtomicU64,
    down: AtomicU64,
    other: AtomicU64,
    /// The first few errors other than `Overloaded`, for the assert messages.
    errors: std::sync::Mutex<Vec<String>>,
}

/// One caller: call the server's `slow` with `payload` until `end`, each reply checked to
/// be the request, and count how each call ended. A caller told to slow down (or failed)
/// waits `pause` before its next call.
async fn call_until(
    client: bee_cluster::Cluster,
    payload: bytes::Bytes,
    end: Instant,
    tally: Arc<Tally>,
    pause: Duration,
) {
    while Instant::now() < end {
        match client.call("server", "slow", payload.clone()).await {
            Ok(reply) => {
                assert_eq!(reply, payload, "the reply is the request");
                tally.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(ref e) if matches!(e.transport(), Some(TransportError::Overloaded { .. })) => {
                tally.overloaded.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(pause).await;
            }
            Err(e) => {
                let down = matches!(
                    e.transport(),
                    Some(TransportError::NodeDown { .. } | TransportError::PeerUnreachable { .. })
                );
                let t = if down { &tally.down } else { &tally.other };
                t.fetch_add(1, Ordering::Relaxed);
                {
                    let mut errors = tally.errors.lock().unwrap();
                    if errors.len() < 5 {
                        errors.push(e.to_string());
                    }
                }
                tokio::time::sleep(pause).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_mib_budget_sheds_what_does_not_fit_and_keeps_memory_bounded() {
    let layout = Layout::new(&["server"]);
    let server = layout.start_logged(
        "server",
        &format!(
            "[limits]\ninbound_bytes = {BUDGET}\n\n[[service]]\nkind = \"slow\"\nname = \"slow\"\n"
        ),
    );
    let payload = seri::pack(&[
        Value::Integer(HOLD_MS),
        Value::from("x".repeat(CALL_BYTES).as_str()),
    ])
    .expect("pack");
    let tally = Arc::new(Tally::default());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| layout.client(Duration::from_secs(20)))
        .collect();
    let end = Instant::now() + LOAD;
    let mut tasks = Vec::new();
    for (_node, client) in &clients {
        for _ in 0..IN_FLIGHT {
            tasks.push(tokio::spawn(call_until(
                client.clone(),
                payload.clone(),
                end,
                tally.clone(),
                Duration::from_millis(200),
            )));
        }
    }
    for t in tasks {
        t.await.expect("caller task");
    }
    let hwm = proc_status_kib(server.pid(), "VmHWM") * 1024;
    let (ok, overloaded, down, other) = (
        tally.ok.load(Ordering::Relaxed),
        tally.overloaded.load(Ordering::Relaxed),
        tally.down.load(Ordering::Relaxed),
        tally.other.load(Ordering::Relaxed),
    );
    println!(
        "served {ok}, overloaded {overloaded}, down {down}, other {other}; serving node VmHWM {} MiB (budget {} MiB + slack {} MiB)",
        hwm >> 20,
        BUDGET >> 20,
        SLACK >> 20
    );
    let errors = tally.errors.lock().unwrap().clone();
    assert_eq!(down, 0, "no call may see the node as down: {errors:?}");
    assert_eq!(other, 0, "only Overloaded may fail a call: {errors:?}");
    assert!(ok > 0, "some calls are served");
    assert!(overloaded > 0, "the rest are answered Overloaded");
    assert!(
        hwm <= BUDGET + SLACK,
        "serving node's RSS high-water mark {} MiB is past the budget + slack ({} MiB)",
        hwm >> 20,
        (BUDGET + SLACK) >> 20
    );
    // Load shedding is not a reason to close connections: the node logged no closes.
    let log = server.log();
    assert!(
        !log.contains("closing connection"),
        "connections were closed under load:\n{log}"
    );
}

/// A slow consumer is not a dead one: a node whose service holds each request 2 s, with
/// a per-connection bound (`per_peer_bytes`) far below what one caller sends, keeps
/// reading that caller's connection, answers what does not fit `Overloaded` and its
/// heartbeats at once; the caller — with a 1 s liveness bound, shorter than the hold —
/// never declares it unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_past_its_connection_bound_is_not_declared_dead() {
    const PER_PEER: u64 = 1 << 20;
    const BYTES: usize = 64 << 10;
    let layout = Layout::new(&["server"]);
    let server = layout.start_logged(
        "server",
        &format!(
            "[limits]\nper_peer_bytes = {PER_PEER}\n\n[[service]]\nkind = \"slow\"\nname = \"slow\"\n"
        ),
    );
    let mut settings = ClusterSettings::default();
    settings.channel.call_timeout = Duration::from_secs(20);
    settings.channel.liveness = Duration::from_secs(1);
    settings.channel.heartbeat = Duration::from_millis(250);
    let (_node, client) = layout.client_with(settings);
    let payload = seri::pack(&[
        Value::Integer(2000),
        Value::from("y".repeat(BYTES).as_str()),
    ])
    .expect("pack");
    let tally = Arc::new(Tally::default());
    let end = Instant::now() + Duration::from_secs(8);
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            tokio::spawn(call_until(
                client.clone(),
                payload.clone(),
                end,
                tally.clone(),
                Duration::from_millis(100),
            ))
        })
        .collect();
    for t in tasks {
        t.await.expect("caller task");
    }
    let (ok, overloaded, down, other) = (
        tally.ok.load(Ordering::Relaxed),
        tally.overloaded.load(Ordering::Relaxed),
        tally.down.load(Ordering::Relaxed),
        tally.other.load(Ordering::Relaxed),
    );
    let stats = client.senders();
    println!("served {ok}, overloaded {overloaded}, down {down}, other {other}; senders {stats:?}");
    let errors = tally.errors.lock().unwrap().clone();
    assert_eq!(down, 0, "the live node was declared down: {errors:?}");
    assert_eq!(other, 0, "only Overloaded may fail a call: {errors:?}");
    assert!(ok > 0, "some calls are served");
    assert!(overloaded > 0, "the rest are answered Overloaded");
    let (_, s, _) = stats
        .iter()
        .find(|(n, _, _)| n == "server")
        .expect("sender");
    assert_eq!(s.reconnects, 0, "the connection was never recycled");
    drop(server);
}
