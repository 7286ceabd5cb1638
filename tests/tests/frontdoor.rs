//! The demo game's front door (`crates/bee-demo/lua/frontdoor.lua`: skynet's unchanged
//! `snax.gateserver` in a bee node hosting skynet's Lua, forwarding each player's game
//! frame with `cluster.call "text"` to the Rust `lpersistence` of another node) under
//! players that behave and players that do not: a packet over the front door's limit,
//! frames that break its rules, idle players, a player whose machine vanishes without a
//! FIN (a network namespace deleted under it), a player killed mid-packet, a flood of
//! connects past the socket limit, a player that never reads its replies. Each is
//! bounded, logged once, and the node keeps serving other players.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bee_codec::seri::{self, Value};
use bee_demo::players::{self, Expect};
use bee_tests::{bee_bin, demo_bin, free_port, skynet_dir, wait_until, BeeProcess, Layout};
use bytes::Bytes;

const IO_TIMEOUT: Duration = Duration::from_secs(10);
const SERVED_BY: &str = "lpersistence_3/lpersistence";

/// A front door node (`frontdoor`) and its backend (`lpersistence_3`, the demo's Rust
/// `lpersistence`).
struct FrontDoor {
    layout: Layout,
    _backend: BeeProcess,
    node: BeeProcess,
    /// skynet's log (the front door's lines).
    log: PathBuf,
    port: u16,
}

/// Start both nodes; `env` adds `key = "value"` lines to the front door node's `[env]`.
fn start(env: &str) -> FrontDoor {
    let layout = Layout::new(&["lpersistence_3", "frontdoor"]);
    let backend = layout.start_with(
        &demo_bin(),
        "lpersistence_3",
        "[[service]]\nkind = \"lpersistence\"\nname = \"lpersistence\"\n",
    );
    let sky = skynet_dir();
    let s = sky.display();
    let lua = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crates/bee-demo/lua");
    let l = lua.display();
    let dir = layout.dir.path();
    let pb = dir.join("game.pb");
    std::fs::write(&pb, bee_proto::DESCRIPTOR_SET).expect("write game.pb");
    let log = dir.join("frontdoor.skynet.log");
    let port = free_port();
    let config = dir.join("frontdoor.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"frontdoor\"\ncluster = \"cluster.lua\"\ncall_timeout_ms = 5000\n\n\
             [env]\n\
             cpath = \"{s}/cservice/?.so\"\n\
             lua_path = \"{s}/lualib/?.lua;{s}/lualib/?/init.lua;{l}/?.lua\"\n\
             lua_cpath = \"{s}/luaclib/?.so\"\n\
             luaservice = \"{s}/service/?.lua;{l}/?.lua\"\n\
             lualoader = \"{s}/lualib/loader.lua\"\n\
             cluster = \"{cluster}\"\n\
             pb_file = \"{pb}\"\n\
             logger = \"{log}\"\n\
             frontdoor_port = \"{port}\"\n\
             frontdoor_backend = \"lpersistence_3\"\n\
             {env}\n\n\
             [[service]]\nkind = \"snlua\"\nliblua = \"{s}/liblua.so\"\n\n\
             [[service]]\nkind = \"snlua\"\nliblua = \"{s}/liblua.so\"\nargs = \"frontdoor\"\nname = \"frontdoor\"\n",
            cluster = layout.cluster_file().display(),
            pb = pb.display(),
            log = log.display(),
        ),
    )
    .expect("write the front door's config");
    let node = BeeProcess::start_logged_bin(&bee_bin(), "frontdoor", &config, &layout);
    wait_for_log(&log, "frontdoor listening");
    FrontDoor {
        layout,
        _backend: backend,
        node,
        log,
        port,
    }
}

impl FrontDoor {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many lines of the front door's log contain `what`.
    fn lines_with(&self, what: &str) -> usize {
        self.log().lines().filter(|l| l.contains(what)).count()
    }

    /// Wait (at most 20 s) until `n` lines contain `what`.
    fn wait_lines(&self, what: &str, n: usize) {
        wait_until(
            &format!("{n} log lines with {what:?}"),
            Duration::from_secs(20),
            || self.lines_with(what) >= n,
        );
    }

