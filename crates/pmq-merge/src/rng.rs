//! Deterministic per-tensor random streams for DARE.
//!
//! The stream for (seed, tensor name, expert index) depends on nothing else — not on the
//! traversal order, the thread, or the other tensors. The 64-bit seed is FNV-1a over
//! `seed (8 bytes LE) ‖ name (UTF-8) ‖ 0xFF ‖ expert index (8 bytes LE)` and seeds rand's
//! `StdRng` (ChaCha12 in rand 0.9, pinned by Cargo.lock).

use rand::rngs::StdRng;
use rand::SeedableRng;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a hash.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(FNV_OFFSET, |h, &b| (h ^ b as u64).wrapping_mul(FNV_PRIME))
}

/// The RNG for one (seed, tensor, expert) triple.
pub fn tensor_rng(seed: u64, name: &str, expert: usize) -> StdRng {
    let mut bytes = Vec::with_capacity(name.len() + 17);
    bytes.extend_from_slice(&seed.to_le_bytes());
    bytes.extend_from_slice(name.as_bytes());
    bytes.push(0xFF); // not valid UTF-8: separates the name from the index unambiguously
    bytes.extend_from_slice(&(expert as u64).to_le_bytes());
    StdRng::seed_from_u64(fnv1a64(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn fnv1a_reference_values() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn streams_depend_on_all_three_keys() {
        let draw = |s, n, e| tensor_rng(s, n, e).random::<u64>();
        assert_eq!(draw(1, "w", 0), draw(1, "w", 0));
        assert_ne!(draw(1, "w", 0), draw(2, "w", 0));
        assert_ne!(draw(1, "w", 0), draw(1, "v", 0));
        assert_ne!(draw(1, "w", 0), draw(1, "w", 1));
    }
}
