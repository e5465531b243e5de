//! The one skip-or-fail policy for tests that need an external tool (openssl, promtool,
//! mosquitto clients): under CI its absence fails the test (CI installs it through
//! scripts/install-deps.sh); run by hand without it, the test says why and skips.
//! Included with `#[path]` by the operator's and the broker's tests.

use std::path::PathBuf;

/// Whether this run is CI (`CI` set to anything but empty, `0` or `false`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// The path of `tool` on `PATH`, or `None` after printing why the caller skips. Panics under
/// CI when the tool is missing; `package` names the Debian package that provides it.
pub fn require(tool: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            !in_ci(),
            "{tool} is required in CI (Debian package `{package}`, installed by scripts/install-deps.sh)"
        );
        eprintln!("SKIP: {tool} not found; install Debian's `{package}` (scripts/install-deps.sh)");
    }
    found
}
