//! # bee-demo — the services of the demo game backend
//!
//! Small, readable services built only on bee-runtime's and bee-cluster's public API, one module each,
//! modelled on a skynet-era game backend:
//!
//! - [`persistence`]: `lpersistence` on node `lpersistence_3` — a `"lua"` command table
//!   (`ping`, `logins`) and `"text"` protobuf handlers (`LoginReq`, `GetUserInfo`, `Ping`).
//! - [`activity`]: `activity_master` with N `activity` workers, sharded by uid.
//! - [`shop`]: `shop_master`, which redirects game frames untouched to `shop`, a native
//!   service (bytes in, bytes out, as the C++ service of the old backend).
//! - [`lobby`]: the `lobby` service that drives every scenario from node `lobby` and
//!   reports what it did, line by line, for `cargo xtask demo`; and `lobby_native`, a
//!   native service on the lobby node that talks through `CServiceProxy`.
//! - [`players`]: simulated players for the game's front door (`lua/frontdoor.lua`, a
//!   skynet gateserver on the demo's Lua node): `bee-demo players ADDR`.

//!
//! The demo's services are not in the production `bee` binary: [`app`] adds their kinds
//! to [`bee_node::App`], and the `bee-demo` binary runs it (`bee-demo run CONFIG`, the
//! same command line as `bee`).

pub mod activity;
pub mod load;
pub mod lobby;
pub mod persistence;
pub mod players;
pub mod shop;

/// The `bee` program with the demo's service kinds added:
///
/// | kind | what it is | options |
/// |---|---|---|
/// | `lpersistence` | the persistence service (`"lua"` + `"text"`) | |
/// | `activity_master` | uid-sharded master with `workers` activity workers | `workers = 8`, `rule = "hash"` or `"modulo"` (the team's `uid % n`) |
/// | `shop_master` | hands game frames to the native service named `target` | `target = "shop"` |
/// | `native_shop` | the native (C++-style) shop service, bytes in and out | needs `cservice_proxy` first |
/// | `lobby` | the scenario driver, with the native `lobby_native` | needs `cservice_proxy` first |
pub fn app() -> bee_node::App {
    bee_node::App::new()
        .service("lpersistence", persistence::service)
        .kind("activity_master", |s| {
            let workers = s.option_usize("workers", bee_runtime::shard::DEFAULT_WORKERS)?;
            let rule = bee_runtime::shard::ShardRule::parse(s.option_str("rule", "hash")?)
                .map_err(anyhow::Error::msg)?;
            Ok(Some(activity::start(s.node, workers, rule)))
        })
        .kind("shop_master", |s| {
            let target = s.option_str("target", "shop")?;
            let master = bee_cluster::native::NativeMaster::new(target);
            Ok(Some(s.node.spawn(s.label(), master)))
        })
        .kind("native_shop", |s| {
            let name = s.entry.name.as_deref().unwrap_or("shop");
            let handler = shop::NativeShop::new(&format!("{}/{name}", s.node.name()));
            bee_cluster::native::spawn_native(s.node, s.proxy()?, name, handler)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(None)
        })
        .kind("lobby", |s| {
            let addr = lobby::start(s.node, s.proxy()?).map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(Some(addr))
        })
}

use bee_codec::kkt::KktFrame;
use bee_runtime::ServiceError;
use bytes::Bytes;

/// Encode a prost message as a one-way game frame (sub_type 16, no names) for `uid`:
/// what a Lua service or a client puts on the wire.
pub fn frame<M: prost::Message + prost::Name>(uid: i64, msg: &M) -> Result<Bytes, ServiceError> {
    bee_runtime::text::encode_frame(&bee_runtime::text::frame_of(uid, msg))
}

/// Decode game-frame bytes expected to hold a message of type `M`.
pub fn unframe<M: prost::Message + prost::Name + Default>(
    bytes: &Bytes,
) -> Result<(i64, M), ServiceError> {
    let f = KktFrame::decode(bytes)?;
    Ok((f.uid, open(&f)?))
}

/// The message of type `M` a decoded frame carries (its name checked).
pub fn open<M: prost::Message + prost::Name + Default>(f: &KktFrame) -> Result<M, ServiceError> {
    let name = f.name_str()?;
    if name != M::full_name() {
        return Err(ServiceError::msg(format!(
            "expected a {} frame, got {name}",
            M::full_name()
        )));
    }
    Ok(M::decode(f.body.as_ref())?)
}
