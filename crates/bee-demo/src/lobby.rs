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
//! | `activity`, N [, RULE] | N uids to `activity_master`, twice: same uid, same worker — the one RULE names (`"hash"`: bee's `worker_for`; `"modulo"`: the team's `1 + uid % n`, where uid 0 reaches every worker) |
//! | `cpp_shop` | rpc game.ShopBuy → `shop_master` → the C++ `shop.so` (Lua → C++ via redirect), which rpc-calls the C++ `mail.so` on `lpersistence_3` (C++ → C++) before it answers |
//! | `cpp_send` | a one-way ShopBuy from `lobby`: the C++ shop pushes its receipt to `lobby` (C++ → Lua send) and a mail to the C++ mail (C++ → C++ send) |
//! | `cpp_rpc` | the C++ mail looks a player up at `lpersistence` (C++ → Lua rpc_call); `mail_ghost`'s lookup at a dead node times out in the C++ callback |
//! | `native_send` | `lobby_native` → CServiceProxy → `lpersistence` (a game frame) |
//! | `native_rpc` | `lobby_native` rpc_call → `lpersistence` (game.Ping, game.LoginReq) |
//! | `errors` | unknown node, unknown name, unknown command, unknown message: readable errors |
//! | `load_start`, `load_stop` | a steady load on `lpersistence` while `cargo xtask demo` upgrades its node in place ([`crate::load`]) |

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bee_cluster::native::{spawn_native, NativeEndpoint, NativeHandler};
use bee_cluster::{Cluster, Target};
use bee_codec::kkt::KktFrame;
use bee_codec::seri::{self, Value};
use bee_proto::game::{
    ActivityProgress, ActivityState, GetUserInfo, LoginReq, LoginResp, Ping, Pong, ShopBuy,
    ShopReceipt, UserInfo,
};
use bee_proto::mail;
use bee_runtime::lua::LuaResult;
use bee_runtime::service::fmt_addr;
use bee_runtime::shard::{worker_for, ShardRule};
use bee_runtime::text::{frame_of, TextReply};
use bee_runtime::Handle;
use bee_runtime::{Addr, Dispatcher, Node, ServiceError};
use bytes::Bytes;

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
    /// game.ShopReceipt frames pushed to `lobby_inbox` (by the C++ shop): count, last
    /// order id. A service of its own: `lobby` is busy running the scenario meanwhile.
    inbox: Arc<Mutex<(u64, i64)>>,
    /// The hot-update scenario's load, while it runs.
    load: Option<crate::load::Run>,
}

