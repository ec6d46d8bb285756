//! The one error type of toolpool.
//!
//! Every variant maps to exactly one C status ([`Error::status`], one exhaustive match over
//! the table in [`crate::status`]); the C ABI, the Go and the Python bindings expose the
//! same set. Messages name what was wrong and where (tool id, instance index, key, path).

use crate::status::ToolpoolStatus;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitInfo {
    /// The process called `exit` with this code.
    Code(i32),
    /// The process was killed by this signal number.
    Signal(i32),
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitInfo::Code(c) => write!(f, "exit code {c}"),
            ExitInfo::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// Why an instance is dead, for [`Error::InstanceDead`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeathInfo {
    /// Tool id of the pool.
    pub tool: String,
    /// Instance index.
    pub index: usize,
    /// How the process ended, when it has been reaped.
    pub exit: Option<ExitInfo>,
    /// The last lines the instance wrote to stderr.
    pub stderr_tail: Vec<String>,
}

impl fmt::Display for DeathInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "instance {} of '{}' is dead", self.index, self.tool)?;
        if let Some(e) = self.exit {
            write!(f, " ({e})")?;
        }
        if !self.stderr_tail.is_empty() {
            write!(f, "; last stderr: {}", self.stderr_tail.join(" | "))?;
        }
        Ok(())
    }
}

/// Every error toolpool returns.
///
/// The numeric codes ([`Error::code`]) are part of the C ABI and are never renumbered.
/// Errors cross the wire of `toolpool serve` as JSON (serde), so a service's pool returns
/// the very error the local call would.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum Error {
    /// A bad argument from the caller: a line containing a newline, invalid UTF-8, a null
    /// pointer, an empty payload, and the like. The message says which argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The tool id is not in the registry.
    #[error("unknown tool '{tool}' (known tools: {})", if known.is_empty() { "none".to_string() } else { known.join(", ") })]
    UnknownTool {
        /// The id asked for.
        tool: String,
        /// The ids the registry has.
        known: Vec<String>,
    },
    /// A registry or tool spec is invalid: unknown key, wrong type, empty command, count 0.
    #[error("invalid tool spec: {0}")]
    Config(String),
    /// A process could not be started, or did not become ready in time.
    #[error("spawn failed: {0}")]
    Spawn(String),
    /// An instance index is out of range.
    #[error("instance index {index} out of range: the pool of '{tool}' has {count} instances")]
    IndexOutOfRange {
        /// Tool id.
        tool: String,
        /// Index asked for.
        index: usize,
        /// Number of instances.
        count: usize,
    },
    /// The instance is dead (exited, killed, or never started).
    #[error("{0}")]
    InstanceDead(DeathInfo),
    /// The instance's stdin queue is full: the child is not reading fast enough.
    #[error("stdin queue of instance {index} of '{tool}' is full ({capacity} lines)")]
    QueueFull {
        /// Tool id.
        tool: String,
        /// Instance index.
        index: usize,
        /// Queue capacity in lines.
        capacity: usize,
    },
    /// Nothing arrived (or no instance became free) within the timeout.
    #[error("timed out after {} ms: {what}", after.as_millis())]
    Timeout {
        /// What was being waited for.
        what: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// Every instance is busy and the wait queue is full.
    #[error("pool of '{tool}' saturated: every instance busy and {waiting} callers already waiting (limits.max_waiting = {max_waiting})")]
    Saturated {
        /// Tool id.
        tool: String,
        /// Callers waiting when this one was refused.
        waiting: usize,
        /// The configured cap.
        max_waiting: usize,
    },
    /// The pool has been shut down.
    #[error("pool of '{0}' is shut down")]
    ShutDown(String),
    /// The process-wide limit did not allow a new process within the wait time.
    #[error("maximum concurrent processes reached: {running} of {limit} (waited {} ms; the limit is set by set_limit or TOOLPOOL_MAX_PROCESSES)", waited.as_millis())]
    LimitReached {
        /// The limit in force.
        limit: usize,
        /// Processes running when we gave up.
        running: usize,
        /// How long we waited.
        waited: Duration,
    },
    /// The tool broke the framing protocol (a reply that is not valid JSON-RPC, and so on).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The tool answered with an error: a JSON-RPC error object, a one-shot run that
    /// exited non-zero (then `code` is the exit code and `message` its stderr), or stderr
    /// lines with no reply (`stderr_error_ms`: then `code` is 0 and `message` those lines).
    #[error("tool error{}: {message}", if *code == 0 { String::new() } else { format!(" {code}") })]
    Tool {
        /// JSON-RPC error code, the exit code of a one-shot run, or 0 for an error the tool
        /// wrote on stderr.
        code: i64,
        /// Error message.
        message: String,
        /// JSON-RPC `data`, as JSON text, when present.
        data: Option<String>,
    },
    /// The instance was marked failed by the supervisor (too many restarts) and is not
    /// restarted until asked.
    #[error("instance {index} of '{tool}' has failed: {reason}")]
    Failed {
        /// Tool id.
        tool: String,
        /// Instance index.
        index: usize,
        /// Why it failed.
        reason: String,
    },
    /// No instance of the pool can take work (all dead, failed or stopped) and no fallback
    /// is configured.
    #[error("no instance of '{tool}' is available ({reason})")]
    Unavailable {
        /// Tool id.
        tool: String,
        /// Why: the pool is disabled, no instance can serve, and so on.
        reason: String,
    },
    /// An I/O error outside a spawn (reading a registry file, and so on).
    #[error("i/o error: {0}")]
    Io(String),
    /// The call was stopped by its [`CancelToken`](crate::CancelToken) (the message says
    /// what it was waiting for). As after a timeout, no reply of the abandoned request
    /// ever reaches another caller.
    #[error("cancelled while waiting for {0}")]
    Cancelled(String),
    /// The `toolpool serve` service could not be used: nothing listens on its socket, it
    /// refused this client (another user, too many clients, another protocol version),
    /// or it went away during the call (the next call connects again).
    #[error("toolpool service: {0}")]
    Service(String),
}

