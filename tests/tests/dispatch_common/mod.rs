//! Helpers shared by the dispatch, native and mysql integration tests: the demo's node
//! configs, payload builders, in-process listening nodes, and a test-only service with
//! handlers that fail and panic on request.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bee_cluster::native::{spawn_native, CServiceProxy, NativeEndpoint, NativeHandler, RpcServer};
use bee_cluster::{Cluster, ClusterSettings};
use bee_codec::kkt::KktFrame;
use bee_codec::seri::{self, Value};
use bee_proto::game::{Ping, Pong};
use bee_registry::Registry;
use bee_runtime::text::TextReply;
use bee_runtime::{Dispatcher, Node, RuntimeConfig, ServiceError};
use bee_tests::{BeeProcess, Layout};
use bytes::Bytes;

/// How long a test call may take before the test calls it hung.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The node config (services part) of a demo node, as `cargo xtask demo` writes it.
pub fn demo_services(node: &str) -> &'static str {
    match node {
        "lobby" => "[[service]]\nkind = \"cservice_proxy\"\n\n[[service]]\nkind = \"lobby\"\nname = \"lobby\"\n",
        "lpersistence_3" => {
            "[[service]]\nkind = \"cservice_proxy\"\n\n[[service]]\nkind = \"lpersistence\"\nname = \"lpersistence\"\n\n\
             [[service]]\nkind = \"sink\"\nname = \"sink\"\n"
        }
        "activity_master" => "[[service]]\nkind = \"activity_master\"\nname = \"activity_master\"\nworkers = 8\n",
        "shop_master" => {
            "[[service]]\nkind = \"cservice_proxy\"\n\n[[service]]\nkind = \"native_shop\"\nname = \"shop\"\n\n\
             [[service]]\nkind = \"shop_master\"\nname = \"shop_master\"\ntarget = \"shop\"\n"
        }
        other => panic!("no demo config for node {other}"),
    }
}

/// Start a `bee` process without stalling the async runtime's other tasks.
pub fn start(layout: &Layout, name: &str, services_toml: &str) -> BeeProcess {
    // The demo's service kinds live in the `bee-demo` binary, not in `bee`.
    tokio::task::block_in_place(|| layout.start_with(&bee_tests::demo_bin(), name, services_toml))
}

/// Start a demo node by name.
pub fn start_demo(layout: &Layout, name: &str) -> BeeProcess {
    start(layout, name, demo_services(name))
}

/// An in-process node that is part of the layout's cluster: it listens on its own port
/// from the layout, so `bee` processes can call it (and send rpc replies to it).
pub async fn listening_node(layout: &Layout, name: &str) -> (Node, Cluster) {
    riding_node(layout, name, name, Duration::ZERO).await
}

/// [`listening_node`] listening on `listen` (a node name or `host:port`), whose channels
/// hold calls and pushes for a peer that is away up to `ride_through` (zero: fail at
/// once).
pub async fn riding_node(
    layout: &Layout,
    name: &str,
    listen: &str,
    ride_through: Duration,
) -> (Node, Cluster) {
    let node = Node::new(
        name,
        RuntimeConfig {
            call_timeout: CALL_TIMEOUT,
            ..RuntimeConfig::default()
        },
    );
    let mut settings = ClusterSettings::default();
    settings.channel.call_timeout = CALL_TIMEOUT;
    settings.channel.ride_through = ride_through;
    settings.wait_for_node = Some(Duration::ZERO);
    let cluster = Cluster::start(&node, Registry::new(layout.config()), settings);
    let local = cluster
        .open(listen)
        .await
        .expect("in-process node cannot listen");
    if listen == name {
        assert_eq!(local.port(), layout.port(name));
    }
    (node, cluster)
}

/// `skynet.pack(values…)`.
pub fn pack(values: &[Value]) -> Bytes {
    seri::pack(values).expect("pack")
}

/// `skynet.pack("lua", args…)`.
pub fn lua(args: &[Value]) -> Bytes {
    let mut v = vec![Value::from("lua")];
    v.extend_from_slice(args);
    pack(&v)
}

/// `skynet.pack("text", frame)`.
pub fn text(frame: Bytes) -> Bytes {
    pack(&[Value::from("text"), Value::String(frame)])
}

/// Game-frame bytes (sub_type 16, no names) for `uid` holding `msg` (the demo's uids
/// are positive; the frame carries them as i64).
pub fn frame<M: prost::Message + prost::Name>(uid: u64, msg: &M) -> Bytes {
    bee_demo::frame(uid as i64, msg).expect("frame")
}

