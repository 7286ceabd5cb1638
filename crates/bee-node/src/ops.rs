//! What a node needs to be operated: its transport settings built from the node config
//! (the node-wide [`ByteBudget`]s shared by every channel and listener, per-peer bounds,
//! connection hygiene, liveness, node authentication) and its Prometheus endpoint.
//!
//! The transport records its metrics through the `metrics` facade; [`install_metrics`]
//! installs a Prometheus recorder (`metrics-exporter-prometheus`, rendered at `/metrics`
//! by the node's HTTP server, the status module), and a sampler task adds what the
//! transport cannot see: the byte budgets, the services' mailboxes, the process's memory and file
//! descriptors. Every name, and what to alert on, is in `docs/operations.md`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};
use bee_cluster::ClusterSettings;
use bee_runtime::Node;
use bee_transport::{telemetry as t, AuthSecret, ByteBudget};
use metrics::{describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::NodeConfig;

/// Bytes held by the node's budgets now, their limit, and refusals so far.
pub const BUDGET_USED: &str = "bee_node_budget_used_bytes";
/// The limit of a node budget.
pub const BUDGET_LIMIT: &str = "bee_node_budget_limit_bytes";
/// Refusals of a node budget since start (a counter).
pub const BUDGET_REJECTED: &str = "bee_node_budget_rejected_total";
/// Services running on the node.
pub const SERVICES: &str = "bee_node_services";
/// Messages waiting in mailboxes, summed over the services of one label.
pub const MAILBOX_QUEUED: &str = "bee_node_mailbox_queued";
/// The fullest mailbox of the node.
pub const MAILBOX_QUEUED_MAX: &str = "bee_node_mailbox_queued_max";
/// Resident memory of the process.
pub const RSS: &str = "bee_process_resident_memory_bytes";
/// Open file descriptors of the process.
pub const OPEN_FDS: &str = "bee_process_open_fds";
/// 1, labelled with the node's name and bee's version.
pub const INFO: &str = "bee_node_info";

/// How often the sampler refreshes the node gauges.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Latency buckets (seconds) of every `*_seconds` histogram: 50 µs to 30 s.
const BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The node's two byte budgets, shared by every channel and listener.
#[derive(Debug, Clone)]
pub struct Budgets {
    /// Inbound bytes held (requests being handled, multi-part messages being assembled).
    pub inbound: ByteBudget,
    /// Bytes queued for writing on all channels.
    pub outbound: ByteBudget,
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// The environment variable naming the secret file of the one-shot clients.
pub const SECRET_ENV: &str = "BEE_AUTH_SECRET_FILE";

/// The node-authentication secret of the one-shot clients (`bee call`, …): the contents
/// of the file `BEE_AUTH_SECRET_FILE` names (trailing line breaks dropped), or none.
pub fn client_secret() -> Result<Option<AuthSecret>> {
    let Some(path) = std::env::var_os(SECRET_ENV) else {
        return Ok(None);
    };
    let mut b = std::fs::read(&path)
        .with_context(|| format!("cannot read {SECRET_ENV}={}", Path::new(&path).display()))?;
    while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
        b.pop();
    }
    anyhow::ensure!(!b.is_empty(), "{SECRET_ENV}: the secret file is empty");
    Ok(Some(AuthSecret::new(b)))
}

/// The cluster settings a node config asks for, with the node's budgets in them.
pub fn cluster_settings(cfg: &NodeConfig) -> Result<(ClusterSettings, Budgets)> {
    let l = &cfg.limits;
    // `NodeConfig::load` checked that these fit a usize.
    let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    let budgets = Budgets {
        inbound: ByteBudget::new(size(l.inbound_bytes)),
        outbound: ByteBudget::new(size(l.outbound_bytes)),
    };
    let mut s = ClusterSettings::default();
    let ch = &mut s.channel;
    ch.call_timeout = ms(cfg.call_timeout_ms);
    ch.busy_poll = Duration::from_micros(cfg.busy_poll_us);
    bee_transport::set_max_pollers(cfg.busy_poll_max);
    ch.max_queued_bytes = size(l.per_peer_bytes);
    ch.outbound_budget = Some(budgets.outbound.clone());
    ch.inbound_budget = Some(budgets.inbound.clone());
    ch.liveness = ms(cfg.liveness.bound_ms);
    ch.heartbeat = ms(cfg.liveness.heartbeat_ms);
    ch.max_timeouts = cfg.liveness.max_timeouts;
    ch.ride_through = ms(cfg.liveness.ride_through_ms);
    ch.max_parked_bytes = size(l.parked_bytes);
    let li = &mut s.listener;
    li.busy_poll = Duration::from_micros(cfg.busy_poll_us);
    li.max_inbound_bytes = size(l.per_peer_bytes);
    li.inbound_budget = Some(budgets.inbound.clone());
    li.outbound_budget = Some(budgets.outbound.clone());
    li.max_connections = l.max_connections;
    li.read_timeout = ms(l.read_timeout_ms);
    li.idle_timeout = ms(l.idle_timeout_ms);
    li.multipart_timeout = ms(l.multipart_timeout_ms);
    li.liveness = ms(cfg.liveness.accepted_bound_ms);
    li.idle_probe = ms(cfg.liveness.accepted_idle_ms);
    if let Some(auth) = &cfg.auth {
        let secret = AuthSecret::new(auth.secret_bytes(&cfg.dir)?);
        s.channel.auth_secret = Some(secret.clone());
        s.listener.auth_secret = Some(secret);
        s.listener.auth_allow = auth.allow.clone();
        s.listener.auth_timeout = ms(auth.timeout_ms);
        s.plain_nodes = auth.plain_nodes.clone();
    }
    Ok((s, budgets))
}

/// Install the Prometheus recorder and start the sampler of the node gauges; the
/// returned handle renders `/metrics` for the node's HTTP server. Call it inside the
/// node's runtime, before the cluster opens channels or listeners (their metric handles
/// are taken when they are created), once the HTTP address is known to be free.
pub fn install_metrics(node: &Node, budgets: &Budgets) -> Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), BUCKETS)
        .context("bad histogram buckets")?
        .install_recorder()
        .context("cannot install the Prometheus recorder")?;
    describe();
    gauge!(INFO, "node" => node.name().to_string(), "version" => env!("CARGO_PKG_VERSION"))
        .set(1.0);
    tokio::spawn(sample(node.downgrade(), budgets.clone(), handle.clone()));
    Ok(handle)
}

