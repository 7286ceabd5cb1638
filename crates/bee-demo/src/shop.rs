//! `shop_master` and `shop`.
//!
//! `shop_master` receives protobuf game frames and redirects them, untouched, to the
//! `shop` service of the same node (skynet.redirect: the caller stays attached, so the
//! shop's reply goes straight back to whoever called shop_master).
//!
//! `shop` is a native service — in the skynet-era backend a C++ service. It sees only
//! bytes: game frames in, game frames out, and rpc envelopes through its
//! [`NativeEndpoint`]; it never touches the Rust call API. It answers `game.ShopBuy`
//! with `game.ShopReceipt`, and rpc calls whose inner message is
//! `("text", ShopBuy frame)` or `("lua", "orders")`.

use bee_codec::seri::{self, Value};

use bee_dispatch::native::{NativeEndpoint, NativeHandler};
use bee_dispatch::{Context, HandleResult, Message, Service, ServiceError};
use bee_proto::game::{ShopBuy, ShopReceipt};
use bytes::Bytes;
use futures::future::BoxFuture;

/// `shop_master`: redirects every message to the service registered as `target`.
pub struct ShopMaster {
    target: String,
}

impl ShopMaster {
    /// A master in front of the service registered as `target` (usually `shop`).
    pub fn new(target: &str) -> Self {
        ShopMaster {
            target: target.to_string(),
        }
    }
}

impl Service for ShopMaster {
    async fn handle(&mut self, ctx: &mut Context, msg: Message) -> HandleResult {
        // Looked up per message, so a restarted shop is found at its new address.
        let to = ctx.node().resolve_public(&self.target).ok_or_else(|| {
            ServiceError::msg(format!(
                "shop_master: no service registered as {:?}",
                self.target
            ))
        })?;
        ctx.redirect(to, msg).await?;
        Ok(None)
    }
}

/// The native `shop`: bytes in, bytes out.
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

    /// A ShopBuy frame → a ShopReceipt frame; anything else → an error text.
    fn buy(&mut self, frame: &Bytes) -> Result<Bytes, String> {
        let (uid, buy) = crate::unframe::<ShopBuy>(frame).map_err(|e| e.to_string())?;
        self.orders += 1;
        let receipt = ShopReceipt {
            uid,
            item_id: buy.item_id,
            count: buy.count,
            order_id: self.orders,
            handled_by: self.served_by.clone(),
        };
        crate::frame(uid, &receipt).map_err(|e| e.to_string())
    }
}

impl NativeHandler for NativeShop {
    fn on_frame(
        &mut self,
        _endpoint: &NativeEndpoint,
        frame: Bytes,
    ) -> BoxFuture<'_, Option<Bytes>> {
        let r = self.buy(&frame);
        Box::pin(async move {
            match r {
                Ok(receipt) => Some(receipt),
                Err(e) => {
                    tracing::warn!(error = %e, "shop: frame ignored");
                    None
                }
            }
        })
    }

    fn on_rpc(
        &mut self,
        _endpoint: &NativeEndpoint,
        inner: Bytes,
    ) -> BoxFuture<'_, Result<Bytes, String>> {
        let r = (|| {
            let values = seri::unpack(&inner).map_err(|e| e.to_string())?;
            match (values.first().and_then(Value::as_bytes), values.get(1)) {
                (Some(b"text"), Some(Value::String(frame))) => self.buy(frame),
                (Some(b"lua"), Some(cmd)) if cmd.as_bytes() == Some(b"orders") => {
                    seri::pack(&[Value::from(self.orders)]).map_err(|e| e.to_string())
                }
                _ => {
                    Err("shop takes (\"text\", ShopBuy frame) or (\"lua\", \"orders\")".to_string())
                }
            }
        })();
        Box::pin(async move { r })
    }
}
