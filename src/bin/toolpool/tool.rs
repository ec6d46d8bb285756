//! Which tool to run and how: `-- CMD ARGS`, `--spec FILE` or `--registry FILE --tool ID`,
//! plus the spec keys users need most as flags. Builds a [`ToolSpec`].

use crate::Fatal;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;
use toolpool::spec::{Marker, Prompt};
use toolpool::{Protocol, Registry, RestartPolicy, ToolSpec};

/// The tool and its settings, shared by `run` and `bench`.
#[derive(Args, Debug, Clone)]
pub struct ToolArgs {
    /// A standalone tool spec (JSON; the registry keys plus an optional "id").
    #[arg(long, value_name = "FILE", help_heading = "Tool")]
    pub spec: Option<PathBuf>,

    /// A registry file {"tools": {"<id>": {spec}}}; pick the tool with --tool
    /// [default: $TOOLPOOL_REGISTRY].
    #[arg(long, value_name = "FILE", help_heading = "Tool")]
    pub registry: Option<PathBuf>,

    /// The tool id in the registry.
    #[arg(long, value_name = "ID", help_heading = "Tool")]
    pub tool: Option<String>,

    /// Number of warm instances [default: the number of cores for `-- CMD`, the spec's
    /// "count" for --spec and --registry].
    #[arg(short = 'n', long, value_name = "N", help_heading = "Tool")]
    pub instances: Option<usize>,

    /// Framing: "lines" (one line in, one line out), "jsonrpc" (each input line is
    /// {"method": ..., "params": ...}; the reply is the result), "lsp" (the same with
    /// the Language Server Protocol's Content-Length framing; a start-up handshake comes
    /// from --spec), "marker:END" (the reply is every line up to the line END), or
    /// "prompt:REGEX" (an interactive tool: the reply is what it writes up to its next
    /// prompt, which REGEX matches; with --pty for most REPLs) [default: lines, or the
    /// spec's].
    #[arg(long, value_name = "PROTOCOL", value_parser = parse_protocol, help_heading = "Tool")]
    pub protocol: Option<Protocol>,

    /// With --protocol marker:END, a line sent after each request that makes the tool
    /// print END (bc: 'print "END\n"', sqlite3: '.print END', sh: 'echo END'), so replies
    /// of several lines arrive whole.
    #[arg(long, value_name = "LINE", help_heading = "Tool")]
    pub end_command: Option<String>,

    /// Run the tool on a pseudo-terminal (stdin and stdout; stderr stays apart), so a tool
    /// that buffers its output on a pipe (jq, sed, python3, mawk...) answers line by line.
    #[arg(long, help_heading = "Tool")]
    pub pty: bool,

    /// A request fails as a tool error, with the tool's stderr lines, when the tool wrote
    /// on stderr and no reply came for this long (lines and marker framing; 0: off)
    /// [default: 200ms for `-- CMD`, the spec's otherwise].
    #[arg(long, value_name = "MS", help_heading = "Tool")]
    pub stderr_error_ms: Option<u64>,

    /// Restarts of one instance allowed within a minute (restart.window_ms) before it is
    /// marked failed and requests fail with the reason [default: 5, or the spec's].
    #[arg(long, value_name = "N", help_heading = "Tool")]
    pub max_restarts: Option<u32>,

    /// An instance is ready only once it prints this exact line (start-up output before it
    /// is not taken for a reply).
    #[arg(long, value_name = "LINE", help_heading = "Tool")]
    pub ready_line: Option<String>,

    /// How long an instance may take to start (and print --ready-line)
    /// [default: 10s, or the spec's].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Tool")]
    pub startup_timeout: Option<Duration>,

    /// Extra environment variable for the tool (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env, help_heading = "Tool")]
    pub env: Vec<(String, String)>,

    /// Working directory of the tool.
    #[arg(long, value_name = "DIR", help_heading = "Tool")]
    pub cwd: Option<PathBuf>,

    /// Restart an instance that ends: "never", "on-failure" (non-zero exit or signal) or
    /// "always" [default: on-failure for `-- CMD`, the spec's for --spec and --registry].
    #[arg(long, value_name = "POLICY", value_parser = parse_restart, help_heading = "Tool")]
    pub restart: Option<RestartPolicy>,

    /// Requests in flight on one instance at once (jsonrpc and lsp only) [default: 1, or the
    /// spec's].
    #[arg(long, value_name = "N", help_heading = "Tool")]
    pub in_flight: Option<usize>,

