//! The two halves of one TCP connection, shared by the sending and the listening side.
//!
//! - [`Connection`] owns the read half, a [`BytesMut`] read buffer and a [`FrameDecoder`];
//!   [`Connection::read_frame`] yields one frame body at a time, parsing every complete
//!   frame already buffered before it reads from the socket again.
//! - `WriteQueue` is the write side: it owns the write half, and callers append
//!   already-encoded frames to one shared buffer under a short lock. Then either
//!   - the caller writes them to the socket itself with a non-blocking write
//!     (`WriteQueue::submit`), which saves the hop to another task on the latency path —
//!     allowed only when nothing was queued before them and nobody is writing; whatever
//!     does not fit (the socket buffer is full, or the write failed) is put back in front
//!     of the queue and the writer is woken; or
//!   - the caller leaves them to the writer task (`WriteQueue::defer`, `run_writer`),
//!     which takes everything queued so far and writes it as one batch, so messages
//!     issued in a burst leave in few syscalls together (the throughput path).
//!
//!   Bytes leave in exactly the order they were queued: a direct write only ever writes
//!   the front of the queue, never while the writer has a batch in progress, and the
//!   writer never starts one while a direct write is in progress. No lock is held
//!   during a syscall.
//!
//! ## Busy polling (latency)
//! A connection may be given a busy-poll window ([`crate::ChannelConfig::busy_poll`],
//! [`crate::ListenerConfig::busy_poll`]). For that long after the last frame it
//! received or the last frame queued on its write side, a reader that finds no data
//! does not park: it retries the socket with a plain non-blocking `recv` and yields to
//! the runtime between tries, so the next frame is picked up within a microsecond or so
//! instead of after a wake-up through epoll and a sleeping (on a VM: halted) CPU, which
//! dominates a one-call-in-flight round trip.
//! The cost is CPU time: while one call at a time goes back and forth, both ends poll
//! most of the time; once the window has passed without traffic the reader parks as
//! usual, so an idle node uses no CPU. A window of zero turns it off.
//!
//! Polling only pays when someone is waiting on the next frame, so it does not start
//! when more than a few requests are outstanding on the connection (calls in flight,
//! or requests being handled), when the last read brought several frames at once (the
//! peer is pipelining), or while part of a frame is buffered (the rest is on its way;
//! large frames are read in large reads). Every few tries the poller also yields its
//! thread, so a thread that needs the CPU is not kept waiting for a preemption. And at
//! most [`PollerCap::max`] connections under one [`PollerCap`] poll at once (the
//! process's cap by default, maximum 1: [`set_max_pollers`]):
//! with many connections carrying traffic the others park in epoll, so polling costs at
//! most about that many cores, not one per connection. The polling loop, the activity
//! stamps it reads and the cap live in [`crate::busy_poll`].

use std::collections::{HashSet, VecDeque};
use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bee_codec::frame::{FrameDecoder, FrameError};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::budget::{ByteBudget, Permit};
pub use crate::busy_poll::set_max_pollers;
#[cfg(test)]
use crate::busy_poll::SPIN_MAX_OUTSTANDING;
pub(crate) use crate::busy_poll::{now_ns, Activity};
use crate::busy_poll::{Polled, PollerCap, Spin, SPIN_CHUNK};
use metrics::{Counter, Gauge};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;
/// A writer's spare buffer larger than this is released after its batch went out (so one
/// 64 MiB message does not pin 64 MiB for the life of the connection).
const KEEP_WRITE_BUFFER: usize = 1024 * 1024;

/// Why [`Connection::read_frame`] could not return a frame.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The socket failed.
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed mid-frame ({buffered} bytes of an incomplete frame were received)")]
    EofMidFrame {
        /// Bytes of the incomplete frame that had arrived.
        buffered: usize,
    },
    /// The frame length is past the decoder's maximum.
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
}

/// The read side of one connection: socket read half + read buffer + frame decoder
/// (2-byte big-endian length, body at most the decoder's maximum).
#[derive(Debug)]
pub struct Connection<R> {
    reader: R,
    buffer: BytesMut,
    decoder: FrameDecoder,
    spin: Option<Spin<R>>,
    /// Since when part of a frame has been buffered (`None`: nothing buffered).
    partial_since: Option<Instant>,
    /// Counts the bytes read.
    bytes_in: Counter,
}

