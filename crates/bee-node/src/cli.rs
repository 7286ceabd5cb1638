//! The one-shot client commands: `bee call`, `bee send`, `bee query` — a "curl" for the
//! cluster. The client is a small node of its own (named `bee-cli-<pid>`) that loads the
//! cluster config, sends one request and prints the reply values.
//!
//! Arguments: integers, reals, `true`/`false`/`nil`, anything else a string. The
//! service is a registered name (`echo` or `@echo`) or an address (`:0000000a`, `0x0a`
//! or decimal).
//!
//! Against nodes with node authentication, set `BEE_AUTH_SECRET_FILE` to the file holding
//! the cluster's secret (see [`crate::ops::client_secret`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bee_codec::seri::{self, Value};
use bee_dispatch::{Cluster, ClusterSettings, Node, RuntimeConfig, Target};
use bee_registry::{ClusterConfig, Registry};

/// Arguments of `bee call` and `bee send`.
#[derive(clap::Args)]
pub struct ClientArgs {
    /// The cluster config to find the node in.
    #[arg(long)]
    cluster: PathBuf,
    /// Timeout in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// The node to talk to.
    node: String,
    /// The service: a registered name (`echo`, `@echo`) or an address (`:0000000a`).
    service: String,
    /// The arguments: integers, reals, true/false/nil, anything else a string
    /// (negative numbers such as -7 are values, not options).
    #[arg(allow_negative_numbers = true)]
    args: Vec<String>,
}

/// Parse one command-line argument into a value.
pub fn parse_arg(s: &str) -> Value {
    match s {
        "nil" => Value::Nil,
        "true" => Value::Boolean(true),
        "false" => Value::Boolean(false),
        _ => {
            if let Ok(i) = s.parse::<i64>() {
                Value::Integer(i)
            } else if let Ok(f) = s.parse::<f64>() {
                if s.chars().any(|c| c.is_ascii_digit()) {
                    Value::Real(f)
                } else {
                    Value::from(s)
                }
            } else {
                Value::from(s)
            }
        }
    }
}

/// Parse the service argument into a cluster target.
pub fn parse_target(s: &str) -> Result<Target> {
    if let Some(hex) = s.strip_prefix(':').or_else(|| s.strip_prefix("0x")) {
        let a = u32::from_str_radix(hex, 16).with_context(|| format!("bad address {s:?}"))?;
        return Ok(Target::Addr(a));
    }
    if let Ok(a) = s.parse::<u32>() {
        return Ok(Target::Addr(a));
    }
    if s.trim_start_matches('@').is_empty() {
        bail!("empty service name");
    }
    Ok(Target::from(s))
}

fn client(cluster: &Path, timeout: Duration) -> Result<Cluster> {
    let cfg = ClusterConfig::load(cluster)
        .with_context(|| format!("cannot load the cluster config {}", cluster.display()))?;
    let node = Node::new(
        format!("bee-cli-{}", std::process::id()),
        RuntimeConfig::default(),
    );
    let mut settings = ClusterSettings::default();
    settings.channel.call_timeout = timeout;
    settings.wait_for_node = Some(Duration::ZERO);
    settings.channel.auth_secret = crate::ops::client_secret()?;
    let c = Cluster::start(&node, Registry::new(cfg), settings);
    // The node must outlive the call: leak this one handle, the process ends soon.
    std::mem::forget(node);
    Ok(c)
}

/// `bee call`.
pub async fn call(a: ClientArgs) -> Result<()> {
    let cluster = client(&a.cluster, Duration::from_millis(a.timeout_ms))?;
    let values: Vec<Value> = a.args.iter().map(|s| parse_arg(s)).collect();
    let payload = seri::pack(&values)?;
    let target = parse_target(&a.service)?;
    let started = std::time::Instant::now();
    let reply = cluster
        .call(&a.node, target.clone(), payload)
        .await
        .with_context(|| format!("call to {target} on {} failed", a.node))?;
    let values = seri::unpack(&reply).context("the reply is not a skynet.pack payload")?;
    eprintln!(
        "{} value(s) from {target} on {} in {:?}",
        values.len(),
        a.node,
        started.elapsed()
    );
    for v in values {
        println!("{v}");
    }
    Ok(())
}

/// `bee send`.
pub async fn send(a: ClientArgs) -> Result<()> {
    let cluster = client(&a.cluster, Duration::from_millis(a.timeout_ms))?;
    let values: Vec<Value> = a.args.iter().map(|s| parse_arg(s)).collect();
    let payload = seri::pack(&values)?;
    let target = parse_target(&a.service)?;
    cluster
        .send(&a.node, target.clone(), payload)
        .await
        .with_context(|| format!("send to {target} on {} failed", a.node))?;
    // A push has no reply; a round trip on the same connection makes sure it was written.
    let _ = cluster.query(&a.node, "bee_clusterd").await;
    eprintln!("sent to {target} on {}", a.node);
    Ok(())
}

/// `bee query`.
pub async fn query(cluster: PathBuf, node: String, name: String) -> Result<()> {
    let c = client(&cluster, Duration::from_secs(10))?;
    let addr = c
        .query(&node, &name)
        .await
        .with_context(|| format!("query of {name} on {node} failed"))?;
    println!("{}", bee_dispatch::service::fmt_addr(addr));
    Ok(())
}
