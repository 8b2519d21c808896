//! A small deterministic generator (splitmix64), so fixtures and numbers are comparable
//! between runs.

use std::fmt::Write as _;

/// splitmix64: small, fast, deterministic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn hex(&mut self, len: usize) -> String {
        let mut s = String::with_capacity(len + 16);
        while s.len() < len {
            let _ = write!(s, "{:016x}", self.next());
        }
        s.truncate(len);
        s
    }

    pub fn word(&mut self) -> &'static str {
        const WORDS: [&str; 24] = [
            "alpha", "bravo", "cache", "delta", "edge", "feed", "gamma", "house", "index", "jolt",
            "kilo", "ledger", "metric", "node", "orbit", "pulse", "quota", "relay", "shard",
            "token", "union", "vault", "worker", "zone",
        ];
        WORDS[self.below(WORDS.len() as u64) as usize]
    }
}
