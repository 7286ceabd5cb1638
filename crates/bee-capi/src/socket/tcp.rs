//! The tasks behind TCP sockets: a listener (PLISTEN → LISTEN, one ACCEPT per accepted
//! connection), an outgoing connect, and a connection (reads while started, the high and
//! low priority write queues, the send-buffer warning, close/shutdown/half-close).

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::Shutdown;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::net::{TcpListener, TcpStream};

use super::{alloc, emit_to, ev, free, Cmd, CmdRx, Event, Kind, Origin, Shared, State};

/// How long an outgoing connect may take before it fails with an ERROR.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The first read size and the largest (skynet doubles from 64 with no cap; the kernel's
/// receive buffer caps it in practice).
const MIN_READ: usize = 64;
const MAX_READ: usize = 64 * 1024;
thread_local! {
    /// Each runtime thread's read buffer, [`MAX_READ`] bytes: a read copies what it got
    /// into the owner's block at once, so one buffer per thread serves every connection.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; MAX_READ]);
}
/// The send-buffer warning starts at 1 MiB.
const WARN_START: usize = 1 << 20;

/// A listener: the listen-open CONNECT (ud = port, text = local IP), then accepts once
/// started.
pub(crate) async fn run_listener(
    sh: Arc<Shared>,
    listener: TcpListener,
    mut rx: CmdRx,
    origin: Origin,
) {
    match listener.local_addr() {
        Ok(a) => {
            sh.set_name(a.to_string());
            sh.emit(Event::text(
                ev::CONNECT,
                sh.id,
                i32::from(a.port()),
                a.ip().to_string().as_bytes(),
            ))
            .await
        }
        Err(e) => {
            sh.emit(Event::text(ev::ERROR, sh.id, 0, e.to_string().as_bytes()))
                .await
        }
    }
    let mut reading = false;
    loop {
        tokio::select! {
            biased;
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                match cmd {
                    Cmd::Start(caller) => {
                        reading = true;
                        sh.set_reading(true);
                        if sh.state() == State::PListen {
                            sh.set_state(State::Listen);
                            sh.set_owner(caller);
                            sh.emit(Event::text(ev::CONNECT, sh.id, 0, b"start")).await;
                        }
                    }
                    Cmd::Pause => {
                        reading = false;
                        sh.set_reading(false);
                    }
                    Cmd::Close | Cmd::Shutdown | Cmd::Overflow(_) => {
                        free(&sh);
                        sh.emit(Event::plain(ev::CLOSE, sh.id, 0)).await;
                        return;
                    }
                    Cmd::Send { data, .. } | Cmd::SendTo { data, .. } => {
                        sh.unqueue(data.len());
                        tracing::warn!(target: "skynet", socket = sh.id, "socket-server: write to listen fd {}", sh.id);
                    }
                    Cmd::Nodelay | Cmd::UdpConnect(_) => {}
                }
            }
            r = listener.accept(), if reading => match r {
                Ok((stream, peer)) => accept(&sh, stream, peer, &origin).await,
                Err(e) => {
                    // Out of descriptors and the like: tell the owner, slow down a little.
                    tracing::warn!(socket = sh.id, error = %e, "accept failed");
                    sh.emit(Event::text(ev::ERROR, sh.id, 0, e.to_string().as_bytes())).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    free(&sh);
}

async fn accept(sh: &Arc<Shared>, stream: TcpStream, peer: std::net::SocketAddr, origin: &Origin) {
    let owner = sh.owner();
    // No free slot or over the limit: the connection is closed quietly, as skynet.
    let Some(new) = alloc(origin, Kind::Tcp, owner, State::PAccept) else {
        return;
    };
    let _ = socket2::SockRef::from(&stream).set_keepalive(true);
    sh.count_accept();
    let id = new.shared.id;
    new.shared.set_name(peer.to_string());
    let text = format!("{}:{}", peer.ip(), peer.port());
    tokio::spawn(run_conn(new.shared, stream, new.rx, false));
    emit_to(
        &sh.node,
        owner,
        Event::text(ev::ACCEPT, sh.id, id, text.as_bytes()),
    )
    .await;
}

/// An outgoing connection: resolve, connect (CONNECT with the peer's IP, or ERROR and the
/// slot is freed), then run it.
pub(crate) async fn run_connect(sh: Arc<Shared>, host: String, port: u16, rx: CmdRx) {
    let r = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port))).await;
    let stream = match r {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            free(&sh);
            sh.emit(Event::text(ev::ERROR, sh.id, 0, e.to_string().as_bytes()))
                .await;
            return;
        }
        Err(_) => {
            free(&sh);
            sh.emit(Event::text(ev::ERROR, sh.id, 0, b"Connection timed out"))
                .await;
            return;
        }
    };
    let _ = socket2::SockRef::from(&stream).set_keepalive(true);
    let peer = stream.peer_addr().ok();
    sh.set_name(peer.map(|p| p.to_string()).unwrap_or_default());
    sh.set_state(State::Connected);
    let ip = peer.map(|p| p.ip().to_string()).unwrap_or_default();
    sh.emit(Event::text(ev::CONNECT, sh.id, 0, ip.as_bytes()))
        .await;
    run_conn(sh, stream, rx, true).await;
}

