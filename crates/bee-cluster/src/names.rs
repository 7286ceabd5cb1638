//! Peers' names: when this node's cluster-visible names change, it tells every config
//! node that said `hello` on one of its accepted connections (`names_changed`, a small
//! call with bounded retries); they say hello again to read the names.

use std::time::Duration;

use bee_codec::seri::{self, Value};
use bee_runtime::{Addr, Target};
use tokio_util::sync::CancellationToken;

use crate::lifecycle::CLUSTERD_NAME;
use crate::state::{Cluster, Inner, NAMES_SETTLE, NAMES_TELL_ATTEMPTS, NAMES_TELL_TIMEOUT};

impl Cluster {
    /// Tell `peer` that this node's names changed (generation `generation`), trying
    /// [`NAMES_TELL_ATTEMPTS`] times; the peer then says hello to read them.
    pub(crate) async fn tell_names(self, peer: String, generation: u64) {
        let Ok(payload) = seri::pack(&[
            Value::from("lua"),
            Value::from("names_changed"),
            Value::from(self.inner.node_name.as_str()),
            Value::Integer(i64::try_from(self.incarnation()).unwrap_or(i64::MAX)),
            Value::Integer(i64::try_from(generation).unwrap_or(i64::MAX)),
        ]) else {
            return;
        };
        let mut wait = Duration::from_millis(200);
        for attempt in 1..=NAMES_TELL_ATTEMPTS {
            let told = self
                .call_timeout(
                    &peer,
                    Target::Name(CLUSTERD_NAME.to_string()),
                    payload.clone(),
                    Some(NAMES_TELL_TIMEOUT),
                )
                .await;
            match told {
                Ok(_) => return,
                Err(e) if attempt == NAMES_TELL_ATTEMPTS => {
                    tracing::warn!(node = %self.inner.node_name, %peer, error = %e, "cannot tell {peer} that the names of {} changed; it learns them when it next connects", self.inner.node_name);
                }
                Err(e) => {
                    tracing::debug!(node = %self.inner.node_name, %peer, attempt, error = %e, "names_changed not delivered; retrying in {wait:?}");
                    tokio::select! {
                        _ = self.inner.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait *= 4;
                }
            }
        }
    }
}

/// When a node's cluster-visible names change, tell every config node that said hello
/// on one of its accepted connections (they are the ones that may cache them).
pub(crate) async fn tell_name_changes(
    cluster: std::sync::Weak<Inner>,
    stop: CancellationToken,
    mut changes: tokio::sync::watch::Receiver<u64>,
) {
    let mut told: Option<std::collections::BTreeMap<String, Addr>> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
        }
        // A burst of changes (a service registering several names) is told once.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(NAMES_SETTLE) => {}
        }
        changes.borrow_and_update();
        let Some(inner) = cluster.upgrade() else {
            return;
        };
        let cluster = Cluster { inner };
        let Ok(node) = cluster.node() else { return };
        let (generation, names) = node.public_names();
        if told.as_ref() == Some(&names) {
            continue;
        }
        told = Some(names);
        let peers: std::collections::BTreeSet<String> = cluster
            .inner
            .agents
            .iter()
            .filter_map(|a| a.node.clone())
            .collect();
        for peer in peers {
            tokio::spawn(cluster.clone().tell_names(peer, generation));
        }
    }
}