/// Refresh the node gauges every [`SAMPLE_EVERY`] until the node is gone.
/// Also runs the recorder's upkeep (histograms' buffers are drained into their buckets).
async fn sample(node: bee_runtime::service::WeakNode, budgets: Budgets, handle: PrometheusHandle) {
    let mut labels_seen: Vec<String> = Vec::new();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        sample_once(&node, &budgets, &mut labels_seen);
        handle.run_upkeep();
    }
}

fn sample_once(node: &Node, budgets: &Budgets, labels_seen: &mut Vec<String>) {
    for (name, b) in [
        ("inbound", &budgets.inbound),
        ("outbound", &budgets.outbound),
    ] {
        gauge!(BUDGET_USED, "budget" => name).set(b.used() as f64);
        gauge!(BUDGET_LIMIT, "budget" => name).set(b.limit() as f64);
        metrics::counter!(BUDGET_REJECTED, "budget" => name).absolute(b.rejected() as u64);
    }
    let services = node.services();
    gauge!(SERVICES).set(services.len() as f64);
    let mut queued: BTreeMap<String, usize> = BTreeMap::new();
    let mut max = 0;
    for s in &services {
        *queued.entry(kind_label(&s.label)).or_default() += s.queued;
        max = max.max(s.queued);
    }
    gauge!(MAILBOX_QUEUED_MAX).set(max as f64);
    // Labels of services that are gone read 0, not their last value.
    for gone in labels_seen.iter().filter(|l| !queued.contains_key(*l)) {
        gauge!(MAILBOX_QUEUED, "service" => gone.clone()).set(0.0);
    }
    for (label, n) in &queued {
        gauge!(MAILBOX_QUEUED, "service" => label.clone()).set(*n as f64);
    }
    labels_seen.clear();
    labels_seen.extend(queued.into_keys());
    if let Some(rss) = rss_bytes() {
        gauge!(RSS).set(rss as f64);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge!(OPEN_FDS).set(fds.count() as f64);
    }
}

/// The `service` label of a service: its label, without a peer address in parentheses
/// (`bee_clusteragent(10.0.0.5:40312)` → `bee_clusteragent`), so that connections coming
/// and going do not grow the label set; `bee_clustersender(lobby)` keeps its node name.
fn kind_label(label: &str) -> String {
    if let Some((kind, rest)) = label.split_once('(') {
        let inner = rest.strip_suffix(')').unwrap_or(rest);
        if inner.parse::<SocketAddr>().is_ok() {
            return kind.to_string();
        }
    }
    label.to_string()
}

