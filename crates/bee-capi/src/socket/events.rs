//! Socket events on their way to the owner: the message in skynet's `struct
//! skynet_socket_message` layout, posted to the owner's mailbox without waiting. When the
//! mailbox is full the event is parked, behind any other parked event of the same
//! socket, and the socket stops reading until the node's socket task has delivered them
//! ([`retry`]), so nothing is lost and nothing overtakes.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use bee_runtime::{Addr, CallError, Message};
use bytes::Bytes;

use super::table::{self, Slot};
use super::{poll, PTYPE_SOCKET};
use crate::{lock, Host};

/// The longest text an event carries (skynet truncates to 128 bytes).
const MAX_TEXT: usize = 128;
/// Size of `struct skynet_socket_message` on LP64.
pub(crate) const MSG_SIZE: usize = 24;

/// One socket event: the message as the owner gets it (`struct skynet_socket_message`,
/// then a text for the events that carry one), and the heap buffer its `buffer` field
/// points to (DATA, UDP), freed here unless delivered.
pub(crate) struct Event {
    payload: Vec<u8>,
    buffer: Option<HeapBuf>,
}

impl Event {
    /// The struct's fields, `buffer` (a pointer, or 0) and `text`, in one allocation.
    fn build(ty: i32, id: i32, ud: i32, buffer: Option<HeapBuf>, text: &[u8]) -> Event {
        let text = &text[..text.len().min(MAX_TEXT)];
        let mut b = Vec::with_capacity(MSG_SIZE + text.len());
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(&id.to_ne_bytes());
        b.extend_from_slice(&ud.to_ne_bytes());
        b.extend_from_slice(&[0; 4]);
        let ptr = buffer.as_ref().map_or(0usize, |h| h.0);
        b.extend_from_slice(&ptr.to_ne_bytes());
        b.extend_from_slice(text);
        Event { payload: b, buffer }
    }

    pub(crate) fn text(ty: i32, id: i32, ud: i32, text: &[u8]) -> Event {
        Event::build(ty, id, ud, None, text)
    }
    pub(crate) fn plain(ty: i32, id: i32, ud: i32) -> Event {
        Event::build(ty, id, ud, None, &[])
    }
    /// DATA / UDP: `bytes` in a malloc'ed block the receiver frees; `ud` as given.
    pub(crate) fn data(ty: i32, id: i32, ud: i32, bytes: &[u8]) -> Option<Event> {
        let buffer = HeapBuf::copy(bytes)?;
        Some(Event::build(ty, id, ud, Some(buffer), &[]))
    }
}

/// A malloc'ed block handed to the receiving service (it frees it with `skynet_free`);
/// freed here if it is never delivered.
pub(crate) struct HeapBuf(usize);

impl HeapBuf {
    fn copy(bytes: &[u8]) -> Option<HeapBuf> {
        // SAFETY: malloc of at least one byte; null is checked.
        let p = unsafe { libc::malloc(bytes.len().max(1)) };
        if p.is_null() {
            tracing::error!(bytes = bytes.len(), "out of memory: socket data dropped");
            return None;
        }
        // SAFETY: `p` has room for bytes.len() bytes; the regions cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.cast::<u8>(), bytes.len()) };
        Some(HeapBuf(p as usize))
    }
    /// Delivered: the receiver owns the block now.
    fn disown(self) {
        std::mem::forget(self);
    }
}

impl Drop for HeapBuf {
    fn drop(&mut self) {
        // SAFETY: the block came from malloc in `copy` and was not handed over.
        unsafe { libc::free(self.0 as *mut libc::c_void) };
    }
}

/// An event waiting for room in its owner's mailbox.
struct Parked {
    id: i32,
    /// None for an event of no socket ("invalid socket").
    slot: Option<&'static Slot>,
    host: Weak<Host>,
    owner: Addr,
    msg: Message,
    buffer: Option<HeapBuf>,
}

static PARKED: Mutex<VecDeque<Parked>> = Mutex::new(VecDeque::new());

/// What a post came to.
enum Posted {
    /// In the mailbox.
    Done,
    /// Dropped: the owner or its node is gone (skynet drops events for a dead owner).
    Dropped,
    /// The mailbox is full: the message comes back, to wait.
    Full(Message),
}

/// Post `msg`, moved in (no copy: the mailbox takes it as it is, and a full one gives it
/// back).
fn post(host: &Weak<Host>, owner: Addr, msg: Message) -> Posted {
    let Some(node) = host.upgrade().and_then(|h| h.node.upgrade()) else {
        return Posted::Dropped;
    };
    match node.post_or_return(owner, msg) {
        Ok(()) => Posted::Done,
        Err((CallError::Overloaded { .. }, msg)) if !node.is_stopping() => Posted::Full(msg),
        Err(_) => Posted::Dropped,
    }
}

/// Post `e` from socket `id` (in `slot`, whose lock the caller holds) to `owner`. True when
/// it was parked: the caller holds the socket's reading until [`retry`] delivers it.
pub(crate) fn deliver(
    slot: &'static Slot,
    id: i32,
    host: &Weak<Host>,
    owner: Addr,
    e: Event,
) -> bool {
    park_or_post(Some(slot), id, host, owner, e)
}

