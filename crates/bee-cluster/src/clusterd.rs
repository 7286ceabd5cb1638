//! `bee_clusterd` (one per node, also named `bee_config`): the console face of the
//! cluster layer and the receiver of the config lifecycle's requests.

use std::time::Instant;

use bee_codec::seri::{self, Table, Value};
use bee_registry::ClusterConfig;
use bee_runtime::service::fmt_addr;
use bee_runtime::{Addr, Context, HandleResult, Message, Service, ServiceError};

use crate::state::Cluster;

/// `bee_clusterd`: the console face of the cluster layer.
pub(crate) struct Clusterd {
    pub(crate) cluster: Cluster,
}

impl Service for Clusterd {
    async fn handle(&mut self, ctx: &mut Context, msg: Message) -> HandleResult {
        let args = seri::unpack(&msg.payload)?;
        // ("lua", command, args…) as services send it, or (command, args…) as typed
        // on a console (`bee call … bee_clusterd services`).
        let args: Vec<Value> = match args.first().and_then(Value::as_bytes) {
            Some(b"lua") => args.into_iter().skip(1).collect(),
            _ => args,
        };
        let cmd = args.first().and_then(Value::as_str).unwrap_or("");
        let arg = |i: usize| args.get(i).and_then(Value::as_str).map(str::to_string);
        let reply: Vec<Value> = match cmd {
            "services" => ctx
                .node()
                .services()
                .into_iter()
                .map(|s| {
                    let mut t = Table::default();
                    t.insert(Value::from("addr"), Value::from(fmt_addr(s.addr)));
                    t.insert(Value::from("label"), Value::from(s.label));
                    t.insert(Value::from("names"), Value::from(s.names.join(",")));
                    t.insert(Value::from("handled"), Value::Integer(s.handled as i64));
                    t.insert(Value::from("queued"), Value::Integer(s.queued as i64));
                    Value::Table(t)
                })
                .collect(),
            "senders" => self
                .cluster
                .senders()
                .into_iter()
                .map(|(n, s, _)| {
                    Value::from(format!(
                        "{n} connected={} in_flight={} reconnects={}",
                        s.connected, s.in_flight, s.reconnects
                    ))
                })
                .collect(),
            "nodes" => vec![Value::from(self.cluster.inner.registry.config().to_lua_string())],
                            "names" => ctx
                    .node()
                    .names()
                    .into_iter()
                .map(|(n, a)| Value::from(format!("{n} = {}", fmt_addr(a))))
                .collect(),
            "reload" => {
                let text = arg(1).ok_or_else(|| ServiceError::msg("reload needs the config text"))?;
                let cfg = ClusterConfig::parse_lua(&text)?;
                let diff = self.cluster.reload(cfg);
                vec![Value::from(diff.to_string())]
            }
            "register" => {
                let name = arg(1).ok_or_else(|| ServiceError::msg("register needs a name"))?;
                let addr = args.get(2).and_then(Value::as_int).unwrap_or(msg.source as i64) as Addr;
                self.cluster.register(&name, addr)?;
                vec![Value::Integer(addr as i64)]
            }
            "unregister" => {
                let name = arg(1).ok_or_else(|| ServiceError::msg("unregister needs a name"))?;
                vec![self
                    .cluster
                    .unregister(&name)
                    .map(|a| Value::Integer(a as i64))
                    .unwrap_or(Value::Nil)]
            }
            "config" => vec![self.cluster.report().to_value()],
            "goaway" => {
                // A peer drains: what we send it next goes on a new connection.
                let peer = arg(1).ok_or_else(|| ServiceError::msg("goaway needs a node name"))?;
                self.cluster.note_event(format!("{peer} is draining (said goaway)"));
                vec![Value::Boolean(self.cluster.retire(&peer))]
            }
            "config_push" => {
                let text = arg(1)
                    .ok_or_else(|| ServiceError::msg("config_push needs the config text"))?;
                let force = args.get(2).and_then(Value::as_bool).unwrap_or(false);
                let from = arg(3).unwrap_or_else(|| fmt_addr(msg.source));
                // Pushed over an accepted connection: which peer, for the auth rule.
                let peer = self.cluster.inner.agents.get(&msg.source).map(|a| a.peer);
                self.cluster
                    .push_checked(&text, force, &from, peer)
                    .to_values()
            }
            "hello" => {
                // The caller may say who it is: a node of the config that says hello with
                // a new incarnation has restarted.
                if let (Some(peer), Some(inc)) = (arg(1), args.get(2).and_then(Value::as_int)) {
                    let known = self.cluster.registry().config().nodes.contains_key(&peer);
                    if known && peer != self.cluster.node_name() {
                        if let Ok(inc) = u64::try_from(inc) {
                            self.cluster.registry().set_peer_incarnation(&peer, inc);
                        }
                        // Said on an accepted connection: tell this peer when our names
                        // change (recorded before the names are read for the answer).
                        if let Some(mut a) = self.cluster.inner.agents.get_mut(&msg.source) {
                            a.node = Some(peer);
                        }
                    }
                }
                self.cluster.own_hello().to_values()
            }
            "names_changed" => {
                // A peer says its names changed: say hello to it to read them (in the
                // background; the hello answer is the one source of a peer's names).
                let peer = arg(1).ok_or_else(|| ServiceError::msg("names_changed needs a node name"))?;
                let number = |i: usize| args.get(i).and_then(Value::as_int).and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
                let (inc, generation) = (number(2), number(3));
                let known = self.cluster.registry().config().nodes.contains_key(&peer);
                let newer = self
                    .cluster
                    .registry()
                    .peer_names(&peer)
                    .is_none_or(|p| (inc, generation) > (p.incarnation, p.generation));
                if known && newer && peer != self.cluster.node_name() {
                    let cluster = self.cluster.clone();
                    tokio::spawn(async move {
                        if let Err(e) = cluster.hello(&peer).await {
                            tracing::debug!(node = %cluster.inner.node_name, %peer, error = %e, "hello after names_changed not answered");
                        }
                    });
                }
                vec![Value::Boolean(known)]
            }
            "status" => {
                let source = self
                    .cluster
                    .inner
                    .status
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                match source {
                    Some(f) => vec![Value::from(f())],
                    None => {
                        return Err(ServiceError::msg(
                            "bee_clusterd: this node serves no status (run by `bee run` with metrics_listen)",
                        ))
                    }
                }
            }
            "events" => self
                .cluster
                .recent_events()
                .into_iter()
                .map(|(at, e)| Value::from(format!("{at} {e}")))
                .collect(),
            "ping" => {
                let peer = arg(1).ok_or_else(|| ServiceError::msg("ping needs a node name"))?;
                // Answer from a task: clusterd keeps serving while the peer answers.
                let Some(reply) = ctx.take_reply() else {
                    return Ok(None);
                };
                let cluster = self.cluster.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    match cluster.hello(&peer).await {
                        Ok(h) => {
                            let mut values = vec![
                                Value::from(h.node.as_str()),
                                Value::Integer(i64::try_from(h.incarnation).unwrap_or(i64::MAX)),
                            ];
                            values.push(Value::Integer(
                                i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX),
                            ));
                            match seri::pack(&values) {
                                Ok(b) => reply.ok(b),
                                Err(e) => reply.err(e),
                            }
                        }
                        Err(e) => reply.err(e),
                    }
                });
                return Ok(None);
            }
            "query" => {
                let name = arg(1).ok_or_else(|| ServiceError::msg("query needs a name"))?;
                                match ctx.node().resolve_public(&name) {
                    Some(a) => vec![Value::Integer(a as i64)],
                    None => return Err(ServiceError::msg("name not found")),
                }
            }
            other => {
                return Err(ServiceError::msg(format!(
                    "bee_clusterd: unknown command {other:?} (services, senders, nodes, names, reload, register, unregister, query, config, config_push, goaway, hello, names_changed, events, status, ping)"
                )))
            }
        };
        Ok(Some(seri::pack(&reply)?))
    }
}
