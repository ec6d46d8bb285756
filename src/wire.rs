//! The wire protocol of `toolpool serve`: frames on a Unix stream socket, and the calls
//! and answers they carry. Below both the service and the client; it knows no pool.
//!
//! A **frame** is an 8-byte header (the JSON part's length, then the data part's, each a
//! big-endian `u32`), a JSON document, then raw bytes (a payload, a line, a reply: never
//! escaped, and not limited to UTF-8). A frame is at most [`MAX_FRAME_BYTES`] in all.
//!
//! A connection opens with a [`Hello`] each way; then the client sends one [`Call`] at a
//! time and reads its [`Answer`] (same `id`). While a call runs, the only frame a client
//! may send is a cancel (`{"id": N, "op": "cancel"}`): the service cancels the call, which
//! then answers `Cancelled`. The full description is docs/service.md.

use crate::cancel::CancelToken;
use crate::error::Error;
use crate::router::ServedBy;
use crate::spec::{Retry, ToolSpec};
use serde::{Deserialize, Serialize};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

/// The protocol version this build speaks (the `version` of [`Hello`]).
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame, header included, either side sends or accepts (64 MiB). A larger
/// one closes the connection that sent it.
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// Bytes of the frame header.
const HEADER: usize = 8;

/// The first frame each way.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// Always `"toolpool"`: a peer that is something else fails here.
    pub hello: String,
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// The sender's pid.
    pub pid: u32,
    /// The sender's toolpool version (`CARGO_PKG_VERSION`).
    pub build: String,
    /// The service's answer when it will not serve this client (version, permission, too
    /// many clients): the error, then the connection closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Error>,
}

impl Hello {
    /// This process's hello.
    pub fn ours() -> Hello {
        Hello {
            hello: "toolpool".into(),
            version: PROTOCOL_VERSION,
            pid: std::process::id(),
            build: env!("CARGO_PKG_VERSION").into(),
            refused: None,
        }
    }
}

/// One call from a client: `{"id": N, "op": ...}`; the payload, line or spec bytes it
/// needs travel in the frame's data part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Call {
    /// Chosen by the client, echoed by the answer.
    pub id: u64,
    /// What to do.
    #[serde(flatten)]
    pub op: Op,
}

/// What a call asks for. `tool` names a pool of the service's registry; `timeout_ms` is the
/// call's timeout as the local call takes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Op {
    /// The tool ids the service serves.
    Tools,
    /// A pool's spec and size (checks that the tool exists).
    Open { tool: String },
    /// `Pool::send_bytes` (data: the line).
    Send { tool: String, index: usize },
    /// `Pool::notify` (data: the payload).
    Notify { tool: String, index: usize },
    /// `Pool::send_routed` (data: the line).
    SendRouted { tool: String },
    /// `Pool::read_line_bytes` (answer data: the line).
    ReadLine {
        tool: String,
        index: usize,
        timeout_ms: u64,
    },
    /// `Pool::read_stderr_line` (answer data: the line).
    ReadStderrLine {
        tool: String,
        index: usize,
        timeout_ms: u64,
    },
    /// `Pool::read_any_bytes` (answer data: the line).
    ReadAny { tool: String, timeout_ms: u64 },
    /// `Pool::request_bytes` (data: the payload; answer data: the reply text).
    Request {
        tool: String,
        timeout_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry: Option<Retry>,
    },
    /// `Pool::map` (the payloads in the JSON: a batch is text).
    Map {
        tool: String,
        timeout_ms: u64,
        payloads: Vec<String>,
    },
    /// `Pool::lease`: the lease belongs to this connection until released or closed.
    Lease { tool: String, timeout_ms: u64 },
    /// `Lease::request` (data: the payload; answer data: the reply).
    LeaseRequest { timeout_ms: u64 },
    /// `Lease::notify` (data: the payload).
    LeaseNotify,
    /// `Lease::send` (data: the line).
    LeaseSend,
    /// `Lease::read_line` (answer data: the line).
    LeaseReadLine { timeout_ms: u64 },
    /// Drop the connection's lease.
    Release,
    /// `Pool::status`.
    Status { tool: String },
    /// `Pool::metrics`.
    Metrics { tool: String },
    /// `Pool::metrics_prometheus` (answer data: the text).
    Prometheus { tool: String },
    /// `Pool::restart`.
    Restart { tool: String, index: usize },
    /// `Pool::resize`.
    Resize { tool: String, count: usize },
    /// `Pool::reload` with this spec.
    Reload { tool: String, spec: Box<ToolSpec> },
    /// The service's limiter status.
    LimitStatus,
    /// Set the service's limit; the answer is the old one.
    SetLimit { max: usize },
    /// Kill every process of the service's limiter.
    KillAll,
    /// `Limiter::acquire` on the service's limiter: the permit belongs to this connection
    /// until released or closed.
    Acquire { timeout_ms: u64 },
    /// `Permit::register_pid` on the connection's permit (a pid of the client's machine).
    RegisterPid { pid: i32 },
    /// `Permit::holds_slot` of the connection's permit.
    HoldsSlot,
    /// Drop the connection's permit.
    ReleasePermit,
    /// Cancel call `id` of this connection (the frame's own `id`); no answer of its own.
    Cancel,
}

