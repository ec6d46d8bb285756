//! Tool specs and the registry: how to start and drive one tool.
//!
//! A registry is a JSON document `{"tools": {"<id>": {spec}}}`. Every key is documented in
//! docs/specs.md (a test keeps its table equal to the keys parsed here); unknown keys,
//! wrong types, an empty `command` or a `count` of 0 are errors that name the tool and the
//! key.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod dry_run;
mod fallback;
mod protocol;
mod remote;
mod run;
mod validate;
pub use dry_run::{DryDefault, DryError, DryReply, DryRun, DRY_RUN_ENV, MAX_DRY_EXIT_CODE};
pub use fallback::{Cause, Fallback, Retry};
pub use protocol::{Marker, Prompt, Protocol, DEFAULT_CONTINUATION};
pub use remote::{Launcher, RemoteSpec, COMMAND_PLACEHOLDER, HOST_PLACEHOLDER};
pub use run::{
    RunDryRun, RunSpec, DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_SLOT_TIMEOUT_MS, MAX_OUTPUT_BYTES,
};

/// Most instances in one pool.
pub const MAX_COUNT: usize = 4096;
/// Largest `limits.queue_lines` (queues allocate as they fill, up to this bound).
pub const MAX_QUEUE_LINES: usize = 1 << 20;
/// Largest value of any `*_ms` key: 30 days.
pub const MAX_DURATION_MS: u64 = 30 * 24 * 3600 * 1000;

/// Most runs a request may get after its first (`retry.max`).
pub const MAX_RETRIES: u32 = 100;

/// Largest `limits.max_rss_mb` and `limits.memory_budget_mb`: 1 TiB in MiB.
pub const MAX_MEMORY_MB: u64 = 1 << 20;

/// Environment variable naming the default registry path.
pub const REGISTRY_ENV: &str = "TOOLPOOL_REGISTRY";

/// How to start and drive one tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToolSpec {
    /// Tool id. In a registry the key is the id; a standalone spec may name it, else the
    /// file name of `command[0]` is used.
    pub id: String,
    /// argv of the tool; `command[0]` is the program (looked up in `PATH` when it has no
    /// slash). No shell is involved.
    pub command: Vec<String>,
    /// Extra environment variables for the child.
    pub env: BTreeMap<String, String>,
    /// Start the child with an empty environment (plus `env`).
    pub env_clear: bool,
    /// Working directory of the child.
    pub cwd: Option<PathBuf>,
    /// Number of instances.
    pub count: usize,
    /// Start-up: ready line and timeout.
    pub startup: Startup,
    /// Shutdown: grace period.
    pub shutdown: Shutdown,
    /// Line length and queue limits.
    pub limits: Limits,
    /// Request framing.
    pub protocol: Protocol,
    /// How `request` picks an instance.
    pub routing: Routing,
    /// Requests in flight on one instance at once (only `jsonrpc` may use more than 1).
    pub max_in_flight: usize,
    /// Run the tool once per request instead of (or as a fallback for) the pool.
    pub oneshot: Option<Oneshot>,
    /// Run a request that failed on the pool once through `oneshot`, by the cause of the
    /// failure: `false` (default), `true` (every cause but `tool_error`), a list of causes,
    /// or `{"on": [causes], "attempt_ms": N}` (see [`Fallback`]).
    pub fallback: Fallback,
    /// Run a request that failed on the pool again, up to `max` more times, on the causes
    /// `on` (see [`Retry`]). Default: no retry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Never start the pool; serve every request with `oneshot`. `TOOLPOOL_DISABLE=1` in the
    /// environment has the same effect.
    pub disabled: bool,
    /// Start no process: canned replies stand in for the tool (see [`DryRun`]). A dry
    /// pool ignores `disabled` and never runs `oneshot`. `TOOLPOOL_DRY_RUN=1` in the
    /// environment makes a pool without this key dry with [`DryRun::echo`].
    pub dry_run: Option<DryRun>,
    /// Supervision: restart policy, backoff and intensity cap.
    pub restart: Restart,
    /// Start instances on first use instead of at pool creation.
    pub lazy: bool,
    /// Stop an instance idle this long; it starts again on next use.
    pub idle_timeout_ms: Option<u64>,
    /// Recycle an instance after this many requests (with up to 10% jitter).
    pub max_requests: Option<u64>,
    /// Recycle an instance after this age.
    pub max_lifetime_ms: Option<u64>,
    /// Health probes.
    pub health: Option<HealthProbe>,
    /// `jsonrpc`/`lsp`: the method of a notification sent to the tool when a request is
    /// cancelled or times out, so it can stop work early: `$/cancelRequest` (LSP; params
    /// `{"id": <id>}`) or `notifications/cancelled` (MCP; params
    /// `{"requestId": <id>, "reason": "..."}`); any other method gets `{"id": <id>}`.
    pub cancel_notification: Option<String>,
    /// `jsonrpc`/`lsp`: fixed results for requests from the tool, by method. A request
    /// from the tool whose method is not here is answered at once with the JSON-RPC error
    /// -32601 "method not found", so the tool never waits for the host.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub client_replies: BTreeMap<String, serde_json::Value>,
    /// Elastic sizing: instances kept started (at least this many; default `count`). With
    /// fewer than `count`, `count` is the maximum: the pool starts this many, starts
    /// another only when every started one is busy and a caller would wait, and stops
    /// instances idle longer than `idle_timeout_ms` down to this many. 0: on demand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_instances: Option<usize>,
    /// Run the instances on other hosts through a launcher (ssh, srun, kubectl exec);
    /// see [`crate::remote`] (the launchers) and [`RemoteSpec`] (the key).
    pub remote: Option<RemoteSpec>,
    /// What happens to the tool's stderr lines besides the tail kept for status:
    /// `"keep"` (default) or `"log"` (each line is also a `log` record).
    pub stderr: StderrMode,
    /// Errors on stderr fail fast (`lines` and `marker` framing): while a request waits,
    /// stderr lines from its instance followed by this many milliseconds with no reply
    /// end it as a tool error ([`crate::Error::Tool`]) carrying those lines; the instance
    /// stays up. A warning followed by a reply within the window is no error. With
    /// `marker` framing, an empty reply after stderr lines is that error too (a tool told
    /// to print the marker by `end_command` prints it after an error as well).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr_error_ms: Option<u64>,
    /// The tool's stdin and stdout are a pseudo-terminal (stderr stays a pipe), so a tool
    /// that buffers its output on a pipe (stdio, Python, jq, sed, mawk) writes line by
    /// line as it does for a person. The terminal is raw: no echo, no CR/LF translation,
    /// no line-length limit; `TERM=dumb` unless `env` sets it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pty: bool,
}

