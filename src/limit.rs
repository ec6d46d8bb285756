//! The process-wide limit as a program sees it: this process's own
//! ([`Limiter::global`]), or, when the process uses a `toolpool serve` service
//! ([`Client::current`]), the service's, which every process of the application shares.

use crate::client::Client;
use crate::error::Result;
use crate::limiter::{KillReport, Limiter, LimiterStatus};

/// The process limit and the processes counted against it (the service's when this
/// process uses one).
pub fn limit_status() -> Result<LimiterStatus> {
    match Client::current()? {
        Some(c) => c.limit_status(),
        None => Ok(Limiter::global().status()),
    }
}

/// Set the process limit (0: none; the service's when this process uses one); returns the
/// old one.
pub fn set_limit(max: usize) -> Result<usize> {
    match Client::current()? {
        Some(c) => c.set_limit(max),
        None => Ok(Limiter::global().set_limit(max).0),
    }
}

/// Kill every process counted against the limit (the service's when this process uses
/// one).
pub fn kill_all() -> Result<KillReport> {
    match Client::current()? {
        Some(c) => c.kill_all(),
        None => Ok(Limiter::global().kill_all()),
    }
}
