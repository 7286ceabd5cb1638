//! The allocator of every `snlua` service's Lua state (`skynet_lalloc`, which snlua's
//! own allocation hook calls after counting the bytes).
//!
//! Small blocks come from `malloc`, as in skynet's build without jemalloc. Large growing
//! arrays get mappings of their own: a table's array or hash part, a coroutine stack, the
//! string table, a `luaL_Buffer` — every block Lua reallocates, and every fresh block of
//! Lua's "no object" kind, once it reaches [`LARGE`] bytes. Such a block:
//! - grows and shrinks with `mremap`, without copying (a table of a million entries
//!   doubling does no `memcpy`);
//! - goes back to the system when it is freed or shrinks below [`LARGE`].
//!
//! Why: a table that grows by doubling leaves every smaller copy behind it in the heap,
//! freed but still resident, so a gate that just took ten thousand connections keeps the
//! high-water mark of its connection table's growth. Big *objects* (strings, userdata)
//! stay with `malloc`, whose own threshold keeps a service that handles many large
//! strings from paying a system call for each.
//!
//! Lua hands the allocator the size of the block it frees or resizes, but not what made
//! it, and a C module using Lua's allocator could get that size wrong; the mapped blocks
//! are therefore kept in a registry, looked at only for page-aligned blocks (all of ours,
//! few of `malloc`'s).

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{LazyLock, Mutex};

use crate::lock;

/// Blocks of at least this many bytes of the kinds above get a mapping of their own.
pub const LARGE: usize = 64 * 1024;

/// Mapped blocks: address → mapped length (a whole number of pages).
static MAPPED: LazyLock<Mutex<HashMap<usize, usize>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn page() -> usize {
    static PAGE: LazyLock<usize> = LazyLock::new(|| {
        // SAFETY: sysconf has no preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 {
            p as usize
        } else {
            4096
        }
    });
    *PAGE
}

fn pages(n: usize) -> usize {
    n.div_ceil(page()) * page()
}

/// The mapped length of `ptr` when it is one of ours. Not trusting the size the caller
/// passes (a C module could pass a wrong one): only page-aligned blocks can be ours, and
/// few blocks from `malloc` are.
fn mapped_len(ptr: *mut c_void) -> Option<usize> {
    if ptr.is_null() || !(ptr as usize).is_multiple_of(page()) {
        return None;
    }
    lock(&MAPPED).get(&(ptr as usize)).copied()
}

fn map(n: usize) -> *mut c_void {
    let len = pages(n);
    // SAFETY: an anonymous private mapping; the result is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return std::ptr::null_mut();
    }
    lock(&MAPPED).insert(p as usize, len);
    p
}

fn unmap(ptr: *mut c_void, len: usize) {
    lock(&MAPPED).remove(&(ptr as usize));
    // SAFETY: `ptr`/`len` is a mapping this module made and nothing uses any more.
    unsafe { libc::munmap(ptr, len) };
}

/// Resize the mapped block `ptr` (`len` mapped bytes) to hold `nsize` bytes.
fn remap(ptr: *mut c_void, len: usize, nsize: usize) -> *mut c_void {
    let new_len = pages(nsize);
    if new_len == len {
        return ptr;
    }
    // Held across the call: once the block moves, another thread may map the old address
    // and must not find it here, nor lose its entry to this one's removal.
    let mut m = lock(&MAPPED);
    // SAFETY: `ptr`/`len` is a mapping of ours; MAYMOVE keeps its contents, and on failure
    // the old mapping is left as it was.
    let p = unsafe { libc::mremap(ptr, len, new_len, libc::MREMAP_MAYMOVE) };
    if p == libc::MAP_FAILED {
        return std::ptr::null_mut();
    }
    m.remove(&(ptr as usize));
    m.insert(p as usize, new_len);
    p
}

/// Copy `n` bytes from `from` into the fresh block `to` (non-null).
///
/// # Safety
/// Both blocks hold at least `n` bytes and do not overlap.
unsafe fn copy(from: *const c_void, to: *mut c_void, n: usize) {
    // SAFETY: as the caller promises.
    unsafe { std::ptr::copy_nonoverlapping(from.cast::<u8>(), to.cast::<u8>(), n) };
}

