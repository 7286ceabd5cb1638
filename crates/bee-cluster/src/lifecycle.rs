//! The cluster config lifecycle on the wire: what `bee_clusterd` answers for
//! `config` (what a node runs), `config_push` (apply a new config, with an ack) and
//! `hello` (who a peer is and which run of it), shared by the node side
//! ([`crate::Cluster`]) and the tools that ask (`bee status`, `bee config push`), and how
//! service addresses are kept apart across runs of a node.
//!
//! Every message is an ordinary cluster request with a skynet.pack payload, so a C++ or
//! Lua implementer needs nothing but skynet's cluster protocol (`docs/config.md`,
//! "Pushing a config to running nodes"):
//!
//! | request to | payload | reply values |
//! |---|---|---|
//! | `@bee_config` | `"lua", "config"` | one table: [`ConfigReport`] |
//! | `@bee_config` | `"lua", "config_push", text, force, from` | `"applied", version, hash, diff` or `"rejected", reason, version, hash` ([`PushOutcome`]) |
//! | `@bee_clusterd` | `"lua", "hello", name, incarnation` | `name, incarnation, names_generation, names` ([`Hello`]) |
//! | `@bee_clusterd` | `"lua", "names_changed", name, incarnation, names_generation` | `true` (the receiver says hello again to learn the names) |
//!
//! On a bee node `bee_config` and `bee_clusterd` are one service; a stock skynet node
//! answers the first two with `interop/skynet/service/bee_config.lua`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bee_codec::seri::{Table, Value};

use bee_runtime::error::{fmt_addr, Addr};

/// The cluster name the config commands (`config`, `config_push`) are sent to.
pub const CONFIG_NAME: &str = "bee_config";

/// The cluster name of bee's own cluster service, which answers `hello`.
pub const CLUSTERD_NAME: &str = "bee_clusterd";

/// Service addresses have 24 bits; 0 is never a service.
const ADDR_SPACE: u64 = 0x00FF_FFFF;

/// The first service address of a node run with this incarnation (milliseconds since
/// 1970): `1 + incarnation mod (2^24 - 1)`. The start moves on by one address per
/// millisecond between two runs, so a run that handed out fewer addresses than the
/// milliseconds it lived never shares one with the next run (see `docs/config.md`).
pub fn first_addr_for(incarnation: u64) -> Addr {
    1 + (incarnation % ADDR_SPACE) as Addr
}

/// Milliseconds since 1970 of a time (0 before 1970).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The error text for a request to `addr` on node `node` where no service lives.
/// `handed_out` says whether this run of the node ever gave out that address; when it
/// did not, the address is from before a restart (or was never valid), and the text says so.
pub fn dead_address_text(
    node: &str,
    addr: Addr,
    handed_out: bool,
    incarnation: u64,
    uptime: Duration,
) -> String {
    if handed_out {
        format!(
            "no service at address {} on node {node}: it has stopped",
            fmt_addr(addr)
        )
    } else {
        format!(
            "no service at address {} on node {node}: this run of {node} (up {}s, \
             incarnation {incarnation}) never had that address; it is from before {node} \
             restarted (or was never valid): query the name again",
            fmt_addr(addr),
            uptime.as_secs()
        )
    }
}

/// Who sent a config push, as its `from` says: `node NAME` (optionally followed by a
/// space and more words, e.g. `node lobby (pid 4242)`) is the convention for a push made
/// by cluster node NAME itself. Any other `from` is a tool or a person, free text.
pub fn pusher_node(from: &str) -> Option<&str> {
    let rest = from.strip_prefix("node ")?;
    rest.split_whitespace().next()
}