impl<R: AsyncRead + Unpin> Connection<R> {
    /// Wrap `reader`; frames with a body longer than `max_body` are an error.
    pub fn new(reader: R, max_body: usize) -> Self {
        Connection {
            reader,
            buffer: BytesMut::with_capacity(READ_CHUNK),
            decoder: FrameDecoder::new(max_body),
            spin: None,
            partial_since: None,
            bytes_in: Counter::noop(),
        }
    }

    /// The next frame body. `Ok(None)` when the peer closed the connection cleanly between
    /// two frames; [`ReadError::EofMidFrame`] when it closed in the middle of one.
    ///
    /// Cancel safe: data read so far stays in the buffer when the future is dropped.
    pub async fn read_frame(&mut self) -> Result<Option<Bytes>, ReadError> {
        loop {
            if let Some(body) = self.buffered_frame()? {
                return Ok(Some(body));
            }
            if self.buffer.capacity() - self.buffer.len() < READ_CHUNK / 4 {
                self.buffer.reserve(READ_CHUNK);
            }
            let before = self.buffer.len();
            let eof = match self.poll_socket().await? {
                Polled::Data => false,
                Polled::Eof => true,
                Polled::Idle => self.reader.read_buf(&mut self.buffer).await? == 0,
            };
            let got = self.buffer.len().saturating_sub(before);
            if got > 0 {
                if let Some(spin) = &mut self.spin {
                    // Frames are counted afresh for each read that brings data.
                    spin.frames = 0;
                }
            }
            self.bytes_in.increment(got as u64);
            if self.partial_since.is_none() && !self.buffer.is_empty() {
                self.partial_since = Some(Instant::now());
            }
            if eof {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::EofMidFrame {
                        buffered: self.buffer.len(),
                    })
                };
            }
        }
    }

    /// The next frame body if a whole one is already buffered; never reads the socket.
    pub fn buffered_frame(&mut self) -> Result<Option<Bytes>, ReadError> {
        let body = self.decoder.decode(&mut self.buffer)?;
        if body.is_some() {
            // What is left (if anything) may be whole frames: the clock starts when a
            // decode finds only part of one (no clock read per frame of a burst).
            self.partial_since = None;
            if let Some(spin) = &mut self.spin {
                spin.frames += 1;
            }
        } else if !self.buffer.is_empty() && self.partial_since.is_none() {
            self.partial_since = Some(Instant::now());
        }
        Ok(body)
    }

    /// Busy-poll the socket (see [`Spin::poll`]); `Idle` at once when busy polling is off.
    /// Cancel safe: bytes read are in the buffer before any await.
    async fn poll_socket(&mut self) -> io::Result<Polled> {
        match &mut self.spin {
            Some(spin) => spin.poll(&self.reader, &mut self.buffer).await,
            None => Ok(Polled::Idle),
        }
    }

    /// Count the bytes read on `counter` (a metric).
    pub(crate) fn count_bytes(mut self, counter: Counter) -> Self {
        self.bytes_in = counter;
        self
    }

    /// The reader back (bytes buffered but not yet returned as frames are lost).
    pub fn into_inner(self) -> R {
        self.reader
    }

    /// The reader and the bytes read from it but not yet returned as frames (whole
    /// frames and the start of one): what another process needs to go on reading the
    /// connection where this one stopped.
    pub fn into_parts(self) -> (R, Bytes) {
        (self.reader, self.buffer.freeze())
    }

    /// Start with `bytes` in the buffer, as if read first: the rest of a connection
    /// another process read part of ([`Connection::into_parts`]).
    pub fn with_buffered(mut self, bytes: &[u8]) -> Self {
        self.buffer.extend_from_slice(bytes);
        self
    }

    /// Since when part of a frame has been waiting in the buffer for the rest (`None`
    /// when the buffer holds no partial frame).
    pub fn partial_since(&self) -> Option<Instant> {
        self.partial_since
    }

    /// Restart the partial-frame clock (the owner did not read for a while, on purpose).
    pub fn touch_partial(&mut self) {
        if self.partial_since.is_some() {
            self.partial_since = Some(Instant::now());
        }
    }
}

