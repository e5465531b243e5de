//! mqtt-operator: pure modules (manifests, check, CRD generation) and the controllers' IO shells.
#![forbid(unsafe_code)]

pub mod acl;
pub mod apidoc;
pub mod check;
pub mod cli;
pub mod controllers;
pub mod crd;
pub mod lease;
pub mod local;
pub mod manifest;
pub mod monitoring;
pub mod pki;
pub mod rbac;
pub mod render;
