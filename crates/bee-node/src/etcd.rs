//! etcd mode: a node whose config says `cluster = "etcd://host:port/PREFIX"` reads the
//! cluster config from `PREFIX/config` at start, follows the key (each version goes through
//! [`Cluster::apply`], answered by an ack at `PREFIX/acks/NODE`), keeps its own
//! `host:port` and incarnation at `PREFIX/members/NODE` under a lease, and marks peers
//! whose membership key vanished (lease expired) down until they register again.
//! The keys and values are bee-etcd's (`docs/config.md`, "etcd").
//!
//! **etcd down at start.** The node keeps trying for `etcd_start_retry_ms` (back-off
//! 200 ms doubling to 2 s, one log line per attempt). Then, with `cluster_fallback` in
//! its node config, it runs that file (source `file PATH`) and keeps trying etcd in the
//! background ([`follow_later`]): once etcd answers it follows the key as any etcd node
//! (the stored config goes through the checked apply, so a stored config older than the
//! file is refused and acked as such). Without a fallback it exits with an error naming
//! the URL.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bee_cluster::Cluster;
use bee_etcd::{ConfigUpdate, EtcdError, EtcdOptions, EtcdStore, MemberEvent, MemberRegistration};
use bee_registry::{ConfigSource, NodeEntry, Registry};

use crate::config::NodeConfig;

/// How long the status page's probe waits for etcd.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);
/// A probe younger than this is reported again instead of asking etcd anew.
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// What the status page's probe found: the nodes registered in etcd's membership keys
/// and how long the read took, or why it failed.
pub type ProbeResult = std::result::Result<(u64, Duration), String>;

/// The status page's etcd probe: its own connection (made on first use, dropped after a
/// failure) and the last result, reused for [`PROBE_EVERY`] so that open pages cost etcd
/// one read every few seconds.
pub struct Probe {
    url: String,
    store: tokio::sync::Mutex<Option<EtcdStore>>,
    last: std::sync::Mutex<Option<(Instant, ProbeResult)>>,
}

impl Probe {
    /// A probe of `url` (nothing is sent until [`Probe::check`]).
    pub fn new(url: String) -> Probe {
        Probe {
            url,
            store: tokio::sync::Mutex::new(None),
            last: std::sync::Mutex::new(None),
        }
    }

    /// The URL probed.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Read the membership keys, within [`PROBE_TIMEOUT`] (connecting included).
    pub async fn check(&self) -> ProbeResult {
        if let Some((at, r)) = self.last.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            if at.elapsed() < PROBE_EVERY {
                return r.clone();
            }
        }
        let mut store = self.store.lock().await;
        let t0 = Instant::now();
        let read = tokio::time::timeout(PROBE_TIMEOUT, async {
            if store.is_none() {
                let options = EtcdOptions {
                    connect_timeout: PROBE_TIMEOUT,
                    request_timeout: PROBE_TIMEOUT,
                };
                *store = Some(EtcdStore::connect_with(&self.url, options).await?);
            }
            match store.as_ref() {
                Some(s) => s.members().await,
                None => unreachable!("connected just above"),
            }
        })
        .await;
        let result = match read {
            Ok(Ok(members)) => Ok((members.len() as u64, t0.elapsed())),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        };
        if result.is_err() {
            *store = None;
        }
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), result.clone()));
        result
    }
}

/// How long a node's membership key outlives its last keep-alive.
pub const MEMBER_TTL: Duration = Duration::from_secs(2);

pub use crate::config::{etcd_url_of as url_of, is_etcd_url as is_url};

