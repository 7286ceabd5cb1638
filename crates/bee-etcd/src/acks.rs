//! Acks: after a node tries a config it writes the outcome at `PREFIX/acks/NODE`, so the
//! one who pushed learns, per node, what was applied and what failed (skynet #1434).
//!
//! The value is one line of JSON:
//!
//! ```json
//! {"node":"lobby","version":7,"hash":"0123456789abcdef","ok":true,"error":null,"at_ms":1767225600000}
//! ```
//!
//! `version` and `hash` are those of the config the ack answers (for a text that did not
//! parse, the version is 0 and the hash empty); `ok` false comes with `error`, the
//! registry's words (the line included for parse errors). `at_ms` is the node's wall clock
//! in milliseconds since 1970. A node keeps one ack key: each ack replaces the last.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{GetOptions, WatchOptions};
use serde::{Deserialize, Serialize};

use crate::error::EtcdError;
use crate::store::{timed, EtcdStore};

/// Largest ack value bee reads.
const MAX_ACK_BYTES: usize = 64 * 1024;

/// One node's answer to a config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The node that answers.
    pub node: String,
    /// The version of the config it answers.
    pub version: u64,
    /// The short content hash of that config (16 hex digits), empty when it did not parse.
    pub hash: String,
    /// Whether the node now runs it.
    pub ok: bool,
    /// Why not, when `ok` is false.
    pub error: Option<String>,
    /// When the node wrote the ack, in milliseconds since 1970.
    pub at_ms: u64,
}

/// What [`EtcdStore::wait_acks`] found when every node had answered or time ran out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AckReport {
    /// The version waited for.
    pub version: u64,
    /// Nodes that run the version (or a later one), with their ack.
    pub applied: BTreeMap<String, Ack>,
    /// Nodes that refused the version, with their ack (its `error` says why).
    pub failed: BTreeMap<String, Ack>,
    /// Nodes with no answer to the version yet (no ack, or one for an older version).
    pub missing: Vec<String>,
}

impl AckReport {
    /// True when every node waited for applied the version.
    pub fn all_applied(&self) -> bool {
        self.failed.is_empty() && self.missing.is_empty()
    }
}