/// Start `lobby_native` (talking through the CServiceProxy at `proxy`) and `lobby` on
/// `node`; returns the lobby's address.
pub fn start(node: &Node, proxy: Addr) -> Result<Addr, ServiceError> {
    let cluster =
        Cluster::of(node).ok_or_else(|| ServiceError::msg("lobby needs the cluster layer"))?;
    let native = spawn_native(node, proxy, "lobby_native", LobbyNative)?;
    let inbox = Arc::new(Mutex::new((0u64, 0i64)));
    let counted = inbox.clone();
    let inbox_service = Dispatcher::new(()).on(move |_s, _ctx, _frame, r: ShopReceipt| {
        let mut c = counted.lock().unwrap_or_else(|e| e.into_inner());
        *c = (c.0 + 1, r.order_id);
        Ok(None::<ShopReceipt>)
    });
    let inbox_addr = node.spawn("lobby_inbox", inbox_service);
    node.set_name("lobby_inbox", inbox_addr);
    let lobby = Lobby {
        cluster,
        native,
        inbox,
        load: None,
    };
    // Each scenario is an async command: it gets a handle to the lobby state and the
    // typed arguments (`sql` takes an optional statement, `activity` a count).
    let service = Dispatcher::new(lobby)
        .command_async("persistence", |h, ()| {
            persistence(h.state(|s| s.cluster.clone()))
        })
        .command_async("sql", |h, statement: Option<String>| {
            sql(h.state(|s| s.cluster.clone()), statement)
        })
        .command_async("activity", |h, (n, rule): (Option<i64>, Option<String>)| {
            activity(
                h.state(|s| s.cluster.clone()),
                n.unwrap_or(20),
                rule.unwrap_or_else(|| "hash".into()),
            )
        })
        .command_async("cpp_shop", |h, ()| cpp_shop(h.state(|s| s.native.clone())))
        .command_async("cpp_send", |h, ()| cpp_send(h))
        .command_async("cpp_rpc", |h, ()| cpp_rpc(h.state(|s| s.native.clone())))
        .command_async("native_send", |h, ()| {
            let (cluster, native) = h.state(|s| (s.cluster.clone(), s.native.clone()));
            native_send(cluster, native)
        })
        .command_async("native_rpc", |h, ()| {
            native_rpc(h.state(|s| s.native.clone()))
        })
        .command_async("errors", |h, ()| {
            let (cluster, native) = h.state(|s| (s.cluster.clone(), s.native.clone()));
            errors(cluster, native)
        })
        .command_async("load_start", |h, ()| async move {
            if h.state(|s| s.load.is_some()) {
                return Err(ServiceError::msg("a load already runs (load_stop first)"));
            }
            let (run, lines) = crate::load::start(h.state(|s| s.cluster.clone())).await?;
            h.state(|s| s.load = Some(run));
            Ok(lines)
        })
        .command_async("load_stop", |h, ()| async move {
            let (cluster, run) = h.state(|s| (s.cluster.clone(), s.load.take()));
            let run = run.ok_or_else(|| ServiceError::msg("no load runs (load_start first)"))?;
            crate::load::stop(cluster, run).await
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

fn failed(what: &str) -> impl Fn(bee_runtime::CallError) -> ServiceError + '_ {
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
    c.send(n, addr, text_payload(frame(DEMO_UID as i64, &login)?)?)
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
    let payload = text_payload(frame(DEMO_UID as i64, &GetUserInfo { uid: DEMO_UID })?)?;
    let reply = c
        .call(n, addr, payload)
        .await
        .map_err(failed("call GetUserInfo"))?;
    let (uid, info) = unframe::<UserInfo>(&reply_frame(&reply)?)?;
    if uid != DEMO_UID as i64 || info.uid != DEMO_UID {
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

/// The worker (0-based) `uid` must land on under the master's rule, and how to say it.
fn expected_worker(rule: ShardRule, uid: u64, n: usize) -> (i32, String) {
    match rule {
        ShardRule::Hash => (worker_for(uid, n) as i32, "worker_for(uid, 8)".into()),
        // The team numbers workers from 1: worker 1 + uid % n is index uid % n.
        ShardRule::Modulo => ((uid % n as u64) as i32, format!("1 + uid % {n}")),
    }
}

async fn activity(c: Cluster, count: i64, rule: String) -> LuaResult {
    const WORKERS: usize = 8;
    let rule = ShardRule::parse(&rule).map_err(ServiceError::msg)?;
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
                .call(
                    n,
                    "activity_master",
                    text_payload(frame(*uid as i64, &progress)?)?,
                )
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
        let (expect, how) = expected_worker(rule, *uid, WORKERS);
        if w0 != w1 || w0 != expect {
            return Err(ServiceError::msg(format!(
                "uid {uid} landed on workers {w0} then {w1}; {how} says {expect}"
            )));
        }
        per_worker[w0 as usize % 64] += 1;
        let line = match rule {
            ShardRule::Hash => format!(
                "uid {uid:>9} → activity[{w0}] twice (progress {} → {})",
                seen[0].progress, seen[1].progress
            ),
            ShardRule::Modulo => format!(
                "uid {uid:>9} → activity {} = 1 + {uid} % {WORKERS} (index {w0}) twice (progress {} → {})",
                w0 + 1,
                seen[0].progress,
                seen[1].progress
            ),
        };
        t.step(t0, line);
    }
    let spread: Vec<String> = per_worker[..WORKERS]
        .iter()
        .enumerate()
        .map(|(i, k)| format!("[{i}]={k}"))
        .collect();
    t.note(format!("uids per worker: {}", spread.join(" ")));
    if rule == ShardRule::Modulo {
        // The team's uid 0: a message for every worker. The master pushes it to each and
        // answers a waiting caller with how many it reached; each worker then holds it.
        let t0 = Instant::now();
        let progress = ActivityProgress {
            uid: 0,
            activity_id: 7,
            delta: 1,
        };
        let reply = c
            .call(n, "activity_master", text_payload(frame(0, &progress)?)?)
            .await
            .map_err(failed("call activity_master with uid 0"))?;
        let reached = seri::unpack(&reply)
            .ok()
            .and_then(|v| v.first().and_then(Value::as_int));
        if reached != Some(WORKERS as i64) {
            return Err(ServiceError::msg(format!(
                "uid 0 should reach all {WORKERS} workers; the master answered {reached:?}"
            )));
        }
        let workers = seri::unpack(
            &c.call(
                n,
                "activity_master",
                lua_payload(&[Value::from("shard_workers")])?,
            )
            .await
            .map_err(failed("shard_workers"))?,
        )
        .map_err(|e| ServiceError::msg(e.to_string()))?;
        let mut holding = 0;
        for w in &workers {
            let addr = w
                .as_int()
                .and_then(|a| u32::try_from(a).ok())
                .ok_or_else(|| ServiceError::msg(format!("bad worker address {w}")))?;
            // The pushes may still be on their way: ask each worker a few times.
            for _ in 0..50 {
                let r = seri::unpack(
                    &c.call(
                        n,
                        Target::Addr(addr),
                        lua_payload(&[
                            Value::from("progress"),
                            Value::Integer(0),
                            Value::Integer(7),
                        ])?,
                    )
                    .await
                    .map_err(failed("progress of uid 0"))?,
                )
                .map_err(|e| ServiceError::msg(e.to_string()))?;
                if r.first().and_then(Value::as_int).unwrap_or(0) > 0 {
                    holding += 1;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if holding != WORKERS {
            return Err(ServiceError::msg(format!(
                "uid 0 reached {holding} of {WORKERS} workers"
            )));
        }
        t.step(
            t0,
            format!("uid 0 → every worker (the master reached {WORKERS}; all {holding} hold its progress)"),
        );
    }
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
    let f = frame_of((DEMO_UID + 1) as i64, &login);
    let size =
        f.encoded_len() + n.len() + "lpersistence".len() + "lobby".len() + "lobby_native".len();
    ep.send(n, "lpersistence", f)
        .await
        .map_err(|e| ServiceError::msg(e.to_string()))?;
    t.step(
        t0,
        format!(
            "lobby_native → CServiceProxy: frame [{n}/lpersistence ← lobby/lobby_native, sub_type 16] game.LoginReq (~{size} bytes) → pushed as \"text\""
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

fn rpc_failed(e: bee_cluster::native::RpcError) -> ServiceError {
    ServiceError::msg(e.to_string())
}

async fn native_rpc(ep: NativeEndpoint) -> LuaResult {
    let mut t = Transcript::new();
    let n = PERSISTENCE_NODE;
    let t0 = Instant::now();
    let reply = ep
        .rpc_call(
            n,
            "lpersistence",
            frame_of(
                DEMO_UID as i64,
                &Ping {
                    seq: 7,
                    sent_unix_ms: 0,
                },
            ),
            RPC_TIMEOUT,
        )
        .await
        .map_err(rpc_failed)?;
    let pong = crate::open::<Pong>(&reply)?;
    t.step(
        t0,
        format!("lobby_native → {n}/lpersistence: rpc_call game.Ping{{seq 7}} (sub_type 18, own session {}) → game.Pong{{seq {}, served_by {:?}}} (sub_type {}, names empty: a Lua-style reply)", reply.session, pong.seq, pong.served_by, reply.sub_type),
    );
    let t0 = Instant::now();
    let login = LoginReq {
        uid: DEMO_UID,
        token: "rpc".into(),
        device: "native".into(),
    };
    let reply = ep
        .rpc_call(
            n,
            "lpersistence",
            frame_of(DEMO_UID as i64, &login),
            RPC_TIMEOUT,
        )
        .await
        .map_err(rpc_failed)?;
    let resp = crate::open::<LoginResp>(&reply)?;
    t.step(
        t0,
        format!("lobby_native → {n}/lpersistence: rpc_call game.LoginReq → game.LoginResp{{code={}, nickname={:?}}}", resp.code, resp.nickname),
    );
    t.done()
}

/// The C++ shop's master on `shop_master`, and the C++ mail services' masters on
/// `lpersistence_3` (`mail_ghost` looks players up on a node that is never up).
const SHOP_MASTER: &str = "shop_master";
const MAIL_MASTER: &str = "mail_master";
const MAIL_GHOST_MASTER: &str = "mail_ghost_master";

fn buy(item_id: i32, count: i32) -> ShopBuy {
    ShopBuy {
        uid: DEMO_UID,
        item_id,
        count,
    }
}

/// The titles of `uid`'s mails at the C++ `mail` (an rpc mail.ListReq).
async fn mail_titles(ep: &NativeEndpoint) -> Result<Vec<String>, ServiceError> {
    let reply = ep
        .rpc_call(
            PERSISTENCE_NODE,
            MAIL_MASTER,
            frame_of(DEMO_UID as i64, &mail::ListReq { uid: DEMO_UID }),
            RPC_TIMEOUT,
        )
        .await
        .map_err(rpc_failed)?;
    Ok(crate::open::<mail::List>(&reply)?.titles)
}

/// Lua → C++ through the redirecting master, and C++ → C++ rpc across nodes: an rpc
/// game.ShopBuy to `shop_master`, handed to the C++ `shop`, which first rpc-calls
/// mail.Send at the C++ `mail` on `lpersistence_3`, then answers the caller.
async fn cpp_shop(ep: NativeEndpoint) -> LuaResult {
    let mut t = Transcript::new();
    let before = mail_titles(&ep).await?.len();
    let t0 = Instant::now();
    let reply = ep
        .rpc_call(
            SHOP_NODE,
            SHOP_MASTER,
            frame_of(DEMO_UID as i64, &buy(1001, 3)),
            RPC_TIMEOUT,
        )
        .await
        .map_err(rpc_failed)?;
    let r = crate::open::<ShopReceipt>(&reply)?;
    if r.item_id != 1001 || r.count != 3 || r.order_id < 1 {
        return Err(ServiceError::msg(format!(
            "the receipt does not match the order: {r:?}"
        )));
    }
    t.step(
        t0,
        format!(
            "lobby_native → {SHOP_NODE}/{SHOP_MASTER} → C++ shop.so: rpc_call game.ShopBuy{{item 1001 x3}} → game.ShopReceipt{{order {}, handled_by {:?}}} (reply names swapped, session {})",
            r.order_id, r.handled_by, reply.session
        ),
    );
    let titles = mail_titles(&ep).await?;
    if titles.len() != before + 1 {
        return Err(ServiceError::msg(format!(
            "the C++ shop's mail.Send did not reach the C++ mail: {before} → {} mails",
            titles.len()
        )));
    }
    t.note(format!(
        "C++ shop.so → {PERSISTENCE_NODE}/{MAIL_MASTER} → C++ mail.so (C++ → C++ rpc across nodes): mail {:?} stored, inbox now {}",
        titles.last().cloned().unwrap_or_default(),
        titles.len()
    ));
    t.done()
}

/// C++ → Lua send and C++ → C++ send: a one-way game.ShopBuy whose source is the
/// Lua-style `lobby_inbox`; the C++ shop answers one way with a game.ShopReceipt pushed
/// as `"text"` to it (it counts them) and sends mail.Send one way to the C++ mail.
async fn cpp_send(h: Handle<Lobby>) -> LuaResult {
    let mut t = Transcript::new();
    let (ep, inbox) = h.state(|s| (s.native.clone(), s.inbox.clone()));
    let count = || inbox.lock().unwrap_or_else(|e| e.into_inner()).0;
    let (receipts, mails) = (count(), mail_titles(&ep).await?.len());
    let t0 = Instant::now();
    let f = frame_of(DEMO_UID as i64, &buy(2002, 1))
        .to(SHOP_NODE, SHOP_MASTER)
        .from(h.node().name().to_string(), "lobby_inbox");
    ep.send_raw(f.encode()?, 0).await.map_err(rpc_failed)?;
    t.step(
        t0,
                format!("lobby → CServiceProxy → {SHOP_NODE}/{SHOP_MASTER} → C++ shop.so: one-way game.ShopBuy (source lobby/lobby_inbox)"),
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline
        && (count() == receipts || mail_titles(&ep).await?.len() == mails)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (now_receipts, now_mails) = (count(), mail_titles(&ep).await?.len());
    if now_receipts != receipts + 1 || now_mails != mails + 1 {
        return Err(ServiceError::msg(format!(
            "expected one receipt at lobby and one mail: receipts {receipts} → {now_receipts}, mails {mails} → {now_mails}"
        )));
    }
    t.step(
        t0,
                format!("C++ shop.so → lobby/lobby_inbox (C++ → Lua send): \"text\" game.ShopReceipt{{order {}}} counted; C++ shop.so → C++ mail.so (C++ → C++ send): inbox {mails} → {now_mails}", inbox.lock().unwrap_or_else(|e| e.into_inner()).1),
    );
    t.done()
}

/// C++ → Lua rpc_call, and an rpc into a dead node timing out in the C++ callback: the
/// C++ `mail` looks the player up with an rpc game.GetUserInfo at the Lua-style
/// `lpersistence`; `mail_ghost` looks up at node `ghost`, which is never up.
async fn cpp_rpc(ep: NativeEndpoint) -> LuaResult {
    let mut t = Transcript::new();
    let send = mail::Send {
        to_uid: DEMO_UID,
        from_uid: 1,
        title: "welcome".into(),
        text: "hello from the demo".into(),
    };
    let t0 = Instant::now();
    let reply = ep
        .rpc_call(
            PERSISTENCE_NODE,
            MAIL_MASTER,
            frame_of(DEMO_UID as i64, &send),
            RPC_TIMEOUT,
        )
        .await
        .map_err(rpc_failed)?;
    let ack = crate::open::<mail::Ack>(&reply)?;
    if ack.nickname != format!("player{DEMO_UID}") {
        return Err(ServiceError::msg(format!(
            "the C++ mail's lookup failed: {ack:?}"
        )));
    }
    t.step(
        t0,
        format!(
            "lobby_native → C++ mail.so: rpc mail.Send; mail.so → {PERSISTENCE_NODE}/lpersistence (C++ → Lua rpc_call) game.GetUserInfo → nickname {:?}; mail.Ack{{mail_id {}}}",
            ack.nickname, ack.mail_id
        ),
    );
    let t0 = Instant::now();
    let reply = ep
        .rpc_call(
            PERSISTENCE_NODE,
            MAIL_GHOST_MASTER,
            frame_of(DEMO_UID as i64, &send),
            RPC_TIMEOUT,
        )
        .await
        .map_err(rpc_failed)?;
    let ack = crate::open::<mail::Ack>(&reply)?;
    if !ack.lookup_error.contains("timed out") {
        return Err(ServiceError::msg(format!(
            "the lookup at the dead node should have timed out: {ack:?}"
        )));
    }
    t.step(
        t0,
        format!("lobby_native → C++ mail_ghost: its rpc to ghost/lpersistence (node down) times out in the C++ callback: lookup_error {:?}", ack.lookup_error),
    );
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
    let wrong = frame(DEMO_UID as i64, &ShopBuy::default())?;
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
            frame_of(DEMO_UID as i64, &ShopBuy::default()),
            Duration::from_millis(300),
        )
        .await
        .map(|f| f.body)
        .map_err(|e| e.to_string());
    t.step(
        t0,
        expect_err("native rpc_call game.ShopBuy to lpersistence (no handler: no reply, the rpc times out)", r)?,
    );
    t.done()
}

/// `lobby_native`: a native service on the lobby node. Its rpc calls are made by the
/// lobby through its endpoint; it answers `game.Ping` rpc requests itself.
struct LobbyNative;

impl NativeHandler for LobbyNative {
    async fn on_frame(&mut self, _endpoint: &NativeEndpoint, frame: KktFrame) -> Option<TextReply> {
        match crate::open::<Ping>(&frame) {
            Ok(p) => Some(TextReply::of(&Pong {
                seq: p.seq,
                served_by: "lobby/lobby_native".into(),
            })),
            Err(e) => {
                tracing::info!(error = %e, "lobby_native: frame ignored");
                None
            }
        }
    }
}
