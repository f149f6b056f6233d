//! Hashing and random numbers: FNV-1a fingerprints (corpus fingerprints, run and point ids)
//! and the xoshiro256** generator every seeded choice uses. A leaf: imports nothing of the
//! crate, so every stage can use it.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01B3;

/// FNV-1a, for stable fingerprints and run ids.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_iter(bytes.iter().copied())
}

/// FNV-1a of u16 tokens, little-endian bytes (the same value as [`fnv1a`] of those bytes).
pub fn fnv1a_u16(tokens: &[u16]) -> u64 {
    fnv1a_iter(tokens.iter().flat_map(|t| t.to_le_bytes()))
}

fn fnv1a_iter(bytes: impl Iterator<Item = u8>) -> u64 {
    bytes.fold(FNV_OFFSET, |h, b| (h ^ b as u64).wrapping_mul(FNV_PRIME))
}

/// A stable 16-hex-digit id from any text.
pub fn hex_id(key: &str) -> String {
    format!("{:016x}", fnv1a(key.as_bytes()))
}

/// splitmix64: the output for state `x` (the state advanced by the golden-ratio step, then
/// finalised). Seeds [`Rng`], hashes n-gram keys, and keys per-seed data orders.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256** seeded through splitmix64: small, fast and stable across versions.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            let out = splitmix64(z);
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            out
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let r = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        r
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.next_f64().max(1e-300);
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// A seeded bijection of `0..n` (a 4-round Feistel network on the smallest even-bit domain
/// that holds `n`, cycle-walked back into `0..n`): any element is computed directly in O(1)
/// memory, so a run of a billion windows can be shuffled without a table.
#[derive(Debug, Clone, Copy)]
pub struct Permutation {
    n: u64,
    half_bits: u32,
    keys: [u64; 4],
}

impl Permutation {
    pub fn new(n: u64, seed: u64) -> Self {
        let bits = 64 - n.saturating_sub(1).leading_zeros();
        let mut rng = Rng::new(seed ^ n.wrapping_mul(0xA24B_AED4_963E_E407));
        Permutation {
            n,
            half_bits: bits.div_ceil(2).max(1),
            keys: [
                rng.next_u64(),
                rng.next_u64(),
                rng.next_u64(),
                rng.next_u64(),
            ],
        }
    }

    /// The image of `i` (< n).
    pub fn apply(&self, i: u64) -> u64 {
        debug_assert!(i < self.n);
        let mut x = i;
        loop {
            x = self.feistel(x);
            if x < self.n {
                return x;
            }
        }
    }

    fn feistel(&self, x: u64) -> u64 {
        let h = self.half_bits;
        let mask = (1u64 << h) - 1;
        let (mut l, mut r) = (x >> h, x & mask);
        for k in self.keys {
            let f = fnv1a(&(r ^ k).to_le_bytes()).rotate_left(17) & mask;
            (l, r) = (r, l ^ f);
        }
        (l << h) | r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a_u16(&[0x6261]), fnv1a(b"ab"));
    }

    #[test]
    fn permutations_are_bijections_and_seeded() {
        for n in [1u64, 2, 3, 7, 64, 1000, 4097] {
            let p = Permutation::new(n, 9);
            let mut seen: Vec<u64> = (0..n).map(|i| p.apply(i)).collect();
            seen.sort();
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "n = {n}");
        }
        let a: Vec<u64> = (0..100)
            .map(|i| Permutation::new(100, 1).apply(i))
            .collect();
        let b: Vec<u64> = (0..100)
            .map(|i| Permutation::new(100, 2).apply(i))
            .collect();
        assert_ne!(a, b);
        assert_ne!(a, (0..100).collect::<Vec<_>>(), "shuffled");
        assert_eq!(
            a,
            (0..100)
                .map(|i| Permutation::new(100, 1).apply(i))
                .collect::<Vec<_>>()
        );
    }
}
