//! How the runtime reaches services on other nodes without knowing how: a [`Remote`]
//! that the cluster layer installs on the [`Node`] (a node extension), and the
//! [`Target`] a message goes to there.
//!
//! The runtime itself never opens a socket. [`crate::Handle::call`] and
//! [`Node::call_on`] deliver to this node's own services directly, and hand everything
//! else to the installed [`Remote`]; with none installed a call to another node fails
//! with [`CallError::Unavailable`]. So a handler is written the same way whether its
//! target is local or remote.

use std::sync::Arc;

use bee_codec::cluster::Address;
use bee_codec::seri::{self, Value};
use bytes::Bytes;
use futures::future::BoxFuture;

use crate::args::{FromArgs, IntoValues};
use crate::error::{fmt_addr, Addr, CallError};
use crate::service::Node;

/// Where a message goes on a node: a numeric address or a registered name (written
/// `"@name"` in skynet; the `@` is optional here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A service address on that node.
    Addr(Addr),
    /// A name registered there.
    Name(String),
}

impl From<Addr> for Target {
    fn from(a: Addr) -> Self {
        Target::Addr(a)
    }
}

impl From<&str> for Target {
    fn from(s: &str) -> Self {
        Target::Name(s.trim_start_matches('@').to_string())
    }
}

impl From<String> for Target {
    fn from(s: String) -> Self {
        Target::from(s.as_str())
    }
}

impl Target {
    /// The target as skynet's cluster protocol writes it (`"@name"` or an address).
    pub fn wire(&self) -> Address {
        match self {
            Target::Addr(a) => Address::Id(*a),
            Target::Name(n) => Address::Name(Bytes::from(format!("@{n}"))),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Addr(a) => f.write_str(&fmt_addr(*a)),
            Target::Name(n) => write!(f, "@{n}"),
        }
    }
}

/// Calls and sends to services on any node, as the layer that connects nodes offers
/// them. An implementation also answers for this node's own name (delivering locally).
pub trait Remote: Send + Sync + 'static {
    /// Call `target` on `node` with a packed payload; the packed reply.
    fn call<'a>(
        &'a self,
        node: &'a str,
        target: Target,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<Bytes, CallError>>;

    /// Push a packed payload to `target` on `node`; no reply.
    fn send<'a>(
        &'a self,
        node: &'a str,
        target: Target,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), CallError>>;
}

/// The node extension that holds the installed [`Remote`].
struct RemoteSlot(Arc<dyn Remote>);

impl Node {
    /// Install the layer that reaches other nodes (replacing any installed before).
    pub fn set_remote(&self, remote: Arc<dyn Remote>) {
        self.set_extension(Arc::new(RemoteSlot(remote)));
    }

    /// The installed layer that reaches other nodes, if any.
    pub fn remote(&self) -> Option<Arc<dyn Remote>> {
        self.extension::<RemoteSlot>().map(|s| s.0.clone())
    }

    /// Call `target` on `node` (this node's own name, or another node through the
    /// installed [`Remote`]) with a packed payload; the packed reply.
    pub async fn call_on(
        &self,
        node: &str,
        target: impl Into<Target>,
        payload: Bytes,
    ) -> Result<Bytes, CallError> {
        self.call_on_from(0, node, target.into(), payload).await
    }

    /// Push a packed payload to `target` on `node`; no reply.
    pub async fn send_on(
        &self,
        node: &str,
        target: impl Into<Target>,
        payload: Bytes,
    ) -> Result<(), CallError> {
        self.send_on_from(0, node, target.into(), payload).await
    }

    /// Call a `"lua"` command of `target` on `node`: packs `("lua", command, args…)`
    /// (`args` one value, a tuple or `Vec<Value>`), unpacks the reply into `R` (one
    /// type, a tuple of types, or `Vec<Value>`): `node.call_lua::<i64>("bank", "@wallet",
    /// "balance", uid)`.
    pub async fn call_lua<R: FromArgs>(
        &self,
        node: &str,
        target: impl Into<Target>,
        command: &str,
        args: impl IntoValues,
    ) -> Result<R, CallError> {
        let reply = self.call_on(node, target, pack_lua(command, args)?).await?;
        unpack_reply(node, command, &reply)
    }

