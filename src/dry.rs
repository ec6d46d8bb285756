//! Dry run: an in-process *responder* stands in for a tool's process, so a pool with the
//! `dry_run` spec key starts no process, needs no binary and counts nothing against the
//! process limit, yet behaves as a real pool.
//!
//! The least special-casing: a dry incarnation has real pipes for stdin, stdout and
//! stderr, and a responder thread holds the far ends instead of a child. The incarnation,
//! its writer, its reader, the JSON-RPC dispatcher and every framing run unchanged; only
//! the other end differs. [`Child`] is what sits there (a [`Process`] or a [`Responder`]),
//! with the same few calls, so the incarnation's one kill path stays one.
//!
//! The responder reads request lines, answers each from the spec's [`DryRun`] after its
//! `delay_ms` (in order for `lines` and `marker`, as a line tool does; each on its own
//! clock for `jsonrpc`, so requests in flight overlap), prints the ready line first when
//! the spec has one, and logs one `debug` record per request (target
//! `toolpool::dry_run`): what would have been sent to which argv. Like a process it ends
//! on a signal ([`Responder::signal`]: exit `Signal(n)` at once, pending replies dropped
//! with it), at EOF on stdin once its pending replies are written (exit `Code(0)`), or on a
//! dry error in `lines`/`marker` framing (its message on stderr, exit `Code(code)`). Its
//! pipe ends close as it ends, so the reader sees EOF as after a real death, and its
//! thread then runs the exit callback as a waiter thread does after reaping.
//!
//! A dry incarnation has no pid: status shows `null`. Internally it has a negative id
//! (-1, -2, ...; wrapping after 2^31 of them) where a real one has its pid, so the
//! identity checks (sticky keys, recycling) work unchanged; [`Responder::signal`] never
//! reaches the OS.

use crate::error::{Error, ExitInfo, Result};
use crate::linebuf::LineBuf;
use crate::process::{Process, Spawned};
use crate::spec::{DryDefault, DryRun, Protocol, ToolSpec};
use parking_lot::{Condvar, Mutex};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest request line a responder reads whole; longer ones are answered in pieces.
pub const MAX_DRY_REQUEST_BYTES: usize = 16 << 20;
/// Replies a responder holds (delayed, not yet written) before it stops reading stdin,
/// as a tool blocked on a full stdout pipe would.
pub const MAX_DRY_PENDING: usize = 1024;
/// Bytes of due replies a responder buffers while nobody reads its stdout, before it
/// stops reading stdin (the same backpressure).
pub const MAX_DRY_OUT_BYTES: usize = 1 << 20;

/// What sits at the far end of an incarnation's pipes.
pub(crate) enum Child {
    /// A real child process.
    Process(Arc<Process>),
    /// A dry-run responder thread.
    Dry(Arc<Responder>),
}

impl Child {
    /// The pid, or a dry incarnation's (negative) id: an identity, unique among the live.
    pub fn pid(&self) -> i32 {
        match self {
            Child::Process(p) => p.pid(),
            Child::Dry(r) => r.id,
        }
    }

    /// The OS pid; `None` for a dry incarnation.
    pub fn os_pid(&self) -> Option<i32> {
        match self {
            Child::Process(p) => Some(p.pid()),
            Child::Dry(_) => None,
        }
    }

    /// When it started.
    pub fn started(&self) -> Instant {
        match self {
            Child::Process(p) => p.started(),
            Child::Dry(r) => r.started,
        }
    }

    /// How it ended, once it has.
    pub fn exit(&self) -> Option<ExitInfo> {
        match self {
            Child::Process(p) => p.exit(),
            Child::Dry(r) => r.state.lock().exit,
        }
    }

    /// True until it has ended (a process: been reaped).
    pub fn is_alive(&self) -> bool {
        match self {
            Child::Process(p) => p.is_alive(),
            Child::Dry(r) => r.state.lock().exit.is_none(),
        }
    }

    /// Send `sig` (a process: to its group). False once it has ended.
    pub fn signal(&self, sig: i32) -> bool {
        match self {
            Child::Process(p) => p.signal(sig),
            Child::Dry(r) => r.signal(sig),
        }
    }

