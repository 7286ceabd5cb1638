//! The node's HTTP face on `metrics_listen`: the live status page (`/`), the Prometheus
//! text (`/metrics`) and the JSON API (`/api/v1/node`, `/api/v1/cluster`), served by
//! axum from the node's own runtime.
//!
//! - `/api/v1/node` is this node as it sees itself and its peers ([`NodeStatus`]):
//!   identity, config, budgets, connections, services, the link to every peer (calls,
//!   errors, bytes, reconnects, latency from the Prometheus histogram) and its recent
//!   events. The same JSON is what `bee_clusterd status` answers to other nodes.
//! - `/api/v1/cluster` asks every node of the cluster config for that JSON through its
//!   `bee_clusterd` (all at once, each bounded by [`GATHER_TIMEOUT`]) and says which
//!   nodes did not answer; a node that does not answer and has no live connection from
//!   here is `down`, one that does not answer over a live connection is `suspect`.
//! - `/` is a static page (HTML and JS compiled into the binary, no CDN) that polls
//!   `/api/v1/cluster` every few seconds.
//!
//! Everything here is read-only: the page and the API change nothing on any node.
//! The JSON's fields are documented in `docs/operations.md`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bee_cluster::Cluster;
use bee_codec::seri::{self, Value};
use bee_runtime::{CallError, Node, Target};
use bytes::Bytes;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

use crate::config::NodeConfig;
use crate::ops::Budgets;

/// The page, its script and its style, compiled into the binary.
const PAGE: &str = include_str!("status/index.html");
const SCRIPT: &str = include_str!("status/app.js");
const STYLE: &str = include_str!("status/style.css");

/// How long `/api/v1/cluster` waits for one node's answer.
pub const GATHER_TIMEOUT: Duration = Duration::from_millis(1500);
/// A cluster view younger than this is served again instead of asking every node anew
/// (several open pages cost the cluster what one does).
const CLUSTER_CACHE: Duration = Duration::from_millis(1000);
/// Link rates are computed over at least this window.
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// Liveness changes this node saw while gathering, kept for the timeline.
const LIVENESS_EVENTS: usize = 64;
/// The cluster view's timeline keeps the newest this many events.
const TIMELINE: usize = 200;

/// The `schema` field of `/api/v1/node`.
pub const NODE_SCHEMA: &str = "bee.node/1";
/// The `schema` field of `/api/v1/cluster`.
pub const CLUSTER_SCHEMA: &str = "bee.cluster/1";

/// What the status server needs of the running node.
struct StatusState {
    node: bee_runtime::service::WeakNode,
    cluster: Cluster,
    prometheus: PrometheusHandle,
    budgets: Budgets,
    /// Config kind of each named service (`cservice`, `echo`, …).
    kinds: HashMap<String, String>,
    rates: Mutex<Rates>,
    cluster_cache: tokio::sync::Mutex<Option<(Instant, Arc<String>)>>,
    /// Liveness this node last saw of each peer while gathering, and the changes.
    seen: Mutex<(HashMap<String, &'static str>, VecDeque<Event>)>,
    /// In etcd mode: etcd's health for the cluster header.
    etcd: Option<crate::etcd::Probe>,
    /// `[admin] enabled`.
    admin: bool,
    /// `[auth]` is on.
    needs_secret: bool,
}

/// The previous sample of the link counters, and the rates computed from it.
#[derive(Default)]
struct Rates {
    at: Option<Instant>,
    counters: HashMap<String, LinkCounters>,
    per_s: HashMap<String, LinkRates>,
}

#[derive(Clone, Copy, Default)]
struct LinkCounters {
    calls: u64,
    errors: u64,
    bytes_out: f64,
    bytes_in: f64,
}

#[derive(Clone, Copy, Default, Serialize)]
struct LinkRates {
    calls_per_s: f64,
    errors_per_s: f64,
    bytes_out_per_s: f64,
    bytes_in_per_s: f64,
}

/// One node as it sees itself: the body of `/api/v1/node` and of `bee_clusterd status`.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// [`NODE_SCHEMA`].
    pub schema: &'static str,
    /// The node's name.
    pub node: String,
    /// Its cluster listening addresses.
    pub listening: Vec<String>,
    /// bee's version.
    pub version: String,
    /// This run's incarnation.
    pub incarnation: u64,
    /// How long the node has run.
    pub uptime_ms: u64,
    /// When this was made (ms since 1970).
    pub now_ms: u64,
    /// The cluster config it runs.
    pub config: ConfigStatus,
    /// Its byte budgets.
    pub budgets: Vec<BudgetStatus>,
    /// Connections in (accepted) and out (channels to peers, connected of them).
    pub connections: Connections,
    /// Resident memory and open descriptors, when readable.
    pub process: ProcessStatus,
    /// Its services.
    pub services: Vec<ServiceStatus>,
    /// Sharded services: the workers of each master, by label.
    pub shards: Vec<ShardStatus>,
    /// This node's link to every other node of its config it has called (it has a
    /// channel to) or that membership marked down.
    pub peers: Vec<PeerStatus>,
    /// Its recent registry events, and liveness changes it saw, oldest first.
    pub events: Vec<Event>,
    /// It is draining (SIGTERM, or a successor taking over): it accepts no new peers.
    pub draining: bool,
    /// Whether actions (drain, config push) are offered: the node config's
    /// `[admin] enabled` (`actions.rs`); read-only otherwise.
    pub admin: bool,
    /// Actions need the cluster secret (`Authorization: Bearer …`): `[auth]` is on.
    pub admin_needs_secret: bool,
}

