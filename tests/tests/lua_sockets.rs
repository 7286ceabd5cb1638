//! skynet's socket layer in a `bee` process, driven by skynet v1.6.0's own Lua and C code
//! from the stock tree: the `debug_console` answering over TCP like `nc` would talk to
//! it, skynet's Lua `gate` (snax.gateserver + netpack) and C `gate.so` relaying framed
//! client messages to a watchdog that answers through `skynet.socket`, and skynet's
//! `skynet.db.redis` and `skynet.db.mysql` drivers (socketchannel) against the real Redis
//! and MariaDB. The test services are in `tests/lua/` (`sockmain` starts what the node's
//! env asks for).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bee_tests::{free_port, skynet_dir, BeeProcess, Layout};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn lua_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("lua")
}

/// A node hosting the stock tree's Lua layer with `sockmain` as its start service and
/// `env` (extra `key = value` lines) in its `[env]`; its skynet log path.
fn start_node(layout: &Layout, env: &str) -> (BeeProcess, PathBuf) {
    let skynet = skynet_dir();
    let s = skynet.display();
    let t = lua_dir().display().to_string();
    let log = layout.dir.path().join("skynet.log");
    let body = format!(
        "[env]\n\
         cpath = \"{s}/cservice/?.so\"\n\
         lua_path = \"{s}/lualib/?.lua;{s}/lualib/?/init.lua\"\n\
         lua_cpath = \"{s}/luaclib/?.so\"\n\
         luaservice = \"{s}/service/?.lua;{t}/?.lua\"\n\
         lualoader = \"{s}/lualib/loader.lua\"\n\
         start = \"sockmain\"\n\
         logger = \"{log}\"\n\
         {env}\n\n\
         [[service]]\nkind = \"snlua\"\nliblua = \"{s}/liblua.so\"\n",
        log = log.display()
    );
    let node = layout.start("sockets", &body);
    wait_for_log(&log, "sockmain ready");
    (node, log)
}

/// Wait (at most 20 s) until the skynet log at `path` holds a line containing `what`.
fn wait_for_log(path: &Path, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().any(|l| l.contains(what)) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {what:?} within 20 s; the log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => {
                s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
                s.set_write_timeout(Some(IO_TIMEOUT))
                    .expect("write timeout");
                return s;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot connect to {port}: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Send one console command and read its answer up to `<CMD OK>` (or `<CMD Error>`).
fn console(r: &mut BufReader<TcpStream>, cmd: &str) -> String {
    r.get_mut()
        .write_all(format!("{cmd}\n").as_bytes())
        .expect("send a console command");
    let mut out = String::new();
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).expect("read the console's answer");
        assert!(n > 0, "the console closed the connection; so far:\n{out}");
        out.push_str(&line);
        if line.starts_with("<CMD OK>") || line.starts_with("<CMD Error>") {
            return out;
        }
    }
}

#[test]
fn debug_console_answers_list_stat_mem_and_netstat_over_tcp() {
    let layout = Layout::new(&["sockets"]);
    let port = free_port();
    let (_node, log) = start_node(&layout, &format!("debug_port = \"{port}\""));
    wait_for_log(&log, "Start debug console at 127.0.0.1:");
    let mut r = BufReader::new(connect(port));
    let mut welcome = String::new();
    r.read_line(&mut welcome).expect("welcome line");
    assert!(welcome.contains("Welcome to skynet console"), "{welcome}");

    let list = console(&mut r, "list");
    assert!(list.ends_with("<CMD OK>\n"), "{list}");
    for service in ["snlua cdummy", "snlua sockmain", "snlua debug_console"] {
        assert!(list.contains(service), "list lacks {service}:\n{list}");
    }
    let stat = console(&mut r, "stat");
    assert!(
        stat.contains("mqlen") && stat.ends_with("<CMD OK>\n"),
        "{stat}"
    );
    let mem = console(&mut r, "mem");
    assert!(mem.contains("Kb") && mem.ends_with("<CMD OK>\n"), "{mem}");
    // netstat lists the console's listener and this very connection.
    let netstat = console(&mut r, "netstat");
    assert!(netstat.contains("LISTEN"), "{netstat}");
    assert!(
        netstat.contains("TCP") && netstat.contains("127.0.0.1"),
        "{netstat}"
    );
    let bad = console(&mut r, "nosuchcommand");
    assert!(bad.contains("Invalid command"), "{bad}");
}

/// Send `frames` (2-byte big-endian length each) in one write and read as many framed
/// answers.
fn framed_round_trip(s: &mut TcpStream, frames: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for f in frames {
        out.extend_from_slice(&u16::try_from(f.len()).expect("small frame").to_be_bytes());
        out.extend_from_slice(f);
    }
    s.write_all(&out).expect("send frames");
    let mut answers = Vec::new();
    for _ in frames {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).expect("answer length");
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut body).expect("answer body");
        answers.push(body);
    }
    answers
}

