//! Local services: addresses, mailboxes, and the three ways a message moves inside one
//! node — `send` (no reply), `call` (awaits the reply) and `redirect` (hand a message on
//! with its caller attached, so the next service's reply goes straight back).
//!
//! A service is a value implementing [`Service`]. [`Node::spawn`] gives it an address
//! (a `u32`, printed like skynet's `:0000000a`), a bounded mailbox and its own task. The
//! task takes one message at a time, runs the handler to completion, and answers the
//! caller if the caller waits. A handler that returns an error, or panics, answers the
//! caller with that error text; the service keeps running. When a service stops, every
//! caller still queued in its mailbox gets [`CallError::ServiceGone`]: nothing waits
//! forever and nothing is dropped without a word.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::{oneshot, watch};

pub use crate::error::{fmt_addr, Addr, CallError, ServiceError};
use crate::fasthash::FastBuild;
use crate::mailbox::{self, TrySendError};
use crate::runner;

/// What a handler returns: `Ok(Some(bytes))` is the reply (a skynet.pack payload),
/// `Ok(None)` means "no reply values" (a waiting caller gets an empty reply), `Err`
/// answers a waiting caller with the error text (and is logged for a push).
pub type HandleResult = Result<Option<Bytes>, ServiceError>;

/// skynet's message type numbers (`PTYPE_*`), carried by every [`Message`].
pub mod ptype {
    /// Raw text or bytes (a C service's frames to CServiceProxy, `"text"` redirects).
    pub const TEXT: u8 = 0;
    /// A response (in a C service: an rpc reply, or a timer firing when the source is 0).
    pub const RESPONSE: u8 = 1;
    /// An error notice.
    pub const ERROR: u8 = 7;
    /// Client traffic.
    pub const CLIENT: u8 = 3;
    /// A skynet.pack payload: what Lua-style services and the cluster exchange.
    pub const LUA: u8 = 10;
    /// bee's own: a hot-update request to the service itself (export or import its
    /// state; see [`super::Service::export_state`]). Only the node sends it (source 0);
    /// from anyone else it is an ordinary message.
    pub const HANDOVER: u8 = 0xFE;
}

/// `Message::session` of a [`ptype::HANDOVER`] message asking for the state.
const HANDOVER_EXPORT: i32 = 1;
/// `Message::session` of a [`ptype::HANDOVER`] message carrying the predecessor's state.
const HANDOVER_IMPORT: i32 = 2;

/// One message as a service sees it.
#[derive(Debug, Clone)]
pub struct Message {
    /// The sender's address (0 when the message came from outside any service).
    pub source: Addr,
    /// skynet's message type ([`ptype`]); [`ptype::LUA`] for ordinary traffic.
    pub ptype: u8,
    /// The sender's own session number, for senders that match replies themselves (C
    /// services); 0 otherwise. bee's own calls wait on a reply slot, not a session.
    pub session: i32,
    /// The payload; for [`ptype::LUA`] the skynet.pack encoding of the arguments.
    pub payload: Bytes,
}

impl Message {
    /// An ordinary message: a skynet.pack payload from `source`.
    pub fn new(source: Addr, payload: Bytes) -> Message {
        Message {
            source,
            ptype: ptype::LUA,
            session: 0,
            payload,
        }
    }
}

type ReplySender = oneshot::Sender<Result<Bytes, CallError>>;

/// A message in a mailbox, with the caller's reply slot when the caller waits.
pub(crate) struct Envelope {
    msg: Message,
    reply: Option<ReplySender>,
}

/// The reply slot of a message, taken out of the [`Context`] to answer later (or from
/// another task). Dropping it unanswered tells the caller the service did not reply.
#[derive(Debug)]
pub struct Responder {
    tx: ReplySender,
    service: String,
}

impl Responder {
    /// Answer with a reply payload.
    pub fn ok(self, payload: Bytes) {
        let _ = self.tx.send(Ok(payload));
    }

    /// Answer with an error text.
    pub fn err(self, message: impl fmt::Display) {
        let _ = self.tx.send(Err(CallError::Failed {
            service: self.service,
            message: message.to_string(),
        }));
    }

    /// Answer with an error as it is.
    pub fn fail(self, error: CallError) {
        let _ = self.tx.send(Err(error));
    }

    /// A reply slot whose answer arrives on the returned receiver, to be passed on to
    /// the real slot with [`Responder::relay`] (a handler that takes its reply before the
    /// runtime hands the real slot over).
    pub(crate) fn pair(
        service: String,
    ) -> (Responder, oneshot::Receiver<Result<Bytes, CallError>>) {
        let (tx, rx) = oneshot::channel();
        (Responder { tx, service }, rx)
    }

    /// Answer with whatever `rx` gets: at once if it is there, else from a task that
    /// ends when it arrives, when its sender is dropped (the caller is then told the
    /// service did not reply) or when the caller stops waiting.
    pub(crate) fn relay(self, mut rx: oneshot::Receiver<Result<Bytes, CallError>>) {
        use tokio::sync::oneshot::error::TryRecvError;
        match rx.try_recv() {
            Ok(answer) => {
                let _ = self.tx.send(answer);
            }
            Err(TryRecvError::Closed) => {}
            Err(TryRecvError::Empty) => {
                let Ok(rt) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                let mut tx = self.tx;
                rt.spawn(async move {
                    tokio::select! {
                        answer = &mut rx => {
                            if let Ok(answer) = answer {
                                let _ = tx.send(answer);
                            }
                        }
                        _ = tx.closed() => {}
                    }
                });
            }
        }
    }
}

