//! Validation of a tool spec: the values serde cannot check (empty commands, zero
//! counts, NUL bytes that would reach the OS, newlines in one-line values, limits out of
//! range, keys that need another key), each failure naming the key and why.

use super::{
    sanitize, Prompt, Protocol, ToolSpec, MAX_COUNT, MAX_DURATION_MS, MAX_MEMORY_MB,
    MAX_QUEUE_LINES, MAX_RETRIES,
};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

impl ToolSpec {
    /// Check the values serde cannot check: empty command, zero counts, NUL bytes that
    /// would reach the OS, newlines in one-line values, and so on. Every value that can
    /// never work is an [`Error::Config`] naming the tool and the key path, before any
    /// process starts.
    pub fn validate(&self) -> Result<()> {
        self.check().map_err(|(key, why)| {
            Error::Config(format!(
                "tool '{}': key '{key}': {why}",
                sanitize(self.display_id())
            ))
        })
    }

    /// The first bad key and why, or `Ok`.
    fn check(&self) -> std::result::Result<(), (String, String)> {
        self.check_durations()?;
        self.check_text()?;
        self.check_numbers()?;
        if let Some(dry) = &self.dry_run {
            dry.check(&self.protocol)?;
        }
        self.check_framing()
    }

    fn check_durations(&self) -> std::result::Result<(), (String, String)> {
        let health = self.health.as_ref();
        let durations = [
            ("startup.timeout_ms", Some(self.startup.timeout_ms)),
            ("shutdown.grace_ms", Some(self.shutdown.grace_ms)),
            (
                "restart.backoff_initial_ms",
                Some(self.restart.backoff_initial_ms),
            ),
            ("restart.backoff_max_ms", Some(self.restart.backoff_max_ms)),
            ("restart.window_ms", Some(self.restart.window_ms)),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("max_lifetime_ms", self.max_lifetime_ms),
            ("health.interval_ms", health.map(|h| h.interval_ms)),
            ("health.timeout_ms", health.map(|h| h.timeout_ms)),
            ("stderr_error_ms", self.stderr_error_ms),
            ("fallback.attempt_ms", self.fallback.attempt_ms),
        ];
        for (key, ms) in durations {
            if ms.is_some_and(|ms| ms > MAX_DURATION_MS) {
                return bad(key, format!("must be at most {MAX_DURATION_MS} (30 days)"));
            }
        }
        Ok(())
    }

    /// Text that reaches the OS (argv, environment, cwd, thread names) or is written as
    /// one line.
    fn check_text(&self) -> std::result::Result<(), (String, String)> {
        no_nul("id", &self.id)?;
        check_launch(&self.command, &self.env, self.cwd.as_deref())?;
        if let Some(line) = &self.startup.ready_line {
            one_line("startup.ready_line", line)?;
        }
        if let Protocol::Prompt(p) = &self.protocol {
            self.check_prompt(p)?;
        }
        if let Protocol::Marker(m) = &self.protocol {
            one_line("protocol.marker", &m.marker)?;
            if let Some(end) = &m.end_command {
                one_line("protocol.end_command", end)?;
                if end.is_empty() {
                    return bad("protocol.end_command", "must not be empty");
                }
            }
        }
        if let Some(h) = &self.health {
            if let Some(p) = &h.probe {
                one_line("health.probe", p)?;
            }
            if let Some(e) = &h.expect {
                one_line("health.expect", e)?;
            }
        }
        if let Some(o) = &self.oneshot {
            check_argv("oneshot.command", &o.command)?;
        }
        self.check_remote()
    }