/// The write side of a connection: skynet's two lists.
#[derive(Default)]
struct Queues {
    high: VecDeque<Bytes>,
    low: VecDeque<Bytes>,
}

impl Queues {
    fn is_empty(&self) -> bool {
        self.high.is_empty() && self.low.is_empty()
    }
    fn clear(&mut self, sh: &Shared) {
        let n: usize = self
            .high
            .iter()
            .chain(self.low.iter())
            .map(Bytes::len)
            .sum();
        self.high.clear();
        self.low.clear();
        sh.unqueue(n);
    }
}

/// What the connection does next.
enum Next {
    Go,
    /// The socket is closed and freed.
    Exit,
}

struct Conn {
    sh: Arc<Shared>,
    stream: TcpStream,
    q: Queues,
    reading: bool,
    closing: bool,
    warn_level: usize,
    read_size: usize,
}

/// A connected (or accepted, not yet started) socket until it is closed.
pub(crate) async fn run_conn(sh: Arc<Shared>, stream: TcpStream, mut rx: CmdRx, reading: bool) {
    sh.set_reading(reading);
    let mut c = Conn {
        sh,
        stream,
        q: Queues::default(),
        reading,
        closing: false,
        warn_level: 0,
        read_size: MIN_READ,
    };
    loop {
        let st = c.sh.state();
        let want_read = c.reading && !c.closing && st != State::HalfCloseRead;
        let want_write = !c.q.is_empty() && st != State::HalfCloseWrite;
        let next = tokio::select! {
            biased;
            cmd = rx.recv() => match cmd {
                Some(cmd) => c.command(cmd).await,
                None => Next::Exit,
            },
            r = c.stream.writable(), if want_write => match r {
                Ok(()) => c.flush().await,
                Err(e) => c.write_error(e).await,
            },
            r = c.stream.readable(), if want_read => match r {
                Ok(()) => c.read().await,
                Err(e) => c.read_error(e).await,
            },
        };
        if let Next::Exit = next {
            break;
        }
    }
    free(&c.sh);
}

impl Conn {
    async fn command(&mut self, cmd: Cmd) -> Next {
        let sh = self.sh.clone();
        match cmd {
            Cmd::Start(caller) => match sh.state() {
                State::HalfCloseRead => {
                    emit_to(
                        &sh.node,
                        caller,
                        Event::text(ev::ERROR, sh.id, 0, b"socket closed"),
                    )
                    .await;
                }
                State::PAccept => {
                    self.set_reading(true);
                    sh.set_state(State::Connected);
                    sh.set_owner(caller);
                    sh.emit(Event::text(ev::CONNECT, sh.id, 0, b"start")).await;
                }
                State::Connected => {
                    self.set_reading(true);
                    sh.set_owner(caller);
                    sh.emit(Event::text(ev::CONNECT, sh.id, 0, b"transfer"))
                        .await;
                }
                _ => self.set_reading(true),
            },
            Cmd::Pause => self.set_reading(false),
            Cmd::Nodelay => {
                let _ = self.stream.set_nodelay(true);
            }
            Cmd::Send { data, high } => {
                let st = sh.state();
                if matches!(st, State::PAccept | State::HalfCloseWrite) || self.closing {
                    sh.unqueue(data.len());
                    return Next::Go;
                }
                if self.q.is_empty() || high {
                    self.q.high.push_back(data);
                } else {
                    self.q.low.push_back(data);
                }
                sh.set_writing(true);
                self.check_warning().await;
            }
            Cmd::SendTo { data, .. } => sh.unqueue(data.len()),
            Cmd::UdpConnect(_) => {}
            Cmd::Close => {
                if self.q.is_empty() || sh.state() == State::HalfCloseWrite {
                    return self.force_close(true).await;
                }
                self.closing = true;
                if sh.state() != State::HalfCloseRead {
                    sh.set_state(State::HalfCloseRead);
                    self.set_reading(false);
                    let _ = socket2::SockRef::from(&self.stream).shutdown(Shutdown::Read);
                    sh.emit(Event::plain(ev::CLOSE, sh.id, 0)).await;
                }
            }
            Cmd::Shutdown => return self.force_close(true).await,
            Cmd::Overflow(why) => {
                sh.emit(Event::text(ev::ERROR, sh.id, 0, why.as_bytes()))
                    .await;
                return self.force_close(true).await;
            }
        }
        Next::Go
    }

    fn set_reading(&mut self, on: bool) {
        self.reading = on;
        self.sh.set_reading(on);
    }

