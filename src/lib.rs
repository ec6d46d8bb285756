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
//! about ([`InstanceStatus`], [`Reply::instance`]); [`Pool::resize`] changes `count` (the
//! top indices come and go), and an elastic pool (`min_instances`) runs only some of them. The process that serves an instance now
//! is its **incarnation**; a restart, a recycle or an idle stop ends one incarnation, and
//! the next start makes a new one (a new pid) for the same instance. In a dry-run pool
//! ([`ToolSpec::dry_run`]) an incarnation has no process: a responder thread at the far
//! end of the same pipes answers with canned replies (`dry`), and it has no pid.
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
//!    ([`Error::Saturated`]). Only started instances are picked: when every one is busy,
//!    a waiting caller has one stopped instance (lazy, idle, elastic) started in the
//!    background (`sizing`) and takes whichever frees first, the busy one or the new one
//!    (once past its [`Startup::ready_line`] and its [`Startup::handshake`], `handshake`).
//! 3. **stdin.** `exchange::exchange` frames the payload by [`Protocol`]: for `lines` and
//!    `marker` it first drops stdout lines nobody asked for, then queues the line on the
//!    incarnation's stdin (`writer`: written at once when nothing is queued, else by the
//!    writer thread, with SIGPIPE blocked); for `jsonrpc` it registers a fresh id with the
//!    incarnation's dispatcher (`rpc`) and sends the encoded request (for `lsp` framed
//!    with `Content-Length` headers by `lsp`).
//! 4. **The child** reads the line and writes its reply on stdout.
//! 5. **stdout.** The waiting caller reads the pipe itself (`reader`: one leader reads at
//!    a time for all waiters, splits lines, cuts over-long ones; it reads first when
//!    replies come at once, spins briefly when they come within [`SPIN_BUDGET`], and
//!    sleeps in `poll` otherwise); in `jsonrpc` each line
//!    passes the dispatcher, which hands a reply to the request waiting for its id,
//!    queues notifications, answers requests from the tool (`client_replies`, else
//!    "method not found"), and drops (and counts) replies nobody waits for; for `lsp` the
//!    `lsp` filter first cuts the stream by `Content-Length`.
//! 6. **Back to the caller.** The framed reply (the line; the lines up to the marker; the
//!    `result` JSON, or [`Error::Tool`]) is counted in the instance's metrics. A timeout or
//!    protocol error in `lines` or `marker` framing may leave a late reply in the stream,
//!    so the incarnation is killed and the supervisor (`supervisor`) starts another. The
//!    request counts toward [`ToolSpec::max_requests`], the instance goes back to
//!    admission (waking a waiter), an [`Error::InstanceDead`] falls back to the one-shot
//!    run when [`ToolSpec::fallback`] says so, and the [`Reply`] returns.
//!
//! Steps 3 to 6 on a taken instance are one function, `Hold::serve` (`hold`): a routed
//! request and a [`Lease::request`] take the same path and count alike.
//!
//! **Cancellation.** Every blocking call takes `impl Into<`[`Wait`]`>`: a `Duration`, or a
//! timeout with a [`CancelToken`] that another thread may trigger. The token travels down
//! with the deadline to whatever waits (admission, the limiter, the start, the stdout
//! leader's `poll`, a follower's condvar) and wakes it; the call returns
//! [`Error::Cancelled`] and the request ends as a timed-out one would (step 6).
//!
//! **Completion queue.** For hosts that wait on an event loop, [`Completions`] runs the
//! same request on a thread of its own and reports it on an eventfd the loop watches.
//!
//! Layers, each importing only those below it: `spec`, `error`, `status`, `util`, `linebuf`,
//! `pipe`, `term`, [`cancel`] → `metrics`, `spawn`, `session` → `process` → `limiter`,
//! `reader`, `writer`, `stderr` → `rpc`, `dry` → [`run`] → `oneshot`, `lsp` →
//! `incarnation` → `prompt` → `instance`, `admission`, `exchange` → `handshake`, `roster`
//! → `lifecycle` → `sizing`, `recycle` → `hold` → `supervisor`, `snapshot` → `router` →
//! `wire` → `link` → `lease`, `local` → `pool` → [`client`] → [`pools`], [`completions`]
//! → `limit` → [`service`]; [`ffi`] (feature `capi`) on top. A submodule is part of its
//! parent's layer and holds one of its ideas: `spec`'s validation (`spec/validate.rs`) and
//! key data (`spec/protocol.rs`, `spec/dry_run.rs`, `spec/remote.rs`, `spec/run.rs`), how
//! an incarnation is put together (`incarnation/start.rs`), what a dry-run responder
//! answers (`dry/script.rs`) and what a dry run does (`dry/run.rs`), the start of a whole
//! pool (`lifecycle/start_all.rs`), the spawn helper with a small fd table
//! (`spawn/helper.rs`), the processes a host registers on a permit (`limiter/permit.rs`),
//! collecting a run's output (`run/output.rs`).
//! [`remote`] sits beside `incarnation` (it builds the launcher argv that `process`
//! spawns, runs the ssh master connections, and keeps an `srun` pool's Slurm steps with
//! `squeue`/`scancel` run through `oneshot`; `lifecycle` asks it for each start); its
//! data, [`RemoteSpec`], is part of `spec`.
//! Runs ([`Run`], [`run_output`]) are one command started once under the process limit,
//! made of the same parts as an incarnation (`limiter`, `writer`, `reader`, `stderr`);
//! [`Permit`]s gate the processes a host starts itself.
//! Observability adds `procstat` (memory and CPU from `/proc`, beside `process`),
//! [`log_bridge`] (the `log` sink for C, Go and Python hosts, a leaf) and `prometheus`
//! (the text exposition and the list of live pools, above `snapshot`).

