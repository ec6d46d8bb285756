//! The bridge from the `log` facade to a host that is not Rust (C, Go, Python): one
//! process-wide sink that receives toolpool's records as (level, target, message).
//!
//! toolpool writes its records through the [`log`] facade, so a Rust host sees them with
//! whatever logger it installed (`env_logger`, `tracing-log`, ...). A C, Go or Python host
//! has no `log` logger; [`set_sink`] installs this module's logger **only when such a host
//! asks**, and only if the process has no `log` logger yet. The rule:
//!
//! - a Rust host that installed its own logger keeps it: [`set_sink`] then fails with
//!   [`Error::InvalidArgument`] and changes nothing (toolpool's records go to the host's logger);
//! - once the bridge is installed it stays the process's `log` logger (the facade cannot
//!   uninstall one); removing the sink (`None`) sets the `log` max level to off, so records
//!   cost one comparison.
//!
//! Only records whose target starts with `toolpool` are forwarded. The sink is called on
//! the thread that emits the record (a pool's supervisor thread, the stderr thread of an
//! instance, which also reaps its process, or a caller's thread), possibly on several at
//! once. [`set_sink`] waits for calls in progress, so once it returns the old sink is
//! never called again. A record emitted from inside the sink (on the same thread) is
//! dropped, and a panic inside the sink path is caught and dropped.

use crate::error::{Error, Result};
use log::{LevelFilter, Log, Metadata, Record};
use parking_lot::RwLock;
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};

/// Where records go: level, target, message. Called from any thread.
pub type Sink = Box<dyn Fn(log::Level, &str, &str) + Send + Sync>;

static SINK: RwLock<Option<Sink>> = RwLock::new(None);

/// 0: not tried; 1: the bridge is the `log` logger; 2: another logger is.
static INSTALLED: AtomicU8 = AtomicU8::new(0);
const OURS: u8 = 1;
const THEIRS: u8 = 2;

thread_local! {
    static IN_SINK: Cell<bool> = const { Cell::new(false) };
}

struct Bridge;

static BRIDGE: Bridge = Bridge;

impl Log for Bridge {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level() && metadata.target().starts_with("toolpool")
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // A record from inside the sink (or a thread-local being torn down): dropped.
        let Ok(false) = IN_SINK.try_with(|c| c.replace(true)) else {
            return;
        };
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let message = record.args().to_string();
            if let Some(sink) = SINK.read().as_ref() {
                sink(record.level(), record.target(), &message);
            }
        }));
        let _ = IN_SINK.try_with(|c| c.set(false));
    }

    fn flush(&self) {}
}

/// Send toolpool's records up to `max_level` to `sink` (`None`: stop sending them).
///
/// Installs the bridge as the process's `log` logger on first use. Fails with
/// [`Error::InvalidArgument`] when another `log` logger is installed (a Rust host's: it keeps
/// receiving the records), and with [`Error::InvalidArgument`] when called from inside the
/// sink. Waits for calls of the old sink in progress on other threads.
pub fn set_sink(max_level: LevelFilter, sink: Option<Sink>) -> Result<()> {
    if IN_SINK.try_with(|c| c.get()).unwrap_or(true) {
        return Err(Error::InvalidArgument(
            "the log callback cannot be changed from inside the log callback".into(),
        ));
    }
    let Some(sink) = sink else {
        *SINK.write() = None;
        if INSTALLED.load(Ordering::Acquire) == OURS {
            log::set_max_level(LevelFilter::Off);
        }
        return Ok(());
    };
    install()?;
    *SINK.write() = Some(sink);
    log::set_max_level(max_level);
    Ok(())
}

/// Make the bridge the `log` logger, once; an error if another logger holds the place.
fn install() -> Result<()> {
    let state = INSTALLED.load(Ordering::Acquire);
    let state = if state == 0 {
        let s = if log::set_logger(&BRIDGE).is_ok() {
            OURS
        } else {
            THEIRS
        };
        INSTALLED.store(s, Ordering::Release);
        s
    } else {
        state
    };
    if state == OURS {
        Ok(())
    } else {
        Err(Error::InvalidArgument(
            "another `log` logger is installed in this process (the Rust host's own); \
             toolpool's records go to it, not to a log callback"
                .into(),
        ))
    }
}

/// True when the bridge is the process's `log` logger and a sink is set.
pub fn is_active() -> bool {
    INSTALLED.load(Ordering::Acquire) == OURS && SINK.read().is_some()
}

/// A `log` level as the C number: 1 = error, 2 = warn, 3 = info, 4 = debug, 5 = trace.
pub fn level_number(level: log::Level) -> i32 {
    level as i32
}

/// The `log` filter for C number `n` (0 = off, 1 = error ... 5 = trace), or `None` when
/// out of range.
pub fn level_filter(n: i32) -> Option<LevelFilter> {
    Some(match n {
        0 => LevelFilter::Off,
        1 => LevelFilter::Error,
        2 => LevelFilter::Warn,
        3 => LevelFilter::Info,
        4 => LevelFilter::Debug,
        5 => LevelFilter::Trace,
        _ => return None,
    })
}
