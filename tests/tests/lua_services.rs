//! skynet's Lua layer inside a `bee` process (`kind = "snlua"`, `docs/lua.md`): stock
//! skynet v1.6.0's own bootstrap, launcher and service manager start unchanged from the
//! tree `cargo xtask skynet` builds, then the project's Lua services (`tests/lua/`)
//! call each other, call a Rust service and are called by Rust over the cluster — and a
//! Lua error reaches its caller while the service keeps serving.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bee_codec::seri::{self, Value};
use bee_tests::{skynet_dir, Layout};
use bytes::Bytes;

const CALL: Duration = Duration::from_secs(10);

fn pack(values: &[Value]) -> Bytes {
    seri::pack(values).expect("pack")
}

fn lua_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("lua")
}

/// The `[env]` and service entries of a node hosting skynet's Lua layer from the stock
/// tree `skynet`, with the tests' Lua services on its service path.
fn lua_node_body(skynet: &Path, start: &str, log: &Path) -> String {
    let s = skynet.display();
    let t = lua_dir().display().to_string();
    format!(
        "[env]\n\
         cpath = \"{s}/cservice/?.so\"\n\
         lua_path = \"{s}/lualib/?.lua;{s}/lualib/?/init.lua\"\n\
         lua_cpath = \"{s}/luaclib/?.so\"\n\
         luaservice = \"{s}/service/?.lua;{t}/?.lua\"\n\
         lualoader = \"{s}/lualib/loader.lua\"\n\
         start = \"{start}\"\n\
         logger = \"{log}\"\n\n\
         [[service]]\nkind = \"echo\"\nname = \".echo\"\n\n\
         [[service]]\nkind = \"snlua\"\nliblua = \"{s}/liblua.so\"\n\n\
         [[service]]\nkind = \"snlua\"\nliblua = \"{s}/liblua.so\"\nargs = \"luaapi\"\nname = \"luaapi\"\n",
        log = log.display()
    )
}

