//! [`EtcdStore`]: one connection to etcd under one key prefix; the config key (read,
//! guarded write, watch). Acks and membership are in `acks.rs` and `members.rs`.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use bee_registry::{ClusterConfig, ConfigForm, RegistryError, MAX_CONFIG_BYTES};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, Txn, TxnOp, WatchOptions,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::EtcdError;
use crate::url::EtcdUrl;

/// How long [`EtcdStore::connect`] waits for etcd to answer.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one get/put/lease request may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// First wait before a watch is opened again after an error; doubles up to
/// [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between two attempts to open a watch again: while etcd is away a new
/// connection is dialled at least this often, so a watch is back within about this long
/// of the network healing.
pub const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// The most dials to etcd in flight at once while a watch or a membership reconnects.
const MAX_DIALS: usize = 4;
/// A dial in flight this long, with [`MAX_DIALS`] of them, makes room for a new one:
/// long enough for a loaded etcd to answer, short enough that a healed network is used
/// within a second or so.
const STALE_DIAL: Duration = Duration::from_secs(2);
/// How often a reconnect knocks (a bare TCP connect) to learn that the network to etcd
/// is back: see [`EtcdStore::redial`].
const KNOCK_EVERY: Duration = Duration::from_millis(100);
/// How many updates a watch keeps for a slow reader before it waits for it.
pub const WATCH_CAPACITY: usize = 16;

/// Timeouts of an [`EtcdStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EtcdOptions {
    /// How long `connect` waits for etcd to answer.
    pub connect_timeout: Duration,
    /// How long one request may take.
    pub request_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// A cluster's share of etcd: the keys under one prefix. Cloning is cheap and clones share
/// the connection.
#[derive(Clone)]
pub struct EtcdStore {
    pub(crate) client: Client,
    pub(crate) url: EtcdUrl,
    pub(crate) options: EtcdOptions,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("url", &self.url.to_string())
            .field("options", &self.options)
            .finish()
    }
}

/// The config text stored at `PREFIX/config`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredConfig {
    /// The text as stored (Lua or TOML form).
    pub text: String,
    /// The text parsed.
    pub config: ClusterConfig,
    /// etcd's revision of the write that stored it (the key's `mod_revision`).
    pub revision: i64,
}

/// One change of the config key, as [`ConfigWatch::next`] yields it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigUpdate {
    /// A config was stored (or was there when the watch started).
    Config(StoredConfig),
    /// A text was stored that does not parse or pass the checks: a node answers it with
    /// a failed ack and keeps its running config.
    Invalid {
        /// etcd's revision of that write.
        revision: i64,
        /// What is wrong ([`EtcdError::Config`], [`EtcdError::BadValue`]).
        error: EtcdError,
    },
    /// The config key was deleted.
    Deleted {
        /// etcd's revision of the delete.
        revision: i64,
    },
}

/// Run `fut` with `timeout`, turning both failure kinds into [`EtcdError`].
pub(crate) async fn timed<T>(
    op: &'static str,
    key: &str,
    timeout: Duration,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(EtcdError::Request {
            op,
            key: key.to_string(),
            reason: e.to_string(),
        }),
        Err(_) => Err(EtcdError::Timeout {
            op,
            key: key.to_string(),
            timeout,
        }),
    }
}

/// Parse a config value read from `key`.
pub(crate) fn parse_config(
    key: &str,
    value: &[u8],
    revision: i64,
) -> Result<StoredConfig, EtcdError> {
    if value.len() > MAX_CONFIG_BYTES {
        return Err(EtcdError::Config {
            key: key.to_string(),
            error: RegistryError::TooLarge {
                bytes: value.len() as u64,
                max: MAX_CONFIG_BYTES,
            },
        });
    }
    let text = std::str::from_utf8(value).map_err(|e| EtcdError::BadValue {
        key: key.to_string(),
        reason: format!("the config is not UTF-8 text ({e})"),
    })?;
    let config = ClusterConfig::parse_any(text)
        .and_then(|c| c.validate().map(|()| c))
        .map_err(|error| EtcdError::Config {
            key: key.to_string(),
            error,
        })?;
    Ok(StoredConfig {
        text: text.to_string(),
        config,
        revision,
    })
}

impl EtcdStore {
    /// Connect to the etcd named by `url` (`etcd://host:port/prefix`), waiting at most
    /// [`DEFAULT_CONNECT_TIMEOUT`] for it to answer.
    pub async fn connect(url: &str) -> Result<EtcdStore, EtcdError> {
        Self::connect_with(url, EtcdOptions::default()).await
    }

