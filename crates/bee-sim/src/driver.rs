//! The scenarios of `bee-sim` (`cargo xtask cluster-sim`), run by `bee-sim run` inside the `ctl` namespace
//! (`bee-sim driver …`): starts etcd, the two stock skynet nodes and the bee
//! nodes in their namespaces, runs the scenarios, and writes `results.md` (the table)
//! into the run's directory. It exits non-zero when a check failed: a hung call, a lost
//! or duplicated push, a missing ack — never because something was slow.
//!
//! Every bee node runs in etcd mode (`cluster = "etcd://…"`) with nothing else changed
//! from the defaults of `docs/operations.md`, and the services `echo`, `sink`, `slow`.
//! A node's view of another is read through the node itself: `bee_clusterd ping PEER`
//! makes the node say hello to PEER over its own channel and answers PEER's incarnation,
//! or the node's error for PEER (refused, down, marked down by etcd membership).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bee_cluster::lifecycle::Hello;
use bee_cluster::{Cluster, ClusterSettings};
use bee_codec::seri::{self, Value};
use bee_etcd::{ConfigUpdate, EtcdOptions, EtcdStore};
use bee_registry::{ClusterConfig, Registry};
use bee_runtime::{Node, RuntimeConfig};
use bee_transport::{Address, Channel, ChannelConfig};

use crate::net::{hosts, node_name, Host};
use crate::report::{Report, Row};

const ETCD_IP: &str = "10.213.0.2";
const PREFIX_URL: &str = "/bee/sim";
/// The bound on any one call the driver makes; a call without an answer by then is hung.
const HUNG: Duration = Duration::from_secs(30);
/// The bound on waiting for a state the cluster must reach (all see all, all acks, …).
const SETTLE: Duration = Duration::from_secs(60);

/// What the driver was asked to do.
pub struct Opts {
    /// bee nodes.
    pub nodes: usize,
    /// Repeats of each scenario.
    pub repeats: usize,
    /// Short scenarios (CI).
    pub quick: bool,
    /// The `bee` binary.
    pub bee: PathBuf,
    /// The repository (for `interop/skynet/run.sh`).
    pub root: PathBuf,
    /// The run's directory (configs, logs, etcd data, `results.md`).
    pub dir: PathBuf,
    /// Only these scenarios after the cold start (`--only`); all when empty.
    pub only: Vec<String>,
}

/// The scenario names `--only` takes.
pub const SCENARIOS: &[&str] = &[
    "kill",
    "leave",
    "push",
    "watch",
    "partition",
    "hub",
    "upgrade",
];

impl Opts {
    /// Whether scenario `name` (one of [`SCENARIOS`]) runs.
    fn runs(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == name)
    }
}

/// A process started in a namespace; killed (SIGKILL) when dropped unless stopped.
struct Proc {
    name: String,
    child: Option<Child>,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status();
    }

    /// SIGKILL and reap.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait up to `bound` for the exit (SIGKILL after that).
    fn stop(&mut self, bound: Duration) -> Result<()> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if c.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = c.kill();
        let _ = c.wait();
        bail!("{} did not stop within {bound:?} of SIGTERM", self.name)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn spawn_in(host: &Host, program: &Path, args: &[&str], log: &Path) -> Result<Proc> {
    let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let child = Command::new("ip")
        .args(["netns", "exec", &host.ns()])
        .arg(program)
        .args(args)
        // Warnings only by default: info lines from 50 nodes under the scenarios' load
        // cost CPU the figures would pay for. `BEE_SIM_LOG=info` for a closer look.
        .env(
            "BEE_LOG",
            std::env::var("BEE_SIM_LOG").unwrap_or_else(|_| "warn".to_string()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(out))
        .spawn()
        .with_context(|| format!("cannot start {} in {}", program.display(), host.ns()))?;
    Ok(Proc {
        name: host.tag.clone(),
        child: Some(child),
    })
}

/// The outcome of one `ping` through a node.
enum Ping {
    Ok(Hello),
    Err(String),
    Hung,
}

async fn ping(c: &Cluster, from: &str, to: &str) -> Ping {
    let payload = seri::pack(&[Value::from("lua"), Value::from("ping"), Value::from(to)])
        .expect("plain values pack");
    match tokio::time::timeout(HUNG, c.call(from, "@bee_clusterd", payload)).await {
        Err(_) => Ping::Hung,
        Ok(Err(e)) => Ping::Err(e.to_string()),
        Ok(Ok(reply)) => match seri::unpack(&reply) {
            Ok(v) => match Hello::from_values(&v) {
                Ok(h) => Ping::Ok(h),
                Err(e) => Ping::Err(format!("bad hello: {e}")),
            },
            Err(e) => Ping::Err(format!("bad reply: {e}")),
        },
    }
}

async fn call_values(c: &Cluster, node: &str, target: &str, args: &[Value]) -> Result<Vec<Value>> {
    let payload = seri::pack(args)?;
    let reply = tokio::time::timeout(HUNG, c.call(node, target, payload))
        .await
        .with_context(|| format!("HUNG: call to {node} {target} had no answer in {HUNG:?}"))?
        .with_context(|| format!("call to {node} {target}"))?;
    Ok(seri::unpack(&reply)?)
}

/// The `State:` of a process (`T (stopped)`, `S (sleeping)`, …).
fn proc_state(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("State:"))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "gone".into())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The simulated cluster: who runs where, and the processes.
struct Sim {
    opts: Opts,
    hosts: Vec<Host>,
    bee: BTreeMap<String, Proc>,
    sky: Vec<Proc>,
    etcd: Option<Proc>,
    version: u64,
    client: Cluster,
    _client_node: Node,
    store: EtcdStore,
    url: String,
}