/// Post an event that belongs to no socket (an unknown id) to `owner`.
pub(crate) fn post_now(host: &Arc<Host>, owner: Addr, e: Event) {
    park_or_post(None, -1, &Arc::downgrade(host), owner, e);
}

fn park_or_post(
    slot: Option<&'static Slot>,
    id: i32,
    host: &Weak<Host>,
    owner: Addr,
    e: Event,
) -> bool {
    let msg = Message {
        source: 0,
        ptype: PTYPE_SOCKET,
        session: 0,
        payload: Bytes::from(e.payload),
    };
    let buffer = e.buffer;
    // Behind this socket's parked events, never before them.
    let msg = if slot.is_none_or(|s| s.parked.load(Ordering::Acquire) == 0) {
        match post(host, owner, msg) {
            Posted::Done => {
                if let Some(b) = buffer {
                    b.disown();
                }
                return false;
            }
            Posted::Dropped => return false,
            Posted::Full(msg) => msg,
        }
    } else {
        msg
    };
    let mut q = lock(&PARKED);
    if let Some(slot) = slot {
        slot.parked.fetch_add(1, Ordering::AcqRel);
    }
    q.push_back(Parked {
        id,
        slot,
        host: host.clone(),
        owner,
        msg,
        buffer,
    });
    drop(q);
    poll::wake(host);
    true
}

/// Whether events wait.
pub(crate) fn any_parked() -> bool {
    !lock(&PARKED).is_empty()
}

/// Deliver what has room now, each socket's events in order (an event whose socket has
/// one still waiting before it stays). Sockets whose events are all delivered read
/// again. True if anything was delivered.
pub(crate) fn retry() -> bool {
    let mut released = Vec::new();
    let mut progress = false;
    {
        let mut q = lock(&PARKED);
        let mut blocked: HashSet<usize> = HashSet::new();
        let mut i = 0;
        while i < q.len() {
            let p = &mut q[i];
            let key = p.slot.map_or(0, |s| s as *const Slot as usize);
            if blocked.contains(&key) {
                i += 1;
                continue;
            }
            let msg = std::mem::replace(&mut p.msg, Message::new(0, Bytes::new()));
            match post(&p.host, p.owner, msg) {
                Posted::Full(msg) => {
                    q[i].msg = msg;
                    blocked.insert(key);
                    i += 1;
                }
                done => {
                    progress = true;
                    let Some(p) = q.remove(i) else { break };
                    if let (Posted::Done, Some(b)) = (done, p.buffer) {
                        b.disown();
                    }
                    if let Some(slot) = p.slot {
                        if slot.parked.fetch_sub(1, Ordering::AcqRel) == 1 {
                            released.push(p.id);
                        }
                    }
                }
            }
        }
    }
    for id in released {
        table::release(id);
    }
    progress
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::ev;
    use bee_runtime::service::{Context, HandleResult, Node, RuntimeConfig, Service};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::sync::{mpsc, Semaphore};

    /// Takes each message only when the test lets it, and tells the test its `ud`.
    struct Slow {
        open: Arc<Semaphore>,
        seen: mpsc::UnboundedSender<i32>,
    }

    impl Service for Slow {
        async fn handle(&mut self, _ctx: &mut Context, msg: Message) -> HandleResult {
            self.open.acquire().await.expect("semaphore").forget();
            let ud = i32::from_ne_bytes(msg.payload[8..12].try_into().expect("struct"));
            let _ = self.seen.send(ud);
            Ok(None)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_that_find_the_mailbox_full_wait_in_order_and_none_is_lost() {
        let node = Node::new(
            "parking",
            RuntimeConfig {
                mailbox: 4,
                ..RuntimeConfig::default()
            },
        );
        let host = Host::of(&node).expect("host");
        let open = Arc::new(Semaphore::new(0));
        let (seen, mut got) = mpsc::unbounded_channel();
        let owner = node.spawn(
            "slow",
            Slow {
                open: open.clone(),
                seen,
            },
        );
        // An id whose slot no other test of this process uses.
        let id = 60_001;
        let slot = table::slot_for_test(id);
        let weak = Arc::downgrade(&host);
        let parked = (0..20)
            .filter(|ud| deliver(slot, id, &weak, owner, Event::plain(ev::DATA, id, *ud)))
            .count();
        // The mailbox holds 4 (and the service may have taken one out): the rest wait.
        assert!((15..=16).contains(&parked), "{parked} parked");
        assert!(any_parked());
        open.add_permits(20);
        let mut order = Vec::new();
        for _ in 0..20 {
            let ud = tokio::time::timeout(Duration::from_secs(10), got.recv())
                .await
                .expect("every event arrives (the socket task retries)")
                .expect("service");
            order.push(ud);
        }
        assert_eq!(order, (0..20).collect::<Vec<_>>(), "in the order sent");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while slot.parked.load(Ordering::Acquire) != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "parked count not back to 0"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