impl Connection<OwnedReadHalf> {
    /// Busy-poll for `window` after the last traffic (frames received here, or frames
    /// queued on `activity`'s side) before parking, while few requests are outstanding;
    /// see the module docs. Zero: never.
    pub(crate) fn busy_poll(mut self, window: Duration, activity: Arc<Activity>) -> Self {
        self.spin = (!window.is_zero()).then(|| Spin {
            raw_read: |half: &OwnedReadHalf, buf: &mut [u8]| {
                let stream: &tokio::net::TcpStream = half.as_ref();
                (&*socket2::SockRef::from(stream)).read(buf)
            },
            window: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
            activity,
            received: now_ns(),
            frames: 0,
            scratch: vec![0; SPIN_CHUNK].into_boxed_slice(),
            cap: PollerCap::process(),
        });
        self
    }

    /// Poll under `cap` instead of the process's cap (see [`PollerCap`]).
    pub(crate) fn poller_cap(mut self, cap: PollerCap) -> Self {
        if let Some(spin) = &mut self.spin {
            spin.cap = cap;
        }
        self
    }
}

/// State under the write queue's lock: the bytes waiting to be written, plus whatever the
/// owner must change atomically with them (the sender's session table, so sessions are
/// allocated in wire order).
#[derive(Debug)]
pub(crate) struct Locked<S> {
    /// Encoded frames not yet taken by the writer.
    pub buf: BytesMut,
    /// Bytes the writer (or a caller writing directly) has taken and is writing now.
    writing: usize,
    /// A caller is writing directly (outside the lock): the writer task must not start a
    /// batch; the caller wakes it when done if anything is left to do.
    direct: bool,
    /// The buffer a direct writer takes the queued bytes in (kept to avoid allocating).
    spare: BytesMut,
    /// No more frames may be queued: the connection is gone or closing.
    pub closed: bool,
    /// The owner's state.
    pub state: S,
    /// What `buf` holds, message by message, when the owner marks every message it
    /// appends ([`Locked::mark`]; the sending side does): so a call that stopped waiting
    /// can be taken out before it is written. Empty for owners that do not mark.
    marks: VecDeque<Mark>,
    /// Sessions with a mark in `marks`.
    marked: HashSet<u32>,
    /// Marked sessions to leave out when the writer takes them.
    cancelled: HashSet<u32>,
    /// Bytes of the cancelled messages.
    cancelled_bytes: usize,
    /// The node-wide outbound budget held for the bytes queued (if there is one).
    charge: Option<Permit>,
}

/// One message in the write buffer: its session (0: not removable) and length.
#[derive(Debug, Clone, Copy)]
struct Mark {
    session: u32,
    len: usize,
}

impl<S> Locked<S> {
    /// Bytes queued (not counting messages cancelled but not yet skipped) or being written.
    pub fn queued(&self) -> usize {
        self.buf.len() - self.cancelled_bytes + self.writing
    }

    /// Record that the last `len` bytes appended to `buf` are one message of `session`
    /// (0: not removable, e.g. a push), charged to `charge` if given. An owner that marks
    /// must mark everything it appends.
    pub fn mark(&mut self, session: u32, len: usize, charge: Option<Permit>) {
        if len == 0 {
            return;
        }
        if session != 0 {
            self.marked.insert(session);
        }
        self.marks.push_back(Mark { session, len });
        if let Some(p) = charge {
            match &mut self.charge {
                Some(c) => c.absorb(p),
                None => self.charge = Some(p),
            }
        }
    }

    /// Whether `session` has a message in the buffer (queued or cancelled, not yet taken).
    pub fn holds(&self, session: u32) -> bool {
        self.marked.contains(&session)
    }

    /// Leave the message of `session` out if it is still waiting in the buffer (not yet
    /// taken by a writer). Returns whether it will be left out.
    pub fn cancel(&mut self, session: u32) -> bool {
        if session == 0 || !self.marked.contains(&session) || self.cancelled.contains(&session) {
            return false;
        }
        let Some(m) = self.marks.iter().find(|m| m.session == session) else {
            return false;
        };
        self.cancelled_bytes += m.len;
        self.cancelled.insert(session);
        true
    }

