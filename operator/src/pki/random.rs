//! Injected randomness: serial numbers, jitter seeds and (for ECDSA P-256 and Ed25519) private
//! keys are drawn from a [`Randomness`] so tests can make issuance reproducible.

use std::fmt;

use sha2::{Digest, Sha256};

use super::PkiError;

/// A source of cryptographically strong random bytes.
///
/// Production code uses [`OsRandomness`]. Tests use [`SeededRandomness`] to get the same keys and
/// serials on every run.
pub trait Randomness {
    /// Fills `dest` with random bytes.
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), PkiError>;
}

/// The operating system's CSPRNG (through aws-lc).
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandomness;

impl Randomness for OsRandomness {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), PkiError> {
        aws_lc_rs::rand::fill(dest).map_err(|_| PkiError::Randomness("OS RNG unavailable".into()))
    }
}

/// A deterministic stream: SHA-256(seed ‖ block counter), block after block.
///
/// For tests and reproducible fixtures only: anyone who knows the seed knows every key drawn
/// from it. The seed is redacted from `Debug`.
#[derive(Clone)]
pub struct SeededRandomness {
    seed: [u8; 32],
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl SeededRandomness {
    /// A stream determined entirely by `seed`.
    pub fn new(seed: &[u8]) -> Self {
        let seed: [u8; 32] = Sha256::digest(seed).into();
        SeededRandomness {
            seed,
            counter: 0,
            block: [0; 32],
            used: 32,
        }
    }

    fn refill(&mut self) {
        let mut h = Sha256::new();
        h.update(self.seed);
        h.update(self.counter.to_be_bytes());
        self.block = h.finalize().into();
        self.counter += 1;
        self.used = 0;
    }
}

impl fmt::Debug for SeededRandomness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeededRandomness")
            .field("seed", &"[redacted]")
            .field("counter", &self.counter)
            .finish()
    }
}

impl Randomness for SeededRandomness {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), PkiError> {
        for byte in dest.iter_mut() {
            if self.used == self.block.len() {
                self.refill();
            }
            *byte = self.block[self.used];
            self.used += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_stream_is_reproducible_and_seed_dependent() {
        let mut a = SeededRandomness::new(b"one");
        let mut b = SeededRandomness::new(b"one");
        let mut c = SeededRandomness::new(b"two");
        let (mut x, mut y, mut z) = ([0u8; 100], [0u8; 100], [0u8; 100]);
        a.fill(&mut x).unwrap();
        b.fill(&mut y[..7]).unwrap();
        b.fill(&mut y[7..]).unwrap();
        c.fill(&mut z).unwrap();
        assert_eq!(x, y, "chunking must not change the stream");
        assert_ne!(x, z);
        assert!(!format!("{a:?}").contains(&hex::encode(a.seed)));
    }

    #[test]
    fn os_randomness_differs_between_draws() {
        let (mut x, mut y) = ([0u8; 32], [0u8; 32]);
        OsRandomness.fill(&mut x).unwrap();
        OsRandomness.fill(&mut y).unwrap();
        assert_ne!(x, y);
    }
}
