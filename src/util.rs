//! Two small helpers every layer uses: deadlines that never overflow, and lossy text.

use std::time::{Duration, Instant};

/// `now + timeout`, saturating: a huge timeout (`Duration::MAX`) means "about forever"
/// instead of an overflow panic.
pub(crate) fn deadline_in(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Bytes as text, invalid UTF-8 replaced by U+FFFD (no copy when already valid).
pub(crate) fn lossy(b: Vec<u8>) -> String {
    match String::from_utf8(b) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}
