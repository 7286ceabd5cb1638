//! Differential tests of skynet's Lua layer: scripts of stock skynet v1.6.0's own
//! `test/` directory run as the `start` service on stock skynet (its executable and a
//! config written here) and on `bee run` of the same config file (the same tree's Lua
//! layer on bee), side by side for the same time; their stdout must agree once
//! normalised. (`tests/tests/lua_services.rs` runs the same layer from a bee node config.)
//!
//! Normalised: bee's own stdout line (`bee node … ready: skynet config …`) is dropped; skynet
//! log lines (`[:0000000a] text`) are compared per service that wrote them, each
//! service's lines in order, and `print` lines as one sequence (skynet's logger writes
//! asynchronously and services run at once, so how services' lines interleave is not
//! fixed even on stock skynet); service addresses, pointers and every number (times
//! in ticks, handles printed in decimal, rates) are replaced by placeholders.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bee_tests::{bee_bin, skynet_dir, BeeProcess, TempDir};

/// The keys both configs share: the stock tree's services, Lua libraries and tests, then
/// this project's test services (`tests/lua/`).
fn shared_keys(skynet: &Path, script: &str) -> String {
    let s = skynet.display();
    let t = Path::new(env!("CARGO_MANIFEST_DIR")).join("lua");
    let t = t.display();
    format!(
        "cpath = \"{s}/cservice/?.so\"\n\
         lua_path = \"{s}/lualib/?.lua;{s}/lualib/?/init.lua\"\n\
         lua_cpath = \"{s}/luaclib/?.so\"\n\
         luaservice = \"{s}/service/?.lua;{s}/test/?.lua;{t}/?.lua\"\n\
         lualoader = \"{s}/lualib/loader.lua\"\n\
         snax = \"{s}/test/?.lua\"\n\
         start = \"{script}\"\n"
    )
}

/// The skynet config both run: stock skynet (`skynet skynet.config`) and bee (`bee run
/// skynet.config`, the same file).
fn skynet_config(skynet: &Path, dir: &Path, script: &str) -> std::path::PathBuf {
    let config = dir.join("skynet.config");
    std::fs::write(
        &config,
        format!(
            "thread = 2\nharbor = 0\nbootstrap = \"snlua bootstrap\"\n{}",
            shared_keys(skynet, script)
        ),
    )
    .expect("write the skynet config");
    config
}

/// Stock skynet running `script` for `run`; its stdout.
fn run_stock(skynet: &Path, dir: &Path, script: &str, run: Duration) -> String {
    let config = skynet_config(skynet, dir, script);
    let out = dir.join("skynet.out");
    let mut child = Command::new(skynet.join("skynet"))
        .arg(&config)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            std::fs::File::create(&out).expect("create skynet.out"),
        ))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start stock skynet");
    std::thread::sleep(run);
    let _ = child.kill();
    let _ = child.wait();
    std::fs::read_to_string(&out).unwrap_or_default()
}

/// bee running the same skynet config (`bee run skynet.config`: the tree's Lua layer on
/// bee, single node) for `run`; its stdout.
fn run_bee(skynet: &Path, dir: &Path, script: &str, run: Duration) -> String {
    let config = skynet_config(skynet, dir, script);
    let out = dir.join("bee.out");
    let started = Instant::now();
    let node = BeeProcess::start_capturing(&bee_bin(), &format!("diff_{script}"), &config, &out);
    std::thread::sleep(run.saturating_sub(started.elapsed()));
    drop(node);
    std::fs::read_to_string(&out).unwrap_or_default()
}