    /// Wait up to `timeout` for the end; how it ended, if it did.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitInfo> {
        match self {
            Child::Process(p) => p.wait_timeout(timeout),
            Child::Dry(r) => {
                let deadline = crate::util::deadline_in(timeout);
                let mut st = r.state.lock();
                while st.exit.is_none() {
                    if r.exited.wait_until(&mut st, deadline).timed_out() {
                        break;
                    }
                }
                st.exit
            }
        }
    }

    /// Join the thread that saw the end (the waiter, or the responder itself).
    pub fn join_waiter(&self) {
        match self {
            Child::Process(p) => p.join_waiter(),
            Child::Dry(r) => {
                if let Some(h) = r.thread.lock().take() {
                    let _ = h.join();
                }
            }
        }
    }
}

/// A started child or responder and the parent's ends of its three pipes.
pub(crate) struct Started {
    pub process: Child,
    pub stdin: File,
    pub stdout: File,
    pub stderr: File,
}

impl From<Spawned> for Started {
    fn from(sp: Spawned) -> Started {
        Started {
            process: Child::Process(sp.process),
            stdin: sp.stdin,
            stdout: sp.stdout,
            stderr: sp.stderr,
        }
    }
}

#[derive(Default)]
struct End {
    /// The first signal asked for; the responder ends with it.
    signal: Option<i32>,
    exit: Option<ExitInfo>,
}

