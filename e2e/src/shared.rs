//! One test bed per test binary, shared by its tests (each in its own namespace), and the
//! skip-or-fail policy for machines without the binaries.

use std::sync::OnceLock;

use crate::bed::TestBed;
use crate::binaries::Binaries;

static SHARED: OnceLock<Result<TestBed, String>> = OnceLock::new();

/// Whether this run is CI (`CI` set to anything but empty, `0` or `false`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// The binary-wide bed, started on first use with [`TestBed::start`].
///
/// Returns `None` (after printing why) when the control-plane binaries are missing and this is not
/// CI; panics when they are missing under CI, or when the bed fails to start. The shared bed lives
/// until the test binary exits; its watchdog then kills every process it started.
pub fn shared() -> Option<&'static TestBed> {
    if let Err(missing) = Binaries::locate() {
        if in_ci() {
            panic!("CI=true and the e2e test bed is not installed: {missing}");
        }
        eprintln!("SKIPPED (not CI): {missing}");
        return None;
    }
    let bed = SHARED.get_or_init(|| {
        // Start on a separate thread with its own runtime: callers are usually inside a
        // #[tokio::test] runtime, which must not block_on. Nothing of this runtime outlives start
        // (clients are made per test by `TestBed::client`).
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("building a tokio runtime: {e}"))?;
            runtime
                .block_on(TestBed::start())
                .map_err(|e| e.to_string())
        })
        .join()
        .unwrap_or_else(|_| Err("the thread starting the test bed panicked".to_string()))
    });
    match bed {
        Ok(bed) => Some(bed),
        Err(e) => panic!("the e2e test bed failed to start: {e}"),
    }
}

/// Skips (returns `None`, printing why) outside CI when the binaries are missing; panics under CI.
/// For tests that start their own [`TestBed`].
pub fn binaries_or_skip() -> Option<Binaries> {
    match Binaries::locate() {
        Ok(b) => Some(b),
        Err(missing) if in_ci() => {
            panic!("CI=true and the e2e test bed is not installed: {missing}")
        }
        Err(missing) => {
            eprintln!("SKIPPED (not CI): {missing}");
            None
        }
    }
}
