//! The few system calls the socket layer makes on raw descriptors it owns: read, write
//! (sends never raise SIGPIPE), close.

use std::io;
use std::os::fd::RawFd;

fn result(n: isize) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// read(2) into `buf`.
pub(crate) fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is writable for its length; a bad descriptor only makes read fail.
    result(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })
}

/// send(2) on a socket, without SIGPIPE for a peer that has gone.
pub(crate) fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is readable for its length; a bad descriptor only makes send fail.
    result(unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) })
}

/// write(2) on any descriptor (a bound one need not be a socket).
pub(crate) fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is readable for its length; a bad descriptor only makes write fail.
    result(unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) })
}

/// close(2) of a descriptor this layer owns (negative: none).
pub(crate) fn close(fd: RawFd) {
    if fd >= 0 {
        // SAFETY: the socket layer owns `fd` (it came from a socket it made, an accept or
        // a duplicate) and closes it once, when its slot is freed.
        unsafe { libc::close(fd) };
    }
}

/// Whether an error means "try again later".
pub(crate) fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// `f` with a socket2 view of a descriptor this layer owns, for option and address calls.
pub(crate) fn with_sock<R>(fd: RawFd, f: impl FnOnce(socket2::SockRef<'_>) -> R) -> R {
    // SAFETY: `fd` is an open descriptor owned by a slot whose lock the caller holds, so
    // it is not closed while `f` runs.
    let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    f(socket2::SockRef::from(&b))
}