/// The spec key `stderr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StderrMode {
    /// Queued for `read_stderr_line` and kept in the tail (always done).
    #[default]
    Keep,
    /// Also forwarded, one `log` record per line (target `toolpool::stderr`, level info).
    Log,
}

impl Default for ToolSpec {
    fn default() -> Self {
        ToolSpec {
            id: String::new(),
            command: Vec::new(),
            env: BTreeMap::new(),
            env_clear: false,
            cwd: None,
            count: 1,
            startup: Startup::default(),
            shutdown: Shutdown::default(),
            limits: Limits::default(),
            protocol: Protocol::Lines,
            routing: Routing::RoundRobin,
            max_in_flight: 1,
            oneshot: None,
            fallback: Fallback::default(),
            retry: None,
            disabled: false,
            dry_run: None,
            restart: Restart::default(),
            lazy: false,
            idle_timeout_ms: None,
            max_requests: None,
            max_lifetime_ms: None,
            health: None,
            cancel_notification: None,
            client_replies: BTreeMap::new(),
            min_instances: None,
            remote: None,
            stderr: StderrMode::Keep,
            stderr_error_ms: None,
            pty: false,
        }
    }
}

/// Start-up settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Startup {
    /// An instance is ready only once it prints this exact line on stdout. Lines before it
    /// (and the line itself) are start-up output and are not delivered.
    pub ready_line: Option<String>,
    /// How long to wait for the ready line (and for room under the process limit). Default 10000.
    /// The handshake, if any, must also be done within it.
    pub timeout_ms: u64,
    /// `jsonrpc`/`lsp`: messages sent on every start and restart, in order, before the
    /// instance takes work: each request's reply is awaited (an error object or no reply
    /// within `timeout_ms` fails the start); a notification is only sent. The reply to the
    /// first request is shown in the instance status as `handshake_reply`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub handshake: Vec<HandshakeMessage>,
}

/// One message of `startup.handshake`: a JSON-RPC payload in the same form as a request
/// payload (`{"method": ..., "params": ...}`), sent without an id when `notification`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandshakeMessage {
    /// The method.
    pub method: String,
    /// Its params: an array or an object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<serde_json::Value>,
    /// Send it as a notification (no id, no reply awaited).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notification: bool,
}

impl HandshakeMessage {
    /// The payload as the request functions take it: `{"method": ..., "params": ...}`.
    pub fn payload(&self) -> String {
        let mut o = serde_json::Map::new();
        o.insert("method".into(), self.method.clone().into());
        if let Some(p) = &self.params {
            o.insert("params".into(), p.clone());
        }
        serde_json::Value::Object(o).to_string()
    }
}

impl Default for Startup {
    fn default() -> Self {
        Startup {
            ready_line: None,
            timeout_ms: 10_000,
            handshake: Vec::new(),
        }
    }
}

