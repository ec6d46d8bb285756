//! `ToolpoolPermit`: one slot of the host-wide process limit, for a process the host
//! starts itself (wraps [`crate::Permit`], from [`crate::Limiter::acquire`] on
//! [`crate::Limiter::global`]).

use super::cancel::ToolpoolCancel;
use super::{ffi_call, ffi_void, Handle};
use crate::Permit;

/// An opaque permit handle, from `toolpool_limit_acquire`, released (and freed) with
/// `toolpool_permit_release`. Every call but `toolpool_permit_release` may be made from
/// many threads at once on the same handle.
pub struct ToolpoolPermit {
    permit: Permit,
}

impl Handle for ToolpoolPermit {
    type Inner = Permit;
    const WHAT: &'static str = "permit";
    fn inner(&self) -> &Permit {
        &self.permit
    }
}

/// Take one slot of the host-wide process limit, waiting up to `timeout_ms` for room (0:
/// fail at once when the limit is full), or until `c` is triggered: the gate for a
/// process the host starts itself. Start the process after this returns, then register
/// its pid with `toolpool_permit_register_pid`. The slot counts in
/// `toolpool_limit_status_json` until the permit is released, or until the registered
/// process exits. When the process uses a `toolpool serve` service (a live
/// `ToolpoolClient`, or `$TOOLPOOL_SERVER`), the slot is one of the service's limit, held
/// on a connection of its own: this process dying gives it back at once.
///
/// Errors: `TOOLPOOL_LIMIT_REACHED` ("maximum concurrent processes reached: N of M"),
/// `TOOLPOOL_CANCELLED`, `TOOLPOOL_SERVICE`.
/// NULL handling: `out` NULL is `TOOLPOOL_INVALID_ARGUMENT`; `c` may be NULL.
/// Ownership: `c` is borrowed for the call. On success `*out` receives a new permit that
/// the caller owns and releases with `toolpool_permit_release`.
/// Thread safety: safe from any thread; `c` may be triggered from any thread.
///
/// # Safety
/// `c` must be NULL or a live token; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_limit_acquire(
    timeout_ms: u32,
    c: *const ToolpoolCancel,
    out: *mut *mut ToolpoolPermit,
) -> i32 {
    ffi_call("toolpool_limit_acquire", || {
        let out = try_out!(out);
        let permit = crate::acquire_slot(try_wait!(timeout_ms, c))?;
        out.write(Box::into_raw(Box::new(ToolpoolPermit { permit })));
        Ok(())
    })
}

/// Attach `pid`, a process the host started after taking the permit, to the permit's
/// slot: `toolpool_limit_status_json` lists it (kind `registered`) and `toolpool_kill_all`
/// SIGKILLs it (through a pidfd, so a pid reaped and reused is never signalled; its
/// process group too if it leads one). The slot comes back as soon as the process exits
/// (seen through the pidfd by one watcher thread, not by polling), or when the permit is
/// released. One pid per permit. If a kill-all ran since the permit was taken, the
/// process is killed at once.
///
/// Errors: `TOOLPOOL_INVALID_ARGUMENT` (a pid below 1, this process, no process with that
/// pid, a pid already counted, a permit that already holds a pid), `TOOLPOOL_IO` (the
/// kernel gives no pidfd: Linux 5.3 or later is needed).
/// NULL handling: `p` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: nothing is allocated; the permit keeps a pidfd until it is released.
/// Thread safety: safe from any thread.
///
/// # Safety
/// `p` must be NULL or a live permit.
#[no_mangle]
pub unsafe extern "C" fn toolpool_permit_register_pid(p: *const ToolpoolPermit, pid: i32) -> i32 {
    ffi_call("toolpool_permit_register_pid", || {
        try_handle!(p).register_pid(pid)
    })
}

/// Whether the permit still holds its slot: `*out_holds` receives 1 before a pid is
/// registered and while the registered process runs, 0 once it has exited.
///
/// NULL handling: `p` or `out_holds` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: nothing is allocated.
/// Thread safety: safe from any thread.
///
/// # Safety
/// `p` must be NULL or a live permit; `out_holds` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_permit_holds_slot(
    p: *const ToolpoolPermit,
    out_holds: *mut u32,
) -> i32 {
    ffi_call("toolpool_permit_holds_slot", || {
        let permit = try_handle!(p);
        let out = try_out!(out_holds);
        out.write(u32::from(permit.holds_slot()));
        Ok(())
    })
}

/// Give the slot back and free the permit. A registered process is left running; it is
/// no longer counted (nor killed by `toolpool_kill_all`).
///
/// NULL handling: NULL is ignored.
/// Ownership: takes back ownership of `p`; `p` must not be used afterwards.
/// Thread safety: must not race another call on the same permit.
///
/// # Safety
/// `p` must be NULL or a permit from `toolpool_limit_acquire` not yet released, with no
/// call on it in progress.
#[no_mangle]
pub unsafe extern "C" fn toolpool_permit_release(p: *mut ToolpoolPermit) {
    ffi_void("toolpool_permit_release", || {
        if !p.is_null() {
            // SAFETY: per the contract, `p` came from `toolpool_limit_acquire` and is
            // released once.
            drop(unsafe { Box::from_raw(p) });
        }
    })
}
