//! The live registry of one node: the cluster config it currently uses and the names its
//! services registered, with reload/replace diffs, generation counters for caches, and a
//! broadcast of every change.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use crate::config::{ClusterConfig, NodeEntry};
use crate::error::RegistryError;

/// A service's 32-bit address (skynet prints it as `:0100000a`).
pub type ServiceAddr = u32;

/// How many events a slow subscriber may fall behind before it sees `Lagged`.
const EVENT_CAPACITY: usize = 1024;

/// What a reload or replace changed in the cluster config. Every list is sorted by node
/// name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigDiff {
    /// Nodes new to the config, with their address.
    pub added: Vec<(String, String)>,
    /// Nodes whose address changed: name, old address, new address.
    pub changed: Vec<(String, String, String)>,
    /// Nodes now marked down (`false`), including ones the config did not name before.
    pub marked_down: Vec<String>,
    /// Nodes no longer in the config (only [`Registry::replace`] removes nodes).
    pub removed: Vec<String>,
    /// Nodes that were marked down and now have an address.
    pub brought_up: Vec<(String, String)>,
    /// Option keys (`__nowaiting` included) that were set, changed or removed.
    pub options_changed: Vec<String>,
}

impl ConfigDiff {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.changed.is_empty()
            && self.marked_down.is_empty()
            && self.removed.is_empty()
            && self.brought_up.is_empty()
            && self.options_changed.is_empty()
    }

    /// Record how one node goes from `old` to `new`.
    fn node(&mut self, name: &str, old: Option<&NodeEntry>, new: &NodeEntry) {
        match (old, new) {
            (None, NodeEntry::Up(a)) => self.added.push((name.to_string(), a.clone())),
            (Some(NodeEntry::Up(a)), NodeEntry::Up(b)) if a != b => {
                self.changed.push((name.to_string(), a.clone(), b.clone()));
            }
            (None | Some(NodeEntry::Up(_)), NodeEntry::Down) => {
                self.marked_down.push(name.to_string());
            }
            (Some(NodeEntry::Down), NodeEntry::Up(b)) => {
                self.brought_up.push((name.to_string(), b.clone()));
            }
            _ => {}
        }
    }
}

impl fmt::Display for ConfigDiff {
    /// One line, e.g. `added lobby=127.0.0.1:1; changed x 1->2; down y`, or `no change`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no change");
        }
        let mut parts: Vec<String> = Vec::new();
        let join = |items: Vec<String>| items.join(", ");
        if !self.added.is_empty() {
            let items = self.added.iter().map(|(n, a)| format!("{n}={a}")).collect();
            parts.push(format!("added {}", join(items)));
        }
        if !self.changed.is_empty() {
            let items = self
                .changed
                .iter()
                .map(|(n, old, new)| format!("{n} {old}->{new}"))
                .collect();
            parts.push(format!("changed {}", join(items)));
        }
        if !self.marked_down.is_empty() {
            parts.push(format!("down {}", self.marked_down.join(", ")));
        }
        if !self.brought_up.is_empty() {
            let items = self
                .brought_up
                .iter()
                .map(|(n, a)| format!("{n}={a}"))
                .collect();
            parts.push(format!("up {}", join(items)));
        }
        if !self.removed.is_empty() {
            parts.push(format!("removed {}", self.removed.join(", ")));
        }
        if !self.options_changed.is_empty() {
            parts.push(format!("options {}", self.options_changed.join(", ")));
        }
        f.write_str(&parts.join("; "))
    }
}

/// A change announced to [`Registry::subscribe`]rs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryEvent {
    /// The cluster config changed (by reload or replace).
    ConfigChanged(ConfigDiff),
    /// A name now points at `addr`; `previous` is where it pointed before, if anywhere.
    NameRegistered {
        /// The registered name.
        name: String,
        /// Its new address.
        addr: ServiceAddr,
        /// The address it had before (the name moved).
        previous: Option<ServiceAddr>,
    },
    /// A name was removed.
    NameUnregistered {
        /// The removed name.
        name: String,
        /// The address it had.
        addr: ServiceAddr,
    },
}

struct Inner {
    config: RwLock<ClusterConfig>,
    names: RwLock<HashMap<String, ServiceAddr>>,
    generation: AtomicU64,
    config_generation: AtomicU64,
    events: broadcast::Sender<RegistryEvent>,
    /// Carries the config generation; wakes [`Registry::wait_for_node`].
    config_watch: watch::Sender<u64>,
}

/// One node's registry: the cluster config and the names registered on this node.
///
/// Cloning is cheap (an `Arc`); every clone sees the same state. All methods take `&self`
/// and may be called from any thread; no lock is held across an `.await`.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

