//! Certificate serial numbers. Ours are 128 random bits; certificates from a bring-your-own CA
//! may use up to the RFC 5280 maximum of 20 octets, so that is what we can hold.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{PkiError, Randomness};

/// RFC 5280 §4.1.2.2: serial numbers are at most 20 octets.
const MAX_OCTETS: usize = 20;

/// A positive certificate serial number of at most 20 octets.
///
/// Displayed and serialized as lowercase hex, zero-padded to at least 32 digits (so every
/// 128-bit serial we issue has the same width); this is the form used in the revoked set and
/// in `DeviceIdentity` status. Ordering is numeric.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Serial([u8; MAX_OCTETS]);

impl Serial {
    /// Draws a fresh 128-bit serial (retrying the one-in-2^128 zero). The DER encoding adds a
    /// leading zero octet when the top bit is set, so the serial stays positive.
    pub fn random(rng: &mut dyn Randomness) -> Result<Serial, PkiError> {
        for _ in 0..4 {
            let mut bytes = [0u8; 16];
            rng.fill(&mut bytes)?;
            let value = u128::from_be_bytes(bytes);
            if value != 0 {
                return Ok(Serial::from_u128(value));
            }
        }
        Err(PkiError::Randomness(
            "randomness source returned zero serials repeatedly".into(),
        ))
    }

    /// Wraps a known value.
    pub fn from_u128(value: u128) -> Serial {
        let mut bytes = [0u8; MAX_OCTETS];
        bytes[MAX_OCTETS - 16..].copy_from_slice(&value.to_be_bytes());
        Serial(bytes)
    }

    /// The value, when it fits in 128 bits (always, for serials we issue).
    pub fn to_u128(self) -> Option<u128> {
        if self.0[..MAX_OCTETS - 16].iter().any(|b| *b != 0) {
            return None;
        }
        let mut low = [0u8; 16];
        low.copy_from_slice(&self.0[MAX_OCTETS - 16..]);
        Some(u128::from_be_bytes(low))
    }

    /// Reads a serial from its big-endian magnitude or DER integer content bytes (a leading
    /// sign octet is fine). More than 20 significant octets are refused.
    pub fn from_der_bytes(bytes: &[u8]) -> Result<Serial, PkiError> {
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        let trimmed = &bytes[start..];
        if trimmed.len() > MAX_OCTETS {
            return Err(PkiError::Parse {
                what: "certificate serial".into(),
                reason: format!("{} octets, more than RFC 5280 allows", trimmed.len()),
            });
        }
        let mut buf = [0u8; MAX_OCTETS];
        buf[MAX_OCTETS - trimmed.len()..].copy_from_slice(trimmed);
        Ok(Serial(buf))
    }

    /// Minimal big-endian magnitude (one octet for zero).
    pub fn to_bytes(self) -> Vec<u8> {
        let start = self
            .0
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(MAX_OCTETS - 1);
        self.0[start..].to_vec()
    }

    /// The serial as rcgen wants it (rcgen adds the sign octet).
    pub(crate) fn to_rcgen(self) -> rcgen::SerialNumber {
        rcgen::SerialNumber::from_slice(&self.to_bytes())
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = hex::encode(self.0);
        // 40 digits; keep at least 32, drop leading zeros beyond that.
        let significant = hex.trim_start_matches('0').len();
        f.write_str(&hex[hex.len() - significant.max(32)..])
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({self})")
    }
}

impl FromStr for Serial {
    type Err = PkiError;

    /// Accepts hex with or without `:` separators or a `0x` prefix, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let cleaned: String = s
            .trim()
            .trim_start_matches("0x")
            .chars()
            .filter(|c| *c != ':')
            .collect();
        let bad = |reason: String| PkiError::Parse {
            what: format!("serial {s:?}"),
            reason,
        };
        if cleaned.is_empty() {
            return Err(bad("empty".into()));
        }
        let digits = cleaned.trim_start_matches('0');
        if digits.len() > 2 * MAX_OCTETS {
            return Err(bad("wider than 20 octets".into()));
        }
        let padded = format!("{digits:0>40}");
        let bytes = hex::decode(&padded).map_err(|e| bad(e.to_string()))?;
        Serial::from_der_bytes(&bytes)
    }
}

impl From<Serial> for String {
    fn from(s: Serial) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for Serial {
    type Error = PkiError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::SeededRandomness;

    #[test]
    fn text_round_trip_and_forms() {
        let s = Serial::from_u128(0x00ab_cdef);
        assert_eq!(s.to_string(), "00000000000000000000000000abcdef");
        assert_eq!("AB:CD:EF".parse::<Serial>().unwrap(), s);
        assert_eq!("0xabcdef".parse::<Serial>().unwrap(), s);
        let wide = "1".repeat(40).parse::<Serial>().unwrap();
        assert_eq!(wide.to_string(), "1".repeat(40));
        assert_eq!(wide.to_u128(), None);
        assert!("1".repeat(41).parse::<Serial>().is_err());
        assert!("xyz".parse::<Serial>().is_err());
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Serial>(&json).unwrap(), s);
        assert!(Serial::from_u128(1) < Serial::from_u128(256));
        assert!(Serial::from_u128(u128::MAX) < wide);
    }

    #[test]
    fn der_bytes_round_trip() {
        let v = u128::MAX - 5;
        let s = Serial::from_u128(v);
        let mut der = vec![0u8];
        der.extend_from_slice(&v.to_be_bytes());
        assert_eq!(Serial::from_der_bytes(&der).unwrap(), s);
        assert!(Serial::from_der_bytes(&[1u8; 21]).is_err());
        assert_eq!(
            Serial::from_der_bytes(&[1u8; 20]).unwrap().to_bytes(),
            vec![1u8; 20]
        );
        assert_eq!(s.to_rcgen().to_bytes(), v.to_be_bytes().to_vec());
        assert_eq!(Serial::from_u128(1).to_rcgen().to_bytes(), vec![1]);
        assert_eq!(Serial::from_u128(0).to_bytes(), vec![0]);
    }

    #[test]
    fn random_serials_are_distinct_and_reproducible() {
        let mut a = SeededRandomness::new(b"s");
        let mut b = SeededRandomness::new(b"s");
        let xs: Vec<_> = (0..1000).map(|_| Serial::random(&mut a).unwrap()).collect();
        let ys: Vec<_> = (0..1000).map(|_| Serial::random(&mut b).unwrap()).collect();
        assert_eq!(xs, ys);
        let unique: std::collections::BTreeSet<_> = xs.iter().collect();
        assert_eq!(unique.len(), 1000);
        // 128 random bits: about half of them use the top bit.
        let top = xs
            .iter()
            .filter(|s| s.to_u128().unwrap() >> 127 == 1)
            .count();
        assert!((400..600).contains(&top), "top bit set in {top}/1000");
    }
}