    /// Push a `"lua"` command to `target` on `node`: `("lua", command, args…)`, no reply.
    pub async fn send_lua(
        &self,
        node: &str,
        target: impl Into<Target>,
        command: &str,
        args: impl IntoValues,
    ) -> Result<(), CallError> {
        self.send_on(node, target, pack_lua(command, args)?).await
    }

    pub(crate) async fn call_on_from(
        &self,
        from: Addr,
        node: &str,
        target: Target,
        payload: Bytes,
    ) -> Result<Bytes, CallError> {
        match self.remote() {
            Some(r) => r.call(node, target, payload).await,
            None => {
                let to = self.local_target(node, &target)?;
                self.call_from(from, to, payload, None).await
            }
        }
    }

    pub(crate) async fn send_on_from(
        &self,
        from: Addr,
        node: &str,
        target: Target,
        payload: Bytes,
    ) -> Result<(), CallError> {
        match self.remote() {
            Some(r) => r.send(node, target, payload).await,
            None => {
                let to = self.local_target(node, &target)?;
                self.send_from(from, to, payload).await
            }
        }
    }

    fn local_target(&self, node: &str, target: &Target) -> Result<Addr, CallError> {
        if node != self.name() {
            return Err(CallError::Unavailable(format!(
                "cannot reach node {node}: the cluster layer is not started on {}",
                self.name()
            )));
        }
        match target {
            Target::Addr(a) => Ok(*a),
            Target::Name(n) => self.resolve(n),
        }
    }
}

/// `skynet.pack("lua", command, args…)`.
pub fn pack_lua(command: &str, args: impl IntoValues) -> Result<Bytes, CallError> {
    let mut values = vec![Value::from("lua"), Value::from(command)];
    values.extend(args.into_values());
    Ok(seri::pack(&values)?)
}

/// A `"lua"` command's packed reply from `node` as `R`; a reply that does not fit is a
/// [`CallError::BadReply`] naming the command.
pub fn unpack_reply<R: FromArgs>(node: &str, command: &str, reply: &Bytes) -> Result<R, CallError> {
    R::from_args(seri::unpack(reply)?).map_err(|e| CallError::BadReply {
        node: node.to_string(),
        reason: format!("reply to {command}: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::RuntimeConfig;
    use crate::Dispatcher;

    fn node_with_adder() -> Node {
        let node = Node::new("solo", RuntimeConfig::default());
        let adder = Dispatcher::new(0i64)
            .command("add", |total, n: i64| {
                *total += n;
                Ok(*total)
            })
            .command("pair", |_s, (a, b): (i64, String)| Ok((b, a)));
        let addr = node.spawn("adder", adder);
        node.set_name("adder", addr);
        node
    }

    #[tokio::test]
    async fn typed_lua_calls_on_the_node_itself_need_no_cluster() {
        let node = node_with_adder();
        let total: i64 = node.call_lua("solo", "@adder", "add", 2).await.unwrap();
        assert_eq!(total, 2);
        node.send_lua("solo", "adder", "add", 3).await.unwrap();
        let total: i64 = node.call_lua("solo", "adder", "add", 0).await.unwrap();
        assert_eq!(total, 5);
        let (s, n): (String, i64) = node
            .call_lua("solo", "adder", "pair", (7, "x"))
            .await
            .unwrap();
        assert_eq!((s.as_str(), n), ("x", 7));
        // A reply of another shape is a BadReply naming the command.
        let e = node
            .call_lua::<String>("solo", "adder", "add", 1)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, CallError::BadReply { reason, .. } if reason.starts_with("reply to add:")),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn another_node_without_a_remote_is_unavailable() {
        let node = node_with_adder();
        let e = node
            .call_lua::<i64>("elsewhere", "adder", "add", 1)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, CallError::Unavailable(t) if t.contains("cluster layer is not started")),
            "{e:?}"
        );
        assert!(node.remote().is_none());
    }
}
