//! System calls made by the calling thread, counted by the kernel: the
//! `raw_syscalls:sys_enter` tracepoint through `perf_event_open` on this thread only (no
//! `perf` tool needed; it needs tracefs and permission to open the event, which root has).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Where tracefs may be mounted.
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
const IOC_ENABLE: libc::c_ulong = 0x2400;
const IOC_DISABLE: libc::c_ulong = 0x2401;
const IOC_RESET: libc::c_ulong = 0x2403;
/// `disabled` (bit 0) and `exclude_hv` (bit 6) of the attribute flags.
const FLAGS: u64 = 1 | (1 << 6);

/// `struct perf_event_attr` as of its first version (64 bytes), which every kernel takes.
#[repr(C)]
#[derive(Default)]
struct Attr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

/// A counter of the system calls of the thread that made it.
pub struct Counter {
    fd: OwnedFd,
}

impl Counter {
    /// A counter for this thread, or why there cannot be one.
    pub fn new() -> Result<Counter, String> {
        let id = TRACEFS
            .iter()
            .find_map(|t| {
                std::fs::read_to_string(format!("{t}/events/raw_syscalls/sys_enter/id")).ok()
            })
            .ok_or("no tracefs with raw_syscalls:sys_enter")?;
        let attr = Attr {
            kind: PERF_TYPE_TRACEPOINT,
            size: std::mem::size_of::<Attr>() as u32,
            config: id
                .trim()
                .parse()
                .map_err(|e| format!("tracepoint id: {e}"))?,
            sample_period: 1,
            flags: FLAGS,
            ..Attr::default()
        };
        // SAFETY: perf_event_open with a valid, fully initialised attribute; this thread
        // (pid 0), any CPU (-1), no group (-1).
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const Attr,
                0,
                -1,
                -1,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(format!(
                "perf_event_open: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Counter { fd })
    }

    /// System calls per call of `f`, over `n` calls (the disabling `ioctl` is taken off).
    pub fn per_call(&self, n: usize, mut f: impl FnMut()) -> f64 {
        let fd = self.fd.as_raw_fd();
        let mut count = 0u64;
        // SAFETY: ioctls on our perf fd; an 8-byte read into a u64.
        unsafe {
            libc::ioctl(fd, IOC_RESET, 0);
            libc::ioctl(fd, IOC_ENABLE, 0);
            for _ in 0..n {
                f();
            }
            libc::ioctl(fd, IOC_DISABLE, 0);
            libc::read(fd, (&mut count as *mut u64).cast(), 8);
        }
        count.saturating_sub(1) as f64 / n as f64
    }
}
