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

use std::io;
use std::sync::{Mutex, MutexGuard};

use bee_codec::frame::{FrameDecoder, FrameError};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

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
}

impl<R: AsyncRead + Unpin> Connection<R> {
    /// Wrap `reader`; frames with a body longer than `max_body` are an error.
    pub fn new(reader: R, max_body: usize) -> Self {
        Connection {
            reader,
            buffer: BytesMut::with_capacity(READ_CHUNK),
            decoder: FrameDecoder::new(max_body),
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
            if self.reader.read_buf(&mut self.buffer).await? == 0 {
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
        Ok(self.decoder.decode(&mut self.buffer)?)
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
}

impl<S> Locked<S> {
    /// Bytes queued or being written.
    pub fn queued(&self) -> usize {
        self.buf.len() + self.writing
    }
}

/// The write side of one connection (see the module docs). Owns the socket's write half;
/// dropping the queue shuts the write direction of the socket.
#[derive(Debug)]
pub(crate) struct WriteQueue<S> {
    inner: Mutex<Locked<S>>,
    sock: OwnedWriteHalf,
    wake: Notify,
    drained: Notify,
}

impl<S> WriteQueue<S> {
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
            }),
            sock,
            wake: Notify::new(),
            drained: Notify::new(),
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
        if before != 0 || g.writing != 0 || g.direct || g.closed || g.buf.is_empty() {
            return self.defer(g);
        }
        let mut batch = std::mem::take(&mut g.spare);
        std::mem::swap(&mut g.buf, &mut batch);
        g.writing = batch.len();
        g.direct = true;
        drop(g);
        let mut off = 0;
        while off < batch.len() {
            match self.sock.try_write(&batch[off..]) {
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
        if off < batch.len() && !g.closed {
            let rest = &batch[off..];
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
        while off < batch.len() {
            match self.sock.try_write(&batch[off..]) {
                Ok(0) => return Err(WriterEnd::Failed(io::ErrorKind::WriteZero.into())),
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let ready = tokio::select! {
                        r = self.sock.writable() => r,
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
    loop {
        let (closed, direct) = {
            let mut g = queue.lock();
            if !g.direct {
                std::mem::swap(&mut g.buf, &mut batch);
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
        if batch.is_empty() {
            queue.drained.notify_waiters();
            if closed {
                return WriterEnd::Flushed;
            }
            tokio::select! {
                _ = queue.wake.notified() => continue,
                _ = cancel.cancelled() => return WriterEnd::Cancelled,
            }
        }
        if let Err(end) = queue.write_batch(&batch, cancel).await {
            return end;
        }
        if batch.capacity() > KEEP_WRITE_BUFFER {
            batch = BytesMut::with_capacity(16 * 1024);
        } else {
            batch.clear();
        }
        queue.drained.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A queue over one end of a loopback connection, and the other end.
    async fn pair() -> (WriteQueue<()>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dial = TcpStream::connect(listener.local_addr().unwrap());
        let (ours, theirs) = tokio::join!(dial, listener.accept());
        let (_rd, wr) = ours.unwrap().into_split();
        // Our read half is dropped: only writes matter here.
        (WriteQueue::new(wr, ()), theirs.unwrap().0)
    }

    /// Append `bytes` and submit them, as the channel and the listener do.
    fn send(queue: &WriteQueue<()>, bytes: &[u8]) -> usize {
        let mut g = queue.lock();
        let before = g.buf.len();
        g.buf.extend_from_slice(bytes);
        queue.submit(g, before)
    }

    async fn read_exactly(peer: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut got = vec![0u8; n];
        tokio::time::timeout(std::time::Duration::from_secs(5), peer.read_exact(&mut got))
            .await
            .expect("bytes did not arrive")
            .unwrap();
        got
    }

    /// Wait until the socket is known writable (its first readiness event arrived).
    async fn writable(queue: &WriteQueue<()>) {
        queue.sock.writable().await.unwrap();
    }

    #[tokio::test]
    async fn idle_queue_writes_directly_without_a_writer_task() {
        let (queue, mut peer) = pair().await;
        writable(&queue).await;
        assert_eq!(send(&queue, b"hello"), 0, "nothing should stay queued");
        assert_eq!(send(&queue, b" world"), 0);
        assert_eq!(read_exactly(&mut peer, 11).await, b"hello world");
    }

    #[tokio::test]
    async fn no_direct_write_while_the_writer_is_writing() {
        let (queue, mut peer) = pair().await;
        writable(&queue).await;
        // The writer has taken 3 bytes and is writing them (not yet on the wire).
        queue.lock().writing = 3;
        assert_eq!(send(&queue, b"late"), 3 + 4);
        assert_eq!(
            &queue.lock().buf[..],
            b"late",
            "must wait behind the writer"
        );
        // The writer's bytes go first, then the writer takes what was queued behind.
        queue.sock.try_write(b"abc").unwrap();
        let cancel = CancellationToken::new();
        queue.lock().writing = 0;
        let writer = run_writer(&queue, &cancel);
        let read = read_exactly(&mut peer, 7);
        tokio::pin!(writer);
        let got = tokio::select! {
            got = read => got,
            end = &mut writer => panic!("writer ended early: {end:?}"),
        };
        assert_eq!(got, b"abclate");
        assert_eq!(queue.lock().queued(), 0);
    }

    #[tokio::test]
    async fn writer_waits_while_a_caller_writes_directly() {
        let (queue, mut peer) = pair().await;
        writable(&queue).await;
        // A caller has taken "early" and is writing it outside the lock.
        {
            let mut g = queue.lock();
            g.direct = true;
            g.writing = 5;
        }
        assert_eq!(
            send(&queue, b"late"),
            5 + 4,
            "queued behind the direct write"
        );
        let cancel = CancellationToken::new();
        let writer = run_writer(&queue, &cancel);
        tokio::pin!(writer);
        // Woken by the send, the writer must not take "late" yet.
        let idle = tokio::time::timeout(std::time::Duration::from_millis(50), &mut writer);
        assert!(idle.await.is_err(), "writer ended early");
        assert_eq!(&queue.lock().buf[..], b"late");
        // The caller's write completes; it then hands over and wakes the writer.
        queue.sock.try_write(b"early").unwrap();
        {
            let mut g = queue.lock();
            g.direct = false;
            g.writing = 0;
        }
        queue.wake.notify_one();
        let got = tokio::select! {
            got = read_exactly(&mut peer, 9) => got,
            end = &mut writer => panic!("writer ended early: {end:?}"),
        };
        assert_eq!(got, b"earlylate");
    }

    #[tokio::test]
    async fn no_direct_write_behind_queued_bytes() {
        let (queue, mut peer) = pair().await;
        writable(&queue).await;
        queue.lock().buf.extend_from_slice(b"first ");
        // Queued bytes exist (the writer was woken but has not run): append behind them.
        assert_eq!(send(&queue, b"second"), 12);
        assert_eq!(&queue.lock().buf[..], b"first second");
        let cancel = CancellationToken::new();
        let writer = run_writer(&queue, &cancel);
        tokio::pin!(writer);
        let got = tokio::select! {
            got = read_exactly(&mut peer, 12) => got,
            end = &mut writer => panic!("writer ended early: {end:?}"),
        };
        assert_eq!(got, b"first second");
    }

    #[tokio::test]
    async fn what_does_not_fit_is_finished_by_the_writer_in_order() {
        let (queue, mut peer) = pair().await;
        writable(&queue).await;
        // Far more than the loopback socket buffers hold while nobody reads.
        let big: Vec<u8> = (0..32u32 << 20).map(|i| (i % 251) as u8).collect();
        let left = send(&queue, &big);
        assert!(left > 0 && left < big.len(), "left {left} of {}", big.len());
        // The writer is busy with the rest: a small message must queue behind it.
        let cancel = CancellationToken::new();
        let writer = run_writer(&queue, &cancel);
        tokio::pin!(writer);
        let mut got = Vec::new();
        let mut sent_tail = false;
        let mut chunk = vec![0u8; 256 * 1024];
        while got.len() < big.len() + 4 {
            tokio::select! {
                n = peer.read(&mut chunk) => {
                    let n = n.unwrap();
                    assert!(n > 0, "connection closed early");
                    got.extend_from_slice(&chunk[..n]);
                }
                end = &mut writer => panic!("writer ended early: {end:?}"),
            }
            if !sent_tail && got.len() > big.len() / 2 {
                send(&queue, b"tail");
                sent_tail = true;
            }
        }
        assert!(got[..big.len()] == big[..], "the large write was cut into");
        assert_eq!(&got[big.len()..], b"tail");
    }
}