    /// The tool's command line, after `--` (no shell is involved).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// The pool `run` drives: one to start here from a spec, or a service's (`--tool ID` with
/// `TOOLPOOL_SERVER` set).
pub enum Source {
    /// Start a local pool from this spec.
    Local(Box<ToolSpec>),
    /// The service's pool, already open.
    Service(toolpool::Pool),
}

impl ToolArgs {
    /// Where the pool comes from: with `TOOLPOOL_SERVER=unix:PATH` set, `--tool ID` is the
    /// service's pool of ID (flags that change a spec are an error then: the service runs
    /// its own registry); otherwise a local pool of [`ToolArgs::spec`].
    pub fn source(&self) -> Result<Source, Fatal> {
        let server = toolpool::Client::from_env().map_err(|e| Fatal::config(e.to_string()));
        let (Some(id), true, None) = (&self.tool, self.command.is_empty(), &self.spec) else {
            return self.spec().map(|s| Source::Local(Box::new(s)));
        };
        let Some(client) = server? else {
            return self.spec().map(|s| Source::Local(Box::new(s)));
        };
        let local_only = [
            ("--instances", self.instances.is_some()),
            ("--protocol", self.protocol.is_some()),
            ("--end-command", self.end_command.is_some()),
            ("--pty", self.pty),
            ("--stderr-error-ms", self.stderr_error_ms.is_some()),
            ("--max-restarts", self.max_restarts.is_some()),
            ("--ready-line", self.ready_line.is_some()),
            ("--startup-timeout", self.startup_timeout.is_some()),
            ("--env", !self.env.is_empty()),
            ("--cwd", self.cwd.is_some()),
            ("--restart", self.restart.is_some()),
            ("--in-flight", self.in_flight.is_some()),
        ];
        let set: Vec<&str> = local_only
            .iter()
            .filter(|(_, on)| *on)
            .map(|(f, _)| *f)
            .collect();
        if !set.is_empty() {
            return Err(Fatal::config(format!(
                "{} change a tool's spec, but with TOOLPOOL_SERVER set '{id}' is the service's \
                 pool, which runs the service's registry (unset TOOLPOOL_SERVER for a local pool)",
                set.join(", ")
            )));
        }
        client
            .pool(id)
            .map(Source::Service)
            .map_err(|e| Fatal::config(e.to_string()))
    }

    /// The spec these arguments describe: loaded (or built from the command), then the
    /// flags applied over it, then validated. Every problem is a configuration error
    /// (exit 2) that names it.
    pub fn spec(&self) -> Result<ToolSpec, Fatal> {
        let sources = [
            !self.command.is_empty(),
            self.spec.is_some(),
            self.registry.is_some() || self.tool.is_some(),
        ];
        match sources.iter().filter(|s| **s).count() {
            0 => return Err(Fatal::config(
                "no tool given: use `-- CMD [ARGS...]`, --spec FILE, or --registry FILE --tool ID",
            )),
            1 => {}
            _ => return Err(Fatal::config(
                "give the tool one way only: `-- CMD`, --spec FILE, or --registry FILE --tool ID",
            )),
        }
        let from_command = !self.command.is_empty();
        let mut spec = if from_command {
            let mut spec = ToolSpec::new(self.command.clone());
            spec.count = default_instances();
            spec.restart.policy = RestartPolicy::OnFailure;
            spec.stderr_error_ms = Some(DEFAULT_STDERR_ERROR_MS);
            spec
        } else if let Some(path) = &self.spec {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Fatal::config(format!("cannot read spec {}: {e}", path.display())))?;
            ToolSpec::from_json(&text)
                .map_err(|e| Fatal::config(format!("{}: {e}", path.display())))?
        } else {
            let registry = load_registry(self.registry.as_deref())?;
            let Some(id) = &self.tool else {
                return Err(Fatal::config(format!(
                    "--registry needs --tool ID (tools in the registry: {})",
                    known(&registry)
                )));
            };
            registry
                .get(id)
                .map_err(|e| Fatal::config(e.to_string()))?
                .clone()
        };
        if let Some(n) = self.instances {
            spec.count = n;
        }
        if let Some(p) = &self.protocol {
            spec.protocol = p.clone();
        }
        if let Some(end) = &self.end_command {
            match &mut spec.protocol {
                Protocol::Marker(m) => m.end_command = Some(end.clone()),
                _ => {
                    return Err(Fatal::config(
                        "--end-command needs the marker protocol (--protocol marker:END)",
                    ))
                }
            }
        }
        if self.pty {
            spec.pty = true;
        }
        if let Some(ms) = self.stderr_error_ms {
            spec.stderr_error_ms = (ms > 0).then_some(ms);
        }
        if !matches!(spec.protocol, Protocol::Lines | Protocol::Marker(_))
            && from_command
            && self.stderr_error_ms.is_none()
        {
            // The default is for line tools: a JSON-RPC tool answers errors itself, and
            // the prompt framing takes stderr output for an error already.
            spec.stderr_error_ms = None;
        }
        if let Some(n) = self.max_restarts {
            spec.restart.max_restarts = n;
        }
        if let Some(r) = &self.ready_line {
            spec.startup.ready_line = Some(r.clone());
        }
        if let Some(t) = self.startup_timeout {
            spec.startup.timeout_ms = t.as_millis().min(u64::MAX as u128) as u64;
        }
        for (k, v) in &self.env {
            spec.env.insert(k.clone(), v.clone());
        }
        if let Some(c) = &self.cwd {
            spec.cwd = Some(c.clone());
        }
        if let Some(r) = self.restart {
            spec.restart.policy = r;
        }
        if let Some(k) = self.in_flight {
            spec.max_in_flight = k;
        }
        spec.validate()
            .map_err(|e| Fatal::config(flag_names(&e.to_string())))?;
        Ok(spec)
    }
}

