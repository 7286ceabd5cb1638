//! A service's mailbox: a bounded first-in first-out queue with one receiver (the
//! service's task) and any number of senders.
//!
//! It holds little while idle: a node may host thousands of mostly idle services
//! (skynet's Lua services), and tokio's bounded channel sets aside a block of 32 slots
//! (about 2 KiB of bee's envelopes) per channel up front. Here the queue is a [`Fifo`]:
//! one message inline, more allocated only while more wait.
//!
//! Senders either fail at once when the mailbox is full ([`Mailbox::try_push`]) or wait
//! for room ([`Mailbox::push`]); after [`Mailbox::close`] every push fails and the
//! receiver gets what is still queued, then `None`.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Poll, Waker};

use tokio::sync::Notify;

/// A first-in first-out queue that keeps its oldest item inline and allocates only while
/// more than one item waits, giving the allocation back when that is over. A service's
/// queue mostly holds no message or one (an idle service, a call answered before the next
/// one comes), so those allocate nothing for it.
pub struct Fifo<T> {
    /// The oldest item; `None` only when the queue is empty.
    head: Option<T>,
    /// The items after it.
    rest: VecDeque<T>,
}

impl<T> Default for Fifo<T> {
    fn default() -> Self {
        Fifo::new()
    }
}

impl<T> Fifo<T> {
    /// An empty queue (allocates nothing).
    pub const fn new() -> Fifo<T> {
        Fifo {
            head: None,
            rest: VecDeque::new(),
        }
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        usize::from(self.head.is_some()) + self.rest.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// Queue `item` last.
    pub fn push_back(&mut self, item: T) {
        if self.head.is_none() {
            self.head = Some(item);
        } else {
            self.rest.push_back(item);
        }
    }

    /// Take the oldest item.
    pub fn pop_front(&mut self) -> Option<T> {
        let item = self.head.take()?;
        self.head = self.rest.pop_front();
        if self.rest.is_empty() && self.rest.capacity() > 0 {
            self.rest = VecDeque::new();
        }
        Some(item)
    }
}

/// A bounded queue of `T` with one receiver.
pub(crate) struct Mailbox<T> {
    state: Mutex<State<T>>,
    /// Set once by [`Mailbox::close`]; read without the lock.
    closed: AtomicBool,
    /// Senders waiting for room.
    room: Notify,
    capacity: usize,
}

struct State<T> {
    queue: Fifo<T>,
    closed: bool,
    /// The receiver waiting for a message.
    receiver: Option<Waker>,
}

/// Why [`Mailbox::try_push`] did not take an item (which comes back).
pub(crate) enum PushError<T> {
    Full(T),
    Closed(T),
}

impl<T> Mailbox<T> {
    /// An empty mailbox holding at most `capacity` items (at least 1).
    pub(crate) fn new(capacity: usize) -> Mailbox<T> {
        Mailbox {
            state: Mutex::new(State {
                queue: Fifo::new(),
                closed: false,
                receiver: None,
            }),
            closed: AtomicBool::new(false),
            room: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while the lock is held cannot leave the queue half-updated (each
        // operation is one push or pop); keep the mailbox usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Items queued now.
    pub(crate) fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether nothing is queued now.
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().queue.is_empty()
    }

    /// Whether [`Mailbox::close`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Queue `item` if there is room and the mailbox is open.
    pub(crate) fn try_push(&self, item: T) -> Result<(), PushError<T>> {
        let mut s = self.lock();
        if s.closed {
            return Err(PushError::Closed(item));
        }
        if s.queue.len() >= self.capacity {
            return Err(PushError::Full(item));
        }
        s.queue.push_back(item);
        let waker = s.receiver.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Queue `item`, waiting while the mailbox is full; the item comes back if the
    /// mailbox is (or gets) closed.
    pub(crate) async fn push(&self, mut item: T) -> Result<(), T> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            // Registered before trying, so a pop between the try and the wait is seen.
            room.as_mut().enable();
            match self.try_push(item) {
                Ok(()) => {
                    // Another sender may wait behind this one while room is left: pass
                    // the turn on (a pop wakes only one waiter).
                    if self.len() < self.capacity {
                        self.room.notify_one();
                    }
                    return Ok(());
                }
                Err(PushError::Closed(i)) => return Err(i),
                Err(PushError::Full(i)) => item = i,
            }
            room.await;
        }
    }

    /// The next item, waiting for one; `None` once the mailbox is closed and empty.
    pub(crate) async fn recv(&self) -> Option<T> {
        poll_fn(|cx| {
            let mut s = self.lock();
            if let Some(item) = self.pop(&mut s) {
                return Poll::Ready(Some(item));
            }
            if s.closed {
                return Poll::Ready(None);
            }
            match &mut s.receiver {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    /// The next item if one is queued.
    pub(crate) fn try_recv(&self) -> Option<T> {
        let mut s = self.lock();
        self.pop(&mut s)
    }

    fn pop(&self, s: &mut State<T>) -> Option<T> {
        let was_full = s.queue.len() >= self.capacity;
        let item = s.queue.pop_front()?;
        if was_full {
            self.room.notify_one();
        }
        Some(item)
    }

    /// Refuse every later push and wake the receiver and waiting senders; what is queued
    /// stays for the receiver to take.
    pub(crate) fn close(&self) {
        let waker = {
            let mut s = self.lock();
            s.closed = true;
            self.closed.store(true, Ordering::Release);
            s.receiver.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        self.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn items_come_out_in_order_and_a_full_mailbox_refuses_or_waits() {
        let m = Arc::new(Mailbox::new(2));
        assert!(m.try_push(1).is_ok());
        assert!(m.try_push(2).is_ok());
        assert!(matches!(m.try_push(3), Err(PushError::Full(3))));
        let waiting = {
            let m = m.clone();
            tokio::spawn(async move { m.push(3).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "no room yet");
        assert_eq!(m.recv().await, Some(1));
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting push got room")
            .unwrap()
            .unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m.recv().await, Some(2));
        assert_eq!(m.recv().await, Some(3));
        assert_eq!(m.try_recv(), None);
    }

    #[tokio::test]
    async fn every_waiting_sender_gets_in_when_room_comes() {
        let m = Arc::new(Mailbox::new(1));
        m.try_push(0).ok().unwrap();
        let senders: Vec<_> = (1..=3)
            .map(|i| {
                let m = m.clone();
                tokio::spawn(async move { m.push(i).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut got = Vec::new();
        for _ in 0..4 {
            let v = tokio::time::timeout(Duration::from_secs(5), m.recv())
                .await
                .expect("a message within 5 s");
            got.push(v.unwrap());
        }
        for s in senders {
            s.await.unwrap().unwrap();
        }
        got.sort();
        assert_eq!(got, [0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn close_refuses_pushes_wakes_everyone_and_keeps_what_was_queued() {
        let m = Arc::new(Mailbox::new(1));
        m.try_push(7).ok().unwrap();
        let blocked = {
            let m = m.clone();
            tokio::spawn(async move { m.push(8).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        m.close();
        let back = tokio::time::timeout(Duration::from_secs(5), blocked)
            .await
            .expect("the waiting sender was woken")
            .unwrap();
        assert_eq!(back, Err(8), "its item comes back");
        assert!(matches!(m.try_push(9), Err(PushError::Closed(9))));
        assert!(m.is_closed());
        assert_eq!(m.recv().await, Some(7));
        assert_eq!(m.recv().await, None);

        let idle: Arc<Mailbox<u8>> = Arc::new(Mailbox::new(4));
        let receiver = {
            let m = idle.clone();
            tokio::spawn(async move { m.recv().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        idle.close();
        let got = tokio::time::timeout(Duration::from_secs(5), receiver)
            .await
            .expect("the waiting receiver was woken")
            .unwrap();
        assert_eq!(got, None);
    }

    #[test]
    fn a_fifo_keeps_order_and_allocates_only_while_two_or_more_wait() {
        let mut q = Fifo::new();
        assert!(q.is_empty());
        q.push_back(1);
        assert_eq!(q.rest.capacity(), 0, "one item is kept inline");
        for i in 2..=100 {
            q.push_back(i);
        }
        assert_eq!(q.len(), 100);
        assert!(q.rest.capacity() > 0);
        let mut got = Vec::new();
        for _ in 0..50 {
            got.push(q.pop_front().unwrap());
        }
        q.push_back(101);
        while let Some(i) = q.pop_front() {
            got.push(i);
            if q.len() <= 1 {
                assert_eq!(q.rest.capacity(), 0, "the allocation was given back");
            }
        }
        assert_eq!(got, (1..=101).collect::<Vec<_>>());
        assert!(q.is_empty());
        assert_eq!(q.len(), 0);
        assert_eq!(q.pop_front(), None);
    }
}