/// The thread that answers for a dry incarnation, and how it ended.
pub(crate) struct Responder {
    id: i32,
    started: Instant,
    state: Mutex<End>,
    exited: Condvar,
    /// An eventfd the responder polls: written by [`Responder::signal`].
    wake: OwnedFd,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Responder {
    /// End the responder with `sig` (any signal ends it, as SIGTERM and SIGKILL end a
    /// tool). False once it has ended.
    pub fn signal(&self, sig: i32) -> bool {
        let mut st = self.state.lock();
        if st.exit.is_some() {
            return false;
        }
        if sig == 0 {
            return true; // kill(pid, 0): only asks whether it is there
        }
        st.signal.get_or_insert(sig);
        let one: u64 = 1;
        // SAFETY: an 8-byte write to the eventfd we own.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        true
    }
}

/// The next dry id: -1, -2, ... (never a pid, never 0).
fn next_id() -> i32 {
    static NEXT: AtomicI32 = AtomicI32::new(-1);
    NEXT.fetch_update(Relaxed, Relaxed, |n| {
        Some(if n == i32::MIN { -1 } else { n - 1 })
    })
    .unwrap_or(-1)
}

/// A pipe, both ends close-on-exec: (read end, write end).
fn pipe() -> Result<(File, File)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two fds into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::Spawn(format!(
            "dry run: cannot create a pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe { Ok((File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1]))) }
}

fn set_nonblocking(f: &File) {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let fl = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

/// Start a responder for instance `index` of `spec` (whose `dry_run` is `dry`); it runs
/// `on_exit` on its own thread once it has ended.
pub(crate) fn spawn(
    spec: &ToolSpec,
    dry: &DryRun,
    index: usize,
    on_exit: Box<dyn FnOnce(ExitInfo) + Send>,
) -> Result<Started> {
    let (stdin_r, stdin_w) = pipe()?;
    let (stdout_r, stdout_w) = pipe()?;
    let (stderr_r, stderr_w) = pipe()?;
    // SAFETY: plain syscall; the fd is checked before use.
    let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if wake < 0 {
        return Err(Error::Spawn(format!(
            "dry run: cannot create an eventfd: {}",
            std::io::Error::last_os_error()
        )));
    }
    set_nonblocking(&stdin_r);
    set_nonblocking(&stdout_w);
    let responder = Arc::new(Responder {
        id: next_id(),
        started: Instant::now(),
        state: Mutex::new(End::default()),
        exited: Condvar::new(),
        // SAFETY: a fresh fd we own from here on.
        wake: unsafe { OwnedFd::from_raw_fd(wake) },
        thread: Mutex::new(None),
    });
    let script = Script {
        tool: spec.id.clone(),
        index,
        argv: spec.command.clone(),
        protocol: spec.protocol.clone(),
        dry: dry.clone(),
        ready_line: spec.startup.ready_line.clone(),
    };
    let r = Arc::clone(&responder);
    let handle = crate::process::spawn_thread(format!("toolpool-dry-{index}"), move || {
        let exit = script.run(&r, stdin_r, stdout_w, stderr_w);
        // The pipe ends are closed (moved into `run`), as a dead process's are.
        {
            let mut st = r.state.lock();
            st.exit = Some(exit);
            r.exited.notify_all();
        }
        on_exit(exit);
    });
    *responder.thread.lock() = Some(handle);
    Ok(Started {
        process: Child::Dry(responder),
        stdin: stdin_w,
        stdout: stdout_r,
        stderr: stderr_r,
    })
}

/// What a reply does once due.
enum Action {
    /// Write these bytes on stdout.
    Write(Vec<u8>),
    /// Write the message on stderr and end with this exit status.
    Fail(i32, String),
}

/// What the responder answers, and for whom (the log record).
struct Script {
    tool: String,
    index: usize,
    argv: Vec<String>,
    protocol: Protocol,
    dry: DryRun,
    ready_line: Option<String>,
}

impl Script {
    fn run(&self, r: &Responder, stdin: File, stdout: File, mut stderr: File) -> ExitInfo {
        let mut lines = LineBuf::default();
        let split = AtomicU64::new(0);
        let mut out: Vec<u8> = Vec::new();
        let mut pending: BTreeMap<(Instant, u64), Action> = BTreeMap::new();
        let mut seq = 0u64;
        let mut last_due = Instant::now();
        let mut stdin_open = true;
        if let Some(ready) = &self.ready_line {
            out.extend_from_slice(ready.as_bytes());
            out.push(b'\n');
        }
        loop {
            if let Some(sig) = r.state.lock().signal {
                return ExitInfo::Signal(sig);
            }
            if let Some(exit) = release_due(&mut pending, &mut out, &mut stderr) {
                return exit;
            }
            if !out.is_empty() {
                match (&stdout).write(&out) {
                    Ok(n) => {
                        out.drain(..n);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                        ) => {}
                    // Nobody reads stdout any more: a tool would die of SIGPIPE.
                    Err(_) => return ExitInfo::Signal(libc::SIGPIPE),
                }
            }
            if !stdin_open && pending.is_empty() && out.is_empty() {
                return ExitInfo::Code(0);
            }
            let read =
                stdin_open && out.len() < MAX_DRY_OUT_BYTES && pending.len() < MAX_DRY_PENDING;
            let mut fds = vec![libc::pollfd {
                fd: r.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            if read {
                fds.push(libc::pollfd {
                    fd: stdin.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            if !out.is_empty() {
                fds.push(libc::pollfd {
                    fd: stdout.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                });
            }
            let timeout = poll_timeout(&pending, out.is_empty());
            // SAFETY: poll on valid pollfds of fds we hold for the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n <= 0 || !read || fds[1].revents == 0 {
                continue; // a signal is seen at the top of the loop
            }
            match lines.fill_from(&stdin) {
                Ok(0) => {
                    stdin_open = false;
                    if let Some(rest) = lines.rest() {
                        self.answer(&rest, &mut pending, &mut seq, &mut last_due);
                    }
                }
                Ok(_) => {
                    while let Some(line) = lines.next_line(MAX_DRY_REQUEST_BYTES, &split) {
                        self.answer(&line, &mut pending, &mut seq, &mut last_due);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => stdin_open = false,
            }
        }
    }

    /// Queue the answer to one request line, due after its delay.
    fn answer(
        &self,
        line: &[u8],
        pending: &mut BTreeMap<(Instant, u64), Action>,
        seq: &mut u64,
        last_due: &mut Instant,
    ) {
        log::debug!(
            target: "toolpool::dry_run",
            "dry run: tool '{}' instance {}: would send {:?} to {:?}",
            self.tool,
            self.index,
            String::from_utf8_lossy(line),
            self.argv
        );
        let (delay, action) = match &self.protocol {
            Protocol::Jsonrpc => self.answer_rpc(line),
            proto => self.answer_line(line, proto),
        };
        let Some(action) = action else { return };
        let now = Instant::now();
        let due = match self.protocol {
            Protocol::Jsonrpc => now + delay,
            // One request at a time, in order, as a line tool answers.
            _ => (*last_due).max(now) + delay,
        };
        *last_due = due;
        *seq += 1;
        pending.insert((due, *seq), action);
    }

    fn answer_line(&self, line: &[u8], proto: &Protocol) -> (Duration, Option<Action>) {
        let key = String::from_utf8_lossy(line);
        let found = self.dry.find(&key);
        let delay = Duration::from_millis(found.map_or(0, |r| r.delay_ms));
        let text: Vec<u8> = match found {
            Some(r) if r.error.is_some() => {
                let e = r.error.as_ref().expect("checked");
                return (delay, Some(Action::Fail(e.code as i32, e.message.clone())));
            }
            Some(r) if r.reply.is_some() => r.reply.clone().unwrap_or_default().into_bytes(),
            _ => match &self.dry.default {
                DryDefault::Echo => line.to_vec(),
                DryDefault::Reply(s) => s.clone().into_bytes(),
                DryDefault::Error => {
                    let message = format!("dry run: no reply matches the line '{key}'");
                    return (delay, Some(Action::Fail(1, message)));
                }
            },
        };
        let mut out = Vec::with_capacity(text.len() + 8);
        match proto {
            Protocol::Marker(m) => {
                if !text.is_empty() {
                    out.extend_from_slice(&text);
                    out.push(b'\n');
                }
                out.extend_from_slice(m.as_bytes());
            }
            _ => out.extend_from_slice(&text),
        }
        out.push(b'\n');
        (delay, Some(Action::Write(out)))
    }

    fn answer_rpc(&self, line: &[u8]) -> (Duration, Option<Action>) {
        let req: Option<serde_json::Map<String, Value>> = serde_json::from_slice(line).ok();
        let id = req
            .as_ref()
            .and_then(|o| o.get("id").cloned())
            .unwrap_or(Value::Null);
        let method = req
            .as_ref()
            .and_then(|o| o.get("method"))
            .and_then(Value::as_str);
        let Some(method) = method else {
            let e = error_line(&id, -32600, "dry run: not a JSON-RPC request");
            return (Duration::ZERO, Some(Action::Write(e)));
        };
        if req.as_ref().is_some_and(|o| !o.contains_key("id")) {
            return (Duration::ZERO, None); // a notification gets no reply
        }
        let found = self.dry.find(method);
        let delay = Duration::from_millis(found.map_or(0, |r| r.delay_ms));
        let line = match found {
            Some(r) if r.error.is_some() => {
                let e = r.error.as_ref().expect("checked");
                error_line(&id, e.code, &e.message)
            }
            Some(r) if r.reply.is_some() => result_line(&id, r.reply.as_deref().unwrap_or("null")),
            _ => match &self.dry.default {
                DryDefault::Echo => {
                    let params = req.as_ref().and_then(|o| o.get("params"));
                    let text = params.map_or("null".to_string(), Value::to_string);
                    result_line(&id, &text)
                }
                DryDefault::Reply(s) => result_line(&id, s),
                DryDefault::Error => error_line(
                    &id,
                    -32601,
                    &format!("dry run: no reply for the method '{method}'"),
                ),
            },
        };
        (delay, Some(Action::Write(line)))
    }
}

/// Move the replies that are due from `pending` to `out`, in order; a failure is due
/// once all output before it is written, and ends the run: its message goes to
/// `stderr` and its exit is returned.
fn release_due(
    pending: &mut BTreeMap<(Instant, u64), Action>,
    out: &mut Vec<u8>,
    stderr: &mut File,
) -> Option<ExitInfo> {
    let now = Instant::now();
    while let Some(entry) = pending.first_entry() {
        if entry.key().0 > now {
            break;
        }
        if matches!(entry.get(), Action::Fail(..)) && !out.is_empty() {
            break;
        }
        match entry.remove() {
            Action::Write(b) => out.extend_from_slice(&b),
            Action::Fail(code, message) => {
                let _ = stderr.write_all(message.as_bytes());
                let _ = stderr.write_all(b"\n");
                return Some(ExitInfo::Code(code));
            }
        }
    }
    None
}

/// The `poll` timeout in ms until the first pending reply is due (-1: none, or a
/// failure that waits for the output before it, through POLLOUT, not for a timer).
fn poll_timeout(pending: &BTreeMap<(Instant, u64), Action>, out_empty: bool) -> i32 {
    match pending.first_key_value() {
        Some((_, Action::Fail(..))) if !out_empty => -1,
        Some(((due, _), _)) => {
            let left = due.saturating_duration_since(Instant::now());
            left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32
        }
        None => -1,
    }
}

/// A reply line with `result` = `json` (valid JSON, checked with the spec), kept exact: a
/// newline in valid JSON is whitespace outside strings, so it becomes a space.
fn result_line(id: &Value, json: &str) -> Vec<u8> {
    let one_line = json.replace(['\n', '\r'], " ");
    format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{one_line}}}\n").into_bytes()
}

fn error_line(id: &Value, code: i64, message: &str) -> Vec<u8> {
    let v = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": code, "message": message},
    });
    let mut b = v.to_string().into_bytes();
    b.push(b'\n');
    b
}