/// Locks are only held for map operations that cannot panic; a poisoned lock still holds
/// consistent data, so take it rather than propagate the poison.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    /// A registry using `config`, with no names registered.
    pub fn new(config: ClusterConfig) -> Registry {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (config_watch, _) = watch::channel(0);
        Registry {
            inner: Arc::new(Inner {
                config: RwLock::new(config),
                names: RwLock::new(HashMap::new()),
                generation: AtomicU64::new(0),
                config_generation: AtomicU64::new(0),
                events,
                config_watch,
            }),
        }
    }

    /// A snapshot of the current cluster config.
    pub fn config(&self) -> ClusterConfig {
        read(&self.inner.config).clone()
    }

    /// The `"host:port"` of `node`.
    pub fn lookup(&self, node: &str) -> Result<String, RegistryError> {
        let config = read(&self.inner.config);
        match config.nodes.get(node) {
            Some(NodeEntry::Up(addr)) => Ok(addr.clone()),
            Some(NodeEntry::Down) => Err(RegistryError::NodeDown {
                node: node.to_string(),
            }),
            None => Err(RegistryError::UnknownNode {
                node: node.to_string(),
                known: config.nodes.keys().cloned().collect(),
            }),
        }
    }

    /// The `"host:port"` of `node`, waiting up to `timeout` for a reload that names it
    /// (skynet's behaviour without `__nowaiting`). A node marked down fails at once, also
    /// when a reload marks it down while waiting; on timeout the error is `UnknownNode`.
    pub async fn wait_for_node(
        &self,
        node: &str,
        timeout: Duration,
    ) -> Result<String, RegistryError> {
        let mut changes = self.inner.config_watch.subscribe();
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        loop {
            // Mark the current config seen before reading it, so no reload is missed.
            changes.borrow_and_update();
            let unknown = match self.lookup(node) {
                Err(e @ RegistryError::UnknownNode { .. }) => e,
                done => return done,
            };
            let woke = match deadline {
                Some(at) => tokio::time::timeout_at(at, changes.changed()).await,
                None => Ok(changes.changed().await),
            };
            match woke {
                Ok(Ok(())) => continue,
                // The sender lives as long as `self`; a closed channel cannot happen, but
                // would mean no reload can come either.
                Ok(Err(_)) => return Err(unknown),
                Err(_elapsed) => {
                    tracing::debug!(node, ?timeout, "gave up waiting for cluster node");
                    return self.lookup(node);
                }
            }
        }
    }

    /// Merge `config` into the current one, as skynet's `reload`: its nodes overwrite
    /// (an address, or `false` to mark down), nodes it does not name stay as they were.
    /// Its options overwrite the ones it names (others stay); `nowaiting` takes its value.
    pub fn reload(&self, config: ClusterConfig) -> ConfigDiff {
        self.apply(config, false)
    }

    /// Replace the whole config: nodes absent from `config` are removed (`diff.removed`),
    /// options and `nowaiting` become exactly its own.
    pub fn replace(&self, config: ClusterConfig) -> ConfigDiff {
        self.apply(config, true)
    }

    fn apply(&self, new: ClusterConfig, whole: bool) -> ConfigDiff {
        let mut current = write(&self.inner.config);
        let mut diff = ConfigDiff::default();
        for (name, entry) in &new.nodes {
            diff.node(name, current.nodes.get(name), entry);
        }
        if whole {
            diff.removed = current
                .nodes
                .keys()
                .filter(|n| !new.nodes.contains_key(*n))
                .cloned()
                .collect();
        }
        let mut options_changed: Vec<String> = new
            .options
            .iter()
            .filter(|(k, v)| current.options.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        if whole {
            options_changed.extend(
                current
                    .options
                    .keys()
                    .filter(|k| !new.options.contains_key(*k))
                    .cloned(),
            );
        }
        if current.nowaiting != new.nowaiting {
            options_changed.push("__nowaiting".to_string());
        }
        options_changed.sort();
        options_changed.dedup();
        diff.options_changed = options_changed;
        if diff.is_empty() {
            return diff;
        }

        if whole {
            *current = new;
        } else {
            current.nowaiting = new.nowaiting;
            current.nodes.extend(new.nodes);
            current.options.extend(new.options);
        }
        let generation = self.inner.config_generation.fetch_add(1, Ordering::AcqRel) + 1;
        tracing::info!(
            generation,
            "cluster config {}: {diff}",
            if whole { "replaced" } else { "reloaded" }
        );
        // Announced under the lock, so subscribers see changes in the order they happened.
        let _ = self
            .inner
            .events
            .send(RegistryEvent::ConfigChanged(diff.clone()));
        self.inner.config_watch.send_replace(generation);
        drop(current);
        diff
    }

    /// Make local service `addr` reachable as `name` from other nodes. Returns the address
    /// the name had before: registering a name that already points elsewhere moves it.
    pub fn register(
        &self,
        name: &str,
        addr: ServiceAddr,
    ) -> Result<Option<ServiceAddr>, RegistryError> {
        check_service_name(name)?;
        let mut names = write(&self.inner.names);
        let previous = names.insert(name.to_string(), addr);
        if previous == Some(addr) {
            return Ok(previous);
        }
        let generation = self.inner.generation.fetch_add(1, Ordering::AcqRel) + 1;
        match previous {
            Some(old) => {
                tracing::info!(
                    generation,
                    "name {name} moved from :{old:08x} to :{addr:08x}"
                )
            }
            None => tracing::info!(generation, "name {name} registered at :{addr:08x}"),
        }
        let _ = self.inner.events.send(RegistryEvent::NameRegistered {
            name: name.to_string(),
            addr,
            previous,
        });
        drop(names);
        Ok(previous)
    }

    /// Remove a registered name; returns the address it had (None if it had none).
    pub fn unregister(&self, name: &str) -> Option<ServiceAddr> {
        let mut names = write(&self.inner.names);
        let addr = names.remove(name)?;
        let generation = self.inner.generation.fetch_add(1, Ordering::AcqRel) + 1;
        tracing::info!(generation, "name {name} unregistered (was :{addr:08x})");
        let _ = self.inner.events.send(RegistryEvent::NameUnregistered {
            name: name.to_string(),
            addr,
        });
        drop(names);
        Some(addr)
    }

    /// The address registered as `name` on this node (a read lock and one hash lookup).
    pub fn query(&self, name: &str) -> Option<ServiceAddr> {
        read(&self.inner.names).get(name).copied()
    }

    /// Every registered name with its address, sorted by name.
    pub fn names(&self) -> Vec<(String, ServiceAddr)> {
        let mut all: Vec<(String, ServiceAddr)> = read(&self.inner.names)
            .iter()
            .map(|(n, a)| (n.clone(), *a))
            .collect();
        all.sort();
        all
    }

    /// Bumps on every name change (register that changes something, unregister of a
    /// registered name). A cache of name lookups taken at generation `g` is valid while
    /// this still returns `g`: read the generation before the lookups it guards.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Bumps on every reload/replace that changes the config.
    pub fn config_generation(&self) -> u64 {
        self.inner.config_generation.load(Ordering::Acquire)
    }

    /// Every later change, in order. A subscriber that falls more than 1024 events behind
    /// gets `RecvError::Lagged` and should re-read [`Registry::config`] / [`Registry::names`].
    pub fn subscribe(&self) -> broadcast::Receiver<RegistryEvent> {
        self.inner.events.subscribe()
    }

    /// Every node of the config, sorted by name.
    pub fn nodes(&self) -> Vec<(String, NodeEntry)> {
        read(&self.inner.config)
            .nodes
            .iter()
            .map(|(n, e)| (n.clone(), e.clone()))
            .collect()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("nodes", &read(&self.inner.config).nodes.len())
            .field("names", &read(&self.inner.names).len())
            .field("generation", &self.generation())
            .field("config_generation", &self.config_generation())
            .finish()
    }
}