/// Why a node refused a config push for who sent it (the config itself is checked by
/// `Registry::apply`). The text is the reason in the `rejected` answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushRefusal {
    /// The push says it comes from a cluster node that is in neither config.
    #[error(
        "push refused: it says it comes from node {node}, which is in neither the running config (version {running_version}: {running}) nor the pushed one (version {offered_version}: {offered}); a node pushes as `node NAME` with a name of the cluster config"
    )]
    UnknownPusher {
        /// The node the push names (`from` = `node NAME`).
        node: String,
        /// The running version.
        running_version: u64,
        /// The nodes of the running config, comma-separated.
        running: String,
        /// The pushed version.
        offered_version: u64,
        /// The nodes of the pushed config, comma-separated.
        offered: String,
    },
    /// On a node with authentication, the push came on a connection served without it
    /// (its address is in the `[auth]` allow list, which is there for stock skynet
    /// nodes' calls).
    #[error(
        "push refused: this node requires authentication, and the connection from {peer} was served without it (its address is in the node's [auth] allow list, meant for stock skynet nodes' calls); push over an authenticated connection (bee config push reads the cluster secret from BEE_AUTH_SECRET_FILE)"
    )]
    NotAuthenticated {
        /// The peer's socket address.
        peer: std::net::SocketAddr,
    },
}

fn int(v: u64) -> Value {
    Value::Integer(i64::try_from(v).unwrap_or(i64::MAX))
}

fn get_u64(t: &Table, key: &str) -> Option<u64> {
    t.get_str(key)
        .and_then(Value::as_int)
        .and_then(|i| u64::try_from(i).ok())
}

fn get_string(t: &Table, key: &str) -> Option<String> {
    t.get_str(key).and_then(Value::as_str).map(str::to_string)
}

/// The answer to `hello`: which node answers, which run of it, and its cluster-visible
/// names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The node's name.
    pub node: String,
    /// Its incarnation (milliseconds since 1970 when its registry was made).
    pub incarnation: u64,
    /// Its names generation (grows with each name change in this run) and its
    /// cluster-visible names with their addresses; `None` from a node that does not send
    /// them (the values are optional on the wire, after the first two).
    pub names: Option<(u64, BTreeMap<String, Addr>)>,
}

impl Hello {
    /// The values on the wire: `name, incarnation`, then (when known)
    /// `names_generation, {name = address, …}`.
    pub fn to_values(&self) -> Vec<Value> {
        let mut v = vec![Value::from(self.node.as_str()), int(self.incarnation)];
        if let Some((generation, names)) = &self.names {
            let mut t = Table::default();
            for (name, addr) in names {
                t.insert(Value::from(name.as_str()), Value::Integer(i64::from(*addr)));
            }
            v.push(int(*generation));
            v.push(Value::Table(t));
        }
        v
    }

    /// Read the values of a `hello` reply.
    pub fn from_values(values: &[Value]) -> Result<Hello, String> {
        let node = values.first().and_then(Value::as_str);
        let incarnation = values
            .get(1)
            .and_then(Value::as_int)
            .and_then(|i| u64::try_from(i).ok());
        let names = match (
            values
                .get(2)
                .and_then(Value::as_int)
                .and_then(|g| u64::try_from(g).ok()),
            values.get(3).and_then(Value::as_table),
        ) {
            (Some(generation), Some(t)) => {
                let mut names = BTreeMap::new();
                for (k, v) in &t.hash {
                    let (Some(name), Some(addr)) =
                        (k.as_str(), v.as_int().and_then(|a| Addr::try_from(a).ok()))
                    else {
                        return Err(format!(
                            "a hello reply's names are name = address, got {k} = {v}"
                        ));
                    };
                    names.insert(name.to_string(), addr);
                }
                Some((generation, names))
            }
            _ => None,
        };
        match (node, incarnation) {
            (Some(n), Some(i)) => Ok(Hello {
                node: n.to_string(),
                incarnation: i,
                names,
            }),
            _ => Err(format!(
                "a hello reply is a name and an incarnation, got {} value(s)",
                values.len()
            )),
        }
    }
}

/// What a node runs, as the `config` command reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigReport {
    /// The node's name.
    pub node: String,
    /// The version of the config it runs.
    pub version: u64,
    /// The content hash of that config, 16 hex digits (empty when the node does not
    /// compute it, e.g. a stock skynet node).
    pub hash: String,
    /// When that config was applied, milliseconds since 1970.
    pub applied_at_ms: u64,
    /// Where it came from (`file cluster.lua`, `push from …`, `etcd key …`).
    pub source: String,
    /// The node's incarnation.
    pub incarnation: u64,
    /// How long the node has run, in milliseconds.
    pub uptime_ms: u64,
    /// Headline numbers: services running now.
    pub services: u64,
    /// Messages handled by all services so far.
    pub handled: u64,
    /// Messages waiting in all mailboxes now.
    pub queued: u64,
    /// Accepted peer connections now (`bee_clusteragent`s).
    pub peers_in: u64,
    /// Remote nodes this node has a channel to, and how many of them are connected.
    pub peers_out: u64,
    /// Of `peers_out`, connected now.
    pub peers_out_connected: u64,
}

