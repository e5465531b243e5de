//! Key algorithms and private keys. Private keys never print: `Debug` and `Display` are redacted.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use rcgen::{PublicKeyData, SignatureAlgorithm, SigningKey};
use rustls_pki_types::PrivatePkcs8KeyDer;
use serde::{Deserialize, Serialize};

use super::{PkiError, Randomness};

/// The key algorithms we issue. Mirrors `crds::KeyAlgorithm` (serde names are the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256 with SHA-256 (the default).
    #[default]
    EcdsaP256,
    /// Ed25519.
    Ed25519,
    /// RSA 2048 with PKCS#1 v1.5 SHA-256 signatures.
    #[serde(rename = "rsa-2048")]
    Rsa2048,
}

impl KeyAlgorithm {
    /// Every supported algorithm.
    pub const ALL: [KeyAlgorithm; 3] = [
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::Ed25519,
        KeyAlgorithm::Rsa2048,
    ];

    /// The name used in specs and status (`ecdsa-p256`, `ed25519`, `rsa-2048`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::Ed25519 => "ed25519",
            KeyAlgorithm::Rsa2048 => "rsa-2048",
        }
    }

    fn rcgen(self) -> &'static SignatureAlgorithm {
        match self {
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
            KeyAlgorithm::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

impl From<crds::KeyAlgorithm> for KeyAlgorithm {
    fn from(a: crds::KeyAlgorithm) -> Self {
        match a {
            crds::KeyAlgorithm::EcdsaP256 => KeyAlgorithm::EcdsaP256,
            crds::KeyAlgorithm::Ed25519 => KeyAlgorithm::Ed25519,
            crds::KeyAlgorithm::Rsa2048 => KeyAlgorithm::Rsa2048,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyAlgorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| PkiError::Key {
                step: "parse",
                algorithm: s.to_string(),
                reason: "unknown key algorithm (ecdsa-p256, ed25519, rsa-2048)".into(),
            })
    }
}

/// The order n of the P-256 group: a private scalar must lie in [1, n-1].
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// A private key with its public half. Holds PKCS#8 DER in memory; prints as `[redacted]`.
pub struct PrivateKey {
    pair: rcgen::KeyPair,
}

impl PrivateKey {
    /// Generates a key. ECDSA P-256 and Ed25519 keys are derived from `rng` (so a seeded source
    /// gives the same key every run); RSA keys come from aws-lc's own generator and the OS RNG,
    /// because RSA prime generation cannot be fed from outside.
    pub fn generate(algorithm: KeyAlgorithm, rng: &mut dyn Randomness) -> Result<Self, PkiError> {
        let failed = |reason: String| PkiError::Key {
            step: "generate",
            algorithm: algorithm.to_string(),
            reason,
        };
        let pkcs8 = match algorithm {
            KeyAlgorithm::EcdsaP256 => {
                let scalar = draw_p256_scalar(rng)?;
                let sec1 = sec1_p256_private_key(&scalar);
                let pair =
                    EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_ASN1_SIGNING, &sec1)
                        .map_err(|e| failed(e.to_string()))?;
                pair.to_pkcs8v1()
                    .map_err(|e| failed(e.to_string()))?
                    .as_ref()
                    .to_vec()
            }
            KeyAlgorithm::Ed25519 => {
                let mut seed = [0u8; 32];
                rng.fill(&mut seed)?;
                let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
                    .map_err(|e| failed(e.to_string()))?;
                seed.fill(0);
                pair.to_pkcs8v1()
                    .map_err(|e| failed(e.to_string()))?
                    .as_ref()
                    .to_vec()
            }
            KeyAlgorithm::Rsa2048 => {
                let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .map_err(|e| failed(e.to_string()))?;
                pair.as_der()
                    .map_err(|e| failed(e.to_string()))?
                    .as_ref()
                    .to_vec()
            }
        };
        let der = rustls_pki_types_pkcs8(pkcs8);
        let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, algorithm.rcgen())
            .map_err(|e| failed(e.to_string()))?;
        Ok(PrivateKey { pair })
    }

    /// Loads a PEM private key (PKCS#8, SEC1 `EC PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, PkiError> {
        let pair = rcgen::KeyPair::from_pem(pem).map_err(|e| PkiError::Key {
            step: "load",
            algorithm: "pem".into(),
            reason: e.to_string(),
        })?;
        Ok(PrivateKey { pair })
    }

    /// The algorithm, when it is one we issue (a bring-your-own CA key may be e.g. P-384).
    pub fn key_algorithm(&self) -> Option<KeyAlgorithm> {
        let alg = self.pair.algorithm();
        if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
            Some(KeyAlgorithm::EcdsaP256)
        } else if alg == &rcgen::PKCS_ED25519 {
            Some(KeyAlgorithm::Ed25519)
        } else if alg == &rcgen::PKCS_RSA_SHA256 && self.pair.der_bytes().len() < 300 {
            // A 2048-bit RSAPublicKey is 270 octets of DER; 3072-bit ones are 398.
            Some(KeyAlgorithm::Rsa2048)
        } else {
            None
        }
    }

    /// The PKCS#8 PEM, for the Kubernetes Secret. This is the one way key material leaves.
    pub fn to_pkcs8_pem(&self) -> String {
        self.pair.serialize_pem()
    }

    /// The DER SubjectPublicKeyInfo of the public half.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }
}

