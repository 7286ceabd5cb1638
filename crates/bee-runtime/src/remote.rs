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
use bytes::Bytes;
use futures::future::BoxFuture;

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
