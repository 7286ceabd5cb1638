//! # bee-node — a cluster node program, as a library
//!
//! - `bee run NODE_CONFIG`: run a node (its services, its listener) until SIGINT/SIGTERM;
//!   its cluster config comes from a file or from etcd ([`etcd`]).
//! - `bee call|send|query --cluster FILE NODE …`: talk to a running cluster from a shell
//!   (`--cluster etcd://host:port/PREFIX` too; `--proto … --msg …` for game frames,
//!   [`frame`]).
//! - `bee status --cluster FILE [NODE…]`: what config every node runs ([`admin`]); the
//!   nodes may also be read from etcd (`--cluster etcd://host:port/PREFIX`).
//! - `bee config push --cluster CURRENT NEW`: push a new cluster config to every node,
//!   with each node's answer ([`admin`]); `--cluster etcd://host:port/PREFIX` pushes
//!   through etcd and reads the nodes' acks (`etcd_push.rs`).
//!
//! This crate only composes the library crates: it reads the config ([`config`]),
//! builds a [`bee_runtime::Node`], attaches the cluster layer with the limits,
//! liveness and authentication the config asks for and serves its metrics ([`ops`])
//! with its status page and JSON API ([`status`]),
//! starts the services the config lists ([`services`]), and waits for a signal.
//!
//! ## Cargo features (all on by default, as the `bee` binary is built)
//! - `etcd`: the cluster config in etcd ([`etcd`]; building it needs `protoc`). Off,
//!   configs come from files and an `etcd://` URL is refused with an error saying so.
//! - `mysql`: the `mysqlpool` service kind (bee-mysql).
//! - `capi`: the C host — the `cservice` and `snlua` service kinds (bee-capi).
//!
//! An embedder that wants none of them depends on
//! `bee-node = { …, default-features = false }` and turns on the ones it needs.
//!
//! A game's own node binary is [`App`] with its service kinds added — the console,
//! config loading, logging, signals and the client commands come with it:
//!
//! ```no_run
//! use bee_runtime::Dispatcher;
//!
//! fn main() {
//!     bee_node::App::new()
//!         .service("greeter", || {
//!             Dispatcher::new(()).command("hello", |_s, who: String| Ok(format!("hello {who}")))
//!         })
//!         .main()
//! }
//! ```

pub mod actions;
pub mod admin;
pub mod cli;
pub mod config;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(not(feature = "etcd"))]
#[path = "no_etcd.rs"]
pub mod etcd;
#[cfg(feature = "etcd")]
mod etcd_push;
pub mod frame;
pub mod handover;
#[cfg(feature = "capi")]
mod lua_cluster;
pub mod ops;
pub mod services;
pub mod skynet_mode;
pub mod status;
pub mod upgrade;

pub use services::{Kinds, Spec};

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use bee_cluster::Cluster;
use bee_registry::Registry;
use bee_runtime::{Node, RuntimeConfig};
use clap::{Parser, Subcommand};
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "bee",
    version,
    about = "bee: a cluster node speaking skynet v1.6.0's cluster protocol"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node from its config file (TOML), or a skynet config file as `skynet`
    /// takes it (skynet's Lua layer in single-node mode; see docs/lua.md).
    Run {
        /// The node config (name, listen address, cluster config path, services), or a
        /// skynet config.
        config: PathBuf,
        /// Hot update: take over from the running process of this node (its listening
        /// sockets and its services' state, over its handover socket), which drains and
        /// exits. See docs/hot-update.md.
        #[arg(long)]
        takeover: bool,
    },
    /// Call a service on a node and print its reply values.
    Call(cli::ClientArgs),
    /// Push a message to a service on a node (no reply).
    Send(cli::ClientArgs),
    /// Ask a node for the address registered under a name.
    Query(cli::QueryArgs),
    /// Show what cluster config every node runs (version, hash, uptime, incarnation).
    Status(admin::StatusArgs),
    /// Cluster config commands.
    Config {
        #[command(subcommand)]
        command: admin::ConfigCommand,
    },
    /// Whole-cluster operations (rolling hot update).
    Cluster {
        #[command(subcommand)]
        command: upgrade::ClusterCommand,
    },
}

/// A node program: its service kinds and config sections; [`App::main`] runs the
/// `bee` command line with them.
#[derive(Clone)]
pub struct App {
    kinds: Kinds,
    sections: Vec<String>,
}

impl Default for App {
    fn default() -> Self {
        Self::new()
    }
}

