//! Bounded waiting: every wait in the test bed and its tests has a deadline and says what it was
//! waiting for, and what it last saw, when the deadline passes.

use std::future::Future;
use std::time::{Duration, Instant};

/// One observation of a polled condition.
#[derive(Debug)]
pub enum Check<T> {
    /// The condition holds; the wait returns this value.
    Done(T),
    /// Not yet; the text says what was seen (kept for the timeout message).
    NotYet(String),
    /// It never will (e.g. the process exited); stop waiting now.
    Fatal(String),
}

/// A wait that ended without the condition holding.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The deadline passed.
    #[error("timed out after {waited:.1?} waiting for {what}; last observation: {last}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it waited.
        waited: Duration,
        /// The probe's last report of why the condition did not hold yet.
        last: String,
    },
    /// The probe reported that the condition cannot become true.
    #[error("gave up waiting for {what} after {waited:.1?}: {reason}")]
    Fatal {
        /// What was awaited.
        what: String,
        /// How long it waited.
        waited: Duration,
        /// Why.
        reason: String,
    },
}

/// Polls `probe` until it returns [`Check::Done`], [`Check::Fatal`], or `timeout` passes. Poll
/// interval starts at 50 ms and doubles up to 1 s.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T, WaitError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Check<T>>,
{
    let start = Instant::now();
    let mut interval = Duration::from_millis(50);
    let mut last = String::from("(never polled)");
    while start.elapsed() < timeout {
        match probe().await {
            Check::Done(value) => return Ok(value),
            Check::NotYet(reason) => last = reason,
            Check::Fatal(reason) => {
                return Err(WaitError::Fatal {
                    what: what.to_string(),
                    waited: start.elapsed(),
                    reason,
                })
            }
        }
        tokio::time::sleep(interval.min(timeout.saturating_sub(start.elapsed()))).await;
        interval = (interval * 2).min(Duration::from_secs(1));
    }
    Err(WaitError::Timeout {
        what: what.to_string(),
        waited: start.elapsed(),
        last,
    })
}

/// Maps a `Result` to [`Check::Done`] or [`Check::NotYet`] (with the error's text).
pub fn check<T, E: std::fmt::Display>(context: &str, result: Result<T, E>) -> Check<T> {
    match result {
        Ok(v) => Check::Done(v),
        Err(e) => Check::NotYet(format!("{context}: {e}")),
    }
}
