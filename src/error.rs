//! The one error type of toolpool.
//!
//! Every variant maps to exactly one C status code ([`Error::code`]); the C ABI, the Go and
//! the Python bindings expose the same set. Messages name what was wrong and where (tool id,
//! instance index, key, path).

use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, thiserror::Error)]
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
    #[error("process limit reached: {running} of {limit} processes running, waited {} ms", waited.as_millis())]
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
    /// The tool answered with an error: a JSON-RPC error object, or a one-shot run that
    /// exited non-zero (then `code` is the exit code and `message` its stderr).
    #[error("tool error {code}: {message}")]
    Tool {
        /// JSON-RPC error code, or the exit code of a one-shot run.
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
    #[error("no instance of '{0}' is available")]
    Unavailable(String),
    /// An I/O error outside a spawn (reading a registry file, and so on).
    #[error("i/o error: {0}")]
    Io(String),
}

/// The result type of toolpool.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The stable numeric code of this error; identical to the C status code.
    pub fn code(&self) -> i32 {
        match self {
            Error::InvalidArgument(_) => 1,
            Error::UnknownTool { .. } => 2,
            Error::Spawn(_) => 3,
            Error::Timeout { .. } => 4,
            Error::InstanceDead(_) => 5,
            Error::Saturated { .. } => 6,
            Error::ShutDown(_) => 7,
            Error::LimitReached { .. } => 8,
            Error::Protocol(_) => 9,
            Error::Tool { .. } => 10,
            Error::Config(_) => 11,
            Error::IndexOutOfRange { .. } => 12,
            Error::QueueFull { .. } => 13,
            Error::Failed { .. } => 14,
            Error::Unavailable(_) => 15,
            Error::Io(_) => 16,
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
}