/// The config a node runs.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigStatus {
    /// Its version.
    pub version: u64,
    /// Its content hash (16 hex digits).
    pub hash: String,
    /// When it was applied (ms since 1970).
    pub applied_at_ms: u64,
    /// Where it came from (`file …`, `push from …`, `etcd key …`).
    pub source: String,
    /// What the node config's `cluster` names (a file or an `etcd://` URL).
    pub cluster: String,
}

/// One byte budget.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetStatus {
    /// `inbound` or `outbound`.
    pub name: &'static str,
    /// Bytes held now.
    pub used: u64,
    /// The limit.
    pub limit: u64,
    /// Refusals since start.
    pub rejected: u64,
}

/// Connection counts.
#[derive(Debug, Clone, Serialize)]
pub struct Connections {
    /// Accepted connections open now.
    pub inbound: u64,
    /// Channels to peers that are connected now.
    pub outbound: u64,
    /// Channels to peers (connected or not).
    pub outbound_channels: u64,
}

/// The process's resources.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessStatus {
    /// Resident memory, bytes.
    pub rss_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
}

/// One service.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    /// Its address, `:0000000a`.
    pub addr: String,
    /// Its label.
    pub label: String,
    /// The kind the node config started it as, `cluster` for the cluster layer's own
    /// services, or empty when unknown (services a service started).
    pub kind: String,
    /// `rust`, `c` (a C/C++ module), `lua` (skynet's snlua) or `cluster`.
    pub runtime: &'static str,
    /// Its local names.
    pub names: Vec<String>,
    /// Messages handled so far.
    pub handled: u64,
    /// Time spent handling them, in milliseconds (a C or Lua service: the time its
    /// callback ran).
    pub busy_ms: u64,
    /// Messages waiting in its mailbox.
    pub queued: u64,
    /// How long it has run.
    pub uptime_ms: u64,
}

/// The workers of one sharded service (labels `NAME[i]`).
#[derive(Debug, Clone, Serialize)]
pub struct ShardStatus {
    /// The workers' label before `[i]`.
    pub label: String,
    /// How its master picks a worker (`hash`: bee's stable hash; `modulo`: the team's
    /// `uid % n`, uid 0 to every worker), when the master runs here.
    pub rule: Option<&'static str>,
    /// The master's address, when it runs here.
    pub master: Option<String>,
    /// Worker index, address, handled, queued.
    pub workers: Vec<ShardWorker>,
}

/// One shard worker.
#[derive(Debug, Clone, Serialize)]
pub struct ShardWorker {
    /// Its index in the master's table.
    pub index: usize,
    /// Its address.
    pub addr: String,
    /// Messages handled.
    pub handled: u64,
    /// Messages waiting.
    pub queued: u64,
}

/// This node's link to one peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    /// The peer's name.
    pub node: String,
    /// Its address in the config.
    pub address: String,
    /// As seen from here: `connected`, `disconnected` (a channel, no live connection) or
    /// `marked_down` (membership says gone).
    pub link: &'static str,
    /// Why membership marked it down.
    pub down_reason: Option<String>,
    /// Its incarnation as learnt by `hello`.
    pub incarnation: Option<u64>,
    /// Calls issued so far.
    pub calls: u64,
    /// Pushes issued so far.
    pub pushes: u64,
    /// Calls and pushes that failed.
    pub errors: u64,
    /// Connections opened after the first.
    pub reconnects: u64,
    /// Calls waiting for replies now.
    pub in_flight: u64,
    /// Bytes queued for it now.
    pub queued_bytes: u64,
    /// Bytes written to it so far.
    pub bytes_out: u64,
    /// Bytes read from it so far.
    pub bytes_in: u64,
    /// Rates over the last window (at least one second).
    pub rates: PeerRates,
    /// Call latency since start, from the Prometheus histogram (bucket upper bounds).
    pub p50_ms: Option<f64>,
    /// See `p50_ms`.
    pub p99_ms: Option<f64>,
}

/// Rates of one link.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerRates {
    /// Calls issued per second.
    pub calls_per_s: f64,
    /// Failures per second.
    pub errors_per_s: f64,
    /// Bytes written per second.
    pub bytes_out_per_s: f64,
    /// Bytes read per second.
    pub bytes_in_per_s: f64,
}

/// One timeline entry.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// When (ms since 1970).
    pub at_ms: u64,
    /// `config`, `moved`, `restarted`, `names`, `down`, `up`, `drain` or `other`.
    pub kind: &'static str,
    /// What happened, as the node logged it.
    pub text: String,
}

/// The body of `/api/v1/cluster`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// [`CLUSTER_SCHEMA`].
    pub schema: &'static str,
    /// The node that gathered this.
    pub from: String,
    /// When (ms since 1970).
    pub now_ms: u64,
    /// How long gathering took.
    pub took_ms: u64,
    /// The bound on each node's answer.
    pub timeout_ms: u64,
    /// Counts and the config in force.
    pub header: ClusterHeader,
    /// Every node of the config, in name order.
    pub nodes: Vec<ClusterNode>,
    /// The nodes that did not answer.
    pub not_answered: Vec<String>,
    /// Every answering node's events, newest first, with who reported them.
    pub timeline: Vec<ClusterEvent>,
}

