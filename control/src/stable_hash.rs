//! A hash that is the same on every machine and every release (FNV-1a,
//! finished with splitmix64's mixer), for decisions that must not move
//! when a process restarts: which canary bucket a client is in, when in
//! its interval a backend is probed.

/// Hashes byte strings fed one after another.
pub(crate) struct StableHasher(u64);

impl StableHasher {
    /// Starts from FNV-1a's offset basis, mixed with `seed`.
    pub(crate) fn new(seed: u64) -> StableHasher {
        StableHasher(0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    pub(crate) fn eat(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// splitmix64's finisher: nearby inputs land far apart.
    pub(crate) fn finish(self) -> u64 {
        let mut hash = self.0;
        hash ^= hash >> 30;
        hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        hash ^= hash >> 27;
        hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
        hash ^ (hash >> 31)
    }
}