/// Shutdown settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Shutdown {
    /// Grace period between SIGTERM and SIGKILL when the pool shuts down. Default 2000.
    pub grace_ms: u64,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown { grace_ms: 2_000 }
    }
}

/// Limits that keep memory bounded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Longest output line kept whole; longer lines are cut into pieces of this size and
    /// counted. Default 1 MiB.
    pub max_line_bytes: usize,
    /// Capacity of each instance's stdin queue and stdout queue, in lines. Default 1024.
    pub queue_lines: usize,
    /// Callers allowed to wait for a free instance before `request` fails with
    /// "saturated". Default 1024.
    pub max_waiting: usize,
    /// stderr lines kept per instance for diagnosis. Default 20.
    pub stderr_tail_lines: usize,
    /// Recycle an instance whose process group's resident memory exceeds this many MiB,
    /// after its current request (the replacement is started first). Default none.
    pub max_rss_mb: Option<u64>,
    /// Resident memory budget of the whole pool in MiB: over it, the largest idle
    /// instances are recycled first until the pool is back under it. Default none.
    pub memory_budget_mb: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 1 << 20,
            queue_lines: 1024,
            max_waiting: 1024,
            stderr_tail_lines: 20,
            max_rss_mb: None,
            memory_budget_mb: None,
        }
    }
}

/// How `request` picks an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Routing {
    /// Each request to the next instance in turn.
    #[default]
    RoundRobin,
    /// The instance with the fewest requests in flight; among ties, the one the calling
    /// thread took last in this pool (so a thread and its tool process stay warm on one
    /// CPU), else the next in turn.
    LeastBusy,
    /// A caller-given key maps to the same instance while it lives.
    Sticky,
}

/// One-shot mode: the tool run once per request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Oneshot {
    /// argv of the one-shot run.
    pub command: Vec<String>,
    /// How the payload reaches it.
    #[serde(default)]
    pub input: OneshotInput,
}

/// How a one-shot run gets the request payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OneshotInput {
    /// Written to stdin, followed by a newline, then stdin is closed.
    #[default]
    Stdin,
    /// Appended as the last argv element.
    Arg,
}

/// Restart policy of the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    /// Restart whenever an instance ends.
    Always,
    /// Restart only after a non-zero exit or a signal.
    OnFailure,
    /// Never restart automatically (`restart(i)` still works).
    #[default]
    Never,
}

/// Supervision settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Restart {
    /// When to restart. Default `never`.
    pub policy: RestartPolicy,
    /// First backoff delay. Default 100.
    pub backoff_initial_ms: u64,
    /// Backoff cap. Default 10000.
    pub backoff_max_ms: u64,
    /// Restarts allowed within `window_ms` before the instance is marked failed. Default 5.
    pub max_restarts: u32,
    /// Window of the intensity cap; also how long an instance must stay up for its backoff
    /// to reset. Default 60000.
    pub window_ms: u64,
}

impl Default for Restart {
    fn default() -> Self {
        Restart {
            policy: RestartPolicy::Never,
            backoff_initial_ms: 100,
            backoff_max_ms: 10_000,
            max_restarts: 5,
            window_ms: 60_000,
        }
    }
}

/// Health probe settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthProbe {
    /// Time between probes of an idle instance. Default 5000.
    pub interval_ms: u64,
    /// A probe not answered within this is a failure: the instance is killed and restarted.
    /// Default 2000.
    pub timeout_ms: u64,
    /// For `lines`/`marker` tools: the line to send. For `jsonrpc` the probe is a `ping`
    /// call and this is ignored.
    pub probe: Option<String>,
    /// The expected reply; when absent any reply passes.
    pub expect: Option<String>,
}

impl Default for HealthProbe {
    fn default() -> Self {
        HealthProbe {
            interval_ms: 5_000,
            timeout_ms: 2_000,
            probe: None,
            expect: None,
        }
    }
}

