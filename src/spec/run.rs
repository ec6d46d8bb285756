//! A run's spec ([`RunSpec`]): one command started once under the process limit (see
//! `crate::run`). What reaches the OS (argv, environment, working directory) is checked
//! with the tool spec's own rules and messages (`validate::check_launch`); the other keys
//! are the run's: its input, its timeouts, its bounds and its dry run.

use super::validate::{bad, check_launch, no_nul, one_line};
use super::{deserialize_named, sanitize, MAX_DURATION_MS, MAX_QUEUE_LINES};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Default `slot_timeout_ms`: how long a run waits for room under the process limit.
pub const DEFAULT_SLOT_TIMEOUT_MS: u64 = 10_000;
/// Default `max_output_bytes`: what `run_output` keeps of stdout, and of stderr.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 16 << 20;
/// Largest `max_output_bytes`: 1 GiB per stream.
pub const MAX_OUTPUT_BYTES: usize = 1 << 30;

/// One command to run once under the process limit (`toolpool::Run`, `run_output`).
///
/// Parsed from JSON by [`RunSpec::from_json`] (unknown keys, wrong types and bad values are
/// errors naming the key), or built in Rust from [`RunSpec::new`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSpec {
    /// The run's name in messages, logs and the limiter's `processes` list; default the
    /// file name of `command[0]`.
    pub name: String,
    /// argv; `command[0]` is the program (looked up in `PATH` when it has no slash). No
    /// shell is involved.
    pub command: Vec<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Start with an empty environment (plus `env`).
    pub env_clear: bool,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Written to stdin as given (no newline added), then stdin is closed; `""` closes it
    /// at once. Without it stdin stays open for `write_line` until `close_stdin` (in
    /// `run_output`, it is closed at once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// The process group is killed once the run has taken this long (counted from its
    /// start, after the slot wait). Default: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Longest wait for room under the process limit; 0 fails at once with
    /// `LimitReached`. Default [`DEFAULT_SLOT_TIMEOUT_MS`].
    pub slot_timeout_ms: u64,
    /// Longest output line kept whole; longer ones come in pieces of this size (counted).
    /// Default 1 MiB.
    pub max_line_bytes: usize,
    /// stdout lines read and not yet taken, and stderr lines kept, before stdout waits
    /// (the child blocks on its pipe) and stderr drops its oldest line (counted). Default
    /// 1024.
    pub queue_lines: usize,
    /// `run_output`: bytes kept of stdout, and of stderr (the first ones; the rest are
    /// read, dropped and counted). Default [`DEFAULT_MAX_OUTPUT_BYTES`].
    pub max_output_bytes: usize,
    /// Start no process: canned output and exit code stand in for the command.
    /// `TOOLPOOL_DRY_RUN=1` in the environment gives a spec without this key the default
    /// (no output, exit code 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<RunDryRun>,
}

impl Default for RunSpec {
    fn default() -> Self {
        RunSpec {
            name: String::new(),
            command: Vec::new(),
            env: BTreeMap::new(),
            env_clear: false,
            cwd: None,
            input: None,
            timeout_ms: None,
            slot_timeout_ms: DEFAULT_SLOT_TIMEOUT_MS,
            max_line_bytes: 1 << 20,
            queue_lines: 1024,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            dry_run: None,
        }
    }
}

/// What a dry run does instead of starting a process: after `delay_ms` it writes its
/// `stdout` and `stderr` lines and ends with `exit_code` (stdin is read and dropped).
/// Killed before that (its timeout, `kill`, `kill_all` does not reach it: it is no
/// process), it ends with the signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RunDryRun {
    /// Lines written on stdout (each gets its newline).
    pub stdout: Vec<String>,
    /// Lines written on stderr.
    pub stderr: Vec<String>,
    /// The exit code, 0 to 255.
    pub exit_code: i32,
    /// Milliseconds before the output and the exit.
    pub delay_ms: u64,
}

