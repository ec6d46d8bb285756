//! `toolpool exec`: one command under a service's process limit, for shell scripts. Takes
//! a slot of the service's limit (waiting for one), starts the command with this
//! terminal's stdin, stdout and stderr, registers its pid on the slot, and exits with the
//! command's status. The service counts it, lists it and kills it with `kill_all` like
//! any of its processes.

use crate::{signals, tool, Fatal};
use clap::Args;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::Duration;
use toolpool::{CancelToken, Client, Wait};

/// Run one command under the process limit of a `toolpool serve` service.
#[derive(Args, Debug)]
#[command(after_help = "\
Exit status: the command's (128 + N when a signal N ended it); 2 when there is no service,
no slot came within --wait (the limit stayed full), or the command cannot start.

Examples:
  toolpool exec --server /run/toolpool.sock -- make -j4
  TOOLPOOL_SERVER=unix:/run/toolpool.sock toolpool exec -- ./build.sh")]
pub struct ExecArgs {
    /// The service's socket [default: the path in TOOLPOOL_SERVER=unix:PATH].
    #[arg(long, value_name = "PATH")]
    pub server: Option<PathBuf>,

    /// How long to wait for a free slot of the limit.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = tool::parse_duration)]
    pub wait: Duration,

    /// The command, after `--` (no shell is involved).
    #[arg(last = true, value_name = "CMD", required = true)]
    pub command: Vec<String>,
}

pub fn main(args: ExecArgs) -> Result<i32, Fatal> {
    let client = match &args.server {
        Some(p) => Client::connect(p),
        None => Client::from_env().and_then(|c| {
            c.ok_or_else(|| {
                toolpool::Error::Service(
                    "no service: give --server PATH or set TOOLPOOL_SERVER=unix:PATH".into(),
                )
            })
        }),
    }
    .map_err(|e| Fatal::config(e.to_string()))?;
    // Ctrl-C or SIGTERM while waiting for a slot ends the wait; once the command runs,
    // they go on to it.
    let signals = signals::install();
    let token = CancelToken::new();
    let waiting = token.clone();
    let forward = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
    let child_pid = std::sync::Arc::clone(&forward);
    std::thread::spawn(move || {
        for sig in signals.iter() {
            let pid = child_pid.load(std::sync::atomic::Ordering::SeqCst);
            if pid > 0 {
                // SAFETY: kill with a valid signal to the command we started.
                unsafe { libc::kill(pid, sig) };
            } else {
                waiting.cancel();
            }
        }
    });
    let permit = client
        .acquire(Wait::new(args.wait).with_cancel(&token))
        .map_err(|e| Fatal::config(format!("no slot for '{}': {e}", args.command[0])))?;
    let mut child = std::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .spawn()
        .map_err(|e| Fatal::config(format!("cannot start '{}': {e}", args.command[0])))?;
    let pid = child.id() as i32;
    forward.store(pid, std::sync::atomic::Ordering::SeqCst);
    if let Err(e) = permit.register_pid(pid) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Fatal::config(format!(
            "cannot register '{}' (pid {pid}) with the service: {e}",
            args.command[0]
        )));
    }
    let status = child
        .wait()
        .map_err(|e| Fatal::config(format!("waiting for '{}': {e}", args.command[0])))?;
    drop(permit);
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => 1,
    })
}
