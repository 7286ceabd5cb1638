//! Membership: each running node keeps a key `PREFIX/members/NODE` alive under an etcd
//! lease; when the node dies (or loses etcd) for longer than the lease's TTL, etcd deletes
//! the key and every watcher sees the node go down.
//!
//! The value is one line of JSON: `{"addr":"127.0.0.1:2528","incarnation":1767225600000}`
//! (`addr` where the node listens, `incarnation` its registry's
//! [`bee_registry::Registry::incarnation`], so a restart under the same name shows as a
//! new incarnation even when the key never went away).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, GetOptions, PutOptions, WatchOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::EtcdError;
use crate::store::{timed, watch_ended, EtcdStore, MAX_BACKOFF, MIN_BACKOFF, WATCH_CAPACITY};

/// Largest member value bee reads.
const MAX_MEMBER_BYTES: usize = 64 * 1024;

#[derive(Serialize, Deserialize)]
struct MemberValue {
    addr: String,
    incarnation: u64,
}

/// A running node as its membership key says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The node's name.
    pub node: String,
    /// Where it listens, `host:port`.
    pub addr: String,
    /// Its incarnation (changes when the process restarts).
    pub incarnation: u64,
    /// The etcd lease the key lives under.
    pub lease: i64,
    /// etcd's revision of the write that set the current value.
    pub revision: i64,
}

/// A change of membership, as [`MemberWatch::next`] yields it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberEvent {
    /// A node registered, or changed its address or incarnation (a restart).
    Up(Member),
    /// A node's key is gone: it deregistered, or its lease expired.
    Down {
        /// The node's name.
        node: String,
        /// etcd's revision of the delete (0 when noticed by a re-read after an error).
        revision: i64,
    },
}

fn parse_member(prefix: &str, kv: &etcd_client::KeyValue) -> Result<Member, EtcdError> {
    let key = String::from_utf8_lossy(kv.key()).into_owned();
    if kv.value().len() > MAX_MEMBER_BYTES {
        return Err(EtcdError::BadValue {
            key,
            reason: format!(
                "{} bytes, above the {MAX_MEMBER_BYTES} a member may have",
                kv.value().len()
            ),
        });
    }
    let value: MemberValue =
        serde_json::from_slice(kv.value()).map_err(|e| EtcdError::BadValue {
            key: key.clone(),
            reason: format!("not a member record ({e})"),
        })?;
    Ok(Member {
        node: key.strip_prefix(prefix).unwrap_or(&key).to_string(),
        addr: value.addr,
        incarnation: value.incarnation,
        lease: kv.lease(),
        revision: kv.mod_revision(),
    })
}

/// Same node, same place, same process: no event needed.
fn same(a: &Member, b: &Member) -> bool {
    a.addr == b.addr && a.incarnation == b.incarnation
}

