//! PKI without cert-manager (DESIGN §6): per cluster a **cluster CA** (broker server
//! certificates) and a **clients CA** (device certificates and the CRL), rotation decisions,
//! CA-renewal trust bundles, and revocation.
//!
//! Pure: no IO, no global clock, no hidden randomness. Every function that needs the time takes
//! `now: SystemTime`; everything random (serials, ECDSA P-256 and Ed25519 keys) comes from a
//! [`Randomness`], so tests seed it and get the same output every run. Controllers map the CRD
//! specs onto the plain inputs here ([`DeviceCertProfile`], [`RenewalPolicy`], [`KeyAlgorithm`],
//! [`ServerCertRequest`]) and store the outputs in Secrets and status.
//!
//! | Concept | Module |
//! |---|---|
//! | key algorithms, private keys (redacted `Debug`/`Display`) | [`keys`] |
//! | CAs (generate, load, bring-your-own) | [`ca`] |
//! | broker server certificates | [`server`] |
//! | device certificates, the device SAN URI | [`device`], [`names`] |
//! | signing a device's CSR | [`csr`] |
//! | when to rotate | [`rotation`] |
//! | trust bundle across CA renewal | [`bundle`] |
//! | revoked set, CRL | [`revocation`], [`crl`] |
//! | reading certificates back | [`inspect`] |
//!
//! Device certificate profile: `CN=<deviceId>, O=mqtt-operator`, one SAN URI
//! `urn:mqtt-operator:<namespace>/<cluster>/device/<deviceId>`, EKU clientAuth, key usage
//! digitalSignature (+ keyEncipherment for RSA), a random 128-bit serial, `notBefore` five
//! minutes in the past (clock skew), `notAfter` never beyond the issuing CA's.

pub mod bundle;
pub mod ca;
pub mod clock;
pub mod crl;
pub mod csr;
pub mod device;
mod error;
pub mod inspect;
mod issue;
pub mod keys;
pub mod names;
pub mod random;
pub mod revocation;
pub mod rotation;
pub mod serial;
pub mod server;

pub use bundle::{BundleMember, DropReason, TrustBundle};
pub use ca::{CaKind, CaProfile, CertificateAuthority};
pub use clock::{Clock, FixedClock, SystemClock, ValidityWindow, CLOCK_SKEW_ALLOWANCE};
pub use crl::{build_crl, Crl};
pub use csr::{
    check_csr_signature, sign_device_csr, verify_csr, verify_csr_der, CsrRejection, VerifiedCsr,
};
pub use device::{issue_device_certificate, DeviceCertProfile};
pub use error::PkiError;
pub use inspect::CertificateInfo;
pub use issue::{Credentials, IssuedCertificate};
pub use keys::{KeyAlgorithm, PrivateKey};
pub use names::DeviceRef;
pub use random::{OsRandomness, Randomness, SeededRandomness};
pub use revocation::{RevokedEntry, RevokedSet};
pub use rotation::{
    decide_ca_renewal, decide_device_rotation, decide_server_rotation, DeviceDesired, DeviceIssued,
    RenewalPolicy, RotationDecision, RotationReason,
};
pub use serial::Serial;
pub use server::{issue_server_certificate, ServerCertRequest};