/// Replace service addresses (`:` + up to 8 hex digits, and the bare hex source of the
/// kernel's `lua call [<source> to …` error line), pointers (`0x…`) and numbers.
fn normalise_line(line: &str) -> String {
    let line = match line.find("lua call [") {
        Some(at) => {
            let rest = &line[at + 10..];
            match rest.find(" to ") {
                Some(end) if rest[..end].bytes().all(|c| c.is_ascii_hexdigit()) => {
                    format!("{}lua call [ADDR{}", &line[..at], &rest[end..])
                }
                _ => line.to_string(),
            }
        }
        None => line.to_string(),
    };
    let line = line.as_str();
    let b = line.as_bytes();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let hex = b[i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_hexdigit())
            .count();
        if c == b':' && (1..=8).contains(&hex) {
            out.push_str(":ADDR");
            i += 1 + hex;
        } else if c == b'0' && b.get(i + 1) == Some(&b'x') {
            out.push_str("PTR");
            i += 2;
            while i < b.len() && b[i].is_ascii_hexdigit() {
                i += 1;
            }
        } else if c.is_ascii_digit() {
            out.push('N');
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        } else {
            let ch = line[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// (skynet log lines grouped by the service that wrote them, print lines), normalised.
/// The groups are sorted: which service logged first varies on stock skynet too, the
/// order of one service's lines does not.
fn normalise(stdout: &str) -> (Vec<Vec<String>>, Vec<String>) {
    let mut sources: Vec<&str> = Vec::new();
    let mut log: Vec<Vec<String>> = Vec::new();
    let mut print = Vec::new();
    for line in stdout.lines() {
        if line.starts_with("bee node ") && line.contains(" ready: skynet config ") {
            continue;
        }
        match line.strip_prefix("[:").and_then(|r| r.split_once("] ")) {
            Some((source, text)) => {
                let at = match sources.iter().position(|s| *s == source) {
                    Some(at) => at,
                    None => {
                        sources.push(source);
                        log.push(Vec::new());
                        sources.len() - 1
                    }
                };
                log[at].push(normalise_line(text));
            }
            None => print.push(normalise_line(line)),
        }
    }
    log.sort();
    (log, print)
}

/// Keep one line of each run of consecutive equal lines that are in `repeats`.
fn collapse_repeats(lines: &mut Vec<String>, repeats: &[&str]) {
    lines.dedup_by(|next, prev| next == prev && repeats.contains(&next.as_str()));
}

/// How a sequence of lines (one service's log lines, printed lines) is compared.
#[derive(Clone, Copy, PartialEq)]
enum Order {
    /// Same lines in the same order.
    Same,
    /// Same lines, in any order: for scripts whose lines come from services running at
    /// once, or from timers expiring in the same tick, or from iterating a Lua hash
    /// table (string hashes are seeded per state): orders that vary on stock skynet too.
    Any,
}

/// Run `script` on both for `secs` seconds and compare log lines and printed lines.
fn differential(script: &str, secs: u64, logs: Order, prints: Order) {
    differential_outputs(script, secs, logs, prints, &[]);
}

/// [`differential`], where a run of one service's consecutive log lines equal (once
/// normalised) to one of `repeats` counts as one line: for lines whose count depends
/// on timing on stock skynet too. Returns both raw outputs (stock, bee) for checks of
/// their own.
fn differential_outputs(
    script: &str,
    secs: u64,
    logs: Order,
    prints: Order,
    repeats: &[&str],
) -> (String, String) {
    let skynet = skynet_dir();
    let _ = bee_bin(); // built before the clock starts
    let run = Duration::from_secs(secs);
    let stock_dir = TempDir::new(&format!("stock-{script}"));
    let bee_dir = TempDir::new(&format!("bee-{script}"));
    let (stock, bee) = std::thread::scope(|s| {
        let stock = s.spawn(|| run_stock(&skynet, stock_dir.path(), script, run));
        let bee = s.spawn(|| run_bee(&skynet, bee_dir.path(), script, run));
        (
            stock.join().expect("stock run"),
            bee.join().expect("bee run"),
        )
    });
    compare(script, &stock, &bee, logs, prints, repeats);
    (stock, bee)
}

/// [`differential`] for scripts that listen on fixed ports: stock skynet first, then
/// bee, each for `secs` seconds while `client` (if any) talks to it from another thread.
fn differential_in_turn(script: &str, secs: u64, logs: Order, prints: Order, client: Option<fn()>) {
    let skynet = skynet_dir();
    let _ = bee_bin();
    let run = Duration::from_secs(secs);
    let stock_dir = TempDir::new(&format!("stock-{script}"));
    let bee_dir = TempDir::new(&format!("bee-{script}"));
    let with_client = |f: &dyn Fn() -> String| {
        std::thread::scope(|s| {
            let c = client.map(|c| s.spawn(c));
            let out = f();
            if let Some(c) = c {
                c.join().expect("the client failed");
            }
            out
        })
    };
    let stock = with_client(&|| run_stock(&skynet, stock_dir.path(), script, run));
    let bee = with_client(&|| run_bee(&skynet, bee_dir.path(), script, run));
    compare(script, &stock, &bee, logs, prints, &[]);
}

/// Compare the two runs' normalised output (runs of `repeats` collapsed, see
/// [`differential_outputs`]).
fn compare(script: &str, stock: &str, bee: &str, logs: Order, prints: Order, repeats: &[&str]) {
    let (mut stock_log, mut stock_print) = normalise(stock);
    let (mut bee_log, mut bee_print) = normalise(bee);
    for group in stock_log.iter_mut().chain(bee_log.iter_mut()) {
        collapse_repeats(group, repeats);
    }
    assert!(
        stock_log
            .iter()
            .flatten()
            .any(|l| l == &format!("LAUNCH snlua {script}")),
        "stock skynet did not start {script}:\n{stock}"
    );
    if logs == Order::Any {
        for group in stock_log.iter_mut().chain(bee_log.iter_mut()) {
            group.sort();
        }
        stock_log.sort();
        bee_log.sort();
    }
    if prints == Order::Any {
        stock_print.sort();
        bee_print.sort();
    }
    assert_eq!(
        stock_log, bee_log,
        "{script}: log lines differ\n--- stock skynet:\n{stock}\n--- bee:\n{bee}"
    );
    assert_eq!(
        stock_print, bee_print,
        "{script}: printed lines differ\n--- stock skynet:\n{stock}\n--- bee:\n{bee}"
    );
}

#[test]
fn normalising_strips_addresses_pointers_and_numbers() {
    let (log, print) = normalise(
        "[:00000008] LAUNCH harbor 0 4\nbee node x ready: skynet config /tmp/skynet.config, single node, no cluster listener\n\
         begin\tthread: 0x55d0c2a8\tfalse\n[:0069654d] KILL :a1b2c3d4\n1\tcall\t28\n\
         [:00000009] lua call [8 to :9 : 2 msgsz = 0] error : x\n",
    );
    assert_eq!(
        log,
        [
            vec!["KILL :ADDR"],
            vec!["LAUNCH harbor N N"],
            vec!["lua call [ADDR to :ADDR : N msgsz = N] error : x"]
        ]
    );
    assert_eq!(print, ["begin\tthread: PTR\tfalse", "N\tcall\tN"]);
}

#[test]
fn testresponse() {
    differential("testresponse", 3, Order::Same, Order::Same);
}

#[test]
fn testtimeout() {
    differential("testtimeout", 7, Order::Same, Order::Same);
}

#[test]
fn testcoroutine() {
    differential("testcoroutine", 8, Order::Same, Order::Same);
}

/// `test timeout 10` lands between the ninth and tenth one-tick sleep or after it,
/// depending on the tick the script started in.
#[test]
fn testtimer() {
    differential("testtimer", 14, Order::Same, Order::Any);
}

/// snax's `pingserver` with `skynet.queue`.
#[test]
fn testqueue() {
    differential("testqueue", 12, Order::Same, Order::Same);
}

/// 100,000 calls in a row, then 100,000 from ten coroutines; the rates are numbers, so
/// only the lines are compared.
#[test]
fn testecho() {
    differential("testecho", 25, Order::Same, Order::Same);
}

#[test]
fn testsha() {
    differential("testsha", 6, Order::Same, Order::Same);
}

#[test]
fn testcrypt() {
    differential("testcrypt", 5, Order::Same, Order::Same);
}

#[test]
fn testbson() {
    differential("testbson", 5, Order::Same, Order::Any);
}

#[test]
fn time() {
    differential("time", 5, Order::Same, Order::Same);
}

#[test]
fn testterm() {
    differential("testterm", 6, Order::Same, Order::Same);
}

#[test]
fn testtobeclosed() {
    differential("testtobeclosed", 6, Order::Same, Order::Same);
}

#[test]
fn testselect() {
    differential("testselect", 6, Order::Same, Order::Same);
}

#[test]
fn testsm() {
    differential("testsm", 6, Order::Same, Order::Same);
}

#[test]
fn testdeadcall() {
    differential("testdeadcall", 6, Order::Same, Order::Same);
}

#[test]
fn testmemlimit() {
    differential("testmemlimit", 5, Order::Same, Order::Same);
}

/// `DATACENTER` is a global name: resolved by skynet's C harbor service, as in skynet.
#[test]
fn testdatacenter() {
    differential("testdatacenter", 5, Order::Same, Order::Same);
}

#[test]
fn testsharetable() {
    differential("testsharetable", 6, Order::Same, Order::Any);
}

#[test]
fn teststm() {
    differential("teststm", 8, Order::Same, Order::Any);
}

#[test]
fn testmulticast() {
    differential("testmulticast", 6, Order::Same, Order::Same);
}

/// snax's `pingserver`, with `skynet.trace`.
#[test]
fn testping() {
    differential("testping", 8, Order::Same, Order::Any);
}

#[test]
fn testdatasheet() {
    differential("testdatasheet", 6, Order::Same, Order::Any);
}

/// A coroutine that sleeps 0 ticks forever: not an endless loop (it yields every time).
#[test]
fn testdeadloop() {
    differential("testdeadloop", 5, Order::Same, Order::Same);
}

/// The normalised `May overload` warning.
const MAY_OVERLOAD: &str = "May overload, message queue length = N";
/// The normalised endless-loop report.
const ENDLESS_REPORT: &str =
    "A message from [ :ADDR ] to [ :ADDR ] maybe in an endless loop (version = N)";

/// The text of every skynet log line of `out` (after `[:xxxxxxxx] `) that starts with one
/// of `starts`, in order.
fn log_texts<'a>(out: &'a str, starts: &[&str]) -> Vec<&'a str> {
    out.lines()
        .filter_map(|l| l.strip_prefix("[:").and_then(|r| r.split_once("] ")))
        .map(|(_, text)| text)
        .filter(|text| starts.iter().any(|s| text.starts_with(s)))
        .collect()
}

/// Twenty bursts of 512 × step sends to one service, then a sum to 10^9 in it (about 10 s
/// of CPU). How many `May overload` warnings a burst gets, and at which lengths, depends
/// on how far the receiver falls behind while the sender runs and whether it caught up
/// between bursts (two runs of stock skynet here warned 17 and 18 times at other
/// lengths; bee's debug build, whose receiver never caught up, 5 times, at 1280 … 16996),
/// so a run of warnings counts as one line; `overload_warnings_at_skynets_queue_lengths`
/// checks the lengths. The sum is
/// reported as a possible endless loop once or twice, by where it falls between the
/// monitor's looks 5 s apart: a run of reports counts as one too.
#[test]
fn testoverload() {
    let (stock, bee) = differential_outputs(
        "testoverload",
        35,
        Order::Same,
        Order::Same,
        &[MAY_OVERLOAD, ENDLESS_REPORT],
    );
    for (who, out) in [("stock skynet", &stock), ("bee", &bee)] {
        assert!(
            out.contains("] for loop end"),
            "{who} did not finish the sum in the time given: the machine is too slow for this test\n{out}"
        );
        assert!(
            out.contains("] May overload, message queue length = "),
            "{who} did not warn:\n{out}"
        );
    }
}

/// A start callback looping to 10^9 that prints `STAT endless` and `STAT time` every
/// 10^8 iterations (about 10 s of CPU). Normalised as everywhere, numbers become
/// placeholders: which iteration first sees the endless flag (the kernel sets it 5 to
/// 10 s into the loop) and the CPU seconds depend on timing. A run of the kernel's
/// endless-loop reports counts as one (one or two, by where the loop falls between the
/// monitor's looks). Still compared: ten `Endless`/`Cost time` pairs, each time a
/// float (`N.N`; an integer would be `N`), the report. bee's times must grow.
#[test]
fn testendless() {
    let (_, bee) = differential_outputs(
        "testendless",
        35,
        Order::Same,
        Order::Same,
        &[ENDLESS_REPORT],
    );
    let times: Vec<f64> = bee
        .lines()
        .filter_map(|l| l.strip_prefix("Cost time = \t"))
        .map(|t| t.trim().parse().expect("STAT time is a number"))
        .collect();
    assert_eq!(times.len(), 10, "ten times printed:\n{bee}");
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "STAT time grows within the callback: {times:?}"
    );
}