    /// Drop everything queued (the connection is gone).
    pub fn discard(&mut self) {
        self.buf.clear();
        self.marks.clear();
        self.marked.clear();
        self.cancelled.clear();
        self.cancelled_bytes = 0;
        self.charge = None;
    }

    /// Give back `n` bytes that left the queue.
    fn release(&mut self, n: usize) {
        if let Some(c) = &mut self.charge {
            c.release(n);
        }
    }

    /// Forget the marks of the first `n` bytes of `buf` (taken for writing).
    fn taken(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.marks.front_mut() else {
                return;
            };
            if front.len <= n {
                n -= front.len;
                let m = self.marks.pop_front().expect("front exists");
                if m.session != 0 {
                    self.marked.remove(&m.session);
                }
            } else {
                // Partly taken: what is left can no longer be taken out.
                front.len -= n;
                if front.session != 0 {
                    self.marked.remove(&front.session);
                    front.session = 0;
                }
                n = 0;
            }
        }
    }

    /// Move the next batch to write into `batch` (empty on entry): everything queued in
    /// one swap when that is small and nothing is cancelled, else at most [`MAX_BATCH`]
    /// bytes, leaving cancelled messages out.
    fn take_batch(&mut self, batch: &mut BytesMut) {
        if self.cancelled.is_empty() {
            if self.buf.len() <= MAX_BATCH {
                std::mem::swap(&mut self.buf, batch);
                self.marks.clear();
                self.marked.clear();
            } else {
                *batch = self.buf.split_to(MAX_BATCH);
                self.taken(MAX_BATCH);
            }
            return;
        }
        while batch.len() < MAX_BATCH {
            let Some(m) = self.marks.pop_front() else {
                break;
            };
            let bytes = self.buf.split_to(m.len);
            if m.session != 0 {
                self.marked.remove(&m.session);
                if self.cancelled.remove(&m.session) {
                    self.cancelled_bytes -= m.len;
                    self.release(m.len);
                    continue;
                }
            }
            batch.extend_from_slice(&bytes);
        }
        if self.marks.is_empty() && !self.buf.is_empty() {
            // Unmarked bytes (an owner that does not mark): take them as they are.
            batch.extend_from_slice(&self.buf);
            self.buf.clear();
        }
    }
}

/// Most bytes a writer takes for one batch when more are queued (so messages queued
/// behind can still be taken out if their call stops waiting).
const MAX_BATCH: usize = 1024 * 1024;

/// The write side of one connection (see the module docs). Owns the socket's write half;
/// dropping the queue shuts the write direction of the socket.
#[derive(Debug)]
pub(crate) struct WriteQueue<S> {
    inner: Mutex<Locked<S>>,
    /// Always `Some` until [`WriteQueue::into_write_half`] takes it.
    sock: Option<OwnedWriteHalf>,
    /// Stamped whenever frames are queued (for a busy-polling reader).
    pub activity: Arc<Activity>,
    /// Counts the bytes written.
    bytes_out: Counter,
    /// Set to the bytes queued (for a channel; a listener's connections do not set it).
    queued_gauge: Option<Gauge>,
    /// A node-wide budget the bytes queued or being written are held against (a
    /// listener's answers: [`WriteQueue::charge_to`]), and what is held now.
    budget: Option<ByteBudget>,
    charged: AtomicUsize,
    wake: Notify,
    drained: Notify,
}

impl<S> Drop for WriteQueue<S> {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.discharge(self.charged.swap(0, Ordering::AcqRel));
        }
    }
}

impl<S> WriteQueue<S> {
    fn sock(&self) -> &OwnedWriteHalf {
        self.sock
            .as_ref()
            .expect("the write half is taken only from a queue no one else holds")
    }

    /// The socket's write half back, without shutting its write direction (dropping the
    /// queue would): for a connection that goes on in another process. Bytes still
    /// queued are dropped; take it after the writer flushed.
    pub(crate) fn into_write_half(mut self) -> Option<OwnedWriteHalf> {
        self.sock.take()
    }

