//! A real black hole: the peer's host stops answering at the IP level (iptables DROP),
//! so the socket stays ESTABLISHED and nothing comes back, not even a reset. Needs root,
//! `ip` (iproute2) and `iptables`: the listener runs in a child process inside a network
//! namespace this test creates, reached over a veth pair with link-local addresses
//! (169.254.0.0/16). Without root or the tools it fails, saying what is missing.
//!
//! Checks: a call waiting on the black-holed peer fails with `PeerUnreachable` within the
//! default liveness bound (4 s; asserted with margin), and a call whose dial is under way
//! when the network heals gets through within about `redial` (100 ms; asserted ≤ 1 s for
//! CI load, while the kernel's SYN retransmission alone would take about 1.8 s). And the listener's side: an idle accepted connection (a stock skynet peer's,
//! which has no heartbeat) outlives a cut longer than the listener's liveness bound, so
//! the peer's next call after the cut is answered instead of meeting a reset.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bee_transport::{Channel, ChannelConfig, ListenerConfig, TransportError};
use bytes::Bytes;
use common::{name, Server};

/// Run a command, `Err` with its output if it fails.
fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The namespace and veth pair; removed on drop (deleting the namespace deletes the
/// pair).
struct Netns {
    name: String,
    host_if: String,
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.name]);
        let _ = run(&["ip", "link", "del", &self.host_if]);
    }
}

/// Namespace `ns` with `peer_ip` inside, `host_ip` outside, linked by a veth pair.
fn setup(id: u32, host_ip: &str, peer_ip: &str) -> Result<Netns, String> {
    let ns = Netns {
        name: format!("bee_bh_{id}"),
        host_if: format!("bhh{id}"),
    };
    let peer_if = format!("bhn{id}");
    run(&["ip", "netns", "add", &ns.name])?;
    run(&[
        "ip",
        "link",
        "add",
        &ns.host_if,
        "type",
        "veth",
        "peer",
        "name",
        &peer_if,
    ])?;
    run(&["ip", "link", "set", &peer_if, "netns", &ns.name])?;
    run(&[
        "ip",
        "addr",
        "add",
        &format!("{host_ip}/30"),
        "dev",
        &ns.host_if,
    ])?;
    run(&["ip", "link", "set", &ns.host_if, "up"])?;
    let inside = |args: &[&str]| {
        let mut all = vec!["ip", "netns", "exec", ns.name.as_str()];
        all.extend_from_slice(args);
        run(&all)
    };
    inside(&[
        "ip",
        "addr",
        "add",
        &format!("{peer_ip}/30"),
        "dev",
        &peer_if,
    ])?;
    inside(&["ip", "link", "set", &peer_if, "up"])?;
    inside(&["ip", "link", "set", "lo", "up"])?;
    Ok(ns)
}

/// Child side: a listener on `BEE_BH_ADDR` inside the namespace; prints its port, ends
/// when stdin closes. Does nothing unless started by `black_holed_peer_...`.
#[test]
#[ignore = "child process of black_holed_peer_is_detected_and_reached_again_after_healing"]
fn blackhole_child() {
    let Some(addr) = std::env::var_os("BEE_BH_ADDR") else {
        return;
    };
    let addr = format!("{}:0", addr.to_string_lossy());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut config = ListenerConfig::default();
    if let Some(ms) = std::env::var("BEE_BH_LIVENESS_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.liveness = Duration::from_millis(ms);
    }
    rt.block_on(async {
        let server = Server::start_on(&addr, config).await;
        println!("PORT {}", server.addr.port());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut sink = String::new();
            while std::io::stdin()
                .read_line(&mut sink)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
            let _ = tx.send(());
        });
        let _ = rx.await;
        server.stop().await;
    });
}

struct Guarded(Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn black_holed_peer_is_detected_and_reached_again_after_healing() {
    // This test must run where CI runs it (as root, with the tools `cargo xtask setup`
    // installs); anywhere else it fails saying why, it does not pass untested.
    let (ns, peer_ip) = namespace(0);
    let outcome = tokio::time::timeout(Duration::from_secs(30), scenario(&ns, &peer_ip)).await;
    drop(ns);
    outcome.expect("the black-hole test must finish within 30 s");
}

/// The listener child in `ns` (its liveness bound `liveness_ms`, or the default), and
/// its port.
async fn start_child(ns: &Netns, peer_ip: &str, liveness_ms: Option<u64>) -> (Guarded, u16) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name])
        .arg(&exe)
        .args(["--ignored", "--exact", "blackhole_child", "--nocapture"])
        .env("BEE_BH_ADDR", peer_ip)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(ms) = liveness_ms {
        cmd.env("BEE_BH_LIVENESS_MS", ms.to_string());
    }
    let mut child = Guarded(cmd.spawn().expect("start the listener in the namespace"));
    let stdout = child.0.stdout.take().unwrap();
    let port = tokio::task::spawn_blocking(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(at) = line.find("PORT ") {
                return line[at + 5..].trim().parse::<u16>().ok();
            }
        }
        None
    })
    .await
    .unwrap()
    .expect("the child printed its port");
    (child, port)
}