impl Sim {
    fn host(&self, tag: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.tag == tag)
            .expect("every tag has a host")
    }

    fn names(&self) -> Vec<String> {
        (1..=self.opts.nodes).map(node_name).collect()
    }

    fn text(hosts: &[Host], nodes: usize, version: u64) -> String {
        let mut t = format!("-- written by cargo xtask cluster-sim\n__version = {version}\n");
        for h in hosts.iter().filter(|h| h.tag.starts_with("sky")) {
            t.push_str(&format!("{} = \"{}:2528\"\n", h.tag, h.ip));
        }
        for i in 1..=nodes {
            let h = &hosts[3 + i];
            t.push_str(&format!("{} = \"{}:2528\"\n", h.tag, h.ip));
        }
        t
    }

    fn start_bee(&self, name: &str) -> Result<Proc> {
        let cfg = self.opts.dir.join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "name = \"{name}\"\ncluster = \"{}\"\n\n\
                 [[service]]\nkind = \"echo\"\nname = \"echo\"\n\n\
                 [[service]]\nkind = \"sink\"\nname = \"sink\"\n\n\
                 [[service]]\nkind = \"slow\"\nname = \"slow\"\n",
                self.url
            ),
        )?;
        let log = self.opts.dir.join(format!("{name}.log"));
        spawn_in(
            self.host(name),
            &self.opts.bee,
            &["run", cfg.to_str().context("utf-8 path")?],
            &log,
        )
    }

    /// Wait until every node in `from` reaches every node in `to` (hello with an
    /// incarnation, other than `not` for that peer when given). Returns per pair the time
    /// from `t0`; fails on a hung ping or when `SETTLE` passes.
    async fn until_all_see(
        &self,
        from: &[String],
        to: &[String],
        t0: Instant,
        not: &BTreeMap<String, u64>,
    ) -> Result<Vec<f64>> {
        Ok(self
            .until_all_see_why(from, to, t0, not)
            .await?
            .into_iter()
            .map(|(t, _)| t)
            .collect())
    }

    /// [`Sim::until_all_see`] with, per pair, `a -> b` and the last error before it
    /// succeeded (to say what the slowest pair waited for).
    async fn until_all_see_why(
        &self,
        from: &[String],
        to: &[String],
        t0: Instant,
        not: &BTreeMap<String, u64>,
    ) -> Result<Vec<(f64, String)>> {
        let pairs = from
            .iter()
            .flat_map(|a| to.iter().map(move |b| (a.clone(), b.clone())))
            .filter(|(a, b)| a != b)
            .collect();
        self.until_pairs_see_why(pairs, t0, not).await
    }

    /// [`Sim::until_all_see_why`] for the pairs `(a, b)` given.
    async fn until_pairs_see_why(
        &self,
        pairs: Vec<(String, String)>,
        t0: Instant,
        not: &BTreeMap<String, u64>,
    ) -> Result<Vec<(f64, String)>> {
        let mut tasks = Vec::new();
        // At most this many pings at once, each pair retried every 100 ms: the driver
        // must not be the storm it measures.
        let gate = Arc::new(tokio::sync::Semaphore::new(128));
        for (a, b) in pairs {
            let (c, gate) = (self.client.clone(), gate.clone());
            let old = not.get(&b).copied();
            tasks.push(tokio::spawn(async move {
                let mut last = String::new();
                loop {
                    let permit = gate.acquire().await;
                    let res = ping(&c, &a, &b).await;
                    drop(permit);
                    match res {
                        Ping::Ok(h) if h.incarnation != 0 && Some(h.incarnation) != old => {
                            return Ok((ms(t0.elapsed()), format!("{a} -> {b}: {last}")));
                        }
                        Ping::Err(e) if t0.elapsed() <= SETTLE => {
                            last = e;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Ping::Hung => bail!("HUNG: ping {a} -> {b} had no answer in {HUNG:?}"),
                        _ if t0.elapsed() > SETTLE => {
                            bail!("{a} did not reach {b} within {SETTLE:?} (last error: {last})")
                        }
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await??);
        }
        Ok(out)
    }

    /// Each of `nodes`' incarnation as node `via` sees it.
    async fn incarnations(&self, via: &str, nodes: &[String]) -> Result<BTreeMap<String, u64>> {
        let mut m = BTreeMap::new();
        for n in nodes {
            match ping(&self.client, via, n).await {
                Ping::Ok(h) => {
                    m.insert(n.clone(), h.incarnation);
                }
                Ping::Err(e) => bail!("{via} cannot reach {n}: {e}"),
                Ping::Hung => bail!("HUNG: ping {via} -> {n}"),
            }
        }
        Ok(m)
    }

    /// Each stock skynet node calls `echo` on every bee node through its own cluster
    /// library (`@relay`), until all answer; the time from `t0`.
    async fn skynet_reaches_all(&self, t0: Instant) -> Result<f64> {
        for sky in ["sky1", "sky2"] {
            for n in self.names() {
                loop {
                    let r = call_values(
                        &self.client,
                        sky,
                        "@relay",
                        &[
                            Value::from("call"),
                            Value::from(n.as_str()),
                            Value::from("echo"),
                            Value::from("x"),
                        ],
                    )
                    .await;
                    match r {
                        Ok(v) if v.first() == Some(&Value::Boolean(true)) => break,
                        Err(e) if format!("{e:#}").contains("HUNG") => return Err(e),
                        _ if t0.elapsed() > SETTLE => {
                            bail!("{sky} did not reach {n} within {SETTLE:?}: {r:?}")
                        }
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }
        }
        Ok(ms(t0.elapsed()))
    }

    /// `pushes` pushes to every bee node's `sink`, then its count must be exactly that
    /// (less: a lost push; more: a duplicate). Returns the problems found.
    async fn check_pushes(&self, pushes: usize) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        for n in self.names() {
            call_values(&self.client, &n, "@sink", &[Value::from("reset")]).await?;
            for i in 0..pushes {
                let payload = seri::pack(&[Value::from(i as i64)])?;
                self.client
                    .send(&n, "@sink", payload)
                    .await
                    .with_context(|| format!("push to {n}"))?;
            }
        }
        for n in self.names() {
            // Pushes and the count call share the connection: the count answers after
            // every push before it was handled.
            let v = call_values(&self.client, &n, "@sink", &[Value::from("count")]).await?;
            let got = v.first().and_then(Value::as_int).unwrap_or(-1);
            if got < pushes as i64 {
                problems.push(format!("LOST PUSH: {n} counted {got} of {pushes} pushes"));
            } else if got > pushes as i64 {
                problems.push(format!(
                    "DUPLICATE: {n} counted {got} pushes, {pushes} were sent"
                ));
            }
        }
        Ok(problems)
    }
}

/// `bee-sim driver`: see the module doc.
pub async fn run(opts: Opts, report: &mut Report) -> Result<()> {
    let hosts = hosts(opts.nodes);
    let url = format!("etcd://{ETCD_IP}:2379{PREFIX_URL}");

    // etcd, in its own namespace.
    let etcd_host = hosts[1].clone();
    let data = opts.dir.join("etcd-data");
    let client_url = format!("http://{ETCD_IP}:2379");
    let etcd = spawn_in(
        &etcd_host,
        Path::new("/usr/bin/etcd"),
        &[
            "--name",
            "sim",
            "--data-dir",
            data.to_str().context("utf-8 path")?,
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
            "--listen-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-cluster",
            "sim=http://127.0.0.1:2380",
            "--initial-cluster-state",
            "new",
            "--log-level",
            "warn",
        ],
        &opts.dir.join("etcd.log"),
    )?;
    let options = EtcdOptions {
        connect_timeout: Duration::from_millis(500),
        ..EtcdOptions::default()
    };
    let started = Instant::now();
    let store = loop {
        match EtcdStore::connect_with(&url, options).await {
            Ok(s) => break s,
            Err(e) if started.elapsed() > Duration::from_secs(30) => {
                bail!("etcd did not answer within 30 s: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let version = 1;
    let text = Sim::text(&hosts, opts.nodes, version);
    store.put_config_text(&text, false).await?;
    let file = opts.dir.join("cluster.lua");
    std::fs::write(&file, &text)?;

    // The driver's own client node (in the ctl namespace).
    let client_node = Node::new("sim-driver".to_string(), RuntimeConfig::default());
    let mut settings = ClusterSettings {
        wait_for_node: Some(Duration::ZERO),
        ..ClusterSettings::default()
    };
    settings.channel.call_timeout = HUNG;
    let client = Cluster::start(
        &client_node,
        Registry::new(ClusterConfig::load(&file)?),
        settings,
    );

    let mut sim = Sim {
        opts,
        hosts,
        bee: BTreeMap::new(),
        sky: Vec::new(),
        etcd: Some(etcd),
        version,
        client,
        _client_node: client_node,
        store,
        url,
    };

    // The two stock skynet nodes.
    let run_sh = sim.opts.root.join("interop").join("skynet").join("run.sh");
    for tag in ["sky1", "sky2"] {
        let p = spawn_in(
            sim.host(tag),
            &run_sh,
            &["node", tag, file.to_str().context("utf-8 path")?],
            &sim.opts.dir.join(format!("{tag}.log")),
        )?;
        sim.sky.push(p);
    }

    let names = sim.names();
    let n = sim.opts.nodes;
    let repeats = sim.opts.repeats;

    // 1. Cold start: every node up and every node has said hello to every other (and
    //    learnt its incarnation); both skynet nodes reach every bee node.
    let mut cold = Vec::new();
    let mut sky_cold = Vec::new();
    for r in 0..repeats {
        for p in sim.bee.values_mut() {
            p.stop(Duration::from_secs(15))?;
        }
        sim.bee.clear();
        let t0 = Instant::now();
        for name in &names {
            let p = sim.start_bee(name)?;
            sim.bee.insert(name.clone(), p);
        }
        let pairs = sim
            .until_all_see(&names, &names, t0, &BTreeMap::new())
            .await
            .context("cold start")?;
        let all = pairs.iter().copied().fold(0.0, f64::max);
        cold.push(all);
        let sky = sim.skynet_reaches_all(t0).await.context("cold start")?;
        sky_cold.push(sky);
        eprintln!(
            "  cold start {}/{repeats}: all {n} nodes see each other in {all:.0} ms; skynet reaches all in {sky:.0} ms",
            r + 1
        );
    }
    report.push(Row::new(
        "1 cold start",
        &format!("all {n} bee nodes up, every pair said hello (incarnation known)"),
        cold,
        "",
    ));
    report.push(Row::new(
        "1 cold start",
        "both skynet nodes' calls reach every bee node",
        sky_cold,
        "",
    ));
    // What the "every pair" figures cost to measure: the same sweep on a settled cluster.
    let mut floor = Vec::new();
    for _ in 0..repeats {
        let t0 = Instant::now();
        sim.until_all_see(&names, &names, t0, &BTreeMap::new())
            .await
            .context("settled sweep")?;
        floor.push(ms(t0.elapsed()));
    }
    report.push(Row::new(
        "1 cold start",
        &format!(
            "measuring floor: one all-pairs sweep ({} pings) on the settled cluster",
            n * (n - 1)
        ),
        floor,
        "",
    ));
    let pushes = if sim.opts.quick { 200 } else { 1000 };
    for p in sim.check_pushes(pushes).await? {
        report.fail(p);
    }

    // 2. kill -9 of 10 % with calls in flight from every live node.
    if sim.opts.runs("kill") {
        kill_scenario(&mut sim, report).await?;
    }

    // 3. A node leaves (SIGTERM) and joins again.
    if sim.opts.runs("leave") {
        leave_join(&mut sim, report).await?;
    }

    // 4. Config push: file (`bee config push`) and etcd (a write of the key).
    if sim.opts.runs("push") {
        config_push(&mut sim, report).await?;
    }

    // 5. etcd put -> watch latency.
    let counts: &[usize] = if sim.opts.quick {
        &[10, 50]
    } else {
        &[50, 1000]
    };
    if sim.opts.runs("watch") {
        for &w in counts {
            watch_latency(&sim, report, w).await?;
        }
    }

    // After everything: no push lost or doubled.
    for p in sim.check_pushes(pushes).await? {
        report.fail(p);
    }

    // 8. A partition: a fifth of the nodes cut off, then healed.
    if sim.opts.runs("partition") {
        partition(&mut sim, report).await?;
        for p in sim.check_pushes(pushes).await? {
            report.fail(p);
        }
    }

    // 7. A hub with many connected peers.
    if sim.opts.runs("hub") {
        hub(&sim, report, if sim.opts.quick { 200 } else { 1000 }).await?;
    }

    // 6. Rolling upgrade of every node under load (last: the nodes are new processes
    //    afterwards, started by `bee cluster upgrade`, not by the driver).
    if sim.opts.runs("upgrade") {
        rolling_upgrade(&mut sim, report).await?;
        // The successors take pushes without loss or duplicates too.
        for p in sim.check_pushes(pushes).await? {
            report.fail(p);
        }
    }

    for p in sim.bee.values_mut() {
        let _ = p.stop(Duration::from_secs(15));
    }
    drop(sim.sky.drain(..));
    drop(sim.etcd.take());
    Ok(())
}

async fn kill_scenario(sim: &mut Sim, report: &mut Report) -> Result<()> {
    let names = sim.names();
    let k = (names.len() / 10).max(1);
    let mut to_error = Vec::new();
    let mut to_view = Vec::new();
    let mut to_etcd = Vec::new();
    let mut hung = 0usize;
    for r in 0..sim.opts.repeats {
        // Victims: a different tenth each round.
        let victims: Vec<String> = (0..k)
            .map(|i| names[(r * k + i * 10 + 3) % names.len()].clone())
            .collect();
        let live: Vec<String> = names
            .iter()
            .filter(|n| !victims.contains(n))
            .cloned()
            .collect();
        // Freeze the victims so that the calls to them stay in flight, then call.
        for v in &victims {
            sim.bee[v].signal("-STOP");
        }
        for v in &victims {
            let pid = sim.bee[v].pid();
            let t = Instant::now();
            while !proc_state(pid).starts_with('T') {
                if t.elapsed() > Duration::from_secs(5) {
                    bail!(
                        "{v} (pid {pid}) did not stop on SIGSTOP: state {}",
                        proc_state(pid)
                    );
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let t_kill = Arc::new(std::sync::OnceLock::<Instant>::new());
        let mut pending = Vec::new();
        for a in &live {
            for v in &victims {
                let (c, a, v, t) = (sim.client.clone(), a.clone(), v.clone(), t_kill.clone());
                pending.push(tokio::spawn(async move {
                    let res = ping(&c, &a, &v).await;
                    let at = t.get().map(|t| ms(t.elapsed()));
                    (a, v, res, at)
                }));
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = t_kill.set(Instant::now());
        let t0 = *t_kill.get().expect("just set");
        for v in &victims {
            if let Some(mut p) = sim.bee.remove(v) {
                p.kill9();
            }
        }
        // etcd membership: the victims' keys gone.
        let store = sim.store.clone();
        let vs = victims.clone();
        let etcd_task = tokio::spawn(async move {
            loop {
                let m = store.members().await?;
                if vs.iter().all(|v| !m.contains_key(v)) {
                    return Ok::<f64, anyhow::Error>(ms(t0.elapsed()));
                }
                if t0.elapsed() > SETTLE {
                    bail!("etcd still lists a killed node after {SETTLE:?}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        for p in pending {
            let (a, v, res, at) = p.await?;
            match res {
                Ping::Hung => {
                    hung += 1;
                    report.fail(format!("HUNG: {a}'s call to killed {v} got no answer"));
                }
                Ping::Ok(h) => report.fail(format!(
                    "{a}'s call to {v} was answered although {v} was stopped (incarnation {}, {} ms after the kill)",
                    h.incarnation,
                    at.map_or("before".into(), |x| format!("{x:.0}"))
                )),
                Ping::Err(_) => to_error.push(at.unwrap_or(0.0)),
            }
        }
        // Every live node's view marks every victim down (etcd membership gone: calls
        // fail at once saying so).
        let mut tasks = Vec::new();
        for a in &live {
            for v in &victims {
                let (c, a, v) = (sim.client.clone(), a.clone(), v.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        match ping(&c, &a, &v).await {
                            Ping::Err(e) if e.contains("membership") => {
                                return Ok(ms(t0.elapsed()))
                            }
                            Ping::Hung => bail!("HUNG: ping {a} -> killed {v}"),
                            _ if t0.elapsed() > SETTLE => {
                                bail!("{a} still does not mark {v} down after {SETTLE:?}")
                            }
                            _ => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                }));
            }
        }
        for t in tasks {
            match t.await? {
                Ok(x) => to_view.push(x),
                Err(e) => report.fail(format!("{e:#}")),
            }
        }
        match etcd_task.await? {
            Ok(x) => to_etcd.push(x),
            Err(e) => report.fail(format!("{e:#}")),
        }
        // Bring the victims back (a new incarnation each) before the next round.
        let t1 = Instant::now();
        for v in &victims {
            let p = sim.start_bee(v)?;
            sim.bee.insert(v.clone(), p);
        }
        sim.until_all_see(&names, &victims, t1, &BTreeMap::new())
            .await
            .context("restarted victims")?;
        eprintln!(
            "  kill -9 {}/{}: {k} killed with {} calls in flight; {hung} hung so far",
            r + 1,
            sim.opts.repeats,
            live.len() * k
        );
    }
    let what = format!("{}% of nodes", 10);
    report.push(Row::new(
        "2 kill -9",
        &format!("{what}: call in flight -> typed error (per caller/victim pair)"),
        to_error,
        "p99 <= 3000 ms",
    ));
    report.push(Row::new(
        "2 kill -9",
        "every live node's view marks them down (etcd membership)",
        to_view,
        "p99 <= 3000 ms",
    ));
    report.push(Row::new(
        "2 kill -9",
        "etcd membership keys gone",
        to_etcd,
        "",
    ));
    report.note(format!("kill -9: {hung} hung calls (target 0)"));
    Ok(())
}

async fn leave_join(sim: &mut Sim, report: &mut Report) -> Result<()> {
    let names = sim.names();
    let mut leave = Vec::new();
    let mut join = Vec::new();
    for r in 0..sim.opts.repeats {
        let who = names[(7 * r + 1) % names.len()].clone();
        let others: Vec<String> = names.iter().filter(|n| **n != who).cloned().collect();
        let old = sim
            .incarnations(&others[0], std::slice::from_ref(&who))
            .await?;
        let t0 = Instant::now();
        if let Some(mut p) = sim.bee.remove(&who) {
            p.stop(Duration::from_secs(15))?;
        }
        // Left: every other node's call to it fails at once saying it is down.
        let mut tasks = Vec::new();
        for a in &others {
            let (c, a, w) = (sim.client.clone(), a.clone(), who.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    match ping(&c, &a, &w).await {
                        Ping::Err(e) if e.contains("down") => return Ok(ms(t0.elapsed())),
                        Ping::Hung => bail!("HUNG: ping {a} -> {w} after it left"),
                        _ if t0.elapsed() > SETTLE => {
                            bail!("{a} does not see {w} gone after {SETTLE:?}")
                        }
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }));
        }
        let mut all = 0.0f64;
        for t in tasks {
            match t.await? {
                Ok(x) => all = all.max(x),
                Err(e) => report.fail(format!("{e:#}")),
            }
        }
        leave.push(all);
        // Joins again: every node reaches its new incarnation.
        let t1 = Instant::now();
        let p = sim.start_bee(&who)?;
        sim.bee.insert(who.clone(), p);
        let pairs = sim
            .until_all_see(&others, std::slice::from_ref(&who), t1, &old)
            .await
            .context("join")?;
        join.push(pairs.iter().copied().fold(0.0, f64::max));
        eprintln!(
            "  leave/join {}/{}: {who} seen gone by all in {all:.0} ms, back in {:.0} ms",
            r + 1,
            sim.opts.repeats,
            join.last().copied().unwrap_or(0.0)
        );
    }
    report.push(Row::new(
        "3 leave/join",
        "graceful leave (SIGTERM) seen by all (calls fail: down)",
        leave,
        "p99 <= 1000 ms",
    ));
    report.push(Row::new(
        "3 leave/join",
        "join (process start) seen by all (new incarnation)",
        join,
        "p99 <= 1000 ms (from process start; includes its start-up)",
    ));
    Ok(())
}

async fn config_push(sim: &mut Sim, report: &mut Report) -> Result<()> {
    let names = sim.names();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut file_ms = Vec::new();
    let mut etcd_ms = Vec::new();
    let total = sim.opts.nodes + 2;
    for r in 0..sim.opts.repeats {
        // File mode: `bee config push --cluster CURRENT NEW` to every node, skynet's too.
        let current = sim.opts.dir.join("cluster.lua");
        sim.version += 1;
        let next = sim.opts.dir.join(format!("cluster-v{}.lua", sim.version));
        std::fs::write(&next, Sim::text(&sim.hosts, sim.opts.nodes, sim.version))?;
        let t0 = Instant::now();
        let out = Command::new(&sim.opts.bee)
            .args(["config", "push", "--cluster"])
            .arg(&current)
            .arg(&next)
            .args(["--require-all", "--timeout-ms", "10000"])
            .stdin(Stdio::null())
            .output()
            .context("cannot run bee config push")?;
        let took = ms(t0.elapsed());
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary = stdout.lines().last().unwrap_or("").to_string();
        let want = format!("{total} applied");
        if !out.status.success() || !summary.contains(&want) {
            report.fail(format!(
                "MISSING ACK: bee config push: {summary} {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        } else {
            file_ms.push(took);
        }
        std::fs::copy(&next, &current)?;

        // etcd mode: a write of the key, then every node's ack of that version.
        sim.version += 1;
        let text = Sim::text(&sim.hosts, sim.opts.nodes, sim.version);
        let t0 = Instant::now();
        sim.store.put_config_text(&text, false).await?;
        let acks = sim
            .store
            .wait_acks(&refs, sim.version, Duration::from_secs(10))
            .await?;
        let took = ms(t0.elapsed());
        if acks.all_applied() {
            etcd_ms.push(took);
        } else {
            report.fail(format!(
                "MISSING ACK: etcd version {}: {} applied, failed {:?}, missing {:?}",
                sim.version,
                acks.applied.len(),
                acks.failed.keys().collect::<Vec<_>>(),
                acks.missing
            ));
        }
        std::fs::write(&current, &text)?;
        eprintln!(
            "  config push {}/{}: file {:.0} ms, etcd {took:.0} ms",
            r + 1,
            sim.opts.repeats,
            file_ms.last().copied().unwrap_or(f64::NAN)
        );
    }
    report.push(Row::new(
        "4 config push",
        &format!(
            "file: `bee config push` to {total} nodes (2 skynet), all applied (whole command)"
        ),
        file_ms,
        "p99 <= 500 ms",
    ));
    report.push(Row::new(
        "4 config push",
        &format!("etcd: key written -> {} acks", sim.opts.nodes),
        etcd_ms,
        "p99 <= 500 ms",
    ));
    Ok(())
}

async fn watch_latency(sim: &Sim, report: &mut Report, watchers: usize) -> Result<()> {
    let url = format!("etcd://{ETCD_IP}:2379/bee/watchbench{watchers}");
    let writer = EtcdStore::connect(&url).await?;
    // Connect the watchers (each its own etcd client), a few at a time.
    let mut stores = Vec::with_capacity(watchers);
    for _ in 0..watchers {
        stores.push(EtcdStore::connect(&url).await.context("watcher connect")?);
    }
    let mut watches: Vec<_> = stores.iter().map(|s| s.watch_config()).collect();
    let mut lat = Vec::new();
    let rounds = sim.opts.repeats.max(3);
    for r in 1..=rounds as u64 {
        let text = format!("__version = {r}\nw = \"10.213.0.9:1\"\n");
        let t0 = Instant::now();
        writer.put_config_text(&text, false).await?;
        let marker = format!("__version = {r}\n");
        let mut tasks = Vec::new();
        for mut w in watches.drain(..) {
            let marker = marker.clone();
            tasks.push(tokio::spawn(async move {
                let deadline = Instant::now() + SETTLE;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match w.next_within(left).await {
                        Some(ConfigUpdate::Config(c)) if c.text.contains(&marker) => {
                            return (w, Some(ms(t0.elapsed())));
                        }
                        Some(_) => continue,
                        None => return (w, None),
                    }
                }
            }));
        }
        let mut missed = 0;
        for t in tasks {
            let (w, got) = t.await?;
            watches.push(w);
            match got {
                Some(x) => lat.push(x),
                None => missed += 1,
            }
        }
        if missed > 0 {
            report.fail(format!(
                "MISSING: {missed} of {watchers} etcd watchers never saw version {r}"
            ));
        }
    }
    report.push(Row::new(
        "5 etcd put->watch",
        &format!("{watchers} watchers (own client each), {rounds} writes"),
        lat,
        "reported (no target)",
    ));
    Ok(())
}

async fn partition(sim: &mut Sim, report: &mut Report) -> Result<()> {
    let names = sim.names();
    let n = names.len();
    let cut: Vec<usize> = ((n - n / 5 + 1)..=n).collect();
    let minority: Vec<String> = cut.iter().map(|&i| node_name(i)).collect();
    let majority: Vec<String> = names
        .iter()
        .filter(|x| !minority.contains(x))
        .cloned()
        .collect();
    let hold = Duration::from_secs(if sim.opts.quick { 6 } else { 20 });
    let mut fail_ms = Vec::new();
    let mut recover_ms = Vec::new();
    for r in 0..sim.opts.repeats {
        for x in &names {
            call_values(&sim.client, x, "@sink", &[Value::from("reset")]).await?;
        }
        // A steady stream of pushes from the driver to every node, counted per node.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stream = {
            let (c, names, stop) = (sim.client.clone(), names.clone(), stop.clone());
            tokio::spawn(async move {
                let mut sent: BTreeMap<String, (u64, u64)> = BTreeMap::new();
                let mut hung = 0u64;
                let mut i = 0i64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for x in &names {
                        i += 1;
                        let payload = seri::pack(&[Value::from(i)]).expect("plain values pack");
                        let e = sent.entry(x.clone()).or_default();
                        e.0 += 1;
                        match tokio::time::timeout(HUNG, c.send(x, "@sink", payload)).await {
                            Ok(Ok(())) => e.1 += 1,
                            Ok(Err(_)) => {}
                            Err(_) => hung += 1,
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (sent, hung)
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t0 = Instant::now();
        super::net::partition(&cut)?;
        // Calls across, started as the cut happens: each must fail (typed) in time.
        let mut tasks = Vec::new();
        for a in &majority {
            for m in &minority {
                let (c, a, m) = (sim.client.clone(), a.clone(), m.clone());
                tasks.push(tokio::spawn(async move {
                    let res = ping(&c, &a, &m).await;
                    (a, m, res, ms(t0.elapsed()))
                }));
            }
        }
        for t in tasks {
            let (a, m, res, at) = t.await?;
            match res {
                Ping::Err(_) => fail_ms.push(at),
                Ping::Hung => report.fail(format!(
                    "HUNG: {a}'s call to {m} across the partition got no answer"
                )),
                Ping::Ok(_) => report.fail(format!(
                    "{a}'s call to {m} was answered across the partition ({at:.0} ms after the cut)"
                )),
            }
        }
        let left = hold.saturating_sub(t0.elapsed());
        tokio::time::sleep(left).await;
        let t1 = Instant::now();
        super::net::heal(&cut)?;
        let day_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() % 86_400_000);
        eprintln!(
            "  healed at {:02}:{:02}:{:02}.{:03} UTC (the time in the nodes' logs)",
            day_ms / 3_600_000,
            day_ms / 60_000 % 60,
            day_ms / 1000 % 60,
            day_ms % 1000
        );
        // Recovered: every pair the cut broke works again — every majority node reaches
        // every minority node, and the minority nodes reach each other (their etcd
        // leases expired meanwhile) and the majority. Timed over those pairs only: the
        // pairs inside the majority never broke, and probing them too would time the
        // sweep (about a second at 50 nodes, the cold start's "measuring floor"), not the
        // recovery. They are checked right after, untimed.
        let broken: Vec<(String, String)> = names
            .iter()
            .flat_map(|a| names.iter().map(move |b| (a.clone(), b.clone())))
            .filter(|(a, b)| a != b && (minority.contains(a) || minority.contains(b)))
            .collect();
        let probed = broken.len();
        let pairs = sim
            .until_pairs_see_why(broken, t1, &BTreeMap::new())
            .await
            .context("after the heal")?;
        let (rec, why) = pairs
            .into_iter()
            .max_by(|x, y| x.0.total_cmp(&y.0))
            .unwrap_or_default();
        eprintln!("  slowest after the heal ({probed} pairs the cut broke): {why} ({rec:.0} ms)");
        recover_ms.push(rec);
        sim.until_all_see_why(&names, &names, Instant::now(), &BTreeMap::new())
            .await
            .context("every pair, after the heal")?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (sent, hung) = stream.await?;
        if hung > 0 {
            report.fail(format!(
                "HUNG: {hung} pushes during the partition did not return"
            ));
        }
        let mut lost = 0u64;
        for x in &names {
            let (attempted, accepted) = sent.get(x).copied().unwrap_or_default();
            let v = call_values(&sim.client, x, "@sink", &[Value::from("count")]).await?;
            let got = v.first().and_then(Value::as_int).unwrap_or(-1).max(0) as u64;
            if got > attempted {
                report.fail(format!(
                    "DUPLICATE: {x} counted {got} pushes of {attempted} sent during the partition"
                ));
            }
            lost += accepted.saturating_sub(got);
        }
        report.note(format!(
            "partition {}/{}: {} of {} nodes cut off for {hold:?}; pushes accepted by the driver's channel but never counted: {lost} (to the cut-off nodes, lost with their connection)",
            r + 1,
            sim.opts.repeats,
            minority.len(),
            n
        ));
        eprintln!(
            "  partition {}/{}: calls across failed by {:.0} ms; all reach all {rec:.0} ms after the heal; {lost} pushes lost",
            r + 1,
            sim.opts.repeats,
            fail_ms.iter().copied().fold(0.0, f64::max)
        );
    }
    report.push(Row::new(
        "8 partition",
        &format!("{}/{} split: call across -> typed error", n - n / 5, n / 5),
        fail_ms,
        "p99 <= 5000 ms (liveness 4 s + heartbeat 1 s)",
    ));
    let broken = (n / 5) * (n - 1) * 2 - (n / 5) * (n / 5 - 1);
    report.push(Row::new(
        "8 partition",
        &format!("heal -> each of the {broken} pairs the cut broke reaches again (then all pairs checked)"),
        recover_ms,
        "p99 <= 1000 ms",
    ));
    Ok(())
}

/// `VmRSS` of a process, KiB.
fn rss_kb(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|r| r.trim().strip_suffix("kB"))
        .and_then(|n| n.trim().parse().ok())
}

/// CPU time (user + system) of a process, seconds.
fn cpu_secs(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = text.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of the line, utime 14 and stime 15.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0);
    Some(ticks / hz)
}

async fn hub(sim: &Sim, report: &mut Report, peers: usize) -> Result<()> {
    let hub = node_name(1);
    let pid = sim.bee[&hub].pid();
    let addr = format!("{}:2528", sim.host(&hub).ip);
    let window = Duration::from_secs(if sim.opts.quick { 5 } else { 10 });
    let echo = Address::Name(bytes::Bytes::from_static(b"@echo"));
    let payload = seri::pack(&[Value::from("hub"), Value::Integer(7)])?;
    // Baseline: the hub's memory and CPU before the peers come.
    let rss0 = rss_kb(pid).context("hub RSS")?;
    let c0 = cpu_secs(pid).context("hub CPU")?;
    tokio::time::sleep(window).await;
    let idle = (cpu_secs(pid).context("hub CPU")? - c0) / window.as_secs_f64();
    // The peers: one channel each (heartbeat after 1 s without traffic, the default),
    // each connected by a first call.
    let channels: Vec<Channel> = (0..peers)
        .map(|i| Channel::new(&format!("peer{i}"), addr.clone(), ChannelConfig::default()))
        .collect();
    for batch in channels.chunks(100) {
        let mut tasks = Vec::new();
        for ch in batch {
            let (ch, echo, payload) = (ch.clone(), echo.clone(), payload.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::timeout(HUNG, ch.call(echo, payload, None)).await
            }));
        }
        for t in tasks {
            match t.await? {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => report.fail(format!("hub: a peer's first call failed: {e}")),
                Err(_) => report.fail("HUNG: hub: a peer's first call".into()),
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = rss_kb(pid).context("hub RSS")?;
    // Heartbeats only: every peer idle, each pinging the hub every second.
    let c1 = cpu_secs(pid).context("hub CPU")?;
    tokio::time::sleep(window).await;
    let beat = (cpu_secs(pid).context("hub CPU")? - c1) / window.as_secs_f64();
    // Calls through the hub: every peer makes 10 calls to its echo, all at once.
    let mut tasks = Vec::new();
    for ch in &channels {
        let (ch, echo, payload) = (ch.clone(), echo.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = Vec::new();
            for _ in 0..10 {
                let t = Instant::now();
                match tokio::time::timeout(HUNG, ch.call(echo.clone(), payload.clone(), None)).await
                {
                    Ok(Ok(r)) if r == payload => lat.push(ms(t.elapsed())),
                    Ok(Ok(_)) => errors.push("a wrong reply".to_string()),
                    Ok(Err(e)) => errors.push(e.to_string()),
                    Err(_) => errors.push("HUNG".to_string()),
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        let (l, errors) = t.await?;
        lat.extend(l);
        for e in errors {
            report.fail(format!("hub: a call through the hub failed: {e}"));
        }
    }
    for ch in &channels {
        ch.close();
    }
    let per_peer = (rss1 - rss0).max(0.0) / peers as f64;
    let hb = 100.0 * (beat - idle).max(0.0);
    eprintln!(
        "  hub: {peers} peers, RSS {rss0:.0} -> {rss1:.0} KiB ({per_peer:.1} KiB/peer), heartbeat CPU {hb:.2} % of a core (idle {:.2} %)",
        100.0 * idle
    );
    report.push(
        Row::new(
            "7 hub",
            &format!("{peers} connected peers: hub RSS per peer"),
            vec![per_peer],
            "p99 <= 32 KiB",
        )
        .in_unit("KiB"),
    );
    report.push(
        Row::new(
            "7 hub",
            &format!("{peers} peers' heartbeats (1/s each): hub CPU above idle"),
            vec![hb],
            "p99 <= 5 % of a core",
        )
        .in_unit("%"),
    );
    report.push(Row::new(
        "7 hub",
        &format!("calls to the hub's echo, {peers} peers x 10 at once"),
        lat,
        "",
    ));
    Ok(())
}

/// Calls and pushes of one load task during the rolling upgrade.
#[derive(Default)]
struct Load {
    calls: u64,
    failed: u64,
    pushes: u64,
    refused: u64,
    first_error: Option<String>,
    /// Failures by kind (the error text without node names and numbers).
    kinds: BTreeMap<String, u64>,
}

impl Load {
    fn error(&mut self, e: String) {
        let kind: String = e
            .split(": ")
            .skip(1)
            .collect::<Vec<_>>()
            .join(": ")
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .take(90)
            .collect();
        *self.kinds.entry(kind).or_default() += 1;
        self.first_error.get_or_insert(e);
    }
}

async fn rolling_upgrade(sim: &mut Sim, report: &mut Report) -> Result<()> {
    let names = sim.names();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let file = sim.opts.dir.join("cluster.lua");
    let config = ClusterConfig::load(&file)?;
    let mut tasks = Vec::new();
    let mut keep = Vec::new();
    // Eight Rust caller nodes: echo calls and sink pushes to every node in turn.
    for c in 0..8 {
        let node = Node::new(format!("sim-caller{c}"), RuntimeConfig::default());
        let settings = ClusterSettings {
            wait_for_node: Some(Duration::ZERO),
            ..ClusterSettings::default()
        };
        let cluster = Cluster::start(&node, Registry::new(config.clone()), settings);
        keep.push(node);
        let (names, stop) = (names.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut l = Load::default();
            let mut i = c;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let to = &names[i % names.len()];
                i += 1;
                l.calls += 1;
                let v = [Value::from("up"), Value::Integer(i as i64)];
                match call_values(&cluster, to, "@echo", &v).await {
                    Ok(r) if r == v => {}
                    Ok(r) => {
                        l.failed += 1;
                        l.error(format!("{to}: wrong reply {r:?}"));
                    }
                    Err(e) => {
                        l.failed += 1;
                        l.error(format!("{to}: {e:#}"));
                    }
                }
                l.pushes += 1;
                let payload = seri::pack(&[Value::Integer(i as i64)]).expect("plain values pack");
                if let Err(e) = cluster.send(to, "@sink", payload).await {
                    l.refused += 1;
                    l.error(format!("push to {to}: {e}"));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // A last call to every node, on the connections the pushes took: each node
            // has put every push of this caller in its sink's mailbox before it answers,
            // so none is still on its way when the push check after the upgrade resets
            // the counts (a late one would count as a duplicate there).
            for to in names.iter() {
                if let Err(e) = call_values(&cluster, to, "@echo", &[Value::from("last")]).await {
                    l.error(format!("{to}: last call: {e:#}"));
                }
            }
            l
        }));
    }
    // Before the load: each stock skynet node calls every bee node once, so the upgrade
    // starts from live connections. The partition scenario before this one can leave a
    // skynet node with a connection whose bee end was closed during the cut (an idle
    // connection whose keepalive probe fell inside it): skynet has no heartbeat and
    // learns it from the reset its next call meets. Those failures belong to the
    // partition, not to the upgrade; they are counted and reported here.
    let mut stale = Vec::new();
    for sky in ["sky1", "sky2"] {
        for to in &names {
            for attempt in 0..5 {
                let args = [
                    Value::from("call"),
                    Value::from(to.as_str()),
                    Value::from("echo"),
                    Value::from("warm-up"),
                ];
                match call_values(&sim.client, sky, "@relay", &args).await {
                    Ok(v) if v.first() == Some(&Value::Boolean(true)) => break,
                    other => {
                        stale.push(format!("{sky} -> {to}: {other:?}"));
                        if attempt == 4 {
                            report.fail(format!(
                                "{sky} cannot call {to} before the rolling upgrade: {other:?}"
                            ));
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }
    report.note(format!(
        "rolling upgrade: before the load, {} skynet calls failed on connections earlier scenarios left dead (each succeeded when called again){}",
        stale.len(),
        stale
            .first()
            .map(|s| format!(", first: {s}"))
            .unwrap_or_default()
    ));
    // The two stock skynet nodes call every bee node's echo through skynet's cluster
    // library (`@relay`).
    for sky in ["sky1", "sky2"] {
        let (c, names, stop) = (sim.client.clone(), names.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut l = Load::default();
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let to = &names[i % names.len()];
                i += 1;
                l.calls += 1;
                let args = [
                    Value::from("call"),
                    Value::from(to.as_str()),
                    Value::from("echo"),
                    Value::from("sky"),
                ];
                match call_values(&c, sky, "@relay", &args).await {
                    Ok(v) if v.first() == Some(&Value::Boolean(true)) => {}
                    Ok(v) => {
                        l.failed += 1;
                        l.error(format!("{sky} -> {to}: {v:?}"));
                    }
                    Err(e) => {
                        l.failed += 1;
                        l.error(format!("{sky} -> {to}: {e:#}"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            l
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t0 = Instant::now();
    let mut per_node = Vec::new();
    let mut upgraded = 0usize;
    // --quick: two nodes (each handover may take the whole drain bound).
    let order: Vec<String> = if sim.opts.quick {
        names.iter().take(2).cloned().collect()
    } else {
        names.clone()
    };
    for n in &order {
        // The command runs in the node's namespace: the new process it starts must listen
        // on the node's address.
        let t = Instant::now();
        let out = Command::new("ip")
            .args(["netns", "exec", &sim.host(n).ns()])
            .arg(&sim.opts.bee)
            .args(["cluster", "upgrade", "--cluster"])
            .arg(&file)
            .arg("--configs")
            .arg(&sim.opts.dir)
            .arg("--bin")
            .arg(&sim.opts.bee)
            .args(["--nodes", n, "--health-timeout-ms", "30000"])
            .stdin(Stdio::null())
            .output()
            .context("cannot run bee cluster upgrade")?;
        if !out.status.success() {
            report.fail(format!(
                "rolling upgrade stopped at {n}: {} {}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            report.not_run(&format!("6 rolling upgrade: the nodes after {n}"));
            break;
        }
        per_node.push(ms(t.elapsed()));
        upgraded += 1;
        // The old process has handed over and exits; reap it.
        if let Some(mut p) = sim.bee.remove(n) {
            if p.stop(Duration::from_secs(15)).is_err() {
                report.fail(format!(
                    "{n}: the old process did not exit after the handover"
                ));
            }
        }
    }
    let total = ms(t0.elapsed());
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut all = Load::default();
    for t in tasks {
        let l = t.await?;
        all.calls += l.calls;
        all.failed += l.failed;
        all.pushes += l.pushes;
        all.refused += l.refused;
        if all.first_error.is_none() {
            all.first_error = l.first_error;
        }
        for (k, n) in l.kinds {
            *all.kinds.entry(k).or_default() += n;
        }
    }
    drop(keep);
    // A call that never returned is a failed check; calls that failed are the figure.
    let hung = all
        .kinds
        .iter()
        .filter(|(k, _)| k.contains("HUNG"))
        .map(|(_, n)| n)
        .sum::<u64>();
    if hung > 0 {
        report.fail(format!(
            "HUNG: {hung} calls during the rolling upgrade got no answer"
        ));
    }
    for (k, n) in &all.kinds {
        report.note(format!("rolling upgrade: {n} × {k}"));
    }
    report.note(format!(
        "rolling upgrade: {upgraded} of {} nodes upgraded one after the other in {:.1} s under load from 8 Rust caller nodes and the 2 skynet nodes: {} calls ({} failed), {} pushes ({} refused); pushes lost inside a node are not counted (a node's `sink` count restarts with its new process)",
        order.len(),
        total / 1000.0,
        all.calls,
        all.failed,
        all.pushes,
        all.refused
    ));
    eprintln!(
        "  rolling upgrade: {upgraded} nodes in {:.1} s; {} calls, {} failed; {} pushes, {} refused",
        total / 1000.0,
        all.calls,
        all.failed,
        all.pushes,
        all.refused
    );
    report.push(Row::new(
        "6 rolling upgrade",
        "one node (`bee cluster upgrade --nodes X`), under load",
        per_node,
        "",
    ));
    report.push(
        Row::new(
            "6 rolling upgrade",
            &format!("failed calls of {} (8 Rust callers, 2 skynet)", all.calls),
            vec![all.failed as f64],
            "p99 <= 0 calls",
        )
        .in_unit("calls"),
    );
    report.push(
        Row::new(
            "6 rolling upgrade",
            &format!("refused pushes of {}", all.pushes),
            vec![all.refused as f64],
            "p99 <= 0 pushes",
        )
        .in_unit("pushes"),
    );
    Ok(())
}