    /// The front door's counters (its "stats" command, over the cluster).
    fn stats(&self) -> seri::Table {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let (_node, c) = self.layout.client(Duration::from_secs(5));
            let reply = c
                .call(
                    "frontdoor",
                    "frontdoor",
                    seri::pack(&[Value::from("lua"), Value::from("stats")]).unwrap(),
                )
                .await
                .expect("the front door's stats");
            match seri::unpack(&reply).unwrap().into_iter().next() {
                Some(Value::Table(t)) => t,
                other => panic!("stats answered {other:?}"),
            }
        })
    }

    fn stat(&self, key: &str) -> i64 {
        self.stats()
            .get_str(key)
            .and_then(Value::as_int)
            .unwrap_or_else(|| panic!("no counter {key}"))
    }

    /// Wait (at most 20 s) until the front door serves `n` connections.
    fn wait_open(&self, n: i64) {
        wait_until(
            &format!("{n} open connections at the front door"),
            Duration::from_secs(20),
            || self.stat("open") == n,
        );
    }

    /// A fresh player logs in, asks for its profile and pings: every reply checked.
    fn serves(&self, uid: u64) {
        let mut p = Player::login(self.port, uid);
        p.request(&Expect::UserInfo);
        p.request(&Expect::Pong {
            seq: 7,
            served_by: SERVED_BY.into(),
        });
    }
}

/// Wait (at most 20 s) until the file at `path` holds a line containing `what`.
fn wait_for_log(path: &std::path::Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().any(|l| l.contains(what)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {what:?} within 20 s; the log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to the front door at {port}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// A player over a blocking socket.
struct Player {
    s: TcpStream,
    uid: u64,
    session: u64,
}

impl Player {
    fn login(port: u16, uid: u64) -> Player {
        let mut p = Player {
            s: connect(port),
            uid,
            session: 0,
        };
        p.request(&Expect::Login);
        p
    }

    /// Send the request for `expect`, read one reply and check it.
    fn request(&mut self, expect: &Expect) {
        self.session += 1;
        let packet = players::packet(self.uid, self.session, expect).unwrap();
        self.s.write_all(&packet).expect("send a request");
        let reply = read_packet(&mut self.s).expect("a reply");
        expect
            .check(self.uid, self.session, &reply)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

fn read_packet(s: &mut TcpStream) -> std::io::Result<Bytes> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut body)?;
    Ok(body.into())
}

/// The node closed `s`: a read gives EOF or a reset within 10 s (no data first).
fn assert_closed(s: &mut TcpStream) {
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => {}
        Ok(n) => panic!("the front door sent {n} bytes instead of closing"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the front door did not close the connection: {e}"),
    }
}

#[test]
fn players_are_served_and_each_rule_breaker_is_closed_with_one_line() {
    let fd = start("frontdoor_max_queued = \"16\"");
    let cfg = players::Config {
        addr: ([127, 0, 0, 1], fd.port).into(),
        players: 30,
        messages: 10,
        first_uid: 1_000,
        served_by: SERVED_BY.into(),
        timeout: IO_TIMEOUT,
    };
    let report = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(players::run(&cfg));
    assert!(report.all_ok(&cfg), "{:#?}", report.lines(&cfg));
    assert_eq!(report.ok, 30 * 11);

    // A request before the login.
    let mut s = connect(fd.port);
    s.write_all(&players::packet(5, 1, &Expect::UserInfo).unwrap())
        .unwrap();
    assert_closed(&mut s);
    // Another player's uid after logging in, then more packets behind it in one write.
    let mut p = Player::login(fd.port, 6);
    let mut batch = players::packet(66, 2, &Expect::UserInfo).unwrap().to_vec();
    for i in 3..50 {
        batch.extend_from_slice(&players::packet(6, i, &Expect::UserInfo).unwrap());
    }
    p.s.write_all(&batch).unwrap();
    assert_closed(&mut p.s);
    // Bytes that are not a game frame.
    let mut s = connect(fd.port);
    s.write_all(&players::framed(b"GET / HTTP/1.0").unwrap())
        .unwrap();
    assert_closed(&mut s);

    // 200 requests in one write: more than 16 waiting for their turn.
    let mut p = Player::login(fd.port, 8);
    let mut batch = Vec::new();
    for i in 2..202 {
        batch.extend_from_slice(&players::packet(8, i, &Expect::UserInfo).unwrap());
    }
    p.s.write_all(&batch).unwrap();
    let mut answered = 0;
    while read_packet(&mut p.s).is_ok() {
        answered += 1;
    }
    assert!(answered < 200, "all {answered} answered");

    fd.wait_lines("game.GetUserInfo before game.LoginReq", 1);
    fd.wait_lines("a frame of uid 66 on uid 6's connection", 1);
    fd.wait_lines("not a game frame", 1);
    fd.wait_lines("more than 16 packets waiting for their answers", 1);
    fd.serves(7);
    fd.wait_open(0);
    // One line each, whatever followed them.
    assert_eq!(fd.lines_with("frontdoor: closed fd"), 4, "{}", fd.log());
    assert_eq!(fd.stat("closed_bad"), 4);
    assert_eq!(fd.stat("logins"), 30 + 3);
    assert!(!fd.log().contains("Drop message"), "{}", fd.log());
}

#[test]
fn an_oversized_packet_closes_only_its_connection_with_one_line() {
    let fd = start("frontdoor_max_packet = \"1024\"");
    let mut p = Player::login(fd.port, 11);
    let other = Player::login(fd.port, 12);
    // 5000 bytes announced and sent, then small packets behind it.
    let mut batch = players::framed(&vec![0xab; 5000]).unwrap().to_vec();
    for i in 2..200 {
        batch.extend_from_slice(&players::packet(11, i, &Expect::UserInfo).unwrap());
    }
    p.s.write_all(&batch).unwrap();
    assert_closed(&mut p.s);
    fd.wait_lines("a packet of 5000 bytes (at most 1024)", 1);
    // The other player, logged in before, goes on; new ones log in.
    let mut other = other;
    other.request(&Expect::UserInfo);
    fd.serves(13);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fd.lines_with("frontdoor: closed fd"), 1, "{}", fd.log());
    assert!(!fd.log().contains("Drop message"), "{}", fd.log());
}

#[test]
fn idle_players_and_a_player_killed_mid_packet_are_closed_and_freed() {
    let fd = start("frontdoor_idle_ms = \"1500\"");
    // Ten connect and say nothing; five log in and then say nothing.
    let silent: Vec<TcpStream> = (0..10).map(|_| connect(fd.port)).collect();
    let mut idle: Vec<Player> = (0..5).map(|i| Player::login(fd.port, 100 + i)).collect();
    // A player process killed by SIGKILL halfway through a packet (its kernel sends the
    // FIN): the front door frees the connection without a line.
    let mut child = half_packet_then_wait("127.0.0.1", fd.port);
    fd.wait_open(16);
    child.kill().unwrap();
    child.wait().unwrap();
    fd.wait_open(15);
    // Then the sweep: every silent and idle connection closed, in bounded time, with one
    // line per sweep — and a player that keeps talking is not touched.
    let mut busy = Player::login(fd.port, 200);
    let started = Instant::now();
    while fd.stat("closed_idle") < 15 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "idle connections not closed: {:?}",
            fd.stats()
        );
        busy.request(&Expect::UserInfo);
        std::thread::sleep(Duration::from_millis(200));
    }
    for p in &mut idle {
        assert_closed(&mut p.s);
    }
    for mut s in silent {
        assert_closed(&mut s);
    }
    busy.request(&Expect::UserInfo);
    // One line per sweep, saying how many it closed: 15 in all, in fewer lines.
    let log = fd.log();
    let counts: Vec<usize> = log
        .lines()
        .filter_map(|l| {
            l.split("frontdoor: closed ")
                .nth(1)?
                .strip_suffix(" idle connection(s) (nothing received for 1500 ms)")
        })
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(counts.iter().sum::<usize>(), 15, "{log}");
    assert!(counts.len() < 15, "{log}");
    assert_eq!(fd.lines_with("frontdoor: closed fd"), 0, "{}", fd.log());
    fd.wait_open(1);
    fd.serves(201);
}

