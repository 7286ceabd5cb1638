//! `lpersistence`: the persistence front of node `lpersistence_3`.
//!
//! - `"lua"`: `ping` → `"pong", "<node>/<service>"`; `logins` → how many `LoginReq`
//!   frames it has seen (sent or called).
//! - `"text"`: `game.LoginReq` → `game.LoginResp`; `game.GetUserInfo` → `game.UserInfo`;
//!   `game.Ping` → `game.Pong`.
//!
//! The login counter is carried across a hot update ([`Dispatcher::carry`]).
//!
//! (SQL goes to the `mysqlpool` sub-service of the same node, not through here.) rpc
//! requests from native callers (`"text"` frames with sub_type 18) are answered by
//! wrapping the dispatcher in [`RpcServer`].

use bee_cluster::native::RpcServer;
use bee_proto::game::{GetUserInfo, LoginReq, LoginResp, Ping, Pong, UserInfo};
use bee_runtime::{Dispatcher, ServiceError};

/// The state of `lpersistence`.
#[derive(Debug, Default)]
pub struct Persistence {
    logins: u64,
}

/// Build the `lpersistence` service.
pub fn service() -> RpcServer<Dispatcher<Persistence>> {
    let d = Dispatcher::new(Persistence::default())
        // Hot update: the login counter survives `bee run --takeover`.
        .carry(
            |s| s.logins.to_be_bytes().to_vec(),
            |s, b| {
                let b: [u8; 8] = b
                    .try_into()
                    .map_err(|_| ServiceError::msg("lpersistence state is 8 bytes"))?;
                s.logins = u64::from_be_bytes(b);
                Ok(())
            },
        )
        .command_ctx("ping", |_s, ctx, ()| {
            Ok(("pong", format!("{}/{}", ctx.node().name(), ctx.label())))
        })
        .command("logins", |s, ()| Ok(s.logins))
        .on(|s, _ctx, _frame, m: LoginReq| {
            s.logins += 1;
            tracing::info!(uid = m.uid, device = %m.device, "login");
            Ok(Some(LoginResp {
                uid: m.uid,
                code: 0,
                nickname: format!("player{}", m.uid),
            }))
        })
        .on(|_s, _ctx, _frame, m: GetUserInfo| {
            Ok(Some(UserInfo {
                uid: m.uid,
                nickname: format!("player{}", m.uid),
                level: (m.uid % 60) as i32 + 1,
                coins: (m.uid % 100_000) as i64 * 10,
            }))
        })
        .on(|_s, ctx, _frame, m: Ping| {
            Ok(Some(Pong {
                seq: m.seq,
                served_by: format!("{}/{}", ctx.node().name(), ctx.label()),
            }))
        });
    RpcServer::new(d)
}
