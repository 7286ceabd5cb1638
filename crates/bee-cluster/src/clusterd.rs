//! `bee_clusterd` (one per node, also named `bee_config`): the console face of the
//! cluster layer and the receiver of the config lifecycle's requests, as a
//! [`Dispatcher`] with one typed `"lua"` command each.
//!
//! | command | arguments | reply |
//! |---|---|---|
//! | `services` | | one table per service (`addr`, `label`, `names`, `handled`, `queued`) |
//! | `senders` | | one line per remote node's channel |
//! | `nodes` | | the running cluster config, as Lua text |
//! | `names` | | one `name = :addr` line per name |
//! | `reload` | config text (Lua) | the diff |
//! | `register` | name, address (default: the caller) | the address |
//! | `unregister` | name | the address it had, or nil |
//! | `query` | name | the address, or the error `name not found` |
//! | `config` | | [`crate::lifecycle::ConfigReport`] |
//! | `config_push` | text, force, from | [`crate::lifecycle::PushOutcome`] |
//! | `hello` | name, incarnation (both optional) | [`crate::lifecycle::Hello`] |
//! | `names_changed` | name, incarnation, names generation | whether the node is known |
//! | `goaway` | name | whether this node has a channel to it (logged as an event; the connection itself is retired by the in-band `goaway` on it) |
//! | `events` | | the recent registry events |
//! | `status` | | the node program's status text |
//! | `ping` | node | name, incarnation, microseconds of a `hello` round trip |
//!
//! A message is `("lua", command, args…)` as services send it, or `(command, args…)` as
//! typed on a console (`bee call … bee_clusterd services`): both reach the same table.

use std::time::Instant;

use bee_codec::seri::{self, Table, Value};
use bee_registry::ClusterConfig;
use bee_runtime::dispatcher::{serve, Incoming, Reply, Router};
use bee_runtime::service::fmt_addr;
use bee_runtime::{
    Addr, Context, Dispatcher, HandleResult, LuaTable, Message, Service, ServiceError,
};

use crate::state::Cluster;

/// `bee_clusterd`: the command table over the node's cluster handle.
pub(crate) struct Clusterd {
    commands: Dispatcher<Cluster>,
    /// The command names, for the error that answers an unknown one.
    known: Vec<String>,
}

impl Clusterd {
    pub(crate) fn new(cluster: Cluster) -> Clusterd {
        let table = commands();
        Clusterd {
            known: table.names(),
            commands: Dispatcher::new(cluster).lua(table),
        }
    }
}

impl Router for Clusterd {
    async fn route(&mut self, ctx: &mut Context, msg: Incoming) -> Result<Reply, ServiceError> {
        let values = match msg {
            Incoming::Lua(values) => values,
            // A console's (command, args…): the "sub-type" is the command.
            Incoming::Other(command, mut rest) => {
                rest.insert(0, Value::String(command));
                rest
            }
            _ => Vec::new(),
        };
        let command = values.first().and_then(Value::as_str).unwrap_or("");
        if !self.known.iter().any(|k| k == command) {
            return Err(ServiceError::msg(format!(
                "bee_clusterd: unknown command {command:?} ({})",
                self.known.join(", ")
            )));
        }
        self.commands.route(ctx, Incoming::Lua(values)).await
    }
}

impl Service for Clusterd {
    async fn handle(&mut self, ctx: &mut Context, msg: Message) -> HandleResult {
        serve(self, ctx, msg).await
    }
}