/// The result type of toolpool.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The C status of this error: one exhaustive match, so a new variant must be given
    /// its status here (statuses are append-only, see [`crate::status`]).
    pub fn status(&self) -> ToolpoolStatus {
        use ToolpoolStatus as S;
        match self {
            Error::InvalidArgument(_) => S::TOOLPOOL_INVALID_ARGUMENT,
            Error::UnknownTool { .. } => S::TOOLPOOL_NOT_FOUND,
            Error::Spawn(_) => S::TOOLPOOL_SPAWN_FAILED,
            Error::Timeout { .. } => S::TOOLPOOL_TIMEOUT,
            Error::InstanceDead(_) => S::TOOLPOOL_DEAD,
            Error::Saturated { .. } => S::TOOLPOOL_SATURATED,
            Error::ShutDown(_) => S::TOOLPOOL_SHUT_DOWN,
            Error::LimitReached { .. } => S::TOOLPOOL_LIMIT_REACHED,
            Error::Protocol(_) => S::TOOLPOOL_PROTOCOL_ERROR,
            Error::Tool { .. } => S::TOOLPOOL_TOOL_ERROR,
            Error::Config(_) => S::TOOLPOOL_CONFIG,
            Error::IndexOutOfRange { .. } => S::TOOLPOOL_INDEX_OUT_OF_RANGE,
            Error::QueueFull { .. } => S::TOOLPOOL_QUEUE_FULL,
            Error::Failed { .. } => S::TOOLPOOL_FAILED,
            Error::Unavailable { .. } => S::TOOLPOOL_UNAVAILABLE,
            Error::Io(_) => S::TOOLPOOL_IO,
            Error::Cancelled(_) => S::TOOLPOOL_CANCELLED,
            Error::Service(_) => S::TOOLPOOL_SERVICE,
        }
    }

    /// The stable numeric code of this error; identical to the C status code.
    pub fn code(&self) -> i32 {
        self.status().code()
    }

    pub(crate) fn unavailable(tool: &str, reason: impl Into<String>) -> Error {
        Error::Unavailable {
            tool: tool.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn timeout(what: impl Into<String>, after: Duration) -> Error {
        Error::Timeout {
            what: what.into(),
            after,
        }
    }

    /// True for [`Error::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// True for [`Error::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Error::Cancelled(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One error of every variant (the match makes a new variant fail to compile here
    /// until it is listed), with the status name it must map to.
    fn every_variant() -> Vec<(Error, &'static str)> {
        let s = String::new;
        let all = vec![
            (Error::InvalidArgument(s()), "TOOLPOOL_INVALID_ARGUMENT"),
            (
                Error::UnknownTool {
                    tool: s(),
                    known: vec![],
                },
                "TOOLPOOL_NOT_FOUND",
            ),
            (Error::Spawn(s()), "TOOLPOOL_SPAWN_FAILED"),
            (Error::timeout("x", Duration::ZERO), "TOOLPOOL_TIMEOUT"),
            (
                Error::InstanceDead(DeathInfo {
                    tool: s(),
                    index: 0,
                    exit: None,
                    stderr_tail: vec![],
                }),
                "TOOLPOOL_DEAD",
            ),
            (
                Error::Saturated {
                    tool: s(),
                    waiting: 0,
                    max_waiting: 0,
                },
                "TOOLPOOL_SATURATED",
            ),
            (Error::ShutDown(s()), "TOOLPOOL_SHUT_DOWN"),
            (
                Error::LimitReached {
                    limit: 0,
                    running: 0,
                    waited: Duration::ZERO,
                },
                "TOOLPOOL_LIMIT_REACHED",
            ),
            (Error::Protocol(s()), "TOOLPOOL_PROTOCOL_ERROR"),
            (
                Error::Tool {
                    code: 0,
                    message: s(),
                    data: None,
                },
                "TOOLPOOL_TOOL_ERROR",
            ),
            (Error::Config(s()), "TOOLPOOL_CONFIG"),
            (
                Error::IndexOutOfRange {
                    tool: s(),
                    index: 0,
                    count: 0,
                },
                "TOOLPOOL_INDEX_OUT_OF_RANGE",
            ),
            (
                Error::QueueFull {
                    tool: s(),
                    index: 0,
                    capacity: 0,
                },
                "TOOLPOOL_QUEUE_FULL",
            ),
            (
                Error::Failed {
                    tool: s(),
                    index: 0,
                    reason: s(),
                },
                "TOOLPOOL_FAILED",
            ),
            (Error::unavailable("t", "r"), "TOOLPOOL_UNAVAILABLE"),
            (Error::Io(s()), "TOOLPOOL_IO"),
            (Error::Cancelled(s()), "TOOLPOOL_CANCELLED"),
            (Error::Service(s()), "TOOLPOOL_SERVICE"),
        ];
        for (e, _) in &all {
            // Exhaustive: a new variant is a compile error until it is added above.
            match e {
                Error::InvalidArgument(_)
                | Error::UnknownTool { .. }
                | Error::Spawn(_)
                | Error::Timeout { .. }
                | Error::InstanceDead(_)
                | Error::Saturated { .. }
                | Error::ShutDown(_)
                | Error::LimitReached { .. }
                | Error::Protocol(_)
                | Error::Tool { .. }
                | Error::Config(_)
                | Error::IndexOutOfRange { .. }
                | Error::QueueFull { .. }
                | Error::Failed { .. }
                | Error::Unavailable { .. }
                | Error::Io(_)
                | Error::Cancelled(_)
                | Error::Service(_) => {}
            }
        }
        all
    }

    #[test]
    fn every_variant_has_its_status_by_name() {
        let all = every_variant();
        assert_eq!(all.len(), 18);
        for (e, name) in &all {
            assert_eq!(e.status().name().to_str().unwrap(), *name, "{e:?}");
            assert_eq!(e.code(), e.status() as i32);
        }
        // Every status but OK and PANIC is some error's status, each exactly once.
        let mut codes: Vec<i32> = all.iter().map(|(e, _)| e.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        assert_eq!(codes, (1..=18).collect::<Vec<_>>());
        assert_eq!(ToolpoolStatus::ALL.len(), all.len() + 2);
    }

    #[test]
    fn unavailable_names_the_tool_and_the_reason_apart() {
        let e = Error::unavailable("bc", "the pool is disabled");
        assert_eq!(
            e.to_string(),
            "no instance of 'bc' is available (the pool is disabled)"
        );
    }
}
