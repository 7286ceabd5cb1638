//! The listening side: opening (or inheriting, at a hot update) the sockets peers
//! connect to, and counting their connections; each accepted connection gets a
//! `bee_clusteragent` ([`crate::agent`]).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bee_runtime::CallError;
use bee_transport::{HandedConnection, Listener};

use crate::agent::AgentFactory;
use crate::state::{transport_error, Cluster};

impl Cluster {
    /// Listen for peers: `listen` is a node name from the config (its address is used)
    /// or an address `host:port`, or a bare port (all interfaces, as skynet's number).
    pub async fn open(&self, listen: &str) -> Result<SocketAddr, CallError> {
        let bind = if let Ok(addr) = self.inner.registry.lookup(listen) {
            addr.to_string()
        } else if let Ok(port) = listen.parse::<u16>() {
            format!("0.0.0.0:{port}")
        } else if listen.contains(':') {
            listen.to_string()
        } else {
            return Err(CallError::Unavailable(format!(
                "cannot open {listen:?}: not a node in the cluster config, nor host:port, nor a port"
            )));
        };
        let listener = Listener::bind(&bind, self.inner.settings.listener.clone())
            .await
            .map_err(transport_error)?;
        self.serve_listener(listener)
    }

    /// Hold delivery: requests arriving on accepted connections are read (heartbeats
    /// answered, bytes counted against the budgets) but wait, per connection in arrival
    /// order, until [`Cluster::release_delivery`]. A hot update's successor holds while
    /// its predecessor drains and hands over its services' state, so that peers moving
    /// to it are connected and answered at once rather than left in the accept queue.
    pub fn hold_delivery(&self) {
        self.inner.holding.store(true, Ordering::Release);
        self.inner.held.send_replace(true);
    }

    /// Deliver what was held, in order, and everything after it directly.
    pub fn release_delivery(&self) {
        self.inner.holding.store(false, Ordering::Release);
        self.inner.held.send_replace(false);
    }

    /// Listen on a socket handed over by this node's previous process (hot update).
    pub fn open_inherited(&self, socket: std::net::TcpListener) -> Result<SocketAddr, CallError> {
        let listener = Listener::from_std(socket, self.inner.settings.listener.clone())
            .map_err(transport_error)?;
        self.serve_listener(listener)
    }

    /// Second descriptors of the listening sockets, with their addresses: what a hot
    /// update hands to the successor (empty once the node stopped accepting).
    pub fn listening_sockets(&self) -> Vec<(SocketAddr, std::os::fd::OwnedFd)> {
        self.inner
            .listen_fds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|(a, fd)| fd.try_clone().ok().map(|fd| (*a, fd)))
            .collect()
    }

    pub(crate) fn serve_listener(&self, listener: Listener) -> Result<SocketAddr, CallError> {
        let local = listener.local_addr();
        self.inner
            .unbound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener.unbound());
        self.inner
            .handoffs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((local, listener.handoff()));
        match listener.dup_socket() {
            Ok(fd) => self
                .inner
                .listen_fds
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((local, fd)),
            Err(e) => {
                tracing::warn!(node = %self.inner.node_name, %local, error = %e, "cannot keep a second descriptor of the listening socket; no hot update for it")
            }
        }
        tracing::info!(node = %self.inner.node_name, %local, "cluster listening");
        self.inner
            .listening
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(local);
        let acceptor = Arc::new(AgentFactory {
            cluster: self.clone(),
        });
        self.inner
            .inbound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener.open_connections());
        tokio::spawn(listener.run_until(
            acceptor,
            self.inner.stop_accepting.clone(),
            self.inner.shutdown.child_token(),
        ));
        Ok(local)
    }

    /// Addresses this node listens on.
    pub fn listening(&self) -> Vec<SocketAddr> {
        self.inner
            .listening
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Hand the connections of peers that are not told goaway (stock skynet) to a
    /// successor: each stops reading at a frame boundary, answers what it read and
    /// waits in [`Cluster::handed_connections`] (see `bee_transport::Handoff`).
    pub fn hand_off_connections(&self) {
        for (_, h) in self
            .inner
            .handoffs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            h.start();
        }
    }

    /// Connections that started handing off and are not in
    /// [`Cluster::handed_connections`] yet.
    pub fn handing_off(&self) -> usize {
        let handoffs = self
            .inner
            .handoffs
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        handoffs.iter().map(|(_, h)| h.pending()).sum()
    }

    /// The connections handed off so far, with the address of the listener that
    /// accepted each (each returned once).
    pub fn handed_connections(&self) -> Vec<(SocketAddr, HandedConnection)> {
        let handoffs = self
            .inner
            .handoffs
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        handoffs
            .iter()
            .flat_map(|(local, h)| h.take().into_iter().map(|c| (*local, c)))
            .collect()
    }

    /// Serve `conn`, handed off by this node's previous process, on the listener of
    /// `local` (the address it was accepted on). Err gives it back when no listener of
    /// this node has that address.
    pub fn adopt(&self, local: SocketAddr, conn: HandedConnection) -> Result<(), HandedConnection> {
        let handoffs = self
            .inner
            .handoffs
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match handoffs.iter().find(|(l, _)| *l == local) {
            Some((_, h)) => h.adopt(conn),
            None => Err(conn),
        }
    }

    /// Inbound connections open now, on every listener.
    pub fn inbound_connections(&self) -> usize {
        self.inner
            .inbound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|c| c.load(Ordering::Acquire))
            .sum()
    }
}
