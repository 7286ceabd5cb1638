//! The command line: `bee call` prints the reply values readably, `bee send`
//! pushes, `bee query` prints an address usable by `bee call`, and bad arguments, unknown
//! nodes, names and services give a non-zero exit status with a readable message.

use std::time::{Duration, Instant};

use bee_tests::{bee_cli, Layout};

const SERVICES: &str = r#"
[[service]]
kind = "echo"
name = "echo"

[[service]]
kind = "sink"
name = "sink"

[[service]]
kind = "slow"
name = "slow"
"#;

/// `bee <command> --cluster FILE <rest…>`.
fn run(layout: &Layout, command: &str, rest: &[&str]) -> (bool, String, String) {
    let file = layout.cluster_file();
    let mut args = vec![command, "--cluster", file.to_str().expect("utf-8 path")];
    args.extend_from_slice(rest);
    bee_cli(&args)
}

/// Run and expect success; returns stdout lines.
fn ok(layout: &Layout, command: &str, rest: &[&str]) -> Vec<String> {
    let (success, out, err) = run(layout, command, rest);
    assert!(
        success,
        "bee {command} {rest:?} failed:\nstdout: {out}\nstderr: {err}"
    );
    out.lines().map(str::to_string).collect()
}

/// Run and expect failure; returns stderr.
fn fails(layout: &Layout, command: &str, rest: &[&str]) -> String {
    let (success, out, err) = run(layout, command, rest);
    assert!(
        !success,
        "bee {command} {rest:?} should fail, printed: {out}"
    );
    assert!(
        out.is_empty(),
        "a failing command prints nothing on stdout: {out}"
    );
    assert!(!err.trim().is_empty(), "a failing command says why");
    err
}

#[test]
fn call_prints_replies_readably() {
    let layout = Layout::new(&["a", "b"]);
    let _a = layout.start("a", SERVICES);
    let _b = layout.start("b", SERVICES);

    // Each argument's kind is guessed; each reply value is printed on its own line.
    let lines = ok(
        &layout,
        "call",
        &[
            "b",
            "echo",
            "hello",
            "42",
            "3.5",
            "true",
            "false",
            "nil",
            "with space",
        ],
    );
    assert_eq!(
        lines,
        [
            "\"hello\"",
            "42",
            "3.5",
            "true",
            "false",
            "nil",
            "\"with space\""
        ]
    );
    // "@name" works as well as the bare name; quotes and control characters are escaped.
    let lines = ok(&layout, "call", &["a", "@echo", "say \"hi\"\n\ttab"]);
    assert_eq!(lines, [r#""say \"hi\"\n\ttab""#]);
    // Negative numbers after `--`, big integers, reals in exponent form.
    let lines = ok(
        &layout,
        "call",
        &[
            "a",
            "echo",
            "--",
            "-7",
            "9223372036854775807",
            "1e3",
            "-0.5",
        ],
    );
    assert_eq!(lines, ["-7", "9223372036854775807", "1000.0", "-0.5"]);
    // No arguments, no reply values.
    let lines = ok(&layout, "call", &["a", "echo"]);
    assert!(lines.is_empty(), "{lines:?}");
    // A table reply (bee_clusterd's service list) prints as Lua-like text.
    let lines = ok(&layout, "call", &["a", "bee_clusterd", "services"]);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with('{') && l.contains("label = \"echo\"")),
        "services: {lines:?}"
    );
    let (_, _, err) = run(&layout, "call", &["a", "echo", "x"]);
    assert!(
        err.contains("1 value(s) from @echo on a"),
        "summary on stderr: {err}"
    );
}

#[test]
fn send_and_query() {
    let layout = Layout::new(&["a"]);
    let _a = layout.start("a", SERVICES);

    for i in 0..3 {
        let lines = ok(&layout, "send", &["a", "sink", "hit", &i.to_string()]);
        assert!(lines.is_empty(), "send prints nothing on stdout: {lines:?}");
    }
    assert_eq!(ok(&layout, "call", &["a", "sink", "count"]), ["3"]);

    // query prints the address as skynet does; call and send accept it.
    let lines = ok(&layout, "query", &["a", "sink"]);
    assert_eq!(lines.len(), 1);
    let addr = lines[0].clone();
    assert!(addr.starts_with(':') && addr.len() == 9, "address: {addr}");
    ok(&layout, "send", &["a", &addr, "by address"]);
    assert_eq!(ok(&layout, "call", &["a", &addr, "count"]), ["4"]);
    let hex = format!("0x{}", &addr[1..]);
    let decimal = u32::from_str_radix(&addr[1..], 16)
        .expect("hex")
        .to_string();
    assert_eq!(ok(&layout, "call", &["a", &hex, "count"]), ["4"]);
    assert_eq!(ok(&layout, "call", &["a", &decimal, "reset"]), ["4"]);
    assert_eq!(ok(&layout, "call", &["a", "@sink", "count"]), ["0"]);
    assert_eq!(ok(&layout, "query", &["a", "@sink"]), [addr]);
}

