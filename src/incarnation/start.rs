//! How an incarnation is put together: the process (or the dry-run responder) with its
//! exit record, the stdin writer, the stdout reader (through the JSON-RPC dispatcher and
//! the `lsp` filter when the protocol says so), the answers to the tool's own requests,
//! and the stderr drainer.

use super::Incarnation;
use crate::cancel::CancelToken;
use crate::dry::{self, Started};
use crate::error::{Error, Result};
use crate::limiter::{Limiter, Owner, ProcessKind};
use crate::lsp::LspFilter;
use crate::metrics::Counters;
use crate::process::{Launch, OnExit};
use crate::reader::{Chunks, StdoutFilter, StdoutReader};
use crate::rpc::{ClientReplies, Dispatcher};
use crate::session::Session;
use crate::spec::{Protocol, ToolSpec};
use crate::stderr::{self, Tail};
use crate::writer::StdinWriter;
use crossbeam_channel::{bounded, unbounded, Receiver};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

impl Incarnation {
    /// Spawn one incarnation of `spec` for instance `index`, counting into `counters`
    /// (the instance's, which outlive it). Does not wait for readiness.
    pub fn start(
        spec: &ToolSpec,
        index: usize,
        limiter: &Arc<Limiter>,
        counters: Arc<Counters>,
        cancel: Option<&CancelToken>,
        on_exit: OnExit,
    ) -> Result<Arc<Incarnation>> {
        let lsp = spec.protocol == Protocol::Lsp;
        let (rpc, filter) = dispatcher(spec, index);
        let (dead_tx, dead_rx) = bounded::<()>(0);
        // Dropped by the stderr drainer when it ends: `join` and `death` wait for it, and
        // so does a dry responder's end (see `spawn_child`).
        let (stderr_done_tx, stderr_done_rx) = bounded::<()>(0);
        let expected = Arc::new(AtomicBool::new(false));
        let pid_cell = Arc::new(AtomicI32::new(0));
        // The `prompt` framing reads stderr as it comes, too (made before the spawn: its
        // one failure, no fd left, must not leave a child behind).
        let (raw, session) = match &spec.protocol {
            Protocol::Prompt(p) => {
                let fail =
                    |e: String| Error::Spawn(format!("tool '{}' instance {index}: {e}", spec.id));
                let raw = stderr::Raw::new().map_err(|e| fail(e.to_string()))?;
                (Some(raw), Some(Mutex::new(Session::new(p).map_err(fail)?)))
            }
            _ => (None, None),
        };
        // The tail wraps the stderr pipe, made by the spawn; the exit record reads it.
        let tail_cell: Arc<OnceLock<Arc<Tail>>> = Arc::new(OnceLock::new());
        let on_exit = stderr::exit_hook(
            format!("tool={} instance={index}", spec.id),
            Arc::clone(&pid_cell),
            Arc::clone(&expected),
            Arc::clone(&tail_cell),
            dead_tx,
            on_exit,
        );
        let sp = spawn_child(
            spec,
            index,
            limiter,
            cancel,
            (on_exit, stderr_done_rx.clone()),
            &pid_cell,
        )?;
        let pid = sp.process.pid();
        let tail = Arc::new(Tail::new(sp.stderr, spec.limits.stderr_tail_lines, raw));
        let _ = tail_cell.set(Arc::clone(&tail));
        let q = spec.limits.queue_lines;
        // Allocated as it fills; the drainer keeps it to `q` lines.
        let (stderr_tx, stderr_rx) = unbounded::<Vec<u8>>();
        let stdin = StdinWriter::start(
            sp.stdin,
            q,
            Arc::clone(&counters),
            dead_rx,
            format!("toolpool-in-{pid}"),
        );
        let stdin = Arc::new(stdin);
        if let Some(d) = &rpc {
            answer_client_requests(d, spec, &stdin);
        }
        let stdout = StdoutReader::new(
            sp.stdout,
            spec.limits.max_line_bytes,
            q,
            spec.startup.ready_line.clone().map(String::into_bytes),
            filter,
            Arc::clone(&counters),
            tail.wake_fd(),
        );
        let drainer = stderr::spawn_drainer(
            spec,
            (index, pid),
            sp.reaper,
            Arc::clone(&counters),
            (stderr_tx, stderr_rx.clone()),
            Arc::clone(&tail),
            stderr_done_tx,
        );
        Ok(Arc::new(Incarnation {
            tool: spec.id.clone(),
            index,
            process: sp.process,
            stdin,
            stdout,
            rpc,
            queue_lines: q,
            stderr_rx,
            stderr_tail: tail,
            counters,
            stopped: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            expected,
            drainer: Mutex::new(Some(drainer)),
            drained: stderr_done_rx,
            lsp,
            // A start-up to finish: JSON-RPC messages, or the first prompt and `init`.
            handshake_pending: AtomicBool::new(
                !spec.startup.handshake.is_empty() || matches!(spec.protocol, Protocol::Prompt(_)),
            ),
            handshake_reply: OnceLock::new(),
            session,
        }))
    }
}

