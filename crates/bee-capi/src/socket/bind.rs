//! Sockets over a descriptor the process already has (`skynet_socket_bind`): skynet's
//! `socket.stdin()`, with which its `console` service reads service names from standard
//! input. As in skynet: the owner gets CONNECT "binding" and reading starts at once;
//! input arrives as DATA, its end as CLOSE (the socket stays until closed, like a TCP
//! peer's EOF); sends are written to the descriptor; closing the socket never closes the
//! descriptor. The descriptor is made non-blocking, as skynet does, and watched by the
//! runtime (a duplicate of it, so the process's own stays open); one the runtime cannot
//! watch (a regular file, `/dev/null`: epoll refuses them, as skynet's does) gives the
//! owner an ERROR with the reason and the socket is freed.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use tokio::io::unix::AsyncFd;

use super::{ev, free, Cmd, CmdRx, Event, Shared, State};

/// Bytes read at most per DATA event.
const READ_CHUNK: usize = 64 * 1024;

/// Run a bound descriptor until it is closed.
pub(crate) async fn run_bind(sh: Arc<Shared>, fd: OwnedFd, mut rx: CmdRx) {
    // SAFETY: the File owns its descriptor (a duplicate made for this socket), which
    // stays open and the same until the AsyncFd, and the File inside it, is dropped.
    let fd = match unsafe { AsyncFd::register(File::from(fd)) } {
        Ok(fd) => fd,
        Err(e) => {
            free(&sh);
            let why = format!(
                "cannot watch the bound descriptor: {}",
                std::io::Error::from(e)
            );
            sh.emit(Event::text(ev::ERROR, sh.id, 0, why.as_bytes()))
                .await;
            return;
        }
    };
    sh.emit(Event::text(ev::CONNECT, sh.id, 0, b"binding"))
        .await;
    let mut reading = true;
    sh.set_reading(true);
    let mut out: VecDeque<Bytes> = VecDeque::new();
    let mut closing = false;
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let want_read = reading && !closing && sh.state() == State::Connected;
        let want_write = !out.is_empty();
        tokio::select! {
            biased;
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                match cmd {
                    // A bound socket's owner stays; start only turns reading on.
                    Cmd::Start(_) => {
                        reading = true;
                        sh.set_reading(true);
                    }
                    Cmd::Pause => {
                        reading = false;
                        sh.set_reading(false);
                    }
                    Cmd::Send { data, .. } => {
                        if closing {
                            sh.unqueue(data.len());
                        } else {
                            out.push_back(data);
                            sh.set_writing(true);
                        }
                    }
                    Cmd::SendTo { data, .. } => sh.unqueue(data.len()),
                    Cmd::Nodelay | Cmd::UdpConnect(_) => {}
                    // What is queued is still written; CLOSE now, as for TCP.
                    Cmd::Close if !out.is_empty() => {
                        closing = true;
                        sh.set_reading(false);
                        if sh.state() != State::HalfCloseRead {
                            sh.set_state(State::HalfCloseRead);
                            sh.emit(Event::plain(ev::CLOSE, sh.id, 0)).await;
                        }
                    }
                    Cmd::Close | Cmd::Shutdown => break,
                    Cmd::Overflow(why) => {
                        sh.emit(Event::text(ev::ERROR, sh.id, 0, why.as_bytes())).await;
                        break;
                    }
                }
            }
            r = fd.writable(), if want_write => match r {
                Ok(mut guard) => {
                    let Some(front) = out.front_mut() else { continue };
                    match guard.try_io(|f| f.get_ref().write(front)) {
                        Ok(Ok(n)) => {
                            sh.count_write(n);
                            sh.unqueue(n);
                            front.advance(n);
                            if front.is_empty() {
                                out.pop_front();
                            }
                            if out.is_empty() {
                                sh.set_writing(false);
                                if closing {
                                    break;
                                }
                            }
                        }
                        Ok(Err(e)) if e.kind() == ErrorKind::Interrupted => {}
                        Ok(Err(e)) => {
                            sh.emit(Event::text(ev::ERROR, sh.id, 0, e.to_string().as_bytes())).await;
                            break;
                        }
                        Err(_would_block) => {}
                    }
                }
                Err(e) => {
                    sh.emit(Event::text(ev::ERROR, sh.id, 0, e.to_string().as_bytes())).await;
                    break;
                }
            },
            r = fd.readable(), if want_read => match r {
                Ok(mut guard) => match guard.try_io(|f| f.get_ref().read(&mut buf)) {
                    Ok(Ok(0)) => {
                        // End of input: CLOSE; the socket stays until its owner closes it.
                        sh.set_state(State::HalfCloseRead);
                        sh.set_reading(false);
                        sh.emit(Event::plain(ev::CLOSE, sh.id, 0)).await;
                    }
                    Ok(Ok(n)) => {
                        sh.count_read(n);
                        if let Some(e) = Event::data(ev::DATA, sh.id, n as i32, &buf[..n]) {
                            sh.emit(e).await;
                        }
                    }
                    Ok(Err(e)) if e.kind() == ErrorKind::Interrupted => {}
                    Ok(Err(e)) => {
                        // As a TCP read error: ERROR, reading stops, the socket stays.
                        reading = false;
                        sh.set_reading(false);
                        sh.emit(Event::text(ev::ERROR, sh.id, 0, e.to_string().as_bytes())).await;
                    }
                    Err(_would_block) => {}
                },
                Err(e) => {
                    reading = false;
                    sh.set_reading(false);
                    sh.emit(Event::text(ev::ERROR, sh.id, 0, e.to_string().as_bytes())).await;
                }
            },
        }
    }
    let left: usize = out.iter().map(Bytes::len).sum();
    sh.unqueue(left);
    free(&sh);
    // At most one CLOSE: none if end of input or a close with output pending sent it.
    if sh.state() != State::HalfCloseRead {
        sh.emit(Event::plain(ev::CLOSE, sh.id, 0)).await;
    }
}
