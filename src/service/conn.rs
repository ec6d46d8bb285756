//! One client connection: the hello, then calls one at a time, each run on the pool with
//! the method a local caller would use and answered on the same connection. A malformed
//! or oversized frame closes this connection only (with a log record); a lease taken here
//! is dropped, freeing its instance, the moment the connection ends.

use super::listen::Peer;
use super::{Shared, HELLO_TIMEOUT};
use crate::cancel::{CancelToken, Wait};
use crate::error::{Error, Result};
use crate::lease::Lease;
use crate::limiter::{Limiter, Permit};
use crate::pool::{Pool, RequestOptions};
use crate::wire::{
    self, Answer, Call, Frame, Hello, Leased, Op, Opened, RecvEnd, ReplyHead, Socket,
};
use serde::Serialize;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Stack of a connection thread (serde and a pool call; no deep recursion).
const STACK_BYTES: usize = 512 * 1024;

/// Serve the connection on `fd` on a thread of its own (or refuse it).
pub(super) fn start(shared: Arc<Shared>, fd: OwnedFd) {
    let spawned = std::thread::Builder::new()
        .name("toolpool-client".into())
        .stack_size(STACK_BYTES)
        .spawn(move || {
            crate::util::block_async_signals();
            serve(&shared, fd)
        });
    if let Err(e) = spawned {
        log::warn!(target: "toolpool::service", "cannot start a thread for a new client ({e}); closing it");
    }
}

/// What a connection holds between calls.
#[derive(Default)]
struct State {
    /// The lease taken on this connection, and its pool (kept alive with it).
    lease: Option<(Lease, Arc<Pool>)>,
    /// The permit taken on this connection.
    permit: Option<Permit>,
}

fn serve(sh: &Shared, fd: OwnedFd) {
    let mut sock = Socket::new(fd);
    let peer = match Peer::of(sock.raw()) {
        Ok(p) => p,
        Err(e) => {
            log::warn!(target: "toolpool::service", "cannot read a client's credentials ({e}); closing it");
            return;
        }
    };
    // The client's hello first, so a refusal reaches it as an answer, not a reset.
    let hello = match read_hello(&mut sock) {
        Ok(h) => h,
        // A connect and close with nothing sent: a probe (another `serve` checking
        // whether this socket is live).
        Err(None) => return,
        Err(Some(why)) => {
            log::warn!(target: "toolpool::service", "client pid {} uid {}: {why}; closing the connection", peer.pid, peer.uid);
            return;
        }
    };
    let refused = if let Err(why) = peer.check(sh.own_uid, sh.options.socket_group) {
        Some(Error::Service(why))
    } else if hello.version != wire::PROTOCOL_VERSION {
        Some(Error::Service(format!(
            "the service speaks protocol version {} (toolpool {}), this client {} (toolpool {}): \
             use the same toolpool release on both sides",
            wire::PROTOCOL_VERSION,
            env!("CARGO_PKG_VERSION"),
            hello.version,
            hello.build
        )))
    } else {
        None
    };
    if let Some(e) = refused {
        log::warn!(target: "toolpool::service", "refused client pid {} uid {}: {e}", peer.pid, peer.uid);
        let _ = sock.send(
            &wire::to_json(&Hello {
                refused: Some(e),
                ..Hello::ours()
            }),
            &[],
        );
        return;
    }
    let Some(id) = sh.admit(sock.raw(), peer.pid) else {
        let e = Error::Service(format!(
            "too many clients: {} connections are open (toolpool serve --max-clients)",
            sh.options.max_clients
        ));
        log::warn!(target: "toolpool::service", "refused client pid {}: {e}", peer.pid);
        let _ = sock.send(
            &wire::to_json(&Hello {
                refused: Some(e),
                ..Hello::ours()
            }),
            &[],
        );
        return;
    };
    if sock.send(&wire::to_json(&Hello::ours()), &[]).is_ok() {
        let mut state = State::default();
        calls(sh, id, &mut sock, &peer, &mut state);
        // The lease (if any) goes back before the connection is forgotten.
        drop(state);
    }
    sh.leave(id);
}

