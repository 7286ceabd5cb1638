//! The cluster admin commands: `bee status` (what every node runs) and `bee config push`
//! (send a new cluster config to every node and report each one's answer).
//!
//! Both talk to each node's `@bee_config` service (`bee_clusterd` on a bee node,
//! `interop/skynet/service/bee_config.lua` on a stock skynet node) with ordinary cluster
//! calls; the messages are in [`bee_cluster::lifecycle`] and `docs/config.md`. Each node
//! is reached on its own connection, all at once, each bounded by `--timeout-ms`.
//! Against nodes with node authentication they use the secret in `BEE_AUTH_SECRET_FILE`,
//! as `bee call` does.
//!
//! With `--cluster etcd://host:port/PREFIX`, `bee config push` goes through etcd instead
//! (`etcd_push.rs`, built on the helpers here): it writes the key and reads the nodes'
//! acks; the table, the summary and the exit status are the same.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use bee_cluster::lifecycle::{ConfigReport, PushOutcome, CONFIG_NAME};
use bee_codec::seri::{self, Value};
use bee_registry::{ClusterConfig, ConfigForm, NodeEntry};
use bee_transport::{Address, AuthSecret, Channel, ChannelConfig, TransportError};
use bytes::Bytes;

/// Arguments of `bee status`.
#[derive(clap::Args)]
pub struct StatusArgs {
    /// The cluster config naming the nodes: a file, or `etcd://host:port/PREFIX` (the
    /// config stored there).
    #[arg(long)]
    cluster: PathBuf,
    /// How long each node may take to answer, in milliseconds.
    #[arg(long, default_value_t = 3_000)]
    timeout_ms: u64,
    /// Print the cluster view as JSON (the `/api/v1/cluster` document, gathered from
    /// here: each node's `bee_clusterd status`) instead of the table.
    #[arg(long)]
    json: bool,
    /// Only these nodes (default: every node of the config).
    nodes: Vec<String>,
}

/// `bee config …`.
#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Send a new cluster config to every node of CURRENT and NEW; print each node's
    /// answer. Fails unless every reachable node applied it.
    Push(PushArgs),
}

/// Arguments of `bee config push`.
#[derive(clap::Args)]
pub struct PushArgs {
    /// The cluster config the nodes run now (to find them): a file, or
    /// `etcd://host:port/PREFIX` to push through etcd (write `PREFIX/config`, wait for
    /// the acks at `PREFIX/acks/NODE`).
    #[arg(long)]
    pub(crate) cluster: PathBuf,
    /// The new cluster config (Lua form, or TOML for `*.toml`).
    pub(crate) new: PathBuf,
    /// Apply even when its version is not above the running one (a deliberate
    /// roll-back). Never overrides a node's refusal of a config without its own entry.
    #[arg(long)]
    pub(crate) force: bool,
    /// Also fail when a node cannot be reached.
    #[arg(long)]
    pub(crate) require_all: bool,
    /// How long each node may take to answer, in milliseconds (through etcd: how long
    /// to wait for all the acks).
    #[arg(long, default_value_t = 5_000)]
    pub(crate) timeout_ms: u64,
}

/// How one node answered.
#[derive(Debug)]
pub(crate) enum Answer {
    Applied(String),
    Rejected(String),
    Unreachable(String),
    TimedOut(String),
    Failed(String),
}

impl Answer {
    pub(crate) fn word(&self) -> &'static str {
        match self {
            Answer::Applied(_) => "applied",
            Answer::Rejected(_) => "rejected",
            Answer::Unreachable(_) => "unreachable",
            Answer::TimedOut(_) => "timed out",
            Answer::Failed(_) => "failed",
        }
    }

    pub(crate) fn detail(&self) -> &str {
        match self {
            Answer::Applied(s)
            | Answer::Rejected(s)
            | Answer::Unreachable(s)
            | Answer::TimedOut(s)
            | Answer::Failed(s) => s,
        }
    }
}

pub(crate) fn load(path: &Path) -> Result<ClusterConfig> {
    let cfg = ClusterConfig::load(path)
        .with_context(|| format!("cannot load the cluster config {}", path.display()))?;
    cfg.validate()
        .with_context(|| format!("bad cluster config {}", path.display()))?;
    Ok(cfg)
}

/// One cluster call to `@bee_config` on `node` at `addr`, on a connection of its own.
pub(crate) async fn ask(
    node: &str,
    addr: &str,
    values: &[Value],
    timeout: Duration,
    secret: Option<&AuthSecret>,
) -> Result<Vec<Value>, TransportError> {
    ask_service(node, addr, CONFIG_NAME, values, timeout, secret).await
}

