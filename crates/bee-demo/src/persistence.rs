//! `lpersistence`: the persistence front of node `lpersistence_3`.
//!
//! - `"lua"`: `ping` → `"pong", "<node>/<service>"`; `logins` → how many `LoginReq`
//!   frames it has seen (sent or called).
//! - `"text"`: `game.LoginReq` → `game.LoginResp`; `game.GetUserInfo` → `game.UserInfo`;
//!   `game.Ping` → `game.Pong`.
//!
//! (SQL goes to the `mysqlpool` sub-service of the same node, not through here.)

use bee_codec::Value;
use bee_dispatch::{Dispatcher, LuaTable, TextTable};
use bee_proto::game::{GetUserInfo, LoginReq, LoginResp, Ping, Pong, UserInfo};

/// The state of `lpersistence`.
#[derive(Debug, Default)]
pub struct Persistence {
    logins: u64,
}

/// Build the `lpersistence` service.
pub fn service() -> Dispatcher<Persistence> {
    Dispatcher::new(Persistence::default())
        .lua(
            LuaTable::new()
                .command("ping", |_s: &mut Persistence, ctx, _args| {
                    Ok(vec![
                        Value::from("pong"),
                        Value::from(format!("{}/{}", ctx.node().name(), ctx.label())),
                    ])
                })
                .command("logins", |s: &mut Persistence, _ctx, _args| {
                    Ok(vec![Value::from(s.logins as i64)])
                }),
        )
        .text(
            TextTable::new()
                .on(|s: &mut Persistence, _ctx, _frame, m: LoginReq| {
                    s.logins += 1;
                    tracing::info!(uid = m.uid, device = %m.device, "login");
                    Ok(Some(LoginResp {
                        uid: m.uid,
                        code: 0,
                        nickname: format!("player{}", m.uid),
                    }))
                })
                .on(|_s: &mut Persistence, _ctx, _frame, m: GetUserInfo| {
                    Ok(Some(UserInfo {
                        uid: m.uid,
                        nickname: format!("player{}", m.uid),
                        level: (m.uid % 60) as i32 + 1,
                        coins: (m.uid % 100_000) as i64 * 10,
                    }))
                })
                .on(|_s: &mut Persistence, ctx, _frame, m: Ping| {
                    Ok(Some(Pong {
                        seq: m.seq,
                        served_by: format!("{}/{}", ctx.node().name(), ctx.label()),
                    }))
                }),
        )
}
