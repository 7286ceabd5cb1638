//! Issue 10: the game team's kind of C/C++ services (skynet C service modules, built from
//! `cservices/` by `make`) loaded into `bee` processes with `kind = "cservice"` entries,
//! talking across nodes.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use bee_codec::seri::{self, Value};
use bee_tests::{bee_bin, Layout};
use bytes::Bytes;

const CALL: Duration = Duration::from_secs(10);

/// `target/cpp/` with the demo modules built (once per process; a file lock keeps
/// parallel test binaries from building at the same time).
fn modules() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = root.join("target/cpp");
        std::fs::create_dir_all(&out).expect("create target/cpp");
        let status = Command::new("flock")
            .arg(out.join(".build.lock"))
            .args(["make", "-s", "-C"])
            .arg(root.join("cservices"))
            .args(["-j2", "modules"])
            .arg(format!("OUT={}", out.display()))
            .status()
            .expect("cannot run flock make (util-linux, make)");
        assert!(status.success(), "building the C service modules failed");
        out.canonicalize().expect("target/cpp")
    })
    .clone()
}

fn pack(values: &[Value]) -> Bytes {
    seri::pack(values).expect("pack")
}

/// Start a node with `bin`, off the async runtime's threads.
fn start(layout: &Layout, bin: &std::path::Path, name: &str, body: &str) -> bee_tests::BeeProcess {
    tokio::task::block_in_place(|| layout.start_with(bin, name, body))
}

/// `hello.so` (skynet's C API only) in a `bee` process: loaded from a path relative to
/// the node config, with `[env]`, registered under a cluster name, answering cluster
/// calls through the session bridge; pushes get no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_loads_into_a_bee_process_and_answers_cluster_calls() {
    let layout = Layout::new(&["capi_hello"]);
    let mods = layout.dir.path().join("mods");
    std::fs::create_dir_all(&mods).unwrap();
    std::fs::copy(modules().join("hello.so"), mods.join("hello.so")).unwrap();
    let _n = start(
        &layout,
        &bee_bin(),
        "capi_hello",
        "[env]\nlog_dir = \"/tmp\"\nlogbufsecs = 1\n\n\
         [[service]]\nkind = \"cservice\"\nmodule = \"mods/hello.so\"\nname = \"hello\"\nargs = \".hello\"\n",
    );
    let (_node, c) = layout.client(CALL);
    for i in 0..50 {
        let reply = c
            .call(
                "capi_hello",
                "hello",
                pack(&[Value::from("text"), Value::from(format!("n{i}").as_str())]),
            )
            .await
            .expect("hello answers across the cluster");
        assert_eq!(
            seri::unpack(&reply).unwrap(),
            vec![Value::from(format!("hello:n{i}").as_str())]
        );
    }
    // A push: delivered with session 0, no answer, the node keeps serving.
    c.send(
        "capi_hello",
        "hello",
        pack(&[Value::from("text"), Value::from("push")]),
    )
    .await
    .unwrap();
    let reply = c
        .call(
            "capi_hello",
            "hello",
            pack(&[Value::from("text"), Value::from("after")]),
        )
        .await
        .unwrap();
    assert_eq!(
        seri::unpack(&reply).unwrap(),
        vec![Value::from("hello:after")]
    );
}

/// A node whose cservice entry cannot start does not start, and says why in one line.
#[test]
fn a_bad_module_or_a_failing_init_stops_the_node_with_a_clear_error() {
    let layout = Layout::new(&["capi_bad"]);
    let hello = modules().join("hello.so");
    let cases = [
        (
            "[[service]]\nkind = \"cservice\"\nmodule = \"nowhere/shop.so\"\n".to_string(),
            "cannot load C service module",
        ),
        (
            format!(
                "[[service]]\nkind = \"cservice\"\nmodule = \"{0}\"\nargs = \".x\"\n\n\
                 [[service]]\nkind = \"cservice\"\nmodule = \"{0}\"\nargs = \".x\"\n",
                hello.display()
            ),
            "hello_init(\".x\") failed",
        ),
        (
            format!(
                "[[service]]\nkind = \"cservice\"\nmodule = \"{}\"\nargz = \"typo\"\n",
                hello.display()
            ),
            "unknown option \"argz\"",
        ),
        (
            "[[service]]\nkind = \"cservice\"\n".to_string(),
            "needs module =",
        ),
    ];
    for (body, expected) in cases {
        let path = layout.dir.path().join("capi_bad.toml");
        std::fs::write(
            &path,
            format!("name = \"capi_bad\"\ncluster = \"cluster.lua\"\n{body}"),
        )
        .unwrap();
        let out = Command::new(bee_bin())
            .arg("run")
            .arg(&path)
            .env("BEE_LOG", "warn")
            .output()
            .expect("run bee");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "bee started with:\n{body}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in:\n{stderr}"
        );
    }
}
