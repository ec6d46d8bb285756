//! toolpool keeps pools of long-lived command-line tool processes warm and drives them
//! over stdin/stdout, so a program pays a tool's start-up cost once instead of per call.
//!
//! Synchronous and runtime-free: blocking calls with timeouts, OS threads per instance
//! for the stdin backlog, stderr and reaping (stdout is read by the caller that waits for
//! it), bounded crossbeam queues. Usable from Rust, from C through the C ABI
//! ([`ffi`], `include/toolpool.h`), and from Go and Python through bindings over it.
//!
//! ```no_run
//! use std::time::Duration;
//! use toolpool::{Pool, ToolSpec};
//!
//! let pool = Pool::from_spec(ToolSpec { count: 3, ..ToolSpec::new(["bc", "-q"]) })?;
//! pool.send(0, "2^10")?;
//! assert_eq!(pool.read_line(0, Duration::from_secs(1))?, "1024");
//! let reply = pool.request("6*7", Duration::from_secs(1))?;
//! assert_eq!(reply.text, "42");
//! println!("{}", serde_json::to_string(&pool.health())?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Two nouns
//!
//! An **instance** is one of a pool's `count` indices (`0..count`), the unit the API talks
//! about ([`InstanceStatus`], [`Reply::instance`]). The process that serves an instance now
//! is its **incarnation**; a restart, a recycle or an idle stop ends one incarnation, and
//! the next start makes a new one (a new pid) for the same instance.
//!
//! # Life of a request
//!
//! What [`Pool::request`] does, top to bottom (the modules named in `code` are private;
//! each opens with what it owns):
//!
//! 1. **Caller → router.** [`Pool::request`] (or [`Pool::request_sticky`], [`Pool::map`],
//!    [`Lease::request`]) hands the payload to `router::request`, which fails fast on a
//!    shut-down pool ([`Error::ShutDown`]) and serves a disabled one with the spec's
//!    [`Oneshot`] run.
//! 2. **Admission.** `router::take` picks an instance under the one admission lock
//!    (`admission`): by [`Routing`] (round robin, least busy, or the sticky key's instance
//!    while its incarnation lives), among instances that are usable, unleased and below
//!    [`ToolSpec::max_in_flight`]. None free: the caller waits on the admission condvar
//!    until the deadline ([`Error::Timeout`]), at most [`Limits::max_waiting`] of them
//!    ([`Error::Saturated`]). A stopped instance (lazy, idle) is started first
//!    (`lifecycle`), which waits for its [`Startup::ready_line`].
//! 3. **stdin.** `exchange::exchange` frames the payload by [`Protocol`]: for `lines` and
//!    `marker` it first drops stdout lines nobody asked for, then queues the line on the
//!    incarnation's stdin (`writer`: written at once when nothing is queued, else by the
//!    writer thread, with SIGPIPE blocked); for `jsonrpc` it registers a fresh id with the
//!    incarnation's dispatcher (`rpc`) and sends the encoded request.
//! 4. **The child** reads the line and writes its reply on stdout.
//! 5. **stdout.** The waiting caller reads the pipe itself (`reader`: one leader reads at
//!    a time for all waiters, splits lines, cuts over-long ones; it reads first when
//!    replies come at once, spins briefly when they come within [`SPIN_BUDGET`], and
//!    sleeps in `poll` otherwise); in `jsonrpc` each line
//!    passes the dispatcher, which hands a reply to the request waiting for its id,
//!    queues notifications, and drops (and counts) replies nobody waits for.
//! 6. **Back to the caller.** The framed reply (the line; the lines up to the marker; the
//!    `result` JSON, or [`Error::Tool`]) is counted in the instance's metrics. A timeout or
//!    protocol error in `lines` or `marker` framing may leave a late reply in the stream,
//!    so the incarnation is killed and the supervisor (`supervisor`) starts another. The
//!    instance goes back to admission (waking a waiter), the request counts toward
//!    [`ToolSpec::max_requests`], an [`Error::InstanceDead`] falls back to the one-shot
//!    run when [`ToolSpec::fallback`] says so, and the [`Reply`] returns.
//!
//! Layers, each importing only those below it: `spec`, `error`, `status`, `util` →
//! `metrics`, `spawn` → `process` → `limiter`, `reader`, `writer` → `rpc`, `oneshot` →
//! `incarnation` → `instance`, `admission`, `exchange` → `lifecycle` → `supervisor`,
//! `snapshot` → `router` → `lease` → `pool` → `pools`; [`ffi`] (feature `capi`) on top.

mod admission;
pub mod error;
mod exchange;
#[cfg(feature = "capi")]
pub mod ffi;
mod incarnation;
mod instance;
mod lease;
mod lifecycle;
pub mod limiter;
pub mod metrics;
mod oneshot;
pub mod pool;
pub mod pools;
mod process;
mod reader;
pub mod router;
mod rpc;
mod snapshot;
mod spawn;
pub mod spec;
pub mod status;
mod supervisor;
mod util;
mod writer;

pub use error::{DeathInfo, Error, ExitInfo, Result};
pub use status::ToolpoolStatus;

pub use incarnation::{leaked_threads, State, STREAM_JOIN_WAIT};
pub use lease::Lease;
pub use limiter::{KillReport, Limiter, LimiterStatus};
pub use metrics::{InstanceMetrics, LatencySnapshot, MetricsSnapshot};
pub use oneshot::MAX_ONESHOT_OUTPUT_BYTES;
pub use pool::{Health, InstanceStatus, Pool, PoolOptions, PoolStatus, DISABLE_ENV};
pub use pools::Pools;
pub use reader::SPIN_BUDGET;
pub use router::{MapResult, Reply, ServedBy};
pub use spec::{
    HealthProbe, Limits, Oneshot, OneshotInput, Protocol, Registry, Restart, RestartPolicy,
    Routing, Shutdown, Startup, ToolSpec,
};
