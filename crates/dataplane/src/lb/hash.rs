//! Fast, stable 64-bit hashing for load balancing (the same key hashes the same in every process
//! and release, so consistent hashing stays consistent across gateway restarts), and a cheap
//! per-thread random source.

use std::cell::Cell;

/// FNV-1a over `bytes`, finished with [`mix`] so that nearby inputs land far apart.
#[inline]
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// The SplitMix64 finalizer: a bijective avalanche of 64 bits.
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(rand::random::<u64>());
}

/// A random 64-bit number from a per-thread SplitMix64 sequence (seeded once per thread): no
/// locking, no system call. For load-balancing draws and backoff jitter, not for secrets.
#[inline]
pub fn random_u64() -> u64 {
    RNG.with(|s| {
        let state = s.get();
        s.set(state.wrapping_add(0x9e37_79b9_7f4a_7c15));
        mix(state)
    })
}

/// A uniformly distributed value in `0..n` from a 64-bit draw (Lemire's multiply-shift).
#[inline]
pub fn below(draw: u64, n: u64) -> u64 {
    ((u128::from(draw) * u128::from(n)) >> 64) as u64
}
