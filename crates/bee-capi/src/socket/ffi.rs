//! The `skynet_socket_*` entry points with skynet v1.6.0's C signatures, as
//! `luaclib/skynet.so` (socketdriver, netpack) and `cservice/gate.so` call them, and
//! `skynet_socket_info`/`socket_info_release` for `socketdriver.info` (netstat).

use std::ffi::{c_char, c_int, c_void, CStr};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::IntoRawFd;
use std::sync::Arc;

use bytes::Bytes;

use super::table::{self, flag, Sock};
use super::{
    bind, decode_udp_addr, ev, events, sys, tcp, udp, Event, Kind, Origin, OutData, State,
};
use crate::context::SkynetContext;
use crate::Host;

/// `struct socket_sendbuffer` (skynet_socket.h).
#[repr(C)]
pub struct SocketSendBuffer {
    id: c_int,
    kind: c_int,
    buffer: *const c_void,
    sz: usize,
}

const BUFFER_MEMORY: c_int = 0;
const BUFFER_RAWPOINTER: c_int = 2;

/// `struct socket_info` (socket_info.h).
#[repr(C)]
pub struct SocketInfo {
    id: c_int,
    kind: c_int,
    opaque: u64,
    read: u64,
    write: u64,
    rtime: u64,
    wtime: u64,
    wbuffer: i64,
    reading: u8,
    writing: u8,
    name: [c_char; 128],
    next: *mut SocketInfo,
}

/// The calling service's host and handle.
fn caller(ctx: *mut SkynetContext) -> Option<(Arc<Host>, u32)> {
    // SAFETY: a non-null context pointer is one this crate handed to C; it stays valid
    // while the service's code runs, which is when C calls us with it.
    let c = unsafe { ctx.as_ref() }?;
    Some((c.host.clone(), c.handle()))
}

fn str_arg<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        return None;
    }
    // SAFETY: a non-null C string argument, NUL-terminated, valid for the call.
    unsafe { CStr::from_ptr(p) }.to_str().ok()
}

/// The bytes of a send buffer for `f`: a MEMORY block is taken over (freed once sent or
/// refused, as skynet's socket layer does), a RAWPOINTER one copied. -1 for OBJECT
/// buffers (no user-object callbacks exist) and an unknown socket.
fn with_buffer(b: *mut SocketSendBuffer, f: impl FnOnce(&mut Sock, OutData) -> c_int) -> c_int {
    // SAFETY: the caller passes a valid socket_sendbuffer for the duration of the call.
    let Some(b) = (unsafe { b.as_ref() }) else {
        return -1;
    };
    let data = match b.kind {
        BUFFER_MEMORY => OutData::Heap {
            ptr: b.buffer as usize,
            len: if b.buffer.is_null() { 0 } else { b.sz },
        },
        BUFFER_RAWPOINTER if b.buffer.is_null() || b.sz == 0 => OutData::Copied(Bytes::new()),
        // SAFETY: the buffer holds `sz` readable bytes (the socket_sendbuffer contract).
        BUFFER_RAWPOINTER => OutData::Copied(Bytes::copy_from_slice(unsafe {
            std::slice::from_raw_parts(b.buffer.cast::<u8>(), b.sz)
        })),
        _ => {
            tracing::warn!(
                socket = b.id,
                "socket send of a user object: not supported, refused"
            );
            return -1;
        }
    };
    match table::lock_id(b.id) {
        Some(mut k) => f(&mut k, data),
        None => -1,
    }
}

fn resolve(host: &str, port: u16) -> std::io::Result<SocketAddr> {
    (host, port).to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no address for {host}"),
        )
    })
}

fn any_host(host: Option<&str>) -> &str {
    match host {
        None | Some("") => "0.0.0.0",
        Some(h) => h,
    }
}