    /// [`EtcdStore::connect`] with other timeouts.
    pub async fn connect_with(url: &str, options: EtcdOptions) -> Result<EtcdStore, EtcdError> {
        let url = EtcdUrl::parse(url)?;
        let timeout = options.connect_timeout;
        let unreachable = |reason: String| EtcdError::Unreachable {
            endpoint: url.endpoint.clone(),
            timeout,
            reason,
        };
        let connect_options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            // Notice a dead server on an idle watch or lease stream.
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            // A member cut off from the majority must not serve stale watches.
            .with_require_leader(true);
        let attempt = async {
            let mut client = Client::connect([url.endpoint.as_str()], Some(connect_options))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            // The channel connects lazily: ask something to know etcd is there.
            client
                .status()
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            Ok::<Client, EtcdError>(client)
        };
        let client = match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result?,
            Err(_) => return Err(unreachable("timed out".to_string())),
        };
        tracing::debug!("connected to {url}");
        Ok(EtcdStore {
            client,
            url,
            options,
        })
    }

    /// The parsed URL (endpoint, prefix, key names).
    pub fn url(&self) -> &EtcdUrl {
        &self.url
    }

    /// The timeouts in use.
    pub fn options(&self) -> EtcdOptions {
        self.options
    }

    /// The config stored at `PREFIX/config`, or `None` when the key is absent. A stored
    /// text that does not parse is an [`EtcdError::Config`] naming the key and the line.
    pub async fn get_config(&self) -> Result<Option<StoredConfig>, EtcdError> {
        let key = self.url.config_key();
        let mut client = self.client.clone();
        let resp = timed(
            "get",
            &key,
            self.options.request_timeout,
            client.get(key.as_str(), None),
        )
        .await?;
        match resp.kvs().first() {
            None => Ok(None),
            Some(kv) => parse_config(&key, kv.value(), kv.mod_revision()).map(Some),
        }
    }

    /// Store `config` at `PREFIX/config` in `form` and return etcd's revision of the write.
    /// Checked first ([`ClusterConfig::validate`]); unless `force`, refused when the stored
    /// config has a higher version, or the same non-zero version with other content
    /// ([`EtcdError::Refused`]). Storing the very config already there writes nothing and
    /// returns the stored revision. The write is conditional on the key not having changed
    /// since it was read ([`EtcdError::Raced`] otherwise).
    pub async fn put_config(
        &self,
        config: &ClusterConfig,
        form: ConfigForm,
        force: bool,
    ) -> Result<i64, EtcdError> {
        let key = self.url.config_key();
        config
            .validate()
            .map_err(|error| EtcdError::Config { key, error })?;
        self.put_config_text(&config.to_string_in(form), force)
            .await
    }

    /// Parse `text` (either form) and store it as [`EtcdStore::put_config`] does, keeping
    /// the text as written (comments included) rather than bee's rendering.
    pub async fn put_config_text(&self, text: &str, force: bool) -> Result<i64, EtcdError> {
        let key = self.url.config_key();
        let parsed = parse_config(&key, text.as_bytes(), 0)?;
        let mut client = self.client.clone();
        let timeout = self.options.request_timeout;
        let current = timed("get", &key, timeout, client.get(key.as_str(), None)).await?;
        let stored = current.kvs().first();
        if let Some(old) =
            stored.and_then(|kv| parse_config(&key, kv.value(), kv.mod_revision()).ok())
        {
            if old.text == text {
                return Ok(old.revision);
            }
            let (old_hash, new_hash) = (old.config.content_hash(), parsed.config.content_hash());
            let (old_v, new_v) = (old.config.version, parsed.config.version);
            if !force && new_v < old_v {
                return Err(EtcdError::Refused {
                    key,
                    error: RegistryError::VersionBehind {
                        offered: new_v,
                        running: old_v,
                    },
                });
            }
            if !force && new_v == old_v && new_v != 0 && old_hash != new_hash {
                return Err(EtcdError::Refused {
                    key,
                    error: RegistryError::VersionConflict {
                        version: new_v,
                        offered_hash: new_hash.short(),
                        running_hash: old_hash.short(),
                    },
                });
            }
        }
        let guard = match stored {
            None => Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
            Some(kv) => Compare::mod_revision(key.as_str(), CompareOp::Equal, kv.mod_revision()),
        };
        let txn = Txn::new()
            .when([guard])
            .and_then([TxnOp::put(key.as_str(), text, None)]);
        let resp = timed("put", &key, timeout, client.txn(txn)).await?;
        if !resp.succeeded() {
            return Err(EtcdError::Raced { key });
        }
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Follow the config key: first the config stored now (if any), then every later
    /// write or delete, in etcd's order, each once. On an error (etcd down, watch
    /// cancelled, history compacted) the watch logs one line, connects again
    /// (`EtcdStore::redial`: a new dial 100 ms later, then every 200 ms and 400 ms, then
    /// every 500 ms while etcd is away), reads the key again and resumes from there; writes
    /// made while it was away collapse into the latest one. Stops when the
    /// [`ConfigWatch`] is dropped.
    pub fn watch_config(&self) -> ConfigWatch {
        let (tx, rx) = mpsc::channel(WATCH_CAPACITY);
        let store = self.clone();
        let task = tokio::spawn(async move { store.config_watch_loop(tx).await });
        ConfigWatch { rx, task }
    }

    async fn config_watch_loop(self, tx: mpsc::Sender<ConfigUpdate>) {
        let key = self.url.config_key();
        let mut last = 0i64;
        let mut backoff = MIN_BACKOFF;
        let mut store = self;
        loop {
            match store
                .config_watch_once(&key, &tx, &mut last, &mut backoff)
                .await
            {
                Ok(()) => return, // the reader is gone
                Err(e) => {
                    tracing::warn!("etcd config watch on {key}: {e}; reconnecting in {backoff:?}");
                    store = tokio::select! {
                        s = store.redial(&key, &mut backoff, MAX_BACKOFF) => s,
                        _ = tx.closed() => return,
                    };
                }
            }
        }
    }

    /// A fresh connection to the same etcd, made so that a network that heals is used
    /// at once: the first dial after `backoff`, then a new one every `backoff` (doubling
    /// up to `pace`) without waiting for the ones in flight, at most [`MAX_DIALS`] at once
    /// (the oldest given up for a new one once older than [`STALE_DIAL`]); the first to
    /// connect wins. The old connection may sit in TCP's retransmission
    /// back-off for seconds after the network came back, and a dial that went out while
    /// it was cut waits for a SYN retransmission a second later; the next dial, started
    /// after the heal, connects at once. Each dial may take the store's connect timeout:
    /// a loaded etcd answering slowly is still reached. Tries until it connects.
    ///
    /// Between the dials, a bare TCP connect ("knock") goes out every [`KNOCK_EVERY`]
    /// (to the endpoint's address; a host name is looked up once, in the background):
    /// a SYN and nothing more, closed as soon as it is answered. While the network is
    /// cut none is answered; the first one after the heal is, and a dial starts at once
    /// instead of at its next turn (up to `pace`, or a SYN retransmission, later). A
    /// loaded etcd answers knocks at once (the kernel completes the handshake), so there
    /// knocking stops after the first one and only the paced dials go on.
    pub(crate) async fn redial(
        &self,
        what: &str,
        backoff: &mut Duration,
        pace: Duration,
    ) -> EtcdStore {
        let options = self.options;
        let url = self.url.to_string();
        let host_port = self
            .url
            .endpoint
            .split_once("://")
            .map_or(self.url.endpoint.as_str(), |(_, a)| a)
            .to_string();
        // Knocks go to an address, not a name: a name is looked up once, in the
        // background (a lookup may hang while the network is cut; then no knocks, only
        // the paced dials).
        let mut knock_at: Option<std::net::SocketAddr> = host_port.parse().ok();
        let mut lookup = knock_at.is_none().then(|| {
            let name = host_port.clone();
            tokio::spawn(async move {
                tokio::time::timeout(STALE_DIAL, tokio::net::lookup_host(name))
                    .await
                    .ok()?
                    .ok()?
                    .next()
            })
        });
        let mut dials = tokio::task::JoinSet::new();
        // The dials in flight, oldest first. With MAX_DIALS of them waiting on a cut
        // network, the oldest is given up once it is older than STALE_DIAL: its SYN was
        // sent into the cut and its next retransmission is seconds away, while a new
        // dial after the heal connects at once.
        type Started = VecDeque<(tokio::time::Instant, tokio::task::AbortHandle)>;
        let mut started: Started = VecDeque::new();
        let dial = |dials: &mut tokio::task::JoinSet<_>,
                    started: &mut Started,
                    now: tokio::time::Instant| {
            if started.len() >= MAX_DIALS {
                if let Some((_, h)) = started.pop_front() {
                    h.abort();
                }
            }
            let url = url.clone();
            let h = dials.spawn(async move { EtcdStore::connect_with(&url, options).await });
            started.push_back((now, h));
        };
        let mut knocks = tokio::task::JoinSet::new();
        let mut knocking = true;
        let mut next_dial = tokio::time::Instant::now() + *backoff;
        let mut next_knock = next_dial + KNOCK_EVERY;
        let fresh = loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next_dial) => {
                    let now = tokio::time::Instant::now();
                    started.retain(|(_, h)| !h.is_finished());
                    let oldest = started.front().map(|(t, _)| *t);
                    match oldest {
                        Some(t) if started.len() >= MAX_DIALS && now < t + STALE_DIAL => {
                            next_dial = t + STALE_DIAL;
                        }
                        _ => {
                            dial(&mut dials, &mut started, now);
                            *backoff = (*backoff * 2).min(pace);
                            next_dial = now + *backoff;
                        }
                    }
                }
                found = async { lookup.as_mut().expect("guarded").await }, if lookup.is_some() => {
                    lookup = None;
                    knock_at = found.ok().flatten();
                }
                _ = tokio::time::sleep_until(next_knock), if knocking && knock_at.is_some() => {
                    let addr = knock_at.expect("guarded");
                    knocks.spawn(async move {
                        tokio::time::timeout(STALE_DIAL, tokio::net::TcpStream::connect(addr)).await
                    });
                    // From now, not from the last turn: after a slow lookup, no burst.
                    next_knock = tokio::time::Instant::now() + KNOCK_EVERY;
                }
                Some(done) = knocks.join_next(), if !knocks.is_empty() => {
                    if let Ok(Ok(Ok(_))) = done {
                        // Answered: the way to etcd is open now. Dial at once.
                        tracing::debug!("etcd {what}: {host_port} answers; dialling at once");
                        knocking = false;
                        knocks.abort_all();
                        let now = tokio::time::Instant::now();
                        dial(&mut dials, &mut started, now);
                        next_dial = now + *backoff;
                    }
                }
                Some(done) = dials.join_next(), if !dials.is_empty() => match done {
                    Ok(Ok(fresh)) => break fresh,
                    Ok(Err(e)) => tracing::debug!("etcd {what}: reconnect failed: {e}"),
                    Err(e) => tracing::debug!("etcd {what}: reconnect task: {e}"),
                },
            }
        };
        dials.abort_all();
        knocks.abort_all();
        if let Some(l) = lookup {
            l.abort();
        }
        EtcdStore { options, ..fresh }
    }

    /// One read-then-watch round. `Ok` only when the reader dropped the watch.
    async fn config_watch_once(
        &self,
        key: &str,
        tx: &mpsc::Sender<ConfigUpdate>,
        last: &mut i64,
        backoff: &mut Duration,
    ) -> Result<(), EtcdError> {
        let mut client = self.client.clone();
        let timeout = self.options.request_timeout;
        let resp = timed("get", key, timeout, client.get(key, None)).await?;
        let read_rev = resp.header().map_or(0, |h| h.revision());
        if let Some(kv) = resp.kvs().first() {
            if kv.mod_revision() > *last {
                *last = kv.mod_revision();
                let update = match parse_config(key, kv.value(), kv.mod_revision()) {
                    Ok(c) => ConfigUpdate::Config(c),
                    Err(error) => ConfigUpdate::Invalid {
                        revision: kv.mod_revision(),
                        error,
                    },
                };
                if tx.send(update).await.is_err() {
                    return Ok(());
                }
            }
        }
        let options = WatchOptions::new()
            .with_start_revision(read_rev + 1)
            .with_progress_notify();
        let mut stream = timed("watch", key, timeout, client.watch(key, Some(options))).await?;
        *backoff = MIN_BACKOFF;
        loop {
            let message = tokio::select! {
                m = stream.message() => m,
                _ = tx.closed() => return Ok(()),
            };
            let resp = match message {
                Ok(Some(resp)) => resp,
                Ok(None) => return Err(watch_ended(key, "the watch stream ended")),
                Err(e) => return Err(watch_ended(key, &e.to_string())),
            };
            if resp.canceled() {
                let reason = if resp.compact_revision() > 0 {
                    format!(
                        "history compacted up to revision {}",
                        resp.compact_revision()
                    )
                } else {
                    format!("cancelled by etcd: {}", resp.cancel_reason())
                };
                return Err(watch_ended(key, &reason));
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                let revision = kv.mod_revision();
                if revision <= *last {
                    continue;
                }
                *last = revision;
                let update = match event.event_type() {
                    EventType::Put => match parse_config(key, kv.value(), revision) {
                        Ok(c) => ConfigUpdate::Config(c),
                        Err(error) => ConfigUpdate::Invalid { revision, error },
                    },
                    EventType::Delete => ConfigUpdate::Deleted { revision },
                };
                if tx.send(update).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

pub(crate) fn watch_ended(key: &str, reason: &str) -> EtcdError {
    EtcdError::Request {
        op: "watch",
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

/// The receiving end of [`EtcdStore::watch_config`]. Dropping it stops the watch.
#[derive(Debug)]
pub struct ConfigWatch {
    rx: mpsc::Receiver<ConfigUpdate>,
    task: JoinHandle<()>,
}

impl ConfigWatch {
    /// The next update; `None` only if the watch task ended (it does not on its own).
    pub async fn next(&mut self) -> Option<ConfigUpdate> {
        self.rx.recv().await
    }

    /// [`ConfigWatch::next`] with a timeout: `None` when nothing came within it.
    pub async fn next_within(&mut self, timeout: Duration) -> Option<ConfigUpdate> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for ConfigWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