/// Resident set size of this process (Linux `/proc/self/status`), if readable.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// HELP lines for every metric the node exports.
fn describe() {
    use Unit::{Bytes, Count, Seconds};
    describe_counter!(t::CHANNEL_CALLS, Count, "Calls issued to a remote node.");
    describe_counter!(t::CHANNEL_PUSHES, Count, "Pushes issued to a remote node.");
    describe_counter!(
        t::CHANNEL_ERRORS,
        Count,
        "Failed calls and pushes to a remote node, by kind."
    );
    describe_histogram!(
        t::CHANNEL_CALL_SECONDS,
        Seconds,
        "Time from issuing a call to a remote node to its answer."
    );
    describe_gauge!(t::CHANNEL_IN_FLIGHT, Count, "Calls waiting for replies.");
    describe_gauge!(
        t::CHANNEL_QUEUED_BYTES,
        Bytes,
        "Bytes queued for writing to a remote node."
    );
    describe_counter!(
        t::CHANNEL_BYTES_OUT,
        Bytes,
        "Bytes written to a remote node."
    );
    describe_counter!(t::CHANNEL_BYTES_IN, Bytes, "Bytes read from a remote node.");
    describe_counter!(
        t::CHANNEL_CONNECTS,
        Count,
        "Connections opened to a remote node."
    );
    describe_gauge!(t::CHANNEL_CONNECTED, "1 while connected to a remote node.");
    describe_counter!(t::CHANNEL_HEARTBEATS, Count, "Heartbeat calls sent.");
    describe_counter!(
        t::CHANNEL_HEARTBEATS_FAILED,
        Count,
        "Heartbeats unanswered within the liveness bound."
    );
    describe_counter!(
        t::CHANNEL_PEERS_DEAD,
        Count,
        "Connections declared dead, by reason."
    );
    describe_counter!(
        t::CHANNEL_REJECTIONS,
        Count,
        "Messages refused by a limit, by limit."
    );
    describe_counter!(
        t::LISTENER_ACCEPTED,
        Count,
        "Connections accepted and served."
    );
    describe_counter!(t::LISTENER_REFUSED, Count, "Peers refused, by reason.");
    describe_gauge!(t::LISTENER_OPEN, Count, "Inbound connections open now.");
    describe_counter!(
        t::LISTENER_CLOSED,
        Count,
        "Inbound connections closed, by reason."
    );
    describe_counter!(t::LISTENER_REQUESTS, Count, "Requests and pushes received.");
    describe_counter!(
        t::LISTENER_BYTES_IN,
        Bytes,
        "Bytes read from inbound connections."
    );
    describe_counter!(
        t::LISTENER_BYTES_OUT,
        Bytes,
        "Bytes written to inbound connections."
    );
    describe_counter!(
        t::LISTENER_MULTIPART_EXPIRED,
        Count,
        "Multi-part messages dropped unfinished."
    );
    describe_counter!(
        t::LISTENER_REJECTIONS,
        Count,
        "Connections closed because the node inbound budget was exhausted."
    );
    describe_gauge!(BUDGET_USED, Bytes, "Bytes held of a node budget.");
    describe_gauge!(BUDGET_LIMIT, Bytes, "Limit of a node budget.");
    describe_counter!(BUDGET_REJECTED, Count, "Refusals of a node budget.");
    describe_gauge!(SERVICES, Count, "Services running on the node.");
    describe_gauge!(
        MAILBOX_QUEUED,
        Count,
        "Messages waiting in the mailboxes of the services of one label."
    );
    describe_gauge!(
        MAILBOX_QUEUED_MAX,
        Count,
        "Messages in the fullest mailbox."
    );
    describe_gauge!(RSS, Bytes, "Resident memory of the process.");
    describe_gauge!(OPEN_FDS, Count, "Open file descriptors of the process.");
    describe_gauge!(INFO, "1, labelled with the node name and bee version.");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(body: &str) -> Result<NodeConfig> {
        // One directory per config: tests run in parallel.
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("bee-node-ops-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.toml");
        std::fs::write(&path, format!("name = \"n\"\ncluster = \"c.lua\"\n{body}")).unwrap();
        std::fs::write(dir.join("s.secret"), "sekrit-sekrit\n").unwrap();
        let cfg = NodeConfig::load(&path, &[]);
        if cfg.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        cfg
    }

    #[test]
    fn defaults_give_shared_budgets_and_transport_defaults() {
        let cfg = load("").unwrap();
        let (s, b) = cluster_settings(&cfg).unwrap();
        assert_eq!(b.inbound.limit(), 1 << 30);
        assert_eq!(b.outbound.limit(), 1 << 30);
        assert_eq!(s.channel.max_queued_bytes, 64 << 20);
        assert_eq!(s.listener.max_inbound_bytes, 64 << 20);
        assert_eq!(s.channel.liveness, Duration::from_secs(4));
        assert_eq!(s.channel.heartbeat, Duration::from_secs(1));
        assert_eq!(s.listener.max_connections, 10_000);
        assert_eq!(s.listener.read_timeout, Duration::from_secs(30));
        assert_eq!(s.listener.idle_timeout, Duration::ZERO);
        assert!(s.channel.auth_secret.is_none() && s.listener.auth_secret.is_none());
        // One budget, shared: what a channel holds shows in the listener's clone.
        let held = s.channel.inbound_budget.as_ref().unwrap().try_acquire(10);
        assert_eq!(s.listener.inbound_budget.as_ref().unwrap().used(), 10);
        drop(held);
        assert!(cfg.metrics_listen.is_none());
        let _ = std::fs::remove_dir_all(&cfg.dir);
    }

    #[test]
    fn every_key_reaches_the_transport() {
        let cfg = load(
            r#"
metrics_listen = "127.0.0.1:9100"
[limits]
inbound_bytes = 1000
outbound_bytes = 2000
per_peer_bytes = 300
max_connections = 7
read_timeout_ms = 11
idle_timeout_ms = 12
multipart_timeout_ms = 13
[liveness]
bound_ms = 21
heartbeat_ms = 22
max_timeouts = 23
accepted_bound_ms = 24
accepted_idle_ms = 25
[auth]
secret_file = "s.secret"
allow = ["127.0.0.2", "::1"]
timeout_ms = 31
plain_nodes = ["sky"]
"#,
        )
        .unwrap();
        let (s, b) = cluster_settings(&cfg).unwrap();
        assert_eq!((b.inbound.limit(), b.outbound.limit()), (1000, 2000));
        assert_eq!(s.channel.max_queued_bytes, 300);
        assert_eq!(s.listener.max_inbound_bytes, 300);
        assert_eq!(s.listener.max_connections, 7);
        assert_eq!(s.listener.read_timeout, ms(11));
        assert_eq!(s.listener.idle_timeout, ms(12));
        assert_eq!(s.listener.multipart_timeout, ms(13));
        assert_eq!(s.channel.liveness, ms(21));
        assert_eq!(s.channel.heartbeat, ms(22));
        assert_eq!(s.channel.max_timeouts, 23);
        assert_eq!(s.listener.liveness, ms(24));
        assert_eq!(s.listener.idle_probe, ms(25));
        assert!(s.channel.auth_secret.is_some() && s.listener.auth_secret.is_some());
        assert_eq!(s.listener.auth_allow.len(), 2);
        assert_eq!(s.listener.auth_timeout, ms(31));
        assert_eq!(s.plain_nodes, vec!["sky".to_string()]);
        assert_eq!(
            cfg.auth.unwrap().secret_bytes(&cfg.dir).unwrap(),
            b"sekrit-sekrit"
        );
        let _ = std::fs::remove_dir_all(&cfg.dir);
    }

    #[test]
    fn service_labels_drop_peer_addresses() {
        assert_eq!(
            kind_label("bee_clusteragent(127.0.0.1:38056)"),
            "bee_clusteragent"
        );
        assert_eq!(kind_label("bee_clusteragent([::1]:8)"), "bee_clusteragent");
        assert_eq!(
            kind_label("bee_clustersender(lobby)"),
            "bee_clustersender(lobby)"
        );
        assert_eq!(kind_label("echo"), "echo");
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let err = |body: &str| format!("{:#}", load(body).unwrap_err());
        assert!(err("[limits]\ninbound_byte = 5\n").contains("unknown field `inbound_byte`"));
        assert!(err("[liveness]\nbound = 5\n").contains("unknown field `bound`"));
        assert!(err("[auth]\nsecret = \"x\"\nallowed = []\n").contains("unknown field `allowed`"));
        assert!(err("[auth]\nsecret = \"x\"\nallow = [\"host\"]\n").contains("invalid IP"));
        assert!(err("[auth]\nallow = []\n").contains("needs secret or secret_file"));
        assert!(err("[auth]\nsecret = \"\"\n").contains("secret is empty"));
        assert!(err("[auth]\nsecret = \"a\"\nsecret_file = \"s.secret\"\n").contains("both"));
        assert!(err("[auth]\nsecret_file = \"nope\"\n").contains("cannot read auth.secret_file"));
        assert!(err("[limits]\noutbound_bytes = 0\n").contains("outbound_bytes must be at least 1"));
        assert!(err("metrics_listen = \"localhost\"\n").contains("not an address"));
        assert!(err("metric_listen = \"127.0.0.1:1\"\n").contains("unknown key \"metric_listen\""));
    }
}
