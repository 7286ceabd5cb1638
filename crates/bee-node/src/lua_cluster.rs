//! `cluster.*` from Lua through bee's own cluster. In a node config that hosts skynet's
//! Lua (`kind = "snlua"`) on a cluster node, skynet's unchanged `skynet.cluster` library
//! asks `skynet.uniqueservice("clusterd")`; bee's C host serves that launch with the
//! Rust service here (see `bee_capi::Host::replace_lua_service`) instead of skynet's
//! `clusterd.lua`. It answers the library's messages (`sender`, `senders`, `listen`,
//! `reload`, `proxy`, `register`, `unregister`, `queryname`) from the node's [`Cluster`],
//! and the sender it hands out for a node is a Rust service that turns `req`/`push`
//! into [`Cluster::call`]/[`Cluster::send`] — so Lua's calls travel bee's channels with
//! their liveness, timeouts, ride-through, auth and metrics. Errors are written to
//! skynet's log as the readable text of bee's typed error; the Lua caller gets skynet's
//! `call failed`, as from skynet's own sender.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use bee_capi::Host;
use bee_cluster::{Cluster, Target};
use bee_codec::seri::{self, Table, Value};
use bee_registry::{ClusterConfig, NodeEntry};
use bee_runtime::service::{fmt_addr, ptype};
use bee_runtime::{Addr, CallError, Context, HandleResult, Message, Node, Service, ServiceError};
use bytes::Bytes;

/// How long `cluster.open` of the node's own name waits for the node's listener.
const LISTENER_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// What every `clusterd` of the node shares: the cluster and one sender per node.
struct Shared {
    cluster: Cluster,
    host: Weak<Host>,
    senders: Mutex<HashMap<String, Addr>>,
}

impl Shared {
    fn log(&self, source: Addr, line: &str) {
        let written = self
            .host
            .upgrade()
            .is_some_and(|h| h.skynet_log(source, line));
        if !written {
            tracing::warn!(service = %fmt_addr(source), "{line}");
        }
    }
}

/// Serve `LAUNCH snlua clusterd` on this node with bee's clusterd.
pub(crate) fn install(host: &Arc<Host>, cluster: Cluster) {
    let shared = Arc::new(Shared {
        cluster,
        host: Arc::downgrade(host),
        senders: Mutex::new(HashMap::new()),
    });
    host.replace_lua_service(
        "clusterd",
        Arc::new(move |node: &Node, _launcher: Addr, _args: &str| {
            Ok(node.spawn(
                "clusterd (bee)",
                LuaClusterd {
                    shared: shared.clone(),
                },
            ))
        }),
    );
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn pack(values: &[Value]) -> Result<Bytes, ServiceError> {
    seri::pack(values).map_err(ServiceError::msg)
}

fn str_arg(values: &[Value], i: usize, what: &str) -> Result<String, ServiceError> {
    values
        .get(i)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            ServiceError::msg(format!(
                "{what}: expected a string, got {}",
                values.get(i).map_or("nothing", Value::type_name)
            ))
        })
}

/// skynet's `clusterd`, answered from the node's [`Cluster`].
struct LuaClusterd {
    shared: Arc<Shared>,
}

impl LuaClusterd {
    fn sender(&self, ctx: &Context, node: &str) -> Addr {
        let mut senders = lock(&self.shared.senders);
        if let Some(a) = senders.get(node) {
            if ctx.node().is_alive(*a) {
                return *a;
            }
        }
        let addr = ctx.node().spawn(
            &format!("clustersender (bee) {node}"),
            LuaSender {
                shared: self.shared.clone(),
                node: Arc::from(node),
            },
        );
        if let Some(h) = self.shared.host.upgrade() {
            h.take_lua_buffers(addr);
        }
        senders.insert(node.to_string(), addr);
        addr
    }

