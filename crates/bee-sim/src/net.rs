//! The simulated network of `cargo xtask cluster-sim`: one Linux network namespace per
//! process (bee nodes, etcd, the stock skynet nodes, the driver), all on one bridge that
//! lives in a namespace of its own, so nothing is added to the machine's own network.
//! Every interface a node sends on gets a `tc netem` qdisc (delay, jitter, loss).
//!
//! Every namespace is named with [`PREFIX`]; [`sweep`] kills every process inside such a
//! namespace and deletes it (deleting a namespace removes its veth ends, the bridge and
//! their qdiscs). [`Net`] sweeps when dropped, and `cluster-sim` sweeps at start (what
//! an interrupted earlier run left) and from its signal handler.

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The name prefix of everything the simulation creates.
pub const PREFIX: &str = "beesim-";
/// The namespace holding the bridge.
pub const CORE: &str = "beesim-core";
/// The bridge's name inside [`CORE`].
const BRIDGE: &str = "br0";

/// Delay, jitter and loss applied to every interface a simulated host sends on.
#[derive(Clone, Copy, Debug)]
pub struct Netem {
    /// One-way delay, milliseconds.
    pub delay_ms: f64,
    /// Jitter around the delay, milliseconds.
    pub jitter_ms: f64,
    /// Packet loss, percent.
    pub loss_pct: f64,
}

impl Netem {
    fn args(&self) -> Vec<String> {
        vec![
            "netem".into(),
            "delay".into(),
            format!("{}us", (self.delay_ms * 1000.0).round() as u64),
            format!("{}us", (self.jitter_ms * 1000.0).round() as u64),
            "loss".into(),
            format!("{}%", self.loss_pct),
        ]
    }
}

/// One simulated host: its namespace and its address on the bridge.
#[derive(Clone, Debug)]
pub struct Host {
    /// Short name (`n07`, `etcd`, `sky1`, `ctl`).
    pub tag: String,
    /// The IPv4 address on the bridge (a /16).
    pub ip: String,
}

impl Host {
    /// The namespace's name.
    pub fn ns(&self) -> String {
        format!("{PREFIX}{}", self.tag)
    }

    /// The MAC address of its `eth0`: locally administered, from its IP.
    pub fn mac(&self) -> String {
        let o: Vec<u8> = self.ip.split('.').filter_map(|x| x.parse().ok()).collect();
        format!(
            "02:00:{:02x}:{:02x}:{:02x}:{:02x}",
            o.first().copied().unwrap_or(0),
            o.get(1).copied().unwrap_or(0),
            o.get(2).copied().unwrap_or(0),
            o.get(3).copied().unwrap_or(0)
        )
    }
}

/// The namespaces made by [`Net::create`]; all removed (with their processes) on drop.
pub struct Net {
    _made: (),
}

/// Run `program args…` and fail with its error output unless it succeeds.
pub fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program} {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<()> {
    run("ip", args)
}

/// Make bridge `name` in [`CORE`] and bring it up, forwarding at once (no STP listening
/// delay on a fresh port).
fn bridge(name: &str) -> Result<()> {
    ip(&["-n", CORE, "link", "add", name, "type", "bridge"])?;
    ip(&[
        "-n",
        CORE,
        "link",
        "set",
        name,
        "type",
        "bridge",
        "forward_delay",
        "0",
        "stp_state",
        "0",
    ])?;
    ip(&["-n", CORE, "link", "set", name, "up"])
}

fn tc(ns: &str, dev: &str, netem: &Netem) -> Result<()> {
    let mut args = vec!["-n", ns, "qdisc", "replace", "dev", dev, "root"];
    let extra = netem.args();
    args.extend(extra.iter().map(String::as_str));
    run("tc", &args)
}

/// Whether this kernel has the netem qdisc: tried on the loopback of a scratch namespace.
pub fn netem_available() -> bool {
    let ns = format!("{PREFIX}probe");
    if ip(&["netns", "add", &ns]).is_err() {
        return false;
    }
    let probe = Netem {
        delay_ms: 1.0,
        jitter_ms: 0.0,
        loss_pct: 0.0,
    };
    let ok = tc(&ns, "lo", &probe).is_ok();
    let _ = ip(&["netns", "del", &ns]);
    ok
}

/// The namespaces this simulation (or an earlier, interrupted one) made.
pub fn leftovers() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output();
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_string)
        .collect()
}