    /// Close now, throwing away what is queued; CLOSE unless one was sent already.
    async fn force_close(&mut self, event: bool) -> Next {
        let sh = self.sh.clone();
        let already = sh.state() == State::HalfCloseRead;
        self.q.clear(&sh);
        free(&sh);
        if event && !already {
            sh.emit(Event::plain(ev::CLOSE, sh.id, 0)).await;
        }
        Next::Exit
    }

    async fn read(&mut self) -> Next {
        let want = self.read_size;
        let id = self.sh.id;
        // Read into this thread's scratch buffer and copy what came into the block the
        // owner receives: an idle connection holds no read buffer of its own.
        let r = SCRATCH.with_borrow_mut(|buf| {
            self.stream.try_read(&mut buf[..want]).map(|n| {
                (
                    n,
                    (n > 0).then(|| Event::data(ev::DATA, id, n as i32, &buf[..n])),
                )
            })
        });
        match r {
            Ok((0, _)) => self.eof().await,
            Ok((n, event)) => {
                if n == want {
                    self.read_size = (self.read_size * 2).min(MAX_READ);
                } else if self.read_size > MIN_READ && n * 2 < want {
                    self.read_size /= 2;
                }
                self.sh.count_read(n);
                if let Some(Some(e)) = event {
                    self.sh.clone().emit(e).await;
                }
                Next::Go
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                Next::Go
            }
            Err(e) => self.read_error(e).await,
        }
    }

    async fn eof(&mut self) -> Next {
        let sh = self.sh.clone();
        if self.closing {
            self.set_reading(false);
            if self.q.is_empty() {
                return self.force_close(false).await;
            }
            return Next::Go;
        }
        match sh.state() {
            State::HalfCloseRead => Next::Go,
            State::HalfCloseWrite => self.force_close(true).await,
            _ => {
                sh.set_state(State::HalfCloseRead);
                self.set_reading(false);
                sh.emit(Event::plain(ev::CLOSE, sh.id, 0)).await;
                Next::Go
            }
        }
    }

    /// A read error: ERROR, the slot stays (skynet's Lua answers with shutdown). Reading
    /// stops so a broken socket does not spin.
    async fn read_error(&mut self, e: std::io::Error) -> Next {
        self.set_reading(false);
        let sh = self.sh.clone();
        sh.emit(Event::text(ev::ERROR, sh.id, 0, e.to_string().as_bytes()))
            .await;
        Next::Go
    }

    async fn write_error(&mut self, e: std::io::Error) -> Next {
        let sh = self.sh.clone();
        if self.closing || sh.state() == State::HalfCloseRead {
            return self.force_close(false).await;
        }
        if sh.state() == State::HalfCloseWrite {
            return Next::Go;
        }
        sh.set_state(State::HalfCloseWrite);
        let _ = socket2::SockRef::from(&self.stream).shutdown(Shutdown::Write);
        self.q.clear(&sh);
        sh.set_writing(false);
        sh.emit(Event::text(ev::ERROR, sh.id, 0, e.to_string().as_bytes()))
            .await;
        Next::Go
    }

    /// Write the high list, then the low one; a partly written low buffer moves to the
    /// high list so it finishes before anything else.
    async fn flush(&mut self) -> Next {
        loop {
            let from_low = self.q.high.is_empty();
            let front = if from_low {
                self.q.low.front_mut()
            } else {
                self.q.high.front_mut()
            };
            let Some(front) = front else { break };
            match self.stream.try_write(front) {
                Ok(n) => {
                    self.sh.count_write(n);
                    self.sh.unqueue(n);
                    if n < front.len() {
                        front.advance(n);
                        if from_low {
                            if let Some(b) = self.q.low.pop_front() {
                                self.q.high.push_back(b);
                            }
                        }
                        return Next::Go;
                    }
                    if from_low {
                        self.q.low.pop_front();
                    } else {
                        self.q.high.pop_front();
                    }
                }
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted =>
                {
                    return Next::Go;
                }
                Err(e) => return self.write_error(e).await,
            }
        }
        // Drained.
        self.sh.set_writing(false);
        if self.closing {
            return self.force_close(false).await;
        }
        if self.warn_level > 0 {
            self.warn_level = 0;
            let sh = self.sh.clone();
            sh.emit(Event::plain(ev::WARNING, sh.id, 0)).await;
        }
        Next::Go
    }

    async fn check_warning(&mut self) {
        let size = self.sh.queued();
        if size >= WARN_START && size >= self.warn_level {
            self.warn_level = if self.warn_level == 0 {
                WARN_START * 2
            } else {
                self.warn_level * 2
            };
            let kib = size.div_ceil(1024);
            let sh = self.sh.clone();
            sh.emit(Event::plain(
                ev::WARNING,
                sh.id,
                i32::try_from(kib).unwrap_or(i32::MAX),
            ))
            .await;
        }
    }
}

/// A [`Kind::Listen`] or [`Kind::Tcp`] socket's state check for a send: false when a
/// high-priority send must be refused.
pub(crate) fn accepts_high(sh: &Shared) -> bool {
    !sh.closing.load(std::sync::atomic::Ordering::Acquire)
}
