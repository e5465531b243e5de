//! The PKI module's error type.

use super::csr::CsrRejection;

/// Everything that can go wrong while generating keys, issuing, parsing or signing.
///
/// Messages name the step and the object (a device id, a CA kind), never key material.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// The randomness source failed (the OS RNG is unavailable).
    #[error("randomness source failed: {0}")]
    Randomness(String),
    /// A private key could not be generated or loaded.
    #[error("key {step} failed for {algorithm}: {reason}")]
    Key {
        /// `generate` or `load`.
        step: &'static str,
        /// The key algorithm involved.
        algorithm: String,
        /// The backend's reason (never contains key bytes).
        reason: String,
    },
    /// rcgen refused to build or sign a certificate or CRL.
    #[error("signing {what} failed: {source}")]
    Sign {
        /// What was being signed, e.g. `device certificate for sensor-1`.
        what: String,
        /// The underlying rcgen error.
        #[source]
        source: rcgen::Error,
    },
    /// A certificate (ours or brought by the user) could not be parsed back.
    #[error("cannot parse {what}: {reason}")]
    Parse {
        /// What was being parsed, e.g. `clients CA certificate`.
        what: String,
        /// The parser's reason.
        reason: String,
    },
    /// A bring-your-own CA is not usable (not a CA, key does not match, expired...).
    #[error("CA certificate unusable: {0}")]
    CaUnusable(String),
    /// A validity window or duration is out of range.
    #[error("invalid validity: {0}")]
    Validity(String),
    /// A name (device id, cluster, namespace, DNS name) cannot be put in a certificate.
    #[error("invalid name {name:?}: {reason}")]
    Name {
        /// The rejected name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A device-supplied CSR was refused.
    #[error(transparent)]
    Csr(#[from] CsrRejection),
}

impl PkiError {
    /// A short, fixed label for metrics (never includes object names).
    pub fn category(&self) -> &'static str {
        match self {
            PkiError::Randomness(_) => "randomness",
            PkiError::Key { .. } => "key",
            PkiError::Sign { .. } => "sign",
            PkiError::Parse { .. } => "parse",
            PkiError::CaUnusable(_) => "ca_unusable",
            PkiError::Validity(_) => "validity",
            PkiError::Name { .. } => "name",
            PkiError::Csr(_) => "csr_rejected",
        }
    }
}
