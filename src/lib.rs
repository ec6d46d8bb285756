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
pub use router::{MapResult, Reply, ServedBy};
pub use spec::{
    HealthProbe, Limits, Oneshot, OneshotInput, Protocol, Registry, Restart, RestartPolicy,
    Routing, Shutdown, Startup, ToolSpec,
};
