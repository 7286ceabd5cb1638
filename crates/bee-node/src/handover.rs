//! Hot update in place: `bee run CONFIG --takeover` starts the node's new version beside
//! the running one, which hands it the listening socket and its services' state.
//!
//! Every running node listens on a Unix control socket (`handover_socket` in the node
//! config; default `<config dir>/<name>.handover.sock`). The new process checks its
//! config and starts, then, on that socket (`docs/hot-update.md` has the whole story):
//!
//! 1. new → old: `bee-handover 1 pid=PID\n` (1 is this protocol's version).
//! 2. old → new: `listeners N incarnation=INC\n` with the N listening sockets attached
//!    (`SCM_RIGHTS`). From here the new process holds the sockets and serves peers that
//!    connect at once, their requests held until step 6 — they are never refused.
//! 3. The old process drains ([`bee_cluster::drain`]): it stops accepting (closes its own
//!    descriptors), tells its bee peers `goaway`, hands off the connections of the others
//!    once what they sent is answered, delivers what is in its mailboxes and flushes its
//!    queues. Then it exports each service's state.
//! 4. old → new: `state K\n`, then K times `KEYLEN STATELEN\n` + key + state bytes, then
//!    `done SUMMARY\n`.
//! 5. new → old: `connections?\n`; old → new: `connections M\n`, then M times
//!    `LOCAL PEER LEN\n` + LEN bytes: the connections of stock skynet peers (which
//!    cannot be told `goaway`) that the old process handed off during its drain, each
//!    with the listener address it came in on, its peer, and the bytes read from it
//!    but not taken. new → old: `fds\n`; old → new: the M sockets, in that order, in
//!    messages of one byte (`F`) carrying at most [`FDS_PER_MESSAGE`] each. The new
//!    process serves them on its listeners: the peer's connection never closed. Then the
//!    old process exits.
//! 6. The new process gives each service its state, then delivers what its listeners
//!    held (it has served the sockets since step 2, delivery held).
//!
//! Why descriptor passing and not `SO_REUSEPORT`: with two reuseport sockets the kernel
//! splits new connections between them, and the ones queued on the old socket when it
//! closes are reset. One socket handed over keeps one queue; nothing is lost.
//!
//! A new version that cannot start (bad config, missing module) fails before step 1, or
//! before it receives anything in step 2: the old process never stops serving.

use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use bee_cluster::drain::DrainReport;
use bee_cluster::Cluster;
use bee_runtime::Node;
use bee_transport::HandedConnection;
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::sync::mpsc;

use crate::config::NodeConfig;

/// The handover protocol's version; both processes must speak the same.
pub const VERSION: u32 = 1;

/// Services' states by [`bee_runtime::service::ServiceInfo::state_key`].
pub type States = Vec<(String, Vec<u8>)>;

/// Most listening sockets one node hands over.
const MAX_SOCKETS: usize = 8;

/// Sockets per message in step 5 (the kernel takes at most 253 per message).
pub const FDS_PER_MESSAGE: usize = 200;

/// Most bytes one handed-over connection may bring that were read but not taken (a
/// connection's read buffer holds far less).
const MAX_BUFFERED: usize = 16 * 1024 * 1024;

/// How long the old process waits for its successor to ask for the connections.
const CONNECTIONS_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest a service may take to export or import its state.
const STATE_TIMEOUT: Duration = Duration::from_secs(10);

/// The control socket of the node `cfg` describes.
pub fn socket_path(cfg: &NodeConfig) -> PathBuf {
    match &cfg.handover_socket {
        Some(p) if p.is_absolute() => p.clone(),
        Some(p) => cfg.dir.join(p),
        None => cfg.dir.join(format!("{}.handover.sock", cfg.name)),
    }
}

/// The running side: the control socket, and the successors knocking on it.
pub struct Server {
    path: PathBuf,
    requests: mpsc::Receiver<UnixStream>,
}