/// The cluster at a glance.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterHeader {
    /// Nodes that answered.
    pub up: usize,
    /// Nodes that did not answer over a live connection.
    pub suspect: usize,
    /// Nodes that did not answer and are not connected.
    pub down: usize,
    /// The newest config version any node runs.
    pub config_version: u64,
    /// The hash of that config (as the first node running it reports).
    pub config_hash: String,
    /// Nodes that run that version with that hash.
    pub config_acked: usize,
    /// Where the gathering node's config comes from.
    pub config_source: String,
    /// Nodes that say they are draining (stopping, or handing over to a successor).
    pub draining: Vec<String>,
    /// In etcd mode (`cluster = "etcd://…"`): whether etcd answered the gathering node
    /// just now; null otherwise.
    pub etcd: Option<EtcdHealth>,
}

/// etcd as the gathering node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct EtcdHealth {
    /// The node config's `cluster` URL.
    pub url: String,
    /// It answered a read of the membership keys within a second.
    pub healthy: bool,
    /// How long that read took.
    pub answered_ms: Option<u64>,
    /// Nodes registered in its membership keys.
    pub members: Option<u64>,
    /// Why it is not healthy.
    pub error: Option<String>,
}

impl EtcdHealth {
    /// What `probe` finds now.
    pub(crate) async fn of(probe: &crate::etcd::Probe) -> EtcdHealth {
        let (healthy, answered_ms, members, error) = match probe.check().await {
            Ok((members, took)) => (true, Some(ms(took)), Some(members), None),
            Err(e) => (false, None, None, Some(e)),
        };
        EtcdHealth {
            url: probe.url().to_string(),
            healthy,
            answered_ms,
            members,
            error,
        }
    }
}

/// One node in the cluster view.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterNode {
    /// Its name.
    pub name: String,
    /// Its address in the config.
    pub address: String,
    /// `up` (it answered; without a status when `error` says why, e.g. a node without
    /// `metrics_listen` or a stock skynet node), `suspect` (no answer over a live
    /// connection) or `down` (no answer, no connection).
    pub state: &'static str,
    /// Why it did not answer, or answered without a status.
    pub error: Option<String>,
    /// How long its answer took.
    pub answered_ms: Option<u64>,
    /// What it answered (`/api/v1/node` of that node).
    pub status: Option<serde_json::Value>,
}

/// A timeline entry of the cluster view.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterEvent {
    /// The node that reported it.
    pub node: String,
    /// See [`Event`].
    pub at_ms: u64,
    /// See [`Event`].
    pub kind: String,
    /// See [`Event`].
    pub text: String,
}

/// The node's metrics listener, bound before the node starts (so a taken port fails the
/// start) and served once the cluster layer is up ([`serve`]). A successor taking over
/// (`bee run --takeover`) binds it once its predecessor has let it go.
pub struct Listener {
    addr: SocketAddr,
    /// Bound now, or (taking over) to be bound when the predecessor is gone.
    listener: Option<std::net::TcpListener>,
    prometheus: PrometheusHandle,
}

/// How long a successor keeps trying to bind the metrics address its predecessor holds.
const REBIND_FOR: Duration = Duration::from_secs(120);

impl Listener {
    /// Bind `addr` for the status server.
    fn bind_socket(addr: SocketAddr) -> Result<std::net::TcpListener> {
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        listener
            .set_nonblocking(true)
            .context("cannot make the metrics socket non-blocking")?;
        Ok(listener)
    }

    /// The server's socket: `addr` bound now, or — `takeover`: the predecessor of a hot
    /// update holds it until it exits — bound later by [`serve`]. `prometheus` installs
    /// the recorder whose handle renders `/metrics`; it runs once the address is known
    /// to be free, so a taken port fails the start before a recorder is installed.
    pub(crate) fn open(
        addr: &str,
        takeover: bool,
        prometheus: impl FnOnce() -> Result<PrometheusHandle>,
    ) -> Result<Listener> {
        let addr: SocketAddr = addr
            .parse()
            .with_context(|| format!("metrics_listen = {addr:?} is not host:port"))?;
        let listener = if takeover {
            None
        } else {
            Some(Listener::bind_socket(addr)?)
        };
        Ok(Listener {
            addr,
            listener,
            prometheus: prometheus()?,
        })
    }

    /// The address served.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.listener {
            Some(l) => l.local_addr().ok(),
            None => Some(self.addr),
        }
    }
}

/// Bind `addr`, retrying while another process (the predecessor of a hot update) holds
/// it, for at most [`REBIND_FOR`].
async fn bind_when_free(addr: SocketAddr) -> Option<tokio::net::TcpListener> {
    let started = Instant::now();
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                tracing::info!(%addr, waited_ms = ms(started.elapsed()), "status page and metrics served");
                return Some(l);
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse && started.elapsed() < REBIND_FOR =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                tracing::warn!(%addr, error = %e, "cannot serve the status page and metrics");
                return None;
            }
        }
    }
}

