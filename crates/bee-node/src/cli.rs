//! The one-shot client commands: `bee call`, `bee send`, `bee query` — a "curl" for the
//! cluster. The client is a small node of its own (named `bee-cli-<pid>`) that loads the
//! cluster config (a file, or `etcd://host:port/PREFIX` as `bee status` reads it), sends
//! one request and prints the reply values.
//!
//! Arguments: integers, reals, `true`/`false`/`nil`, anything else a string. The
//! service is a registered name (`echo` or `@echo`) or an address (`:0000000a`, `0x0a`
//! or decimal).
//!
//! With `--proto FILE --msg NAME JSON` the request is instead one game frame of the
//! team's layout sent as `("text", frame)`: the message NAME of FILE written as JSON
//! ([`crate::frame`]), with `--uid`, `--roomid`, `--sub-type` (default 16, protobuf) and
//! `--rpc` (sub_type 18 with a session: an rpc request whose `rpc_response` the call
//! waits for). `bee call` prints the reply frame's message as JSON.
//!
//! Against nodes with node authentication, set `BEE_AUTH_SECRET_FILE` to the file holding
//! the cluster's secret (see [`crate::ops::client_secret`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bee_cluster::{Cluster, ClusterSettings};
use bee_codec::kkt::{KktFrame, SUBTYPE_PROTOBUF, SUBTYPE_RPC_SERVER};
use bee_codec::seri::{self, Value};
use bee_registry::{ClusterConfig, Registry};
use bee_runtime::{Node, RuntimeConfig, Target};

use crate::frame::{msg_arg, Protos};

/// Arguments of `bee call` and `bee send`.
#[derive(clap::Args)]
pub struct ClientArgs {
    /// The cluster config to find the node in: a file, or `etcd://host:port/PREFIX`.
    #[arg(long)]
    cluster: PathBuf,
    /// Timeout in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Send a game frame: the `.proto` file that defines `--msg` (and the reply).
    #[arg(long, requires = "msg")]
    proto: Option<PathBuf>,
    /// Send a game frame: the message's full name and the message as JSON, e.g.
    /// `--msg game.GetUserInfo '{"uid":10076447}'`.
    #[arg(long, num_args = 2, value_names = ["NAME", "JSON"], requires = "proto")]
    msg: Option<Vec<String>>,
    /// The frame's uid (the player; the shard key).
    #[arg(
        long,
        default_value_t = 0,
        allow_negative_numbers = true,
        requires = "msg"
    )]
    uid: i64,
    /// The frame's roomid.
    #[arg(long, default_value_t = 0, requires = "msg")]
    roomid: u32,
    /// The frame's sub_type (default 16, a protobuf message; 18 with --rpc).
    #[arg(long, requires = "msg")]
    sub_type: Option<u32>,
    /// An rpc request (sub_type 18, frame session 1): `bee call` waits for its
    /// `rpc_response` and prints it.
    #[arg(long, requires = "msg")]
    rpc: bool,
    /// The node to talk to.
    node: String,
    /// The service: a registered name (`echo`, `@echo`) or an address (`:0000000a`).
    service: String,
    /// The arguments: integers, reals, true/false/nil, anything else a string
    /// (negative numbers such as -7 are values, not options).
    #[arg(allow_negative_numbers = true)]
    args: Vec<String>,
}