impl Server {
    /// Listen on `path`. Refuses when a running process of this node answers there
    /// (start the new version with `--takeover` instead); a stale file is replaced.
    pub fn listen(path: &Path) -> Result<Server> {
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                bail!(
                    "a process of this node already runs (its handover socket {} answers): stop it, or start this one with --takeover",
                    path.display()
                );
            }
            std::fs::remove_file(path).with_context(|| {
                format!("cannot remove the stale handover socket {}", path.display())
            })?;
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("cannot listen on the handover socket {}", path.display()))?;
        let (tx, rx) = mpsc::channel(1);
        std::thread::Builder::new()
            .name("bee-handover".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    match stream {
                        Ok(s) => {
                            if tx.blocking_send(s).is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "handover socket accept failed"),
                    }
                }
            })
            .context("cannot start the handover thread")?;
        Ok(Server {
            path: path.to_path_buf(),
            requests: rx,
        })
    }

    /// Listen on `path` for this node's successors, replacing the socket file of the
    /// process this one took over from (it is on its way out).
    pub fn listen_replacing(path: &Path) -> Result<Server> {
        let _ = std::fs::remove_file(path);
        Self::listen(path)
    }

    /// The next successor asking to take over.
    pub async fn next(&mut self) -> Option<UnixStream> {
        self.requests.recv().await
    }

    /// The control socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What the old process did for its successor.
pub struct Given {
    /// The successor's pid, as it said.
    pub pid: String,
    /// The drain.
    pub drain: DrainReport,
    /// Services whose state was handed over.
    pub states: usize,
    /// From the first byte of the request to the last byte of state.
    pub took: Duration,
    /// Connections of stock skynet peers handed to the successor (step 5).
    pub connections: usize,
    /// What went wrong after the sockets left (the node is drained and stops anyway).
    pub errors: Vec<String>,
}

/// Old side: hand the node over to the process on `stream` (steps 1–4), draining within
/// `deadline`. An error means the sockets did not leave and the node keeps serving; once
/// they left, the node is drained and must stop (later trouble is in [`Given::errors`]).
pub async fn give(
    stream: UnixStream,
    cluster: &Cluster,
    node: &Node,
    deadline: Duration,
) -> Result<Given> {
    let t0 = Instant::now();
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut hello = String::new();
    reader
        .read_line(&mut hello)
        .context("the successor said nothing")?;
    let pid = parse_hello(&hello)?;
    let sockets = cluster.listening_sockets();
    if sockets.is_empty() {
        bail!("this node has no listening socket to hand over");
    }
    let line = format!(
        "listeners {} incarnation={}\n",
        sockets.len(),
        cluster.incarnation()
    );
    let fds: Vec<_> = sockets.iter().map(|(_, fd)| fd.as_fd()).collect();
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        bail!("too many listening sockets to hand over ({})", fds.len());
    }
    let sent = sendmsg(
        &stream,
        &[IoSlice::new(line.as_bytes())],
        &mut control,
        SendFlags::empty(),
    )
    .context("cannot hand the listening sockets over")?;
    if sent < line.len() {
        (&stream).write_all(&line.as_bytes()[sent..])?;
    }
    drop(sockets);
    tracing::info!(successor = %pid, addrs = ?cluster.listening(), "listening sockets handed over; draining");
    let mut errors = Vec::new();
    let drain = match cluster.drain_for_successor(deadline).await {
        Ok(d) => d,
        Err(e) => {
            errors.push(format!("drain: {e}"));
            DrainReport::default()
        }
    };
    let states = node.export_states(STATE_TIMEOUT).await;
    // A connection still handing off waits for an answer a service was computing when
    // the drain went quiet: it comes before the state export is answered, so this
    // wait is short; bounded all the same.
    let until = Instant::now()
        + deadline
            .saturating_sub(t0.elapsed())
            .max(Duration::from_secs(1));
    while cluster.handing_off() > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if cluster.handing_off() > 0 {
        errors.push(format!(
            "{} connections of stock skynet peers were still answering at the deadline (they are closed)",
            cluster.handing_off()
        ));
    }
    let mut out = Vec::new();
    out.extend_from_slice(format!("state {}\n", states.len()).as_bytes());
    for (key, state) in &states {
        out.extend_from_slice(format!("{} {}\n", key.len(), state.len()).as_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(state);
    }
    out.extend_from_slice(format!("done {drain}\n").as_bytes());
    let written = stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .and_then(|()| (&stream).write_all(&out));
    if let Err(e) = written {
        errors.push(format!(
            "cannot send the services' state to the successor (it starts fresh): {e}"
        ));
    }
    let handed = cluster.handed_connections();
    let connections = handed.len();
    match give_connections(&stream, &mut reader, handed) {
        // A successor without step 5 does not ask; with nothing to give, nothing is lost.
        Err(_) if connections == 0 => {}
        Err(e) => errors.push(format!(
            "cannot hand {connections} connections of stock skynet peers to the successor (they are closed): {e:#}"
        )),
        Ok(()) => {}
    }
    Ok(Given {
        pid,
        drain,
        states: states.len(),
        connections,
        took: t0.elapsed(),
        errors,
    })
}

