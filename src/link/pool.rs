//! `ServicePool`: one pool of a service, as the pool façade drives it. Each method is one
//! call on the wire ([`crate::wire::Op`]), answered by the same method of the service's
//! local pool; errors come back as the local call returned them.

use super::{Link, ServiceLease};
use crate::cancel::Wait;
use crate::error::{Error, Result};
use crate::metrics::MetricsSnapshot;
use crate::router::Reply;
use crate::snapshot::PoolStatus;
use crate::spec::{Retry, ToolSpec};
use crate::wire::{Op, Opened, ReplyHead};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;

/// One pool of a service (see the module docs).
pub(crate) struct ServicePool {
    link: Arc<Link>,
    tool: String,
    /// The spec and size last seen (what `spec()` and `len()` answer if the service
    /// cannot).
    seen: Mutex<(Arc<ToolSpec>, usize)>,
    /// This handle was shut down (the service's pool runs on).
    closed: AtomicBool,
    /// The connections its calls are waiting on now (their fds), so that `shutdown`
    /// wakes those calls, as a local pool's shutdown does.
    busy: Mutex<Vec<i32>>,
}

impl ServicePool {
    /// The service's pool of `tool`.
    pub fn open(link: Arc<Link>, tool: &str) -> Result<ServicePool> {
        let op = Op::Open { tool: tool.into() };
        let (o, _): (Opened, _) = link.call(op, &[], None)?;
        Ok(ServicePool {
            link,
            tool: tool.into(),
            seen: Mutex::new((Arc::new(o.spec), o.len)),
            closed: AtomicBool::new(false),
            busy: Mutex::new(Vec::new()),
        })
    }

    /// The tool id.
    pub fn tool(&self) -> &str {
        &self.tool
    }

    /// A call for this pool; after `shutdown` of this handle, [`Error::ShutDown`] (also
    /// for a call that `shutdown` woke).
    fn call<T: serde::de::DeserializeOwned>(
        &self,
        op: Op,
        data: &[u8],
        wait: Option<&Wait>,
    ) -> Result<(T, Vec<u8>)> {
        if self.closed.load(SeqCst) {
            return Err(Error::ShutDown(self.tool.clone()));
        }
        let (sent, mut sock) = self.link.send(op, data, wait)?;
        let fd = sock.raw();
        {
            // Checked under the lock `shutdown` takes: a call either sees the flag or is
            // in `busy` when `shutdown` looks. One that sees it was sent as `shutdown`
            // came, like a call `shutdown` wakes: its connection is closed unread.
            let mut busy = self.busy.lock();
            if self.closed.load(SeqCst) {
                return Err(Error::ShutDown(self.tool.clone()));
            }
            busy.push(fd);
        }
        let (r, reusable) = self.link.answer(&mut sock, sent, wait);
        self.busy.lock().retain(|b| *b != fd);
        if self.closed.load(SeqCst) {
            // `shutdown` may have shut this connection down (the call then reads as the
            // service gone): never keep it.
            return r.map_err(|e| match e {
                Error::Service(_) => Error::ShutDown(self.tool.clone()),
                other => other,
            });
        }
        if reusable {
            self.link.put_back(sock);
        }
        r
    }

    /// The spec and size now (the last ones seen when the service does not answer).
    fn refresh(&self) -> (Arc<ToolSpec>, usize) {
        let op = Op::Open {
            tool: self.tool.clone(),
        };
        match self.call::<Opened>(op, &[], None) {
            Ok((o, _)) => {
                let mut seen = self.seen.lock();
                *seen = (Arc::new(o.spec), o.len);
                seen.clone()
            }
            Err(_) => self.seen.lock().clone(),
        }
    }

    pub fn spec(&self) -> Arc<ToolSpec> {
        self.refresh().0
    }

    /// The spec and size last seen, without asking the service.
    pub fn seen(&self) -> (Arc<ToolSpec>, usize) {
        self.seen.lock().clone()
    }

    pub fn len(&self) -> usize {
        self.refresh().1
    }

    pub fn send_bytes(&self, index: usize, line: &[u8]) -> Result<()> {
        let op = Op::Send {
            tool: self.tool.clone(),
            index,
        };
        self.call::<()>(op, line, None).map(drop)
    }

    pub fn notify(&self, index: usize, payload: &str) -> Result<()> {
        let op = Op::Notify {
            tool: self.tool.clone(),
            index,
        };
        self.call::<()>(op, payload.as_bytes(), None).map(drop)
    }

    pub fn send_routed(&self, line: &str) -> Result<usize> {
        let op = Op::SendRouted {
            tool: self.tool.clone(),
        };
        self.call(op, line.as_bytes(), None).map(|(i, _)| i)
    }

    pub fn read_line_bytes(&self, index: usize, wait: &Wait) -> Result<Vec<u8>> {
        let op = Op::ReadLine {
            tool: self.tool.clone(),
            index,
            timeout_ms: ms(wait),
        };
        self.call::<()>(op, &[], Some(wait)).map(|(_, d)| d)
    }

