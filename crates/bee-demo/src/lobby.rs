//! `lobby`: the service on node `lobby` that walks through the demo's scenarios, and
//! `lobby_native`, a native service beside it.
//!
//! Each `"lua"` command runs one scenario from the lobby node and returns what happened
//! as text lines (what was sent, from where to where, what came back, how long it
//! took). A scenario that does not see what it should returns an error instead, so the
//! caller (`cargo xtask demo`) can tell pass from fail.
//!
//! | command | scenario |
//! |---|---|
//! | `persistence` | query `lpersistence` on `lpersistence_3`, push a `"text"` LoginReq, call `"lua"` ping, call `"text"` GetUserInfo |
//! | `sql`, SQL | call `mysqlpool` on `lpersistence_3` with `"lua", "execute", SQL` |
//! | `activity`, N | N uids to `activity_master`, twice: same uid, same worker |
//! | `shop` | a ShopBuy frame to `shop_master`, redirected to the native `shop` |
//! | `native_send` | `lobby_native` → CServiceProxy → `lpersistence` (a game frame) |
//! | `native_rpc` | `lobby_native` rpc_call → `lpersistence` (`"lua"` and `"text"`) |
//! | `native_native` | `lobby_native` → `shop` on `shop_master`: send and rpc_call |
//! | `errors` | unknown node, unknown name, unknown command, unknown message: readable errors |

use std::time::{Duration, Instant};

use bee_codec::seri::{self, Value};
use bee_dispatch::cluster::{Cluster, Target};
use bee_dispatch::lua::LuaResult;
use bee_dispatch::native::{spawn_native, NativeEndpoint, NativeHandler};
use bee_dispatch::service::fmt_addr;
use bee_dispatch::shard::worker_for;
use bee_dispatch::{Addr, Dispatcher, Node, ServiceError};
use bee_proto::game::{
    ActivityProgress, ActivityState, GetUserInfo, LoginReq, LoginResp, ShopBuy, ShopReceipt,
    UserInfo,
};
use bytes::Bytes;
use futures::future::BoxFuture;

use crate::{frame, unframe};

/// The node holding `lpersistence` and `mysqlpool`.
pub const PERSISTENCE_NODE: &str = "lpersistence_3";
/// The node holding `activity_master`.
pub const ACTIVITY_NODE: &str = "activity_master";
/// The node holding `shop_master` and the native `shop`.
pub const SHOP_NODE: &str = "shop_master";
/// The uid the seed's backend queries.
pub const DEMO_UID: u64 = 10076447;
const RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// The lobby's state: the cluster handle and the endpoint of `lobby_native`.
pub struct Lobby {
    cluster: Cluster,
    native: NativeEndpoint,
}

/// Start `lobby_native` (talking through the CServiceProxy at `proxy`) and `lobby` on
/// `node`; returns the lobby's address.
pub fn start(node: &Node, proxy: Addr) -> Result<Addr, ServiceError> {
    let cluster =
        Cluster::of(node).ok_or_else(|| ServiceError::msg("lobby needs the cluster layer"))?;
    let native = spawn_native(node, proxy, "lobby_native", LobbyNative)?;
    let lobby = Lobby { cluster, native };
    // Each scenario is an async command: it gets a handle to the lobby state and the
    // typed arguments (`sql` takes an optional statement, `activity` a count).
    let service = Dispatcher::new(lobby)
        .command_async("persistence", |h, ()| {
            persistence(h.state(|s| s.cluster.clone()))
        })
        .command_async("sql", |h, (statement,): (Option<String>,)| {
            sql(h.state(|s| s.cluster.clone()), statement)
        })
        .command_async("activity", |h, (n,): (Option<i64>,)| {
            activity(h.state(|s| s.cluster.clone()), n.unwrap_or(20))
        })
        .command_async("shop", |h, ()| shop(h.state(|s| s.cluster.clone())))
        .command_async("native_send", |h, ()| {
            let (cluster, native) = h.state(|s| (s.cluster.clone(), s.native.clone()));
            native_send(cluster, native)
        })
        .command_async("native_rpc", |h, ()| {
            native_rpc(h.state(|s| s.native.clone()))
        })
        .command_async("native_native", |h, ()| {
            native_native(h.state(|s| s.native.clone()))
        })
        .command_async("errors", |h, ()| {
            let (cluster, native) = h.state(|s| (s.cluster.clone(), s.native.clone()));
            errors(cluster, native)
        });
    Ok(node.spawn("lobby", service))
}