/// Serve the page, `/metrics` and the JSON API on `listener` until the node is gone;
/// also makes this node answer `bee_clusterd status`.
pub fn serve(
    listener: Listener,
    node: &Node,
    cluster: &Cluster,
    cfg: &NodeConfig,
    budgets: &Budgets,
    actions: Router,
) -> Result<()> {
    let kinds = cfg
        .services
        .iter()
        .map(|s| {
            (
                s.name.clone().unwrap_or_else(|| s.kind.clone()),
                s.kind.clone(),
            )
        })
        .collect();
    let state = Arc::new(StatusState {
        node: node.downgrade(),
        cluster: cluster.clone(),
        prometheus: listener.prometheus,
        budgets: budgets.clone(),
        kinds,
        rates: Mutex::new(Rates::default()),
        cluster_cache: tokio::sync::Mutex::new(None),
        seen: Mutex::new((HashMap::new(), VecDeque::new())),
        etcd: crate::etcd::url_of(cfg).map(crate::etcd::Probe::new),
        admin: cfg.admin.enabled,
        needs_secret: cfg.auth.is_some(),
    });
    let cluster_source = cfg.cluster.display().to_string();
    {
        // Weak: the cluster layer keeps this source; the source must not keep the node.
        let weak = Arc::downgrade(&state);
        let source = cluster_source.clone();
        cluster.set_status(Arc::new(move || match weak.upgrade() {
            Some(s) => serde_json::to_string(&s.node_status(&source))
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")),
            None => "{\"error\":\"the node is stopping\"}".to_string(),
        }));
    }
    let app = Router::new()
        .route("/", get(page))
        .route("/app.js", get(script))
        .route("/style.css", get(style))
        .route("/metrics", get(prometheus_text))
        .route("/api/v1/node", get(api_node))
        .route("/api/v1/cluster", get(api_cluster))
        .with_state(Arc::new(Served {
            state,
            cluster_source,
        }))
        .merge(actions)
        .fallback(not_found);
    let bound = match listener.listener {
        Some(l) => {
            Some(tokio::net::TcpListener::from_std(l).context("cannot serve the metrics socket")?)
        }
        None => None,
    };
    let addr = listener.addr;
    tokio::spawn(async move {
        let listener = match bound {
            Some(l) => l,
            None => match bind_when_free(addr).await {
                Some(l) => l,
                None => return,
            },
        };
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the status and metrics server stopped");
        }
    });
    Ok(())
}

struct Served {
    state: Arc<StatusState>,
    cluster_source: String,
}

type Shared = State<Arc<Served>>;

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "not found: this node serves /, /metrics, /api/v1/node and /api/v1/cluster\n",
    )
        .into_response()
}

async fn prometheus_text(State(s): Shared) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.state.prometheus.render(),
    )
        .into_response()
}

fn json(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn json_error(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "error": e.to_string() }).to_string(),
    )
        .into_response()
}

async fn api_node(State(s): Shared) -> Response {
    match serde_json::to_string(&s.state.node_status(&s.cluster_source)) {
        Ok(b) => json(b),
        Err(e) => json_error(e),
    }
}

async fn api_cluster(State(s): Shared) -> Response {
    let mut cache = s.state.cluster_cache.lock().await;
    if let Some((at, body)) = cache.as_ref() {
        if at.elapsed() < CLUSTER_CACHE {
            return json(body.to_string());
        }
    }
    let view = s.state.gather(&s.cluster_source).await;
    match serde_json::to_string(&view) {
        Ok(b) => {
            *cache = Some((Instant::now(), Arc::new(b.clone())));
            json(b)
        }
        Err(e) => json_error(e),
    }
}

fn unix_ms() -> u64 {
    bee_cluster::lifecycle::unix_ms(SystemTime::now())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What kind of timeline entry an event line is.
fn event_kind(text: &str) -> &'static str {
    if text.starts_with("cluster config changed") {
        "config"
    } else if text.starts_with("names of ") || text.starts_with("name ") {
        "names"
    } else if text.contains(" restarted ") {
        "restarted"
    } else if text.contains(" moved ") {
        "moved"
    } else if text.ends_with(" is down") || text.contains(" is down:") {
        "down"
    } else if text.ends_with(" is up") {
        "up"
    } else if text.contains(" is draining") {
        "drain"
    } else {
        "other"
    }
}

impl StatusState {
    /// Whether `addr` is one of the node's C services (skynet modules).
    fn is_c_service(&self, addr: bee_runtime::Addr) -> bool {
        #[cfg(feature = "capi")]
        if let Some(host) = self
            .node
            .upgrade()
            .and_then(|n| n.extension::<bee_capi::Host>())
        {
            return host.is_c_service(addr);
        }
        let _ = addr;
        false
    }

