//! # bee — one cluster node, or a one-shot cluster client
//!
//! - `bee run NODE_CONFIG`: run a node (its services, its listener) until SIGINT/SIGTERM.
//! - `bee call|send|query --cluster FILE NODE …`: talk to a running cluster from a shell.
//!
//! This binary only composes the library crates: it reads the config
//! ([`config`]), builds a [`bee_dispatch::Node`], attaches the cluster layer, starts
//! the services the config lists ([`services`]), and waits for a signal.

mod cli;
mod config;
mod services;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use bee_dispatch::{Cluster, ClusterSettings, Node, RuntimeConfig};
use bee_registry::{ClusterConfig, Registry};
use clap::{Parser, Subcommand};

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
    /// Run one node from its config file (TOML).
    Run {
        /// The node config (name, listen address, cluster config path, services).
        config: PathBuf,
    },
    /// Call a service on a node and print its reply values.
    Call(cli::ClientArgs),
    /// Push a message to a service on a node (no reply).
    Send(cli::ClientArgs),
    /// Ask a node for the address registered under a name.
    Query {
        /// The cluster config to find the node in.
        #[arg(long)]
        cluster: PathBuf,
        /// The node to ask.
        node: String,
        /// The registered name.
        name: String,
    },
}

fn main() {
    let args = Args::parse();
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
    if let Err(e) = run_command(args) {
        // One readable line (with its causes), no backtrace: this is a user-facing tool.
        eprintln!("bee: error: {e:#}");
        std::process::exit(1);
    }
}

fn run_command(args: Args) -> Result<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    // A node reads its config first: it says how many worker threads to run.
    let node_cfg = match &args.command {
        Command::Run { config } => {
            let cfg = config::NodeConfig::load(config)?;
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
            Command::Run { .. } => run(node_cfg.expect("loaded above")).await,
            Command::Call(a) => cli::call(a).await,
            Command::Send(a) => cli::send(a).await,
            Command::Query {
                cluster,
                node,
                name,
            } => cli::query(cluster, node, name).await,
        }
    })
}

/// Run a node until a signal.
async fn run(cfg: config::NodeConfig) -> Result<()> {
    let cluster_cfg = ClusterConfig::load(&cfg.cluster)
        .with_context(|| format!("cannot load the cluster config {}", cfg.cluster.display()))?;
    let node = Node::new(
        &cfg.name,
        RuntimeConfig {
            call_timeout: Duration::from_millis(cfg.call_timeout_ms),
            ..RuntimeConfig::default()
        },
    );
    let mut settings = ClusterSettings::default();
    settings.channel.call_timeout = Duration::from_millis(cfg.call_timeout_ms);
    settings.channel.busy_poll = Duration::from_micros(cfg.busy_poll_us);
    settings.listener.busy_poll = Duration::from_micros(cfg.busy_poll_us);
    let cluster = Cluster::start(&node, Registry::new(cluster_cfg), settings);
    cluster.register("bee_clusterd", cluster.clusterd())?;
    services::start_all(&node, &cluster, &cfg).await?;
    let listen = cfg.listen.clone().unwrap_or_else(|| cfg.name.clone());
    let local = cluster
        .open(&listen)
        .await
        .with_context(|| format!("node {} cannot open {listen}", cfg.name))?;
    tracing::info!(node = %cfg.name, listen = %local, services = node.services().len(), threads = ?cfg.threads, busy_poll_us = cfg.busy_poll_us, "node ready");
    // A line for scripts and tests waiting for the node to come up.
    println!("bee node {} listening on {local}", cfg.name);
    wait_for_signal().await;
    tracing::info!(node = %cfg.name, "shutting down");
    node.shutdown();
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops this node");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