/// The lines a scenario reports.
struct Transcript(Vec<Value>);

impl Transcript {
    fn new() -> Self {
        Transcript(Vec::new())
    }

    /// One line, with the time since `started`.
    fn step(&mut self, started: Instant, text: impl AsRef<str>) {
        let us = started.elapsed().as_micros();
        self.0
            .push(Value::from(format!("{:>9} µs  {}", us, text.as_ref())));
    }

    fn note(&mut self, text: impl AsRef<str>) {
        self.0
            .push(Value::from(format!("             {}", text.as_ref())));
    }

    fn done(self) -> LuaResult {
        Ok(self.0)
    }
}

fn pack(values: &[Value]) -> Result<Bytes, ServiceError> {
    Ok(seri::pack(values)?)
}

fn text_payload(frame: Bytes) -> Result<Bytes, ServiceError> {
    pack(&[Value::from("text"), Value::String(frame)])
}

fn lua_payload(args: &[Value]) -> Result<Bytes, ServiceError> {
    let mut v = vec![Value::from("lua")];
    v.extend_from_slice(args);
    pack(&v)
}

fn failed(what: &str) -> impl Fn(bee_dispatch::CallError) -> ServiceError + '_ {
    move |e| ServiceError::msg(format!("{what}: {e}"))
}

/// The single string a `"text"` call replies with (a game frame).
fn reply_frame(reply: &Bytes) -> Result<Bytes, ServiceError> {
    match seri::unpack(reply)?.into_iter().next() {
        Some(Value::String(b)) => Ok(b),
        other => Err(ServiceError::msg(format!(
            "expected a reply frame, got {}",
            other.map(|v| v.type_name()).unwrap_or("nothing")
        ))),
    }
}

