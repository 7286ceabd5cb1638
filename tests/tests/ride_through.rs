//! Replies and pushes ride through a caller's node being briefly away (a reply path that
//! survives the caller's node being briefly away, and senders that ride through a
//! restart): a `bee-demo` node answers a native rpc while its way back to the
//! caller is cut (a real TCP relay in between, stopped for a moment). With
//! `[liveness] ride_through_ms` the reply waits in the replying node's parked queue and
//! arrives when the way is back; without it the reply is refused at once and the caller
//! times out — the control that shows the test can fail.

mod dispatch_common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bee_cluster::native::RpcError;
use bee_proto::game::{Ping, Pong};
use bee_runtime::text::frame_of;
use bee_tests::{free_port, Layout};
use dispatch_common::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP relay from `listen` to `to` that can be cut (every connection closed, nothing
/// listening) and put back on the same port.
struct Relay {
    listen: String,
    to: String,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    async fn start(listen: String, to: String) -> Relay {
        let r = Relay {
            listen,
            to,
            tasks: Arc::default(),
        };
        r.up().await;
        r
    }

    async fn up(&self) {
        let listener = TcpListener::bind(&self.listen).await.expect("relay bind");
        let (to, tasks) = (self.to.clone(), self.tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut a, _)) = listener.accept().await {
                let to = to.clone();
                let pipe = tokio::spawn(async move {
                    if let Ok(mut b) = TcpStream::connect(&to).await {
                        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                    }
                });
                tasks.lock().unwrap().push(pipe);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// One run: `replier` (a bee-demo `lpersistence_3` with `ride_through_ms`) answers an
/// rpc from the in-process native caller `tn`, whose address in the cluster config is
/// the relay's; the relay is cut while the request is on its way and restored 600 ms
/// later. Returns the rpc's outcome and how long it took.
async fn reply_across_a_cut(ride_through_ms: u64) -> (Result<Pong, RpcError>, Duration) {
    let layout = Layout::new(&["replier", "tn"]);
    let _replier = start(
        &layout,
        "replier",
        &format!(
            "[liveness]\nride_through_ms = {ride_through_ms}\n\n{}",
            demo_services("lpersistence_3")
        ),
    );
    // tn listens on a port of its own; the cluster config's tn address is the relay.
    let real = format!("127.0.0.1:{}", free_port());
    let relay = Relay::start(format!("127.0.0.1:{}", layout.port("tn")), real.clone()).await;
    let (node, _cluster) = riding_node(&layout, "tn", &real, Duration::ZERO).await;
    let (ep, _) = start_test_native(&node, start_proxy(&node), "alpha");

    // The way back works: the replier's channel to tn is up (through the relay).
    let reply = ep
        .rpc_call(
            "replier",
            "lpersistence",
            frame_of(
                1,
                &Ping {
                    seq: 1,
                    sent_unix_ms: 0,
                },
            ),
            Duration::from_secs(5),
        )
        .await
        .expect("first rpc answered");
    assert!(bee_demo::open::<Pong>(&reply).is_ok());

    // Cut the way back, let the replier notice, then ask again.
    relay.cut();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let restore = {
        let relay = &relay;
        async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            relay.up().await;
        }
    };
    let t0 = Instant::now();
    let call = ep.rpc_call(
        "replier",
        "lpersistence",
        frame_of(
            1,
            &Ping {
                seq: 2,
                sent_unix_ms: 0,
            },
        ),
        Duration::from_secs(3),
    );
    let (outcome, ()) = tokio::join!(call, restore);
    let took = t0.elapsed();
    relay.cut();
    let outcome = outcome.map(|f| bee_demo::open::<Pong>(&f).expect("a Pong"));
    (outcome, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_reply_waits_for_a_caller_briefly_away() {
    let (outcome, took) = reply_across_a_cut(5_000).await;
    let pong = outcome.unwrap_or_else(|e| panic!("the reply rode through the cut: {e}"));
    assert_eq!(pong.seq, 2);
    assert!(
        took >= Duration::from_millis(550),
        "the reply could only arrive once the way back was restored: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ride_through_the_reply_is_lost_and_the_caller_times_out() {
    let (outcome, _) = reply_across_a_cut(0).await;
    assert_eq!(
        outcome.unwrap_err(),
        RpcError::Timeout(Duration::from_secs(3))
    );
}