    async fn command(&mut self, ctx: &mut Context, values: &[Value]) -> HandleResult {
        let cluster = &self.shared.cluster;
        let cmd = values.first().and_then(Value::as_str).unwrap_or("");
        match cmd {
            "sender" => {
                let node = str_arg(values, 1, "sender")?;
                let a = self.sender(ctx, &node);
                Ok(Some(pack(&[Value::Integer(i64::from(a))])?))
            }
            "senders" => {
                let mut t = Table::default();
                for (n, a) in lock(&self.shared.senders).iter() {
                    t.insert(Value::from(n.as_str()), Value::Integer(i64::from(*a)));
                }
                Ok(Some(pack(&[Value::Table(t)])?))
            }
            "listen" => {
                let addr = str_arg(values, 1, "cluster.open")?;
                match values.get(2).and_then(Value::as_int) {
                    None => {
                        let me = cluster.node_name();
                        if addr != me {
                            return Err(ServiceError::msg(format!(
                                "cluster.open {addr:?}: this bee node is {me:?} and listens as its own name only (its [cluster] listener); open {me:?}, or run a node named {addr:?}"
                            )));
                        }
                        // The node opens its listener once its configured services are
                        // started (after a takeover, once the predecessor handed it over),
                        // and a start script may get here first: wait for it, bounded.
                        let deadline = tokio::time::Instant::now() + LISTENER_WAIT;
                        let at = loop {
                            if let Some(at) = cluster.listening().into_iter().next() {
                                break at;
                            }
                            if tokio::time::Instant::now() >= deadline {
                                return Err(ServiceError::msg(format!(
                                    "cluster.open {addr:?}: the node has no cluster listener ({LISTENER_WAIT:?} after the call)"
                                )));
                            }
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        };
                        Ok(Some(pack(&[
                            Value::from(at.ip().to_string().as_str()),
                            Value::Integer(i64::from(at.port())),
                        ])?))
                    }
                    Some(port) => {
                        let at = cluster
                            .open(&format!("{addr}:{port}"))
                            .await
                            .map_err(|e| ServiceError::msg(format!("cluster.open {port}: {e}")))?;
                        Ok(Some(pack(&[
                            Value::from(at.ip().to_string().as_str()),
                            Value::Integer(i64::from(at.port())),
                        ])?))
                    }
                }
            }
            "reload" => {
                let cfg = match values.get(1) {
                    Some(Value::Table(t)) => merged(cluster.registry().config(), t)?,
                    None | Some(Value::Nil) => {
                        let file = self
                            .shared
                            .host
                            .upgrade()
                            .and_then(|h| h.env("cluster"))
                            .ok_or_else(|| {
                                ServiceError::msg(
                                    "cluster.reload(): no [env] cluster file to read again; pass a table, or use `bee config push`",
                                )
                            })?;
                        ClusterConfig::load(std::path::Path::new(&file))
                            .map_err(|e| ServiceError::msg(format!("cluster.reload(): {e}")))?
                    }
                    Some(v) => {
                        return Err(ServiceError::msg(format!(
                            "cluster.reload: expected a table, got {}",
                            v.type_name()
                        )))
                    }
                };
                let diff = cluster.reload(cfg);
                self.shared
                    .log(ctx.addr(), &format!("cluster config reloaded: {diff}"));
                Ok(Some(pack(&[Value::Nil])?))
            }
            "proxy" => {
                let (node, name) = match values.get(2) {
                    Some(Value::String(_)) => (str_arg(values, 1, "proxy")?, str_arg(values, 2, "proxy")?),
                    Some(Value::Integer(_)) => {
                        return Err(ServiceError::msg(
                            "cluster.proxy to a numeric address: not supported by bee; name the service (cluster.register)",
                        ))
                    }
                    _ => {
                        let full = str_arg(values, 1, "proxy")?;
                        match full.find(['@', '.']) {
                            Some(i) if i > 0 => (full[..i].to_string(), full[i..].to_string()),
                            _ => return Err(ServiceError::msg(format!("Invalid name {full}"))),
                        }
                    }
                };
                let a = cluster.proxy(&node, &name)?;
                if let Some(h) = self.shared.host.upgrade() {
                    h.take_lua_buffers(a);
                }
                Ok(Some(pack(&[Value::Integer(i64::from(a))])?))
            }
            "register" => {
                let name = str_arg(values, 1, "cluster.register")?;
                let addr = match values.get(2).and_then(Value::as_int) {
                    Some(a) => Addr::try_from(a).map_err(|_| {
                        ServiceError::msg(format!("cluster.register: {a} is not an address"))
                    })?,
                    None => ctx.source(),
                };
                cluster.register(&name, addr)?;
                self.shared
                    .log(ctx.addr(), &format!("Register [{name}] :{addr:08x}"));
                Ok(Some(Bytes::new()))
            }
            "unregister" => {
                let name = str_arg(values, 1, "cluster.unregister")?;
                if let Some(addr) = cluster.unregister(&name) {
                    self.shared
                        .log(ctx.addr(), &format!("Unregister [{name}] :{addr:08x}"));
                }
                Ok(Some(Bytes::new()))
            }
            "queryname" => {
                let name = str_arg(values, 1, "queryname")?;
                let a = ctx.node().resolve_public(name.trim_start_matches('@'));
                Ok(Some(pack(&[a.map_or(Value::Nil, |a| Value::Integer(i64::from(a)))])?))
            }
            other => Err(ServiceError::msg(format!(
                "clusterd (bee): unknown command {other:?} (sender, senders, listen, reload, proxy, register, unregister, queryname)"
            ))),
        }
    }
}