fn show(values: &[Value]) -> String {
    values
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

async fn persistence(c: Cluster) -> LuaResult {
    let mut t = Transcript::new();
    let n = PERSISTENCE_NODE;

    let t0 = Instant::now();
    let addr = c.query(n, "lpersistence").await.map_err(failed("query"))?;
    t.step(
        t0,
        format!("lobby → {n}: query(\"lpersistence\") → {}", fmt_addr(addr)),
    );

    let t0 = Instant::now();
    let before = logins(&c, addr).await?;
    let login = LoginReq {
        uid: DEMO_UID,
        token: "demo-token".into(),
        device: "ios".into(),
    };
    c.send(n, addr, text_payload(frame(DEMO_UID, &login)?)?)
        .await
        .map_err(failed("send LoginReq"))?;
    t.step(
        t0,
        format!(
            "lobby → {n}/{}: send \"text\" game.LoginReq{{uid={DEMO_UID}}} (push, no reply)",
            fmt_addr(addr)
        ),
    );

    let t0 = Instant::now();
    let reply = c
        .call(n, addr, lua_payload(&[Value::from("ping")])?)
        .await
        .map_err(failed("call ping"))?;
    let values = seri::unpack(&reply)?;
    if values.first().and_then(Value::as_str) != Some("pong") {
        return Err(ServiceError::msg(format!(
            "ping answered {}",
            show(&values)
        )));
    }
    t.step(
        t0,
        format!(
            "lobby → {n}/{}: call \"lua\" \"ping\" → {}",
            fmt_addr(addr),
            show(&values)
        ),
    );

    let t0 = Instant::now();
    let payload = text_payload(frame(DEMO_UID, &GetUserInfo { uid: DEMO_UID })?)?;
    let reply = c
        .call(n, addr, payload)
        .await
        .map_err(failed("call GetUserInfo"))?;
    let (uid, info) = unframe::<UserInfo>(&reply_frame(&reply)?)?;
    if uid != DEMO_UID || info.uid != DEMO_UID {
        return Err(ServiceError::msg(format!(
            "UserInfo for the wrong uid {uid}"
        )));
    }
    t.step(
        t0,
        format!(
            "lobby → {n}/{}: call \"text\" game.GetUserInfo → game.UserInfo{{uid={}, nickname={:?}, level={}, coins={}}}",
            fmt_addr(addr),
            info.uid,
            info.nickname,
            info.level,
            info.coins
        ),
    );

    let after = logins(&c, addr).await?;
    if after <= before {
        return Err(ServiceError::msg(
            "the pushed LoginReq did not reach lpersistence",
        ));
    }
    t.note(format!(
        "lpersistence counted the pushed LoginReq: logins {before} → {after}"
    ));
    t.done()
}

async fn logins(c: &Cluster, addr: Addr) -> Result<i64, ServiceError> {
    let reply = c
        .call(
            PERSISTENCE_NODE,
            addr,
            lua_payload(&[Value::from("logins")])?,
        )
        .await
        .map_err(failed("call logins"))?;
    seri::unpack(&reply)?
        .first()
        .and_then(Value::as_int)
        .ok_or_else(|| ServiceError::msg("logins answered no number"))
}

async fn sql(c: Cluster, sql: Option<String>) -> LuaResult {
    let sql = sql.ok_or_else(|| ServiceError::msg("sql needs the SQL text"))?;
    let mut t = Transcript::new();
    let n = PERSISTENCE_NODE;
    let t0 = Instant::now();
    let addr = c
        .query(n, "mysqlpool")
        .await
        .map_err(failed("query mysqlpool"))?;
    t.step(
        t0,
        format!("lobby → {n}: query(\"mysqlpool\") → {}", fmt_addr(addr)),
    );
    let t0 = Instant::now();
    let reply = c
        .call(
            n,
            addr,
            lua_payload(&[Value::from("execute"), Value::from(sql.as_str())])?,
        )
        .await
        .map_err(failed("call mysqlpool"))?;
    let values = seri::unpack(&reply)?;
    let result = values.first().cloned().unwrap_or(Value::Nil);
    t.step(
        t0,
        format!("lobby → {n}/mysqlpool: call \"lua\" \"execute\" {sql:?}"),
    );
    t.note(format!("→ {result}"));
    if let Some(table) = result.as_table() {
        if table.get_str("badresult").and_then(Value::as_bool) == Some(true) {
            return Err(ServiceError::msg(format!("SQL failed: {result}")));
        }
    }
    t.done()
}

async fn activity(c: Cluster, count: i64) -> LuaResult {
    let mut t = Transcript::new();
    let n = ACTIVITY_NODE;
    let uids: Vec<u64> = (0..count.clamp(1, 1000) as u64)
        .map(|i| DEMO_UID + i * 7919)
        .collect();
    let mut per_worker = [0usize; 64];
    for uid in &uids {
        let mut seen = Vec::new();
        let t0 = Instant::now();
        for round in 0..2 {
            let progress = ActivityProgress {
                uid: *uid,
                activity_id: 7,
                delta: 1,
            };
            let reply = c
                .call(n, "activity_master", text_payload(frame(*uid, &progress)?)?)
                .await
                .map_err(failed("call activity_master"))?;
            let (_, state) = unframe::<ActivityState>(&reply_frame(&reply)?)?;
            if round == 1
                && state.progress
                    != seen
                        .last()
                        .map(|s: &ActivityState| s.progress + 1)
                        .unwrap_or(0)
            {
                return Err(ServiceError::msg(format!(
                    "uid {uid}: progress did not add up"
                )));
            }
            seen.push(state);
        }
        let (w0, w1) = (seen[0].worker, seen[1].worker);
        let expect = worker_for(*uid, 8) as i32;
        if w0 != w1 || w0 != expect {
            return Err(ServiceError::msg(format!(
                "uid {uid} landed on workers {w0} then {w1}; worker_for says {expect}"
            )));
        }
        per_worker[w0 as usize % 64] += 1;
        t.step(
            t0,
            format!(
                "uid {uid:>9} → activity[{w0}] twice (progress {} → {})",
                seen[0].progress, seen[1].progress
            ),
        );
    }
    let spread: Vec<String> = per_worker[..8]
        .iter()
        .enumerate()
        .map(|(i, k)| format!("[{i}]={k}"))
        .collect();
    t.note(format!("uids per worker: {}", spread.join(" ")));
    t.done()
}

async fn shop(c: Cluster) -> LuaResult {
    let mut t = Transcript::new();
    let n = SHOP_NODE;
    let buy = ShopBuy {
        uid: DEMO_UID,
        item_id: 1001,
        count: 3,
    };
    let t0 = Instant::now();
    let reply = c
        .call(n, "shop_master", text_payload(frame(DEMO_UID, &buy)?)?)
        .await
        .map_err(failed("call shop_master"))?;
    let (_, r) = unframe::<ShopReceipt>(&reply_frame(&reply)?)?;
    if r.item_id != buy.item_id || r.count != buy.count {
        return Err(ServiceError::msg("the receipt does not match the order"));
    }
    t.step(
        t0,
        format!(
            "lobby → {n}/shop_master: call \"text\" game.ShopBuy{{item 1001 x3}} → redirected to native shop → game.ShopReceipt{{order {}, handled_by {:?}}}",
            r.order_id, r.handled_by
        ),
    );
    t.done()
}

async fn native_send(c: Cluster, ep: NativeEndpoint) -> LuaResult {
    let mut t = Transcript::new();
    let n = PERSISTENCE_NODE;
    let addr = c.query(n, "lpersistence").await.map_err(failed("query"))?;
    let before = logins(&c, addr).await?;
    let t0 = Instant::now();
    let login = LoginReq {
        uid: DEMO_UID + 1,
        token: "native".into(),
        device: "native".into(),
    };
    let f = frame(DEMO_UID + 1, &login)?;
    ep.send(n, "lpersistence", &f)
        .await
        .map_err(|e| ServiceError::msg(e.to_string()))?;
    t.step(
        t0,
        format!(
            "lobby_native → CServiceProxy: proxy header [{n}][lpersistence] + game.LoginReq frame ({} bytes) → cluster push",
            4 + n.len() + "lpersistence".len() + f.len()
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut after = before;
    while after <= before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        after = logins(&c, addr).await?;
    }
    if after <= before {
        return Err(ServiceError::msg(
            "the native LoginReq did not reach lpersistence",
        ));
    }
    t.step(
        t0,
        format!("{n}/lpersistence received it: logins {before} → {after}"),
    );
    t.done()
}

async fn native_rpc(ep: NativeEndpoint) -> LuaResult {
    let mut t = Transcript::new();
    let n = PERSISTENCE_NODE;
    let t0 = Instant::now();
    let reply = ep
        .rpc_call(
            n,
            "lpersistence",
            &lua_payload(&[Value::from("ping")])?,
            RPC_TIMEOUT,
        )
        .await
        .map_err(|e| ServiceError::msg(e.to_string()))?;
    let values = seri::unpack(&reply)?;
    if values.first().and_then(Value::as_str) != Some("pong") {
        return Err(ServiceError::msg(format!(
            "rpc ping answered {}",
            show(&values)
        )));
    }
    t.step(
        t0,
        format!("lobby_native → {n}/lpersistence: rpc_call (envelope: own session, lobby/lobby_native) \"lua\" \"ping\" → {}", show(&values)),
    );
    let t0 = Instant::now();
    let inner = text_payload(frame(
        DEMO_UID,
        &LoginReq {
            uid: DEMO_UID,
            token: "rpc".into(),
            device: "native".into(),
        },
    )?)?;
    let reply = ep
        .rpc_call(n, "lpersistence", &inner, RPC_TIMEOUT)
        .await
        .map_err(|e| ServiceError::msg(e.to_string()))?;
    let (_, resp) = unframe::<LoginResp>(&reply)?;
    t.step(
        t0,
        format!("lobby_native → {n}/lpersistence: rpc_call \"text\" game.LoginReq → game.LoginResp{{code={}, nickname={:?}}}", resp.code, resp.nickname),
    );
    t.done()
}

async fn native_native(ep: NativeEndpoint) -> LuaResult {
    let mut t = Transcript::new();
    let n = SHOP_NODE;
    let orders = |reply: Bytes| -> Result<i64, ServiceError> {
        seri::unpack(&reply)?
            .first()
            .and_then(Value::as_int)
            .ok_or_else(|| ServiceError::msg("orders answered no number"))
    };
    let ask = lua_payload(&[Value::from("orders")])?;
    let before = orders(
        ep.rpc_call(n, "shop", &ask, RPC_TIMEOUT)
            .await
            .map_err(|e| ServiceError::msg(e.to_string()))?,
    )?;
    let t0 = Instant::now();
    let buy = ShopBuy {
        uid: DEMO_UID,
        item_id: 2002,
        count: 1,
    };
    ep.send(n, "shop", &frame(DEMO_UID, &buy)?)
        .await
        .map_err(|e| ServiceError::msg(e.to_string()))?;
    t.step(
        t0,
        format!("lobby_native → {n}/shop (native → native): send game.ShopBuy via CServiceProxy"),
    );
    let t0 = Instant::now();
    let after = orders(
        ep.rpc_call(n, "shop", &ask, RPC_TIMEOUT)
            .await
            .map_err(|e| ServiceError::msg(e.to_string()))?,
    )?;
    if after != before + 1 {
        return Err(ServiceError::msg(format!(
            "shop orders went {before} → {after}, expected +1"
        )));
    }
    t.step(t0, format!("lobby_native → {n}/shop: rpc_call \"lua\" \"orders\" → {after} (was {before}: the send arrived first)"));
    let t0 = Instant::now();
    let reply = ep
        .rpc_call(
            n,
            "shop",
            &text_payload(frame(DEMO_UID, &buy)?)?,
            RPC_TIMEOUT,
        )
        .await
        .map_err(|e| ServiceError::msg(e.to_string()))?;
    let (_, r) = unframe::<ShopReceipt>(&reply)?;
    t.step(t0, format!("lobby_native → {n}/shop: rpc_call \"text\" game.ShopBuy → game.ShopReceipt{{order {}, handled_by {:?}}}", r.order_id, r.handled_by));
    t.done()
}

async fn errors(c: Cluster, ep: NativeEndpoint) -> LuaResult {
    let mut t = Transcript::new();
    let n = PERSISTENCE_NODE;
    let expect_err = |what: &str, r: Result<Bytes, String>| -> Result<String, ServiceError> {
        match r {
            Ok(_) => Err(ServiceError::msg(format!(
                "{what} should have failed but succeeded"
            ))),
            Err(e) => Ok(format!("{what} → error: {e}")),
        }
    };
    let ping = lua_payload(&[Value::from("ping")])?;
    let t0 = Instant::now();
    let r = c
        .call("nosuchnode", "lpersistence", ping.clone())
        .await
        .map_err(|e| e.to_string());
    t.step(t0, expect_err("call to node nosuchnode", r)?);
    let t0 = Instant::now();
    let r = c
        .call(n, Target::Name("nosuchname".into()), ping.clone())
        .await
        .map_err(|e| e.to_string());
    t.step(t0, expect_err(&format!("call to {n}/@nosuchname"), r)?);
    let t0 = Instant::now();
    let r = c
        .call(n, "lpersistence", lua_payload(&[Value::from("nosuchcmd")])?)
        .await
        .map_err(|e| e.to_string());
    t.step(t0, expect_err("\"lua\" \"nosuchcmd\" to lpersistence", r)?);
    let t0 = Instant::now();
    let wrong = frame(DEMO_UID, &ShopBuy::default())?;
    let r = c
        .call(n, "lpersistence", text_payload(wrong)?)
        .await
        .map_err(|e| e.to_string());
    t.step(
        t0,
        expect_err("\"text\" game.ShopBuy to lpersistence (no handler)", r)?,
    );
    let t0 = Instant::now();
    let r = ep
        .rpc_call(
            n,
            "lpersistence",
            &lua_payload(&[Value::from("nosuchcmd")])?,
            RPC_TIMEOUT,
        )
        .await
        .map_err(|e| e.to_string());
    t.step(t0, expect_err("native rpc_call \"lua\" \"nosuchcmd\"", r)?);
    t.done()
}

/// `lobby_native`: a native service on the lobby node. Its rpc calls are made by the
/// lobby through its endpoint; it answers `("lua", "ping")` rpc calls itself.
struct LobbyNative;

impl NativeHandler for LobbyNative {
    fn on_frame(
        &mut self,
        _endpoint: &NativeEndpoint,
        frame: Bytes,
    ) -> BoxFuture<'_, Option<Bytes>> {
        tracing::info!(bytes = frame.len(), "lobby_native got a frame");
        Box::pin(async { None })
    }

    fn on_rpc(
        &mut self,
        _endpoint: &NativeEndpoint,
        inner: Bytes,
    ) -> BoxFuture<'_, Result<Bytes, String>> {
        let r = seri::unpack(&inner)
            .map_err(|e| e.to_string())
            .and_then(|v| {
                if v.get(1).and_then(Value::as_bytes) == Some(b"ping") {
                    seri::pack(&[Value::from("pong"), Value::from("lobby/lobby_native")])
                        .map_err(|e| e.to_string())
                } else {
                    Err("lobby_native answers (\"lua\", \"ping\")".to_string())
                }
            });
        Box::pin(async move { r })
    }
}