/// A service: state plus a handler run for one message at a time.
///
/// Implement it with an `async fn`, no lifetimes to write:
///
/// ```
/// use bee_runtime::{Context, HandleResult, Message, Service};
///
/// struct Counter(u64);
///
/// impl Service for Counter {
///     async fn handle(&mut self, _ctx: &mut Context, msg: Message) -> HandleResult {
///         self.0 += 1;
///         Ok(Some(msg.payload))
///     }
/// }
/// ```
///
/// The handler may await calls to other services; the service takes its next message
/// only when the handler returns. Most game code does not implement this trait but
/// builds a [`crate::Dispatcher`] (command table and protobuf handlers).
pub trait Service: Send + 'static {
    /// Handle one message. `ctx` knows the caller's reply slot, this service's address,
    /// and the node.
    fn handle(
        &mut self,
        ctx: &mut Context,
        msg: Message,
    ) -> impl Future<Output = HandleResult> + Send;

    /// Hot update (opt-in): the state this service hands to the same service (same
    /// name, or same label for unnamed ones such as shard workers) in the node's next
    /// process. Asked after every message already in its mailbox was handled; `None`,
    /// the default, means the successor starts fresh. Any encoding (serde is fine): only
    /// [`Service::import_state`] of the next version reads it.
    fn export_state(&mut self) -> Option<Vec<u8>> {
        None
    }

    /// Hot update (opt-in): take the predecessor's state, before the first message. The
    /// default refuses (the service starts fresh and the node logs why).
    fn import_state(&mut self, state: &[u8]) -> Result<(), ServiceError> {
        let _ = state;
        Err(ServiceError::msg(
            "this service does not take state across a handover",
        ))
    }
}

/// The object-safe face of every [`Service`], for a node to hold services of many
/// types (implemented for every `Service`; nothing to implement by hand).
pub trait DynService: Send + 'static {
    /// [`Service::handle`], boxed.
    fn handle_dyn<'a>(
        &'a mut self,
        ctx: &'a mut Context,
        msg: Message,
    ) -> BoxFuture<'a, HandleResult>;

    /// [`Service::export_state`].
    fn export_state_dyn(&mut self) -> Option<Vec<u8>>;

    /// [`Service::import_state`].
    fn import_state_dyn(&mut self, state: &[u8]) -> Result<(), ServiceError>;
}

impl<T: Service> DynService for T {
    fn handle_dyn<'a>(
        &'a mut self,
        ctx: &'a mut Context,
        msg: Message,
    ) -> BoxFuture<'a, HandleResult> {
        Box::pin(self.handle(ctx, msg))
    }

    fn export_state_dyn(&mut self) -> Option<Vec<u8>> {
        self.export_state()
    }

    fn import_state_dyn(&mut self, state: &[u8]) -> Result<(), ServiceError> {
        self.import_state(state)
    }
}

/// Answer a [`ptype::HANDOVER`] message: export (reply: `1` + state, or `0` for none)
/// or import (reply empty, or the refusal).
fn handover(service: &mut BoxService, msg: &Message) -> Result<Bytes, ServiceError> {
    match msg.session {
        HANDOVER_EXPORT => Ok(match service.export_state_dyn() {
            Some(mut state) => {
                state.insert(0, 1);
                Bytes::from(state)
            }
            None => Bytes::from_static(&[0]),
        }),
        HANDOVER_IMPORT => service
            .import_state_dyn(&msg.payload)
            .map(|()| Bytes::new()),
        other => Err(ServiceError::msg(format!(
            "unknown handover request {other}"
        ))),
    }
}

/// A service of any type, boxed (what [`Node::spawn_boxed`] and worker factories take).
pub type BoxService = Box<dyn DynService>;

/// The handler's view of its service and of the message being handled.
pub struct Context {
    node: Node,
    addr: Addr,
    label: Arc<str>,
    reply: Option<ReplySender>,
    source: Addr,
    exit: bool,
    /// Messages left in the mailbox when the current one was taken out.
    queued: usize,
    /// The mailbox was found empty before the current message (the service was idle).
    found_empty: bool,
}

impl Context {
    /// The node this service runs on.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// This service's address.
    pub fn addr(&self) -> Addr {
        self.addr
    }

    /// The address of the service that sent the message being handled (0 when it did
    /// not come from a service: a remote peer, a tool, the node itself), as skynet's
    /// `source`.
    pub fn source(&self) -> Addr {
        self.source
    }

    /// Messages still waiting in this service's mailbox when the message being handled
    /// was taken out of it (skynet's queue length right after a pop).
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Whether the service found its mailbox empty (had nothing to do) after its previous
    /// message and before this one. True for the first message.
    pub fn found_empty(&self) -> bool {
        self.found_empty
    }

    /// This service's label (its kind, e.g. `echo`).
    pub fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn label_arc(&self) -> Arc<str> {
        self.label.clone()
    }

    /// Whether the current message's sender waits for a reply.
    pub fn wants_reply(&self) -> bool {
        self.reply.is_some()
    }

    /// Take the current message's reply slot to answer later; the runtime will then not
    /// answer it when the handler returns.
    pub fn take_reply(&mut self) -> Option<Responder> {
        self.reply.take().map(|tx| Responder {
            tx,
            service: service_name(&self.label, self.addr),
        })
    }

    /// Stop this service once the current handler returns.
    pub fn exit(&mut self) {
        self.exit = true;
    }

    /// Call a local service from this one (source = this service).
    pub async fn call(&self, target: Addr, payload: Bytes) -> Result<Bytes, CallError> {
        self.node.call_from(self.addr, target, payload, None).await
    }

    /// Send to a local service from this one, no reply.
    pub async fn send(&self, target: Addr, payload: Bytes) -> Result<(), CallError> {
        self.node.send_from(self.addr, target, payload).await
    }

    /// Forward `msg` untouched to `target`, with the current caller attached: the target's
    /// reply goes straight to whoever sent the message here (skynet.redirect). If the
    /// target cannot take it, the caller is answered with that error.
    pub async fn redirect(&mut self, target: Addr, msg: Message) -> Result<(), CallError> {
        let reply = self.reply.take();
        match self.node.deliver(target, msg, reply).await {
            Ok(()) => Ok(()),
            Err((err, reply)) => {
                if let Some(tx) = reply {
                    let _ = tx.send(Err(err.clone()));
                }
                Err(err)
            }
        }
    }
}

/// Settings of a node's local runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Messages a mailbox holds before senders wait (back-pressure).
    pub mailbox: usize,
    /// How long a local `call` waits for its reply by default.
    pub call_timeout: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            mailbox: 4096,
            call_timeout: Duration::from_secs(30),
        }
    }
}

