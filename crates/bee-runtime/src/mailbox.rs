//! A service's mailbox: a bounded queue from many senders to the one task that runs the
//! service, as skynet gives every service its own message queue.
//!
//! Why not `tokio::sync::mpsc`: a bounded tokio channel allocates its first block of 32
//! slots and its channel state (cache-padded) when it is made, about 2.3 KiB per service
//! in all, whether the service ever gets a message or not. A node with thousands of
//! mostly idle services (a Lua service per player or room, as skynet code often has)
//! pays that for each. This mailbox holds its messages in a `VecDeque` that is empty
//! until the first message, grows with the backlog and is released when a backlog of
//! more than [`KEEP`] messages has drained, so an idle service costs about 200 bytes.
//!
//! Semantics are those the runtime relied on with tokio's channel:
//! - room is counted by a [`Semaphore`] (one permit per free slot): [`Sender::try_send`]
//!   fails with [`TrySendError::Full`] when there is none, and [`Sender::send`] waits for
//!   one in FIFO order with the other waiting senders;
//! - [`Receiver::recv`] ends (`None`) when the mailbox is empty and every sender is gone
//!   or it was closed; [`Receiver::close`] (or dropping the receiver) refuses new
//!   messages and wakes every waiting sender with its message back, while what is
//!   already queued can still be taken with [`Receiver::try_recv`];
//! - [`Receiver::recv`] spends tokio's cooperative budget, as tokio's channels do, so a
//!   service with a long backlog yields now and then to the services it woke.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

use tokio::sync::{Semaphore, TryAcquireError};

/// A drained queue whose buffer holds more than this many messages gives it back.
const KEEP: usize = 16;

struct State<T> {
    queue: VecDeque<T>,
    /// Live [`Sender`]s.
    senders: usize,
    /// Closed by the receiver: nothing more gets in.
    closed: bool,
    /// The receiver, when it waits for a message.
    waker: Option<Waker>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// One permit per free slot.
    room: Semaphore,
    capacity: usize,
    /// What the receiving service counts (kept here, where both sides already share
    /// one allocation, rather than in one more per service).
    stats: Stats,
    /// The service was killed: it stops before its next message.
    killed: AtomicBool,
}

/// What a service's task counts of its messages, read through any [`Sender`].
#[derive(Default)]
pub(crate) struct Stats {
    /// Messages handled.
    pub(crate) handled: AtomicU64,
    /// Nanoseconds spent in the handler.
    pub(crate) busy_ns: AtomicU64,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queue `value` in the slot its sender already holds (a permit taken and
    /// forgotten); `Err` gives it back when the receiver closed meanwhile.
    fn push(&self, value: T) -> Result<(), T> {
        let mut s = self.lock();
        if s.closed {
            drop(s);
            self.room.add_permits(1);
            return Err(value);
        }
        if s.queue.capacity() == 0 {
            // Room for one, not the four a first push makes: most services (an idle
            // Lua service, one answering calls one at a time) never hold more.
            s.queue.reserve_exact(1);
        }
        s.queue.push_back(value);
        let waker = s.waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Take the oldest message, freeing its slot.
    fn pop(&self, s: &mut State<T>) -> Option<T> {
        let value = s.queue.pop_front()?;
        if s.queue.is_empty() && s.queue.capacity() > KEEP {
            s.queue = VecDeque::new();
        }
        Some(value)
    }
}

/// A bounded mailbox with room for `capacity` messages (at least 1).
pub(crate) fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            senders: 1,
            closed: false,
            waker: None,
        }),
        room: Semaphore::new(capacity),
        capacity,
        stats: Stats::default(),
        killed: AtomicBool::new(false),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// Why [`Sender::try_send`] did not queue the message (which comes back).
#[derive(Debug)]
pub(crate) enum TrySendError<T> {
    /// No room now.
    Full(T),
    /// The receiver closed the mailbox.
    Closed(T),
}

/// The sending side; clones share the mailbox.
pub(crate) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.senders -= 1;
        let waker = if s.senders == 0 { s.waker.take() } else { None };
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Sender<T> {
    /// Queue `value` if there is room now.
    pub(crate) fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        match self.shared.room.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::NoPermits) => return Err(TrySendError::Full(value)),
            Err(TryAcquireError::Closed) => return Err(TrySendError::Closed(value)),
        }
        self.shared.push(value).map_err(TrySendError::Closed)
    }

    /// Queue `value`, waiting for room; `Err` gives it back if the receiver closes.
    pub(crate) async fn send(&self, value: T) -> Result<(), T> {
        match self.shared.room.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return Err(value),
        }
        self.shared.push(value)
    }

    /// Messages waiting (a snapshot).
    pub(crate) fn len(&self) -> usize {
        queued(&self.shared)
    }

    /// The receiving service's counts.
    pub(crate) fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Tell the receiving service it was killed ([`Receiver::killed`]).
    pub(crate) fn kill(&self) {
        self.shared.killed.store(true, Ordering::Release);
    }
}

/// Messages in the mailbox, counted from the free slots (no lock taken). A sender that
/// has taken a slot but not yet queued its message counts already.
fn queued<T>(shared: &Shared<T>) -> usize {
    shared
        .capacity
        .saturating_sub(shared.room.available_permits())
}