/// Lua's allocation function, as snlua calls it (`lua_Alloc` without the `ud`): `ptr` is
/// NULL for a new block (then `osize` is the kind of object, 0 for none), otherwise a
/// block of `osize` bytes from this function; `nsize` 0 frees it. On failure it returns
/// NULL and leaves the old block as it was.
#[no_mangle]
pub extern "C" fn skynet_lalloc(ptr: *mut c_void, osize: usize, nsize: usize) -> *mut c_void {
    if ptr.is_null() {
        if nsize == 0 {
            return std::ptr::null_mut();
        }
        // osize 0: a block that is no Lua object (a vector that may grow).
        if osize == 0 && nsize >= LARGE {
            return map(nsize);
        }
        // SAFETY: plain malloc of a non-zero size.
        return unsafe { libc::malloc(nsize) };
    }
    let mapped = mapped_len(ptr);
    if nsize == 0 {
        match mapped {
            Some(len) => unmap(ptr, len),
            // SAFETY: `ptr` is a malloc'ed block of ours, freed once.
            None => unsafe { libc::free(ptr) },
        }
        return std::ptr::null_mut();
    }
    match (mapped, nsize >= LARGE) {
        (Some(len), true) => remap(ptr, len, nsize),
        (Some(len), false) => {
            // SAFETY: plain malloc of a non-zero size.
            let p = unsafe { libc::malloc(nsize) };
            if p.is_null() {
                return p;
            }
            // SAFETY: the old block maps len > nsize bytes, the new one holds nsize.
            unsafe { copy(ptr, p, nsize.min(len)) };
            unmap(ptr, len);
            p
        }
        (None, true) => {
            let p = map(nsize);
            if p.is_null() {
                return p;
            }
            // SAFETY: `ptr` is a malloc'ed block of ours; a resize keeps min(osize, nsize)
            // bytes, bounded by what the block really holds in case `osize` is wrong.
            let keep = osize
                .min(nsize)
                .min(unsafe { libc::malloc_usable_size(ptr) });
            // SAFETY: the old block holds `keep` bytes, the new one at least nsize ≥ keep.
            unsafe { copy(ptr, p, keep) };
            // SAFETY: the old block is a malloc'ed block of ours, freed once.
            unsafe { libc::free(ptr) };
            p
        }
        // SAFETY: a malloc'ed block of ours (or realloc's own NULL case) to a non-zero size.
        (None, false) => unsafe { libc::realloc(ptr, nsize) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(p: *mut c_void, n: usize, seed: u8) {
        // SAFETY: the test's block holds n bytes.
        let s = unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), n) };
        for (i, b) in s.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
        }
    }

    fn holds(p: *mut c_void, n: usize, seed: u8) -> bool {
        // SAFETY: the test's block holds at least n bytes.
        let s = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), n) };
        s.iter()
            .enumerate()
            .all(|(i, b)| *b == (i as u8).wrapping_mul(31).wrapping_add(seed))
    }

    fn is_mapped(p: *mut c_void) -> bool {
        lock(&MAPPED).contains_key(&(p as usize))
    }

    /// One test at a time: an address one test unmapped may be mapped again by another,
    /// which would fool the first one's look at the registry.
    fn serial() -> std::sync::MutexGuard<'static, ()> {
        static SERIAL: Mutex<()> = Mutex::new(());
        lock(&SERIAL)
    }

    #[test]
    fn a_vector_growing_past_the_threshold_is_mapped_and_keeps_its_contents() {
        let _one = serial();
        let mut size = 1024;
        let mut p = skynet_lalloc(std::ptr::null_mut(), 0, size);
        fill(p, size, 7);
        while size < 1 << 20 {
            let next = size * 2;
            p = skynet_lalloc(p, size, next);
            assert!(!p.is_null());
            assert!(holds(p, size, 7), "contents lost growing {size} -> {next}");
            fill(p, next, 7);
            assert_eq!(is_mapped(p), next >= LARGE, "{next} bytes");
            size = next;
        }
        // Shrinking below the threshold goes back to malloc, contents kept.
        let q = skynet_lalloc(p, size, 1000);
        assert!(!q.is_null() && !is_mapped(q) && !is_mapped(p));
        assert!(holds(q, 1000, 7));
        assert!(skynet_lalloc(q, 1000, 0).is_null());
    }

    #[test]
    fn large_objects_stay_with_malloc_and_are_freed_by_it() {
        let _one = serial();
        // A long string (kind 4) of 200 KiB: not mapped by us, freed with free.
        let s = skynet_lalloc(std::ptr::null_mut(), 4, 200 * 1024);
        assert!(!s.is_null() && !is_mapped(s));
        fill(s, 200 * 1024, 3);
        assert!(holds(s, 200 * 1024, 3));
        assert!(skynet_lalloc(s, 200 * 1024, 0).is_null());
        // A large fresh vector is mapped and unmapped when freed.
        let v = skynet_lalloc(std::ptr::null_mut(), 0, LARGE);
        assert!(is_mapped(v));
        fill(v, LARGE, 9);
        let w = skynet_lalloc(v, LARGE, LARGE + 10);
        assert!(is_mapped(w) && holds(w, LARGE, 9));
        assert!(skynet_lalloc(w, LARGE + 10, 0).is_null());
        assert!(!is_mapped(w));
        // Nothing to free.
        assert!(skynet_lalloc(std::ptr::null_mut(), 0, 0).is_null());
    }

    #[test]
    fn a_wrong_old_size_neither_leaks_a_mapping_nor_overreads() {
        let _one = serial();
        // A mapped block freed with a small (wrong) size is still unmapped.
        let v = skynet_lalloc(std::ptr::null_mut(), 0, 2 * LARGE);
        assert!(is_mapped(v));
        assert!(skynet_lalloc(v, 100, 0).is_null());
        assert!(!is_mapped(v));
        // A malloc'ed block resized past the threshold with a too large old size: only
        // what the block holds is copied.
        let m = skynet_lalloc(std::ptr::null_mut(), 0, 100);
        fill(m, 100, 5);
        let g = skynet_lalloc(m, 10 * LARGE, 2 * LARGE);
        assert!(is_mapped(g) && holds(g, 100, 5));
        assert!(skynet_lalloc(g, 2 * LARGE, 0).is_null());
    }
}