impl Op {
    /// The op's name, as the `op` key spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Tools => "tools",
            Op::Open { .. } => "open",
            Op::Send { .. } => "send",
            Op::Notify { .. } => "notify",
            Op::SendRouted { .. } => "send_routed",
            Op::ReadLine { .. } => "read_line",
            Op::ReadStderrLine { .. } => "read_stderr_line",
            Op::ReadAny { .. } => "read_any",
            Op::Request { .. } => "request",
            Op::Map { .. } => "map",
            Op::Lease { .. } => "lease",
            Op::LeaseRequest { .. } => "lease_request",
            Op::LeaseNotify => "lease_notify",
            Op::LeaseSend => "lease_send",
            Op::LeaseReadLine { .. } => "lease_read_line",
            Op::Release => "release",
            Op::Status { .. } => "status",
            Op::Metrics { .. } => "metrics",
            Op::Prometheus { .. } => "prometheus",
            Op::Restart { .. } => "restart",
            Op::Resize { .. } => "resize",
            Op::Reload { .. } => "reload",
            Op::LimitStatus => "limit_status",
            Op::SetLimit { .. } => "set_limit",
            Op::KillAll => "kill_all",
            Op::Acquire { .. } => "acquire",
            Op::RegisterPid { .. } => "register_pid",
            Op::HoldsSlot => "holds_slot",
            Op::ReleasePermit => "release_permit",
            Op::Cancel => "cancel",
        }
    }
}

/// The service's answer to call `id`: `ok` (its JSON value, and data), or `err`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Answer<T> {
    /// The call's id.
    pub id: u64,
    /// The result, when the call succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok: Option<T>,
    /// The error, when it failed (the same [`Error`] a local call returns).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub err: Option<Error>,
}

/// What `open` answers: the pool's spec and size now.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Opened {
    pub spec: ToolSpec,
    pub len: usize,
}

/// What `request` answers besides the reply text (which travels as the frame's data).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ReplyHead {
    pub instance: Option<usize>,
    pub served_by: ServedBy,
    pub moved: bool,
}

/// What `lease` answers.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Leased {
    pub index: usize,
    pub pid: i32,
}

/// One frame as read: the JSON part and the data part.
#[derive(Debug, Default)]
pub(crate) struct Frame {
    pub json: Vec<u8>,
    pub data: Vec<u8>,
}

/// Why [`Socket::recv`] returned no frame.
#[derive(Debug)]
pub(crate) enum RecvEnd {
    /// The peer closed the connection (between frames, or mid-frame).
    Closed { mid_frame: bool },
    /// The deadline passed.
    TimedOut,
    /// The token was cancelled.
    Cancelled,
    /// The peer announced a frame over [`MAX_FRAME_BYTES`].
    TooBig(usize),
    /// A system call failed.
    Io(io::Error),
}

impl std::fmt::Display for RecvEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecvEnd::Closed { mid_frame: false } => f.write_str("the peer closed the connection"),
            RecvEnd::Closed { mid_frame: true } => {
                f.write_str("the peer closed the connection in the middle of a frame")
            }
            RecvEnd::TimedOut => f.write_str("timed out"),
            RecvEnd::Cancelled => f.write_str("cancelled"),
            RecvEnd::TooBig(n) => write!(
                f,
                "a frame of {n} bytes, over the limit of {MAX_FRAME_BYTES} bytes"
            ),
            RecvEnd::Io(e) => write!(f, "{e}"),
        }
    }
}

/// One end of a connection: frames out with one `sendmsg`, frames in through a buffer.
/// Not shared between threads (the owner has `&mut` to read).
pub(crate) struct Socket {
    fd: OwnedFd,
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out as frames.
    start: usize,
}

impl Socket {
    /// Wrap a connected stream socket.
    pub fn new(fd: OwnedFd) -> Socket {
        Socket {
            fd,
            buf: Vec::with_capacity(4096),
            start: 0,
        }
    }