/// Decode a game frame expected to hold an `M`; its uid as the demo's u64.
pub fn unframe<M: prost::Message + prost::Name + Default>(bytes: &Bytes) -> (u64, M) {
    let (uid, m) = bee_demo::unframe::<M>(bytes)
        .unwrap_or_else(|e| panic!("not a {} frame: {e}", M::full_name()));
    (uid as u64, m)
}

/// Unpack a reply payload.
pub fn values(reply: &Bytes) -> Vec<Value> {
    seri::unpack(reply).expect("reply is not a skynet.pack payload")
}

/// The one string a `"text"` call replies with (a game frame).
pub fn reply_frame(reply: &Bytes) -> Bytes {
    match values(reply).into_iter().next() {
        Some(Value::String(b)) => b,
        other => panic!("expected a reply frame, got {other:?}"),
    }
}

/// The text lines a lobby scenario answers with.
pub fn lines(reply: &Bytes) -> Vec<String> {
    values(reply)
        .into_iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
        })
        .collect()
}

/// The state of [`faulty_service`]: how many messages it answered normally.
#[derive(Debug, Default)]
pub struct Faulty {
    /// Answered `ping`s and Pings.
    pub served: i64,
}

/// A service whose handlers fail on request, for the error tests:
/// - `("lua", "ping")` → `"pong", served`;
/// - `("lua", "fail", text)` → an error with exactly `text`;
/// - `("lua", "panic", text)` → panics with `text`;
/// - `("lua", "slow", ms)` → answers `"slept"` after `ms` milliseconds;
/// - `"text"` `game.Ping{seq}` → `game.Pong{seq}`; seq 13 panics, seq 66 fails.
pub fn faulty_service() -> RpcServer<Dispatcher<Faulty>> {
    let d = Dispatcher::new(Faulty::default())
        .command("ping", |s, ()| {
            s.served += 1;
            Ok(("pong", s.served))
        })
        .command("fail", |_s, text: Option<String>| {
            Err::<(), _>(ServiceError::msg(text.unwrap_or_else(|| "failed".into())))
        })
        .command(
            "panic",
            |_s, text: Option<String>| -> Result<(), ServiceError> {
                panic!("{}", text.unwrap_or_else(|| "panicked".into()))
            },
        )
        .command_async("slow", |_h, ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, ServiceError>("slept")
        })
        .on(|s, ctx, _frame, m: Ping| match m.seq {
            13 => panic!("Ping 13 is unlucky"),
            66 => Err(ServiceError::msg("Ping 66 refused")),
            _ => {
                s.served += 1;
                Ok(Some(Pong {
                    seq: m.seq,
                    served_by: format!("{}/{}", ctx.node().name(), ctx.label()),
                }))
            }
        });
    RpcServer::new(d)
}

/// Start CServiceProxy on an in-process node; returns its address.
pub fn start_proxy(node: &Node) -> bee_runtime::Addr {
    CServiceProxy::spawn(node)
}

/// A native handler for tests: counts frames, answers `game.Ping` with `game.Pong`
/// (served_by = its name), panics on a Ping with seq 13, ignores anything else.
pub struct TestNative {
    /// Its name, put in replies.
    pub name: String,
    /// Frames received.
    pub frames: Arc<AtomicUsize>,
}

impl NativeHandler for TestNative {
    async fn on_frame(&mut self, _endpoint: &NativeEndpoint, frame: KktFrame) -> Option<TextReply> {
        self.frames.fetch_add(1, Ordering::SeqCst);
        let ping = bee_demo::open::<Ping>(&frame).ok()?;
        if ping.seq == 13 {
            panic!("native {} panicked on request", self.name);
        }
        Some(TextReply::of(&Pong {
            seq: ping.seq,
            served_by: self.name.clone(),
        }))
    }
}

/// Start a [`TestNative`] registered as `service` on an in-process node that has a
/// CServiceProxy at `proxy`; returns its endpoint and frame counter.
pub fn start_test_native(
    node: &Node,
    proxy: bee_runtime::Addr,
    service: &str,
) -> (NativeEndpoint, Arc<AtomicUsize>) {
    let frames = Arc::new(AtomicUsize::new(0));
    let ep = spawn_native(
        node,
        proxy,
        service,
        TestNative {
            name: service.to_string(),
            frames: frames.clone(),
        },
    )
    .expect("spawn_native");
    (ep, frames)
}

#[allow(unused_imports)] // not every test file that includes this module waits
pub use bee_tests::eventually;