/// A registry from `path`, or from `$TOOLPOOL_REGISTRY` ([`Registry::from_env`]).
pub fn load_registry(path: Option<&std::path::Path>) -> Result<Registry, Fatal> {
    let loaded = match path {
        Some(p) => Registry::from_path(p),
        None => Registry::from_env(),
    };
    loaded.map_err(|e| match path {
        None if std::env::var_os("TOOLPOOL_REGISTRY").is_none() => {
            Fatal::config("no registry: give --registry FILE (or set TOOLPOOL_REGISTRY)")
        }
        _ => Fatal::config(e.to_string()),
    })
}

fn known(r: &Registry) -> String {
    if r.tools.is_empty() {
        "none".into()
    } else {
        r.tools.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// Mention the flag next to the spec key a validation error names.
fn flag_names(msg: &str) -> String {
    let flags = [
        ("'count'", "-n/--instances"),
        ("'max_in_flight'", "--in-flight"),
        ("'startup.timeout_ms'", "--startup-timeout"),
        ("'protocol.marker'", "--protocol"),
        ("'protocol.end_command'", "--end-command"),
        ("'stderr_error_ms'", "--stderr-error-ms"),
        ("'restart.max_restarts'", "--max-restarts"),
        ("'pty'", "--pty"),
    ];
    for (key, flag) in flags {
        if msg.contains(key) {
            return format!("{msg} (set by {flag} or the spec)");
        }
    }
    msg.to_string()
}

/// `stderr_error_ms` for a tool given as `-- CMD`: long enough for a warning followed by
/// a reply, short enough that a file with an error every thousand lines runs on.
pub const DEFAULT_STDERR_ERROR_MS: u64 = 200;

/// The number of cores (at least 1).
pub fn default_instances() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    match s {
        "lines" => Ok(Protocol::Lines),
        "jsonrpc" => Ok(Protocol::Jsonrpc),
        "lsp" => Ok(Protocol::Lsp),
        _ => match (s.strip_prefix("marker:"), s.strip_prefix("prompt:")) {
            (Some(m), _) if !m.is_empty() => Ok(Protocol::Marker(Marker::new(m))),
            (_, Some(p)) if !p.is_empty() => Ok(Protocol::Prompt(Prompt::new(p))),
            _ => Err(format!(
                "'{s}' is not a protocol: use lines, jsonrpc, lsp, marker:END (END being the \
                 terminator line) or prompt:REGEX (REGEX matching the tool's prompt)"
            )),
        },
    }
}

fn parse_restart(s: &str) -> Result<RestartPolicy, String> {
    match s {
        "never" => Ok(RestartPolicy::Never),
        "on-failure" | "on_failure" => Ok(RestartPolicy::OnFailure),
        "always" => Ok(RestartPolicy::Always),
        _ => Err(format!(
            "'{s}' is not a restart policy: use never, on-failure or always"
        )),
    }
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("'{s}' is not K=V")),
    }
}

/// A duration: `250ms`, `5s`, `1.5s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let bad = || format!("'{s}' is not a duration: use e.g. 250ms, 5s, 1.5s, 2m, 1h");
    let v: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || !(0.0..=30.0 * 24.0 * 3600.0).contains(&secs) {
        return Err(format!("'{s}' is out of range (0 to 30 days)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn protocols() {
        assert_eq!(parse_protocol("lines"), Ok(Protocol::Lines));
        assert_eq!(
            parse_protocol("marker:END"),
            Ok(Protocol::Marker(Marker::new("END")))
        );
        assert!(parse_protocol("marker:").is_err());
        assert!(parse_protocol("xml").is_err());
    }
}