    /// This node now.
    fn node_status(&self, cluster_source: &str) -> NodeStatus {
        let cluster = &self.cluster;
        let report = cluster.report();
        let services = self
            .node
            .upgrade()
            .map(|n| n.services())
            .unwrap_or_default();
        let senders = cluster.senders();
        let series = Series::parse(&self.prometheus.render());
        let config = cluster.registry().config();
        let down: HashMap<String, String> = cluster.down_nodes().into_iter().collect();
        let by_node: HashMap<&str, &bee_transport::ChannelStats> =
            senders.iter().map(|(n, s, _)| (n.as_str(), s)).collect();
        let now = Instant::now();
        let mut counters = HashMap::new();
        let mut peers = Vec::new();
        for (name, address) in &config.nodes {
            if name == cluster.node_name() {
                continue;
            }
            let stats = by_node.get(name.as_str());
            // A node never called from here has nothing to show (and a cluster of many
            // nodes would repeat it for every pair).
            if stats.is_none() && !down.contains_key(name) {
                continue;
            }
            let bytes_out = series.get("bee_transport_channel_bytes_out_total", name);
            let bytes_in = series.get("bee_transport_channel_bytes_in_total", name);
            let (calls, errors) = stats.map_or((0, 0), |s| (s.calls, s.failures));
            counters.insert(
                name.clone(),
                LinkCounters {
                    calls,
                    errors,
                    bytes_out,
                    bytes_in,
                },
            );
            let link = if down.contains_key(name) {
                "marked_down"
            } else {
                match stats {
                    Some(s) if s.connected => "connected",
                    _ => "disconnected",
                }
            };
            let (p50, p99) = series.quantiles("bee_transport_channel_call_seconds", name);
            peers.push(PeerStatus {
                node: name.clone(),
                address: entry_address(address),
                link,
                down_reason: down.get(name).cloned(),
                incarnation: cluster.registry().peer_incarnation(name),
                calls,
                pushes: stats.map_or(0, |s| s.pushes),
                errors,
                reconnects: stats.map_or(0, |s| s.reconnects),
                in_flight: stats.map_or(0, |s| s.in_flight as u64),
                queued_bytes: stats.map_or(0, |s| s.queued_bytes as u64),
                bytes_out: bytes_out as u64,
                bytes_in: bytes_in as u64,
                rates: PeerRates::default(),
                p50_ms: p50.map(|s| s * 1000.0),
                p99_ms: p99.map(|s| s * 1000.0),
            });
        }
        {
            let mut r = self.rates.lock().unwrap_or_else(|e| e.into_inner());
            let elapsed = r.at.map(|at| now.duration_since(at));
            match elapsed {
                Some(dt) if dt < RATE_WINDOW => {}
                _ => {
                    if let Some(dt) = elapsed {
                        let secs = dt.as_secs_f64();
                        let per_s = counters
                            .iter()
                            .map(|(n, c)| {
                                let p = r.counters.get(n).copied().unwrap_or_default();
                                let rate = |a: f64, b: f64| ((a - b).max(0.0)) / secs;
                                let rates = LinkRates {
                                    calls_per_s: rate(c.calls as f64, p.calls as f64),
                                    errors_per_s: rate(c.errors as f64, p.errors as f64),
                                    bytes_out_per_s: rate(c.bytes_out, p.bytes_out),
                                    bytes_in_per_s: rate(c.bytes_in, p.bytes_in),
                                };
                                (n.clone(), rates)
                            })
                            .collect();
                        r.per_s = per_s;
                    }
                    r.at = Some(now);
                    r.counters = counters;
                }
            }
            for p in &mut peers {
                if let Some(x) = r.per_s.get(&p.node) {
                    p.rates = PeerRates {
                        calls_per_s: x.calls_per_s,
                        errors_per_s: x.errors_per_s,
                        bytes_out_per_s: x.bytes_out_per_s,
                        bytes_in_per_s: x.bytes_in_per_s,
                    };
                }
            }
        }
        let mut shards: BTreeMap<String, Vec<ShardWorker>> = BTreeMap::new();
        let mut service_rows = Vec::new();
        for s in &services {
            if let Some((label, index)) = shard_worker(&s.label) {
                shards
                    .entry(label.to_string())
                    .or_default()
                    .push(ShardWorker {
                        index,
                        addr: bee_runtime::error::fmt_addr(s.addr),
                        handled: s.handled,
                        queued: s.queued as u64,
                    });
            }
            let cluster_layer = s.label.starts_with("bee_cluster");
            let kind = if cluster_layer {
                "cluster".to_string()
            } else {
                s.names
                    .iter()
                    .chain(std::iter::once(&s.label))
                    .find_map(|n| self.kinds.get(n.trim_start_matches('@')))
                    .cloned()
                    .unwrap_or_default()
            };
            let runtime = if cluster_layer {
                "cluster"
            } else if s.label == "snlua" || kind == "snlua" {
                "lua"
            } else if kind == "cservice" || self.is_c_service(s.addr) {
                "c"
            } else {
                "rust"
            };
            service_rows.push(ServiceStatus {
                addr: bee_runtime::error::fmt_addr(s.addr),
                label: s.label.clone(),
                kind,
                runtime,
                names: s.names.clone(),
                handled: s.handled,
                busy_ms: ms(s.busy),
                queued: s.queued as u64,
                uptime_ms: ms(s.uptime),
            });
        }
        let mut events: Vec<Event> = cluster
            .recent_events()
            .into_iter()
            .map(|(at_ms, text)| Event {
                at_ms,
                kind: event_kind(&text),
                text,
            })
            .collect();
        events.extend(
            self.seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .1
                .iter()
                .cloned(),
        );
        events.sort_by_key(|e| e.at_ms);
        NodeStatus {
            schema: NODE_SCHEMA,
            node: cluster.node_name().to_string(),
            listening: cluster.listening().iter().map(|a| a.to_string()).collect(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            incarnation: report.incarnation,
            uptime_ms: report.uptime_ms,
            now_ms: unix_ms(),
            config: ConfigStatus {
                version: report.version,
                hash: report.hash,
                applied_at_ms: report.applied_at_ms,
                source: report.source,
                cluster: cluster_source.to_string(),
            },
            budgets: [
                ("inbound", &self.budgets.inbound),
                ("outbound", &self.budgets.outbound),
            ]
            .into_iter()
            .map(|(name, b)| BudgetStatus {
                name,
                used: b.used() as u64,
                limit: b.limit() as u64,
                rejected: b.rejected() as u64,
            })
            .collect(),
            connections: Connections {
                inbound: cluster.inbound_connections() as u64,
                outbound: report.peers_out_connected,
                outbound_channels: report.peers_out,
            },
            process: ProcessStatus {
                rss_bytes: crate::ops::rss_bytes(),
                open_fds: std::fs::read_dir("/proc/self/fd")
                    .ok()
                    .map(|d| d.count() as u64),
            },
            services: service_rows,
            shards: {
                let maps = self
                    .node
                    .upgrade()
                    .map(|n| bee_runtime::shard::shard_maps(&n))
                    .unwrap_or_default();
                shards
                    .into_iter()
                    .map(|(label, mut workers)| {
                        workers.sort_by_key(|w| w.index);
                        let map = maps.iter().find(|m| m.workers_label == label);
                        ShardStatus {
                            rule: map.map(|m| m.rule.name()),
                            master: map.map(|m| bee_runtime::error::fmt_addr(m.master)),
                            label,
                            workers,
                        }
                    })
                    .collect()
            },
            peers,
            events,
            draining: cluster.draining(),
            admin: self.admin,
            admin_needs_secret: self.admin && self.needs_secret,
        }
    }

    /// Ask every node of the config for its status, at once, each within
    /// [`GATHER_TIMEOUT`].
    async fn gather(&self, cluster_source: &str) -> ClusterStatus {
        let started = Instant::now();
        let config = self.cluster.registry().config();
        let me = self.cluster.node_name().to_string();
        let connected: HashMap<String, bool> = self
            .cluster
            .senders()
            .into_iter()
            .map(|(n, s, _)| (n, s.connected))
            .collect();
        let connected = &connected;
        // The others first, then this node: its links then show this round's calls.
        let asks = config.nodes.iter().filter(|(name, _)| **name != me).map(
            |(name, address)| async move {
                let t0 = Instant::now();
                let answer = match self.ask(name).await {
                    // Silent over a live connection: suspect, not down.
                    Answer::None(e) if connected.get(name).copied().unwrap_or(false) => {
                        Answer::Silent(e)
                    }
                    a => a,
                };
                Gathered {
                    name: name.clone(),
                    address: entry_address(address),
                    answer,
                    took: t0.elapsed(),
                }
            },
        );
        let mut answers = futures::future::join_all(asks).await;
        if let Some(entry) = config.nodes.get(&me) {
            let t0 = Instant::now();
            let answer = match serde_json::to_value(self.node_status(cluster_source)) {
                Ok(v) => Answer::Status(v),
                Err(e) => Answer::Error(e.to_string()),
            };
            answers.push(Gathered {
                name: me.clone(),
                address: entry_address(entry),
                answer,
                took: t0.elapsed(),
            });
        }
        let mut view = assemble(&me, answers, self.cluster.report().source);
        for n in &view.nodes {
            self.saw(&n.name, n.state, n.error.as_deref());
        }
        // This node's own liveness changes, seen just now, are in its status only from
        // the next gathering on: add the newest ones here.
        {
            let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            for e in &seen.1 {
                let dup = view
                    .timeline
                    .iter()
                    .any(|t| t.node == me && t.at_ms == e.at_ms && t.text == e.text);
                if !dup {
                    view.timeline.push(ClusterEvent {
                        node: me.clone(),
                        at_ms: e.at_ms,
                        kind: e.kind.to_string(),
                        text: e.text.clone(),
                    });
                }
            }
        }
        view.timeline.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
        view.timeline.truncate(TIMELINE);
        view.header.etcd = match &self.etcd {
            Some(p) => Some(EtcdHealth::of(p).await),
            None => None,
        };
        view.took_ms = ms(started.elapsed());
        view
    }

    /// `bee_clusterd status` on `node`, parsed.
    async fn ask(&self, node: &str) -> Answer {
        let payload = match seri::pack(&[Value::from("status")]) {
            Ok(p) => p,
            Err(e) => return Answer::None(e.to_string()),
        };
        let call = self.cluster.call_timeout(
            node,
            Target::Name("bee_clusterd".to_string()),
            payload,
            Some(GATHER_TIMEOUT),
        );
        // The call's own timeout counts from when it is sent; this one bounds the
        // connecting too.
        let reply: Bytes = match tokio::time::timeout(GATHER_TIMEOUT, call).await {
            Ok(Ok(b)) => b,
            // It answered, with an error (a node that serves no status, a stock skynet
            // node): alive, but without a status.
            Ok(Err(e @ (CallError::Remote { .. } | CallError::BadReply { .. }))) => {
                return Answer::Error(e.to_string())
            }
            Ok(Err(e)) => return Answer::None(e.to_string()),
            Err(_) => return Answer::None(format!("no answer within {GATHER_TIMEOUT:?}")),
        };
        let text = seri::unpack(&reply)
            .ok()
            .and_then(|v| v.first().and_then(Value::as_str).map(str::to_string));
        match text.map(|t| serde_json::from_str(&t)) {
            Some(Ok(v)) => Answer::Status(v),
            Some(Err(e)) => Answer::Error(format!("bee_clusterd status: not JSON: {e}")),
            None => Answer::Error("bee_clusterd status: the answer is not a text".to_string()),
        }
    }

    /// Record how `node` looked while gathering; a change goes to the timeline.
    fn saw(&self, node: &str, state: &'static str, error: Option<&str>) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let before = seen.0.insert(node.to_string(), state);
        if before == Some(state) || (before.is_none() && state == "up") {
            return;
        }
        let (kind, text) = match state {
            "up" => ("up", format!("{node} is up")),
            s => (
                "down",
                format!("{node} is {s}: {}", error.unwrap_or("no answer")),
            ),
        };
        if seen.1.len() == LIVENESS_EVENTS {
            seen.1.pop_front();
        }
        seen.1.push_back(Event {
            at_ms: unix_ms(),
            kind,
            text,
        });
    }
}

/// A config entry's address, or `down` for a node the config marks down.
fn entry_address(entry: &bee_registry::NodeEntry) -> String {
    match entry {
        bee_registry::NodeEntry::Up(addr) => addr.clone(),
        bee_registry::NodeEntry::Down => "down (in the config)".to_string(),
    }
}

/// How long a silent node that said goaway counts as draining (then it is just down).
const GOAWAY_RECENT_MS: u64 = 60_000;

/// Whether the newest of `gatherer`'s timeline entries about `node` (newest first, in
/// the last [`GOAWAY_RECENT_MS`]) says it is draining.
fn said_goaway(timeline: &[ClusterEvent], gatherer: &str, node: &str) -> bool {
    let since = unix_ms().saturating_sub(GOAWAY_RECENT_MS);
    timeline
        .iter()
        .filter(|e| e.node == gatherer && e.at_ms >= since && e.text.starts_with(node))
        .filter(|e| e.text[node.len()..].starts_with(' '))
        .find(|e| matches!(e.kind.as_str(), "drain" | "up" | "restarted"))
        .is_some_and(|e| e.kind == "drain")
}

/// What a node answered to `bee_clusterd status`.
pub(crate) enum Answer {
    /// Its status.
    Status(serde_json::Value),
    /// An answer, but no status (an error from the node, or a reply that is not one).
    Error(String),
    /// No answer and no connection: why.
    None(String),
    /// No answer over a live connection: why.
    Silent(String),
}

/// One node's answer while gathering.
pub(crate) struct Gathered {
    pub name: String,
    pub address: String,
    pub answer: Answer,
    pub took: Duration,
}

/// The cluster view from every node's answer (any order), as gathered by `from`:
/// states, the header, the merged timeline. Shared by `/api/v1/cluster` and
/// `bee status --json`.
pub(crate) fn assemble(
    from: &str,
    mut answers: Vec<Gathered>,
    config_source: String,
) -> ClusterStatus {
    answers.sort_by(|a, b| a.name.cmp(&b.name));
    let mut nodes = Vec::new();
    let mut not_answered = Vec::new();
    let mut timeline = Vec::new();
    for Gathered {
        name,
        address,
        answer,
        took,
    } in answers
    {
        let (state, error, status) = match answer {
            Answer::Status(v) => ("up", None, Some(v)),
            Answer::Error(e) => ("up", Some(e), None),
            Answer::None(e) => ("down", Some(e), None),
            Answer::Silent(e) => ("suspect", Some(e), None),
        };
        if state != "up" {
            not_answered.push(name.clone());
        }
        if let Some(events) = status
            .as_ref()
            .and_then(|s| s.get("events"))
            .and_then(|e| e.as_array())
        {
            for e in events {
                timeline.push(ClusterEvent {
                    node: name.clone(),
                    at_ms: e.get("at_ms").and_then(|v| v.as_u64()).unwrap_or(0),
                    kind: e
                        .get("kind")
                        .and_then(|v| v.as_str())
                        .unwrap_or("other")
                        .to_string(),
                    text: e
                        .get("text")
                        .and_then(|v| v.as_str())
                        .unwrap_or("")
                        .to_string(),
                });
            }
        }
        nodes.push(ClusterNode {
            name,
            address,
            state,
            answered_ms: (state == "up").then(|| ms(took)),
            error,
            status,
        });
    }
    timeline.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
    timeline.truncate(TIMELINE);
    let count = |s: &str| nodes.iter().filter(|n| n.state == s).count();
    let configs: Vec<(u64, String)> = nodes
        .iter()
        .filter_map(|n| {
            let c = n.status.as_ref()?.get("config")?;
            Some((
                c.get("version")?.as_u64()?,
                c.get("hash")?.as_str()?.to_string(),
            ))
        })
        .collect();
    let newest = configs.iter().map(|c| c.0).max().unwrap_or(0);
    let hash = configs
        .iter()
        .find(|c| c.0 == newest)
        .map(|c| c.1.clone())
        .unwrap_or_default();
    ClusterStatus {
        schema: CLUSTER_SCHEMA,
        from: from.to_string(),
        now_ms: unix_ms(),
        took_ms: 0,
        timeout_ms: ms(GATHER_TIMEOUT),
        header: ClusterHeader {
            up: count("up"),
            suspect: count("suspect"),
            down: count("down"),
            config_version: newest,
            config_acked: configs
                .iter()
                .filter(|c| c.0 == newest && c.1 == hash)
                .count(),
            config_hash: hash,
            config_source,
            draining: nodes
                .iter()
                .filter(|n| match &n.status {
                    Some(s) => s.get("draining").and_then(|d| d.as_bool()) == Some(true),
                    // Silent: draining if it said goaway to the gatherer and was not
                    // seen up or restarted since.
                    None => n.state != "up" && said_goaway(&timeline, from, &n.name),
                })
                .map(|n| n.name.clone())
                .collect(),
            etcd: None,
        },
        nodes,
        not_answered,
        timeline,
    }
}

/// `activity[3]` → (`activity`, 3).
fn shard_worker(label: &str) -> Option<(&str, usize)> {
    let (name, rest) = label.split_once('[')?;
    let index = rest.strip_suffix(']')?.parse().ok()?;
    Some((name, index))
}

/// The samples of the rendered Prometheus text this page reads: per-node counters and
/// the call latency histogram.
struct Series {
    /// (metric, node label) → value.
    values: HashMap<(String, String), f64>,
    /// (histogram, node label) → (upper bound, cumulative count), in bound order.
    buckets: HashMap<(String, String), Vec<(f64, f64)>>,
}

impl Series {
    fn parse(text: &str) -> Series {
        let mut values = HashMap::new();
        let mut buckets: HashMap<(String, String), Vec<(f64, f64)>> = HashMap::new();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (series, ""),
            };
            let label = |key: &str| {
                labels.split("\",").find_map(|kv| {
                    let (k, v) = kv.split_once("=\"")?;
                    (k.trim_start_matches(',') == key).then(|| v.trim_end_matches('"').to_string())
                })
            };
            let Some(node) = label("node") else { continue };
            if let Some(h) = name.strip_suffix("_bucket") {
                let le = match label("le").as_deref() {
                    Some("+Inf") => f64::INFINITY,
                    Some(v) => match v.parse() {
                        Ok(v) => v,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                buckets
                    .entry((h.to_string(), node))
                    .or_default()
                    .push((le, value));
            } else {
                values.insert((name.to_string(), node), value);
            }
        }
        for b in buckets.values_mut() {
            b.sort_by(|x, y| x.0.total_cmp(&y.0));
        }
        Series { values, buckets }
    }

