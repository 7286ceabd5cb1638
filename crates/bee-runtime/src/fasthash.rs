//! The hash of the per-message lookups (service address → mailbox, name → address,
//! command name → handler): foldhash's fast variant.
//!
//! The keys are short and chosen by the node's operator or the service's author (a wire
//! message only looks keys up, it never inserts them), so the DoS resistance of SipHash
//! (the std default) buys nothing here, while it costs time on every message. foldhash
//! reads a short key in a few word-sized loads (a byte-at-a-time hash such as FNV-1a
//! spends ~60 instructions on a four-letter command name and its length); each map still
//! gets its own random seed.

/// Builds the hashers of those tables (for `HashMap`/`DashMap`).
pub type FastBuild = foldhash::fast::RandomState;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_with_it_finds_what_it_holds() {
        let m: dashmap::DashMap<String, u32, FastBuild> = dashmap::DashMap::default();
        for i in 0..1000u32 {
            m.insert(format!("svc{i}"), i);
        }
        assert!((0..1000u32).all(|i| m.get(&format!("svc{i}")).map(|v| *v) == Some(i)));
        assert!(m.get("svc1000").is_none());
        let n: std::collections::HashMap<Vec<u8>, u32, FastBuild> = (0..100u32)
            .map(|i| (format!("cmd{i}").into_bytes(), i))
            .collect();
        assert_eq!(n.get(&b"cmd42"[..]), Some(&42));
        assert_eq!(n.get(&b"cmd100"[..]), None);
    }
}
