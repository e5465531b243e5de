//! The e2e test bed: a real etcd, kube-apiserver and kube-controller-manager (Kubernetes 1.20.2,
//! built from Debian's source package by `e2e/testbed/install.sh`) on 127.0.0.1 with ephemeral
//! ports and a temp directory, plus helpers to apply the repository's manifests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let Some(bed) = e2e::shared() else { return Ok(()) }; // skipped outside CI without binaries
//! let client = bed.client().await?;
//! let ns = bed.namespace("my-test").await?;
//! # let _ = (client, ns); Ok(()) }
//! ```
//!
//! Known limits of 1.20 (asserted by tests, not hidden): PodDisruptionBudgets are served as
//! `policy/v1beta1` only, and CRD `x-kubernetes-validations` (CEL) rules are not enforced.
#![forbid(unsafe_code)]

pub mod access;
pub mod bed;
pub mod binaries;
pub mod certs;
pub mod components;
pub mod kubeconfig;
pub mod manifests;
pub mod process;
pub mod schema;
pub mod shared;
pub mod standin;
pub mod tools;
pub mod traffic;
pub mod wait;

pub use bed::{TestBed, TestBedError, TestBedOptions};
pub use binaries::{Binaries, KUBERNETES_VERSION};
pub use shared::{binaries_or_skip, in_ci, shared};
pub use tools::{tools_or_skip, Tools};
