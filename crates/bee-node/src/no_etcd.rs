//! A `bee` built without the `etcd` cargo feature: cluster configs come from files
//! only. Every place that would reach etcd (`cluster = "etcd://…"` in a node config,
//! `--cluster etcd://…` for the tools) fails with an error saying how to get it back.

use std::time::Duration;

use anyhow::{anyhow, Result};
use bee_cluster::Cluster;
use bee_registry::{ClusterConfig, Registry};

use crate::config::NodeConfig;

pub use crate::config::{etcd_url_of as url_of, is_etcd_url as is_url};

/// The error for anything that would reach etcd at `url`.
pub fn unsupported(url: &str) -> anyhow::Error {
    anyhow!("{url}: this bee was built without etcd support (cargo feature `etcd` of bee-node); use a cluster config file")
}

/// Always an error: no etcd in this build.
pub async fn read_cluster(url: &str, _timeout: Duration) -> Result<ClusterConfig> {
    Err(unsupported(url))
}

/// A node whose cluster config is a file: nothing to follow.
pub struct Source;

impl Source {
    /// A node whose cluster config is a file: nothing to follow.
    pub fn file() -> Source {
        Source
    }

    /// Always an error: no etcd in this build.
    pub async fn start(url: &str, _cfg: &NodeConfig) -> Result<(Registry, Source)> {
        Err(unsupported(url))
    }

    /// Nothing to follow.
    pub async fn follow(
        self,
        _cluster: &Cluster,
        _listening: std::net::SocketAddr,
    ) -> Result<Followers> {
        Ok(Followers)
    }
}

/// Nothing runs: the config is a file.
pub struct Followers;

impl Followers {
    /// Nothing to stop.
    pub async fn stop(self) {}
}

/// What the status page's probe would find.
pub type ProbeResult = std::result::Result<(u64, Duration), String>;

/// The status page's etcd probe: in this build, always the "no etcd" error.
pub struct Probe {
    url: String,
}

impl Probe {
    /// A probe of `url`.
    pub fn new(url: String) -> Probe {
        Probe { url }
    }

    /// The URL probed.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Always an error: no etcd in this build.
    pub async fn check(&self) -> ProbeResult {
        Err(unsupported(&self.url).to_string())
    }
}