mod admission;
pub mod cancel;
pub mod client;
pub mod completions;
mod dry;
pub mod error;
mod exchange;
#[cfg(feature = "capi")]
pub mod ffi;
mod handshake;
mod hold;
mod incarnation;
mod instance;
mod lease;
mod lifecycle;
mod limit;
pub mod limiter;
mod linebuf;
mod link;
mod local;
pub mod log_bridge;
mod lsp;
pub mod metrics;
mod oneshot;
mod pipe;
pub mod pool;
pub mod pools;
mod process;
mod procstat;
mod prometheus;
mod prompt;
mod reader;
mod recycle;
pub mod remote;
mod roster;
pub mod router;
mod rpc;
pub mod run;
pub mod service;
mod session;
mod sizing;
mod snapshot;
mod spawn;
pub mod spec;
pub mod status;
mod stderr;
mod supervisor;
mod term;
mod util;
mod wire;
mod writer;

pub use cancel::{CancelToken, Wait};
pub use client::Client;
pub use completions::{Completion, Completions, MAX_COMPLETION_THREADS};
pub use error::{DeathInfo, Error, ExitInfo, Result};
pub use status::ToolpoolStatus;

pub use dry::{MAX_DRY_OUT_BYTES, MAX_DRY_PENDING, MAX_DRY_REQUEST_BYTES};
pub use incarnation::State;
pub use lease::Lease;
pub use limit::{acquire_slot, kill_all, limit_status, run_output, set_limit};
pub use limiter::{KillReport, Limiter, LimiterStatus, Permit, ProcessInfo, ProcessKind};
pub use lsp::MAX_LSP_HEADER_BYTES;
pub use metrics::{InstanceMetrics, LatencySnapshot, MetricsSnapshot};
pub use oneshot::MAX_ONESHOT_OUTPUT_BYTES;
pub use pool::metrics_prometheus_all;
pub use pool::{
    Health, HostStatus, InstanceStatus, Pool, PoolOptions, PoolStatus, RequestOptions, DISABLE_ENV,
};
pub use pools::{Pools, ReloadReport};
pub use reader::SPIN_BUDGET;
pub use remote::{Launcher, RemoteSpec};
pub use router::{MapResult, Reply, ServedBy};
pub use run::{run_output_with, Run, RunOptions, RunOutput, RunStatus, Stream};
pub use service::{ClientStatus, Service, ServiceOptions, ServiceStatus};
pub use spec::StderrMode;
pub use spec::{
    Cause, Fallback, HandshakeMessage, HealthProbe, Limits, Oneshot, OneshotInput, Protocol,
    Registry, Restart, RestartPolicy, Retry, Routing, Shutdown, Startup, ToolSpec,
};
pub use spec::{DryDefault, DryError, DryReply, DryRun, DRY_RUN_ENV};
pub use spec::{RunDryRun, RunSpec};
pub use stderr::{leaked_threads, STREAM_JOIN_WAIT};