/// One cluster call to `@service` on `node` at `addr`, on a connection of its own.
async fn ask_service(
    node: &str,
    addr: &str,
    service: &str,
    values: &[Value],
    timeout: Duration,
    secret: Option<&AuthSecret>,
) -> Result<Vec<Value>, TransportError> {
    let config = ChannelConfig {
        call_timeout: timeout,
        connect_timeout: timeout.min(Duration::from_secs(3)),
        auth_secret: secret.cloned(),
        ..ChannelConfig::default()
    };
    let channel = Channel::new(node, addr.to_string(), config);
    let payload = seri::pack(values).map_err(|e| TransportError::Codec(e.to_string()))?;
    let result = channel
        .call(
            Address::Name(Bytes::from(format!("@{service}"))),
            payload,
            Some(timeout),
        )
        .await;
    channel.close();
    let reply = result?;
    seri::unpack(&reply).map_err(|e| TransportError::Protocol {
        node: node.to_string(),
        reason: format!("the reply is not a skynet.pack payload: {e}"),
    })
}

/// Sort a transport error into unreachable / timed out / failed.
fn classify(e: TransportError) -> Answer {
    match e {
        TransportError::Connect { .. }
        | TransportError::PeerUnreachable { .. }
        | TransportError::NodeDown { .. } => Answer::Unreachable(e.to_string()),
        TransportError::Timeout { .. } => Answer::TimedOut(e.to_string()),
        TransportError::Remote { message, .. } => Answer::Failed(format!(
            "the node answered with an error (does it run a bee_config service?): {message}"
        )),
        other => Answer::Failed(other.to_string()),
    }
}

fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m{:02}s", s / 3600, (s / 60) % 60, s % 60),
    }
}