    /// A queue writing to `sock`, with the owner's `state` under its lock.
    pub fn new(sock: OwnedWriteHalf, state: S) -> Self {
        WriteQueue {
            inner: Mutex::new(Locked {
                buf: BytesMut::with_capacity(16 * 1024),
                writing: 0,
                direct: false,
                spare: BytesMut::new(),
                closed: false,
                state,
                marks: VecDeque::new(),
                marked: HashSet::new(),
                cancelled: HashSet::new(),
                cancelled_bytes: 0,
                charge: None,
            }),
            sock: Some(sock),
            activity: Arc::default(),
            bytes_out: Counter::noop(),
            queued_gauge: None,
            budget: None,
            charged: AtomicUsize::new(0),
            wake: Notify::new(),
            drained: Notify::new(),
        }
    }

    /// Hold the bytes queued or being written against `budget` until they are written
    /// (or the queue is dropped).
    pub fn charge_to(mut self, budget: Option<ByteBudget>) -> Self {
        self.budget = budget;
        self
    }

    /// Count the bytes written on `bytes_out`, and report the bytes queued on `queued`.
    pub fn with_metrics(mut self, bytes_out: Counter, queued: Option<Gauge>) -> Self {
        self.bytes_out = bytes_out;
        self.queued_gauge = queued;
        self
    }

    fn report_queued(&self, queued: usize) {
        if let Some(g) = &self.queued_gauge {
            g.set(queued as f64);
        }
        if let Some(b) = &self.budget {
            // Each report moves the charge by its own difference: whatever order
            // reports land in, the budget holds what the last one said.
            let before = self.charged.swap(queued, Ordering::AcqRel);
            if queued > before {
                b.charge(queued - before);
            } else if before > queued {
                b.discharge(before - queued);
            }
        }
    }

    /// Lock the queue (never held across an await).
    pub fn lock(&self) -> MutexGuard<'_, Locked<S>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Send the frames the caller just appended to `g.buf`, which held `before` bytes
    /// before it did. If no earlier byte was queued (`before == 0`) and nobody is writing,
    /// the calling task writes them to the socket now with non-blocking writes: it takes
    /// them out of the queue and marks a write in progress (so later frames queue up
    /// behind, and the writer task waits), writes WITHOUT holding the lock (a thread
    /// preempted in the syscall must not block the others), then puts back whatever did
    /// not fit in front of anything queued meanwhile and wakes the writer for it (also
    /// when the write failed: the writer meets the error again and reports it). Returns
    /// the bytes still queued or being written.
    pub fn submit(&self, mut g: MutexGuard<'_, Locked<S>>, before: usize) -> usize {
        if before != 0
            || g.writing != 0
            || g.direct
            || g.closed
            || g.buf.is_empty()
            || !g.cancelled.is_empty()
        {
            return self.defer(g);
        }
        let mut batch = std::mem::take(&mut g.spare);
        std::mem::swap(&mut g.buf, &mut batch);
        g.marks.clear();
        g.marked.clear();
        g.writing = batch.len();
        g.direct = true;
        drop(g);
        self.activity.stamp();
        let mut off = 0;
        while off < batch.len() {
            match self.sock().try_write(&batch[off..]) {
                Ok(0) => break,
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock or a real error: the writer task takes over.
                Err(_) => break,
            }
        }
        let mut g = self.lock();
        g.direct = false;
        g.writing = 0;
        g.release(off);
        if off < batch.len() && !g.closed {
            let rest = &batch[off..];
            g.marks.push_front(Mark {
                session: 0,
                len: rest.len(),
            });
            if g.buf.is_empty() {
                g.buf.extend_from_slice(rest);
            } else {
                let mut front = BytesMut::with_capacity(rest.len() + g.buf.len());
                front.extend_from_slice(rest);
                front.extend_from_slice(&g.buf);
                g.buf = front;
            }
        }
        if batch.capacity() <= KEEP_WRITE_BUFFER {
            batch.clear();
            g.spare = batch;
        }
        let queued = g.queued();
        let wake = !g.buf.is_empty() || g.closed;
        drop(g);
        self.bytes_out.increment(off as u64);
        self.report_queued(queued);
        if wake {
            self.wake.notify_one();
        }
        if off > 0 {
            self.drained.notify_waiters();
        }
        queued
    }

