//! Config lifecycle on the node side: `reload` (skynet's, unchecked), [`Cluster::apply`]
//! (checked), a pushed config (`config_push`, with the pusher and authentication
//! rules), what this node reports (`config`) and answers to `hello`. The wire format is
//! in [`crate::lifecycle`].

use std::net::SocketAddr;

use bee_codec::seri::{self, Value};
use bee_registry::{ClusterConfig, ConfigDiff, ConfigSource, RegistryError};
use bee_runtime::{CallError, Target};

use crate::lifecycle::{
    pusher_node, unix_ms, ConfigReport, Hello, PushOutcome, PushRefusal, CONFIG_NAME,
};
use crate::state::Cluster;

impl Cluster {
    /// Merge a new cluster config: nodes whose address changed or that are now marked
    /// down lose their connection (calls waiting on it fail); new calls use the new one.
    /// No check is made (skynet's `reload`); [`Cluster::apply`] is the checked path.
    pub fn reload(&self, config: ClusterConfig) -> ConfigDiff {
        let diff = self.inner.registry.reload(config);
        self.close_changed(&diff);
        tracing::info!(node = %self.inner.node_name, ?diff, "cluster config reloaded");
        diff
    }

    /// Check `config` and make it the whole running config ([`Registry::apply`]: refused,
    /// with the running config untouched, when malformed, older than the running one or
    /// the same version with other content unless `force`, or when it drops this node).
    /// Channels of nodes that moved, were marked down or removed are closed (calls waiting
    /// on them fail); the next call dials the new address.
    pub fn apply(
        &self,
        config: ClusterConfig,
        source: ConfigSource,
        force: bool,
    ) -> Result<ConfigDiff, RegistryError> {
        let diff = self.inner.registry.apply(config, source, force)?;
        self.close_changed(&diff);
        tracing::info!(node = %self.inner.node_name, meta = %self.inner.registry.meta(), %diff, "cluster config applied");
        Ok(diff)
    }

    pub(crate) fn close_changed(&self, diff: &ConfigDiff) {
        let mut drop_nodes: Vec<&String> = diff.changed.iter().map(|c| &c.0).collect();
        drop_nodes.extend(diff.marked_down.iter());
        drop_nodes.extend(diff.removed.iter());
        for name in drop_nodes {
            self.drop_sender(name, "cluster config changed");
        }
    }

    /// What this node answers to `hello`: its name, incarnation and cluster-visible names.
    pub(crate) fn own_hello(&self) -> Hello {
        Hello {
            node: self.inner.node_name.clone(),
            incarnation: self.incarnation(),
            names: self.node().ok().map(|n| n.public_names()),
        }
    }

    /// What this node runs, as the `config` command reports it.
    pub fn report(&self) -> ConfigReport {
        let meta = self.inner.registry.meta();
        let services = self.node().map(|n| n.services()).unwrap_or_default();
        let senders = self.senders();
        ConfigReport {
            services: services.len() as u64,
            handled: services.iter().map(|s| s.handled).sum(),
            queued: services.iter().map(|s| s.queued as u64).sum(),
            peers_in: services
                .iter()
                .filter(|s| s.label.starts_with("bee_clusteragent("))
                .count() as u64,
            peers_out: senders.len() as u64,
            peers_out_connected: senders.iter().filter(|s| s.1.connected).count() as u64,
            node: self.inner.node_name.clone(),
            version: meta.version,
            hash: meta.hash.short(),
            applied_at_ms: unix_ms(meta.applied_at),
            source: meta.source.to_string(),
            incarnation: self.incarnation(),
            uptime_ms: u64::try_from(self.uptime().as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Handle a pushed config text (the `config_push` command): parse it (either form),
    /// [`Cluster::apply`] it, and say what happened. A refusal is an answer, not an
    /// error: the running config stays as it was. A push whose `from` says `node NAME`
    /// (see [`crate::lifecycle::pusher_node`]) is refused when NAME is in neither the
    /// running nor the pushed config.
    pub fn push_text(&self, text: &str, force: bool, from: &str) -> PushOutcome {
        self.push_checked(text, force, from, None)
    }

    /// [`Cluster::push_text`] for a push that arrived on the accepted connection from
    /// `peer` (if any): on a node with authentication, a connection served without it
    /// (an `[auth]` allow-listed address) may not push.
    pub(crate) fn push_checked(
        &self,
        text: &str,
        force: bool,
        from: &str,
        peer: Option<SocketAddr>,
    ) -> PushOutcome {
        let listener = &self.inner.settings.listener;
        // The listener serves such a peer at once, without the exchange (see
        // `bee_transport::auth`): it is not authenticated.
        let unauthenticated = peer
            .filter(|p| listener.auth_secret.is_some() && listener.auth_allow.contains(&p.ip()));
        let outcome = match unauthenticated {
            Some(peer) => Err(PushRefusal::NotAuthenticated { peer }.to_string()),
            None => ClusterConfig::parse_any(text)
                .map_err(|e| e.to_string())
                .and_then(|cfg| {
                    self.check_pusher(from, &cfg)?;
                    self.apply(
                        cfg,
                        ConfigSource::Push {
                            from: from.to_string(),
                        },
                        force,
                    )
                    .map_err(|e| e.to_string())
                }),
        };
        let meta = self.inner.registry.meta();
        match outcome {
            Ok(diff) => PushOutcome::Applied {
                version: meta.version,
                hash: meta.hash.short(),
                diff: diff.to_string(),
            },
            Err(reason) => {
                tracing::warn!(node = %self.inner.node_name, %from, ?peer, error = %reason, "pushed cluster config refused");
                PushOutcome::Rejected {
                    reason,
                    version: meta.version,
                    hash: meta.hash.short(),
                }
            }
        }
    }

    /// Push a config text to `node` as this node does it on its own: a `config_push` to
    /// its `@bee_config` with `from` = `node SELF` (the convention that says a cluster
    /// node pushes; the receiver refuses it when this node is in neither its running
    /// config nor `text`). Returns the node's answer.
    pub async fn push_config_to(
        &self,
        node: &str,
        text: &str,
        force: bool,
    ) -> Result<PushOutcome, CallError> {
        let from = format!("node {} (pid {})", self.inner.node_name, std::process::id());
        let payload = seri::pack(&[
            Value::from("lua"),
            Value::from("config_push"),
            Value::from(text),
            Value::from(force),
            Value::from(from.as_str()),
        ])?;
        let reply = self
            .call(node, Target::Name(CONFIG_NAME.to_string()), payload)
            .await?;
        let bad = |reason: String| CallError::BadReply {
            node: node.to_string(),
            reason,
        };
        let values = seri::unpack(&reply).map_err(|e| bad(format!("config_push reply: {e}")))?;
        PushOutcome::from_values(&values).map_err(bad)
    }

    /// A push that says it comes from cluster node NAME: NAME must be a node of the
    /// running config or of the pushed one.
    pub(crate) fn check_pusher(&self, from: &str, offered: &ClusterConfig) -> Result<(), String> {
        let Some(node) = pusher_node(from) else {
            return Ok(());
        };
        let (running, meta) = self.inner.registry.snapshot();
        if running.nodes.contains_key(node) || offered.nodes.contains_key(node) {
            return Ok(());
        }
        let names = |c: &ClusterConfig| c.nodes.keys().cloned().collect::<Vec<_>>().join(", ");
        Err(PushRefusal::UnknownPusher {
            node: node.to_string(),
            running_version: meta.version,
            running: names(&running),
            offered_version: offered.version,
            offered: names(offered),
        }
        .to_string())
    }
}