/// A number the wire carries as a Lua integer.
fn int(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Every command of `bee_clusterd`.
fn commands() -> LuaTable<Cluster> {
    LuaTable::new()
        .command_ctx("services", |_c: &mut Cluster, ctx, ()| {
            Ok(ctx
                .node()
                .services()
                .into_iter()
                .map(|s| {
                    let mut t = Table::default();
                    t.insert(Value::from("addr"), Value::from(fmt_addr(s.addr)));
                    t.insert(Value::from("label"), Value::from(s.label));
                    t.insert(Value::from("names"), Value::from(s.names.join(",")));
                    t.insert(Value::from("handled"), int(s.handled));
                    t.insert(Value::from("queued"), int(s.queued as u64));
                    Value::Table(t)
                })
                .collect::<Vec<Value>>())
        })
        .command("senders", |c: &mut Cluster, ()| {
            Ok(c.senders()
                .into_iter()
                .map(|(n, s, _)| {
                    Value::from(format!(
                        "{n} connected={} in_flight={} reconnects={}",
                        s.connected, s.in_flight, s.reconnects
                    ))
                })
                .collect::<Vec<Value>>())
        })
        .command("nodes", |c: &mut Cluster, ()| {
            Ok(c.registry().config().to_lua_string())
        })
        .command_ctx("names", |_c: &mut Cluster, ctx, ()| {
            Ok(ctx
                .node()
                .names()
                .into_iter()
                .map(|(n, a)| Value::from(format!("{n} = {}", fmt_addr(a))))
                .collect::<Vec<Value>>())
        })
        .command("reload", |c: &mut Cluster, text: String| {
            let cfg = ClusterConfig::parse_lua(&text)?;
            Ok(c.reload(cfg).to_string())
        })
        .command_ctx(
            "register",
            |c: &mut Cluster, ctx, (name, addr): (String, Option<i64>)| {
                let addr = match addr {
                    Some(a) => Addr::try_from(a)
                        .map_err(|_| ServiceError::msg(format!("register: {a} is not an address")))?,
                    None => ctx.source(),
                };
                c.register(&name, addr)?;
                Ok(i64::from(addr))
            },
        )
        .command("unregister", |c: &mut Cluster, name: String| {
            Ok(c.unregister(&name).map(i64::from))
        })
        .command_ctx("query", |_c: &mut Cluster, ctx, name: String| {
            match ctx.node().resolve_public(&name) {
                Some(a) => Ok(i64::from(a)),
                None => Err(ServiceError::msg("name not found")),
            }
        })
        .command("config", |c: &mut Cluster, ()| Ok(c.report().to_value()))
        .command_ctx(
            "config_push",
            |c: &mut Cluster, ctx, (text, force, from): (String, Option<bool>, Option<String>)| {
                let from = from.unwrap_or_else(|| fmt_addr(ctx.source()));
                // Pushed over an accepted connection: which peer, for the auth rule.
                let peer = c.inner.agents.get(&ctx.source()).map(|a| a.peer);
                Ok(c.push_checked(&text, force.unwrap_or(false), &from, peer)
                    .to_values())
            },
        )
        .command_ctx(
            "hello",
            |c: &mut Cluster, ctx, (peer, inc): (Option<String>, Option<i64>)| {
                // The caller may say who it is: a node of the config that says hello with
                // a new incarnation has restarted.
                if let (Some(peer), Some(inc)) = (peer, inc) {
                    let known = c.registry().config().nodes.contains_key(&peer);
                    if known && peer != c.node_name() {
                        if let Ok(inc) = u64::try_from(inc) {
                            c.registry().set_peer_incarnation(&peer, inc);
                        }
                        // Said on an accepted connection: tell this peer when our names
                        // change (recorded before the names are read for the answer).
                        if let Some(mut a) = c.inner.agents.get_mut(&ctx.source()) {
                            a.node = Some(peer);
                        }
                    }
                }
                Ok(c.own_hello().to_values())
            },
        )
        .command(
            "names_changed",
            |c: &mut Cluster, (peer, inc, generation): (String, Option<i64>, Option<i64>)| {
                // A peer says its names changed: say hello to it to read them (in the
                // background; the hello answer is the one source of a peer's names).
                let number = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
                let (inc, generation) = (number(inc), number(generation));
                let known = c.registry().config().nodes.contains_key(&peer);
                let newer = c
                    .registry()
                    .peer_names(&peer)
                    .is_none_or(|p| (inc, generation) > (p.incarnation, p.generation));
                if known && newer && peer != c.node_name() {
                    let cluster = c.clone();
                    tokio::spawn(async move {
                        if let Err(e) = cluster.hello(&peer).await {
                            tracing::debug!(node = %cluster.inner.node_name, %peer, error = %e, "hello after names_changed not answered");
                        }
                    });
                }
                Ok(known)
            },
        )
        .command("goaway", |c: &mut Cluster, peer: String| {
            // A peer drains. Its in-band goaway retires our connection to it; this
            // notice may come after we reconnected (to its successor), so it only
            // records the event.
            c.note_event(format!("{peer} is draining (said goaway)"));
            Ok(c.noted_goaway(&peer))
        })
        .command("events", |c: &mut Cluster, ()| {
            Ok(c.recent_events()
                .into_iter()
                .map(|(at, e)| Value::from(format!("{at} {e}")))
                .collect::<Vec<Value>>())
        })
        .command("status", |c: &mut Cluster, ()| {
            let source = c
                .inner
                .status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            match source {
                Some(f) => Ok(f()),
                None => Err(ServiceError::msg(
                    "bee_clusterd: this node serves no status (run by `bee run` with metrics_listen)",
                )),
            }
        })
        .command_ctx("ping", |c: &mut Cluster, ctx, peer: String| {
            // Answer from a task: clusterd keeps serving while the peer answers.
            let Some(reply) = ctx.take_reply() else {
                return Ok(());
            };
            let cluster = c.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                match cluster.hello(&peer).await {
                    Ok(h) => {
                        let values = [
                            Value::from(h.node.as_str()),
                            int(h.incarnation),
                            int(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)),
                        ];
                        match seri::pack(&values) {
                            Ok(b) => reply.ok(b),
                            Err(e) => reply.err(e),
                        }
                    }
                    Err(e) => reply.err(e),
                }
            });
            Ok(())
        })
}