impl PublicKeyData for PrivateKey {
    fn der_bytes(&self) -> &[u8] {
        self.pair.der_bytes()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.pair.algorithm()
    }
}

impl SigningKey for PrivateKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.pair.sign(msg)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.key_algorithm())
            .field("key", &"[redacted]")
            .finish()
    }
}

impl fmt::Display for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key_algorithm() {
            Some(a) => write!(f, "{a} private key [redacted]"),
            None => f.write_str("private key [redacted]"),
        }
    }
}

fn rustls_pki_types_pkcs8(der: Vec<u8>) -> PrivatePkcs8KeyDer<'static> {
    PrivatePkcs8KeyDer::from(der)
}

/// Draws a uniform scalar in [1, n-1] by rejection (FIPS 186-5 A.4.2, "testing candidates").
fn draw_p256_scalar(rng: &mut dyn Randomness) -> Result<[u8; 32], PkiError> {
    // The probability of a rejection is about 2^-32, so 8 rounds never run out in practice.
    for _ in 0..8 {
        let mut candidate = [0u8; 32];
        rng.fill(&mut candidate)?;
        if candidate != [0u8; 32] && candidate < P256_ORDER {
            return Ok(candidate);
        }
    }
    Err(PkiError::Randomness(
        "no valid P-256 scalar after 8 draws".into(),
    ))
}

/// SEC1 ECPrivateKey (RFC 5915) for P-256 without the optional public key; aws-lc computes it.
fn sec1_p256_private_key(scalar: &[u8; 32]) -> Vec<u8> {
    let mut der = Vec::with_capacity(51);
    der.extend_from_slice(&[0x30, 0x31, 0x02, 0x01, 0x01, 0x04, 0x20]);
    der.extend_from_slice(scalar);
    // [0] { OID 1.2.840.10045.3.1.7 (prime256v1) }
    der.extend_from_slice(&[
        0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ]);
    der
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{OsRandomness, SeededRandomness};

    #[test]
    fn every_algorithm_generates_and_round_trips_through_pem() {
        for alg in KeyAlgorithm::ALL {
            let key = PrivateKey::generate(alg, &mut OsRandomness).unwrap();
            assert_eq!(key.key_algorithm(), Some(alg));
            let pem = key.to_pkcs8_pem();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
            let back = PrivateKey::from_pem(&pem).unwrap();
            assert_eq!(back.key_algorithm(), Some(alg));
            assert_eq!(back.public_key_der(), key.public_key_der());
        }
    }

    #[test]
    fn seeded_keys_are_reproducible_for_ec_and_ed25519() {
        for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Ed25519] {
            let a = PrivateKey::generate(alg, &mut SeededRandomness::new(b"k")).unwrap();
            let b = PrivateKey::generate(alg, &mut SeededRandomness::new(b"k")).unwrap();
            let c = PrivateKey::generate(alg, &mut SeededRandomness::new(b"other")).unwrap();
            assert_eq!(a.public_key_der(), b.public_key_der());
            assert_ne!(a.public_key_der(), c.public_key_der());
        }
    }

    #[test]
    fn debug_and_display_never_show_key_material() {
        for alg in KeyAlgorithm::ALL {
            let key = PrivateKey::generate(alg, &mut OsRandomness).unwrap();
            let pem = key.to_pkcs8_pem();
            let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            for shown in [format!("{key:?}"), format!("{key:#?}"), key.to_string()] {
                assert!(shown.contains("[redacted]"), "{shown}");
                assert!(!shown.contains(&body[..24]), "key material leaked: {shown}");
                assert!(!shown.contains("BEGIN"), "{shown}");
            }
        }
    }

    #[test]
    fn scalar_rejection_refuses_out_of_range_candidates() {
        struct Fixed(Vec<[u8; 32]>);
        impl Randomness for Fixed {
            fn fill(&mut self, dest: &mut [u8]) -> Result<(), PkiError> {
                dest.copy_from_slice(&self.0.remove(0));
                Ok(())
            }
        }
        let mut ok = [0u8; 32];
        ok[31] = 7;
        let mut rng = Fixed(vec![[0u8; 32], P256_ORDER, [0xff; 32], ok]);
        assert_eq!(draw_p256_scalar(&mut rng).unwrap(), ok);
    }

    #[test]
    fn algorithm_names_round_trip() {
        for alg in KeyAlgorithm::ALL {
            assert_eq!(alg.as_str().parse::<KeyAlgorithm>().unwrap(), alg);
            let json = serde_json::to_string(&alg).unwrap();
            assert_eq!(json, format!("\"{}\"", alg.as_str()));
        }
        assert!("dsa".parse::<KeyAlgorithm>().is_err());
        for crd in [
            crds::KeyAlgorithm::EcdsaP256,
            crds::KeyAlgorithm::Ed25519,
            crds::KeyAlgorithm::Rsa2048,
        ] {
            let ours = KeyAlgorithm::from(crd);
            assert_eq!(
                serde_json::to_string(&crd).unwrap(),
                serde_json::to_string(&ours).unwrap(),
                "the CRD and the PKI agree on names"
            );
        }
        assert_eq!(KeyAlgorithm::default(), KeyAlgorithm::EcdsaP256);
    }
}
