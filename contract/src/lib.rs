//! The contract between the operator and the broker: pure types and algorithms both sides share.
#![forbid(unsafe_code)]

pub mod acl;
pub mod bridge;
pub mod config;
pub mod metrics;
pub mod topic;