/// `cluster.reload{...}`: skynet merges the given entries into the running config.
fn merged(mut cfg: ClusterConfig, t: &Table) -> Result<ClusterConfig, ServiceError> {
    for (k, v) in &t.hash {
        let Some(key) = k.as_str() else {
            return Err(ServiceError::msg("cluster.reload: keys must be node names"));
        };
        if let Some(opt) = key.strip_prefix("__") {
            match (opt, v) {
                ("nowaiting", v) => cfg.nowaiting = v.as_bool().unwrap_or(false),
                ("version", v) => {
                    cfg.version = v.as_int().and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
                }
                (_, Value::String(s)) => {
                    let s = String::from_utf8_lossy(s);
                    cfg.options.insert(key.to_string(), format!("{s:?}"));
                }
                (_, v) => {
                    let text = match v {
                        Value::Integer(n) => n.to_string(),
                        Value::Real(f) => f.to_string(),
                        Value::Boolean(b) => b.to_string(),
                        _ => {
                            return Err(ServiceError::msg(format!(
                                "cluster.reload: {key}: unsupported value"
                            )))
                        }
                    };
                    cfg.options.insert(key.to_string(), text);
                }
            }
            continue;
        }
        let entry = match v {
            Value::String(_) => NodeEntry::Up(v.as_str().unwrap_or_default().to_string()),
            Value::Boolean(false) => NodeEntry::Down,
            other => {
                return Err(ServiceError::msg(format!(
                    "cluster.reload: node {key}: expected \"host:port\" or false, got {}",
                    other.type_name()
                )))
            }
        };
        cfg.nodes.insert(key.to_string(), entry);
    }
    cfg.validate()
        .map_err(|e| ServiceError::msg(format!("cluster.reload: {e}")))?;
    Ok(cfg)
}

impl Service for LuaClusterd {
    async fn handle(&mut self, ctx: &mut Context, msg: Message) -> HandleResult {
        if msg.ptype != ptype::LUA {
            return Err(ServiceError::msg(format!(
                "clusterd (bee): message type {} not understood",
                msg.ptype
            )));
        }
        let values = seri::unpack(&msg.payload).map_err(ServiceError::msg)?;
        let result = self.command(ctx, &values).await;
        if let Err(e) = &result {
            self.shared
                .log(ctx.addr(), &format!("clusterd: {}", e.message()));
        }
        result
    }
}

