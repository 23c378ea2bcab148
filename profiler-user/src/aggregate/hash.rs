//! The hasher of the aggregator's maps: every sample looks up each of its frames (strings: function, file, module
//! path, build-id) and then its whole stack, so hashing is most of what aggregating a sample costs. std's SipHash
//! resists collision attacks at several times the cost; the keys here come from the binaries being profiled,
//! whose authors are the profiler's users, so the cheaper multiply-rotate hash rustc uses (FxHash) is enough.
use std::hash::{BuildHasherDefault, Hasher};

/// `HashMap<K, V, FxBuildHasher>`.
pub(crate) type FxBuildHasher = BuildHasherDefault<FxHasher>;

#[derive(Clone, Copy, Default)]
pub(crate) struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    fn write_u32(&mut self, value: u32) {
        self.add(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher as _;

    use super::*;

    #[test]
    fn equal_keys_hash_equal_and_different_keys_differ() {
        let build = FxBuildHasher::default();
        assert_eq!(build.hash_one("_PyEval_EvalFrameDefault"), build.hash_one("_PyEval_EvalFrameDefault"));
        assert_ne!(build.hash_one("hot_main_a"), build.hash_one("hot_main_b"));
        // str's Hash adds a terminator, so moving bytes between fields changes the hash.
        assert_ne!(build.hash_one(("ab", "c")), build.hash_one(("a", "bc")));
    }
}
