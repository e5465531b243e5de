//! Desired Kubernetes objects and broker configuration from specs. Pure functions: the
//! controllers apply what these return, `mqtt-operator render` prints it.

pub mod bridge;
pub mod broker;
pub mod cluster;
pub mod config_dir;
pub mod names;
pub mod preview;

#[cfg(test)]
mod tests;