/// skynet's `clustersender` for one node: `req` and `push` through [`Cluster`].
struct LuaSender {
    shared: Arc<Shared>,
    node: Arc<str>,
}

/// The target of a request: `0` is a name query, a number an address, a string a name.
enum Dest {
    Query,
    To(Target),
}

fn dest(v: Option<&Value>) -> Result<Dest, ServiceError> {
    match v {
        Some(Value::Integer(0)) => Ok(Dest::Query),
        Some(Value::Integer(n)) => Addr::try_from(*n)
            .map(|a| Dest::To(Target::Addr(a)))
            .map_err(|_| ServiceError::msg(format!("cluster: {n} is not an address"))),
        Some(v @ Value::String(_)) => Ok(Dest::To(Target::from(v.as_str().unwrap_or_default()))),
        Some(v) => Err(ServiceError::msg(format!(
            "cluster: an address is a number or a name, got {}",
            v.type_name()
        ))),
        None => Err(ServiceError::msg("cluster: no address")),
    }
}

impl Service for LuaSender {
    async fn handle(&mut self, ctx: &mut Context, msg: Message) -> HandleResult {
        if msg.ptype != ptype::LUA {
            return Err(ServiceError::msg(format!(
                "clustersender (bee): message type {} not understood",
                msg.ptype
            )));
        }
        let mut values = seri::unpack(&msg.payload).map_err(ServiceError::msg)?;
        let cmd = values
            .first()
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if cmd == "changenode" {
            return Ok(Some(pack(&[Value::Nil])?));
        }
        if cmd != "req" && cmd != "push" {
            return Err(ServiceError::msg(format!(
                "clustersender (bee): unknown command {cmd:?} (req, push)"
            )));
        }
        let to = dest(values.get(1))?;
        let payload = match values.get_mut(2).map(|v| std::mem::replace(v, Value::Nil)) {
            Some(Value::String(b)) => b,
            _ => {
                return Err(ServiceError::msg(
                    "clustersender (bee): the message is not a packed block (send it with skynet.cluster)",
                ))
            }
        };
        let (shared, node, me) = (self.shared.clone(), self.node.clone(), ctx.addr());
        if cmd == "push" {
            let target = match to {
                Dest::To(t) => t,
                Dest::Query => return Err(ServiceError::msg("cluster.send to address 0")),
            };
            tokio::spawn(async move {
                if let Err(e) = shared.cluster.send(&node, target.clone(), payload).await {
                    shared.log(me, &format!("cluster.send {node} {target}: {e}"));
                }
            });
            return Ok(None);
        }
        let Some(reply) = ctx.take_reply() else {
            return Err(ServiceError::msg(
                "clustersender (bee): req without a session",
            ));
        };
        tokio::spawn(async move {
            let result = match to {
                Dest::To(target) => shared
                    .cluster
                    .call(&node, target.clone(), payload)
                    .await
                    .map_err(|e| (target.to_string(), e)),
                Dest::Query => query(&shared.cluster, &node, &payload).await,
            };
            match result {
                Ok(b) => reply.ok(b),
                Err((what, e)) => {
                    shared.log(me, &format!("cluster.call {node} {what}: {e}"));
                    reply.fail(e);
                }
            }
        });
        Ok(None)
    }
}

/// `cluster.query(node, name)`: the packed name in, the packed address out.
async fn query(
    cluster: &Cluster,
    node: &str,
    payload: &Bytes,
) -> Result<Bytes, (String, CallError)> {
    let name = seri::unpack(payload)
        .ok()
        .and_then(|v| v.first().and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default();
    let what = format!("query {name:?}");
    let addr = cluster
        .query(node, &name)
        .await
        .map_err(|e| (what.clone(), e))?;
    seri::pack(&[Value::Integer(i64::from(addr))]).map_err(|e| {
        (
            what,
            CallError::Failed {
                service: "clustersender (bee)".to_string(),
                message: e.to_string(),
            },
        )
    })
}
