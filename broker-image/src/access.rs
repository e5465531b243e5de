//! The broker's view of an ACL rule set: a narrow trait the enforcement hooks call, so the engine
//! glue does not depend on how rules are represented. [`parse_policy`] turns `acl.json` into one.
//!
//! The implementation behind it is the compiled rule set and matcher from `contract::acl`
//! (shared with the operator's `acl explain`); see `acl_adapter.rs`.

use std::sync::Arc;

/// Who is acting: the certificate identity (device id = certificate CN = MQTT username), or
/// nobody (an anonymous client on the opt-in plain listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// A client authenticated by a certificate from the clients CA.
    Device(&'a str),
    /// A client without a certificate identity.
    Anonymous,
}

/// An ACL rule set the broker enforces. Implementations are immutable: a reload builds a new one
/// and swaps it in whole, so a check never sees half a rule set.
pub trait AccessPolicy: Send + Sync + 'static {
    /// The rule set's revision (hash), reported in `/readyz` and `mqtt_acl_revision`.
    fn revision(&self) -> &str;
    /// May `subject` publish to `topic` with this QoS and retain flag?
    fn allow_publish(&self, subject: Subject<'_>, topic: &str, qos: u8, retain: bool) -> bool;
    /// May `subject` subscribe with `filter` (a plain filter, `$share/<group>/` already
    /// stripped) at this QoS? Only if every topic the filter can match is allowed.
    fn allow_subscribe(&self, subject: Subject<'_>, filter: &str, qos: u8) -> bool;
}

/// Why `acl.json` could not be used.
#[derive(Debug, thiserror::Error)]
#[error("acl.json is not a valid rule set: {0}")]
pub struct PolicyError(pub String);

/// Parses `acl.json` into the policy the hooks enforce.
pub fn parse_policy(bytes: &[u8]) -> Result<Arc<dyn AccessPolicy>, PolicyError> {
    crate::acl_adapter::parse(bytes)
}