/// A `bash` player that connects to `host:port`, sends 3 bytes of a packet announcing
/// 80, and sleeps.
fn half_packet_then_wait(host: &str, port: u16) -> Child {
    Command::new("bash")
        .arg("-c")
        .arg(format!(
            "exec 3<>/dev/tcp/{host}/{port} && printf '\\x00\\x50abc' >&3 && exec sleep 60"
        ))
        .stdin(Stdio::null())
        .spawn()
        .expect("start bash")
}

/// `ip ARGS`, which must succeed.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace joined to this one by a veth pair, removed on drop.
struct Netns {
    name: String,
    link: String,
    host_addr: String,
}

impl Netns {
    fn new() -> Netns {
        let id = std::process::id() % 100_000;
        let (name, link, peer) = (
            format!("beefd{id}"),
            format!("bfd{id}a"),
            format!("bfd{id}b"),
        );
        let net = format!("10.213.{}", id % 250);
        let ns = Netns {
            name: name.clone(),
            link: link.clone(),
            host_addr: format!("{net}.1"),
        };
        ip(&["netns", "add", &name]);
        ip(&["link", "add", &link, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &name]);
        ip(&["addr", "add", &format!("{net}.1/30"), "dev", &link]);
        ip(&["link", "set", &link, "up"]);
        ip(&[
            "netns",
            "exec",
            &name,
            "ip",
            "addr",
            "add",
            &format!("{net}.2/30"),
            "dev",
            &peer,
        ]);
        ip(&["netns", "exec", &name, "ip", "link", "set", &peer, "up"]);
        ns
    }