/// A listening socket on `addr` (bound and listening), as skynet makes it.
fn listen_on(addr: SocketAddr, backlog: c_int) -> std::io::Result<socket2::Socket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM.cloexec(),
        None,
    )?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog.max(1))?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Listen on `host:port` now (bind and listen); the listen-open CONNECT follows.
#[no_mangle]
pub extern "C" fn skynet_socket_listen(
    ctx: *mut SkynetContext,
    host: *const c_char,
    port: c_int,
    backlog: c_int,
) -> c_int {
    let Some((h, handle)) = caller(ctx) else {
        return -1;
    };
    let Ok(port) = u16::try_from(port) else {
        return -1;
    };
    let addr = match resolve(any_host(str_arg(host)), port) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(target: "skynet", error = %e, "socket listen: cannot resolve the address");
            return -1;
        }
    };
    let listener = match listen_on(addr, backlog) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(target: "skynet", %addr, error = %e, "socket listen failed");
            return -1;
        }
    };
    let local = listener.local_addr().ok().and_then(|a| a.as_socket());
    let Some(mut k) = table::alloc(
        &Origin::of(&h),
        Kind::Listen,
        listener.into_raw_fd(),
        handle,
        State::PListen,
    ) else {
        return -1;
    };
    // The listen-open CONNECT: the port as ud, the local IP as text.
    let (id, port, ip) = (
        k.id(),
        local.map_or(0, |a| i32::from(a.port())),
        local.map(|a| a.ip().to_string()).unwrap_or_default(),
    );
    k.emit(Event::text(ev::CONNECT, id, port, ip.as_bytes()));
    id
}

/// Connect to `host:port` later; CONNECT or ERROR follows. A host name is resolved on
/// the runtime's blocking pool (skynet resolves in its socket thread).
#[no_mangle]
pub extern "C" fn skynet_socket_connect(
    ctx: *mut SkynetContext,
    host: *const c_char,
    port: c_int,
) -> c_int {
    let Some((h, handle)) = caller(ctx) else {
        return -1;
    };
    let Some(host) = str_arg(host) else { return -1 };
    if host.len() >= 232 {
        return -1;
    }
    let Ok(port) = u16::try_from(port) else {
        return -1;
    };
    let Some(mut k) = table::alloc(&Origin::of(&h), Kind::Tcp, -1, handle, State::Connecting)
    else {
        return -1;
    };
    let id = k.id();
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        tcp::start_connect(&mut k, SocketAddr::new(ip, port));
        return id;
    }
    drop(k);
    let host = host.to_string();
    h.runtime.spawn_blocking(move || {
        let r = resolve(&host, port);
        let Some(mut k) = table::lock_id(id) else {
            return;
        };
        if k.s.state != State::Connecting {
            return;
        }
        match r {
            Ok(addr) => tcp::start_connect(&mut k, addr),
            Err(e) => tcp::connect_failed(&mut k, &e.to_string()),
        }
    });
    id
}

/// Wrap a descriptor the process already has (standard input, for skynet's console):
/// CONNECT "binding", then its input as DATA and its end as CLOSE (see `bind.rs`). -1
/// for a negative or unknown descriptor.
#[no_mangle]
pub extern "C" fn skynet_socket_bind(ctx: *mut SkynetContext, fd: c_int) -> c_int {
    use std::os::fd::BorrowedFd;
    let Some((h, handle)) = caller(ctx) else {
        return -1;
    };
    if fd < 0 {
        return -1;
    }
    // SAFETY: fcntl(F_GETFL) on any integer is harmless; it fails (EBADF) for a
    // descriptor the process does not have, which is checked before it is borrowed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        tracing::warn!(target: "skynet", fd, "socket bind: no such descriptor");
        return -1;
    }
    // SAFETY: `fd` is open (checked above) and stays open during this call: the process
    // never closes its own descriptors (skynet's closes none that it binds either).
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let owned = match borrowed.try_clone_to_owned() {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(target: "skynet", fd, error = %e, "socket bind: cannot duplicate the descriptor");
            return -1;
        }
    };
    // Non-blocking, as skynet makes it (the flag belongs to the open file, shared by the
    // duplicate and the original).
    // SAFETY: F_SETFL with the flags just read plus O_NONBLOCK on an open descriptor.
    unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    let Some(mut k) = table::alloc(
        &Origin::of(&h),
        Kind::Bind,
        owned.into_raw_fd(),
        handle,
        State::Connected,
    ) else {
        return -1;
    };
    let id = k.id();
    bind::open(&mut k);
    id
}

