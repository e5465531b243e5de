//! Small builders shared by the PKI integration tests: a fixed clock, seeded CAs, and the
//! `openssl` CLI (required when `CI=true`, skipped with a message otherwise).
#![allow(dead_code)]

#[path = "../support/tool.rs"]
mod tool;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use operator::pki::{
    issue_device_certificate, CaKind, CaProfile, CertificateAuthority, Credentials,
    DeviceCertProfile, DeviceRef, KeyAlgorithm, SeededRandomness,
};

/// 2025-06-15T15:06:40Z: the fixed "now" of clock-driven tests.
pub fn fixed_now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

pub fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}

pub fn ca(
    kind: CaKind,
    generation: u32,
    rng: &mut SeededRandomness,
    now: SystemTime,
) -> CertificateAuthority {
    let mut profile = CaProfile::new(kind, "iot", "edge");
    profile.generation = generation;
    CertificateAuthority::generate(&profile, rng, now).expect("generate CA")
}

pub fn device(id: &str) -> DeviceRef {
    DeviceRef::new("iot", "edge", id).expect("device ref")
}

pub fn device_cert(
    ca: &CertificateAuthority,
    id: &str,
    alg: KeyAlgorithm,
    validity: Duration,
    rng: &mut SeededRandomness,
    now: SystemTime,
) -> Credentials {
    let profile = DeviceCertProfile {
        key_algorithm: alg,
        validity,
    };
    issue_device_certificate(ca, &device(id), &profile, rng, now).expect("issue device cert")
}

/// The `openssl` binary, or `None` when skipping by hand (see `support/tool.rs`).
pub fn openssl() -> Option<PathBuf> {
    tool::require("openssl", "openssl")
}

/// Runs openssl with `args` in `dir`; returns the output (never panics on a non-zero exit).
pub fn run_openssl(bin: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running openssl {args:?}: {e}"))
}

/// Runs openssl and asserts success; returns stdout.
pub fn openssl_ok(bin: &Path, dir: &Path, args: &[&str]) -> String {
    let out = run_openssl(bin, dir, args);
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> String {
    std::fs::write(dir.join(name), contents).unwrap_or_else(|e| panic!("write {name}: {e}"));
    name.to_string()
}
