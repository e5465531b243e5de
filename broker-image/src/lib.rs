//! The MQTT broker binary's library: the rmqtt engine configured from the operator-rendered
//! directory (`contract::config`), with certificate identity, ACL enforcement, revocation,
//! hot reload, raft clustering, health and metrics. See `broker-image/README.md`.
#![forbid(unsafe_code)]

pub mod access;
pub mod bridge;
pub mod directory;
pub mod enforcement;
pub mod engine;
pub mod http;
pub mod live;
pub mod metrics;
pub mod raft_admin;
pub mod reload;
pub mod run;
pub mod shared_subscription;