/// The cluster config stored at `URL`'s config key, for the admin tools (`bee status
/// --cluster etcd://…`): an error naming the URL when etcd does not answer within
/// `timeout` or the key is empty.
pub async fn read_cluster(url: &str, timeout: Duration) -> Result<bee_registry::ClusterConfig> {
    let options = EtcdOptions {
        connect_timeout: timeout.min(bee_etcd::DEFAULT_CONNECT_TIMEOUT),
        ..EtcdOptions::default()
    };
    let store = EtcdStore::connect_with(url, options)
        .await
        .with_context(|| format!("cannot reach etcd at {url}"))?;
    let key = store.url().config_key();
    let stored = store
        .get_config()
        .await
        .with_context(|| format!("cannot read the cluster config from etcd key {key}"))?
        .with_context(|| format!("etcd key {key} holds no cluster config"))?;
    Ok(stored.config)
}

/// First wait between two attempts to reach etcd at start; doubles up to
/// [`START_MAX_BACKOFF`].
pub const START_MIN_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between two attempts to reach etcd at start.
pub const START_MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Longest wait between two attempts to reach etcd in the background (fallback mode).
pub const LATER_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How a node in etcd mode got its first config.
pub enum Start {
    /// From etcd: follow it.
    Etcd(Box<EtcdStore>, Registry),
    /// etcd did not answer: from the fallback file; try etcd again with [`follow_later`].
    Fallback(Registry),
}

/// Connect to etcd, trying until `retry` has passed (back-off [`START_MIN_BACKOFF`]
/// doubling to [`START_MAX_BACKOFF`], one warning per failed attempt), then read the
/// config. When etcd never answered: the `fallback` file if there is one, else an error
/// naming the URL.
pub async fn start(
    url: &str,
    name: &str,
    retry: Duration,
    fallback: Option<&PathBuf>,
) -> Result<Start> {
    let began = Instant::now();
    let deadline = began + retry;
    let mut backoff = START_MIN_BACKOFF;
    let mut attempt = 0u32;
    let last = loop {
        attempt += 1;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let options = EtcdOptions {
            connect_timeout: remaining.clamp(Duration::from_millis(100), START_MAX_BACKOFF),
            ..EtcdOptions::default()
        };
        match EtcdStore::connect_with(url, options).await {
            Ok(store) => {
                if attempt > 1 {
                    tracing::info!(node = %name, %url, attempt, "etcd answers");
                }
                let (store, registry) = load(store, url, name).await?;
                return Ok(Start::Etcd(Box::new(store), registry));
            }
            Err(e @ EtcdError::Unreachable { .. }) => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    break e;
                }
                let wait = backoff.min(remaining);
                tracing::warn!(node = %name, %url, attempt, error = %e, "etcd unreachable at start; retrying in {wait:?} (giving up in {remaining:?})");
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(START_MAX_BACKOFF);
            }
            Err(e) => {
                return Err(e).with_context(|| format!("node {name}: cannot use etcd at {url}"))
            }
        }
    };
    let why = format!(
        "node {name}: cannot reach etcd at {url} after {attempt} attempt(s) in {:.1}s: {last}",
        began.elapsed().as_secs_f64()
    );
    match fallback {
        Some(path) => {
            tracing::warn!(node = %name, fallback = %path.display(), "{why}; starting from the fallback cluster file, and trying etcd in the background");
            let registry = Registry::load_file(name, path).with_context(|| {
                format!("{why}; and the fallback cluster file cannot be used")
            })?;
            Ok(Start::Fallback(registry))
        }
        None => bail!(
            "{why}; start etcd (or check the URL), or give the node a fallback cluster file (cluster_fallback = \"cluster.lua\" in its node config)"
        ),
    }
}

/// Read the config from a connected store: the node's registry, its source the etcd key.
async fn load(store: EtcdStore, url: &str, name: &str) -> Result<(EtcdStore, Registry)> {
    let key = store.url().config_key();
    let stored = store
        .get_config()
        .await
        .with_context(|| {
            format!("node {name}: cannot read the cluster config from etcd key {key}")
        })?
        .with_context(|| {
            format!("node {name}: etcd key {key} holds no cluster config yet; store one first")
        })?;
    let registry = Registry::with_source(name, stored.config, ConfigSource::Etcd { key })
        .with_context(|| format!("node {name}: the cluster config at {url}"))?;
    Ok((store, registry))
}

