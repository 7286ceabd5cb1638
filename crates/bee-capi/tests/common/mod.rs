//! Shared by the in-process tests: the demo modules built once (`make -C cservices`,
//! under a file lock so parallel test binaries build once), a captured log, a recorder
//! service, and the C API declared as a module sees it.
#![allow(dead_code, unsafe_code)]

use std::ffi::{c_char, c_int, c_void};
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bee_runtime::{Context, HandleResult, Message, Service};
use tokio::sync::mpsc;

extern "C" {
    pub fn skynet_command(
        ctx: *mut c_void,
        cmd: *const c_char,
        parm: *const c_char,
    ) -> *const c_char;
    pub fn skynet_queryname(ctx: *mut c_void, name: *const c_char) -> u32;
    pub fn skynet_send(
        ctx: *mut c_void,
        source: u32,
        dest: u32,
        ty: c_int,
        session: c_int,
        msg: *mut c_void,
        sz: usize,
    ) -> c_int;
    pub fn skynet_sendname(
        ctx: *mut c_void,
        source: u32,
        dest: *const c_char,
        ty: c_int,
        session: c_int,
        msg: *mut c_void,
        sz: usize,
    ) -> c_int;
    pub fn skynet_timeout(handle: u32, time: c_int, session: c_int) -> c_int;
    pub fn skynet_handle_retire(handle: u32) -> c_int;
    pub fn skynet_context_new(name: *const c_char, parm: *const c_char) -> *mut c_void;
    pub fn skynet_context_handle(ctx: *mut c_void) -> u32;
    pub fn skynet_context_newsession(ctx: *mut c_void) -> c_int;
    pub fn skynet_current_handle() -> u32;
    pub fn skynet_getenv(key: *const c_char) -> *const c_char;
    pub fn skynet_setenv(key: *const c_char, value: *const c_char);
    pub fn skynet_now() -> u64;
    pub fn skynet_error(ctx: *mut c_void, fmt: *const c_char, ...);
}

pub const PTYPE_TEXT: c_int = 0;
pub const PTYPE_RESPONSE: c_int = 1;
pub const PTYPE_TAG_DONTCOPY: c_int = 0x10000;
pub const PTYPE_TAG_ALLOCSESSION: c_int = 0x20000;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `target/cpp/`, with hello.so, shop.so, mail.so built.
pub fn modules() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = root();
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

static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Capture the log of this test process (idempotent).
pub fn capture_log() {
    let _ = tracing_subscriber::fmt()
        .with_writer(|| Capture)
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .try_init();
}

/// Whether a log line contains every needle.
pub fn logged(needles: &[&str]) -> bool {
    let text = String::from_utf8_lossy(&LOG.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    text.lines().any(|l| needles.iter().all(|n| l.contains(n)))
}

/// Wait (up to 5 s) until a log line contains every needle.
pub async fn wait_logged(needles: &[&str]) {
    if bee_testkit::eventually(Duration::from_secs(5), || async { logged(needles) }).await {
        return;
    }
    let text = String::from_utf8_lossy(&LOG.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    panic!("no log line with {needles:?} in:\n{text}");
}

/// A service that hands every message it gets to a channel.
pub struct Recorder(pub mpsc::UnboundedSender<Message>);

impl Service for Recorder {
    async fn handle(&mut self, _ctx: &mut Context, msg: Message) -> HandleResult {
        let _ = self.0.send(msg);
        Ok(None)
    }
}

/// The next message of a recorder, within `ms`.
pub async fn next(rx: &mut mpsc::UnboundedReceiver<Message>, ms: u64) -> Option<Message> {
    tokio::time::timeout(Duration::from_millis(ms), rx.recv())
        .await
        .ok()
        .flatten()
}

/// A C string literal's pointer.
#[macro_export]
macro_rules! c {
    ($s:literal) => {
        concat!($s, "\0").as_ptr().cast::<std::ffi::c_char>()
    };
}