    /// Leave the frames just appended to the writer task (batched with whatever else is
    /// queued by the time it runs). Returns the bytes queued or being written.
    pub fn defer(&self, g: MutexGuard<'_, Locked<S>>) -> usize {
        let queued = g.queued();
        let left = !g.buf.is_empty();
        drop(g);
        self.report_queued(queued);
        // The writer stamps the activity when it takes the batch (one clock read per
        // batch, not per frame).
        if left {
            self.wake.notify_one();
        }
        queued
    }

    /// Stop accepting frames; the writer flushes what is queued, then ends.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    /// Wait until at most `limit` bytes are queued or being written (back-pressure for
    /// the listener, which stops reading requests while its answers pile up).
    pub async fn wait_below(&self, limit: usize) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().queued() <= limit {
                return;
            }
            notified.await;
        }
    }

    /// Write all of `batch` to the socket, waiting for it to become writable as needed.
    async fn write_batch(&self, batch: &[u8], cancel: &CancellationToken) -> Result<(), WriterEnd> {
        let mut off = 0;
        let mut blocked = false;
        while off < batch.len() {
            match self.sock().try_write(&batch[off..]) {
                Ok(0) => return Err(WriterEnd::Failed(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    off += n;
                    self.bytes_out.increment(n as u64);
                    if blocked {
                        blocked = false;
                        self.activity.unblocked.store(now_ns(), Ordering::Relaxed);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked = true;
                    let ready = tokio::select! {
                        r = self.sock().writable() => r,
                        _ = cancel.cancelled() => return Err(WriterEnd::Cancelled),
                    };
                    ready.map_err(WriterEnd::Failed)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(WriterEnd::Failed(e)),
            }
        }
        Ok(())
    }
}

/// How a writer task ended.
#[derive(Debug)]
pub(crate) enum WriterEnd {
    /// The queue was closed and everything queued was written.
    Flushed,
    /// The connection's token was cancelled.
    Cancelled,
    /// A write failed.
    Failed(io::Error),
}

/// The writer task of one connection: waits for frames the callers could not write
/// themselves, writes each batch in full, ends when the queue is closed and empty, on
/// cancel, or on a write error.
pub(crate) async fn run_writer<S>(queue: &WriteQueue<S>, cancel: &CancellationToken) -> WriterEnd {
    let mut batch = BytesMut::with_capacity(16 * 1024);
    let mut woken = false;
    loop {
        if std::mem::take(&mut woken) {
            // Woken by a frame just queued: let the other tasks that are ready now (the
            // callers woken by the same burst of replies, the handlers of the same read)
            // run first, so their frames leave in this batch rather than one syscall each.
            tokio::task::yield_now().await;
        }
        let (closed, direct) = {
            let mut g = queue.lock();
            if !g.direct {
                g.take_batch(&mut batch);
                g.writing = batch.len();
            }
            (g.closed, g.direct)
        };
        if direct {
            // A caller is writing; it wakes this task if anything is left to do.
            tokio::select! {
                _ = queue.wake.notified() => continue,
                _ = cancel.cancelled() => return WriterEnd::Cancelled,
            }
        }
        if !batch.is_empty() {
            queue.activity.stamp();
        } else {
            queue.drained.notify_waiters();
            if closed {
                return WriterEnd::Flushed;
            }
            tokio::select! {
                _ = queue.wake.notified() => {
                    woken = true;
                    continue;
                }
                _ = cancel.cancelled() => return WriterEnd::Cancelled,
            }
        }
        if let Err(end) = queue.write_batch(&batch, cancel).await {
            return end;
        }
        let queued = {
            let mut g = queue.lock();
            g.release(batch.len());
            g.buf.len() - g.cancelled_bytes
        };
        queue.report_queued(queued);
        if batch.capacity() > KEEP_WRITE_BUFFER {
            batch = BytesMut::with_capacity(16 * 1024);
        } else {
            batch.clear();
        }
        queue.drained.notify_waiters();
    }
}

#[cfg(test)]
mod tests;
