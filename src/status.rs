//! The status table: every C status code, its value and its name, in one place.
//!
//! [`ToolpoolStatus`] is the table (cbindgen reads it for `include/toolpool.h`); its
//! [`ToolpoolStatus::ALL`] and [`ToolpoolStatus::name`] are generated from the same list
//! by `status_list!`, whose `match` is exhaustive, so a variant missing there does not
//! compile. [`crate::Error::status`] maps every error variant to one of these in one
//! exhaustive match. Values are append-only: never renumbered, never reused.

use std::ffi::CStr;

/// Status codes returned by every `int32_t` function of the C API. The values are part of
/// the ABI and are never renumbered; they equal `Error::code()` of the Rust API.
#[repr(i32)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolpoolStatus {
    /// Success.
    TOOLPOOL_OK = 0,
    /// A bad argument: NULL pointer, invalid UTF-8, a line containing a newline, bad JSON
    /// input. The message names the parameter.
    TOOLPOOL_INVALID_ARGUMENT = 1,
    /// The tool id is not in the registry.
    TOOLPOOL_NOT_FOUND = 2,
    /// A process could not be started, or did not become ready in time.
    TOOLPOOL_SPAWN_FAILED = 3,
    /// Nothing arrived (or no instance became free) within the timeout.
    TOOLPOOL_TIMEOUT = 4,
    /// The instance is dead.
    TOOLPOOL_DEAD = 5,
    /// Every instance is busy and the wait queue is full.
    TOOLPOOL_SATURATED = 6,
    /// The pool has been shut down.
    TOOLPOOL_SHUT_DOWN = 7,
    /// The process-wide limit did not allow a new process in time.
    TOOLPOOL_LIMIT_REACHED = 8,
    /// The tool broke the framing protocol.
    TOOLPOOL_PROTOCOL_ERROR = 9,
    /// The tool answered with an error (JSON-RPC error, failed one-shot run).
    TOOLPOOL_TOOL_ERROR = 10,
    /// A registry or tool spec is invalid: bad JSON, unknown key, wrong type, bad value.
    TOOLPOOL_CONFIG = 11,
    /// An instance index is out of range.
    TOOLPOOL_INDEX_OUT_OF_RANGE = 12,
    /// The instance's stdin queue is full.
    TOOLPOOL_QUEUE_FULL = 13,
    /// The instance was marked failed by the supervisor (too many restarts).
    TOOLPOOL_FAILED = 14,
    /// No instance can take work and no fallback is configured.
    TOOLPOOL_UNAVAILABLE = 15,
    /// An I/O error outside a spawn (reading a registry file, ...).
    TOOLPOOL_IO = 16,
    /// The call was stopped by its cancel token (`toolpool_cancel_trigger`).
    TOOLPOOL_CANCELLED = 17,
    /// The `toolpool serve` service could not be used (not running, refused this client,
    /// or went away during the call).
    TOOLPOOL_SERVICE = 18,
    /// A panic inside toolpool was caught at the boundary. A bug: please report it.
    TOOLPOOL_PANIC = 99,
}

/// `ALL` and `name()` from the list of variants. The `match` in `name` has no wildcard:
/// leaving a variant out, or naming one that does not exist, is a compile error.
macro_rules! status_list {
    ($($v:ident),* $(,)?) => {
        impl ToolpoolStatus {
            /// Every status, in numeric order.
            pub const ALL: [ToolpoolStatus; [$(stringify!($v)),*].len()] =
                [$(ToolpoolStatus::$v),*];

            /// The constant's name, e.g. `TOOLPOOL_TIMEOUT`.
            pub fn name(self) -> &'static CStr {
                match self {
                    $(ToolpoolStatus::$v => {
                        const NAME: &CStr = match CStr::from_bytes_with_nul(
                            concat!(stringify!($v), "\0").as_bytes(),
                        ) {
                            Ok(c) => c,
                            Err(_) => panic!("a status name has no NUL byte"),
                        };
                        NAME
                    })*
                }
            }
        }
    };
}

status_list!(
    TOOLPOOL_OK,
    TOOLPOOL_INVALID_ARGUMENT,
    TOOLPOOL_NOT_FOUND,
    TOOLPOOL_SPAWN_FAILED,
    TOOLPOOL_TIMEOUT,
    TOOLPOOL_DEAD,
    TOOLPOOL_SATURATED,
    TOOLPOOL_SHUT_DOWN,
    TOOLPOOL_LIMIT_REACHED,
    TOOLPOOL_PROTOCOL_ERROR,
    TOOLPOOL_TOOL_ERROR,
    TOOLPOOL_CONFIG,
    TOOLPOOL_INDEX_OUT_OF_RANGE,
    TOOLPOOL_QUEUE_FULL,
    TOOLPOOL_FAILED,
    TOOLPOOL_UNAVAILABLE,
    TOOLPOOL_IO,
    TOOLPOOL_CANCELLED,
    TOOLPOOL_SERVICE,
    TOOLPOOL_PANIC,
);

impl ToolpoolStatus {
    /// The status with this numeric value.
    pub fn from_code(code: i32) -> Option<ToolpoolStatus> {
        ToolpoolStatus::ALL.into_iter().find(|s| *s as i32 == code)
    }

    /// The numeric value (the C `int32_t`).
    pub fn code(self) -> i32 {
        self as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_numeric_order_and_names_match() {
        for w in ToolpoolStatus::ALL.windows(2) {
            assert!((w[0] as i32) < (w[1] as i32), "{w:?}");
        }
        for s in ToolpoolStatus::ALL {
            assert_eq!(s.name().to_str().unwrap(), format!("{s:?}"));
            assert_eq!(ToolpoolStatus::from_code(s.code()), Some(s));
        }
        assert_eq!(ToolpoolStatus::from_code(19), None);
    }
}