impl App {
    /// The production `bee` program: the built-in kinds ([`Kinds::builtin`]) and the
    /// `[mysql]` and `[env]` (native services' environment) sections.
    pub fn new() -> App {
        App {
            kinds: Kinds::builtin(),
            sections: vec!["mysql".to_string(), "env".to_string()],
        }
    }

    /// Add a service kind: `start` runs for every `[[service]]` entry of that kind.
    pub fn kind(
        mut self,
        kind: &str,
        start: impl Fn(&Spec<'_>) -> Result<Option<bee_runtime::Addr>> + Send + Sync + 'static,
    ) -> App {
        self.kinds.add(kind, start);
        self
    }

    /// Add a service kind whose every `[[service]]` entry is one service made by `make`
    /// (`App::new().service("shop", shop)` with `fn shop() -> Dispatcher<Shop>`); a kind
    /// that reads the entry's options or starts several services uses [`App::kind`].
    pub fn service<S: bee_runtime::Service>(
        mut self,
        kind: &str,
        make: impl Fn() -> S + Send + Sync + 'static,
    ) -> App {
        self.kinds.service(kind, make);
        self
    }

    /// Allow a top-level table `[name]` in node configs (read by a kind through
    /// [`Spec::section`]).
    pub fn section(mut self, name: &str) -> App {
        self.sections.push(name.to_string());
        self
    }

    /// The kinds this program can start.
    pub fn kinds(&self) -> &Kinds {
        &self.kinds
    }

    /// Parse the command line and run it; exits the process with 1 (and one readable
    /// line on stderr) on error.
    pub fn main(self) -> ! {
        let args = Args::parse();
        std::process::exit(match main_with(Arc::new(self), args) {
            Ok(()) => 0,
            Err(e) => {
                // One readable line (with its causes), no backtrace: a user-facing tool.
                eprintln!("bee: error: {e:#}");
                1
            }
        })
    }
}

fn main_with(app: Arc<App>, args: Args) -> Result<()> {
    // A node logs its connection events; a one-shot client only its warnings.
    let default_level = match args.command {
        Command::Run { .. } => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BEE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    run_command(app, args)
}

fn run_command(app: Arc<App>, args: Args) -> Result<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    // A node reads its config first: it says how many worker threads to run.
    let node_cfg = match &args.command {
        Command::Run { config, takeover } => {
            let text = std::fs::read_to_string(config)
                .with_context(|| format!("cannot read node config {}", config.display()))?;
            let cfg = if skynet_mode::is_skynet_config(&text) {
                if *takeover {
                    anyhow::bail!(
                        "--takeover is for bee node configs; {} is a skynet config",
                        config.display()
                    );
                }
                skynet_mode::node_config(config, &text)?
            } else {
                config::NodeConfig::load(config, &app.sections)?
            };
            if let Some(n) = cfg.threads {
                builder.worker_threads(n);
            }
            Some(cfg)
        }
        _ => None,
    };
    let runtime = builder.build().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match args.command {
            Command::Run { takeover, .. } => {
                run(&app, node_cfg.expect("loaded above"), takeover).await
            }
            Command::Call(a) => cli::call(a).await,
            Command::Send(a) => cli::send(a).await,
            Command::Query(a) => cli::query(a).await,
            Command::Status(a) => admin::status(a).await,
            Command::Config {
                command: admin::ConfigCommand::Push(a),
            } if etcd::is_url(&a.cluster) => {
                #[cfg(feature = "etcd")]
                let pushed = etcd_push::push(a).await;
                #[cfg(not(feature = "etcd"))]
                let pushed = Err(etcd::unsupported(&a.cluster.to_string_lossy()));
                pushed
            }
            Command::Config {
                command: admin::ConfigCommand::Push(a),
            } => admin::push(a).await,
            Command::Cluster {
                command: upgrade::ClusterCommand::Upgrade(a),
            } => upgrade::upgrade(a).await,
        }
    })
}

/// A node from a skynet config ([`skynet_mode`]): its services (skynet's bootstrap), no
/// cluster listener, until a signal.
async fn run_single(app: &App, cfg: config::NodeConfig, mut signals: Signals) -> Result<()> {
    let node = Node::new(
        &cfg.name,
        RuntimeConfig {
            call_timeout: Duration::from_millis(cfg.call_timeout_ms),
            ..RuntimeConfig::default()
        },
    );
    let (settings, _budgets) = ops::cluster_settings(&cfg)?;
    let cluster = Cluster::start(
        &node,
        Registry::new(bee_registry::ClusterConfig::default()),
        settings,
    );
    app.kinds.start_all(&node, &cluster, &cfg).await?;
    let from = cfg.skynet_config.as_deref().unwrap_or(&cfg.dir);
    tracing::info!(node = %cfg.name, config = %from.display(), services = node.services().len(), "node ready (skynet config, single node)");
    // A line for scripts and tests waiting for the node to come up.
    println!(
        "bee node {} ready: skynet config {}, single node, no cluster listener",
        cfg.name,
        from.display()
    );
    signals.recv().await;
    tracing::info!(node = %cfg.name, "shutting down");
    node.shutdown();
    Ok(())
}