/// Start reading (accepting) and take the socket over; an unknown id gives the caller
/// ERROR "invalid socket".
#[no_mangle]
pub extern "C" fn skynet_socket_start(ctx: *mut SkynetContext, id: c_int) {
    let Some((h, handle)) = caller(ctx) else {
        return;
    };
    match table::lock_id(id) {
        Some(mut k) => match k.s.kind {
            Kind::Udp4 | Kind::Udp6 => udp::start(&mut k, handle),
            // A bound socket's owner stays; start only turns reading on.
            Kind::Bind => {
                k.set(flag::READING, true);
                k.sync();
            }
            _ => tcp::start(&mut k, handle),
        },
        None => events::post_now(&h, handle, Event::text(ev::ERROR, id, 0, b"invalid socket")),
    }
}

/// Stop reading.
#[no_mangle]
pub extern "C" fn skynet_socket_pause(_ctx: *mut SkynetContext, id: c_int) {
    if let Some(mut k) = table::lock_id(id) {
        k.set(flag::READING, false);
        k.sync();
    }
}

/// Graceful close: what is queued is still sent.
#[no_mangle]
pub extern "C" fn skynet_socket_close(_ctx: *mut SkynetContext, id: c_int) {
    if let Some(mut k) = table::lock_id(id) {
        match k.s.kind {
            Kind::Bind => bind::close(&mut k),
            Kind::Udp4 | Kind::Udp6 => k.force_close(true),
            _ => tcp::close(&mut k),
        }
    }
}

/// Forced close: what is queued is thrown away.
#[no_mangle]
pub extern "C" fn skynet_socket_shutdown(_ctx: *mut SkynetContext, id: c_int) {
    if let Some(mut k) = table::lock_id(id) {
        k.set(flag::CLOSING, true);
        k.force_close(true);
    }
}

/// TCP_NODELAY on.
#[no_mangle]
pub extern "C" fn skynet_socket_nodelay(_ctx: *mut SkynetContext, id: c_int) {
    if let Some(k) = table::lock_id(id) {
        tcp::nodelay(&k);
    }
}

fn send(b: *mut SocketSendBuffer, high: bool) -> c_int {
    with_buffer(b, |k, data| match k.s.kind {
        Kind::Bind => bind::send(k, data.as_slice()),
        Kind::Udp4 | Kind::Udp6 => udp::send(k, data.as_slice(), None),
        _ => tcp::send(k, data, high),
    })
}

/// High-priority send: 0, or -1 for an unknown or closing socket.
#[no_mangle]
pub extern "C" fn skynet_socket_sendbuffer(
    _ctx: *mut SkynetContext,
    b: *mut SocketSendBuffer,
) -> c_int {
    send(b, true)
}

/// Low-priority send: 0, or -1 for an unknown socket.
#[no_mangle]
pub extern "C" fn skynet_socket_sendbuffer_lowpriority(
    _ctx: *mut SkynetContext,
    b: *mut SocketSendBuffer,
) -> c_int {
    send(b, false)
}