/// The receiving side, owned by the service's task.
pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// The next message; `None` once the mailbox is empty and every sender is gone (or
    /// it was closed).
    pub(crate) async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| {
            // Take part in tokio's cooperative budget, as its channels do: a service
            // with a long backlog yields now and then, so a service it woke (queued in
            // this worker's not-stealable next slot) runs instead of starving behind it.
            let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
            let mut s = self.shared.lock();
            if let Some(value) = self.shared.pop(&mut s) {
                drop(s);
                self.shared.room.add_permits(1);
                coop.made_progress();
                return Poll::Ready(Some(value));
            }
            if s.senders == 0 || s.closed {
                return Poll::Ready(None);
            }
            match &mut s.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    /// The next message if one is queued now.
    pub(crate) fn try_recv(&mut self) -> Option<T> {
        let mut s = self.shared.lock();
        let value = self.shared.pop(&mut s)?;
        drop(s);
        if !self.shared.room.is_closed() {
            self.shared.room.add_permits(1);
        }
        Some(value)
    }

    /// Messages waiting (a snapshot).
    pub(crate) fn len(&self) -> usize {
        queued(&self.shared)
    }

    /// This service's counts.
    pub(crate) fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Whether the service was killed ([`Sender::kill`]).
    pub(crate) fn killed(&self) -> bool {
        self.shared.killed.load(Ordering::Acquire)
    }

    /// Whether no message waits now.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuse new messages and wake every waiting sender (its message comes back);
    /// what is queued stays for [`Receiver::try_recv`].
    pub(crate) fn close(&mut self) {
        self.shared.lock().closed = true;
        self.shared.room.close();
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.close();
        // What is still queued is dropped now (its callers' reply slots with it), not
        // when the last sender goes; outside the lock, as dropping may run other code.
        let left = std::mem::take(&mut self.shared.lock().queue);
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn messages_arrive_in_order_and_room_is_bounded() {
        let (tx, mut rx) = channel::<u32>(2);
        tx.try_send(1).unwrap();
        tx.send(2).await.unwrap();
        assert_eq!(rx.len(), 2);
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert_eq!(rx.recv().await, Some(1));
        tx.try_send(3).unwrap();
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, Some(3));
        assert!(rx.is_empty());
    }

    /// A mailbox of room 1 holding 1, and a task whose `send(2)` waits for room.
    async fn full_with_a_waiting_sender() -> (
        Sender<u32>,
        Receiver<u32>,
        tokio::task::JoinHandle<Result<(), u32>>,
    ) {
        let (tx, rx) = channel::<u32>(1);
        tx.try_send(1).unwrap();
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(2).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        (tx, rx, waiting)
    }

    #[tokio::test]
    async fn a_full_mailbox_makes_send_wait_until_a_message_is_taken() {
        let (_tx, mut rx, waiting) = full_with_a_waiting_sender().await;
        assert!(
            !waiting.is_finished(),
            "send waits while the mailbox is full"
        );
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(waiting.await.unwrap(), Ok(()));
        assert_eq!(rx.recv().await, Some(2));
    }

    #[tokio::test]
    async fn recv_ends_when_every_sender_is_gone_after_the_queue_drains() {
        let (tx, mut rx) = channel::<u32>(4);
        let tx2 = tx.clone();
        tx.try_send(1).unwrap();
        drop(tx);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(v) = rx.recv().await {
                got.push(v);
            }
            got
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx2.try_send(2).unwrap();
        drop(tx2);
        let got = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("recv ends once every sender is gone")
            .unwrap();
        assert_eq!(got, vec![1, 2]);
    }

    #[tokio::test]
    async fn close_refuses_new_messages_wakes_waiting_senders_and_keeps_the_queue() {
        let (tx, mut rx, waiting) = full_with_a_waiting_sender().await;
        rx.close();
        assert_eq!(
            waiting.await.unwrap(),
            Err(2),
            "the waiting message comes back"
        );
        assert!(matches!(tx.try_send(3), Err(TrySendError::Closed(3))));
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(rx.try_recv(), None);
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_drained_backlog_gives_its_buffer_back() {
        let (tx, mut rx) = channel::<u64>(1000);
        for i in 0..100 {
            tx.try_send(i).unwrap();
        }
        for i in 0..100 {
            assert_eq!(rx.recv().await, Some(i));
        }
        assert_eq!(rx.shared.lock().queue.capacity(), 0);
        assert_eq!(rx.len(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_long_backlog_lets_other_tasks_run() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (tx, mut rx) = channel::<u32>(1000);
        for i in 0..1000 {
            tx.try_send(i).unwrap();
        }
        let ran = Arc::new(AtomicBool::new(false));
        tokio::spawn({
            let ran = ran.clone();
            async move { ran.store(true, Ordering::SeqCst) }
        });
        let mut seen_at = None;
        for i in 0..1000 {
            assert_eq!(rx.recv().await, Some(i));
            if seen_at.is_none() && ran.load(Ordering::SeqCst) {
                seen_at = Some(i);
            }
        }
        assert!(
            seen_at.is_some(),
            "another task ran while 1,000 queued messages were taken"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_senders_lose_nothing_under_contention() {
        let (tx, mut rx) = channel::<(u32, u32)>(8);
        let mut senders = Vec::new();
        for s in 0..4 {
            let tx = tx.clone();
            senders.push(tokio::spawn(async move {
                for i in 0..5000 {
                    if i % 2 == 0 {
                        tx.send((s, i)).await.unwrap();
                    } else {
                        let mut v = (s, i);
                        loop {
                            match tx.try_send(v) {
                                Ok(()) => break,
                                Err(TrySendError::Full(back)) => {
                                    v = back;
                                    tokio::task::yield_now().await;
                                }
                                Err(TrySendError::Closed(_)) => panic!("closed"),
                            }
                        }
                    }
                }
            }));
        }
        drop(tx);
        let mut next = [0u32; 4];
        while let Some((s, i)) = rx.recv().await {
            assert_eq!(next[s as usize], i, "sender {s}'s messages in order");
            next[s as usize] += 1;
        }
        for t in senders {
            t.await.unwrap();
        }
        assert_eq!(next, [5000; 4]);
    }
}