    fn get(&self, metric: &str, node: &str) -> f64 {
        self.values
            .get(&(metric.to_string(), node.to_string()))
            .copied()
            .unwrap_or(0.0)
    }

    /// p50 and p99 (seconds, the upper bound of the bucket they fall in) of a histogram.
    fn quantiles(&self, metric: &str, node: &str) -> (Option<f64>, Option<f64>) {
        let Some(b) = self.buckets.get(&(metric.to_string(), node.to_string())) else {
            return (None, None);
        };
        let total = b.last().map_or(0.0, |l| l.1);
        if total <= 0.0 {
            return (None, None);
        }
        let q = |q: f64| {
            b.iter()
                .find(|(_, c)| *c >= q * total)
                .map(|(le, _)| *le)
                .filter(|le| le.is_finite())
        };
        (q(0.5), q(0.99))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_reads_counters_and_histogram_quantiles() {
        let text = "\
# TYPE bee_transport_channel_bytes_out_total counter
bee_transport_channel_bytes_out_total{node=\"beta\"} 1234
bee_transport_channel_bytes_out_total{node=\"gamma\"} 7
bee_transport_channel_call_seconds_bucket{node=\"beta\",le=\"0.001\"} 50
bee_transport_channel_call_seconds_bucket{node=\"beta\",le=\"0.01\"} 98
bee_transport_channel_call_seconds_bucket{node=\"beta\",le=\"0.1\"} 100
bee_transport_channel_call_seconds_bucket{node=\"beta\",le=\"+Inf\"} 100
bee_transport_channel_call_seconds_sum{node=\"beta\"} 0.3
bee_node_services 4
";
        let s = Series::parse(text);
        assert_eq!(
            s.get("bee_transport_channel_bytes_out_total", "beta"),
            1234.0
        );
        assert_eq!(s.get("bee_transport_channel_bytes_out_total", "gamma"), 7.0);
        assert_eq!(s.get("bee_transport_channel_bytes_out_total", "delta"), 0.0);
        assert_eq!(
            s.quantiles("bee_transport_channel_call_seconds", "beta"),
            (Some(0.001), Some(0.1))
        );
        assert_eq!(
            s.quantiles("bee_transport_channel_call_seconds", "gamma"),
            (None, None)
        );
    }

    #[test]
    fn events_are_classified() {
        assert_eq!(event_kind("cluster config changed: v2 (+a)"), "config");
        assert_eq!(
            event_kind("lobby moved 127.0.0.1:1 -> 127.0.0.1:2"),
            "moved"
        );
        assert_eq!(event_kind("lobby restarted 5 -> 9"), "restarted");
        assert_eq!(event_kind("names of lobby changed: added x"), "names");
        assert_eq!(event_kind("shop is down: connection refused"), "down");
        assert_eq!(event_kind("shop is up"), "up");
        assert_eq!(event_kind("shop is draining (said goaway)"), "drain");
        assert_eq!(shard_worker("activity[3]"), Some(("activity", 3)));
        assert_eq!(shard_worker("bee_clustersender(lobby)"), None);
    }
}
