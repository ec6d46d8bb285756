//! The completion queue: requests submitted with a tag complete once each, with their own
//! reply, through the eventfd; cancel by tag; dropping the queue cancels what is pending
//! and leaves no thread behind.

mod common;

use common::{private, tool};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use toolpool::{Completion, Completions, Error};

const T: Duration = Duration::from_secs(10);

/// The tests of this file run one at a time: the drop test counts the queue threads of the
/// whole process.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wait on the queue's fd (as an event loop would) and take completions until `n` came.
fn take(q: &Completions, n: usize) -> Vec<Completion> {
    let mut got = Vec::new();
    let end = Instant::now() + T;
    while got.len() < n {
        assert!(
            Instant::now() < end,
            "only {} of {n} completions",
            got.len()
        );
        let mut p = libc::pollfd {
            fd: q.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, 1000) };
        while let Some(c) = q.next() {
            got.push(c);
        }
    }
    got
}

/// Threads of completion queues alive in this process.
fn queue_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("toolpool-cq-"))
        .count()
}

fn readable(fd: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, 0) == 1 }
}

#[test]
fn many_requests_complete_once_each_with_their_own_reply() {
    let _serial = serial();
    let pool = Arc::new(private(tool(3, &[])));
    let q = Completions::new(8).unwrap();
    let n = 500u64;
    for tag in 0..n {
        q.request(Arc::clone(&pool), tag, &format!("r{tag}"), T)
            .unwrap();
    }
    let got = take(&q, n as usize);
    let mut seen = HashMap::new();
    for c in got {
        let r = c.result.unwrap();
        assert_eq!(
            r.text,
            format!("r{}", c.tag),
            "a reply reached the wrong tag"
        );
        assert!(seen.insert(c.tag, ()).is_none(), "tag {} twice", c.tag);
    }
    assert_eq!(seen.len(), n as usize);
    assert!(!readable(q.fd()), "fd readable with nothing to take");
    assert!(q.next().is_none());
    assert_eq!(q.pending(), 0);
    // A sticky request reports its instance.
    q.request_sticky(Arc::clone(&pool), 7, "k", "sticky", T)
        .unwrap();
    let c = take(&q, 1).pop().unwrap();
    let r = c.result.unwrap();
    assert_eq!((c.tag, r.text.as_str()), (7, "sticky"));
    assert!(r.instance.is_some_and(|i| i < 3));
}

#[test]
fn a_duplicate_pending_tag_is_refused() {
    let _serial = serial();
    let pool = Arc::new(private(tool(1, &[])));
    let q = Completions::new(1).unwrap();
    q.request(Arc::clone(&pool), 1, "delay:300:a", T).unwrap();
    match q.request(Arc::clone(&pool), 1, "b", T) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("tag 1"), "{m}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    let c = take(&q, 1).pop().unwrap();
    assert_eq!(c.result.unwrap().text, "a");
    // Once completed, the tag may be used again.
    q.request(Arc::clone(&pool), 1, "c", T).unwrap();
    assert_eq!(take(&q, 1).pop().unwrap().result.unwrap().text, "c");
}

#[test]
fn cancel_by_tag_stops_a_running_and_a_queued_request_and_the_pool_goes_on() {
    let _serial = serial();
    let pool = Arc::new(private(tool(1, &[])));
    let q = Completions::new(1).unwrap();
    q.request(Arc::clone(&pool), 1, "delay:5000:late", T)
        .unwrap();
    q.request(Arc::clone(&pool), 2, "queued", T).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    assert!(q.cancel(2));
    assert!(q.cancel(1));
    let got = take(&q, 2);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    for c in got {
        assert!(matches!(c.result, Err(Error::Cancelled(_))), "{c:?}");
    }
    assert!(!q.cancel(1), "a completed tag is not pending");
    q.request(Arc::clone(&pool), 3, "nonce-3", T).unwrap();
    assert_eq!(take(&q, 1).pop().unwrap().result.unwrap().text, "nonce-3");
}

#[test]
fn dropping_the_queue_cancels_pending_requests_and_joins_its_threads() {
    let _serial = serial();
    let pool = Arc::new(private(tool(2, &[])));
    let q = Completions::new(4).unwrap();
    for tag in 0..6 {
        q.request(Arc::clone(&pool), tag, "delay:5000:late", T)
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(queue_threads(), 4);
    let t0 = Instant::now();
    drop(q);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(queue_threads(), 0);
    assert_eq!(pool.request("after", T).unwrap().text, "after");
}
