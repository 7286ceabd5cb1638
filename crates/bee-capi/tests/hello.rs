//! `hello.so` (a module written only against skynet's C API) loaded into a bee node in
//! this process, with the real loader, driven from Rust services and through the C API.
#![allow(unsafe_code)]

mod common;

use std::ffi::{c_void, CStr};
use std::time::Duration;

use bee_capi::{start, CapiError};
use bee_codec::seri::{self, Value};
use bee_runtime::service::ptype;
use bee_runtime::{CallError, Message, Node, RuntimeConfig};
use bytes::Bytes;
use common::*;
use tokio::sync::mpsc;

fn node(name: &str) -> Node {
    Node::new(name, RuntimeConfig::default())
}

fn hello(node: &Node, args: &str) -> bee_capi::Started {
    start(node, &modules().join("hello.so"), args).expect("hello.so starts")
}

fn text_call(body: &str) -> Bytes {
    seri::pack(&[Value::from("text"), Value::from(body)]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_registers_its_name_and_answers_a_rust_call_through_the_session_bridge() {
    capture_log();
    let node = node("hello_call");
    let h = hello(&node, ".greeter");
    assert_eq!(node.resolve(".greeter").unwrap(), h.addr, "REG .greeter");
    // hello_init logged its own handle (REG with no name), the harbor, and what
    // skynet_current_handle() said in create and init: started by no service, 0.
    wait_logged(&[
        "hello_call",
        &format!(
            "hello: started as {}, named .greeter, harbor 0, launched by :00000000 (create) :00000000 (init)",
            bee_capi::fmt_handle(h.addr)
        ),
    ])
    .await;

    // A waiting Rust caller: ("text", body) reaches the callback as PTYPE_TEXT with a
    // fresh session; hello's PTYPE_RESPONSE completes the call, packed as one string.
    for i in 0..100 {
        let reply = node
            .call(h.addr, text_call(&format!("bee {i}")))
            .await
            .expect("hello answers");
        let values = seri::unpack(&reply).unwrap();
        assert_eq!(values, vec![Value::from(format!("hello:bee {i}").as_str())]);
    }
    // QUERY and skynet_queryname see the name; an unknown one is NULL / 0.
    let ctx = h.ctx.as_ptr().cast::<c_void>();
    // SAFETY: a live context; C strings from literals.
    unsafe {
        let q = skynet_command(ctx, c!("QUERY"), c!(".greeter"));
        assert_eq!(
            CStr::from_ptr(q).to_str().unwrap(),
            bee_capi::fmt_handle(h.addr)
        );
        assert!(skynet_command(ctx, c!("QUERY"), c!(".nobody")).is_null());
        assert_eq!(skynet_queryname(ctx, c!(".greeter")), h.addr);
        assert_eq!(skynet_queryname(ctx, c!(".nobody")), 0);
        // REG of a taken name fails; NAME points a second name at a handle.
        let other = node.spawn("other", bee_runtime::builtin::Echo);
        node.set_name(".taken", other);
        assert!(skynet_command(ctx, c!("REG"), c!(".taken")).is_null());
        let hex =
            std::ffi::CString::new(format!(".alias {}", bee_capi::fmt_handle(h.addr))).unwrap();
        assert!(!skynet_command(ctx, c!("NAME"), hex.as_ptr()).is_null());
        assert_eq!(node.resolve(".alias").unwrap(), h.addr);
        assert_eq!(skynet_context_handle(ctx), h.addr);
        // Commands bee does not do are NULL (and logged), not a crash.
        assert!(skynet_command(ctx, c!("LOGON"), c!(":1")).is_null());
        assert!(skynet_command(ctx, c!("NO_SUCH"), c!("")).is_null());
    }
    wait_logged(&["skynet_command: command not supported by bee", "NO_SUCH"]).await;

    // A message hello does not take (a plain lua call): logged by the module, and the
    // caller is not left hanging forever: its own timeout ends the wait.
    let plain = seri::pack(&[Value::from("lua"), Value::from("x")]).unwrap();
    let err = node
        .call_from(0, h.addr, plain, Some(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Timeout { .. }), "{err}");
    wait_logged(&["hello: message of type 10 from :00000000 dropped"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_sources_follow_skynet() {
    capture_log();
    let node = node("hello_push");
    let h = hello(&node, "");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rec = node.spawn("recorder", Recorder(tx));

    // A push with a session from a service: the reply comes back as a message.
    node.post(
        h.addr,
        Message {
            source: rec,
            ptype: ptype::TEXT,
            session: 77,
            payload: Bytes::from_static(b"abc"),
        },
    )
    .unwrap();
    let m = next(&mut rx, 2000).await.expect("hello's response");
    assert_eq!(
        (m.source, m.ptype, m.session),
        (h.addr, ptype::RESPONSE, 77)
    );
    assert_eq!(&m.payload[..], b"hello:abc");

    // A push with session 0: no answer, a log line.
    node.post(
        h.addr,
        Message {
            source: rec,
            ptype: ptype::TEXT,
            session: 0,
            payload: Bytes::from_static(b"abcd"),
        },
    )
    .unwrap();
    wait_logged(&["hello: push of 4 bytes from", "(no answer wanted)"]).await;
    assert!(
        next(&mut rx, 200).await.is_none(),
        "session 0 gets no answer"
    );

    let ctx = h.ctx.as_ptr().cast::<c_void>();
    // SAFETY: a live context; buffers valid for the calls.
    unsafe {
        // Source 0 = the sender itself; ALLOCSESSION picks the next session.
        let s1 = skynet_context_newsession(ctx);
        let s = skynet_send(
            ctx,
            0,
            rec,
            PTYPE_TEXT | PTYPE_TAG_ALLOCSESSION,
            0,
            c!("x") as *mut c_void,
            1,
        );
        assert_eq!(s, s1 + 1);
        let m = next(&mut rx, 2000).await.unwrap();
        assert_eq!(
            (m.source, m.ptype, m.session, &m.payload[..]),
            (h.addr, ptype::TEXT, s, &b"x"[..])
        );
        // An explicit source is kept.
        assert_eq!(
            skynet_send(ctx, 1234, rec, PTYPE_TEXT, 5, std::ptr::null_mut(), 0),
            5
        );
        let m = next(&mut rx, 2000).await.unwrap();
        assert_eq!((m.source, m.session), (1234, 5));
        // Dead and zero handles: -1.
        assert_eq!(
            skynet_send(ctx, 0, 0xABCDEF, PTYPE_TEXT, 0, c!("x") as *mut c_void, 1),
            -1
        );
        assert_eq!(
            skynet_send(ctx, 0, 0, PTYPE_TEXT, 0, c!("x") as *mut c_void, 1),
            -1
        );
        // Handle 0 with no message: nothing is sent, the session is made and returned
        // (skynet.genid).
        let before = skynet_context_newsession(ctx);
        let genid = skynet_send(
            ctx,
            0,
            0,
            PTYPE_TAG_ALLOCSESSION,
            0,
            std::ptr::null_mut(),
            0,
        );
        assert_eq!(genid, before + 1);
        assert_eq!(skynet_context_newsession(ctx), before + 2);
        assert!(next(&mut rx, 100).await.is_none(), "nothing was sent");
        // By name.
        node.set_name(".rec", rec);
        assert_eq!(
            skynet_sendname(ctx, 0, c!(".rec"), PTYPE_TEXT, 9, c!("y") as *mut c_void, 1),
            9
        );
        assert_eq!(next(&mut rx, 2000).await.unwrap().session, 9);
        assert_eq!(
            skynet_sendname(
                ctx,
                0,
                c!(".none"),
                PTYPE_TEXT,
                9,
                c!("y") as *mut c_void,
                1
            ),
            -1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fire_with_source_0_in_rust_and_in_c() {
    capture_log();
    let node = node("hello_timer");
    let h = hello(&node, "");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rec = node.spawn("recorder", Recorder(tx));
    let _current = h.ctx.enter();
    let started = std::time::Instant::now();
    // SAFETY: plain C calls.
    unsafe {
        assert_eq!(skynet_timeout(rec, 5, 42), 42);
        assert_eq!(skynet_timeout(rec, 0, 43), 43);
        assert_eq!(skynet_timeout(0xABCDEF, 1, 44), -1, "unknown handle");
        // Delivered to the C callback too: hello drops it with a log line naming source 0.
        assert_eq!(skynet_timeout(h.addr, 1, 45), 45);
    }
    drop(_current);
    let m = next(&mut rx, 2000).await.unwrap();
    assert_eq!(
        (m.source, m.ptype, m.session, m.payload.len()),
        (0, ptype::RESPONSE, 43, 0)
    );
    let m = next(&mut rx, 2000).await.unwrap();
    assert_eq!((m.source, m.ptype, m.session), (0, ptype::RESPONSE, 42));
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "5 centiseconds"
    );
    wait_logged(&[
        "hello_timer",
        "hello: message of type 1 from :00000000 dropped",
    ])
    .await;
    // TIMEOUT command: a new session, fired to the service itself.
    let ctx = h.ctx.as_ptr().cast::<c_void>();
    // SAFETY: a live context.
    let s = unsafe { CStr::from_ptr(skynet_command(ctx, c!("TIMEOUT"), c!("1"))) };
    assert!(s.to_str().unwrap().parse::<i32>().unwrap() > 0);
    // NOW moves in hundredths of a second.
    // SAFETY: plain C call.
    let now = unsafe { CStr::from_ptr(skynet_command(ctx, c!("NOW"), std::ptr::null())) };
    assert!(now.to_str().unwrap().parse::<u64>().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_has_harbor_and_node_and_takes_values() {
    capture_log();
    let node = node("hello_env");
    let h = hello(&node, "");
    let host = bee_capi::Host::of(&node).unwrap();
    host.set_env("log_dir", "/tmp/x").unwrap();
    let _current = h.ctx.enter();
    // SAFETY: C strings from literals; returned pointers read at once.
    unsafe {
        assert_eq!(
            CStr::from_ptr(skynet_getenv(c!("harbor")))
                .to_str()
                .unwrap(),
            "0"
        );
        assert_eq!(
            CStr::from_ptr(skynet_getenv(c!("node"))).to_str().unwrap(),
            "hello_env"
        );
        let first = skynet_getenv(c!("log_dir"));
        assert_eq!(CStr::from_ptr(first).to_str().unwrap(), "/tmp/x");
        skynet_setenv(c!("log_dir"), c!("/tmp/y"));
        assert_eq!(
            CStr::from_ptr(skynet_getenv(c!("log_dir")))
                .to_str()
                .unwrap(),
            "/tmp/y"
        );
        // A pointer handed out earlier stays readable.
        assert_eq!(CStr::from_ptr(first).to_str().unwrap(), "/tmp/x");
        skynet_setenv(c!("harbor"), c!("3"));
        assert_eq!(
            CStr::from_ptr(skynet_getenv(c!("harbor")))
                .to_str()
                .unwrap(),
            "0"
        );
        assert!(skynet_getenv(c!("no_such_key")).is_null());
        assert_eq!(skynet_current_handle(), h.addr);
        skynet_error(
            h.ctx.as_ptr().cast(),
            c!("formatted %d %s"),
            42 as std::ffi::c_int,
            c!("ok"),
        );
        let _ = skynet_now();
    }
    drop(_current);
    // SAFETY: plain C call.
    assert_eq!(
        unsafe { skynet_current_handle() },
        0,
        "no service runs on this thread now"
    );
    wait_logged(&["hello_env", "formatted 42 ok"]).await;
    // A long line is formatted in full.
    let long = "x".repeat(3000);
    let c_long = std::ffi::CString::new(long.clone()).unwrap();
    // SAFETY: valid format and argument.
    unsafe { skynet_error(h.ctx.as_ptr().cast(), c!("long %s end"), c_long.as_ptr()) };
    wait_logged(&[&format!("long {long} end")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retire_and_exit_stop_the_service_and_release_it() {
    capture_log();
    let node = node("hello_retire");
    let a = hello(&node, ".a");
    let b = hello(&node, ".b");
    // A caller queued on a retired service is told, not left waiting.
    // SAFETY: plain C calls.
    unsafe {
        assert_eq!(skynet_handle_retire(a.addr), 1);
        assert_eq!(skynet_handle_retire(a.addr), 0, "already gone");
    }
    assert!(!node.is_alive(a.addr));
    assert!(node.resolve(".a").is_err(), "its names go with it");
    wait_logged(&["C service released", &bee_capi::fmt_handle(a.addr), "hello"]).await;
    let err = node.call(a.addr, text_call("late")).await.unwrap_err();
    assert!(matches!(err, CallError::NoSuchService { .. }), "{err}");
    // EXIT from the service's own context.
    // SAFETY: a live context.
    unsafe { skynet_command(b.ctx.as_ptr().cast(), c!("EXIT"), std::ptr::null()) };
    for _ in 0..200 {
        if !node.is_alive(b.addr) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!node.is_alive(b.addr));
    wait_logged(&["C service released", &bee_capi::fmt_handle(b.addr)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_modules_and_failing_inits_are_clear_errors() {
    capture_log();
    let node = node("hello_bad");
    let err = match start(&node, std::path::Path::new("/no/such/dir/shop.so"), "") {
        Err(e) => e,
        Ok(_) => panic!("a missing module loaded"),
    };
    assert!(matches!(err, CapiError::Load { .. }), "{err}");
    assert!(err.to_string().contains("/no/such/dir/shop.so"), "{err}");

    // A file that is not a shared object.
    let dir = std::env::temp_dir().join(format!("bee-capi-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.so");
    std::fs::write(&junk, b"not an ELF file").unwrap();
    let err = start(&node, &junk, "").err().expect("junk refused");
    assert!(matches!(err, CapiError::Load { .. }), "{err}");
    assert!(err.to_string().contains("junk.so"), "{err}");
    // A shared object without NAME_init: hello.so under another name.
    let renamed = dir.join("renamed.so");
    std::fs::copy(modules().join("hello.so"), &renamed).unwrap();
    let err = start(&node, &renamed, "").err().expect("no renamed_init");
    assert!(err.to_string().contains("renamed_init"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);

    // A failing init (hello refuses a name that is taken): the error names the module,
    // and the instance is released, its address gone.
    let first = hello(&node, ".same");
    let before = node.services().len();
    let err = start(&node, &modules().join("hello.so"), ".same")
        .err()
        .expect("init fails");
    match &err {
        CapiError::InitFailed { name, code, .. } => {
            assert_eq!((name.as_str(), *code), ("hello", 1))
        }
        other => panic!("{other}"),
    }
    assert!(
        err.to_string().contains("hello.so") && err.to_string().contains("hello_init"),
        "{err}"
    );
    wait_logged(&["hello: cannot register the name .same"]).await;
    for _ in 0..200 {
        if node.services().len() == before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(node.services().len(), before, "the failed instance is gone");
    assert_eq!(node.resolve(".same").unwrap(), first.addr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_new_loads_by_name_from_the_module_path() {
    capture_log();
    let node = node("hello_new");
    let h = hello(&node, "");
    let _current = h.ctx.enter();
    // SAFETY: C strings from literals.
    let (ok, missing, failing) = unsafe {
        (
            skynet_context_new(c!("hello"), c!(".second")),
            skynet_context_new(c!("no_such_module"), c!("")),
            skynet_context_new(c!("hello"), c!(".second")),
        )
    };
    drop(_current);
    assert!(!ok.is_null());
    // SAFETY: a live context.
    let addr = unsafe { skynet_context_handle(ok) };
    assert_eq!(node.resolve(".second").unwrap(), addr);
    assert!(missing.is_null());
    assert!(failing.is_null(), "init fails: the name is taken");
    wait_logged(&["skynet_context_new failed", "no_such_module"]).await;
    // Inside the new service's create and init, skynet_current_handle() is the
    // launcher's handle (skynet's launch semantics), not the new service's own.
    assert_ne!(addr, h.addr);
    wait_logged(&[
        &format!("hello: started as {}", bee_capi::fmt_handle(addr)),
        &format!(
            "launched by {0} (create) {0} (init)",
            bee_capi::fmt_handle(h.addr)
        ),
    ])
    .await;

    let reply = node.call(addr, text_call("2")).await.unwrap();
    assert_eq!(seri::unpack(&reply).unwrap(), vec![Value::from("hello:2")]);
}

/// In-use heap bytes (glibc).
fn heap_in_use() -> usize {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    unsafe { libc::mallinfo2().uordblks }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dontcopy_blocks_change_owner_and_are_freed() {
    capture_log();
    let node = Node::new(
        "hello_dontcopy",
        RuntimeConfig {
            mailbox: 8,
            ..RuntimeConfig::default()
        },
    );
    let h = hello(&node, "");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rec = node.spawn("recorder", Recorder(tx));
    let ctx = h.ctx.as_ptr().cast::<c_void>();
    const N: usize = 2000;
    const SZ: usize = 4096;
    let send_block = |dest: u32| {
        // SAFETY: a malloc'ed block handed over with DONTCOPY.
        unsafe {
            let p = libc::malloc(SZ);
            std::ptr::write_bytes(p.cast::<u8>(), 7, SZ);
            skynet_send(ctx, 0, dest, PTYPE_TEXT | PTYPE_TAG_DONTCOPY, 0, p, SZ)
        }
    };
    // Warm up (allocator caches, channel blocks).
    for _ in 0..50 {
        assert_eq!(send_block(rec), 0);
        let m = next(&mut rx, 2000).await.unwrap();
        assert_eq!((m.payload.len(), m.payload[SZ - 1]), (SZ, 7));
    }
    let base = heap_in_use();
    // Delivered blocks (freed when the receiver drops the message), blocks to a dead
    // handle, and blocks to a full mailbox (freed although the send failed).
    let mut delivered = 0;
    for _ in 0..N {
        assert_eq!(send_block(0xABCDEF), -1);
        if send_block(rec) == 0 {
            delivered += 1;
        }
        while let Ok(m) = rx.try_recv() {
            drop(m);
        }
        if delivered % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // Fill a mailbox that nobody drains: sends beyond its 8 places fail with -1.
    let stuck = node.spawn("stuck", Stuck);
    let mut refused = 0;
    for _ in 0..20 {
        if send_block(stuck) == -1 {
            refused += 1;
        }
    }
    assert!(refused >= 10, "a full mailbox refuses: {refused}");
    wait_logged(&["skynet_send failed", "overloaded"]).await;
    while let Some(m) = next(&mut rx, 300).await {
        drop(m);
    }
    node.kill(stuck);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let grown = heap_in_use().saturating_sub(base);
    // 3 × 2000 blocks of 4 KiB went through: a leak would be ~24 MiB.
    assert!(
        grown < 2 << 20,
        "heap grew by {grown} bytes after {N} DONTCOPY sends"
    );
    // hello's own DONTCOPY replies, many times: no growth either.
    let base = heap_in_use();
    for i in 0..2000 {
        let r = node
            .call(h.addr, text_call(&"z".repeat(1000 + i % 7)))
            .await
            .unwrap();
        assert!(r.len() > 1000);
    }
    let grown = heap_in_use().saturating_sub(base);
    assert!(
        grown < 2 << 20,
        "heap grew by {grown} bytes after 2000 hello calls"
    );
}

/// Never finishes its first message: its mailbox fills.
struct Stuck;

impl bee_runtime::Service for Stuck {
    async fn handle(
        &mut self,
        _ctx: &mut bee_runtime::Context,
        _msg: Message,
    ) -> bee_runtime::HandleResult {
        std::future::pending::<()>().await;
        Ok(None)
    }
}