impl EtcdStore {
    /// Register `node` (listening at `addr`, incarnation `incarnation`) at
    /// `PREFIX/members/NODE` under a lease of `ttl` (whole seconds, at least 1; etcd may
    /// raise very short TTLs to its minimum). A task keeps the lease alive, sending a
    /// keep-alive every third of the TTL; if the lease was lost anyway (etcd unreachable
    /// longer than the TTL) it logs it and registers again under a new lease. Dropping the
    /// [`MemberRegistration`] stops the keep-alives, so the key disappears after the TTL;
    /// [`MemberRegistration::revoke`] removes it at once.
    pub async fn register_member(
        &self,
        node: &str,
        addr: &str,
        incarnation: u64,
        ttl: Duration,
    ) -> Result<MemberRegistration, EtcdError> {
        let ttl_secs = ttl.as_secs().max(1) as i64;
        let key = self.url.member_key(node);
        let value = serde_json::to_string(&MemberValue {
            addr: addr.to_string(),
            incarnation,
        })
        .map_err(|e| EtcdError::BadValue {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        let lease = self.grant_and_put(&key, &value, ttl_secs).await?;
        let lease_id = Arc::new(AtomicI64::new(lease));
        let task = tokio::spawn(keep_alive_loop(
            self.clone(),
            key.clone(),
            value,
            ttl_secs,
            lease_id.clone(),
        ));
        tracing::info!("registered {node} at {key} (lease {lease:x}, ttl {ttl_secs} s)");
        Ok(MemberRegistration {
            store: self.clone(),
            key,
            lease_id,
            task,
        })
    }

    async fn grant_and_put(&self, key: &str, value: &str, ttl_secs: i64) -> Result<i64, EtcdError> {
        self.grant_and_put_within(key, value, ttl_secs, self.options.request_timeout)
            .await
    }

    /// [`EtcdStore::grant_and_put`] with each of its two requests bounded by `timeout`.
    async fn grant_and_put_within(
        &self,
        key: &str,
        value: &str,
        ttl_secs: i64,
        timeout: Duration,
    ) -> Result<i64, EtcdError> {
        let mut client = self.client.clone();
        let grant = timed(
            "lease grant",
            key,
            timeout,
            client.lease_grant(ttl_secs, None),
        )
        .await?;
        let lease = grant.id();
        timed(
            "put",
            key,
            timeout,
            client.put(key, value, Some(PutOptions::new().with_lease(lease))),
        )
        .await?;
        Ok(lease)
    }

    /// Every registered node, by name, and etcd's revision of the read.
    async fn members_at(&self) -> Result<(BTreeMap<String, Member>, i64), EtcdError> {
        let prefix = self.url.members_prefix();
        let mut client = self.client.clone();
        let resp = timed(
            "get",
            &prefix,
            self.options.request_timeout,
            client.get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let mut members = BTreeMap::new();
        for kv in resp.kvs() {
            let m = parse_member(&prefix, kv)?;
            members.insert(m.node.clone(), m);
        }
        Ok((members, resp.header().map_or(0, |h| h.revision())))
    }

    /// Every registered node, by name. A value that is not bee's member JSON is an
    /// [`EtcdError::BadValue`] naming its key.
    pub async fn members(&self) -> Result<BTreeMap<String, Member>, EtcdError> {
        Ok(self.members_at().await?.0)
    }

    /// Follow membership: first an [`MemberEvent::Up`] for every node registered now, then
    /// each change in etcd's order. On an error the watch logs one line, connects again
    /// (`EtcdStore::redial`, a new dial at least every 500 ms while etcd is away), reads
    /// the members again and reports the difference with what it had reported (downs and
    /// ups missed while away), then resumes. A value that is not
    /// bee's is logged and skipped. Stops when the [`MemberWatch`] is dropped.
    pub fn watch_members(&self) -> MemberWatch {
        let (tx, rx) = mpsc::channel(WATCH_CAPACITY);
        let mut store = self.clone();
        let task = tokio::spawn(async move {
            let prefix = store.url.members_prefix();
            let mut known: BTreeMap<String, Member> = BTreeMap::new();
            let mut backoff = MIN_BACKOFF;
            loop {
                match store
                    .members_watch_once(&prefix, &tx, &mut known, &mut backoff)
                    .await
                {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(
                            "etcd member watch on {prefix}: {e}; reconnecting in {backoff:?}"
                        );
                        store = tokio::select! {
                            s = store.redial(&prefix, &mut backoff, MAX_BACKOFF) => s,
                            _ = tx.closed() => return,
                        };
                    }
                }
            }
        });
        MemberWatch { rx, task }
    }

    /// One read-then-watch round. `Ok` only when the reader dropped the watch.
    async fn members_watch_once(
        &self,
        prefix: &str,
        tx: &mpsc::Sender<MemberEvent>,
        known: &mut BTreeMap<String, Member>,
        backoff: &mut Duration,
    ) -> Result<(), EtcdError> {
        let mut client = self.client.clone();
        let timeout = self.options.request_timeout;
        let resp = timed(
            "get",
            prefix,
            timeout,
            client.get(prefix, Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let read_rev = resp.header().map_or(0, |h| h.revision());
        let mut now: BTreeMap<String, Member> = BTreeMap::new();
        for kv in resp.kvs() {
            match parse_member(prefix, kv) {
                Ok(m) => {
                    now.insert(m.node.clone(), m);
                }
                Err(e) => tracing::warn!("skipping a member: {e}"),
            }
        }
        let gone: Vec<String> = known
            .keys()
            .filter(|n| !now.contains_key(*n))
            .cloned()
            .collect();
        for node in gone {
            known.remove(&node);
            if tx
                .send(MemberEvent::Down { node, revision: 0 })
                .await
                .is_err()
            {
                return Ok(());
            }
        }
        for (node, m) in now {
            if known.get(&node).is_some_and(|k| same(k, &m)) {
                continue;
            }
            known.insert(node, m.clone());
            if tx.send(MemberEvent::Up(m)).await.is_err() {
                return Ok(());
            }
        }
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(read_rev + 1)
            .with_progress_notify();
        let mut stream = timed(
            "watch",
            prefix,
            timeout,
            client.watch(prefix, Some(options)),
        )
        .await?;
        *backoff = MIN_BACKOFF;
        loop {
            let message = tokio::select! {
                m = stream.message() => m,
                _ = tx.closed() => return Ok(()),
            };
            let resp = match message {
                Ok(Some(resp)) => resp,
                Ok(None) => return Err(watch_ended(prefix, "the watch stream ended")),
                Err(e) => return Err(watch_ended(prefix, &e.to_string())),
            };
            if resp.canceled() {
                return Err(watch_ended(
                    prefix,
                    &format!(
                        "cancelled by etcd (compacted up to {}): {}",
                        resp.compact_revision(),
                        resp.cancel_reason()
                    ),
                ));
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                let event = match event.event_type() {
                    EventType::Put => match parse_member(prefix, kv) {
                        Ok(m) if known.get(&m.node).is_some_and(|k| same(k, &m)) => {
                            // A keep-alive re-put or a new lease, same node: nothing to say.
                            known.insert(m.node.clone(), m);
                            continue;
                        }
                        Ok(m) => {
                            known.insert(m.node.clone(), m.clone());
                            MemberEvent::Up(m)
                        }
                        Err(e) => {
                            tracing::warn!("skipping a member: {e}");
                            continue;
                        }
                    },
                    EventType::Delete => {
                        let key = String::from_utf8_lossy(kv.key()).into_owned();
                        let node = key.strip_prefix(prefix).unwrap_or(&key).to_string();
                        if known.remove(&node).is_none() {
                            continue;
                        }
                        MemberEvent::Down {
                            node,
                            revision: kv.mod_revision(),
                        }
                    }
                };
                if tx.send(event).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// Keep the lease alive; register again if it was lost.
///
/// A keep-alive unanswered within half the TTL counts as failed. After a failure the
/// next attempt goes out on a fresh connection, with a new dial starting at least every
/// tenth of the TTL until one connects: the old connection may sit in TCP's
/// retransmission back-off for seconds after the network came back (a healed
/// partition), and a node must be registered again well within a TTL of etcd being
/// reachable, or its peers keep it marked down.
async fn keep_alive_loop(
    mut store: EtcdStore,
    key: String,
    value: String,
    ttl_secs: i64,
    lease_id: Arc<AtomicI64>,
) {
    let interval = Duration::from_millis((ttl_secs as u64 * 1000 / 3).max(300));
    let answer_wait = store
        .options
        .request_timeout
        .min(Duration::from_millis(ttl_secs as u64 * 500).max(interval));
    let mut backoff = MIN_BACKOFF;
    let ttl = Duration::from_secs(ttl_secs as u64);
    // When etcd last said the lease lives. Once a TTL has passed since, etcd has let it
    // expire (or is about to): a new one is granted without asking about the old.
    let mut alive_at = tokio::time::Instant::now();
    loop {
        let lease = lease_id.load(Ordering::Acquire);
        let mut client = store.client.clone();
        let lost = if alive_at.elapsed() > ttl {
            true
        } else {
            match timed(
                "lease keep-alive",
                &key,
                answer_wait,
                client.lease_keep_alive(lease),
            )
            .await
            {
                Ok((mut keeper, mut stream)) => loop {
                    // The first keep-alive at once: after a reconnect it tells whether the
                    // lease outlived the outage.
                    if let Err(e) = keeper.keep_alive().await {
                        tracing::warn!("membership {key}: keep-alive not sent: {e}");
                        break false;
                    }
                    match tokio::time::timeout(answer_wait, stream.message()).await {
                        Ok(Ok(Some(resp))) if resp.ttl() > 0 => {
                            backoff = MIN_BACKOFF;
                            alive_at = tokio::time::Instant::now();
                        }
                        Ok(Ok(Some(_))) => break true,
                        Ok(Ok(None)) => {
                            tracing::warn!("membership {key}: keep-alive stream ended");
                            break false;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!("membership {key}: keep-alive failed: {e}");
                            break false;
                        }
                        Err(_) => {
                            tracing::warn!(
                                "membership {key}: no keep-alive answer within {answer_wait:?}"
                            );
                            break false;
                        }
                    }
                    tokio::time::sleep(interval).await;
                },
                // etcd-client says "lease not found" when the lease expired meanwhile.
                Err(EtcdError::Request { reason, .. }) if reason.contains("lease not found") => {
                    true
                }
                Err(e) => {
                    tracing::warn!("membership {key}: {e}");
                    false
                }
            }
        };
        if lost {
            tracing::error!(
                "membership {key}: lease {lease:x} expired (etcd unreachable longer than {ttl_secs} s); registering again"
            );
            // Bounded like a keep-alive: a request written into a connection the network
            // cut waits for TCP's retransmissions, seconds after the network is back; a
            // fresh connection (below) is quicker than waiting the request timeout out.
            match store
                .grant_and_put_within(&key, &value, ttl_secs, answer_wait)
                .await
            {
                Ok(new_lease) => {
                    tracing::info!("membership {key}: registered again (lease {new_lease:x})");
                    lease_id.store(new_lease, Ordering::Release);
                    alive_at = tokio::time::Instant::now();
                    continue;
                }
                Err(e) => tracing::warn!("membership {key}: registering again failed: {e}"),
            }
        }
        // A fresh connection before the next keep-alive, a new dial at least every
        // `pace` (a tenth of the TTL at most) until one connects ([`EtcdStore::redial`]).
        let pace = (interval / 2).min(Duration::from_millis(ttl_secs as u64 * 100));
        store = store.redial(&key, &mut backoff, pace).await;
    }
}

/// A live membership key. Dropping it stops the keep-alives (the key then expires after
/// its TTL); [`MemberRegistration::revoke`] removes the key at once.
#[derive(Debug)]
pub struct MemberRegistration {
    store: EtcdStore,
    key: String,
    lease_id: Arc<AtomicI64>,
    task: JoinHandle<()>,
}

impl MemberRegistration {
    /// The membership key, `PREFIX/members/NODE`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lease the key lives under now (a new one after a re-registration).
    pub fn lease(&self) -> i64 {
        self.lease_id.load(Ordering::Acquire)
    }

    /// Leave the cluster now: stop the keep-alives and revoke the lease, so etcd deletes
    /// the key and watchers see the node go down at once.
    pub async fn revoke(self) -> Result<(), EtcdError> {
        self.task.abort();
        let mut client = self.store.client.clone();
        timed(
            "lease revoke",
            &self.key,
            self.store.options.request_timeout,
            client.lease_revoke(self.lease()),
        )
        .await?;
        tracing::info!("deregistered {}", self.key);
        Ok(())
    }
}

impl Drop for MemberRegistration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The receiving end of [`EtcdStore::watch_members`]. Dropping it stops the watch.
#[derive(Debug)]
pub struct MemberWatch {
    rx: mpsc::Receiver<MemberEvent>,
    task: JoinHandle<()>,
}

impl MemberWatch {
    /// The next event; `None` only if the watch task ended (it does not on its own).
    pub async fn next(&mut self) -> Option<MemberEvent> {
        self.rx.recv().await
    }

    /// [`MemberWatch::next`] with a timeout: `None` when nothing came within it.
    pub async fn next_within(&mut self, timeout: Duration) -> Option<MemberEvent> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for MemberWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