    /// The `prompt` protocol's keys: patterns that compile and match something, init lines
    /// without NUL bytes, and the keys it cannot be used with.
    fn check_prompt(&self, p: &Prompt) -> std::result::Result<(), (String, String)> {
        let patterns = [
            ("protocol.prompt", Some(p.prompt.as_str())),
            ("protocol.continuation", p.continuation.as_deref()),
            ("protocol.error", p.error.as_deref()),
        ];
        for (key, pattern) in patterns {
            let Some(pattern) = pattern else { continue };
            match regex::Regex::new(pattern) {
                Err(e) => return bad(key, format!("is not a regular expression: {e}")),
                Ok(re) if re.is_match("") => {
                    return bad(
                        key,
                        "matches the empty string, so it would match everywhere",
                    )
                }
                Ok(_) => {}
            }
        }
        for (i, line) in p.init.iter().enumerate() {
            if line.contains('\0') {
                return bad(&format!("protocol.init[{i}]"), "contains a NUL byte");
            }
        }
        if self.startup.ready_line.is_some() {
            return bad(
                "startup.ready_line",
                "the prompt protocol is ready at the tool's first prompt; leave this out",
            );
        }
        if self.stderr_error_ms.is_some() {
            return bad(
                "stderr_error_ms",
                "the prompt protocol makes any stderr output during a request a tool error already",
            );
        }
        Ok(())
    }

    /// The `remote` key, and what must reach a remote shell as one line.
    fn check_remote(&self) -> std::result::Result<(), (String, String)> {
        let Some(r) = &self.remote else {
            return Ok(());
        };
        r.check(self.count)?;
        if r.shell_line() {
            let why = "contains a newline, which cannot pass through the remote shell line (remote.launcher)";
            if let Some(i) = self.command.iter().position(|a| a.contains('\n')) {
                return bad(&format!("command[{i}]"), why);
            }
            for (k, v) in &self.env {
                if k.contains('\n') || v.contains('\n') {
                    return bad(&format!("env.{}", sanitize(k)), why);
                }
            }
            if self
                .cwd
                .as_ref()
                .is_some_and(|c| c.as_os_str().as_encoded_bytes().contains(&b'\n'))
            {
                return bad("cwd", why);
            }
        }
        Ok(())
    }

    fn check_numbers(&self) -> std::result::Result<(), (String, String)> {
        if self.count == 0 || self.count > MAX_COUNT {
            return bad("count", format!("must be between 1 and {MAX_COUNT}"));
        }
        if self.min_instances.is_some_and(|m| m > self.count) {
            return bad(
                "min_instances",
                format!("must be at most count ({})", self.count),
            );
        }
        if self.limits.max_line_bytes == 0 {
            return bad("limits.max_line_bytes", "must be at least 1");
        }
        if self.limits.queue_lines == 0 || self.limits.queue_lines > MAX_QUEUE_LINES {
            return bad(
                "limits.queue_lines",
                format!("must be between 1 and {MAX_QUEUE_LINES}"),
            );
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight", "must be at least 1");
        }
        if self.restart.backoff_initial_ms == 0 {
            return bad("restart.backoff_initial_ms", "must be at least 1");
        }
        for (key, mb) in [
            ("limits.max_rss_mb", self.limits.max_rss_mb),
            ("limits.memory_budget_mb", self.limits.memory_budget_mb),
        ] {
            if mb.is_some_and(|mb| mb == 0 || mb > MAX_MEMORY_MB) {
                return bad(key, format!("must be between 1 and {MAX_MEMORY_MB}"));
            }
        }
        if let Some(h) = &self.health {
            if h.interval_ms == 0 || h.timeout_ms == 0 {
                return bad("health", "interval_ms and timeout_ms must be at least 1");
            }
        }
        Ok(())
    }

    fn check_framing(&self) -> std::result::Result<(), (String, String)> {
        if self.max_in_flight > 1 && !self.protocol.is_rpc() {
            return bad(
                "max_in_flight",
                "only the jsonrpc and lsp protocols can match more than one request in flight",
            );
        }
        if let Some(m) = &self.cancel_notification {
            if !self.protocol.is_rpc() {
                return bad("cancel_notification", "needs the jsonrpc or lsp protocol");
            }
            if m.is_empty() {
                return bad("cancel_notification", "must not be empty");
            }
        }
        self.check_rpc_keys()?;
        if let Some(h) = &self.health {
            if !self.protocol.is_rpc() && h.probe.is_none() {
                return bad("health.probe", "a probe line is required for this protocol");
            }
        }
        Ok(())
    }

