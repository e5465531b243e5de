//! `mqtt-operator local up` / `local down` (DESIGN §7): the same manifests, check, PKI, ACL
//! compiler and broker config rendering as in Kubernetes, run as child broker processes on
//! 127.0.0.1, with certificates for the example devices and hot reload of the policies.
//!
//! Pure parts: [`plan`] (what to run, what changed) and [`commands`] (the printed examples).
//! IO: [`state`] (the state directory), [`supervise`] (broker processes, HTTP), [`run`] (the
//! `up` loop and `down`).

pub mod commands;
pub mod plan;
pub mod run;
pub mod state;
pub mod supervise;

pub use run::{down, up, DownError, UpError, UpOptions};