/// The JSON-RPC dispatcher of instance `index` (`jsonrpc` and `lsp` only), and the filter
/// its stdout passes: the dispatcher itself, or for `lsp` the `Content-Length` framing in
/// front of it; for `prompt`, no dispatcher and the chunks as they come.
fn dispatcher(
    spec: &ToolSpec,
    index: usize,
) -> (Option<Arc<Dispatcher>>, Option<Arc<dyn StdoutFilter>>) {
    let rpc = spec
        .protocol
        .is_rpc()
        .then(|| Arc::new(Dispatcher::new(index)));
    let lsp = spec.protocol == Protocol::Lsp;
    let filter = rpc.clone().map(|d| {
        if lsp {
            Arc::new(LspFilter::new(d)) as Arc<dyn StdoutFilter>
        } else {
            d as Arc<dyn StdoutFilter>
        }
    });
    // The `prompt` framing takes stdout as it comes: its prompt ends no line.
    let filter = match spec.protocol {
        Protocol::Prompt(_) => Some(Arc::new(Chunks) as Arc<dyn StdoutFilter>),
        _ => filter,
    };
    (rpc, filter)
}

/// Have `d` answer the tool's own requests with `client_replies`, written on `stdin`
/// (held weakly: the writer goes with the incarnation).
fn answer_client_requests(d: &Dispatcher, spec: &ToolSpec, stdin: &Arc<StdinWriter>) {
    let lsp = spec.protocol == Protocol::Lsp;
    let weak = Arc::downgrade(stdin);
    d.answer_with(ClientReplies {
        results: Arc::new(spec.client_replies.clone()),
        send: Box::new(move |body| {
            if let Some(w) = weak.upgrade() {
                // A reply that does not fit (the tool stopped reading) is dropped.
                let _ = w.send(frame_message(lsp, body));
            }
        }),
    });
}

/// Start the process of instance `index` of `spec` (for a dry-run pool its responder),
/// storing its OS pid in `pid_cell` for the exit record. A process's end is reported by
/// the stderr drainer, once it has read stderr; a responder reports its own, after
/// waiting (up to [`stderr::EXIT_STDERR_WAIT`]) for `stderr_done`, which the drainer drops
/// when it has read the responder's stderr to its end.
fn spawn_child(
    spec: &ToolSpec,
    index: usize,
    limiter: &Arc<Limiter>,
    cancel: Option<&CancelToken>,
    (on_exit, stderr_done): (OnExit, Receiver<()>),
    pid_cell: &AtomicI32,
) -> Result<Started> {
    let mut env = spec.env.clone();
    if spec.pty {
        // A terminal that draws nothing: colours and cursor moves off, unless asked for.
        env.entry("TERM".into()).or_insert_with(|| "dumb".into());
    }
    let launch = Launch {
        argv: spec.command.clone(),
        env,
        env_clear: spec.env_clear,
        cwd: spec.cwd.clone(),
        pty: spec.pty,
    };
    let wait = Duration::from_millis(spec.startup.timeout_ms);
    let sp: Started = match &spec.dry_run {
        // No process: a responder thread at the far end of real pipes.
        Some(d) => dry::spawn(
            spec,
            d,
            index,
            Box::new(move |e| {
                let _ = stderr_done.recv_timeout(stderr::EXIT_STDERR_WAIT);
                on_exit(e)
            }),
        )?,
        None => limiter
            .spawn(
                &launch,
                Owner {
                    kind: ProcessKind::Instance,
                    name: spec.id.clone(),
                },
                wait,
                cancel,
                on_exit,
            )
            .map_err(|e| match e {
                Error::Spawn(m) => {
                    Error::Spawn(format!("tool '{}' instance {index}: {m}", spec.id))
                }
                other => other,
            })?
            .into(),
    };
    if let Some(os_pid) = sp.process.os_pid() {
        pid_cell.store(os_pid, Relaxed);
        log::info!(
            target: "toolpool",
            "spawned tool={} instance={index} pid={os_pid} argv={:?}",
            spec.id,
            spec.command
        );
    }
    Ok(sp)
}

/// `body` framed for stdin: `Content-Length` headers (`lsp`) or a line.
fn frame_message(lsp: bool, mut body: Vec<u8>) -> Vec<u8> {
    if lsp {
        crate::lsp::frame(&body)
    } else {
        body.push(b'\n');
        body
    }
}