    /// Cut the wire: whatever the namespace's processes send from now on goes nowhere.
    fn cut(&self) {
        ip(&["link", "del", &self.link]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.link])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

#[test]
fn a_player_that_vanishes_without_a_fin_is_closed_by_the_idle_sweep() {
    let fd = start("frontdoor_address = \"0.0.0.0\"\nfrontdoor_idle_ms = \"2000\"");
    let ns = Netns::new();
    // A player in the namespace connects across the veth pair and sends half a packet.
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "bash", "-c"])
        .arg(format!(
            "exec 3<>/dev/tcp/{}/{} && printf '\\x00\\x50abc' >&3 && exec sleep 60",
            ns.host_addr, fd.port
        ))
        .stdin(Stdio::null())
        .spawn()
        .expect("start a player in the namespace");
    fd.wait_open(1);
    // The wire is cut before the player dies: its FIN never arrives.
    ns.cut();
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        fd.stat("open"),
        1,
        "the node saw a FIN; the test is not half-open"
    );
    fd.wait_lines("closed 1 idle connection(s)", 1);
    fd.wait_open(0);
    fd.serves(300);
    assert_eq!(fd.lines_with("idle connection(s)"), 1, "{}", fd.log());
}

#[test]
fn a_flood_of_connects_past_the_socket_limit_is_refused_and_players_keep_playing() {
    // 40 sockets in all (the listener, the cluster's own among them); the front door
    // itself admits 1024.
    let fd = start("socket_max = \"40\"");
    let mut player = Player::login(fd.port, 400);
    let flood: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", fd.port)).ok())
        .collect();
    // The refused ones are closed at once; the held ones stay open.
    let mut refused = 0;
    for c in &flood {
        c.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut b = [0u8; 1];
        match (&*c).read(&mut b) {
            Ok(0) => refused += 1,
            Ok(_) => panic!("the front door sent unasked data"),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => refused += 1,
        }
    }
    assert!(refused >= 250, "only {refused} of 300 refused");
    // The logged-in player is still served during the flood, and the node says so once.
    player.request(&Expect::UserInfo);
    let node_log = fd.node.log();
    assert_eq!(
        node_log.matches("socket limit reached").count(),
        1,
        "{node_log}"
    );
    drop(flood);
    fd.wait_open(1);
    fd.serves(401);
}

#[test]
fn a_player_that_never_reads_is_closed_at_the_send_limit_with_one_line() {
    let fd = start("socket_send_limit = \"65536\"");
    // A small receive buffer, so that the replies pile up at the node, not in this
    // process's kernel.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], fd.port)).into(),
        IO_TIMEOUT,
    )
    .unwrap();
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut p = Player {
        s,
        uid: 500,
        session: 1,
    };
    p.request(&Expect::Login);
    // Requests, never reading a reply, kept at most 128 ahead of what the front door
    // has answered (it queues at most 256 of a player's), until the node closes the
    // connection.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_client, cluster) = rt.block_on(async { fd.layout.client(Duration::from_secs(5)) });
    let forwarded = || -> i64 {
        rt.block_on(async {
            let reply = cluster
                .call(
                    "frontdoor",
                    "frontdoor",
                    seri::pack(&[Value::from("lua"), Value::from("stats")]).unwrap(),
                )
                .await
                .expect("the front door's stats");
            match seri::unpack(&reply).unwrap().first() {
                Some(Value::Table(t)) => t.get_str("forwarded").and_then(Value::as_int).unwrap(),
                other => panic!("stats answered {other:?}"),
            }
        })
    };
    let started = Instant::now();
    let mut sent: i64 = 0;
    while fd.lines_with("socket error") == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not closed within 60 s ({sent} requests sent): {:?}\n{}\n{}",
            fd.stats(),
            fd.log(),
            fd.node.log()
        );
        if sent - forwarded() < 128 {
            let mut batch = Vec::new();
            for _ in 0..64 {
                p.session += 1;
                batch.extend_from_slice(
                    &players::packet(500, p.session, &Expect::UserInfo).unwrap(),
                );
            }
            if p.s.write_all(&batch).is_err() {
                continue; // closed, or the node stopped reading: the log will say
            }
            sent += 64;
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    eprintln!("closed after {:?}, {sent} requests sent", started.elapsed());
    // Others are served; the front door and the node each said it once.
    fd.serves(501);
    assert_eq!(fd.lines_with("frontdoor: closed fd"), 1, "{}", fd.log());
    let node_log = fd.node.log();
    assert_eq!(
        node_log.matches("the peer does not read").count(),
        1,
        "{node_log}"
    );
    fd.wait_open(0);
}