    pub fn read_stderr_line(&self, index: usize, wait: &Wait) -> Result<Vec<u8>> {
        let op = Op::ReadStderrLine {
            tool: self.tool.clone(),
            index,
            timeout_ms: ms(wait),
        };
        self.call::<()>(op, &[], Some(wait)).map(|(_, d)| d)
    }

    pub fn read_any_bytes(&self, wait: &Wait) -> Result<(usize, Vec<u8>)> {
        let op = Op::ReadAny {
            tool: self.tool.clone(),
            timeout_ms: ms(wait),
        };
        self.call(op, &[], Some(wait))
    }

    pub fn request_bytes(
        &self,
        payload: &str,
        key: Option<&str>,
        retry: Option<&Retry>,
        wait: &Wait,
    ) -> Result<Reply<Vec<u8>>> {
        let op = Op::Request {
            tool: self.tool.clone(),
            timeout_ms: ms(wait),
            key: key.map(str::to_string),
            retry: retry.cloned(),
        };
        let (head, text): (ReplyHead, _) = self.call(op, payload.as_bytes(), Some(wait))?;
        Ok(Reply {
            text,
            instance: head.instance,
            served_by: head.served_by,
            moved: head.moved,
        })
    }

    pub fn map(&self, payloads: Vec<String>, wait: &Wait) -> Vec<Result<Reply>> {
        let n = payloads.len();
        let op = Op::Map {
            tool: self.tool.clone(),
            timeout_ms: ms(wait),
            payloads,
        };
        match self.call::<Vec<std::result::Result<Reply, Error>>>(op, &[], Some(wait)) {
            Ok((results, _)) if results.len() == n => results,
            Ok((results, _)) => {
                let e = Error::Service(format!(
                    "{} answered a batch of {n} with {} results",
                    self.link.where_(),
                    results.len()
                ));
                (0..n).map(|_| Err(e.clone())).collect()
            }
            Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
        }
    }

    pub fn lease(&self, wait: &Wait) -> Result<ServiceLease> {
        if self.closed.load(SeqCst) {
            return Err(Error::ShutDown(self.tool.clone()));
        }
        ServiceLease::take(Arc::clone(&self.link), &self.tool, wait)
    }

    /// The status; for a service that does not answer, an empty one whose
    /// `service_error` says why.
    pub fn status(&self) -> PoolStatus {
        let op = Op::Status {
            tool: self.tool.clone(),
        };
        match self.call(op, &[], None) {
            Ok((s, _)) => s,
            Err(e) => PoolStatus::unknown(&self.tool, e.to_string()),
        }
    }

    /// The metrics; zeros when the service does not answer (its status says why).
    pub fn metrics(&self) -> MetricsSnapshot {
        let op = Op::Metrics {
            tool: self.tool.clone(),
        };
        self.call(op, &[], None)
            .map(|(m, _)| m)
            .unwrap_or_else(|_| MetricsSnapshot {
                tool: self.tool.clone(),
                ..Default::default()
            })
    }

    /// The Prometheus text; a comment saying why when the service does not answer.
    pub fn metrics_prometheus(&self) -> String {
        let op = Op::Prometheus {
            tool: self.tool.clone(),
        };
        match self.call::<()>(op, &[], None) {
            Ok((_, text)) => crate::util::lossy(text),
            Err(e) => format!("# {}\n", e.to_string().replace('\n', " ")),
        }
    }

    pub fn restart(&self, index: usize) -> Result<()> {
        let op = Op::Restart {
            tool: self.tool.clone(),
            index,
        };
        self.call::<()>(op, &[], None).map(drop)
    }

    pub fn resize(&self, count: usize) -> Result<()> {
        let op = Op::Resize {
            tool: self.tool.clone(),
            count,
        };
        self.call::<()>(op, &[], None).map(drop)
    }

    pub fn reload(&self, spec: ToolSpec) -> Result<()> {
        let op = Op::Reload {
            tool: self.tool.clone(),
            spec: Box::new(spec),
        };
        self.call::<()>(op, &[], None).map(drop)
    }

    /// End this handle: the calls waiting on it wake and fail with [`Error::ShutDown`]
    /// (their connections close, so the service cancels them as for a client that left),
    /// and so do later calls; the service's pool runs on for its other clients.
    pub fn shutdown(&self) {
        let busy = self.busy.lock();
        self.closed.store(true, SeqCst);
        for fd in busy.iter() {
            // SAFETY: each fd is a connection a call holds open until it has taken its fd
            // out of `busy`, which needs this lock; shutdown(2) only wakes its reader.
            unsafe { libc::shutdown(*fd, libc::SHUT_RDWR) };
        }
    }

    pub fn is_shut_down(&self) -> bool {
        self.closed.load(SeqCst)
    }
}

/// A wait's timeout in milliseconds, as the wire carries it (rounded up: a timeout under
/// a millisecond still waits).
pub(crate) fn ms(wait: &Wait) -> u64 {
    wait.timeout()
        .as_micros()
        .div_ceil(1000)
        .min(u64::MAX as u128) as u64
}
