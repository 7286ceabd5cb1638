//! Byte budgets: a cheap shared counter of bytes held, with a limit, that every channel
//! and every accepted connection of a node can share ([`ByteBudget`]), and the
//! [`Permit`] that holds part of it until dropped.
//!
//! A node typically makes two: one for **inbound** bytes held (requests and pushes from
//! the moment they are read until the service has finished with them — the permit
//! travels inside the payload, [`Permit::carry`] — and half-assembled multi-part
//! requests and responses) and one for **outbound** bytes queued for writing on its channels, and puts
//! clones in every [`ChannelConfig`](crate::ChannelConfig) and
//! [`ListenerConfig`](crate::ListenerConfig). Per-peer limits
//! (`max_queued_bytes`, `max_inbound_bytes`) sit below them, so one peer cannot take the
//! whole node budget.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

/// A limit on bytes held, shared by clones (an `Arc` around an atomic counter).
#[derive(Clone)]
pub struct ByteBudget {
    inner: Arc<Inner>,
}

struct Inner {
    limit: usize,
    used: AtomicUsize,
    rejected: AtomicUsize,
}

impl std::fmt::Debug for ByteBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteBudget")
            .field("used", &self.used())
            .field("limit", &self.limit())
            .finish()
    }
}

impl ByteBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> ByteBudget {
        ByteBudget {
            inner: Arc::new(Inner {
                limit,
                used: AtomicUsize::new(0),
                rejected: AtomicUsize::new(0),
            }),
        }
    }

    /// Take `n` bytes of the budget if that keeps it within its limit; `None` (and one
    /// more rejection counted) if not. The bytes are given back when the permit drops.
    pub fn try_acquire(&self, n: usize) -> Option<Permit> {
        let mut used = self.inner.used.load(Ordering::Relaxed);
        loop {
            let next = used.checked_add(n)?;
            if next > self.inner.limit {
                self.inner.rejected.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            match self.inner.used.compare_exchange_weak(
                used,
                next,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(Permit {
                        budget: self.clone(),
                        n,
                    })
                }
                Err(now) => used = now,
            }
        }
    }

    /// Hold `n` more bytes without asking (bytes already taken on, e.g. an answer queued
    /// for writing); given back with [`ByteBudget::discharge`].
    pub(crate) fn charge(&self, n: usize) {
        self.inner.used.fetch_add(n, Ordering::AcqRel);
    }

    /// Give back `n` bytes taken with [`ByteBudget::charge`].
    pub(crate) fn discharge(&self, n: usize) {
        self.inner.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// Whether `n` more bytes would keep it within its limit; counts a rejection when
    /// not.
    pub(crate) fn has_room(&self, n: usize) -> bool {
        let fits = self
            .inner
            .used
            .load(Ordering::Relaxed)
            .checked_add(n)
            .is_some_and(|next| next <= self.inner.limit);
        if !fits {
            self.inner.rejected.fetch_add(1, Ordering::Relaxed);
        }
        fits
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// How many [`try_acquire`](Self::try_acquire) calls were refused so far.
    pub fn rejected(&self) -> usize {
        self.inner.rejected.load(Ordering::Relaxed)
    }
}

/// Bytes held of a [`ByteBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Permit {
    budget: ByteBudget,
    n: usize,
}

impl Permit {
    /// Bytes this permit holds.
    pub fn bytes(&self) -> usize {
        self.n
    }

    /// Take over the bytes of `other` (a permit of the same budget).
    pub(crate) fn absorb(&mut self, mut other: Permit) {
        debug_assert!(Arc::ptr_eq(&self.budget.inner, &other.budget.inner));
        self.n += std::mem::take(&mut other.n);
    }

    /// Make `data` carry this permit: the bytes stay charged until the last clone of the
    /// returned [`Bytes`] is dropped, wherever it went (a service's mailbox, a task that
    /// answers later), whatever happened to the connection it came from. With `copy`,
    /// the bytes are first copied into an allocation of their own, so that a small
    /// slice does not keep a whole read buffer alive uncharged.
    pub fn carry(self, data: Bytes, copy: bool) -> Bytes {
        let data = if copy {
            Bytes::copy_from_slice(&data)
        } else {
            data
        };
        Bytes::from_owner(Charged {
            data,
            _permit: self,
        })
    }

    /// Give back `n` of the bytes held now (at most all of them).
    pub(crate) fn release(&mut self, n: usize) {
        let n = n.min(self.n);
        self.n -= n;
        self.budget.inner.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Bytes with the permit that charges them (see [`Permit::carry`]).
struct Charged {
    data: Bytes,
    _permit: Permit,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.n > 0 {
            self.budget.inner.used.fetch_sub(self.n, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_hold_and_give_back() {
        let b = ByteBudget::new(100);
        let p = b.try_acquire(60).unwrap();
        assert!(b.try_acquire(41).is_none());
        assert_eq!(b.rejected(), 1);
        let mut q = b.try_acquire(40).unwrap();
        assert_eq!(b.used(), 100);
        q.release(15);
        assert_eq!(b.used(), 85);
        let mut all = p;
        all.absorb(q);
        assert_eq!((all.bytes(), b.used()), (85, 85));
        drop(all);
        assert_eq!(b.used(), 0);
        assert!(b.try_acquire(100).is_some());
    }

    #[test]
    fn carried_bytes_hold_the_budget_until_the_last_clone_drops() {
        let b = ByteBudget::new(100);
        let read = Bytes::from(vec![7u8; 64]);
        let payload = b.try_acquire(10).unwrap().carry(read.slice(..10), true);
        let kept = payload.clone();
        assert_eq!(&payload[..], &[7u8; 10]);
        drop(payload);
        assert_eq!(b.used(), 10, "a clone still holds the bytes");
        drop(read);
        assert_eq!(b.used(), 10);
        drop(kept);
        assert_eq!(b.used(), 0);
    }
}