    /// `startup.handshake` and `client_replies` need a JSON-RPC framing; `lsp` has no
    /// ready line (its stdout is framed messages, not lines).
    fn check_rpc_keys(&self) -> std::result::Result<(), (String, String)> {
        let rpc = self.protocol.is_rpc();
        if !self.startup.handshake.is_empty() && !rpc {
            return bad(
                "startup.handshake",
                "needs the jsonrpc or lsp protocol (a handshake is JSON-RPC messages)",
            );
        }
        if !self.client_replies.is_empty() && !rpc {
            return bad("client_replies", "needs the jsonrpc or lsp protocol");
        }
        if self.fallback.any() && self.oneshot.is_none() {
            return bad(
                "fallback",
                "needs a oneshot command to fall back to (the key 'oneshot')",
            );
        }
        if let Some(r) = &self.retry {
            if r.max > MAX_RETRIES {
                return bad("retry.max", format!("must be at most {MAX_RETRIES}"));
            }
        }
        if self.stderr_error_ms.is_some() && rpc {
            return bad(
                "stderr_error_ms",
                "applies to the lines and marker protocols (a JSON-RPC tool answers errors with an error object)",
            );
        }
        if self.stderr_error_ms == Some(0) {
            return bad("stderr_error_ms", "must be at least 1");
        }
        if self.pty && self.remote.is_some() {
            return bad(
                "pty",
                "cannot be used with remote (the launcher's own stdio reaches the remote tool)",
            );
        }
        if self.protocol == Protocol::Lsp && self.startup.ready_line.is_some() {
            return bad(
                "startup.ready_line",
                "the lsp protocol has no ready line (stdout carries framed messages); use startup.handshake",
            );
        }
        for (i, m) in self.startup.handshake.iter().enumerate() {
            let key = format!("startup.handshake[{i}]");
            if m.method.is_empty() {
                return bad(&format!("{key}.method"), "must not be empty");
            }
            if m.params
                .as_ref()
                .is_some_and(|p| !p.is_array() && !p.is_object())
            {
                return bad(&format!("{key}.params"), "must be an array or an object");
            }
        }
        Ok(())
    }
}

/// What reaches the OS when a process starts: `command` (a non-empty argv without NUL
/// bytes), the `env` names and values, the `cwd`. Shared by tool specs and run specs, so
/// both refuse the same values with the same messages.
pub(super) fn check_launch(
    command: &[String],
    env: &BTreeMap<String, String>,
    cwd: Option<&Path>,
) -> std::result::Result<(), (String, String)> {
    check_argv("command", command)?;
    for (name, value) in env {
        let key = format!("env.{}", sanitize(name));
        if name.is_empty() {
            return bad("env", "a variable name is empty");
        }
        if name.contains('=') {
            return bad(&key, "a variable name must not contain '='");
        }
        no_nul(&key, name)?;
        no_nul(&key, value)?;
    }
    if cwd.is_some_and(|c| c.as_os_str().as_encoded_bytes().contains(&0)) {
        return bad("cwd", "contains a NUL byte");
    }
    Ok(())
}

/// `Err((key, why))`, the shape of every check above.
pub(super) fn bad(key: &str, why: impl Into<String>) -> std::result::Result<(), (String, String)> {
    Err((key.to_string(), why.into()))
}

pub(super) fn no_nul(key: &str, s: &str) -> std::result::Result<(), (String, String)> {
    if s.contains('\0') {
        return bad(key, "contains a NUL byte");
    }
    Ok(())
}

/// A value written as one line: no NUL, no newline.
pub(super) fn one_line(key: &str, s: &str) -> std::result::Result<(), (String, String)> {
    no_nul(key, s)?;
    if s.contains('\n') {
        return bad(key, "must be one line (contains a newline)");
    }
    Ok(())
}

fn check_argv(key: &str, argv: &[String]) -> std::result::Result<(), (String, String)> {
    if argv.first().is_none_or(|c| c.is_empty()) {
        return bad(key, "must be a non-empty argv array");
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return bad(key, "an argument contains a NUL byte");
    }
    Ok(())
}