fn check_service_name(name: &str) -> Result<(), RegistryError> {
    let bad = |reason: &str| {
        Err(RegistryError::BadName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("a name cannot be empty");
    }
    if name.starts_with('@') {
        return bad(
            "register the name without the `@` (callers write \"@name\", the name is \"name\")",
        );
    }
    if name.chars().any(char::is_control) {
        return bad("a name cannot contain control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::broadcast::error::TryRecvError;

    fn cfg(text: &str) -> ClusterConfig {
        ClusterConfig::parse_lua(text).unwrap()
    }

    fn s(x: &str) -> String {
        x.to_string()
    }

    #[test]
    fn lookup_answers_and_errors() {
        let r = Registry::new(cfg("lobby = \"127.0.0.1:1\"\nshop_master = false\n"));
        assert_eq!(r.lookup("lobby").unwrap(), "127.0.0.1:1");
        assert_eq!(
            r.lookup("shop_master"),
            Err(RegistryError::NodeDown {
                node: s("shop_master")
            })
        );
        assert_eq!(
            r.lookup("lpersistence_3"),
            Err(RegistryError::UnknownNode {
                node: s("lpersistence_3"),
                known: vec![s("lobby"), s("shop_master")]
            })
        );
        assert_eq!(
            r.nodes(),
            vec![
                (s("lobby"), NodeEntry::Up(s("127.0.0.1:1"))),
                (s("shop_master"), NodeEntry::Down)
            ]
        );
    }

    #[test]
    fn reload_merges() {
        let r = Registry::new(cfg(
            "a = \"h:1\"\nb = \"h:2\"\nc = false\nd = \"h:4\"\nkeep = \"h:9\"\n__opt = 1\n",
        ));
        let diff = r.reload(cfg(
            "a = \"h:1\"\nb = \"h:22\"\nc = \"h:3\"\nd = false\ne = \"h:5\"\nf = false\n__nowaiting = true\n",
        ));
        assert_eq!(diff.added, vec![(s("e"), s("h:5"))]);
        assert_eq!(diff.changed, vec![(s("b"), s("h:2"), s("h:22"))]);
        assert_eq!(diff.brought_up, vec![(s("c"), s("h:3"))]);
        assert_eq!(diff.marked_down, vec![s("d"), s("f")]);
        assert!(diff.removed.is_empty());
        assert_eq!(diff.options_changed, vec![s("__nowaiting")]);
        assert_eq!(
            diff.to_string(),
            "added e=h:5; changed b h:2->h:22; down d, f; up c=h:3; options __nowaiting"
        );
        let now = r.config();
        assert_eq!(now.nodes.len(), 7);
        assert_eq!(r.lookup("keep").unwrap(), "h:9");
        assert_eq!(r.lookup("b").unwrap(), "h:22");
        assert!(now.nowaiting);
        assert_eq!(now.options.get("__opt").map(String::as_str), Some("1"));
        assert_eq!(r.config_generation(), 1);

        // The same reload again changes nothing and bumps nothing.
        let again = r.reload(cfg(
            "a = \"h:1\"\nb = \"h:22\"\nc = \"h:3\"\nd = false\ne = \"h:5\"\nf = false\n__nowaiting = true\n",
        ));
        assert!(again.is_empty());
        assert_eq!(again.to_string(), "no change");
        assert_eq!(r.config_generation(), 1);
    }

    #[test]
    fn replace_removes_absent_nodes_and_options() {
        let r = Registry::new(cfg("a = \"h:1\"\nb = \"h:2\"\nc = false\n__opt = 1\n"));
        let diff = r.replace(cfg("a = \"h:1\"\nb = \"h:3\"\n"));
        assert_eq!(diff.removed, vec![s("c")]);
        assert_eq!(diff.changed, vec![(s("b"), s("h:2"), s("h:3"))]);
        assert_eq!(diff.options_changed, vec![s("__opt")]);
        assert_eq!(
            diff.to_string(),
            "changed b h:2->h:3; removed c; options __opt"
        );
        assert_eq!(r.config(), cfg("a = \"h:1\"\nb = \"h:3\"\n"));
        assert_eq!(r.config_generation(), 1);
        assert!(r.replace(cfg("b = \"h:3\"\na = \"h:1\"\n")).is_empty());
        assert_eq!(r.config_generation(), 1);
    }

    #[test]
    fn names_register_move_unregister() {
        let r = Registry::new(ClusterConfig::default());
        assert_eq!(r.generation(), 0);
        assert_eq!(r.register("lpersistence", 0x0100_000a), Ok(None));
        assert_eq!(r.generation(), 1);
        assert_eq!(r.query("lpersistence"), Some(0x0100_000a));
        // Registering the same again changes nothing.
        assert_eq!(
            r.register("lpersistence", 0x0100_000a),
            Ok(Some(0x0100_000a))
        );
        assert_eq!(r.generation(), 1);
        // Moving the name.
        assert_eq!(
            r.register("lpersistence", 0x0100_000b),
            Ok(Some(0x0100_000a))
        );
        assert_eq!(r.generation(), 2);
        assert_eq!(r.query("lpersistence"), Some(0x0100_000b));
        r.register("another", 7).unwrap();
        assert_eq!(
            r.names(),
            vec![(s("another"), 7), (s("lpersistence"), 0x0100_000b)]
        );
        assert_eq!(r.unregister("lpersistence"), Some(0x0100_000b));
        assert_eq!(r.generation(), 4);
        assert_eq!(r.query("lpersistence"), None);
        assert_eq!(r.unregister("lpersistence"), None);
        assert_eq!(r.generation(), 4);
        // A name change does not touch the config generation, and the other way round.
        assert_eq!(r.config_generation(), 0);
        r.reload(cfg("x = \"h:1\""));
        assert_eq!(r.generation(), 4);
    }

    #[test]
    fn bad_names_are_refused() {
        let r = Registry::new(ClusterConfig::default());
        for name in ["", "@lobby", "a\nb"] {
            match r.register(name, 1) {
                Err(e @ RegistryError::BadName { .. }) => {
                    assert!(e.to_string().starts_with("cannot register name"), "{e}")
                }
                other => panic!("{name:?}: {other:?}"),
            }
        }
        assert!(r.names().is_empty());
        assert_eq!(r.generation(), 0);
    }

    #[test]
    fn subscribers_see_every_change_in_order() {
        let r = Registry::new(cfg("a = \"h:1\""));
        let mut rx = r.subscribe();
        r.register("svc", 5).unwrap();
        r.register("svc", 6).unwrap();
        r.register("svc", 6).unwrap(); // no change, no event
        r.unregister("svc");
        r.unregister("svc"); // nothing to remove, no event
        let diff = r.reload(cfg("a = false"));
        r.reload(cfg("a = false")); // no change, no event
        assert_eq!(
            rx.try_recv(),
            Ok(RegistryEvent::NameRegistered {
                name: s("svc"),
                addr: 5,
                previous: None
            })
        );
        assert_eq!(
            rx.try_recv(),
            Ok(RegistryEvent::NameRegistered {
                name: s("svc"),
                addr: 6,
                previous: Some(5)
            })
        );
        assert_eq!(
            rx.try_recv(),
            Ok(RegistryEvent::NameUnregistered {
                name: s("svc"),
                addr: 6
            })
        );
        assert_eq!(
            rx.try_recv(),
            Ok(RegistryEvent::ConfigChanged(diff.clone()))
        );
        assert_eq!(diff.marked_down, vec![s("a")]);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        // Clones share state and the channel.
        let clone = r.clone();
        clone.register("other", 1).unwrap();
        assert_eq!(r.query("other"), Some(1));
        assert!(matches!(
            rx.try_recv(),
            Ok(RegistryEvent::NameRegistered { .. })
        ));
    }

    #[tokio::test]
    async fn wait_for_node_resolves_on_reload() {
        let r = Registry::new(cfg("a = \"h:1\""));
        let waiter = {
            let r = r.clone();
            tokio::spawn(async move { r.wait_for_node("late", Duration::from_secs(30)).await })
        };
        // An unrelated reload wakes the waiter, which keeps waiting.
        tokio::task::yield_now().await;
        r.reload(cfg("other = \"h:2\""));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        r.reload(cfg("late = \"127.0.0.1:7\""));
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter should wake on the reload")
            .unwrap();
        assert_eq!(got.unwrap(), "127.0.0.1:7");
        // Already present: answers at once, even with a zero timeout.
        assert_eq!(r.wait_for_node("a", Duration::ZERO).await.unwrap(), "h:1");
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_node_times_out_as_unknown() {
        let r = Registry::new(cfg("a = \"h:1\""));
        let started = tokio::time::Instant::now();
        let e = r
            .wait_for_node("ghost", Duration::from_secs(3))
            .await
            .unwrap_err();
        assert!(started.elapsed() >= Duration::from_secs(3));
        assert_eq!(
            e,
            RegistryError::UnknownNode {
                node: s("ghost"),
                known: vec![s("a")]
            }
        );
        let e = r.wait_for_node("ghost", Duration::ZERO).await.unwrap_err();
        assert!(matches!(e, RegistryError::UnknownNode { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_node_fails_at_once_when_down() {
        let r = Registry::new(cfg("down = false"));
        let started = tokio::time::Instant::now();
        let e = r
            .wait_for_node("down", Duration::from_secs(60))
            .await
            .unwrap_err();
        assert_eq!(e, RegistryError::NodeDown { node: s("down") });
        assert_eq!(started.elapsed(), Duration::ZERO);

        // Marked down while waiting: the waiter fails then, not at its timeout.
        let waiter = {
            let r = r.clone();
            tokio::spawn(async move { r.wait_for_node("late", Duration::from_secs(60)).await })
        };
        tokio::task::yield_now().await;
        r.reload(cfg("late = false"));
        let e = waiter.await.unwrap().unwrap_err();
        assert_eq!(e, RegistryError::NodeDown { node: s("late") });
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    #[test]
    fn registry_is_shared_across_threads() {
        let r = Registry::new(ClusterConfig::default());
        let handles: Vec<_> = (0..4u32)
            .map(|t| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for i in 0..100u32 {
                        r.register(&format!("t{t}-{i}"), t * 1000 + i).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(r.names().len(), 400);
        assert_eq!(r.generation(), 400);
        assert_eq!(r.query("t3-99"), Some(3099));
    }
}