/// Step 5, old side: wait for the successor to ask, then send the connections handed
/// off during the drain. Ours are closed when this returns (the successor holds its
/// own descriptors of them by then, or they are lost and closed).
fn give_connections(
    stream: &UnixStream,
    reader: &mut BufReader<UnixStream>,
    handed: Vec<(std::net::SocketAddr, HandedConnection)>,
) -> Result<()> {
    reader
        .get_ref()
        .set_read_timeout(Some(CONNECTIONS_TIMEOUT))?;
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .context("the successor did not ask for the connections")?;
    if line.trim_end() != "connections?" {
        bail!(
            "the successor did not ask for the connections: {:?}",
            line.trim_end()
        );
    }
    let mut out = format!("connections {}\n", handed.len()).into_bytes();
    for (local, c) in &handed {
        out.extend_from_slice(format!("{local} {} {}\n", c.peer, c.buffered.len()).as_bytes());
        out.extend_from_slice(&c.buffered);
    }
    let mut w = stream;
    w.write_all(&out)?;
    if handed.is_empty() {
        return Ok(());
    }
    line.clear();
    reader
        .read_line(&mut line)
        .context("the successor did not ask for the sockets")?;
    if line.trim_end() != "fds" {
        bail!(
            "the successor did not ask for the sockets: {:?}",
            line.trim_end()
        );
    }
    for chunk in handed.chunks(FDS_PER_MESSAGE) {
        let fds: Vec<_> = chunk.iter().map(|(_, c)| c.stream.as_fd()).collect();
        let mut space =
            vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            bail!("cannot attach {} sockets to one message", fds.len());
        }
        let sent = sendmsg(
            stream,
            &[IoSlice::new(b"F")],
            &mut control,
            SendFlags::empty(),
        )
        .context("cannot send the sockets")?;
        if sent != 1 {
            bail!("the sockets' message was not sent");
        }
    }
    Ok(())
}

fn parse_hello(line: &str) -> Result<String> {
    let mut words = line.split_whitespace();
    if words.next() != Some("bee-handover") {
        bail!("not a handover request: {:?}", line.trim_end());
    }
    let version: u32 = words
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("handover request without a version: {:?}", line.trim_end()))?;
    if version != VERSION {
        bail!("the successor speaks handover protocol {version}, this process {VERSION}");
    }
    Ok(words
        .next()
        .and_then(|w| w.strip_prefix("pid="))
        .unwrap_or("?")
        .to_string())
}

/// New side, after step 2: the sockets, and the way to the old process's state.
pub struct Taken {
    /// The listening sockets, as the old process had them.
    pub listeners: Vec<std::net::TcpListener>,
    /// The old process's incarnation.
    pub predecessor: u64,
    reader: BufReader<UnixStream>,
}