/// The client's hello, within [`HELLO_TIMEOUT`]; `Err(None)` when the peer closed
/// without sending a byte.
fn read_hello(sock: &mut Socket) -> std::result::Result<Hello, Option<String>> {
    let until = Instant::now() + HELLO_TIMEOUT;
    let frame = match sock.recv(Some((until, None))) {
        Ok(f) => f,
        Err(RecvEnd::Closed { mid_frame: false }) => return Err(None),
        Err(e) => return Err(Some(format!("no hello ({e})"))),
    };
    let hello: Hello = serde_json::from_slice(&frame.json)
        .map_err(|e| Some(format!("a first frame that is not a hello ({e})")))?;
    if hello.hello != "toolpool" {
        return Err(Some(format!(
            "a hello from {:?}, not toolpool",
            hello.hello
        )));
    }
    Ok(hello)
}

/// Serve calls until the client leaves or breaks the protocol.
fn calls(sh: &Shared, id: u64, sock: &mut Socket, peer: &Peer, state: &mut State) {
    // One token for the connection's calls, replaced only once cancelled: a token makes its
    // eventfd on a wait's first `poll`, so a token per call would cost two system calls
    // (eventfd, close) on every call. Only the watcher cancels it, and only while a call
    // runs, so an uncancelled token carries nothing over to the next call.
    let mut token = CancelToken::new();
    let watched = sh.watcher.register(sock.raw());
    loop {
        let frame = match sock.recv(None) {
            Ok(f) => f,
            Err(RecvEnd::Closed { mid_frame: false }) => return,
            Err(e) => {
                log::warn!(target: "toolpool::service", "client pid {}: {e}; closing the connection", peer.pid);
                return;
            }
        };
        let call: Call = match serde_json::from_slice(&frame.json) {
            Ok(c) => c,
            Err(e) => {
                log::warn!(target: "toolpool::service", "client pid {}: a frame that is not a call ({e}); closing the connection", peer.pid);
                return;
            }
        };
        if matches!(call.op, Op::Cancel) {
            // The call it cancelled has already been answered.
            continue;
        }
        sh.set_busy(id, true);
        if token.is_cancelled() {
            token = CancelToken::new();
        }
        if !sock.is_clean() {
            // Bytes came in the same read as the call: a client sends nothing while its
            // call runs but a cancel, which the watcher (looking at the socket) would not
            // see now.
            token.cancel();
        }
        let answer = {
            let _watch = watched.watch(&token);
            run(sh, call.op, frame, &token, state)
        };
        let sent = match answer {
            Ok((json, data)) => sock.send(&ok_json(call.id, json), &data),
            Err(e) => sock.send(
                &wire::to_json(&Answer::<()> {
                    id: call.id,
                    ok: None,
                    err: Some(e),
                }),
                &[],
            ),
        };
        sh.set_busy(id, false);
        if let Err(e) = sent {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                log::warn!(target: "toolpool::service", "client pid {}: cannot answer ({e}); closing the connection", peer.pid);
            }
            return;
        }
    }
}

/// `{"id": N, "ok": <json>}`.
fn ok_json(id: u64, json: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 32);
    out.extend_from_slice(format!("{{\"id\":{id},\"ok\":").as_bytes());
    out.extend_from_slice(&json);
    out.push(b'}');
    out
}

/// An answer's value as JSON, and its data part.
type Answered = (Vec<u8>, Vec<u8>);

/// `value` as an answer with no data.
fn value<T: Serialize>(v: T) -> Result<Answered> {
    Ok((wire::to_json(&v), Vec::new()))
}

/// Nothing but success (`null`), with `data`.
fn data(d: Vec<u8>) -> Result<Answered> {
    Ok((b"null".to_vec(), d))
}

/// The data part as text (a payload).
fn text(frame: &Frame) -> Result<&str> {
    std::str::from_utf8(&frame.data)
        .map_err(|e| Error::InvalidArgument(format!("payload is not valid UTF-8: {e}")))
}

/// The wait of a call: its timeout, and the token the watcher cancels.
fn wait(ms: u64, token: &CancelToken) -> Wait {
    Wait::new(Duration::from_millis(ms)).with_cancel(token)
}