/// A UDP socket, bound when an address or port is given.
#[no_mangle]
pub extern "C" fn skynet_socket_udp(
    ctx: *mut SkynetContext,
    addr: *const c_char,
    port: c_int,
) -> c_int {
    let Some((h, handle)) = caller(ctx) else {
        return -1;
    };
    let Ok(port) = u16::try_from(port) else {
        return -1;
    };
    let host = str_arg(addr);
    let bind = if port != 0 || host.is_some() {
        match resolve(any_host(host), port) {
            Ok(a) => a,
            Err(_) => return -1,
        }
    } else {
        SocketAddr::from(([0, 0, 0, 0], 0))
    };
    let sock = (|| -> std::io::Result<socket2::Socket> {
        let s = socket2::Socket::new(
            socket2::Domain::for_address(bind),
            socket2::Type::DGRAM.cloexec(),
            None,
        )?;
        s.set_reuse_address(true)?;
        s.bind(&bind.into())?;
        s.set_nonblocking(true)?;
        Ok(s)
    })();
    let sock = match sock {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(target: "skynet", %bind, error = %e, "udp socket failed");
            return -1;
        }
    };
    let kind = if bind.is_ipv6() {
        Kind::Udp6
    } else {
        Kind::Udp4
    };
    let Some(mut k) = table::alloc(
        &Origin::of(&h),
        kind,
        sock.into_raw_fd(),
        handle,
        State::Connected,
    ) else {
        return -1;
    };
    k.set(flag::READING, true);
    k.sync();
    k.id()
}

/// Set a UDP socket's default destination (resolved now).
#[no_mangle]
pub extern "C" fn skynet_socket_udp_connect(
    _ctx: *mut SkynetContext,
    id: c_int,
    addr: *const c_char,
    port: c_int,
) -> c_int {
    let (Some(host), Ok(port)) = (str_arg(addr), u16::try_from(port)) else {
        return -1;
    };
    let Ok(to) = resolve(host, port) else {
        return -1;
    };
    match table::lock_id(id) {
        Some(mut k) if k.s.kind.is_udp() => {
            udp::connect(&mut k, to);
            0
        }
        _ => -1,
    }
}

/// Send one datagram to `address` (skynet's 7- or 19-byte form).
#[no_mangle]
pub extern "C" fn skynet_socket_udp_sendbuffer(
    _ctx: *mut SkynetContext,
    address: *const c_char,
    b: *mut SocketSendBuffer,
) -> c_int {
    let to = (|| {
        if address.is_null() {
            return None;
        }
        // SAFETY: `address` points at an address of the form skynet's UDP messages
        // carry: its first byte says how long it is (7 or 19 bytes).
        let len = match unsafe { *address.cast::<u8>() } {
            1 => 7,
            2 => 19,
            _ => return None,
        };
        // SAFETY: as above, `len` bytes are readable.
        let raw = unsafe { std::slice::from_raw_parts(address.cast::<u8>(), len) };
        decode_udp_addr(raw)
    })();
    with_buffer(b, |k, data| match to {
        Some(to) if k.s.kind.is_udp() => udp::send(k, data.as_slice(), Some(to)),
        _ => -1,
    })
}

/// The sender's address of a UDP message (after its payload), with its size.
#[no_mangle]
pub extern "C" fn skynet_socket_udp_address(
    msg: *const c_void,
    addrsz: *mut c_int,
) -> *const c_char {
    let set = |n: c_int| {
        if !addrsz.is_null() {
            // SAFETY: a non-null out-parameter points at an int the caller owns.
            unsafe { *addrsz = n };
        }
    };
    set(0);
    if msg.is_null() {
        return std::ptr::null();
    }
    // SAFETY: `msg` is a `struct skynet_socket_message` (24 bytes) this layer sent.
    let (ty, ud, buffer) = unsafe {
        let p = msg.cast::<u8>();
        (
            p.cast::<i32>().read_unaligned(),
            p.add(8).cast::<i32>().read_unaligned(),
            p.add(16).cast::<*const u8>().read_unaligned(),
        )
    };
    if ty != ev::UDP || buffer.is_null() || ud < 0 {
        return std::ptr::null();
    }
    // SAFETY: a UDP message's buffer holds `ud` payload bytes then the address.
    let addr = unsafe { buffer.add(ud as usize) };
    // SAFETY: the address's first byte is inside the block.
    let n = match unsafe { *addr } {
        1 => 7,
        2 => 19,
        _ => return std::ptr::null(),
    };
    set(n);
    addr.cast()
}