impl RunSpec {
    /// A spec for `command` with every other key at its default.
    pub fn new<I, S>(command: I) -> RunSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RunSpec {
            command: command.into_iter().map(Into::into).collect(),
            ..RunSpec::default()
        }
    }

    /// Parse and check a run spec in JSON (`{"command": [...], ...}`).
    pub fn from_json(json: &str) -> Result<RunSpec> {
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| Error::Config(format!("run spec is not valid JSON: {e}")))?;
        let name = value
            .get("name")
            .and_then(|v| v.as_str())
            .or_else(|| {
                let first = value.get("command")?.get(0)?.as_str()?;
                first.rsplit('/').next()
            })
            .filter(|s| !s.is_empty())
            .map_or_else(|| "<run>".to_string(), sanitize);
        if !value.is_object() {
            return Err(Error::Config(format!(
                "run '{name}': a run spec must be a JSON object"
            )));
        }
        let spec: RunSpec = deserialize_named(value, &format!("run '{name}'"))?;
        spec.validate()?;
        Ok(spec)
    }

    /// The name used in messages: `name`, else the file name of `command[0]`.
    pub fn display_name(&self) -> String {
        let name = if self.name.is_empty() {
            self.command
                .first()
                .map(|c| c.rsplit('/').next().unwrap_or(c))
                .unwrap_or_default()
        } else {
            &self.name
        };
        if name.is_empty() {
            "<run>".into()
        } else {
            sanitize(name)
        }
    }

    /// Check the values serde cannot: an empty command, NUL bytes that would reach the
    /// OS, bounds out of range, canned lines with a newline. Every failure is an
    /// [`Error::Config`] naming the run and the key, before any process starts.
    pub fn validate(&self) -> Result<()> {
        self.check().map_err(|(key, why)| {
            Error::Config(format!("run '{}': key '{key}': {why}", self.display_name()))
        })
    }

    fn check(&self) -> std::result::Result<(), (String, String)> {
        no_nul("name", &self.name)?;
        check_launch(&self.command, &self.env, self.cwd.as_deref())?;
        let durations = [
            ("timeout_ms", self.timeout_ms),
            ("slot_timeout_ms", Some(self.slot_timeout_ms)),
        ];
        for (key, ms) in durations {
            if ms.is_some_and(|ms| ms > MAX_DURATION_MS) {
                return bad(key, format!("must be at most {MAX_DURATION_MS} (30 days)"));
            }
        }
        if self.timeout_ms == Some(0) {
            return bad(
                "timeout_ms",
                "must be at least 1 (leave it out for no limit)",
            );
        }
        if self.max_line_bytes == 0 {
            return bad("max_line_bytes", "must be at least 1");
        }
        if self.queue_lines == 0 || self.queue_lines > MAX_QUEUE_LINES {
            return bad(
                "queue_lines",
                format!("must be between 1 and {MAX_QUEUE_LINES}"),
            );
        }
        if self.max_output_bytes > MAX_OUTPUT_BYTES {
            return bad(
                "max_output_bytes",
                format!("must be at most {MAX_OUTPUT_BYTES} (1 GiB)"),
            );
        }
        if let Some(d) = &self.dry_run {
            d.check()?;
        }
        Ok(())
    }
}

impl RunDryRun {
    fn check(&self) -> std::result::Result<(), (String, String)> {
        for (stream, lines) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            for (i, line) in lines.iter().enumerate() {
                one_line(&format!("dry_run.{stream}[{i}]"), line)?;
            }
        }
        if !(0..=255).contains(&self.exit_code) {
            return bad("dry_run.exit_code", "must be an exit code from 0 to 255");
        }
        if self.delay_ms > MAX_DURATION_MS {
            return bad(
                "dry_run.delay_ms",
                format!("must be at most {MAX_DURATION_MS} (30 days)"),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        RunSpec::from_json(json).unwrap_err().to_string()
    }

    #[test]
    fn launch_keys_fail_as_a_tool_spec_does() {
        assert_eq!(
            err(r#"{"command": []}"#),
            "invalid tool spec: run '<run>': key 'command': must be a non-empty argv array"
        );
        assert_eq!(
            err(r#"{"command": ["sh"], "env": {"A=B": "1"}}"#),
            "invalid tool spec: run 'sh': key 'env.A=B': a variable name must not contain '='"
        );
        assert_eq!(
            err(r#"{"command": ["/bin/sh"], "cwd": "a\u0000b"}"#),
            "invalid tool spec: run 'sh': key 'cwd': contains a NUL byte"
        );
        let e = err(r#"{"command": ["sh"], "colour": 1}"#);
        assert!(
            e.starts_with("invalid tool spec: run 'sh': key 'colour': unknown field `colour`"),
            "{e}"
        );
        let e = err(r#"{"name": "build", "command": ["sh"], "slot_timeout_ms": "x"}"#);
        assert!(
            e.starts_with("invalid tool spec: run 'build': key 'slot_timeout_ms':"),
            "{e}"
        );
    }

    #[test]
    fn run_keys_are_bounded() {
        for (json, key) in [
            (r#"{"command": ["sh"], "timeout_ms": 0}"#, "timeout_ms"),
            (r#"{"command": ["sh"], "queue_lines": 0}"#, "queue_lines"),
            (
                r#"{"command": ["sh"], "max_line_bytes": 0}"#,
                "max_line_bytes",
            ),
            (
                r#"{"command": ["sh"], "max_output_bytes": 2000000000}"#,
                "max_output_bytes",
            ),
            (
                r#"{"command": ["sh"], "dry_run": {"stdout": ["a\nb"]}}"#,
                "dry_run.stdout[0]",
            ),
            (
                r#"{"command": ["sh"], "dry_run": {"exit_code": 256}}"#,
                "dry_run.exit_code",
            ),
        ] {
            let e = err(json);
            assert!(e.contains(&format!("key '{key}'")), "{json}: {e}");
        }
        let s = RunSpec::from_json(r#"{"command": ["sh", "-c", "true"], "input": ""}"#).unwrap();
        assert_eq!(s.slot_timeout_ms, DEFAULT_SLOT_TIMEOUT_MS);
        assert_eq!(s.display_name(), "sh");
    }
}