/// New side: ask the process listening on `path` for its sockets (steps 1–2).
pub fn take(path: &Path) -> Result<Taken> {
    let stream = UnixStream::connect(path).with_context(|| {
        format!(
            "--takeover: no running process of this node answers on {}",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    (&stream)
        .write_all(format!("bee-handover {VERSION} pid={}\n", std::process::id()).as_bytes())?;
    let mut buf = [0u8; 256];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = recvmsg(
        &stream,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .context("--takeover: the running process did not answer")?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = msg {
            fds.extend(rights);
        }
    }
    let mut line = buf[..got.bytes].to_vec();
    let mut reader = BufReader::new(stream);
    if !line.ends_with(b"\n") {
        let mut rest = Vec::new();
        reader.read_until(b'\n', &mut rest)?;
        line.extend_from_slice(&rest);
    }
    let line = String::from_utf8_lossy(&line).to_string();
    let mut words = line.split_whitespace();
    if words.next() != Some("listeners") {
        bail!(
            "--takeover: the running process refused: {:?}",
            line.trim_end()
        );
    }
    let n: usize = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    if n == 0 || n != fds.len() {
        bail!(
            "--takeover: expected {n} listening sockets, received {}",
            fds.len()
        );
    }
    let predecessor = words
        .next()
        .and_then(|w| w.strip_prefix("incarnation="))
        .and_then(|i| i.parse().ok())
        .unwrap_or(0);
    Ok(Taken {
        listeners: fds.into_iter().map(std::net::TcpListener::from).collect(),
        predecessor,
        reader,
    })
}

/// A connection the old process handed over (step 5), with the address of the listener
/// it came in on.
pub type Adopted = (std::net::SocketAddr, HandedConnection);

impl Taken {
    /// Wait (at most `within`) for the old process to drain and send its services'
    /// state (steps 3–4): the states, and its summary line. Then ask for its stock
    /// skynet peers' connections (step 5); an old process that does not give them (a
    /// version without step 5, or trouble) gives none, and that is in the third item.
    pub fn state(mut self, within: Duration) -> Result<(States, String, Result<Vec<Adopted>>)> {
        let (states, done) = self.read_state(within)?;
        let connections = self.connections();
        Ok((states, done, connections))
    }

    /// Step 5, new side.
    fn connections(&mut self) -> Result<Vec<Adopted>> {
        let r = &mut self.reader;
        r.get_ref()
            .set_read_timeout(Some(Duration::from_secs(10)))?;
        r.get_ref().write_all(b"connections?\n")?;
        let mut line = String::new();
        r.read_line(&mut line)
            .context("the old process did not answer `connections?`")?;
        let m: usize = line
            .strip_prefix("connections ")
            .and_then(|m| m.trim().parse().ok())
            .ok_or_else(|| anyhow!("expected `connections M`, got {:?}", line.trim_end()))?;
        let mut meta = Vec::with_capacity(m.min(1024));
        for _ in 0..m {
            line.clear();
            r.read_line(&mut line)?;
            let mut it = line.split_whitespace();
            let (Some(local), Some(peer), Some(len)) = (it.next(), it.next(), it.next()) else {
                bail!("bad connection header {:?}", line.trim_end());
            };
            let local: std::net::SocketAddr = local.parse().context("connection header")?;
            let peer: std::net::SocketAddr = peer.parse().context("connection header")?;
            let len: usize = len.parse().context("connection header")?;
            if len > MAX_BUFFERED {
                bail!(
                    "bad connection header {:?}: more buffered bytes than a connection holds",
                    line.trim_end()
                );
            }
            let mut buffered = vec![0; len];
            r.read_exact(&mut buffered)?;
            meta.push((local, peer, bytes::Bytes::from(buffered)));
        }
        if m == 0 {
            return Ok(Vec::new());
        }
        // Nothing more was sent before this request, so the reader holds no byte ahead.
        r.get_ref().write_all(b"fds\n")?;
        let mut fds: Vec<OwnedFd> = Vec::with_capacity(m.min(1024));
        while fds.len() < m {
            let mut byte = [0u8; 1];
            let mut space =
                vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let got = recvmsg(
                r.get_ref(),
                &mut [IoSliceMut::new(&mut byte)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )
            .context("the old process did not send the sockets")?;
            if got.bytes == 0 {
                bail!(
                    "the old process closed before sending all {m} sockets ({} came)",
                    fds.len()
                );
            }
            for msg in control.drain() {
                if let RecvAncillaryMessage::ScmRights(rights) = msg {
                    fds.extend(rights);
                }
            }
        }
        if fds.len() != m {
            bail!("expected {m} sockets, received {}", fds.len());
        }
        Ok(meta
            .into_iter()
            .zip(fds)
            .map(|((local, peer, buffered), fd)| {
                let stream = std::net::TcpStream::from(fd);
                (
                    local,
                    HandedConnection {
                        stream,
                        peer,
                        buffered,
                    },
                )
            })
            .collect())
    }

    fn read_state(&mut self, within: Duration) -> Result<(States, String)> {
        self.reader.get_ref().set_read_timeout(Some(within))?;
        let r = &mut self.reader;
        let mut line = String::new();
        r.read_line(&mut line)
            .context("the old process did not send its state")?;
        let k: usize = line
            .strip_prefix("state ")
            .and_then(|k| k.trim().parse().ok())
            .ok_or_else(|| anyhow!("expected `state K`, got {:?}", line.trim_end()))?;
        let mut states = Vec::with_capacity(k);
        for _ in 0..k {
            line.clear();
            r.read_line(&mut line)?;
            let mut it = line.split_whitespace().map(str::parse::<usize>);
            let (Some(Ok(kl)), Some(Ok(sl))) = (it.next(), it.next()) else {
                bail!("bad state header {:?}", line.trim_end());
            };
            let mut key = vec![0; kl];
            r.read_exact(&mut key)?;
            let mut state = vec![0; sl];
            r.read_exact(&mut state)?;
            states.push((String::from_utf8_lossy(&key).into_owned(), state));
        }
        line.clear();
        r.read_line(&mut line)?;
        let done = line
            .strip_prefix("done ")
            .map(|s| s.trim_end().to_string())
            .ok_or_else(|| anyhow!("expected `done …`, got {:?}", line.trim_end()))?;
        Ok((states, done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The new side of step 5 against `answer` from a fake old side.
    fn connections_from(answer: &'static [u8]) -> Result<Vec<Adopted>> {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let old = std::thread::spawn(move || {
            let mut r = BufReader::new(theirs.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert_eq!(line, "connections?\n");
            (&theirs).write_all(answer).unwrap();
        });
        let mut taken = Taken {
            listeners: Vec::new(),
            predecessor: 0,
            reader: BufReader::new(ours),
        };
        let got = taken.connections();
        old.join().unwrap();
        got
    }

    #[test]
    fn step_five_refuses_a_bad_header_and_takes_none() {
        assert!(connections_from(b"connections 0\n").unwrap().is_empty());
        let e = connections_from(b"connections 1\n127.0.0.1:1 127.0.0.1:2 99999999999\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("more buffered bytes"), "{e}");
        let e = connections_from(b"connections 1\nnot-an-address 127.0.0.1:2 0\n").unwrap_err();
        assert!(format!("{e:#}").contains("connection header"), "{e:#}");
        let e = connections_from(b"listeners 3\n").unwrap_err().to_string();
        assert!(e.contains("expected `connections M`"), "{e}");
    }

    #[test]
    fn a_handover_request_names_its_version_and_pid() {
        assert_eq!(parse_hello("bee-handover 1 pid=42\n").unwrap(), "42");
        assert_eq!(parse_hello("bee-handover 1\n").unwrap(), "?");
        let e = parse_hello("bee-handover 2 pid=42\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("protocol 2, this process 1"), "{e}");
        let e = parse_hello("GET / HTTP/1.1\n").unwrap_err().to_string();
        assert!(e.contains("not a handover request"), "{e}");
        let e = parse_hello("bee-handover x\n").unwrap_err().to_string();
        assert!(e.contains("without a version"), "{e}");
    }
}