/// Every listed socket (skynet's netstat), highest slot first; free it with
/// [`socket_info_release`].
#[no_mangle]
pub extern "C" fn skynet_socket_info() -> *mut SocketInfo {
    let mut head: *mut SocketInfo = std::ptr::null_mut();
    table::each(|k| {
        let s = &k.s;
        let kind = match (s.kind, s.state) {
            (Kind::Listen, State::Listen) => 1,
            (Kind::Tcp, State::Connected) => 2,
            (Kind::Tcp, State::HalfCloseRead | State::HalfCloseWrite) => 5,
            (Kind::Udp4 | Kind::Udp6, _) => 3,
            (Kind::Bind, State::Connected) => 4,
            (Kind::Bind, _) => 5,
            _ => return,
        };
        // The name as skynet gives it: the local address of a listener, the peer's of a
        // connection or a connected UDP socket.
        let addr = match s.kind {
            Kind::Listen => sys::with_sock(s.fd, |x| x.local_addr()).ok(),
            Kind::Tcp => sys::with_sock(s.fd, |x| x.peer_addr()).ok(),
            _ => None,
        };
        let text = addr
            .and_then(|a| a.as_socket())
            .or_else(|| s.extra.as_ref().and_then(|x| x.peer))
            .map(|a| a.to_string())
            .unwrap_or_default();
        let mut name = [0 as c_char; 128];
        for (d, b) in name.iter_mut().zip(text.bytes().take(127)) {
            *d = b as c_char;
        }
        let info = SocketInfo {
            id: s.id,
            kind,
            opaque: u64::from(s.owner),
            read: s.read,
            write: s.write,
            rtime: u64::from(s.rtime),
            wtime: u64::from(s.wtime),
            wbuffer: s.queued as i64,
            reading: u8::from(s.flags & flag::READING != 0),
            writing: u8::from(k.has_queue()),
            name,
            next: head,
        };
        // SAFETY: malloc of one SocketInfo; null is checked; the block is initialised by
        // the write before anyone reads it.
        let p = unsafe { libc::malloc(std::mem::size_of::<SocketInfo>()) }.cast::<SocketInfo>();
        if p.is_null() {
            return;
        }
        // SAFETY: `p` is a fresh, suitably aligned (malloc) block for one SocketInfo.
        unsafe { p.write(info) };
        head = p;
    });
    head
}

/// Free a list from [`skynet_socket_info`].
#[no_mangle]
pub extern "C" fn socket_info_release(mut si: *mut SocketInfo) {
    while !si.is_null() {
        // SAFETY: every node of the list was malloc'ed by skynet_socket_info and is
        // freed once, here.
        let next = unsafe { (*si).next };
        // SAFETY: as above.
        unsafe { libc::free(si.cast()) };
        si = next;
    }
}

/// The functions of this module, for [`crate::link_exports`].
pub(crate) fn exports() -> [*const c_void; 16] {
    [
        skynet_socket_sendbuffer as *const c_void,
        skynet_socket_sendbuffer_lowpriority as *const c_void,
        skynet_socket_listen as *const c_void,
        skynet_socket_connect as *const c_void,
        skynet_socket_bind as *const c_void,
        skynet_socket_close as *const c_void,
        skynet_socket_shutdown as *const c_void,
        skynet_socket_start as *const c_void,
        skynet_socket_pause as *const c_void,
        skynet_socket_nodelay as *const c_void,
        skynet_socket_udp as *const c_void,
        skynet_socket_udp_connect as *const c_void,
        skynet_socket_udp_sendbuffer as *const c_void,
        skynet_socket_udp_address as *const c_void,
        skynet_socket_info as *const c_void,
        socket_info_release as *const c_void,
    ]
}