/// Run a node until a signal, or until a successor takes over.
async fn run(app: &App, cfg: config::NodeConfig, takeover: bool) -> Result<()> {
    let mut signals = Signals::watch();
    if cfg.skynet_config.is_some() {
        return run_single(app, cfg, signals).await;
    }
    // Checked like every later config, and told which node it belongs to (a push that
    // drops this node is refused).
    // `cluster = "etcd://host:port/PREFIX"`: the config lives in etcd (see [`etcd`]).
    let (registry, source) = match etcd::url_of(&cfg) {
        Some(url) => etcd::Source::start(&url, &cfg).await?,
        None => (
            Registry::load_file(&cfg.name, &cfg.cluster).with_context(|| {
                format!("cannot load the cluster config {}", cfg.cluster.display())
            })?,
            etcd::Source::file(),
        ),
    };
    let node = Node::new(
        &cfg.name,
        RuntimeConfig {
            call_timeout: Duration::from_millis(cfg.call_timeout_ms),
            ..RuntimeConfig::default()
        },
    );
    let (settings, budgets) = ops::cluster_settings(&cfg)?;
    // Before the cluster starts: channels and listeners take their metric handles when
    // they are created.
    let metrics = match &cfg.metrics_listen {
        Some(addr) => Some(status::Listener::open(addr, takeover, || {
            ops::install_metrics(&node, &budgets)
        })?),
        None => None,
    };
    let cluster = Cluster::start(&node, registry, settings);
    // Notified by a drain asked for on the status listener (`[admin]`): as SIGTERM.
    let drain_asked = Arc::new(tokio::sync::Notify::new());
    // The status page, `/metrics` and the JSON API on the metrics listener.
    let metrics = match metrics {
        Some(listener) => {
            let addr = listener.local_addr();
            let actions = actions::router(&cfg, &cluster, drain_asked.clone())?;
            status::serve(listener, &node, &cluster, &cfg, &budgets, actions)?;
            addr
        }
        None => None,
    };
    let control = handover::socket_path(&cfg);
    // A second process of the same node is a mistake unless it takes over.
    let server = if takeover {
        None
    } else {
        Some(handover::Server::listen(&control)?)
    };
    app.kinds.start_all(&node, &cluster, &cfg).await?;
    let local = if takeover {
        take_over(&node, &cluster, &control, &cfg).await?
    } else {
        let listen = cfg.listen.clone().unwrap_or_else(|| cfg.name.clone());
        cluster
            .open(&listen)
            .await
            .with_context(|| format!("node {} cannot open {listen}", cfg.name))?
    };
    let mut server = match server {
        Some(s) => s,
        None => handover::Server::listen_replacing(&control)?,
    };
    tracing::info!(node = %cfg.name, listen = %local, services = node.services().len(), threads = ?cfg.threads, busy_poll_us = cfg.busy_poll_us, metrics = ?metrics, auth = cfg.auth.is_some(), inbound_bytes = cfg.limits.inbound_bytes, outbound_bytes = cfg.limits.outbound_bytes, "node ready");
    // A line for scripts and tests waiting for the node to come up.
    let following = source.follow(&cluster, local).await?;
    println!("bee node {} listening on {local}", cfg.name);
    let deadline = Duration::from_millis(cfg.drain_timeout_ms);
    // A successor asking to take over, until a signal.
    loop {
        let stream = tokio::select! {
            _ = signals.recv() => break,
            _ = drain_asked.notified() => break,
            s = server.next() => match s {
                Some(s) => s,
                None => break,
            },
        };
        tracing::info!(node = %cfg.name, socket = %server.path().display(), "a successor asks to take over");
        match handover::give(stream, &cluster, &node, deadline).await {
            Ok(g) => {
                tracing::info!(node = %cfg.name, successor = %g.pid, took_ms = g.took.as_millis() as u64, states = g.states, connections = g.connections, errors = ?g.errors, handled = %g.drain.handled_line(), "handed over: {}", g.drain);
                following.stop().await;
                node.shutdown();
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(node = %cfg.name, error = format!("{e:#}"), "handover refused; this process keeps serving");
            }
        }
    }
    tracing::info!(node = %cfg.name, ?deadline, "draining: refusing new peers, answering what was accepted (a second signal stops at once)");
    // Leave etcd first: peers learn at once that this run is going.
    following.stop().await;
    tokio::select! {
        report = cluster.drain(deadline) => match report {
            Ok(r) if r.complete => {
                tracing::info!(node = %cfg.name, handled = %r.handled_line(), "{r}");
            }
            Ok(r) => tracing::warn!(node = %cfg.name, handled = %r.handled_line(), "{r}"),
            Err(e) => tracing::warn!(node = %cfg.name, error = %e, "cannot drain"),
        },
        _ = signals.recv() => {
            tracing::warn!(node = %cfg.name, "second signal: stopping at once");
        }
    }
    tracing::info!(node = %cfg.name, "shutting down");
    node.shutdown();
    Ok(())
}