/// One line of the node's service list.
#[derive(Debug, Clone)]
pub struct ServiceInfo {
    /// The service's address.
    pub addr: Addr,
    /// What kind of service it is (`echo`, `bee_clustersender(lobby)`, …).
    pub label: String,
    /// Local names pointing at it.
    pub names: Vec<String>,
    /// Messages handled so far.
    pub handled: u64,
    /// Time spent in its handler so far (an async handler's awaits included: the
    /// service takes no other message meanwhile).
    pub busy: Duration,
    /// Messages waiting in its mailbox.
    pub queued: usize,
    /// How long it has run.
    pub uptime: Duration,
}

impl ServiceInfo {
    /// What identifies the service across processes of the node (hot update): its first
    /// name, or its label when it has none (shard workers: `activity[3]`).
    pub fn state_key(&self) -> String {
        self.names
            .first()
            .cloned()
            .unwrap_or_else(|| self.label.clone())
    }
}

struct Entry {
    tx: mailbox::Sender<Envelope>,
    label: Arc<str>,
    started: Instant,
}

struct Inner {
    name: String,
    config: RuntimeConfig,
    services: DashMap<Addr, Entry, FastBuild>,
    names: DashMap<String, Addr, FastBuild>,
    /// Bumped on every name change, so caches of name lookups know when to refresh.
    names_generation: AtomicU64,
    /// Carries `names_generation`, for tasks that wait for a name change.
    names_watch: watch::Sender<u64>,
    next_addr: AtomicU32,
    /// The first address this node handed out (see [`Node::set_first_addr`]).
    first_addr: AtomicU32,
    /// Set by the first spawn: the first address can no longer change.
    spawned: AtomicBool,
    stopping: AtomicBool,
    extensions: DashMap<std::any::TypeId, Arc<dyn Any + Send + Sync>>,
    shutdown_hooks: Mutex<Vec<ShutdownHook>>,
    /// Service labels shared by the services that have them (see [`Node::label`]).
    labels: Mutex<std::collections::HashSet<Arc<str>>>,
    /// Runs the services started with [`Node::spawn_boxed_on_runners`] (made by the first).
    runners: OnceLock<Arc<runner::Pool>>,
}

type ShutdownHook = Box<dyn FnOnce() + Send>;

/// How many distinct labels a node shares between its services.
const MAX_LABELS: usize = 256;

/// Service addresses use the low 24 bits (skynet's top 8 bits, the harbor, stay 0).
const ADDR_MASK: Addr = 0x00FF_FFFF;

/// A node's local runtime: its services, their names, and how to reach them. Cheap to
/// clone; every clone is the same node.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.inner.name)
            .field("services", &self.inner.services.len())
            .finish()
    }
}

pub(crate) fn service_name(label: &str, addr: Addr) -> String {
    format!("{label}{}", fmt_addr(addr))
}

