//! Node authentication from the node config, across real `bee` processes on
//! loopback: a node with `[auth]` refuses a bee client without the secret (or with a wrong
//! one) and logs the peer's address, serves one with the secret (in-process client node
//! and the `bee call` process with `BEE_AUTH_SECRET_FILE`), and serves a skynet-like raw
//! TCP client (frames built by hand, no authentication) from an allow-listed address only.
//! A channel with the secret calls the nodes listed in `plain_nodes` without
//! authenticating (stock skynet nodes) and refuses other nodes that cannot authenticate.
//! Also: unknown keys in the new tables are refused at start with a clear error, and a
//! config push needs an authenticated connection on a node with `[auth]`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bee_cluster::lifecycle::PushOutcome;
use bee_cluster::{CallErrorExt, Cluster, ClusterSettings};
use bee_codec::seri::{self, Value};
use bee_registry::Registry;
use bee_runtime::{Node, RuntimeConfig};
use bee_tests::{bee_bin, Layout};
use bee_transport::{AuthSecret, TransportError};

const SECRET: &str = "ops-test-secret-0123456789abcdef";

fn guarded_config() -> String {
    "[auth]\nsecret_file = \"cluster.secret\"\nallow = [\"127.0.0.2\"]\ntimeout_ms = 2000\n\n\
     [[service]]\nkind = \"echo\"\nname = \"echo\"\n"
        .to_string()
}

fn write_secret(layout: &Layout) -> std::path::PathBuf {
    let path = layout.dir.path().join("cluster.secret");
    std::fs::write(&path, format!("{SECRET}\n")).expect("write secret");
    path
}

/// A client node with (or without) a secret.
fn client(layout: &Layout, secret: Option<&str>) -> (Node, Cluster) {
    let node = Node::new(
        format!("ops-client-{}", bee_tests::free_port()),
        RuntimeConfig::default(),
    );
    let mut settings = ClusterSettings::default();
    settings.channel.call_timeout = Duration::from_secs(5);
    settings.wait_for_node = Some(Duration::ZERO);
    settings.channel.auth_secret = secret.map(AuthSecret::new);
    let cluster = Cluster::start(&node, Registry::new(layout.config()), settings);
    (node, cluster)
}

fn hello() -> bytes::Bytes {
    seri::pack(&[Value::from("hello"), Value::Integer(7)]).unwrap()
}

/// Wait (at most 5 s) until `cond` holds for the node's log; returns the log.
fn wait_log(p: &bee_tests::BeeProcess, what: &str, cond: impl Fn(&str) -> bool) -> String {
    bee_tests::wait_for(what, Duration::from_secs(5), || {
        let log = p.log();
        if cond(&log) {
            Ok(log)
        } else {
            Err(log)
        }
    })
}