/// Print rows as columns separated by two spaces.
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `bee status`: one row per node — reachable, config version, hash, uptime,
/// incarnation, the headline numbers (services, messages handled, queued, peer
/// connections in/out), where its config came from. Fails when a node cannot be asked.
pub async fn status(a: StatusArgs) -> Result<()> {
    let cfg = if crate::etcd::is_url(&a.cluster) {
        let url = a.cluster.to_string_lossy();
        crate::etcd::read_cluster(&url, Duration::from_millis(a.timeout_ms)).await?
    } else {
        load(&a.cluster)?
    };
    let names: Vec<String> = if a.nodes.is_empty() {
        cfg.nodes.keys().cloned().collect()
    } else {
        for n in &a.nodes {
            if !cfg.nodes.contains_key(n) {
                bail!(
                    "node {n} is not in the cluster config {} (it names {})",
                    a.cluster.display(),
                    cfg.nodes.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
        }
        a.nodes.clone()
    };
    let timeout = Duration::from_millis(a.timeout_ms);
    let secret = crate::ops::client_secret()?;
    let secret = &secret;
    if a.json {
        return status_json(&a, &cfg, &names, timeout, secret.as_ref()).await;
    }
    let asks = names.iter().map(|name| {
        let entry = cfg.nodes.get(name).cloned();
        async move {
            let NodeEntry::Up(addr) = entry.unwrap_or(NodeEntry::Down) else {
                return (name.clone(), "false".to_string(), None);
            };
            let values = [Value::from("lua"), Value::from("config")];
            let got = ask(name, &addr, &values, timeout, secret.as_ref()).await;
            (name.clone(), addr, Some(got))
        }
    });
    let results = futures::future::join_all(asks).await;
    let mut rows = vec![[
        "NODE",
        "ADDRESS",
        "REACHABLE",
        "VERSION",
        "HASH",
        "UPTIME",
        "INCARNATION",
        "SERVICES",
        "HANDLED",
        "QUEUED",
        "PEERS IN/OUT",
        "CONFIG FROM",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect::<Vec<_>>()];
    let mut bad = 0usize;
    for (name, addr, got) in results {
        let row = match got {
            None => vec![name, addr, "marked down".into()],
            Some(Ok(values)) => match ConfigReport::from_values(&values) {
                Ok(r) => {
                    let mut row = vec![
                        name.clone(),
                        addr,
                        "yes".into(),
                        r.version.to_string(),
                        if r.hash.is_empty() {
                            "-".into()
                        } else {
                            r.hash
                        },
                        uptime(r.uptime_ms),
                        r.incarnation.to_string(),
                        r.services.to_string(),
                        r.handled.to_string(),
                        r.queued.to_string(),
                        format!(
                            "{}/{} ({} up)",
                            r.peers_in, r.peers_out, r.peers_out_connected
                        ),
                        r.source,
                    ];
                    if !r.node.is_empty() && r.node != name {
                        bad += 1;
                        row.push(format!("(answered as node {}: check the config)", r.node));
                    }
                    row
                }
                Err(e) => {
                    bad += 1;
                    vec![name, addr, format!("bad reply: {e}")]
                }
            },
            Some(Err(e)) => {
                bad += 1;
                let a = classify(e);
                vec![name, addr, format!("no: {} ({})", a.word(), a.detail())]
            }
        };
        rows.push(row);
    }
    print!("{}", table(&rows));
    if bad > 0 {
        bail!("{bad} node(s) could not report their config");
    }
    Ok(())
}

/// `bee status --json`: ask every node for `bee_clusterd status` (all at once, each
/// within the timeout) and print the cluster view as `/api/v1/cluster` would. Fails
/// (after printing) when a node did not answer.
async fn status_json(
    a: &StatusArgs,
    cfg: &ClusterConfig,
    names: &[String],
    timeout: Duration,
    secret: Option<&AuthSecret>,
) -> Result<()> {
    use crate::status::{Answer as Said, Gathered};
    let asks = names.iter().map(|name| {
        let entry = cfg.nodes.get(name).cloned().unwrap_or(NodeEntry::Down);
        async move {
            let t0 = std::time::Instant::now();
            let NodeEntry::Up(addr) = entry else {
                return Gathered {
                    name: name.clone(),
                    address: "down".into(),
                    answer: Said::None("marked down in the cluster config".into()),
                    took: t0.elapsed(),
                };
            };
            let values = [Value::from("status")];
            let got = ask_service(name, &addr, "bee_clusterd", &values, timeout, secret).await;
            let answer = match got {
                Ok(values) => match values.first().and_then(Value::as_str) {
                    Some(text) => match serde_json::from_str(text) {
                        Ok(v) => Said::Status(v),
                        Err(e) => Said::Error(format!("bee_clusterd status: not JSON: {e}")),
                    },
                    None => Said::Error("bee_clusterd status: the answer is not a text".into()),
                },
                // It answered, without a status (a stock skynet node, say).
                Err(e @ (TransportError::Remote { .. } | TransportError::Protocol { .. })) => {
                    Said::Error(e.to_string())
                }
                // Connected, but no answer in time.
                Err(e @ TransportError::Timeout { .. }) => Said::Silent(e.to_string()),
                Err(e) => Said::None(e.to_string()),
            };
            Gathered {
                name: name.clone(),
                address: addr,
                answer,
                took: t0.elapsed(),
            }
        }
    });
    let answers = futures::future::join_all(asks).await;
    let source = a.cluster.display().to_string();
    let mut view = crate::status::assemble("bee status", answers, source.clone());
    view.timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    if crate::etcd::is_url(&a.cluster) {
        view.header.etcd =
            Some(crate::status::EtcdHealth::of(&crate::etcd::Probe::new(source)).await);
    }
    println!("{}", serde_json::to_string_pretty(&view)?);
    if !view.not_answered.is_empty() {
        bail!(
            "{} node(s) did not answer: {}",
            view.not_answered.len(),
            view.not_answered.join(", ")
        );
    }
    Ok(())
}

pub(crate) fn who() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    if host.is_empty() {
        format!("bee config push (pid {})", std::process::id())
    } else {
        format!("bee config push on {host} (pid {})", std::process::id())
    }
}

/// The text to send for NEW: as written (its line numbers are the ones nodes quote),
/// unless a node would read it in the other form; then bee's own rendering of it.
pub(crate) fn push_text(path: &Path, text: String, new: &ClusterConfig) -> String {
    let form = if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
    {
        ConfigForm::Toml
    } else {
        ConfigForm::Lua
    };
    if ConfigForm::detect(&text) == form {
        text
    } else {
        new.to_string_in(form)
    }
}

/// Read and check NEW: its text (as it will be sent) and the config it holds. Nothing
/// is sent when this fails.
pub(crate) fn read_new(path: &Path) -> Result<(String, ClusterConfig)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the new cluster config {}", path.display()))
        .context("nothing was pushed")?;
    let new = load(path).context("nothing was pushed")?;
    Ok((push_text(path, text, &new), new))
}

/// Every node of `configs` with an address (a node that moved is listed at each of
/// its addresses), and the nodes marked down in all of them.
pub(crate) fn targets(
    configs: &[&ClusterConfig],
) -> (BTreeSet<(String, String)>, BTreeSet<String>) {
    let mut targets: BTreeSet<(String, String)> = BTreeSet::new();
    let mut skipped: BTreeSet<String> = BTreeSet::new();
    for cfg in configs {
        for (name, entry) in &cfg.nodes {
            match entry {
                NodeEntry::Up(addr) => {
                    targets.insert((name.clone(), addr.clone()));
                }
                NodeEntry::Down => {
                    skipped.insert(name.clone());
                }
            }
        }
    }
    skipped.retain(|n| !targets.iter().any(|(t, _)| t == n));
    (targets, skipped)
}

/// Print one line per node and the summary; the error (exit status 1) unless every
/// node that could be reached applied it (`require_all`: unless every node applied it).
pub(crate) fn finish(
    answers: &[(String, String, Answer)],
    skipped: &BTreeSet<String>,
    new: &ClusterConfig,
    require_all: bool,
) -> Result<()> {
    let mut rows = Vec::new();
    let mut count = [0usize; 5];
    for (name, addr, answer) in answers {
        count[match answer {
            Answer::Applied(_) => 0,
            Answer::Rejected(_) => 1,
            Answer::Unreachable(_) => 2,
            Answer::TimedOut(_) => 3,
            Answer::Failed(_) => 4,
        }] += 1;
        rows.push(vec![
            name.clone(),
            addr.clone(),
            answer.word().to_string(),
            answer.detail().to_string(),
        ]);
    }
    for name in skipped {
        rows.push(vec![
            name.clone(),
            "false".into(),
            "skipped".into(),
            "marked down in both configs".into(),
        ]);
    }
    print!("{}", table(&rows));
    let summary = format!(
        "version {} hash {}: {} applied, {} rejected, {} unreachable, {} timed out, {} failed (of {})",
        new.version,
        new.content_hash().short(),
        count[0],
        count[1],
        count[2],
        count[3],
        count[4],
        answers.len()
    );
    println!("{summary}");
    let not_applied = count[1] + count[3] + count[4];
    if not_applied > 0 {
        return Err(anyhow!(
            "not every reachable node applied the config: {summary}"
        ));
    }
    if require_all && count[2] > 0 {
        return Err(anyhow!(
            "--require-all: {} node(s) could not be reached: {summary}",
            count[2]
        ));
    }
    Ok(())
}

/// Send `text` to every `(node, address)` at once, each on its own connection, each
/// answer awaited at most `timeout`: the same requests `bee config push` sends.
pub(crate) async fn push_to_nodes(
    targets: &BTreeSet<(String, String)>,
    text: &str,
    force: bool,
    from: &str,
    timeout: Duration,
    secret: Option<&AuthSecret>,
) -> Vec<(String, String, Answer)> {
    let values = [
        Value::from("lua"),
        Value::from("config_push"),
        Value::from(text),
        Value::from(force),
        Value::from(from),
    ];
    let asks = targets.iter().map(|(name, addr)| {
        let values = &values;
        async move {
            let answer = match ask(name, addr, values, timeout, secret).await {
                Ok(values) => match PushOutcome::from_values(&values) {
                    Ok(PushOutcome::Applied {
                        version,
                        hash,
                        diff,
                    }) => Answer::Applied(format!(
                        "version {version} hash {} ({diff})",
                        if hash.is_empty() { "-" } else { &hash }
                    )),
                    Ok(PushOutcome::Rejected {
                        reason, version, ..
                    }) => Answer::Rejected(format!("{reason} (still runs version {version})")),
                    Err(e) => Answer::Failed(format!("bad reply: {e}")),
                },
                Err(e) => classify(e),
            };
            (name.clone(), addr.clone(), answer)
        }
    });
    futures::future::join_all(asks).await
}

/// `bee config push` to files: check NEW, send it to every node of CURRENT ∪ NEW (each
/// address once), print one line per node and a summary. (With an etcd CURRENT the
/// command runs `etcd_push.rs` instead.)
pub async fn push(a: PushArgs) -> Result<()> {
    let current = load(&a.cluster)?;
    let (text, new) = read_new(&a.new)?;
    let (targets, skipped) = targets(&[&current, &new]);
    let timeout = Duration::from_millis(a.timeout_ms);
    let secret = crate::ops::client_secret()?;
    let answers = push_to_nodes(&targets, &text, a.force, &who(), timeout, secret.as_ref()).await;
    finish(&answers, &skipped, &new, a.require_all)
}
