//! The two halves of one TCP connection, shared by the sending and the listening side.
//!
//! - [`Connection`] owns the read half, a [`BytesMut`] read buffer and a [`FrameDecoder`];
//!   [`Connection::read_frame`] yields one frame body at a time, parsing every complete
//!   frame already buffered before it reads from the socket again.
//! - `WriteQueue` is the write side: callers append already-encoded frames to one shared
//!   buffer under a short lock and wake the writer task (`run_writer`), which takes
//!   everything queued so far and writes it with one `write_all` per batch. Small messages
//!   issued while a write is in progress therefore leave in one syscall together.

use std::io;
use std::sync::{Mutex, MutexGuard};

use bee_codec::frame::{FrameDecoder, FrameError};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
    /// Bytes the writer has taken and is writing now.
    writing: usize,
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

/// The write side of one connection (see the module docs).
#[derive(Debug)]
pub(crate) struct WriteQueue<S> {
    inner: Mutex<Locked<S>>,
    wake: Notify,
    drained: Notify,
}

impl<S> WriteQueue<S> {
    pub fn new(state: S) -> Self {
        WriteQueue {
            inner: Mutex::new(Locked {
                buf: BytesMut::with_capacity(16 * 1024),
                writing: 0,
                closed: false,
                state,
            }),
            wake: Notify::new(),
            drained: Notify::new(),
        }
    }

    /// Lock the queue (never held across an await).
    pub fn lock(&self) -> MutexGuard<'_, Locked<S>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wake the writer after frames were appended.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stop accepting frames; the writer flushes what is queued, then shuts the write half.
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

/// The writer task of one connection: waits for frames, writes each batch with one
/// `write_all`, ends when the queue is closed and empty, on cancel, or on a write error.
pub(crate) async fn run_writer<S, W>(
    queue: &WriteQueue<S>,
    mut writer: W,
    cancel: &CancellationToken,
) -> WriterEnd
where
    W: AsyncWrite + Unpin,
{
    let mut batch = BytesMut::with_capacity(16 * 1024);
    loop {
        let closed = {
            let mut g = queue.lock();
            std::mem::swap(&mut g.buf, &mut batch);
            g.writing = batch.len();
            g.closed
        };
        if batch.is_empty() {
            queue.drained.notify_waiters();
            if closed {
                // Best effort: the peer may already be gone.
                let _ = writer.shutdown().await;
                return WriterEnd::Flushed;
            }
            tokio::select! {
                _ = queue.wake.notified() => continue,
                _ = cancel.cancelled() => return WriterEnd::Cancelled,
            }
        }
        let result = tokio::select! {
            r = writer.write_all(&batch) => r,
            _ = cancel.cancelled() => return WriterEnd::Cancelled,
        };
        if let Err(e) = result {
            return WriterEnd::Failed(e);
        }
        if batch.capacity() > KEEP_WRITE_BUFFER {
            batch = BytesMut::with_capacity(16 * 1024);
        } else {
            batch.clear();
        }
        queue.drained.notify_waiters();
    }
}