impl std::fmt::Display for AckReport {
    /// `version 7: applied a, b; failed c (line 3: ...); missing d`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "version {}:", self.version)?;
        let mut parts = Vec::new();
        if !self.applied.is_empty() {
            let names: Vec<&str> = self.applied.keys().map(String::as_str).collect();
            parts.push(format!("applied {}", names.join(", ")));
        }
        if !self.failed.is_empty() {
            let items: Vec<String> = self
                .failed
                .iter()
                .map(|(n, a)| format!("{n} ({})", a.error.as_deref().unwrap_or("no reason given")))
                .collect();
            parts.push(format!("failed {}", items.join(", ")));
        }
        if !self.missing.is_empty() {
            parts.push(format!("missing {}", self.missing.join(", ")));
        }
        if parts.is_empty() {
            parts.push("no nodes".to_string());
        }
        write!(f, " {}", parts.join("; "))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn parse_ack(key: &str, value: &[u8]) -> Result<Ack, EtcdError> {
    if value.len() > MAX_ACK_BYTES {
        return Err(EtcdError::BadValue {
            key: key.to_string(),
            reason: format!(
                "{} bytes, above the {MAX_ACK_BYTES} an ack may have",
                value.len()
            ),
        });
    }
    serde_json::from_slice(value).map_err(|e| EtcdError::BadValue {
        key: key.to_string(),
        reason: format!("not an ack ({e})"),
    })
}

impl EtcdStore {
    /// Write `node`'s answer to config `version` (content hash `hash`, short form) at
    /// `PREFIX/acks/NODE`: `Ok(())` when it runs it, `Err(reason)` when it refused it.
    pub async fn put_ack(
        &self,
        node: &str,
        version: u64,
        hash: &str,
        result: Result<(), String>,
    ) -> Result<Ack, EtcdError> {
        let ack = Ack {
            node: node.to_string(),
            version,
            hash: hash.to_string(),
            ok: result.is_ok(),
            error: result.err(),
            at_ms: now_ms(),
        };
        let key = self.url.ack_key(node);
        let value = serde_json::to_string(&ack).map_err(|e| EtcdError::BadValue {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        let mut client = self.client.clone();
        timed(
            "put",
            &key,
            self.options.request_timeout,
            client.put(key.as_str(), value, None),
        )
        .await?;
        Ok(ack)
    }

    /// Every node's last ack, by node name, and etcd's revision of the read.
    async fn read_acks_at(&self) -> Result<(BTreeMap<String, Ack>, i64), EtcdError> {
        let prefix = self.url.acks_prefix();
        let mut client = self.client.clone();
        let resp = timed(
            "get",
            &prefix,
            self.options.request_timeout,
            client.get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let mut acks = BTreeMap::new();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let ack = parse_ack(&key, kv.value())?;
            let node = key.strip_prefix(&prefix).unwrap_or(&key).to_string();
            acks.insert(node, ack);
        }
        Ok((acks, resp.header().map_or(0, |h| h.revision())))
    }

    /// Every node's last ack, by node name. An ack value that is not bee's JSON is an
    /// [`EtcdError::BadValue`] naming its key.
    pub async fn read_acks(&self) -> Result<BTreeMap<String, Ack>, EtcdError> {
        Ok(self.read_acks_at().await?.0)
    }

    /// Wait until each of `nodes` has answered config `version` (applied it or a later
    /// one, or refused it), or `timeout` passed; then report who applied, who failed
    /// (with the reason) and who said nothing. Running out of time is not an error: the
    /// report's `missing` names the silent nodes.
    pub async fn wait_acks(
        &self,
        nodes: &[&str],
        version: u64,
        timeout: Duration,
    ) -> Result<AckReport, EtcdError> {
        self.wait_acks_by(nodes, version, timeout, |a| {
            if a.ok && a.version >= version {
                Some(true)
            } else if !a.ok && a.version == version {
                Some(false)
            } else {
                None
            }
        })
        .await
    }

    /// [`EtcdStore::wait_acks`] for one exact config, as `bee config push` waits: a node
    /// counts as applied only when its ack names this `version` **and** this content
    /// `hash` (short form), as failed when it refused that same version and hash. An ack
    /// for anything else (the config it ran before, a later push) is not an answer yet, so
    /// a forced roll-back or a same-version push is not mistaken for applied by the acks
    /// that were there before it.
    pub async fn wait_acks_for(
        &self,
        nodes: &[&str],
        version: u64,
        hash: &str,
        timeout: Duration,
    ) -> Result<AckReport, EtcdError> {
        self.wait_acks_by(nodes, version, timeout, |a| {
            (a.version == version && a.hash == hash).then_some(a.ok)
        })
        .await
    }

    /// Wait until `answer` says something (applied: `Some(true)`, failed: `Some(false)`)
    /// about each node's ack, or `timeout`.
    async fn wait_acks_by(
        &self,
        nodes: &[&str],
        version: u64,
        timeout: Duration,
        answer: impl Fn(&Ack) -> Option<bool>,
    ) -> Result<AckReport, EtcdError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let prefix = self.url.acks_prefix();
        loop {
            let (acks, revision) = self.read_acks_at().await?;
            let mut report = AckReport {
                version,
                ..AckReport::default()
            };
            for node in nodes {
                match acks.get(*node).map(|a| (a, answer(a))) {
                    Some((a, Some(true))) => {
                        report.applied.insert(node.to_string(), a.clone());
                    }
                    Some((a, Some(false))) => {
                        report.failed.insert(node.to_string(), a.clone());
                    }
                    _ => report.missing.push(node.to_string()),
                }
            }
            let now = tokio::time::Instant::now();
            if report.missing.is_empty() || now >= deadline {
                return Ok(report);
            }
            // Sleep until an ack changes (or the deadline), then read them all again.
            let mut client = self.client.clone();
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(revision + 1);
            let watched = tokio::time::timeout_at(deadline, async {
                let mut stream = client.watch(prefix.as_str(), Some(options)).await?;
                // Skip the "created" and progress answers: wake on events or an end.
                loop {
                    match stream.message().await? {
                        Some(r) if r.events().is_empty() && !r.canceled() => continue,
                        other => return Ok::<_, etcd_client::Error>(other.is_some()),
                    }
                }
            })
            .await;
            match watched {
                // An ack changed, or the deadline came: read again (and report).
                Ok(Ok(true)) | Err(_) => {}
                // Do not spin on a broken or ended watch: wait a little, then read again.
                Ok(Ok(false)) | Ok(Err(_)) => {
                    if let Ok(Err(e)) = &watched {
                        tracing::debug!("etcd watch on {prefix} while waiting for acks: {e}");
                    }
                    tokio::time::sleep_until((now + Duration::from_millis(200)).min(deadline))
                        .await;
                }
            }
        }
    }
}