impl ConfigReport {
    /// The value on the wire: one table with the fields by name.
    pub fn to_value(&self) -> Value {
        let mut t = Table::default();
        t.insert(Value::from("node"), Value::from(self.node.as_str()));
        t.insert(Value::from("version"), int(self.version));
        t.insert(Value::from("hash"), Value::from(self.hash.as_str()));
        t.insert(Value::from("applied_at_ms"), int(self.applied_at_ms));
        t.insert(Value::from("source"), Value::from(self.source.as_str()));
        t.insert(Value::from("incarnation"), int(self.incarnation));
        t.insert(Value::from("uptime_ms"), int(self.uptime_ms));
        t.insert(Value::from("services"), int(self.services));
        t.insert(Value::from("handled"), int(self.handled));
        t.insert(Value::from("queued"), int(self.queued));
        t.insert(Value::from("peers_in"), int(self.peers_in));
        t.insert(Value::from("peers_out"), int(self.peers_out));
        t.insert(
            Value::from("peers_out_connected"),
            int(self.peers_out_connected),
        );
        Value::Table(t)
    }

    /// Read a `config` reply. Missing numbers read as 0 and missing texts as empty, so
    /// an implementation that does not know one of them still answers.
    pub fn from_values(values: &[Value]) -> Result<ConfigReport, String> {
        let t = values
            .first()
            .and_then(Value::as_table)
            .ok_or_else(|| "a config reply is one table".to_string())?;
        Ok(ConfigReport {
            node: get_string(t, "node").unwrap_or_default(),
            version: get_u64(t, "version").unwrap_or(0),
            hash: get_string(t, "hash").unwrap_or_default(),
            applied_at_ms: get_u64(t, "applied_at_ms").unwrap_or(0),
            source: get_string(t, "source").unwrap_or_default(),
            incarnation: get_u64(t, "incarnation").unwrap_or(0),
            uptime_ms: get_u64(t, "uptime_ms").unwrap_or(0),
            services: get_u64(t, "services").unwrap_or(0),
            handled: get_u64(t, "handled").unwrap_or(0),
            queued: get_u64(t, "queued").unwrap_or(0),
            peers_in: get_u64(t, "peers_in").unwrap_or(0),
            peers_out: get_u64(t, "peers_out").unwrap_or(0),
            peers_out_connected: get_u64(t, "peers_out_connected").unwrap_or(0),
        })
    }
}

/// A node's answer to `config_push`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The node runs the pushed config now (or already ran it).
    Applied {
        /// The version it runs.
        version: u64,
        /// The content hash it runs (16 hex digits; may be empty from a stock skynet).
        hash: String,
        /// What changed, one line (`no change` when it already ran it).
        diff: String,
    },
    /// The node refused the config and runs what it ran before.
    Rejected {
        /// Why, in words meant to be read as they are.
        reason: String,
        /// The version it still runs.
        version: u64,
        /// The content hash it still runs.
        hash: String,
    },
}

impl PushOutcome {
    /// The values on the wire.
    pub fn to_values(&self) -> Vec<Value> {
        match self {
            PushOutcome::Applied {
                version,
                hash,
                diff,
            } => vec![
                Value::from("applied"),
                int(*version),
                Value::from(hash.as_str()),
                Value::from(diff.as_str()),
            ],
            PushOutcome::Rejected {
                reason,
                version,
                hash,
            } => vec![
                Value::from("rejected"),
                Value::from(reason.as_str()),
                int(*version),
                Value::from(hash.as_str()),
            ],
        }
    }

