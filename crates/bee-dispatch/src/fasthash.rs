//! FNV-1a, the hash of the per-message lookups (service address → mailbox, name →
//! address, command name → handler).
//!
//! The keys are short and chosen by the node's operator or the service's author (a wire
//! message only looks keys up, it never inserts them), so a keyed hash (SipHash, the std
//! default) buys no protection here but costs time on every message.

/// FNV-1a hasher.
#[derive(Default, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// Builds [`Fnv`] hashers (for `HashMap`/`DashMap`).
pub(crate) type FnvBuild = std::hash::BuildHasherDefault<Fnv>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hasher};

    #[test]
    fn matches_the_published_fnv1a_values() {
        // Reference values of 64-bit FNV-1a.
        let h = |s: &[u8]| {
            let mut f = FnvBuild::default().build_hasher();
            f.write(s);
            f.finish()
        };
        assert_eq!(h(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(h(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn a_map_with_it_finds_what_it_holds() {
        let m: dashmap::DashMap<String, u32, FnvBuild> = dashmap::DashMap::default();
        for i in 0..1000u32 {
            m.insert(format!("svc{i}"), i);
        }
        assert!((0..1000u32).all(|i| m.get(&format!("svc{i}")).map(|v| *v) == Some(i)));
        assert!(m.get("svc1000").is_none());
    }
}