/// Run one call.
fn run(
    sh: &Shared,
    op: Op,
    frame: Frame,
    token: &CancelToken,
    state: &mut State,
) -> Result<Answered> {
    let pool = |tool: &str| sh.pools.pool(tool);
    match op {
        Op::Tools => value(sh.pools.tools()),
        Op::Open { tool } => {
            let p = pool(&tool)?;
            value(Opened {
                spec: (*p.spec()).clone(),
                len: p.len(),
            })
        }
        Op::Send { tool, index } => value(pool(&tool)?.send_bytes(index, &frame.data)?),
        Op::Notify { tool, index } => value(pool(&tool)?.notify(index, text(&frame)?)?),
        Op::SendRouted { tool } => value(pool(&tool)?.send_routed(text(&frame)?)?),
        Op::ReadLine {
            tool,
            index,
            timeout_ms,
        } => data(pool(&tool)?.read_line_bytes(index, wait(timeout_ms, token))?),
        Op::ReadStderrLine {
            tool,
            index,
            timeout_ms,
        } => {
            let line = pool(&tool)?.read_stderr_line(index, Duration::from_millis(timeout_ms))?;
            data(line.into_bytes())
        }
        Op::ReadAny { tool, timeout_ms } => {
            let (i, line) = pool(&tool)?.read_any_bytes(wait(timeout_ms, token))?;
            Ok((wire::to_json(&i), line))
        }
        Op::Request {
            tool,
            timeout_ms,
            key,
            retry,
        } => {
            let options = RequestOptions { key, retry };
            let r = pool(&tool)?.request_bytes(text(&frame)?, &options, wait(timeout_ms, token))?;
            let head = ReplyHead {
                instance: r.instance,
                served_by: r.served_by,
                moved: r.moved,
            };
            Ok((wire::to_json(&head), r.text))
        }
        Op::Map {
            tool,
            timeout_ms,
            payloads,
        } => {
            let results = pool(&tool)?.map(&payloads, wait(timeout_ms, token));
            value(results)
        }
        Op::Lease { tool, timeout_ms } => {
            if state.lease.is_some() {
                return Err(Error::InvalidArgument(
                    "this connection already holds a lease: release it first".into(),
                ));
            }
            let p = pool(&tool)?;
            let lease = p.lease(wait(timeout_ms, token))?;
            let leased = Leased {
                index: lease.index(),
                pid: lease.pid(),
            };
            state.lease = Some((lease, p));
            value(leased)
        }
        Op::LeaseRequest { timeout_ms } => {
            let reply = leased(state)?.request(text(&frame)?, wait(timeout_ms, token))?;
            data(reply.into_bytes())
        }
        Op::LeaseNotify => value(leased(state)?.notify(text(&frame)?)?),
        Op::LeaseSend => value(leased(state)?.send(text(&frame)?)?),
        Op::LeaseReadLine { timeout_ms } => data(
            leased(state)?
                .read_line(wait(timeout_ms, token))?
                .into_bytes(),
        ),
        Op::Release => {
            state.lease = None;
            value(())
        }
        Op::Status { tool } => value(pool(&tool)?.status()),
        Op::Metrics { tool } => value(pool(&tool)?.metrics()),
        Op::Prometheus { tool } => data(pool(&tool)?.metrics_prometheus().into_bytes()),
        Op::Restart { tool, index } => value(pool(&tool)?.restart(index)?),
        Op::Resize { tool, count } => value(pool(&tool)?.resize(count)?),
        Op::Reload { tool, spec } => value(pool(&tool)?.reload(*spec)?),
        Op::LimitStatus => value(Limiter::global().status()),
        Op::SetLimit { max } => value(Limiter::global().set_limit(max).0),
        Op::KillAll => value(Limiter::global().kill_all()),
        Op::Acquire { timeout_ms } => {
            if state.permit.is_some() {
                return Err(Error::InvalidArgument(
                    "this connection already holds a permit: release it first".into(),
                ));
            }
            state.permit = Some(Limiter::global().acquire(wait(timeout_ms, token))?);
            value(())
        }
        Op::RegisterPid { pid } => value(permit(state)?.register_pid(pid)?),
        Op::HoldsSlot => value(permit(state)?.holds_slot()),
        Op::ReleasePermit => {
            state.permit = None;
            value(())
        }
        Op::Cancel => value(()),
    }
}

/// The connection's permit, or the error of a permit call without one.
fn permit(state: &State) -> Result<&Permit> {
    state
        .permit
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument("no permit is held on this connection".into()))
}

/// The connection's lease, or the error of a lease call without one.
fn leased(state: &State) -> Result<&Lease> {
    state
        .lease
        .as_ref()
        .map(|(l, _)| l)
        .ok_or_else(|| Error::InvalidArgument("no lease is held on this connection".into()))
}