#[test]
fn skynets_lua_gate_relays_frames_to_a_watchdog_that_answers() {
    let layout = Layout::new(&["sockets"]);
    let port = free_port();
    let (_node, log) = start_node(&layout, &format!("gate_port = \"{port}\""));
    wait_for_log(&log, "lua gate listening");
    let mut a = connect(port);
    let mut b = connect(port);
    // A frame split across writes, then several frames in one write.
    a.write_all(&[0]).expect("half a header");
    std::thread::sleep(Duration::from_millis(100));
    a.write_all(&[3, b'o', b'n'])
        .expect("the rest but one byte");
    std::thread::sleep(Duration::from_millis(100));
    a.write_all(b"e").expect("the last byte");
    let mut len = [0u8; 2];
    a.read_exact(&mut len).expect("answer length");
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    a.read_exact(&mut body).expect("answer body");
    assert_eq!(body, b"echo:one");
    let big = vec![b'x'; 60_000];
    let answers = framed_round_trip(&mut b, &[b"hello", &big, b"world"]);
    assert_eq!(answers[0], b"echo:hello");
    assert_eq!(answers[1].len(), 5 + big.len());
    assert_eq!(answers[2], b"echo:world");
    drop(a);
    drop(b);
    let text = wait_for_log(&log, "gate close");
    assert_eq!(text.matches("gate open").count(), 2, "{text}");
}

#[test]
fn skynets_c_gate_relays_frames_to_a_watchdog_that_answers() {
    let layout = Layout::new(&["sockets"]);
    let port = free_port();
    let (_node, log) = start_node(&layout, &format!("cgate_port = \"{port}\""));
    wait_for_log(&log, "c gate listening");
    let mut s = connect(port);
    let answers = framed_round_trip(&mut s, &[b"ping", b"pong"]);
    assert_eq!(answers, [b"cecho:ping".to_vec(), b"cecho:pong".to_vec()]);
    drop(s);
    wait_for_log(&log, "cgate close");
}

#[test]
fn skynets_redis_driver_talks_to_redis() {
    let layout = Layout::new(&["sockets"]);
    let key = format!("bee-test-lua-sockets-{}", std::process::id());
    let (_node, log) = start_node(&layout, &format!("redis_key = \"{key}\""));
    wait_for_log(&log, "redis result hello one 2");
}

#[test]
fn skynets_mysql_driver_talks_to_mariadb() {
    let layout = Layout::new(&["sockets"]);
    let db = format!("bee_test_lua_sockets_{}", std::process::id());
    let (_node, log) = start_node(&layout, &format!("mysql_db = \"{db}\""));
    wait_for_log(&log, "mysql result skynet");
}

/// One framed echo through the Lua gate on a fresh connection.
fn gate_echo_works(port: u16) {
    let mut s = connect(port);
    assert_eq!(
        framed_round_trip(&mut s, &[b"alive"]),
        [b"echo:alive".to_vec()]
    );
}

#[test]
fn a_client_that_never_reads_is_closed_at_the_send_limit_and_the_node_keeps_serving() {
    let layout = Layout::new(&["sockets"]);
    let port = free_port();
    let env = format!("gate_port = \"{port}\"\nsocket_send_limit = \"1048576\"");
    let (_node, log) = start_node(&layout, &env);
    wait_for_log(&log, "lua gate listening");
    // 400 frames of 60 000 bytes, each echoed back, and nothing is ever read: far more
    // than the 1 MiB send limit plus what the kernel's socket buffers hold.
    let mut s = connect(port);
    let frame = vec![b'z'; 60_000];
    let mut batch = Vec::new();
    batch.extend_from_slice(&u16::try_from(frame.len()).unwrap().to_be_bytes());
    batch.extend_from_slice(&frame);
    for _ in 0..400 {
        if s.write_all(&batch).is_err() {
            break; // the node closed the connection
        }
    }
    wait_for_log(&log, "gate close");
    gate_echo_works(port);
}

#[test]
fn a_flood_of_connections_beyond_the_socket_limit_is_refused_and_the_node_keeps_serving() {
    let layout = Layout::new(&["sockets"]);
    let port = free_port();
    let env = format!("gate_port = \"{port}\"\nsocket_max = \"32\"");
    let (_node, log) = start_node(&layout, &env);
    wait_for_log(&log, "lua gate listening");
    let clients: Vec<TcpStream> = (0..100).map(|_| connect(port)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let (mut refused, mut held) = (0, 0);
    for c in &clients {
        c.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut b = [0u8; 1];
        match (&*c).read(&mut b) {
            Ok(0) => refused += 1,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                held += 1
            }
            Ok(_) => panic!("the gate sent unasked data"),
            Err(_) => refused += 1, // reset
        }
    }
    assert!(held > 0 && held < 32, "held {held}, refused {refused}");
    assert_eq!(held + refused, 100);
    drop(clients);
    // Once they are gone the slots are free again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.matches("gate close").count() >= held {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the held connections did not close:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    gate_echo_works(port);
}
