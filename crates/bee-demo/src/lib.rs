//! # bee-demo — the services of the demo game backend
//!
//! Small, readable services built only on bee-dispatch's public API, one module each,
//! modelled on the skynet-era backend the mission describes:
//!
//! - [`persistence`]: `lpersistence` on node `lpersistence_3` — a `"lua"` command table
//!   (`ping`, `logins`) and `"text"` protobuf handlers (`LoginReq`, `GetUserInfo`, `Ping`).
//! - [`activity`]: `activity_master` with N `activity` workers, sharded by uid.
//! - [`shop`]: `shop_master`, which redirects game frames untouched to `shop`, a native
//!   service (bytes in, bytes out, as the C++ service of the old backend).
//! - [`lobby`]: the `lobby` service that drives every scenario from node `lobby` and
//!   reports what it did, line by line, for `cargo xtask demo`; and `lobby_native`, a
//!   native service on the lobby node that talks through `CServiceProxy`.

pub mod activity;
pub mod lobby;
pub mod persistence;
pub mod shop;

use bee_codec::protopack::GameFrame;
use bee_dispatch::ServiceError;
use bytes::Bytes;

/// Encode a prost message as game-frame bytes for `uid` (what a client or a native
/// service puts on the wire).
pub fn frame<M: prost::Message + prost::Name>(uid: u64, msg: &M) -> Result<Bytes, ServiceError> {
    bee_dispatch::text::encode_frame(&bee_dispatch::text::frame_of(uid, msg))
}

/// Decode game-frame bytes expected to hold a message of type `M`.
pub fn unframe<M: prost::Message + prost::Name + Default>(
    bytes: &Bytes,
) -> Result<(u64, M), ServiceError> {
    let f = GameFrame::decode(bytes)?;
    let name = f.name_str()?;
    if name != M::full_name() {
        return Err(ServiceError::msg(format!(
            "expected a {} frame, got {name}",
            M::full_name()
        )));
    }
    let m = M::decode(f.body.as_ref())?;
    Ok((f.uid, m))
}
