//! etcd mode: a node whose config says `cluster = "etcd://host:port/PREFIX"` reads the
//! cluster config from `PREFIX/config` at start, follows the key (each version goes through
//! [`Cluster::apply`], answered by an ack at `PREFIX/acks/NODE`), keeps its own
//! `host:port` and incarnation at `PREFIX/members/NODE` under a lease, and marks peers
//! whose membership key vanished (lease expired) down until they register again.
//! The keys and values are bee-etcd's (`docs/config.md`, "etcd").

use std::time::Duration;

use anyhow::{Context as _, Result};
use bee_dispatch::Cluster;
use bee_etcd::{ConfigUpdate, EtcdStore, MemberEvent, MemberRegistration};
use bee_registry::{ConfigSource, NodeEntry, Registry};

use crate::config::NodeConfig;

/// How long a node's membership key outlives its last keep-alive.
pub const MEMBER_TTL: Duration = Duration::from_secs(2);

/// The etcd URL of a node config's `cluster` setting, when it is one. (The node config
/// turns a relative `cluster` into a path under the config's directory; an `etcd://` URL
/// is found inside it.)
pub fn url_of(cfg: &NodeConfig) -> Option<String> {
    let text = cfg.cluster.to_string_lossy();
    text.find("etcd://").map(|i| text[i..].to_string())
}

/// Connect and read the config: the node's registry, its source the etcd key.
pub async fn load(url: &str, name: &str) -> Result<(EtcdStore, Registry)> {
    let store = EtcdStore::connect(url)
        .await
        .with_context(|| format!("node {name}: cannot reach etcd at {url}"))?;
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
    let registry = Registry::with_source(name, stored.config, ConfigSource::Etcd { key })?;
    Ok((store, registry))
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
                        let result = cluster
                            .apply(stored.config, source, false)
                            .map(|_| ())
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