#[test]
fn errors_exit_non_zero_with_a_readable_message() {
    let layout = Layout::new(&["a", "down"]);
    let _a = layout.start("a", SERVICES);

    // Unknown node: names the known ones.
    let err = fails(&layout, "call", &["nosuch", "echo", "x"]);
    assert!(
        err.contains("node nosuch is not in the cluster config (known: a, down)"),
        "{err}"
    );
    let err = fails(&layout, "send", &["nosuch", "sink", "x"]);
    assert!(err.contains("not in the cluster config"), "{err}");
    let err = fails(&layout, "query", &["nosuch", "echo"]);
    assert!(err.contains("not in the cluster config"), "{err}");

    // A node in the config that is not running: prompt connect error.
    let started = Instant::now();
    let err = fails(&layout, "call", &["down", "echo", "x"]);
    assert!(err.contains("cannot connect to node down"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not prompt: {:?}",
        started.elapsed()
    );

    // Unknown name / address on a running node.
    let err = fails(&layout, "call", &["a", "nosuch", "x"]);
    assert!(err.contains("Invalid name"), "{err}");
    let err = fails(&layout, "query", &["a", "nosuch"]);
    assert!(err.contains("name not found"), "{err}");
    let err = fails(&layout, "call", &["a", ":00abcdef", "x"]);
    assert!(err.contains("no service at address :00abcdef"), "{err}");
    // The handler's own error text.
    let err = fails(&layout, "call", &["a", "bee_clusterd", "bogus"]);
    assert!(err.contains("unknown command \"bogus\""), "{err}");
    // Timeout.
    let err = fails(
        &layout,
        "call",
        &["--timeout-ms", "200", "a", "slow", "5000"],
    );
    assert!(err.contains("timed out after 200ms"), "{err}");

    // Bad arguments.
    let err = fails(&layout, "call", &["a", ":zz", "x"]);
    assert!(err.contains("bad address \":zz\""), "{err}");
    let err = fails(&layout, "call", &["a", "@"]);
    assert!(err.contains("empty service name"), "{err}");
    let err = fails(&layout, "call", &["a"]);
    assert!(err.to_lowercase().contains("usage"), "{err}");
    let err = fails(&layout, "call", &["--timeout-ms", "soon", "a", "echo"]);
    assert!(err.contains("soon"), "{err}");
    let (success, _, err) = bee_cli(&["call", "a", "echo"]);
    assert!(
        !success && err.contains("--cluster"),
        "missing --cluster: {err}"
    );
    let (success, _, err) =
        bee_cli(&["call", "--cluster", "/nonexistent/cluster.lua", "a", "echo"]);
    assert!(
        !success && err.contains("/nonexistent/cluster.lua"),
        "missing file: {err}"
    );
    let (success, _, err) = bee_cli(&["frobnicate"]);
    assert!(
        !success && err.contains("frobnicate"),
        "unknown subcommand: {err}"
    );

    // After all that, the node is fine.
    assert_eq!(ok(&layout, "call", &["a", "echo", "fine"]), ["\"fine\""]);
}

#[test]
fn nodes_serve_with_any_thread_count_and_busy_poll_setting() {
    let layout = Layout::new(&["a", "b"]);
    // One worker thread, no busy polling; three threads polling for 500 µs.
    let _a = layout.start("a", &format!("threads = 1\nbusy_poll_us = 0\n{SERVICES}"));
    let _b = layout.start("b", &format!("threads = 3\nbusy_poll_us = 500\n{SERVICES}"));
    for node in ["a", "b"] {
        for i in 0..3 {
            let arg = format!("ping{i}");
            assert_eq!(
                ok(&layout, "call", &[node, "echo", &arg, &i.to_string()]),
                [format!("\"{arg}\""), i.to_string()],
                "node {node}"
            );
        }
    }
}

#[test]
fn run_with_a_bad_node_config_fails_readably() {
    let layout = Layout::new(&["a"]);
    let dir = layout.dir.path();
    let cases = [
        (
            "typo.toml",
            "name = \"a\"\ncluster = \"cluster.lua\"\nlisten_on = \"x\"\n",
            "unknown key",
        ),
        (
            "kind.toml",
            "name = \"a\"\ncluster = \"cluster.lua\"\n[[service]]\nkind = \"nope\"\n",
            "unknown service kind \"nope\"",
        ),
        (
            "nocluster.toml",
            "name = \"a\"\ncluster = \"missing.lua\"\n",
            "missing.lua",
        ),
        (
            "threads.toml",
            "name = \"a\"\ncluster = \"cluster.lua\"\nthreads = 0\n",
            "threads must be at least 1",
        ),
        (
            "poll.toml",
            "name = \"a\"\ncluster = \"cluster.lua\"\nbusy_poll_us = -1\n",
            "busy_poll_us",
        ),
        (
            "notinconfig.toml",
            "name = \"zz\"\ncluster = \"cluster.lua\"\n",
            "zz",
        ),
    ];
    for (file, text, want) in cases {
        let path = dir.join(file);
        std::fs::write(&path, text).expect("write config");
        let (success, _, err) = bee_cli(&["run", path.to_str().expect("utf-8")]);
        assert!(!success, "{file}: bee run should fail");
        assert!(err.contains(want), "{file}: {err}");
    }
}