/// `tests/lua/overloadburst.lua`: bursts queued behind a busy service, so the lengths of
/// the warnings are fixed: 3000 (past 1024 and 2048, one warning), 1200 after the queue
/// was found empty (the threshold back at 1024), none for 600 (below it). Both must
/// print exactly these.
#[test]
fn overload_warnings_at_skynets_queue_lengths() {
    let (stock, bee) = differential_outputs("overloadburst", 6, Order::Same, Order::Same, &[]);
    for (who, out) in [("stock skynet", &stock), ("bee", &bee)] {
        assert_eq!(
            log_texts(out, &["May overload", "drained", "hold", "bursts"]),
            [
                "May overload, message queue length = 3000",
                "drained 3000",
                "May overload, message queue length = 1200",
                "drained 1200",
                "drained 600",
                "bursts done",
            ],
            "{who}:\n{out}"
        );
    }
}

/// `tests/lua/cputime.lua`: `STAT time` grows within a callback and starts again in the
/// next, `STAT cpu` holds the callbacks' time, both floats (skynet measures them with
/// the thread's CPU clock when `profile` is on, its default).
#[test]
fn stat_time_and_cpu() {
    let (stock, bee) = differential_outputs("cputime", 5, Order::Same, Order::Same, &[]);
    for (who, out) in [("stock skynet", &stock), ("bee", &bee)] {
        for line in [
            "time\tfloat\tfloat",
            "time grows within a callback\ttrue",
            "cpu\tfloat",
            "cpu holds the earlier callback\ttrue",
            "time starts again in the next callback\ttrue",
        ] {
            assert!(
                out.lines().any(|l| l == line),
                "{who} did not print {line:?}:\n{out}"
            );
        }
    }
}

/// A client of testsocket's echo server on 127.0.0.1:8001: the greeting, one echo.
fn echo_client_8001() {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut s = loop {
        match std::net::TcpStream::connect(("127.0.0.1", 8001)) {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "testsocket does not listen: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut hello = [0u8; 13];
    s.read_exact(&mut hello).expect("the greeting");
    assert_eq!(&hello, b"Hello Skynet\n");
    s.write_all(b"bee\n").expect("send");
    let mut echo = [0u8; 4];
    s.read_exact(&mut echo).expect("the echo");
    assert_eq!(&echo, b"bee\n");
}

/// The echo server on a fixed port (8001): an agent service per connection.
#[test]
fn testsocket() {
    differential_in_turn(
        "testsocket",
        4,
        Order::Same,
        Order::Same,
        Some(echo_client_8001),
    );
}

/// UDP on a fixed port (8765): 20 datagrams each way with their senders' addresses.
/// Which of server and client prints first varies on stock skynet.
#[test]
fn testudp() {
    differential_in_turn("testudp", 3, Order::Same, Order::Any, None);
}