impl ToolSpec {
    /// A spec for `command` with every other key at its default.
    pub fn new<I, S>(command: I) -> ToolSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let command: Vec<String> = command.into_iter().map(Into::into).collect();
        let mut spec = ToolSpec {
            command,
            ..ToolSpec::default()
        };
        spec.id = spec.default_id();
        spec
    }

    /// Parse a standalone spec (the same keys as a registry entry, plus an optional `id`).
    pub fn from_json(json: &str) -> Result<ToolSpec> {
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| Error::Config(format!("spec is not valid JSON: {e}")))?;
        ToolSpec::from_value(None, value)
    }

    fn from_value(id: Option<&str>, value: serde_json::Value) -> Result<ToolSpec> {
        // The tool's name in messages: the registry's id, else the spec's own `id`, else
        // the file name of `command[0]` (what the id will default to), read off the raw
        // JSON since the spec may not deserialize.
        let own = || {
            let id = value.get("id").and_then(|v| v.as_str());
            let cmd = value
                .get("command")
                .and_then(|c| c.get(0))
                .and_then(|c| c.as_str())
                .map(|c| c.rsplit('/').next().unwrap_or(c));
            id.or(cmd).filter(|s| !s.is_empty())
        };
        let name = sanitize(id.or_else(own).unwrap_or("<spec>"));
        if !value.is_object() {
            return Err(Error::Config(format!(
                "tool '{name}': a spec must be a JSON object"
            )));
        }
        let count_given = value.get("count").is_some();
        let mut spec: ToolSpec = deserialize_named(value, &format!("tool '{name}'"))?;
        if let Some(id) = id {
            if !spec.id.is_empty() && spec.id != id {
                return Err(Error::Config(format!(
                    "tool '{name}': key 'id' is '{}' but the registry names it '{name}'",
                    sanitize(&spec.id)
                )));
            }
            spec.id = id.to_string();
        } else if spec.id.is_empty() {
            spec.id = spec.default_id();
        }
        if let Some(n) = spec.remote.as_ref().and_then(|r| r.per_host) {
            if count_given {
                return Err(Error::Config(format!(
                    "tool '{name}': key 'remote.per_host': cannot be used with 'count' (give one of them)"
                )));
            }
            // Hosts taken from a Slurm allocation are not known yet: one until they are.
            let hosts = spec.remote.as_ref().map_or(1, |r| r.hosts.len().max(1));
            spec.count = n.saturating_mul(hosts);
        }
        spec.validate()?;
        Ok(spec)
    }

    fn default_id(&self) -> String {
        self.command
            .first()
            .map(|c| c.rsplit('/').next().unwrap_or(c).to_string())
            .unwrap_or_default()
    }

    /// The tool name used in error messages.
    fn display_id(&self) -> &str {
        if self.id.is_empty() {
            "<spec>"
        } else {
            &self.id
        }
    }
}

/// `value` as a `T`; an error names `what` (`tool 'bc'`), the key path and why, as
/// [`Error::Config`].
pub(crate) fn deserialize_named<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    what: &str,
) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let key = if path == "." {
            String::new()
        } else {
            format!(" key '{}':", sanitize(&path))
        };
        let why = sanitize_all(&e.inner().to_string());
        Error::Config(format!("{what}:{key} {why}"))
    })
}

/// `s` made safe for messages and names: control characters (NUL, newlines) become
/// U+FFFD, and it is cut to 200 characters.
pub(crate) fn sanitize(s: &str) -> String {
    sanitize_all(&s.chars().take(200).collect::<String>())
}

/// `s` with its control characters (NUL, newlines) replaced by U+FFFD.
pub(crate) fn sanitize_all(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

/// A set of tool specs by id, usually loaded from a JSON file.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Registry {
    /// Specs by tool id.
    pub tools: BTreeMap<String, ToolSpec>,
}

impl Registry {
    /// Parse a registry document `{"tools": {"<id>": {spec}}}`.
    pub fn from_json(json: &str) -> Result<Registry> {
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| Error::Config(format!("registry is not valid JSON: {e}")))?;
        let serde_json::Value::Object(mut top) = value else {
            return Err(Error::Config("registry must be a JSON object".into()));
        };
        if let Some(k) = top.keys().find(|k| *k != "tools") {
            return Err(Error::Config(format!(
                "registry: unknown top-level key '{}' (expected 'tools')",
                sanitize(k)
            )));
        }
        let Some(serde_json::Value::Object(tools)) = top.remove("tools") else {
            return Err(Error::Config(
                "registry: key 'tools' must be an object of tool specs".into(),
            ));
        };
        let mut out = Registry::default();
        for (id, spec) in tools {
            if id.is_empty() {
                return Err(Error::Config("registry: a tool id is empty".into()));
            }
            let spec = ToolSpec::from_value(Some(&id), spec)?;
            out.tools.insert(id, spec);
        }
        Ok(out)
    }

    /// Read and parse a registry file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Registry> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Io(format!("cannot read registry {}: {e}", path.display())))?;
        Registry::from_json(&text).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Load the registry named by `TOOLPOOL_REGISTRY`.
    pub fn from_env() -> Result<Registry> {
        match std::env::var_os(REGISTRY_ENV) {
            Some(p) => Registry::from_path(p),
            None => Err(Error::Config(format!("{REGISTRY_ENV} is not set"))),
        }
    }

    /// The spec of `tool`, or [`Error::UnknownTool`] naming the known ids.
    pub fn get(&self, tool: &str) -> Result<&ToolSpec> {
        self.tools.get(tool).ok_or_else(|| Error::UnknownTool {
            tool: tool.to_string(),
            known: self.tools.keys().cloned().collect(),
        })
    }
}