fn bee_call(layout: &Layout, secret_file: Option<&Path>) -> (bool, String, String) {
    let mut cmd = Command::new(bee_bin());
    cmd.args(["call", "--cluster"])
        .arg(layout.cluster_file())
        .args(["--timeout-ms", "5000", "guarded", "echo", "hi", "42"])
        .env("BEE_LOG", "warn")
        .env_remove("BEE_AUTH_SECRET_FILE");
    if let Some(f) = secret_file {
        cmd.env("BEE_AUTH_SECRET_FILE", f);
    }
    let out = cmd.output().expect("run bee call");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_auth_refuses_nodes_without_the_secret_and_serves_nodes_with_it() {
    let layout = Layout::new(&["guarded"]);
    let secret_file = write_secret(&layout);
    let node = layout.start_logged("guarded", &guarded_config());

    // A bee node with the secret is served.
    let (_n, good) = client(&layout, Some(SECRET));
    let reply = good
        .call("guarded", "echo", hello())
        .await
        .expect("authenticated call");
    assert_eq!(reply, hello());

    // One without it is refused, and the node logs the peer's address.
    let (_n2, bare) = client(&layout, None);
    let err = bare
        .call("guarded", "echo", hello())
        .await
        .expect_err("a node without the secret must be refused");
    eprintln!("unauthenticated: {err}");
    let log = wait_log(&node, "no refusal logged", |l| {
        l.contains("peer refused: not authenticated") && l.contains("peer=127.0.0.1:")
    });
    assert!(!log.contains(SECRET), "the secret must never be logged");

    // A wrong secret: the channel finds out the node does not prove *its* secret.
    let (_n3, wrong) = client(&layout, Some("not-the-secret"));
    match wrong.call("guarded", "echo", hello()).await {
        Err(ref e) if matches!(e.transport(), Some(TransportError::AuthFailed { .. })) => {}
        other => panic!("wrong secret: expected AuthFailed, got {other:?}"),
    }

    // The `bee call` process: refused without the secret, served with it.
    let (ok, out, err) = bee_call(&layout, None);
    assert!(!ok, "bee call without the secret was served: {out}");
    assert!(err.contains("bee: error"), "{err}");
    let (ok, out, err) = bee_call(&layout, Some(&secret_file));
    assert!(ok, "bee call with BEE_AUTH_SECRET_FILE failed: {err}");
    assert_eq!(
        out.lines().take(2).collect::<Vec<_>>(),
        ["\"hi\"", "42"],
        "{out}"
    );

    // The authenticated client still works after all that.
    assert_eq!(
        good.call("guarded", "echo", hello()).await.unwrap(),
        hello()
    );
}

/// One frame: 2-byte big-endian length, then the body.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// A whole request to `"@name"` (type 0x80), as a stock skynet node sends it.
fn name_request(name: &str, session: u32, msg: &[u8]) -> Vec<u8> {
    let mut body = vec![0x80, name.len() as u8];
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(&session.to_le_bytes());
    body.extend_from_slice(msg);
    frame(&body)
}

/// Connect from `from` (a loopback address) to `to`.
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    sock.bind(&local.into()).expect("bind the client address");
    sock.connect_timeout(&to.into(), Duration::from_secs(5))
        .expect("connect");
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Read one response frame: (session, ok, payload), or `None` at EOF.
fn read_response(s: &mut TcpStream) -> Option<(u32, u8, Vec<u8>)> {
    let mut len = [0u8; 2];
    if s.read_exact(&mut len).is_err() {
        return None;
    }
    let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    let session = u32::from_le_bytes(body[0..4].try_into().unwrap());
    Some((session, body[4], body[5..].to_vec()))
}

#[test]
fn ops_auth_allow_list_serves_a_raw_skynet_client_from_its_address_only() {
    let layout = Layout::new(&["guarded"]);
    write_secret(&layout);
    let node = layout.start_logged("guarded", &guarded_config());
    let addr: SocketAddr = format!("127.0.0.1:{}", layout.port("guarded"))
        .parse()
        .unwrap();

    // From 127.0.0.2 (allow-listed): served at once, no authentication.
    let mut s = connect_from("127.0.0.2", addr);
    for session in 1..=3u32 {
        s.write_all(&name_request("@echo", session, &hello()))
            .unwrap();
        let (got, ok, payload) = read_response(&mut s).expect("an answer");
        assert_eq!(
            (got, ok),
            (session, 1),
            "{:?}",
            String::from_utf8_lossy(&payload)
        );
        assert_eq!(payload, hello().to_vec());
    }

    // From 127.0.0.1 (not listed): an error answer, then the connection is closed.
    let mut s = connect_from("127.0.0.1", addr);
    s.write_all(&name_request("@echo", 9, &hello())).unwrap();
    let (got, ok, payload) = read_response(&mut s).expect("an error answer");
    assert_eq!((got, ok), (9, 0));
    let text = String::from_utf8_lossy(&payload).to_string();
    assert!(text.contains("authentication required"), "{text}");
    assert!(
        read_response(&mut s).is_none(),
        "the connection must be closed"
    );
    let local = s.local_addr().unwrap();
    wait_log(&node, "the refusal does not name the peer", |l| {
        l.contains("peer refused") && l.contains(&format!("peer={local}"))
    });
    // The allow-listed peer is still served.
    let mut s = connect_from("127.0.0.2", addr);
    s.write_all(&name_request("@echo", 4, &hello())).unwrap();
    assert_eq!(read_response(&mut s).map(|r| r.1), Some(1));
}

#[test]
fn ops_config_unknown_keys_in_the_new_tables_are_refused() {
    let layout = Layout::new(&["typo"]);
    for (body, needle) in [
        (
            "[limits]\ninbound_byte = 10\n",
            "unknown field `inbound_byte`",
        ),
        ("[liveness]\nheartbeat = 10\n", "unknown field `heartbeat`"),
        (
            "[auth]\nsecret = \"x\"\nallowlist = []\n",
            "unknown field `allowlist`",
        ),
        (
            "[auth]\nsecret = \"x\"\nallow = [\"nohost\"]\n",
            "invalid IP",
        ),
        ("metrics = \"127.0.0.1:1\"\n", "unknown key \"metrics\""),
    ] {
        let path = layout.dir.path().join("typo.toml");
        std::fs::write(
            &path,
            format!("name = \"typo\"\ncluster = \"cluster.lua\"\n{body}"),
        )
        .unwrap();
        let out = Command::new(bee_bin())
            .arg("run")
            .arg(&path)
            .output()
            .expect("run bee");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{body}: started anyway");
        assert!(err.contains(needle), "{body}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_auth_plain_nodes_are_called_without_authenticating() {
    // "open" stands in for a stock skynet node: no secret, cannot authenticate.
    let layout = Layout::new(&["open"]);
    let _open = layout.start("open", "[[service]]\nkind = \"echo\"\nname = \"echo\"\n");
    let with = |plain: &[&str]| {
        let node = Node::new(
            format!("ops-plain-{}", bee_tests::free_port()),
            RuntimeConfig::default(),
        );
        let mut settings = ClusterSettings::default();
        settings.channel.call_timeout = Duration::from_secs(5);
        settings.wait_for_node = Some(Duration::ZERO);
        settings.channel.auth_secret = Some(AuthSecret::new(SECRET));
        settings.plain_nodes = plain.iter().map(|s| s.to_string()).collect();
        let cluster = Cluster::start(&node, Registry::new(layout.config()), settings);
        (node, cluster)
    };
    // With a secret, a channel insists on authentication: the open node cannot.
    let (_n, strict) = with(&[]);
    match strict.call("open", "echo", hello()).await {
        Err(ref e) if matches!(e.transport(), Some(TransportError::AuthFailed { .. })) => {}
        other => panic!("expected AuthFailed from a node without auth, got {other:?}"),
    }
    // Listed in plain_nodes: called without authenticating, served.
    let (_n, lenient) = with(&["open"]);
    assert_eq!(
        lenient.call("open", "echo", hello()).await.unwrap(),
        hello()
    );
}

/// `bee` with the cluster secret file in `BEE_AUTH_SECRET_FILE` (or none).
fn bee_with_secret(secret_file: Option<&Path>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(bee_bin());
    cmd.args(args).env("BEE_LOG", "warn");
    match secret_file {
        Some(f) => cmd.env("BEE_AUTH_SECRET_FILE", f),
        None => cmd.env_remove("BEE_AUTH_SECRET_FILE"),
    };
    let out = cmd.output().expect("run bee");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The auth rule of config pushes: on a node with `[auth]`, a push over a connection
/// served without authentication (an allow-listed address, meant for stock skynet nodes'
/// calls) is refused and the running config stays; `bee config push` and `bee status`
/// authenticate with `BEE_AUTH_SECRET_FILE` and are served; an authenticated push that
/// says it comes from a node outside the config is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_auth_config_push_needs_an_authenticated_connection() {
    let layout = Layout::new(&["guarded"]);
    let secret_file = write_secret(&layout);
    let _node = layout.start_logged("guarded", &guarded_config());
    let port = layout.port("guarded");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let text = |v: u64| format!("__version = {v}\nguarded = \"127.0.0.1:{port}\"\n");
    let cluster = layout.cluster_file();
    let cluster = cluster.to_str().unwrap();
    let status = || bee_with_secret(Some(&secret_file), &["status", "--cluster", cluster]);
    let (ok, before, err) = status();
    assert!(
        ok,
        "bee status authenticates with BEE_AUTH_SECRET_FILE: {before}{err}"
    );

    // From 127.0.0.2 (allow-listed, so not authenticated): an answer, but a refusal.
    let push = seri::pack(&[
        Value::from("lua"),
        Value::from("config_push"),
        Value::from(text(2).as_str()),
        Value::from(false),
        Value::from("skynet gate"),
    ])
    .unwrap();
    let mut s = connect_from("127.0.0.2", addr);
    s.write_all(&name_request("@bee_config", 1, &push)).unwrap();
    let (session, ok, payload) = read_response(&mut s).expect("an answer");
    assert_eq!((session, ok), (1, 1));
    let outcome =
        PushOutcome::from_values(&seri::unpack(&bytes::Bytes::from(payload)).unwrap()).unwrap();
    match &outcome {
        PushOutcome::Rejected { reason, .. } => assert!(
            reason.contains("this node requires authentication")
                && reason.contains("the connection from 127.0.0.2:")
                && reason.contains("BEE_AUTH_SECRET_FILE"),
            "{reason}"
        ),
        other => panic!("an unauthenticated push was applied: {other:?}"),
    }
    // Other calls from there are still served (the allow list is for those).
    s.write_all(&name_request("@echo", 2, &hello())).unwrap();
    assert_eq!(read_response(&mut s).map(|r| r.1), Some(1));
    let (_, after, _) = status();
    // VERSION and HASH of the node's row: unchanged.
    let version_hash = |out: &str| -> Vec<String> {
        let row = out.lines().nth(1).unwrap_or_default();
        row.split_whitespace()
            .skip(3)
            .take(2)
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        version_hash(&before),
        version_hash(&after),
        "{before}{after}"
    );
    assert_eq!(version_hash(&after)[0], "0");

    // bee config push without the secret is not served; with it, applied.
    let v2 = layout.dir.path().join("v2.lua");
    std::fs::write(&v2, text(2)).unwrap();
    let push_args = ["config", "push", "--cluster", cluster, v2.to_str().unwrap()];
    let (ok, out, _) = bee_with_secret(None, &push_args);
    assert!(!ok && !out.contains(" applied "), "{out}");
    let (ok, out, err) = bee_with_secret(Some(&secret_file), &push_args);
    assert!(ok, "{out}{err}");
    assert!(out.contains(" applied  version 2 "), "{out}");

    // Authenticated, but it says it is a node outside the config: refused, naming it.
    let (_n, authed) = client(&layout, Some(SECRET));
    let outcome = authed
        .push_config_to("guarded", &text(3), false)
        .await
        .unwrap();
    match &outcome {
        PushOutcome::Rejected {
            reason, version, ..
        } => {
            assert!(
                reason.contains(&format!("comes from node {}", authed.node_name())),
                "{reason}"
            );
            assert_eq!(*version, 2);
        }
        other => panic!("{other:?}"),
    }
}
