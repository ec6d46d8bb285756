//! The start-up handshake: what an incarnation does on every start and restart before it
//! takes work. For JSON-RPC tools, `startup.handshake`: the messages it is sent (MCP's
//! `initialize` and `notifications/initialized`, LSP's `initialize` and `initialized`);
//! for `prompt` tools, the first prompt and the `init` lines (see [`crate::prompt`]).
//!
//! It asks the layer below for one exchange per request ([`crate::exchange`], replies
//! matched by id) and sends notifications as they are; the incarnation owns the result
//! (ready for work, the first reply kept for status). A failure is a failed start:
//! [`Error::Spawn`] with the tool's own error, which `lifecycle` turns into a stopped
//! incarnation and the supervisor counts toward `restart.max_restarts`.

use crate::cancel::CancelToken;
use crate::cancel::Until;
use crate::error::{Error, Result};
use crate::exchange;
use crate::incarnation::Incarnation;
use crate::spec::{Protocol, ToolSpec};
use std::time::{Duration, Instant};

/// Run `spec.startup.handshake` on `inc` (already past its ready line) by `deadline`,
/// unless `cancel` is triggered first ([`Error::Cancelled`], returned as it is). Nothing to
/// do without a handshake.
pub(crate) fn run(
    inc: &Incarnation,
    spec: &ToolSpec,
    deadline: Instant,
    cancel: Option<&CancelToken>,
) -> Result<()> {
    if let Protocol::Prompt(p) = &spec.protocol {
        crate::prompt::start(inc, spec, p, deadline, cancel)?;
        inc.finish_handshake(None);
        return Ok(());
    }
    let steps = &spec.startup.handshake;
    if steps.is_empty() {
        return Ok(());
    }
    let mut first = None;
    for (n, step) in steps.iter().enumerate() {
        let payload = step.payload();
        let what = || {
            format!(
                "tool '{}' instance {}: handshake message {n} ('{}')",
                spec.id,
                inc.index(),
                step.method
            )
        };
        if step.notification {
            inc.notify(&payload)
                .map_err(|e| Error::Spawn(format!("{} could not be sent: {e}", what())))?;
            continue;
        }
        let until = Until {
            deadline,
            timeout: Duration::from_millis(spec.startup.timeout_ms),
            cancel,
        };
        match exchange::exchange(inc, spec, &payload, until) {
            Ok(reply) => {
                first.get_or_insert(crate::util::lossy(reply));
            }
            Err(Error::Tool {
                code,
                message,
                data,
            }) => {
                return Err(Error::Spawn(format!(
                    "{} failed: the tool answered error {code}: {message}{}",
                    what(),
                    data.map(|d| format!(" (data: {d})")).unwrap_or_default()
                )))
            }
            Err(Error::Timeout { .. }) => {
                return Err(Error::Spawn(format!(
                    "{} got no reply within startup.timeout_ms ({} ms){}",
                    what(),
                    spec.startup.timeout_ms,
                    stderr_suffix(inc)
                )))
            }
            Err(e @ Error::Cancelled(_)) => return Err(e),
            Err(e) => return Err(Error::Spawn(format!("{} failed: {e}", what()))),
        }
    }
    inc.finish_handshake(first);
    Ok(())
}

fn stderr_suffix(inc: &Incarnation) -> String {
    let tail = inc.stderr_tail();
    if tail.is_empty() {
        String::new()
    } else {
        format!("; last stderr: {}", tail.join(" | "))
    }
}