impl Node {
    /// A new, empty node runtime named `name` (the node's cluster name).
    pub fn new(name: impl Into<String>, config: RuntimeConfig) -> Node {
        Node {
            inner: Arc::new(Inner {
                name: name.into(),
                config,
                services: DashMap::default(),
                names: DashMap::default(),
                names_generation: AtomicU64::new(0),
                names_watch: watch::channel(0).0,
                next_addr: AtomicU32::new(1),
                first_addr: AtomicU32::new(1),
                spawned: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
                extensions: DashMap::new(),
                shutdown_hooks: Mutex::new(Vec::new()),
                labels: Mutex::new(std::collections::HashSet::new()),
                runners: OnceLock::new(),
            }),
        }
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Start handing out addresses at `first` (its low 24 bits; 0 becomes 1) instead of
    /// 1, so two runs of one node do not hand out the same addresses (the cluster layer
    /// derives `first` from the node's incarnation). Only before the first service is
    /// spawned: returns false, changing nothing, afterwards.
    pub fn set_first_addr(&self, first: Addr) -> bool {
        if self.inner.spawned.load(Ordering::Acquire) {
            return false;
        }
        let first = (first & ADDR_MASK).max(1);
        self.inner.first_addr.store(first, Ordering::Release);
        self.inner.next_addr.store(first, Ordering::Release);
        true
    }

    /// The first address this node handed out (or will hand out).
    pub fn first_addr(&self) -> Addr {
        self.inner.first_addr.load(Ordering::Acquire)
    }

    /// Whether this run of the node handed out `addr` (alive or since stopped): the
    /// addresses from [`Node::first_addr`] up to the last one spawned, counted in the
    /// 24-bit address space. An address this run never handed out came from elsewhere,
    /// e.g. from an earlier run of the node.
    pub fn handed_out(&self, addr: Addr) -> bool {
        if addr == 0 || addr & !ADDR_MASK != 0 || !self.inner.spawned.load(Ordering::Acquire) {
            return false;
        }
        let first = self.inner.first_addr.load(Ordering::Acquire);
        let next = self.inner.next_addr.load(Ordering::Acquire);
        let issued = next.wrapping_sub(first) & ADDR_MASK;
        let offset = addr.wrapping_sub(first) & ADDR_MASK;
        // A counter that went all the way round has handed out every address.
        next.wrapping_sub(first) > ADDR_MASK || offset < issued
    }

    /// The runtime settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Start `service` on its own task; returns its new address.
    pub fn spawn(&self, label: &str, service: impl Service) -> Addr {
        self.spawn_boxed(label, Box::new(service))
    }

    /// Start a boxed service; returns its new address.
    pub fn spawn_boxed(&self, label: &str, service: BoxService) -> Addr {
        self.spawn_boxed_with_mailbox(label, service, self.inner.config.mailbox)
    }

    /// Start a boxed service whose mailbox holds `mailbox` messages (at least 1) instead
    /// of the node's [`RuntimeConfig::mailbox`]; returns its new address. Room is taken
    /// as messages arrive, so a large bound costs nothing while the mailbox is short.
    pub fn spawn_boxed_with_mailbox(
        &self,
        label: &str,
        service: BoxService,
        mailbox: usize,
    ) -> Addr {
        self.spawn_on(label, service, mailbox, false)
    }

    /// Start a boxed service like [`Node::spawn_boxed_with_mailbox`], run by the node's
    /// runners instead of a task of its own (bee-runtime's `runner` module): for services that
    /// mostly talk to each other, as skynet's C and Lua services do, a message from one
    /// runner service to another wakes no other thread.
    pub fn spawn_boxed_on_runners(&self, label: &str, service: BoxService, mailbox: usize) -> Addr {
        self.spawn_on(label, service, mailbox, true)
    }

    /// `label` as an `Arc<str>`, shared by the services that have it (thousands of Lua
    /// services are all `snlua`), for the first [`MAX_LABELS`] labels the node sees.
    fn label(&self, label: &str) -> Arc<str> {
        let mut labels = self
            .inner
            .labels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(l) = labels.get(label) {
            return l.clone();
        }
        let l: Arc<str> = Arc::from(label);
        if labels.len() < MAX_LABELS {
            labels.insert(l.clone());
        }
        l
    }

    fn spawn_on(&self, label: &str, service: BoxService, mailbox: usize, runners: bool) -> Addr {
        self.inner.spawned.store(true, Ordering::Release);
        let (tx, rx) = mailbox::channel(mailbox);
        let label = self.label(label);
        let mut entry = Some(Entry {
            tx,
            label: label.clone(),
            started: Instant::now(),
        });
        // 24 bits (skynet's harbor byte stays 0); 0 is never a service. Once the counter
        // has gone round, an address still in use is skipped (as skynet's handles are):
        // a long-lived service keeps its address however many come and go after it.
        let mut tries: Addr = 0;
        let addr = loop {
            let a = self.inner.next_addr.fetch_add(1, Ordering::Relaxed) & ADDR_MASK;
            tries += 1;
            assert!(
                tries <= ADDR_MASK + 1,
                "node {}: all {ADDR_MASK} service addresses are in use",
                self.name()
            );
            if a == 0 {
                continue;
            }
            if let dashmap::mapref::entry::Entry::Vacant(slot) = self.inner.services.entry(a) {
                if let Some(e) = entry.take() {
                    slot.insert(e);
                }
                break a;
            }
        };
        tracing::debug!(node = %self.name(), service = %service_name(&label, addr), "service started");
        let ctx = Context {
            node: self.clone(),
            addr,
            label,
            reply: None,
            source: 0,
            exit: false,
            queued: 0,
            found_empty: true,
        };
        let task = run_service(ctx, service, rx);
        if runners {
            self.inner
                .runners
                .get_or_init(|| {
                    let workers = tokio::runtime::Handle::current().metrics().num_workers();
                    runner::Pool::start(workers)
                })
                .spawn(task);
        } else {
            tokio::spawn(task);
        }
        addr
    }

    /// Start a service and give it `name` (see [`Node::set_name`] for which names other
    /// nodes can reach).
    pub fn spawn_named(&self, name: &str, service: impl Service) -> Addr {
        let addr = self.spawn(name, service);
        self.set_name(name, addr);
        addr
    }

    /// Point `name` at `addr` (replacing what it pointed at).
    ///
    /// **One name table, one rule** (skynet's): a name starting with `.` (`.cache`) is
    /// local to this node; any other name (`lpersistence`) is also visible to the
    /// cluster — other nodes reach it as `"@lpersistence"` and find it with `query`.
    pub fn set_name(&self, name: &str, addr: Addr) {
        self.inner.names.insert(name.to_string(), addr);
        self.names_changed();
    }

    fn names_changed(&self) {
        let generation = self.inner.names_generation.fetch_add(1, Ordering::Release) + 1;
        self.inner.names_watch.send_replace(generation);
    }

    /// Remove a name; returns where it pointed.
    pub fn remove_name(&self, name: &str) -> Option<Addr> {
        let removed = self.inner.names.remove(name).map(|(_, a)| a);
        if removed.is_some() {
            self.names_changed();
        }
        removed
    }

    /// The address `name` points at on this node (local and cluster-visible names).
    pub fn resolve(&self, name: &str) -> Result<Addr, CallError> {
        self.inner
            .names
            .get(name)
            .map(|a| *a)
            .ok_or_else(|| CallError::UnknownName {
                name: name.to_string(),
            })
    }

    /// The address of a cluster-visible name (not starting with `.`), as other nodes
    /// see it; `None` for local-only names and names not set.
    pub fn resolve_public(&self, name: &str) -> Option<Addr> {
        if name.starts_with('.') {
            return None;
        }
        self.inner.names.get(name).map(|a| *a)
    }

    /// Every name and where it points, sorted by name.
    pub fn names(&self) -> Vec<(String, Addr)> {
        let mut v: Vec<(String, Addr)> = self
            .inner
            .names
            .iter()
            .map(|e| (e.key().clone(), *e.value()))
            .collect();
        v.sort();
        v
    }

    /// A counter bumped on every name change: a cache of name lookups taken at one
    /// value is valid while the counter still has it.
    pub fn names_generation(&self) -> u64 {
        self.inner.names_generation.load(Ordering::Acquire)
    }

    /// Wakes on every name change (it carries [`Node::names_generation`]), for a task that
    /// tells others about this node's names.
    pub fn watch_names(&self) -> watch::Receiver<u64> {
        self.inner.names_watch.subscribe()
    }

    /// The cluster-visible names (not starting with `.`) and where they point, with the
    /// [`Node::names_generation`] read before them (so a change after the read shows as a
    /// newer generation).
    pub fn public_names(&self) -> (u64, std::collections::BTreeMap<String, Addr>) {
        let generation = self.names_generation();
        let names = self
            .inner
            .names
            .iter()
            .filter(|e| !e.key().starts_with('.'))
            .map(|e| (e.key().clone(), *e.value()))
            .collect();
        (generation, names)
    }

    /// Whether a service lives at `addr`.
    pub fn is_alive(&self, addr: Addr) -> bool {
        self.inner.services.contains_key(&addr)
    }

    /// Messages waiting in the mailbox of the service at `addr` (`None`: no such service).
    pub fn queued(&self, addr: Addr) -> Option<usize> {
        self.inner.services.get(&addr).map(|e| e.tx.len())
    }

    /// The label and address of a service, for messages (`echo:00000004`).
    pub fn describe(&self, addr: Addr) -> String {
        match self.inner.services.get(&addr) {
            Some(e) => service_name(&e.label, addr),
            None => fmt_addr(addr),
        }
    }

    /// Every running service, sorted by address.
    pub fn services(&self) -> Vec<ServiceInfo> {
        let mut names: std::collections::HashMap<Addr, Vec<String>> = Default::default();
        for n in self.inner.names.iter() {
            names.entry(*n.value()).or_default().push(n.key().clone());
        }
        let mut out: Vec<ServiceInfo> = self
            .inner
            .services
            .iter()
            .map(|e| {
                let mut ns = names.remove(e.key()).unwrap_or_default();
                ns.sort();
                ServiceInfo {
                    addr: *e.key(),
                    label: e.label.to_string(),
                    names: ns,
                    handled: e.tx.stats().handled.load(Ordering::Relaxed),
                    busy: Duration::from_nanos(e.tx.stats().busy_ns.load(Ordering::Relaxed)),
                    queued: e.tx.len(),
                    uptime: e.started.elapsed(),
                }
            })
            .collect();
        out.sort_by_key(|s| s.addr);
        out
    }

    /// Hot update: the state of every service that exports one ([`Service::export_state`]),
    /// each taken after the messages already in its mailbox, keyed by
    /// [`ServiceInfo::state_key`]. Services that do not answer within `timeout` are
    /// left out (logged).
    pub async fn export_states(&self, timeout: Duration) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for info in self.services() {
            let key = info.state_key();
            if !seen.insert(key.clone()) {
                tracing::warn!(node = %self.name(), service = %key, "two services share this name or label; neither carries state");
                out.retain(|(k, _)| *k != key);
                continue;
            }
            let msg = Message {
                source: 0,
                ptype: ptype::HANDOVER,
                session: HANDOVER_EXPORT,
                payload: Bytes::new(),
            };
            match self.call_message(info.addr, msg, Some(timeout)).await {
                Ok(b) if b.first() == Some(&1) => out.push((key, b[1..].to_vec())),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(node = %self.name(), service = %key, error = %e, "state not exported; its successor starts fresh")
                }
            }
        }
        out
    }

    /// Hot update: give each service its predecessor's state (by
    /// [`ServiceInfo::state_key`]), before anything else in its mailbox. Returns what
    /// happened to each state: taken, or why not (no such service, refused).
    pub async fn import_states(
        &self,
        states: Vec<(String, Vec<u8>)>,
        timeout: Duration,
    ) -> Vec<(String, Result<(), String>)> {
        let by_key: std::collections::HashMap<String, Addr> = self
            .services()
            .into_iter()
            .map(|i| (i.state_key(), i.addr))
            .collect();
        let mut out = Vec::new();
        for (key, state) in states {
            let result = match by_key.get(&key) {
                None => Err("no service of that name runs in the new process".to_string()),
                Some(&addr) => {
                    let msg = Message {
                        source: 0,
                        ptype: ptype::HANDOVER,
                        session: HANDOVER_IMPORT,
                        payload: Bytes::from(state),
                    };
                    self.call_message(addr, msg, Some(timeout))
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            };
            out.push((key, result));
        }
        out
    }

    /// Call a local service from outside any service (source 0), default timeout.
    pub async fn call(&self, target: Addr, payload: Bytes) -> Result<Bytes, CallError> {
        self.call_from(0, target, payload, None).await
    }

    /// Call a local service with an explicit source and an optional timeout (default:
    /// the runtime's `call_timeout`).
    pub async fn call_from(
        &self,
        source: Addr,
        target: Addr,
        payload: Bytes,
        timeout: Option<Duration>,
    ) -> Result<Bytes, CallError> {
        self.call_message(target, Message::new(source, payload), timeout)
            .await
    }

    /// Call a local service with a whole [`Message`] (its own ptype and session, e.g. a
    /// raw frame for CServiceProxy) and wait for the reply.
    pub async fn call_message(
        &self,
        target: Addr,
        msg: Message,
        timeout: Option<Duration>,
    ) -> Result<Bytes, CallError> {
        let (tx, rx) = oneshot::channel();
        self.deliver(target, msg, Some(tx))
            .await
            .map_err(|(e, _)| e)?;
        let rx = ReplyFuture {
            rx,
            node: self.clone(),
            target,
        };
        let after = timeout.unwrap_or(self.inner.config.call_timeout);
        match tokio::time::timeout(after, rx).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout {
                service: self.describe(target),
                after,
            }),
        }
    }

    /// Enqueue a call and return the receiver of its reply: the message is in the
    /// target's mailbox when this returns (so calls started in order arrive in order).
    pub async fn start_call(
        &self,
        source: Addr,
        target: Addr,
        payload: Bytes,
    ) -> Result<ReplyFuture, CallError> {
        let (tx, rx) = oneshot::channel();
        self.deliver(target, Message::new(source, payload), Some(tx))
            .await
            .map_err(|(e, _)| e)?;
        Ok(ReplyFuture {
            rx,
            node: self.clone(),
            target,
        })
    }

    /// Send to a local service from outside any service (source 0).
    pub async fn send(&self, target: Addr, payload: Bytes) -> Result<(), CallError> {
        self.send_from(0, target, payload).await
    }

    /// Send with an explicit source; waits while the target's mailbox is full.
    pub async fn send_from(
        &self,
        source: Addr,
        target: Addr,
        payload: Bytes,
    ) -> Result<(), CallError> {
        self.deliver(target, Message::new(source, payload), None)
            .await
            .map_err(|(e, _)| e)
    }

    /// Put `msg` in `target`'s mailbox without waiting (for callers that cannot await,
    /// such as a C service's `skynet_send`): a full mailbox is
    /// [`CallError::Overloaded`], never a silent drop.
    pub fn post(&self, target: Addr, msg: Message) -> Result<(), CallError> {
        self.post_or_return(target, msg).map_err(|(e, _)| e)
    }

    /// [`Node::post`] that hands the message back when it was not taken, for a caller
    /// that keeps it to try again later (a socket event waiting for room) without
    /// cloning it first.
    pub fn post_or_return(&self, target: Addr, msg: Message) -> Result<(), (CallError, Message)> {
        // Sent under the table's read guard (try_send never waits), without cloning the
        // sender; the guard is gone before `describe` reads the table again.
        let sent = match self.inner.services.get(&target) {
            Some(e) => e.tx.try_send(Envelope { msg, reply: None }),
            None => return Err((CallError::NoSuchService { addr: target }, msg)),
        };
        match sent {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(env)) => Err((
                CallError::Overloaded {
                    service: self.describe(target),
                },
                env.msg,
            )),
            Err(TrySendError::Closed(env)) => Err((
                CallError::ServiceGone {
                    service: self.describe(target),
                },
                env.msg,
            )),
        }
    }

    /// Put a message in `target`'s mailbox. On failure the reply slot comes back so the
    /// caller can be answered with the reason.
    pub(crate) async fn deliver(
        &self,
        target: Addr,
        msg: Message,
        reply: Option<ReplySender>,
    ) -> Result<(), (CallError, Option<ReplySender>)> {
        // Delivery to a missing service fails without waiting: still count it against
        // the task's budget (see `Cluster::call_timeout`).
        tokio::task::coop::consume_budget().await;
        // Room in the mailbox (the usual case): in without cloning the sender. Full: wait
        // for room on a clone, without holding the service table.
        let (tx, env) = match self.inner.services.get(&target) {
            Some(e) => match e.tx.try_send(Envelope { msg, reply }) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(env)) => (e.tx.clone(), env),
                Err(TrySendError::Closed(env)) => {
                    drop(e);
                    let service = self.describe(target);
                    return Err((CallError::ServiceGone { service }, env.reply));
                }
            },
            None => return Err((CallError::NoSuchService { addr: target }, reply)),
        };
        match tx.send(env).await {
            Ok(()) => Ok(()),
            Err(env) => Err((
                CallError::ServiceGone {
                    service: self.describe(target),
                },
                env.reply,
            )),
        }
    }

    /// Stop the service at `addr`: it finishes the message in hand, then every queued
    /// caller gets `ServiceGone`. Returns whether it existed.
    pub fn kill(&self, addr: Addr) -> bool {
        match self.inner.services.remove(&addr) {
            Some((_, e)) => {
                e.tx.kill();
                self.forget_names_of(addr);
                tracing::info!(node = %self.name(), service = %service_name(&e.label, addr), "service killed");
                true
            }
            None => false,
        }
    }

    /// Stop every service (the node is shutting down).
    pub fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        let addrs: Vec<Addr> = self.inner.services.iter().map(|e| *e.key()).collect();
        for a in addrs {
            self.kill(a);
        }
        let hooks = std::mem::take(
            &mut *self
                .inner
                .shutdown_hooks
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for hook in hooks {
            hook();
        }
    }

    /// Run `hook` when the node shuts down, after its services were stopped (layers
    /// built on the runtime, such as the cluster, close their connections here).
    pub fn on_shutdown(&self, hook: impl FnOnce() + Send + 'static) {
        self.inner
            .shutdown_hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(hook));
    }

    fn forget_names_of(&self, addr: Addr) {
        let before = self.inner.names.len();
        self.inner.names.retain(|_, a| *a != addr);
        if self.inner.names.len() != before {
            self.names_changed();
        }
    }

    /// Whether [`Node::shutdown`] has been called.
    pub fn is_stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::SeqCst)
    }

    /// Attach a value of type `T` to the node (one per type), for layers built on top
    /// (e.g. a database pool) to find each other without globals.
    pub fn set_extension<T: Any + Send + Sync>(&self, value: Arc<T>) {
        self.inner
            .extensions
            .insert(std::any::TypeId::of::<T>(), value);
    }

    /// The value of type `T` attached with [`Node::set_extension`].
    pub fn extension<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.inner
            .extensions
            .get(&std::any::TypeId::of::<T>())
            .and_then(|v| v.value().clone().downcast::<T>().ok())
    }

    /// A handle that does not keep the node alive.
    pub fn downgrade(&self) -> WeakNode {
        WeakNode {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// The value of type `T` attached to the node, attaching `make()` first if there is
    /// none yet (atomically: two racing callers get the same value).
    pub fn extension_or_insert_with<T: Any + Send + Sync>(
        &self,
        make: impl FnOnce() -> Arc<T>,
    ) -> Arc<T> {
        let entry = self
            .inner
            .extensions
            .entry(std::any::TypeId::of::<T>())
            .or_insert_with(|| make() as Arc<dyn Any + Send + Sync>);
        entry
            .value()
            .clone()
            .downcast::<T>()
            .unwrap_or_else(|_| unreachable!("extensions are keyed by their own type"))
    }
}

/// A non-owning handle to a [`Node`], for parts of the node that the node itself holds.
#[derive(Clone)]
pub struct WeakNode {
    inner: std::sync::Weak<Inner>,
}

impl WeakNode {
    /// The node, if it still exists.
    pub fn upgrade(&self) -> Option<Node> {
        self.inner.upgrade().map(|inner| Node { inner })
    }
}

/// The pending reply of a call started with [`Node::start_call`].
pub struct ReplyFuture {
    rx: oneshot::Receiver<Result<Bytes, CallError>>,
    // Who was called, to name it in an error (described only if one happens: this is
    // on every call's path).
    node: Node,
    target: Addr,
}

impl std::future::Future for ReplyFuture {
    type Output = Result<Bytes, CallError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.rx.poll_unpin(cx) {
            std::task::Poll::Ready(Ok(r)) => std::task::Poll::Ready(r),
            std::task::Poll::Ready(Err(_)) => std::task::Poll::Ready(Err(CallError::ServiceGone {
                service: self.node.describe(self.target),
            })),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

fn panic_text(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

/// The task behind every service: one message at a time, answer, repeat.
/// The metric that counts warning events (logged or not), by `kind`; the transport
/// counts its own warnings under the same name, so one counter shows every flood.
pub const WARNINGS: &str = "bee_transport_warnings_total";

/// One service's "handler failed on a message nobody waits for" warnings: at most one
/// log line a second, carrying how many were left out since the last; every event is
/// counted in [`WARNINGS`] (kind `handler_failed`).
#[derive(Default)]
struct WarnThrottle {
    last: Option<std::time::Instant>,
    left_out: u64,
}

impl WarnThrottle {
    /// One event; `Some(left_out)` when a line may be logged now.
    fn hit(&mut self) -> Option<u64> {
        metrics::counter!(WARNINGS, "kind" => "handler_failed").increment(1);
        if self
            .last
            .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1))
        {
            self.left_out += 1;
            return None;
        }
        self.last = Some(std::time::Instant::now());
        Some(std::mem::take(&mut self.left_out))
    }
}

async fn run_service(
    mut ctx: Context,
    mut service: BoxService,
    mut rx: mailbox::Receiver<Envelope>,
) {
    let node = ctx.node.clone();
    let addr = ctx.addr;
    // Made when a log line or an error needs it, not kept by every idle service.
    let label = ctx.label.clone();
    let name = || service_name(&label, addr);
    let mut failures = WarnThrottle::default();
    let mut first = true;
    loop {
        // Whether the mailbox is empty now, before waiting: what skynet's dispatcher sees
        // when a pop finds nothing (read by services that keep skynet's overload rule).
        // A new service counts as having found it empty.
        let found_empty = std::mem::take(&mut first) || rx.is_empty();
        let Some(Envelope { msg, reply }) = rx.recv().await else {
            break;
        };
        ctx.found_empty = found_empty;
        ctx.queued = rx.len();
        if rx.killed() {
            // Killed while this message waited: answer it below with the others.
            if let Some(tx) = reply {
                let _ = tx.send(Err(CallError::ServiceGone { service: name() }));
            }
            break;
        }
        if msg.ptype == ptype::HANDOVER && msg.source == 0 {
            let result = handover(&mut service, &msg).map_err(|e| CallError::Failed {
                service: name(),
                message: e.into_message(),
            });
            if let Some(tx) = reply {
                let _ = tx.send(result);
            }
            continue;
        }
        ctx.reply = reply;
        ctx.source = msg.source;
        // `handle` itself runs inside the guarded future too: a service that panics
        // before returning its future is caught like one that panics while it runs.
        let started = Instant::now();
        let outcome = AssertUnwindSafe(async { service.handle_dyn(&mut ctx, msg).await })
            .catch_unwind()
            .await
            .unwrap_or_else(|p| {
                let text = panic_text(p.as_ref());
                tracing::error!(node = %node.name(), service = %name(), panic = %text, "handler panicked; service keeps running");
                Err(ServiceError::msg(format!("handler panicked: {text}")))
            });
        let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let stats = rx.stats();
        stats.busy_ns.fetch_add(took, Ordering::Relaxed);
        stats.handled.fetch_add(1, Ordering::Relaxed);
        match (ctx.reply.take(), outcome) {
            (Some(tx), Ok(reply)) => {
                let _ = tx.send(Ok(reply.unwrap_or_default()));
            }
            (Some(tx), Err(e)) => {
                tracing::debug!(node = %node.name(), service = %name(), error = %e, "handler failed; caller told");
                let _ = tx.send(Err(CallError::Failed {
                    service: name(),
                    message: e.into_message(),
                }));
            }
            (None, Err(e)) => {
                if let Some(suppressed) = failures.hit() {
                    tracing::warn!(node = %node.name(), service = %name(), error = %e, suppressed, "handler failed on a message nobody waits for");
                }
            }
            (None, Ok(_)) => {}
        }
        if ctx.exit {
            break;
        }
    }
    // Stopped: take the entry out (if kill did not already) and tell every queued caller.
    if node.inner.services.remove(&addr).is_some() {
        node.forget_names_of(addr);
    }
    rx.close();
    let mut dropped = 0usize;
    while let Some(Envelope { reply, .. }) = rx.try_recv() {
        match reply {
            Some(tx) => {
                let _ = tx.send(Err(CallError::ServiceGone { service: name() }));
            }
            None => dropped += 1,
        }
    }
    if dropped > 0 {
        tracing::warn!(node = %node.name(), service = %name(), dropped, "service stopped with pushes still queued; they were dropped");
    }
    tracing::debug!(node = %node.name(), service = %name(), "service stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Panics while building its future (before any `async` code runs).
    struct PanicsEarly;

    impl Service for PanicsEarly {
        #[allow(clippy::manual_async_fn)]
        fn handle(
            &mut self,
            _ctx: &mut Context,
            msg: Message,
        ) -> impl Future<Output = HandleResult> + Send {
            if msg.payload.as_ref() == b"boom" {
                panic!("early boom");
            }
            std::future::ready(Ok(Some(msg.payload)))
        }
    }

    #[tokio::test]
    async fn addresses_start_where_told_and_know_what_they_handed_out() {
        let node = Node::new("t", RuntimeConfig::default());
        assert!(node.set_first_addr(0x00FF_FFFE));
        let a = node.spawn("a", PanicsEarly);
        let b = node.spawn("b", PanicsEarly);
        // Wraps past the 24-bit end without ever handing out 0.
        let c = node.spawn("c", PanicsEarly);
        assert_eq!((a, b, c), (0x00FF_FFFE, 0x00FF_FFFF, 1));
        assert_eq!(node.first_addr(), 0x00FF_FFFE);
        assert!(!node.set_first_addr(5), "too late: services exist");
        for x in [a, b, c] {
            assert!(node.handed_out(x), "{x:x}");
        }
        node.kill(b);
        assert!(
            node.handed_out(b),
            "a stopped service's address was still handed out"
        );
        for x in [0, 2, 0x10, 0x00FF_FFFD, 0x0100_0001] {
            assert!(!node.handed_out(x), "{x:x}");
        }
        let fresh = Node::new("u", RuntimeConfig::default());
        assert!(!fresh.handed_out(1), "nothing handed out yet");
    }

    #[tokio::test]
    async fn addresses_in_use_are_skipped_once_the_counter_went_round() {
        let node = Node::new("t", RuntimeConfig::default());
        let old: Vec<Addr> = (0..3).map(|_| node.spawn("old", PanicsEarly)).collect();
        assert_eq!(old, [1, 2, 3]);
        // As after 2^24 - 4 more services came and went.
        node.inner.next_addr.store(0x00FF_FFFF, Ordering::Relaxed);
        let last = node.spawn("last", PanicsEarly);
        let wrapped = node.spawn("wrapped", PanicsEarly);
        assert_eq!(
            (last, wrapped),
            (0x00FF_FFFF, 4),
            "0 and 1..=3 (alive) skipped"
        );
        for a in old {
            assert_eq!(
                node.services()
                    .into_iter()
                    .find(|s| s.addr == a)
                    .map(|s| s.label),
                Some("old".to_string()),
                "{a:x} still the old service"
            );
        }
    }

    /// Sleeps the milliseconds its payload names, then answers.
    struct Sleepy;

    impl Service for Sleepy {
        async fn handle(&mut self, _ctx: &mut Context, msg: Message) -> HandleResult {
            let ms: u64 = std::str::from_utf8(&msg.payload).unwrap().parse().unwrap();
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(Some(msg.payload))
        }
    }

    #[tokio::test]
    async fn a_service_counts_the_time_it_spends_handling() {
        let node = Node::new("t", RuntimeConfig::default());
        let a = node.spawn("sleepy", Sleepy);
        let info = |n: &Node| n.services().into_iter().find(|s| s.addr == a).unwrap();
        assert_eq!(info(&node).busy, Duration::ZERO, "nothing handled yet");
        for _ in 0..3 {
            node.call(a, Bytes::from_static(b"40")).await.unwrap();
        }
        let i = info(&node);
        assert_eq!(i.handled, 3);
        assert!(i.busy >= Duration::from_millis(120), "{:?}", i.busy);
        assert!(i.busy <= i.uptime, "{i:?}");
    }

    /// Records every payload; the first one waits until `gate` is opened.
    struct Gated {
        gate: Option<tokio::sync::oneshot::Receiver<()>>,
        seen: Arc<Mutex<Vec<Bytes>>>,
    }

    impl Service for Gated {
        async fn handle(&mut self, _ctx: &mut Context, msg: Message) -> HandleResult {
            if let Some(gate) = self.gate.take() {
                let _ = gate.await;
            }
            self.seen.lock().unwrap().push(msg.payload);
            Ok(None)
        }
    }

    #[tokio::test]
    async fn a_send_to_a_full_mailbox_waits_for_room_and_keeps_order() {
        let node = Node::new(
            "t",
            RuntimeConfig {
                mailbox: 1,
                ..RuntimeConfig::default()
            },
        );
        let (open, gate) = tokio::sync::oneshot::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let addr = node.spawn(
            "gated",
            Gated {
                gate: Some(gate),
                seen: seen.clone(),
            },
        );
        // "1" is taken by the service (which waits at the gate), "2" fills the mailbox.
        node.send(addr, Bytes::from_static(b"1")).await.unwrap();
        node.send(addr, Bytes::from_static(b"2")).await.unwrap();
        let third = {
            let node = node.clone();
            tokio::spawn(async move { node.send(addr, Bytes::from_static(b"3")).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished(), "the third send waits for room");
        assert_eq!(
            node.post(addr, Message::new(0, Bytes::from_static(b"x")))
                .unwrap_err()
                .to_string(),
            CallError::Overloaded {
                service: node.describe(addr)
            }
            .to_string(),
            "a send that cannot wait is refused, not dropped"
        );
        open.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("the waiting send went through")
            .unwrap()
            .unwrap();
        node.call(addr, Bytes::from_static(b"4")).await.unwrap();
        let got: Vec<Bytes> = seen.lock().unwrap().clone();
        assert_eq!(got, ["1", "2", "3", "4"].map(|s| Bytes::from(s.as_bytes())));
    }

    /// Records (queued, found_empty) for every message; the first waits at the gate.
    struct QueueWatch {
        gate: Option<tokio::sync::oneshot::Receiver<()>>,
        seen: Arc<Mutex<Vec<(usize, bool)>>>,
    }

    impl Service for QueueWatch {
        async fn handle(&mut self, ctx: &mut Context, _msg: Message) -> HandleResult {
            if let Some(gate) = self.gate.take() {
                let _ = gate.await;
            }
            self.seen
                .lock()
                .unwrap()
                .push((ctx.queued(), ctx.found_empty()));
            Ok(None)
        }
    }

    #[tokio::test]
    async fn a_handler_sees_its_queue_length_and_whether_it_was_idle() {
        // The node's mailbox holds 2; this service's holds 10.
        let node = Node::new(
            "t",
            RuntimeConfig {
                mailbox: 2,
                ..RuntimeConfig::default()
            },
        );
        let (open, gate) = tokio::sync::oneshot::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let addr = node.spawn_boxed_with_mailbox(
            "watch",
            Box::new(QueueWatch {
                gate: Some(gate),
                seen: seen.clone(),
            }),
            10,
        );
        node.send(addr, Bytes::from_static(b"0")).await.unwrap();
        // The first message is taken (the service waits at the gate); five queue behind.
        wait_until(|| node.queued(addr) == Some(0)).await;
        for _ in 0..5 {
            node.post(addr, Message::new(0, Bytes::new())).unwrap();
        }
        assert_eq!(node.queued(addr), Some(5));
        open.send(()).unwrap();
        wait_until(|| seen.lock().unwrap().len() == 6).await;
        // Idle again: the next message finds the mailbox was empty.
        node.call(addr, Bytes::new()).await.unwrap();
        let got = seen.lock().unwrap().clone();
        assert_eq!(
            got,
            [
                (0, true),
                (4, false),
                (3, false),
                (2, false),
                (1, false),
                (0, false),
                (0, true),
            ]
        );
        assert_eq!(node.queued(0xdead), None);
    }

    /// Poll `f` every 5 ms, for at most 5 s.
    async fn wait_until(f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < deadline, "condition not met within 5 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_panic_before_the_future_is_caught_and_the_service_lives_on() {
        let node = Node::new("t", RuntimeConfig::default());
        let addr = node.spawn("early", PanicsEarly);
        let err = node
            .call(addr, Bytes::from_static(b"boom"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("early boom"), "{err}");
        let ok = node.call(addr, Bytes::from_static(b"fine")).await.unwrap();
        assert_eq!(ok.as_ref(), b"fine");
        assert!(node.is_alive(addr));
    }
}
