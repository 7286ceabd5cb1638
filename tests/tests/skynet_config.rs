//! `bee run SKYNET_CONFIG`: a skynet config file as `skynet` takes it — `include`,
//! `$VAR`, values computed in Lua — runs the tree's Lua layer on bee (single node), and
//! what bee cannot run is refused with a line saying why. (`lua_differential.rs` runs
//! skynet's own test scripts through the same config file on both.)

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bee_tests::{bee_bin, skynet_dir, TempDir};

/// Run `bee run CONFIG` with `env` until it prints `until` (or exits, or 30 s pass);
/// (exited by itself with success, stdout, stderr).
fn bee_run(config: &Path, env: &[(&str, &str)], until: &str) -> (Option<bool>, String, String) {
    let dir = config.parent().unwrap();
    let (out, err) = (dir.join("bee.out"), dir.join("bee.err"));
    let mut child = Command::new(bee_bin())
        .arg("run")
        .arg(config)
        .envs(env.iter().copied())
        .env("BEE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err).unwrap()))
        .spawn()
        .expect("start bee");
    let deadline = Instant::now() + Duration::from_secs(30);
    let exited = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status.success());
        }
        if std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains(until)
        {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        exited,
        std::fs::read_to_string(&out).unwrap_or_default(),
        std::fs::read_to_string(&err).unwrap_or_default(),
    )
}

#[test]
fn a_skynet_config_with_include_env_and_computed_paths_runs() {
    let skynet = skynet_dir();
    let dir = TempDir::new("skynet-config");
    let d = dir.path();
    std::fs::write(
        d.join("hello.lua"),
        "local skynet = require \"skynet\"\n\
         skynet.start(function()\n\
           print(\"hello\", skynet.getenv(\"greeting\"), skynet.getenv(\"thread\"), skynet.getenv(\"flag\"))\n\
         end)\n",
    )
    .unwrap();
    // The tree's root in an included file, as skynet's examples/config.path does.
    std::fs::write(
        d.join("paths.lua"),
        format!("root = \"{}/\"\n", skynet.display()),
    )
    .unwrap();
    std::fs::write(
        d.join("node.config"),
        format!(
            "include \"paths.lua\"\n\
             thread = 3\nharbor = 0\nflag = true\n\
             greeting = \"$BEE_TEST_GREETING\"\n\
             cpath = root..\"cservice/?.so\"\n\
             lua_path = root..\"lualib/?.lua;\"..root..\"lualib/?/init.lua\"\n\
             lua_cpath = root..\"luaclib/?.so\"\n\
             luaservice = root..\"service/?.lua;{}/?.lua\"\n\
             lualoader = root..\"lualib/loader.lua\"\n\
             start = \"hello\"\n",
            d.display()
        ),
    )
    .unwrap();
    let liblua = skynet.join("liblua.so");
    let (exited, out, err) = bee_run(
        &d.join("node.config"),
        &[
            ("BEE_TEST_GREETING", "hi-from-env"),
            ("BEE_LIBLUA", liblua.to_str().unwrap()),
        ],
        "hello\t",
    );
    assert_eq!(exited, None, "bee exited: {out}{err}");
    assert!(
        out.contains("bee node node ready: skynet config"),
        "no ready line:\n{out}{err}"
    );
    assert!(
        out.contains("hello\thi-from-env\t3\ttrue"),
        "the start service did not see the config's values:\n{out}{err}"
    );
    assert!(out.contains("LAUNCH snlua hello"), "{out}");
}

#[test]
fn what_bee_cannot_run_is_refused_with_a_reason() {
    let skynet = skynet_dir();
    let dir = TempDir::new("skynet-config-refused");
    let d = dir.path();
    let base = format!("cpath = \"{}/cservice/?.so\"\n", skynet.display());
    let cases: [(&str, String, &str); 4] = [
        (
            "harbor.config",
            base.clone(),
            "harbor = 1 (skynet's default): skynet's master/slave (harbor) mode is not run by bee",
        ),
        (
            "bootstrap.config",
            format!("{base}harbor = 0\nbootstrap = \"mylauncher x\"\n"),
            "bee starts `snlua …`",
        ),
        (
            "unset.config",
            format!("{base}harbor = 0\nx = \"$BEE_TEST_SURELY_UNSET_VARIABLE\"\n"),
            "os.getenv() failed: BEE_TEST_SURELY_UNSET_VARIABLE",
        ),
        (
            "syntax.config",
            format!("{base}harbor = 0\nx = = 1\n"),
            "syntax.config:3:",
        ),
    ];
    for (name, text, says) in cases {
        let path = d.join(name);
        std::fs::write(&path, text).unwrap();
        let (exited, out, err) = bee_run(&path, &[], "ready:");
        assert_eq!(exited, Some(false), "{name}: {out}{err}");
        assert!(err.contains(says), "{name}: expected {says:?} in:\n{err}");
    }
    // No liblua to be found: the places looked at are named.
    let path = d.join("computed.config");
    std::fs::write(
        &path,
        format!(
            "root = \"{}/\"\ncpath = root..\"cservice/?.so\"\nharbor = 0\n",
            skynet.display()
        ),
    )
    .unwrap();
    let (exited, out, err) = bee_run(&path, &[], "ready:");
    assert_eq!(exited, Some(false), "{out}{err}");
    assert!(
        err.contains("cannot find the skynet tree's Lua library") && err.contains("BEE_LIBLUA"),
        "{err}"
    );
}