/// `--takeover`: receive the listening sockets from the running process, wait until it
/// drained and sent its services' state, give each service its state, then serve the
/// sockets. Returns the (first) address served.
async fn take_over(
    node: &Node,
    cluster: &Cluster,
    control: &std::path::Path,
    cfg: &config::NodeConfig,
) -> Result<std::net::SocketAddr> {
    let t0 = std::time::Instant::now();
    let path = control.to_path_buf();
    let taken = tokio::task::spawn_blocking(move || handover::take(&path))
        .await
        .context("the handover task failed")??;
    let mut taken = taken;
    let predecessor = taken.predecessor;
    let sockets = std::mem::take(&mut taken.listeners);
    // Serve the sockets at once, delivery held until the services have their state:
    // peers the predecessor tells goaway connect here and are answered (heartbeats)
    // while it drains, instead of waiting unaccepted; their requests wait in order.
    cluster.hold_delivery();
    let release = ReleaseOnDrop(cluster.clone());
    let mut first = None;
    for socket in sockets {
        let local = cluster
            .open_inherited(socket)
            .context("cannot serve a handed-over socket")?;
        first.get_or_insert(local);
    }
    let local = first.context("no socket was handed over")?;
    let within = Duration::from_millis(cfg.drain_timeout_ms) + Duration::from_secs(15);
    let (states, done, connections) = tokio::task::spawn_blocking(move || taken.state(within))
        .await
        .context("the handover task failed")??;
    // The stock skynet peers' connections: served from here on, their requests held
    // in order behind the services' state like everything else.
    let adopted = match connections {
        Ok(conns) => {
            let n = conns.len();
            for (local, conn) in conns {
                let peer = conn.peer;
                if let Err(conn) = cluster.adopt(local, conn) {
                    tracing::warn!(node = %cfg.name, %local, %peer, "no listener here for a connection the old process handed over; closing it");
                    drop(conn);
                }
            }
            n
        }
        Err(e) => {
            tracing::warn!(node = %cfg.name, error = format!("{e:#}"), "the old process handed over no connections (its stock skynet peers reconnect)");
            0
        }
    };
    let offered = states.len();
    let outcome = node.import_states(states, Duration::from_secs(10)).await;
    for (key, r) in &outcome {
        if let Err(e) = r {
            tracing::warn!(node = %cfg.name, service = %key, error = %e, "state from the old process not taken; the service starts fresh");
        }
    }
    let carried = outcome.iter().filter(|(_, r)| r.is_ok()).count();
    drop(release);
    tracing::info!(node = %cfg.name, predecessor, incarnation = cluster.incarnation(), took_ms = t0.elapsed().as_millis() as u64, states_offered = offered, states_carried = carried, connections = adopted, old = %done, "took over");
    Ok(local)
}

/// Releases the cluster's held delivery when dropped (also when taking over fails).
struct ReleaseOnDrop(Cluster);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.release_delivery();
    }
}

/// SIGTERM and SIGINT (Ctrl-C), watched from before the node says it is up: a signal
/// that arrives once the "listening"/"ready" line is out is always a drain, never the
/// default action that ends the process at once (the handlers are the process's from
/// the first watch on).
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn watch() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        let one = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot watch {name}: it will not stop this node");
                None
            }
        };
        Signals {
            term: one(SignalKind::terminate(), "SIGTERM"),
            int: one(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// The next SIGTERM or SIGINT.
    async fn recv(&mut self) {
        async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = next(&mut self.term) => {}
            _ = next(&mut self.int) => {}
        }
    }
}