/// Where a node's cluster config comes from when it lives in etcd: what
/// [`Source::start`] found (the store, or the fallback file with etcd to follow later),
/// made into the running [`Followers`] once the node listens. The default is a node
/// whose config is a file: nothing to follow.
#[derive(Default)]
pub struct Source {
    store: Option<EtcdStore>,
    later: Option<String>,
}

impl Source {
    /// A node whose cluster config is a file: nothing to follow.
    pub fn file() -> Source {
        Source::default()
    }

    /// Load the node's registry from etcd at `url` (or from its fallback file when etcd
    /// does not answer within the start retry; see [`start`]).
    pub async fn start(url: &str, cfg: &NodeConfig) -> Result<(Registry, Source)> {
        let retry = Duration::from_millis(cfg.etcd_start_retry_ms);
        Ok(
            match start(url, &cfg.name, retry, cfg.cluster_fallback.as_ref()).await? {
                Start::Etcd(store, registry) => (
                    registry,
                    Source {
                        store: Some(*store),
                        later: None,
                    },
                ),
                Start::Fallback(registry) => (
                    registry,
                    Source {
                        store: None,
                        later: Some(url.to_string()),
                    },
                ),
            },
        )
    }

    /// Start following etcd (at once, or once it answers when the node started from its
    /// fallback file). `listening` is where the node listens.
    pub async fn follow(
        self,
        cluster: &Cluster,
        listening: std::net::SocketAddr,
    ) -> Result<Followers> {
        let following = match self.store {
            Some(store) => Some(follow(store, cluster, listening).await?),
            None => None,
        };
        let later = self
            .later
            .map(|url| follow_later(url, cluster.clone(), listening));
        Ok(Followers { following, later })
    }
}

/// The running etcd side of a node, whichever way it started.
pub struct Followers {
    following: Option<Following>,
    later: Option<Later>,
}

impl Followers {
    /// Stop following etcd and remove the membership key (peers see the node go at once).
    pub async fn stop(self) {
        if let Some(f) = self.following {
            f.stop().await;
        }
        if let Some(later) = self.later {
            if let Some(f) = later.lock().await.take() {
                f.stop().await;
            }
        }
    }
}

/// The etcd side of a node started from its fallback file: filled in once etcd answers.
pub type Later = Arc<tokio::sync::Mutex<Option<Following>>>;

/// Fallback mode: keep trying etcd in the background (back-off up to
/// [`LATER_MAX_BACKOFF`], a warning on the first failure and every tenth), and once it
/// answers, [`follow`] it: ack, register, apply the stored config (checked: an older one
/// is refused and acked as such), follow the key and the members.
pub fn follow_later(url: String, cluster: Cluster, listening: std::net::SocketAddr) -> Later {
    let slot: Later = Arc::new(tokio::sync::Mutex::new(None));
    let filled = slot.clone();
    tokio::spawn(async move {
        let name = cluster.node_name().to_string();
        let mut backoff = START_MIN_BACKOFF;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let store = EtcdStore::connect_with(
                &url,
                EtcdOptions {
                    connect_timeout: START_MAX_BACKOFF,
                    ..EtcdOptions::default()
                },
            )
            .await;
            let failed = match store {
                Ok(store) => match follow(store, &cluster, listening).await {
                    Ok(f) => {
                        tracing::info!(node = %name, %url, attempt, "etcd answers: following it from now on (the fallback file was the config until now)");
                        *filled.lock().await = Some(f);
                        return;
                    }
                    Err(e) => format!("{e:#}"),
                },
                Err(e) => e.to_string(),
            };
            if attempt == 1 || attempt.is_multiple_of(10) {
                tracing::warn!(node = %name, %url, attempt, error = %failed, "etcd still unreachable; running the fallback cluster file, retrying in {backoff:?}");
            } else {
                tracing::debug!(node = %name, %url, attempt, error = %failed, "etcd still unreachable");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(LATER_MAX_BACKOFF);
        }
    });
    slot
}

