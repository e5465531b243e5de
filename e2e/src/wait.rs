//! Bounded waiting: every wait in the test bed and its tests has a deadline and says what it was
//! waiting for, and what it last saw, when the deadline passes.

use std::future::Future;
use std::time::{Duration, Instant};

/// A wait that did not finish in time.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {waited:.1?} waiting for {what}; last observation: {last}")]
pub struct WaitTimeout {
    /// What was awaited.
    pub what: String,
    /// How long it waited.
    pub waited: Duration,
    /// The probe's last report of why the condition did not hold yet.
    pub last: String,
}

/// Polls `probe` until it returns `Ok(value)` or `timeout` passes. `Err(reason)` means "not yet"
/// and is kept for the timeout message. Poll interval starts at 50 ms and doubles up to 1 s.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T, WaitTimeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut interval = Duration::from_millis(50);
    let mut last = String::from("(never polled)");
    while start.elapsed() < timeout {
        match probe().await {
            Ok(value) => return Ok(value),
            Err(reason) => last = reason,
        }
        tokio::time::sleep(interval.min(timeout.saturating_sub(start.elapsed()))).await;
        interval = (interval * 2).min(Duration::from_secs(1));
    }
    Err(WaitTimeout { what: what.to_string(), waited: start.elapsed(), last })
}