    /// Read a `config_push` reply.
    pub fn from_values(values: &[Value]) -> Result<PushOutcome, String> {
        let text = |i: usize| {
            values
                .get(i)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let num = |i: usize| {
            values
                .get(i)
                .and_then(Value::as_int)
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0)
        };
        match values.first().and_then(Value::as_str) {
            Some("applied") => Ok(PushOutcome::Applied {
                version: num(1),
                hash: text(2),
                diff: text(3),
            }),
            Some("rejected") => Ok(PushOutcome::Rejected {
                reason: text(1),
                version: num(2),
                hash: text(3),
            }),
            _ => Err(format!(
                "a config_push reply starts with \"applied\" or \"rejected\", got {}",
                values
                    .first()
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "nothing".into())
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bee_codec::seri;

    fn roundtrip(values: Vec<Value>) -> Vec<Value> {
        seri::unpack(&seri::pack(&values).unwrap()).unwrap()
    }

    #[test]
    fn first_addresses_stay_in_24_bits_and_never_zero() {
        assert_eq!(first_addr_for(0), 1);
        assert_eq!(first_addr_for(ADDR_SPACE - 1), 0x00FF_FFFF);
        assert_eq!(first_addr_for(ADDR_SPACE), 1);
        let inc = 1_767_225_600_000;
        let a = first_addr_for(inc);
        assert!((1..=0x00FF_FFFF).contains(&a));
        // One millisecond later, one address later.
        assert_eq!(first_addr_for(inc + 1), a % 0x00FF_FFFF + 1);
    }

    #[test]
    fn wire_values_roundtrip() {
        let mut h = Hello {
            node: "lobby".into(),
            incarnation: 1_767_225_600_000,
            names: None,
        };
        assert_eq!(Hello::from_values(&roundtrip(h.to_values())).unwrap(), h);
        h.names = Some((
            3,
            [("lobby".to_string(), 0x10), ("bee_config".to_string(), 2)].into(),
        ));
        assert_eq!(Hello::from_values(&roundtrip(h.to_values())).unwrap(), h);
        assert!(Hello::from_values(&[Value::from("x")]).is_err());

        let r = ConfigReport {
            node: "lobby".into(),
            version: 7,
            hash: "3f0c9a1d2b4e6f70".into(),
            applied_at_ms: 5,
            source: "file cluster.lua".into(),
            incarnation: 9,
            uptime_ms: 1000,
            services: 4,
            handled: 120,
            queued: 2,
            peers_in: 3,
            peers_out: 2,
            peers_out_connected: 1,
        };
        assert_eq!(
            ConfigReport::from_values(&roundtrip(vec![r.to_value()])).unwrap(),
            r
        );
        assert!(ConfigReport::from_values(&[Value::from("x")]).is_err());

        for p in [
            PushOutcome::Applied {
                version: 8,
                hash: "00".into(),
                diff: "version 7->8".into(),
            },
            PushOutcome::Rejected {
                reason: "older".into(),
                version: 7,
                hash: "11".into(),
            },
        ] {
            assert_eq!(
                PushOutcome::from_values(&roundtrip(p.to_values())).unwrap(),
                p
            );
        }
        let e = PushOutcome::from_values(&[Value::from("ok")]).unwrap_err();
        assert!(e.contains("\"applied\" or \"rejected\""), "{e}");
    }

    #[test]
    fn pusher_node_reads_the_convention() {
        assert_eq!(pusher_node("node lobby"), Some("lobby"));
        assert_eq!(pusher_node("node lobby (pid 4242)"), Some("lobby"));
        assert_eq!(pusher_node("bee config push on ops1 (pid 1)"), None);
        assert_eq!(pusher_node("nodes a"), None);
        assert_eq!(pusher_node("node "), None);
    }

    #[test]
    fn dead_address_text_says_which_case() {
        let stopped = dead_address_text("lobby", 0x10, true, 5, Duration::from_secs(3));
        assert_eq!(
            stopped,
            "no service at address :00000010 on node lobby: it has stopped"
        );
        let stale = dead_address_text("lobby", 0x10, false, 5, Duration::from_secs(3));
        assert!(
            stale.contains("this run of lobby (up 3s, incarnation 5) never had that address")
                && stale.contains("from before lobby restarted")
                && stale.contains("query the name again"),
            "{stale}"
        );
    }
}