/// Arguments of `bee query`.
#[derive(clap::Args)]
pub struct QueryArgs {
    /// The cluster config to find the node in: a file, or `etcd://host:port/PREFIX`.
    #[arg(long)]
    cluster: PathBuf,
    /// The node to ask.
    node: String,
    /// The registered name.
    name: String,
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

/// The cluster config named by `--cluster`: a file, or the config key in etcd.
async fn cluster_config(cluster: &std::path::Path, timeout: Duration) -> Result<ClusterConfig> {
    if crate::etcd::is_url(cluster) {
        return crate::etcd::read_cluster(&cluster.to_string_lossy(), timeout).await;
    }
    ClusterConfig::load(cluster)
        .with_context(|| format!("cannot load the cluster config {}", cluster.display()))
}

fn client_name() -> String {
    format!("bee-cli-{}", std::process::id())
}

async fn client(cluster: &std::path::Path, timeout: Duration) -> Result<Cluster> {
    let cfg = cluster_config(cluster, timeout).await?;
    let node = Node::new(client_name(), RuntimeConfig::default());
    let mut settings = ClusterSettings::default();
    settings.channel.call_timeout = timeout;
    settings.wait_for_node = Some(Duration::ZERO);
    settings.channel.auth_secret = crate::ops::client_secret()?;
    let c = Cluster::start(&node, Registry::new(cfg), settings);
    // The node must outlive the call: leak this one handle, the process ends soon.
    std::mem::forget(node);
    Ok(c)
}

/// A request built from the command line: skynet.pack values, or one game frame.
struct Request {
    payload: bytes::Bytes,
    /// With `--proto`: the messages to read the reply with.
    protos: Option<Protos>,
}

fn request(a: &ClientArgs) -> Result<Request> {
    let (Some(proto), Some(msg)) = (&a.proto, &a.msg) else {
        let values: Vec<Value> = a.args.iter().map(|s| parse_arg(s)).collect();
        return Ok(Request {
            payload: seri::pack(&values)?,
            protos: None,
        });
    };
    if !a.args.is_empty() {
        bail!(
            "with --msg the message is the request: unexpected arguments {:?}",
            a.args
        );
    }
    let (name, json) = msg_arg(msg)?;
    let protos = Protos::load(proto)?;
    let body = protos.encode_json(name, json)?;
    let sub_type = a.sub_type.unwrap_or(if a.rpc {
        SUBTYPE_RPC_SERVER
    } else {
        SUBTYPE_PROTOBUF
    });
    let mut frame = KktFrame::new(sub_type, a.uid, name.to_string(), body)
        .to(
            a.node.clone(),
            a.service.trim_start_matches('@').to_string(),
        )
        .from(client_name(), "bee-cli".to_string())
        .roomid(a.roomid);
    if a.rpc {
        frame = frame.session(1);
    }
    let frame = frame.encode().context("cannot build the frame")?;
    Ok(Request {
        payload: seri::pack(&[Value::from("text"), Value::String(frame)])?,
        protos: Some(protos),
    })
}

/// Print a reply frame: a header line on stderr, its message as JSON on stdout.
fn print_frame_reply(protos: &Protos, values: &[Value], how: &str) -> Result<()> {
    let frame = match values {
        [Value::String(f)] => f,
        _ => bail!(
            "the reply is not a game frame ({} value(s): {})",
            values.len(),
            values
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ),
    };
    let f = KktFrame::decode(frame).context("the reply is not a game frame")?;
    let name = String::from_utf8_lossy(&f.name).into_owned();
    eprintln!(
        "{name} (sub_type {}, uid {}, session {}, roomid {}) {how}",
        f.sub_type,
        f.uid,
        f.session,
        f.roomid_i32()
    );
    if name.is_empty() {
        println!("{}", String::from_utf8_lossy(&f.body));
        return Ok(());
    }
    println!("{}", protos.decode_json(&name, &f.body)?);
    Ok(())
}

/// `bee call`.
pub async fn call(a: ClientArgs) -> Result<()> {
    let req = request(&a)?;
    let cluster = client(&a.cluster, Duration::from_millis(a.timeout_ms)).await?;
    let target = parse_target(&a.service)?;
    let started = std::time::Instant::now();
    let reply = cluster
        .call(&a.node, target.clone(), req.payload)
        .await
        .with_context(|| format!("call to {target} on {} failed", a.node))?;
    let values = seri::unpack(&reply).context("the reply is not a skynet.pack payload")?;
    let how = format!("from {target} on {} in {:?}", a.node, started.elapsed());
    if let Some(protos) = &req.protos {
        return print_frame_reply(protos, &values, &how);
    }
    eprintln!("{} value(s) {how}", values.len());
    for v in values {
        println!("{v}");
    }
    Ok(())
}

/// `bee send`.
pub async fn send(a: ClientArgs) -> Result<()> {
    if a.rpc {
        bail!("--rpc waits for the rpc_response: use bee call");
    }
    let req = request(&a)?;
    let cluster = client(&a.cluster, Duration::from_millis(a.timeout_ms)).await?;
    let target = parse_target(&a.service)?;
    cluster
        .send(&a.node, target.clone(), req.payload)
        .await
        .with_context(|| format!("send to {target} on {} failed", a.node))?;
    // A push has no reply; a round trip on the same connection makes sure it was written.
    let _ = cluster.query(&a.node, "bee_clusterd").await;
    eprintln!("sent to {target} on {}", a.node);
    Ok(())
}

/// `bee query`.
pub async fn query(a: QueryArgs) -> Result<()> {
    let c = client(&a.cluster, Duration::from_secs(10)).await?;
    let addr = c
        .query(&a.node, &a.name)
        .await
        .with_context(|| format!("query of {} on {} failed", a.name, a.node))?;
    println!("{}", bee_runtime::service::fmt_addr(addr));
    Ok(())
}