/// Kill every process inside a namespace named with [`PREFIX`], then delete the
/// namespaces (their interfaces, the bridge and the qdiscs go with them). Returns how
/// many namespaces were removed.
pub fn sweep() -> usize {
    let names = leftovers();
    for ns in &names {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if pid.parse::<u32>().is_ok_and(|p| p != std::process::id()) {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
        }
    }
    // The killed processes hold the namespaces until they are gone; deleting the name
    // is enough, the kernel frees the namespace with its last process.
    for ns in &names {
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stderr(Stdio::null())
            .status();
    }
    names.len()
}

impl Net {
    /// Make the bridge namespace and one namespace per host, each with `eth0` on the
    /// bridge, `lo` up and, when `netem` is given, its qdisc on `eth0`.
    pub fn create(hosts: &[Host], netem: Option<Netem>) -> Result<Net> {
        let net = Net { _made: () };
        ip(&["netns", "add", CORE])?;
        ip(&["-n", CORE, "link", "set", "lo", "up"])?;
        bridge(BRIDGE)?;
        for (i, h) in hosts.iter().enumerate() {
            let ns = h.ns();
            let port = format!("p{i}");
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let mac = h.mac();
            ip(&[
                "-n", CORE, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "address", &mac, "netns", &ns,
            ])?;
            ip(&["-n", CORE, "link", "set", &port, "master", BRIDGE])?;
            ip(&["-n", CORE, "link", "set", &port, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/16", h.ip),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            if let Some(n) = &netem {
                tc(&ns, "eth0", n)?;
            }
        }
        // Every host knows every other's MAC address: no ARP. With tens of hosts
        // dialling each other at once, the broadcasts (one copy per bridge port) overflow
        // the kernel's per-CPU backlog and the lost ARP answers look like dials timing out.
        let mut table = String::new();
        for h in hosts {
            table.push_str(&format!(
                "neigh replace {} lladdr {} dev eth0 nud permanent\n",
                h.ip,
                h.mac()
            ));
        }
        let batch = std::env::temp_dir().join(format!("{PREFIX}neigh-{}", std::process::id()));
        std::fs::write(&batch, table)?;
        let path = batch.to_str().context("temp path")?.to_string();
        for h in hosts {
            ip(&["-n", &h.ns(), "-batch", &path])?;
        }
        let _ = std::fs::remove_file(&batch);
        Ok(net)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let n = sweep();
        eprintln!("cluster-sim: removed {n} network namespaces and everything in them");
    }
}

/// The hosts of a simulation of `nodes` bee nodes: the driver, etcd, two stock skynet
/// nodes, then `n01`… on 10.213.0.0/16.
pub fn hosts(nodes: usize) -> Vec<Host> {
    let mut v = vec![
        Host {
            tag: "ctl".into(),
            ip: "10.213.0.1".into(),
        },
        Host {
            tag: "etcd".into(),
            ip: "10.213.0.2".into(),
        },
        Host {
            tag: "sky1".into(),
            ip: "10.213.0.3".into(),
        },
        Host {
            tag: "sky2".into(),
            ip: "10.213.0.4".into(),
        },
    ];
    for i in 1..=nodes {
        v.push(Host {
            tag: node_name(i),
            ip: format!("10.213.{}.{}", 1 + (i - 1) / 250, 1 + (i - 1) % 250),
        });
    }
    v
}

/// The name of bee node `i` (1-based).
pub fn node_name(i: usize) -> String {
    format!("n{i:02}")
}

/// The bridge port of bee node `i` (1-based): hosts are the driver, etcd, two skynet
/// nodes, then the bee nodes, and host `k` is on port `p{k}`.
fn node_port(i: usize) -> String {
    format!("p{}", 3 + i)
}

/// Cut bee nodes `nodes` (1-based) off the others: their ports move to a second bridge,
/// so they reach each other but nothing else (etcd and the driver stay with the rest).
pub fn partition(nodes: &[usize]) -> Result<()> {
    if ip(&["-n", CORE, "link", "show", "br1"]).is_err() {
        bridge("br1")?;
    }
    for &i in nodes {
        ip(&["-n", CORE, "link", "set", &node_port(i), "master", "br1"])?;
    }
    Ok(())
}

/// Undo [`partition`]: the ports go back to the one bridge.
pub fn heal(nodes: &[usize]) -> Result<()> {
    for &i in nodes {
        ip(&["-n", CORE, "link", "set", &node_port(i), "master", BRIDGE])?;
    }
    Ok(())
}
