//! `toolpool check`: validate a registry, list its tools, optionally start each once.

use crate::{signals, tool, Fatal, EXIT_FAILED, EXIT_OK};
use clap::Args;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use toolpool::{Pool, Protocol, RestartPolicy, ToolSpec};

/// Validate a registry and list its tools with their settings.
///
/// An invalid registry is exit status 2, with a message that names the tool and the key
/// path. With --start, each tool (not disabled) is started once, one instance, and the
/// report says whether it became ready and how long it took; exit status 1 if one did
/// not.
#[derive(Args, Debug)]
#[command(after_help = "\
Exit status: 0 the registry is valid (and, with --start, every tool became ready); 1 a tool
did not start; 2 the registry is invalid or missing (the message names the tool and key).

Examples:
  toolpool check tools.json
  TOOLPOOL_REGISTRY=tools.json toolpool check --start")]
pub struct CheckArgs {
    /// The registry file [default: $TOOLPOOL_REGISTRY].
    #[arg(value_name = "REGISTRY")]
    pub registry: Option<PathBuf>,

    /// Start each tool once (one instance) and report whether it became ready, and how
    /// long it took.
    #[arg(long)]
    pub start: bool,
}

pub fn main(args: CheckArgs) -> Result<i32, Fatal> {
    signals::exit_on_signal(signals::install());
    let registry = tool::load_registry(args.registry.as_deref())?;
    let shown = args
        .registry
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "$TOOLPOOL_REGISTRY".to_string());
    println!("{shown}: valid, {} tool(s)", registry.tools.len());
    let mut bad = 0;
    for (id, spec) in &registry.tools {
        println!("{id}");
        for (k, v) in settings(spec) {
            println!("    {k:<10} {v}");
        }
        if !args.start {
            continue;
        }
        if spec.disabled {
            println!("    {:<10} skipped: disabled (served one-shot)", "start");
            continue;
        }
        let mut one = spec.clone();
        one.count = 1;
        one.lazy = false;
        let t0 = Instant::now();
        match Pool::from_spec(one) {
            Ok(pool) => {
                let took = t0.elapsed();
                let ready = pool.health().ready == 1;
                pool.shutdown(Duration::from_millis(spec.shutdown.grace_ms.min(2000)));
                if ready {
                    println!("    {:<10} ready in {} ms", "start", took.as_millis());
                } else {
                    bad += 1;
                    println!(
                        "    {:<10} FAILED: not ready after {} ms",
                        "start",
                        took.as_millis()
                    );
                }
            }
            Err(e) => {
                bad += 1;
                println!(
                    "    {:<10} FAILED after {} ms: {e}",
                    "start",
                    t0.elapsed().as_millis()
                );
            }
        }
    }
    if args.start {
        println!(
            "{} of {} tool(s) started",
            registry.tools.values().filter(|s| !s.disabled).count() - bad,
            registry.tools.values().filter(|s| !s.disabled).count()
        );
    }
    Ok(if bad > 0 { EXIT_FAILED } else { EXIT_OK })
}

/// The settings worth seeing, one per line.
fn settings(s: &ToolSpec) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("command", shell_words(&s.command)),
        ("count", s.count.to_string()),
        (
            "protocol",
            match &s.protocol {
                Protocol::Lines => "lines".to_string(),
                Protocol::Jsonrpc => format!("jsonrpc, {} in flight per instance", s.max_in_flight),
                Protocol::Prompt(p) => format!("prompt:{}", p.prompt),
                Protocol::Marker(m) => match &m.end_command {
                    Some(end) => format!("marker:{} (end_command {end:?})", m.marker),
                    None => format!("marker:{}", m.marker),
                },
                Protocol::Lsp => format!(
                    "lsp (Content-Length framing), {} in flight per instance",
                    s.max_in_flight
                ),
            },
        ),
        (
            "restart",
            match s.restart.policy {
                RestartPolicy::Never => "never".to_string(),
                RestartPolicy::OnFailure => format!(
                    "on-failure (at most {} in {} ms)",
                    s.restart.max_restarts, s.restart.window_ms
                ),
                RestartPolicy::Always => format!(
                    "always (at most {} in {} ms)",
                    s.restart.max_restarts, s.restart.window_ms
                ),
            },
        ),
        (
            "startup",
            match &s.startup.ready_line {
                Some(r) => format!("ready line {r:?}, timeout {} ms", s.startup.timeout_ms),
                None => format!("no ready line, timeout {} ms", s.startup.timeout_ms),
            },
        ),
    ];
    if let Some(c) = &s.cwd {
        v.push(("cwd", c.display().to_string()));
    }
    if !s.env.is_empty() || s.env_clear {
        let env: Vec<String> = s.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let clear = if s.env_clear {
            " (empty environment plus these)"
        } else {
            ""
        };
        v.push(("env", format!("{}{clear}", env.join(" "))));
    }
    let mut flags = Vec::new();
    if s.lazy {
        flags.push("lazy".to_string());
    }
    if s.disabled {
        flags.push("disabled".to_string());
    }
    if let Some(ms) = s.idle_timeout_ms {
        flags.push(format!("idle timeout {ms} ms"));
    }
    if let Some(n) = s.max_requests {
        flags.push(format!("recycle after {n} requests"));
    }
    if let Some(ms) = s.max_lifetime_ms {
        flags.push(format!("recycle after {ms} ms"));
    }
    if let Some(h) = &s.health {
        flags.push(format!("health probe every {} ms", h.interval_ms));
    }
    if let Some(o) = &s.oneshot {
        flags.push(format!(
            "one-shot {}{}",
            shell_words(&o.command),
            if s.fallback.any() { " (fallback)" } else { "" }
        ));
    }
    if !flags.is_empty() {
        v.push(("options", flags.join(", ")));
    }
    v
}

/// argv as a shell would show it (quoted where needed).
fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