/// Black-hole the namespace's host (`-A`) or heal it (`-D`).
fn drop_rule(ns: &Netns, op: &str) -> Result<(), String> {
    run(&[
        "ip", "netns", "exec", &ns.name, "iptables", op, "INPUT", "-j", "DROP",
    ])
}

/// Set up a namespace for one test (`variant` keeps two tests of one process apart).
fn namespace(variant: u32) -> (Netns, String) {
    assert!(
        is_root(),
        "the black-hole test needs root (network namespaces, iptables): run it as root, as CI does"
    );
    for tool in ["ip", "iptables"] {
        assert!(
            Command::new(tool).arg("--version").output().is_ok(),
            "the black-hole test needs `{tool}` (cargo xtask setup installs iproute2 and iptables)"
        );
    }
    let id = (std::process::id() % 50_000) * 2 + variant;
    let octet = id % 250 + 1;
    let (host_ip, peer_ip) = (format!("169.254.{octet}.1"), format!("169.254.{octet}.2"));
    let ns = setup(id, &host_ip, &peer_ip)
        .unwrap_or_else(|e| panic!("the black-hole test cannot set up its namespace: {e}"));
    (ns, peer_ip)
}

#[tokio::test]
async fn an_idle_accepted_connection_outlives_a_cut_longer_than_the_bound() {
    let (ns, peer_ip) = namespace(1);
    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
        // A listener whose liveness bound is 1 s; the cut lasts 4 s.
        let (mut child, port) = start_child(&ns, &peer_ip, Some(1000)).await;
        let mut stream = tokio::net::TcpStream::connect((peer_ip.as_str(), port))
            .await
            .unwrap();
        let echo = |session: u32, text: &[u8]| {
            let mut out = bytes::BytesMut::new();
            bee_codec::cluster::encode_request(&mut out, &name("@echo"), session, text).unwrap();
            out
        };
        use tokio::io::AsyncWriteExt;
        stream.write_all(&echo(1, b"before")).await.unwrap();
        let mut conn = bee_transport::Connection::new(stream, bee_codec::frame::MAX_BODY);
        let (s, r) = common::read_response(&mut conn).await.unwrap();
        assert_eq!((s, r), (1, Ok(Bytes::from_static(b"before"))));
        drop_rule(&ns, "-A").expect("black-hole the listener's host");
        tokio::time::sleep(Duration::from_secs(4)).await;
        drop_rule(&ns, "-D").expect("heal the network");
        let mut stream = conn.into_inner();
        stream.write_all(&echo(2, b"after")).await.unwrap();
        let mut conn = bee_transport::Connection::new(stream, bee_codec::frame::MAX_BODY);
        let answer = tokio::time::timeout(Duration::from_secs(5), common::read_response(&mut conn))
            .await
            .expect("an answer (or a reset) within 5 s");
        assert_eq!(
            answer,
            Some((2, Ok(Bytes::from_static(b"after")))),
            "the idle connection was closed during the cut"
        );
        drop(child.0.stdin.take());
    })
    .await;
    drop(ns);
    outcome.expect("the test must finish within 30 s");
}

async fn scenario(ns: &Netns, peer_ip: &str) {
    let (mut child, port) = start_child(ns, peer_ip, None).await;
    let ch = Channel::new(
        "blackholed",
        format!("{peer_ip}:{port}"),
        ChannelConfig::default(),
    );
    let r = ch
        .call(name("@echo"), Bytes::from_static(b"before"), None)
        .await
        .unwrap();
    assert_eq!(&r[..], b"before");

    drop_rule(ns, "-A").expect("black-hole the peer");
    let t0 = Instant::now();
    let r = ch
        .call(
            name("@echo"),
            Bytes::from_static(b"lost"),
            Some(Duration::from_secs(60)),
        )
        .await;
    let took = t0.elapsed();
    eprintln!("black hole detected after {took:?}: {r:?}");
    assert!(
        matches!(r, Err(TransportError::PeerUnreachable { .. })),
        "{r:?}"
    );
    assert!(took < Duration::from_secs(8), "detected after {took:?}");
    // While the hole lasts, calls fail (no answer to the dial) rather than hang forever.
    let r = ch
        .call(
            name("@echo"),
            Bytes::from_static(b"x"),
            Some(Duration::from_secs(60)),
        )
        .await;
    assert!(r.is_err(), "{r:?}");

    // A call that starts dialling during the hole and the network heals mid-dial: the
    // dial's first SYN was dropped and the kernel would retransmit it only at 1 s and 3 s
    // after it; a fresh attempt every `redial` (100 ms) gets through soon after healing.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mid = {
        let ch = ch.clone();
        tokio::spawn(async move {
            ch.call(
                name("@echo"),
                Bytes::from_static(b"after"),
                Some(Duration::from_secs(10)),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(1200)).await;
    drop_rule(ns, "-D").expect("heal the network");
    let healed = Instant::now();
    let r = mid.await.unwrap();
    let back = healed.elapsed();
    eprintln!("reached again {back:?} after the network healed (mid-dial): {r:?}");
    assert_eq!(
        &r.expect("the call dialling across the heal succeeds")[..],
        b"after"
    );
    // Without redials the kernel's SYN retransmission comes about 1.8 s after the heal.
    assert!(back <= Duration::from_millis(1000), "took {back:?}");
    ch.close();
    drop(child.0.stdin.take());
}
