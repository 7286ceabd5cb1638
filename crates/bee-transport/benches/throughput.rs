//! Throughput of one channel over one loopback connection: calls with 64 in flight and
//! pushes, against a listener whose inbound echoes (calls) or counts (pushes).
//!
//! Run: `cargo bench -p bee-transport --bench throughput` (prints calls/s and pushes/s).
//! Targets on a 2-core machine: > 150k calls/s, > 600k pushes/s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bee_transport::{
    Acceptor, Address, Channel, ChannelConfig, Dispatched, Inbound, Listener, ListenerConfig,
    Request,
};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

struct Echo {
    pushes: Arc<AtomicU64>,
}

impl Inbound for Echo {
    fn dispatch(&self, req: Request) -> BoxFuture<'_, Dispatched> {
        if req.push {
            self.pushes.fetch_add(1, Ordering::Relaxed);
            return futures::future::ready(Dispatched::NoReply).boxed();
        }
        futures::future::ready(Dispatched::Ready(Ok(req.payload))).boxed()
    }
    fn closed(&self, _reason: &str) {}
}

struct EchoAcceptor {
    pushes: Arc<AtomicU64>,
}

impl Acceptor for EchoAcceptor {
    fn accept(&self, _peer: std::net::SocketAddr) -> Arc<dyn Inbound> {
        Arc::new(Echo {
            pushes: self.pushes.clone(),
        })
    }
}

async fn calls(ch: &Channel, n: u64, in_flight: usize, payload: Bytes) -> f64 {
    let t = Instant::now();
    futures::stream::iter(0..n)
        .map(|_| ch.call(Address::Id(1), payload.clone(), None))
        .buffer_unordered(in_flight)
        .for_each(|r| {
            r.expect("call");
            futures::future::ready(())
        })
        .await;
    n as f64 / t.elapsed().as_secs_f64()
}

async fn pushes(ch: &Channel, counter: &AtomicU64, n: u64, payload: Bytes) -> f64 {
    let start = counter.load(Ordering::Relaxed);
    let t = Instant::now();
    for _ in 0..n {
        ch.push(Address::Id(1), payload.clone())
            .await
            .expect("push");
    }
    while counter.load(Ordering::Relaxed) < start + n {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let counter = Arc::new(AtomicU64::new(0));
        let listener = Listener::bind("127.0.0.1:0", ListenerConfig::default())
            .await
            .expect("bind");
        let addr = listener.local_addr();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(listener.run(
            Arc::new(EchoAcceptor {
                pushes: counter.clone(),
            }),
            shutdown.clone(),
        ));
        let ch = Channel::new("bench", addr.to_string(), ChannelConfig::default());
        let small = Bytes::from_static(b"\x04\x03lua\x04\x04ping");
        // Warm up (connect, allocate buffers).
        calls(&ch, 20_000, 64, small.clone()).await;
        pushes(&ch, &counter, 20_000, small.clone()).await;

        for (label, in_flight) in [("64 in flight", 64), ("1 in flight", 1)] {
            let n = if in_flight == 1 { 50_000 } else { 500_000 };
            let rate = calls(&ch, n, in_flight, small.clone()).await;
            println!("calls, 16-byte payload, {label}: {rate:>12.0} calls/s");
        }
        let rate = calls(&ch, 100_000, 64, Bytes::from(vec![1u8; 1024])).await;
        println!("calls, 1 KiB payload, 64 in flight: {rate:>12.0} calls/s");
        let rate = pushes(&ch, &counter, 2_000_000, small.clone()).await;
        println!("pushes, 16-byte payload:            {rate:>12.0} pushes/s");
        let rate = pushes(&ch, &counter, 200_000, Bytes::from(vec![1u8; 1024])).await;
        println!("pushes, 1 KiB payload:              {rate:>12.0} pushes/s");
        println!("{:?}", ch.stats());
        ch.close();
        shutdown.cancel();
        let _ = server.await;
    });
}