    /// The socket's fd (for `poll` and `epoll`).
    pub fn raw(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Send one frame. Never raises SIGPIPE (`MSG_NOSIGNAL`): a closed peer is `EPIPE`.
    pub fn send(&self, json: &[u8], data: &[u8]) -> io::Result<()> {
        let total = HEADER + json.len() + data.len();
        if total > MAX_FRAME_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a frame of {total} bytes is over the limit of {MAX_FRAME_BYTES} bytes"),
            ));
        }
        let mut header = [0u8; HEADER];
        header[..4].copy_from_slice(&(json.len() as u32).to_be_bytes());
        header[4..].copy_from_slice(&(data.len() as u32).to_be_bytes());
        let parts: [&[u8]; 3] = [&header, json, data];
        let mut sent = 0usize;
        while sent < total {
            // The iovecs of what is left to send.
            let mut iov: Vec<libc::iovec> = Vec::with_capacity(3);
            let mut skip = sent;
            for p in parts {
                if skip >= p.len() {
                    skip -= p.len();
                    continue;
                }
                iov.push(libc::iovec {
                    iov_base: p[skip..].as_ptr() as *mut libc::c_void,
                    iov_len: p.len() - skip,
                });
                skip = 0;
            }
            // SAFETY: a zeroed msghdr is valid; it points at `iov`, which outlives the call.
            let n = unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = iov.as_mut_ptr();
                msg.msg_iovlen = iov.len() as _;
                libc::sendmsg(self.raw(), &msg, libc::MSG_NOSIGNAL)
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            sent += n as usize;
        }
        Ok(())
    }

    /// The next frame, waiting up to `until` (a deadline, and a token that ends the wait);
    /// `None` waits as long as it takes.
    pub fn recv(
        &mut self,
        until: Option<(Instant, Option<&CancelToken>)>,
    ) -> Result<Frame, RecvEnd> {
        loop {
            if let Some(frame) = self.take()? {
                return Ok(frame);
            }
            if let Some((deadline, token)) = until {
                self.wait_readable(deadline, token)?;
            }
            self.fill()?;
        }
    }

    /// A whole frame from the buffer, if it holds one.
    fn take(&mut self) -> Result<Option<Frame>, RecvEnd> {
        let have = &self.buf[self.start..];
        if have.len() < HEADER {
            return Ok(None);
        }
        let json_len = u32::from_be_bytes(have[..4].try_into().expect("4 bytes")) as usize;
        let data_len = u32::from_be_bytes(have[4..8].try_into().expect("4 bytes")) as usize;
        let total = HEADER + json_len + data_len;
        if total > MAX_FRAME_BYTES {
            return Err(RecvEnd::TooBig(total));
        }
        if have.len() < total {
            // The buffer grows as bytes arrive, not by what the header claims.
            return Ok(None);
        }
        let frame = Frame {
            json: have[HEADER..HEADER + json_len].to_vec(),
            data: have[HEADER + json_len..total].to_vec(),
        };
        self.start += total;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(frame))
    }

    /// One `read` into the buffer (blocking).
    fn fill(&mut self) -> Result<(), RecvEnd> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let len = self.buf.len();
        if self.buf.capacity() - len < 4096 {
            self.buf.reserve(64 * 1024);
        }
        let room = self.buf.capacity() - len;
        loop {
            // SAFETY: reading into the spare capacity of `buf`, at most `room` bytes.
            let n = unsafe { libc::read(self.raw(), self.buf.as_mut_ptr().add(len).cast(), room) };
            if n > 0 {
                // SAFETY: `read` initialised `n` bytes after `len`.
                unsafe { self.buf.set_len(len + n as usize) };
                return Ok(());
            }
            if n == 0 {
                return Err(RecvEnd::Closed {
                    mid_frame: !self.buf.is_empty(),
                });
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::ConnectionReset => {
                    return Err(RecvEnd::Closed {
                        mid_frame: !self.buf.is_empty(),
                    })
                }
                _ => return Err(RecvEnd::Io(e)),
            }
        }
    }

    /// Wait until the socket is readable, the deadline passes or the token is cancelled.
    fn wait_readable(&self, deadline: Instant, token: Option<&CancelToken>) -> Result<(), RecvEnd> {
        let token_fd = token.and_then(|t| t.poll_fd());
        loop {
            if token.is_some_and(|t| t.is_cancelled()) {
                return Err(RecvEnd::Cancelled);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(RecvEnd::TimedOut);
            }
            let mut left = deadline - now;
            if token.is_some() && token_fd.is_none() {
                left = left.min(crate::cancel::CANCEL_POLL_SLICE);
            }
            let mut fds = [
                libc::pollfd {
                    fd: self.raw(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: token_fd.unwrap_or(-1),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: `fds` is a valid array of 2 pollfds (a negative fd is ignored).
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(RecvEnd::Io(e));
            }
            if fds[0].revents != 0 {
                return Ok(());
            }
        }
    }

    /// True when no bytes are left over in the buffer (between calls there are none: the
    /// service sends nothing unasked).
    pub fn is_clean(&self) -> bool {
        self.start == self.buf.len()
    }
}

/// `value` as JSON bytes. Only types of this crate go through it, which always serialize.
pub(crate) fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("wire types serialize")
}
