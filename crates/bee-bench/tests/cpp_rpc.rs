//! `bee-bench cpp-rpc` end to end, small: `bench.so` (built from `cservices/` by `make`)
//! and a Rust `NativeEndpoint` in this process both rpc_call `game.Ping` on a real
//! `bee-demo` node (`lpersistence_3`, started by the bench); every reply must check out
//! on both sides and both must report latencies.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bee_bench::cpp_rpc::{run, CppRpcParams};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The workspace's target directory.
fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"))
}

/// `bee-demo` (debug) and `bench.so`, built if missing or stale.
fn inputs() -> (PathBuf, PathBuf) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", "bee-demo", "--bin", "bee-demo"])
        .current_dir(root())
        .status()
        .expect("cannot run cargo build");
    assert!(status.success(), "building bee-demo failed");
    let out = target_dir().join("cpp");
    std::fs::create_dir_all(&out).expect("create target/cpp");
    let status = Command::new("flock")
        .arg(out.join(".build.lock"))
        .args(["make", "-s", "-C"])
        .arg(root().join("cservices"))
        .args(["-j2", "modules"])
        .arg(format!("OUT={}", out.display()))
        .status()
        .expect("cannot run flock make (util-linux, make)");
    assert!(status.success(), "building the C service modules failed");
    (
        target_dir().join("debug").join("bee-demo"),
        out.join("bench.so"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpp_and_rust_callers_are_measured_and_every_reply_checked() {
    let (demo, module) = tokio::task::block_in_place(inputs);
    let p = CppRpcParams {
        calls: 400,
        rounds: 2,
        ..CppRpcParams::quick(demo, module)
    };
    let r = tokio::time::timeout(Duration::from_secs(120), run(&p))
        .await
        .expect("finished in time")
        .expect("ran");
    assert_eq!(r.errors, 0, "{r:?}");
    assert_eq!(r.first_error, None);
    assert_eq!((r.cpp.calls, r.rust.calls), (400, 400), "{r:?}");
    for side in [&r.cpp, &r.rust] {
        assert!(side.p50_us > 0.0 && side.p99_us >= side.p50_us, "{r:?}");
        assert!(
            side.max_us >= side.p99_us && side.calls_per_s > 0.0,
            "{r:?}"
        );
    }
    assert!(r.ratio_calls_per_s > 0.0 && r.ratio_p50 > 0.0, "{r:?}");
    assert_eq!(r.target, "lpersistence_3/lpersistence");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_module_is_a_clear_error() {
    let p = CppRpcParams::quick(
        PathBuf::from("/nonexistent/bee-demo"),
        PathBuf::from("/nonexistent/bench.so"),
    );
    let e = run(&p).await.expect_err("nothing to run");
    assert!(e.to_string().contains("/nonexistent/bee-demo"), "{e}");
}