/// The running etcd side of a node: dropping it stops following; [`Following::stop`]
/// also removes the membership key at once.
pub struct Following {
    member: Option<MemberRegistration>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Following {
    /// Stop following and remove the membership key (peers see the node go at once).
    pub async fn stop(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(m) = self.member.take() {
            if let Err(e) = m.revoke().await {
                tracing::warn!(error = %e, "cannot remove the etcd membership key; it expires with its lease");
            }
        }
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Ack the running config, register the node, and follow the config key and the members.
/// `listening` is where the node listens (advertised when the config has no address).
pub async fn follow(
    store: EtcdStore,
    cluster: &Cluster,
    listening: std::net::SocketAddr,
) -> Result<Following> {
    let name = cluster.node_name().to_string();
    let registry = cluster.registry().clone();
    let meta = registry.meta();
    store
        .put_ack(&name, meta.version, &meta.hash.short(), Ok(()))
        .await
        .with_context(|| format!("node {name}: cannot write its ack to etcd"))?;
    let addr = match registry.config().nodes.get(&name) {
        Some(NodeEntry::Up(a)) => a.clone(),
        _ => listening.to_string(),
    };
    let member = store
        .register_member(&name, &addr, cluster.incarnation(), MEMBER_TTL)
        .await
        .with_context(|| format!("node {name}: cannot register in etcd"))?;

    let key = store.url().config_key();
    let config_task = {
        let (store, cluster, name) = (store.clone(), cluster.clone(), name.clone());
        tokio::spawn(async move {
            let mut watch = store.watch_config();
            while let Some(update) = watch.next().await {
                let (version, hash, result) = match update {
                    ConfigUpdate::Config(stored) => {
                        let version = stored.config.version;
                        let hash = stored.config.content_hash().short();
                        let source = ConfigSource::Etcd { key: key.clone() };
                        let hash_full = stored.config.content_hash();
                        let result = cluster
                            .apply(stored.config, source.clone(), false)
                            .map(|diff| {
                                // The same config from etcd (e.g. after a fallback file):
                                // it comes from etcd now.
                                if diff.is_empty() {
                                    cluster.registry().set_source(&hash_full, source);
                                }
                            })
                            .map_err(|e| e.to_string());
                        (version, hash, result)
                    }
                    ConfigUpdate::Invalid { error, .. } => {
                        (0, String::new(), Err(error.to_string()))
                    }
                    ConfigUpdate::Deleted { .. } => {
                        tracing::warn!(node = %name, %key, "the etcd config key was deleted; keeping the running config");
                        continue;
                    }
                };
                if let Err(e) = &result {
                    tracing::warn!(node = %name, version, error = %e, "cluster config from etcd refused");
                }
                if let Err(e) = store.put_ack(&name, version, &hash, result).await {
                    tracing::warn!(node = %name, version, error = %e, "cannot write the ack to etcd");
                }
            }
        })
    };
    let member_task = {
        let (store, cluster, name) = (store.clone(), cluster.clone(), name.clone());
        tokio::spawn(async move {
            let mut watch = store.watch_members();
            while let Some(event) = watch.next().await {
                match event {
                    MemberEvent::Up(m) if m.node != name => {
                        cluster.mark_up(&m.node);
                        cluster
                            .registry()
                            .set_peer_incarnation(&m.node, m.incarnation);
                    }
                    MemberEvent::Down { node, .. } if node != name => {
                        cluster.mark_down(
                            &node,
                            "its etcd membership key is gone (lease expired or it stopped)",
                        );
                    }
                    _ => {}
                }
            }
        })
    };
    Ok(Following {
        member: Some(member),
        tasks: vec![config_task, member_task],
    })
}
