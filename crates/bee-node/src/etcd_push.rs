//! `bee config push --cluster etcd://host:port/PREFIX NEW`: the push through etcd.
//!
//! The nodes of an etcd cluster follow `PREFIX/config` and answer each version with an
//! ack at `PREFIX/acks/NODE` (see [`crate::etcd`]). So a push there is: check NEW, read
//! the config stored now (CURRENT), write NEW to the key (refused when it is older than
//! the stored one, or the same version with other content, unless `--force`; the write
//! is conditional on the key not changing meanwhile), then wait at most `--timeout-ms`
//! for an ack naming NEW's version **and** content hash from every node of
//! CURRENT ∪ NEW (nodes marked down in both are skipped). A node without such an ack is
//! `unreachable` when it has no membership key (not running, or not following etcd) and
//! `timed out` when it is registered but did not answer in time. The table, the summary
//! line and the exit status are [`crate::admin`]'s, as for a push to files.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, Result};
use bee_etcd::{EtcdError, EtcdOptions, EtcdStore};

use crate::admin::{self, Answer, PushArgs};

/// The push through etcd; see the module doc.
pub(crate) async fn push(a: PushArgs) -> Result<()> {
    let url = a.cluster.to_string_lossy().into_owned();
    let (text, new) = admin::read_new(&a.new)?;
    let timeout = Duration::from_millis(a.timeout_ms.max(1));
    let options = EtcdOptions {
        connect_timeout: timeout.min(bee_etcd::DEFAULT_CONNECT_TIMEOUT),
        request_timeout: bee_etcd::DEFAULT_REQUEST_TIMEOUT,
    };
    let store = EtcdStore::connect_with(&url, options)
        .await
        .with_context(|| format!("nothing was pushed: cannot reach etcd at {url}"))?;
    let key = store.url().config_key();
    let current = match store.get_config().await {
        Ok(c) => c.map(|c| c.config),
        // What is stored does not parse: the nodes kept what they ran; push over it.
        Err(e @ EtcdError::Config { .. }) => {
            eprintln!("bee: warning: {e}; the nodes are taken from the new config only");
            None
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!("nothing was pushed: cannot read the cluster config at etcd key {key}")
            })
        }
    };
    let revision = store
        .put_config_text(&text, a.force)
        .await
        .context("nothing was pushed")?;
    let configs: Vec<&bee_registry::ClusterConfig> =
        current.iter().chain(std::iter::once(&new)).collect();
    let (targets, skipped) = admin::targets(&configs);
    let names: BTreeSet<&str> = targets.iter().map(|(n, _)| n.as_str()).collect();
    let names: Vec<&str> = names.into_iter().collect();
    let hash = new.content_hash().short();
    println!(
        "wrote {key} (etcd revision {revision}): version {} hash {hash}; waiting up to {} ms for the acks of {}",
        new.version,
        timeout.as_millis(),
        names.join(", ")
    );
    let report = store
        .wait_acks_for(&names, new.version, &hash, timeout)
        .await
        .with_context(|| {
            format!(
                "the config was written to {key}, but its acks could not be read; see `bee status`"
            )
        })?;
    let (members, acks) = if report.missing.is_empty() {
        Default::default()
    } else {
        (
            store.members().await.unwrap_or_default(),
            store.read_acks().await.unwrap_or_default(),
        )
    };
    let address = |node: &str| {
        members
            .get(node)
            .map(|m| m.addr.clone())
            .unwrap_or_else(|| {
                targets
                    .iter()
                    .rev()
                    .find(|(n, _)| n == node)
                    .map(|(_, a)| a.clone())
                    .unwrap_or_default()
            })
    };
    let mut answers = Vec::new();
    for (node, ack) in &report.applied {
        answers.push((
            node.clone(),
            address(node),
            Answer::Applied(format!("version {} hash {} (acked)", ack.version, ack.hash)),
        ));
    }
    for (node, ack) in &report.failed {
        answers.push((
            node.clone(),
            address(node),
            Answer::Rejected(format!(
                "{} (acked; it keeps the config it ran)",
                ack.error.as_deref().unwrap_or("no reason given")
            )),
        ));
    }
    for node in &report.missing {
        let last = match acks.get(node) {
            Some(a) => format!(
                "its last ack: {} version {} hash {}",
                if a.ok { "applied" } else { "refused" },
                a.version,
                if a.hash.is_empty() { "-" } else { &a.hash }
            ),
            None => "it never acked".to_string(),
        };
        let answer = match members.get(node) {
            Some(m) => Answer::TimedOut(format!(
                "no ack within {} ms; registered in etcd (incarnation {}); {last}",
                timeout.as_millis(),
                m.incarnation
            )),
            None => Answer::Unreachable(format!(
                "no ack within {} ms, and no {}: not running, or not following etcd; {last}",
                timeout.as_millis(),
                store.url().member_key(node)
            )),
        };
        answers.push((node.clone(), address(node), answer));
    }
    answers.sort_by(|x, y| x.0.cmp(&y.0));
    admin::finish(&answers, &skipped, &new, a.require_all)
}