/// Wait (at most 20 s) until the skynet log at `path` holds a line containing `what`.
fn wait_for_log(path: &Path, what: &str) -> String {
    let what_line = format!("a log line with {what:?}");
    bee_tests::wait_for(&what_line, Duration::from_secs(20), || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().any(|l| l.contains(what)) {
            Ok(text)
        } else {
            Err(text)
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_services_call_lua_and_rust_and_errors_reach_the_caller() {
    let skynet = skynet_dir();
    let layout = Layout::new(&["luanode"]);
    let log = layout.dir.path().join("skynet.log");
    let body = lua_node_body(&skynet, "callrust", &log);
    let node = tokio::task::block_in_place(|| layout.start_logged("luanode", &body));

    // skynet's own bootstrap ran: launcher, cdummy + the C harbor, datacenterd,
    // service_mgr, then the start script, which called the Rust echo service.
    let text = tokio::task::block_in_place(|| wait_for_log(&log, "rust echo answered"));
    for launched in [
        "LAUNCH snlua bootstrap",
        "LAUNCH snlua launcher",
        "LAUNCH snlua cdummy",
        "LAUNCH harbor 0 ",
        "LAUNCH snlua datacenterd",
        "LAUNCH snlua service_mgr",
        "LAUNCH snlua callrust",
        "LAUNCH snlua luaapi",
    ] {
        assert!(
            text.contains(launched),
            "no {launched:?} in the log:\n{text}"
        );
    }
    assert!(
        text.contains("] rust echo answered from start 7"),
        "the start script's call to the Rust service: {text}"
    );

    let (_client, c) = layout.client(CALL);
    // Rust -> Lua over the cluster, Lua -> Lua inside the node.
    for i in 0..20 {
        let r = c
            .call(
                "luanode",
                "luaapi",
                pack(&[Value::from("call_lua"), Value::from(i)]),
            )
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "luaapi answers call_lua {i}: {e}\nnode log:\n{}\nskynet log:\n{}",
                    node.log(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        assert_eq!(
            seri::unpack(&r).unwrap(),
            vec![Value::from(format!("echo:{i}").as_str())]
        );
    }
    // Lua -> Rust: the answer of the Rust echo service, values as they were.
    let r = c
        .call(
            "luanode",
            "luaapi",
            pack(&[Value::from("call_rust"), Value::from("a"), Value::from(1)]),
        )
        .await
        .expect("luaapi answers call_rust");
    assert_eq!(
        seri::unpack(&r).unwrap(),
        vec![Value::from("a"), Value::from(1)]
    );
    // A Lua error in a Lua callee: the Lua caller's skynet.call raises "call failed"
    // (as in skynet), and the callee's error is in the log.
    let r = c
        .call("luanode", "luaapi", pack(&[Value::from("call_raise")]))
        .await
        .expect("luaapi answers call_raise");
    let values = seri::unpack(&r).unwrap();
    assert_eq!(values.first(), Some(&Value::Boolean(false)), "{values:?}");
    match values.get(1) {
        Some(Value::String(e)) => assert!(
            String::from_utf8_lossy(e).contains("call failed"),
            "the caller's error: {values:?}"
        ),
        other => panic!("no error text: {other:?}"),
    }
    tokio::task::block_in_place(|| wait_for_log(&log, "luaecho raised"));
    // A Lua error in the handler a Rust caller reached: the call fails with an error...
    let err = c
        .call("luanode", "luaapi", pack(&[Value::from("raise")]))
        .await
        .expect_err("a raising handler fails the call");
    assert!(!err.to_string().is_empty());
    tokio::task::block_in_place(|| wait_for_log(&log, "raised on purpose"));
    // ... and the service keeps serving; its timers run in 1/100 s ticks.
    let r = c
        .call(
            "luanode",
            "luaapi",
            pack(&[Value::from("sleep"), Value::from(10)]),
        )
        .await
        .expect("luaapi still serves after an error");
    match seri::unpack(&r).unwrap().as_slice() {
        [Value::Integer(t)] => assert!(*t >= 9, "slept {t} ticks for skynet.sleep(10)"),
        other => panic!("sleep answered {other:?}"),
    }
}

/// A Lua service configured after skynet's bootstrap uses the service manager in its
/// start function at once: the node starts it only when the bootstrap's `.service` is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_services_after_the_bootstrap_find_its_service_manager() {
    let skynet = skynet_dir();
    let layout = Layout::new(&["luaatload"]);
    let log = layout.dir.path().join("skynet.log");
    let body = format!(
        "{}\n[[service]]\nkind = \"snlua\"\nliblua = \"{}/liblua.so\"\nargs = \"atload\"\n",
        lua_node_body(&skynet, "callrust", &log),
        skynet.display()
    );
    let _node = tokio::task::block_in_place(|| layout.start("luaatload", &body));
    let text =
        tokio::task::block_in_place(|| wait_for_log(&log, "uniqueservice from a config service:"));
    assert!(
        text.contains("] uniqueservice from a config service: true"),
        "skynet.uniqueservice from a service configured after the bootstrap:\n{text}"
    );
    let at = |what: &str| {
        text.find(what)
            .unwrap_or_else(|| panic!("no {what:?} in the log:\n{text}"))
    };
    assert!(
        at("LAUNCH snlua service_mgr") < at("LAUNCH snlua atload"),
        "the config service starts after the service manager:\n{text}"
    );
}

/// A Lua service in the node config is named, and the node opens its cluster port, only
/// once its start function has returned (as skynet's launcher answers
/// `skynet.newservice` only then): the first call after the node is up reaches a service
/// whose dispatch is set, however slow its start. A start function that raises fails
/// the node's start, naming the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_lua_service_is_reachable_only_after_its_start_function_returned() {
    let skynet = skynet_dir();
    let s = skynet.display();
    let layout = Layout::new(&["luaslow"]);
    let log = layout.dir.path().join("skynet.log");
    let slow = |args: &str| {
        format!(
            "{}\n[[service]]\nkind = \"snlua\"\nliblua = \"{s}/liblua.so\"\nargs = \"{args}\"\nname = \"slowstart\"\n",
            lua_node_body(&skynet, "callrust", &log),
        )
    };
    let node = tokio::task::block_in_place(|| layout.start_logged("luaslow", &slow("slowstart")));
    let (_client, c) = layout.client(CALL);
    let r = c
        .call("luaslow", "slowstart", pack(&[Value::from("ping")]))
        .await
        .unwrap_or_else(|e| panic!("the first call: {e}\nnode log:\n{}", node.log()));
    assert_eq!(seri::unpack(&r).unwrap(), vec![Value::from("started:ping")]);
    drop(node);

    // The same service, its start function raising: the node does not start, and says
    // which service failed.
    let path = layout.dir.path().join("luaslow-raise.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"luaslow\"\ncluster = \"cluster.lua\"\n{}",
            slow("slowstart raise")
        ),
    )
    .expect("write the node config");
    let err_path = layout.dir.path().join("luaslow-raise.err");
    let mut child = std::process::Command::new(bee_tests::bee_bin())
        .arg("run")
        .arg(&path)
        .env("BEE_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_path).expect("create the stderr file"))
        .spawn()
        .expect("start bee");
    let status = tokio::task::block_in_place(|| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait for bee") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "a node whose Lua service fails its start kept running:\n{}",
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(!status.success(), "bee run exited with success:\n{err}");
    assert!(
        err.contains("service slowstart") && err.contains("failed in its start function"),
        "the node's error names the service:\n{err}"
    );
    let skynet_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        skynet_log.contains("slowstart raised on purpose"),
        "skynet's log has the reason:\n{skynet_log}"
    );
}

/// A Lua service busy in one message for more than 5 s is reported as skynet reports it
/// (`maybe in an endless loop`, with the busy service's address), and its
/// `skynet.endless()` is true once, then false (read and cleared). The report comes 5
/// to 6 s into the callback (the monitor looks every second), so a callback of 8 s, as
/// skynet's testendless has, is always reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_lua_service_is_reported_as_a_possible_endless_loop() {
    let skynet = skynet_dir();
    let layout = Layout::new(&["luaendless"]);
    let log = layout.dir.path().join("skynet.log");
    let body = lua_node_body(&skynet, "endless", &log);
    let _node = tokio::task::block_in_place(|| layout.start("luaendless", &body));
    let text = tokio::task::block_in_place(|| wait_for_log(&log, "flag seen after"));
    assert!(
        text.contains("] endless flag true then false"),
        "skynet.endless() while busy, then again: {text}"
    );
    let after: f64 = text
        .lines()
        .find_map(|l| l.split("flag seen after ").nth(1))
        .and_then(|t| t.trim_end_matches(" s").parse().ok())
        .unwrap_or_else(|| panic!("no time of the flag in: {text}"));
    assert!(
        (4.9..8.0).contains(&after),
        "the flag came {after} s into the callback (5 to 6 s expected, before 8 s): {text}"
    );
    let launched = text
        .lines()
        .find(|l| l.ends_with("LAUNCH snlua endless"))
        .and_then(|l| l.get(2..10))
        .expect("the endless service's LAUNCH line");
    assert!(
        text.lines()
            .any(|l| l.starts_with("[:00000000] A message from [ :")
                && l.contains(&format!(
                    "] to [ :{launched} ] maybe in an endless loop (version = "
                ))),
        "the kernel's report names the busy service :{launched}: {text}"
    );
}
