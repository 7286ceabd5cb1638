//! `shop_master` and `shop`.
//!
//! `shop_master` is bee-cluster's [`bee_cluster::native::NativeMaster`]: it hands the
//! game frames it receives, untouched, to the native `shop` service of the same node
//! (the team's `skynet.redirect(cpp, source, "text", session, frame)`), with the caller
//! attached, so the shop's reply goes straight back to whoever called shop_master.
//!
//! `shop` here is a Rust stand-in for the team's C++ shop: it sees only frames, through
//! its [`NativeEndpoint`], and never touches the Rust call API. It answers
//! `game.ShopBuy` with `game.ShopReceipt` — to a caller waiting on shop_master, or, for
//! an rpc request (sub_type 18), through CServiceProxy with the names swapped — and
//! `game.Ping` rpc requests with `game.Pong`. (The C++ modules under `cservices/` do the
//! same through skynet's C API.)

use bee_cluster::native::{NativeEndpoint, NativeHandler};
use bee_codec::kkt::KktFrame;
use bee_proto::game::{Ping, Pong, ShopBuy, ShopReceipt};
use bee_runtime::text::TextReply;

/// The native `shop`: frames in, frames out.
#[derive(Debug)]
pub struct NativeShop {
    served_by: String,
    orders: i64,
}

impl NativeShop {
    /// A shop that signs its receipts with `served_by` (e.g. `shop_master/shop`).
    pub fn new(served_by: &str) -> Self {
        NativeShop {
            served_by: served_by.to_string(),
            orders: 0,
        }
    }

    /// A ShopBuy → a ShopReceipt; a Ping → a Pong; anything else → an error text.
    fn answer(&mut self, frame: &KktFrame) -> Result<TextReply, String> {
        if let Ok(buy) = crate::open::<ShopBuy>(frame) {
            self.orders += 1;
            return Ok(TextReply::of(&ShopReceipt {
                uid: buy.uid,
                item_id: buy.item_id,
                count: buy.count,
                order_id: self.orders,
                handled_by: self.served_by.clone(),
            }));
        }
        if let Ok(ping) = crate::open::<Ping>(frame) {
            return Ok(TextReply::of(&Pong {
                seq: ping.seq,
                served_by: self.served_by.clone(),
            }));
        }
        Err(format!(
            "shop takes game.ShopBuy and game.Ping, got {}",
            String::from_utf8_lossy(&frame.name)
        ))
    }
}

impl NativeHandler for NativeShop {
    async fn on_frame(&mut self, _endpoint: &NativeEndpoint, frame: KktFrame) -> Option<TextReply> {
        match self.answer(&frame) {
            Ok(reply) => Some(reply),
            Err(e) => {
                tracing::warn!(error = %e, "shop: frame ignored");
                None
            }
        }
    }
}
