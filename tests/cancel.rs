//! Cancellation: every blocking call stops on its token, within a generous
//! bound of `cancel()`, ends like a timeout, and the next caller gets its own reply.
//! Also the over-long reply line in `lines` framing (no piece reaches another caller).

mod common;

use common::{private, rpc, tool, T};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use toolpool::{CancelToken, Error, Limiter, Pool, PoolOptions, Protocol, ToolSpec, Wait};

/// Upper bound for "returned soon after cancel()" (the promise is 10 ms; this leaves room
/// for a loaded machine).
const SOON: Duration = Duration::from_millis(500);

/// Cancel `token` after `after` on another thread; join returns when it was cancelled.
fn cancel_later(token: &CancelToken, after: Duration) -> thread::JoinHandle<Instant> {
    let t = token.clone();
    thread::spawn(move || {
        thread::sleep(after);
        let at = Instant::now();
        t.cancel();
        at
    })
}

fn assert_cancelled_soon<R: std::fmt::Debug>(
    r: toolpool::Result<R>,
    canceller: thread::JoinHandle<Instant>,
) {
    let done = Instant::now();
    let at = canceller.join().unwrap();
    match r {
        Err(Error::Cancelled(what)) => assert!(!what.is_empty()),
        other => panic!("expected Cancelled, got {other:?}"),
    }
    let latency = done.saturating_duration_since(at);
    eprintln!("cancel latency: {latency:?}");
    assert!(latency < SOON, "cancel took {latency:?}");
}

/// The next request gets exactly its own reply.
fn nonce_check(pool: &Pool, nonce: &str) {
    let r = pool.request(nonce, T).expect("next request");
    assert_eq!(r.text, nonce);
}

fn until_counter(pool: &Pool, what: impl Fn(&Pool) -> bool) {
    let end = Instant::now() + T;
    while !what(pool) {
        assert!(Instant::now() < end, "condition not reached in time");
        thread::sleep(Duration::from_millis(10));
    }
}

fn idle(pool: &Pool) -> bool {
    let s = pool.status();
    s.waiting == 0 && s.instances.iter().all(|i| i.in_flight == 0)
}

#[test]
fn a_request_on_a_slow_tool_is_cancelled_and_the_next_gets_its_own_reply() {
    let pool = private(tool(1, &[]));
    let token = CancelToken::new();
    let c = cancel_later(&token, Duration::from_millis(100));
    let r = pool.request("delay:3000:late-reply", (Duration::from_secs(30), &token));
    assert_cancelled_soon(r, c);
    // The late reply would arrive at 3 s; the instance was recycled, so it never does.
    nonce_check(&pool, "nonce-lines-1");
    thread::sleep(Duration::from_millis(100));
    nonce_check(&pool, "nonce-lines-2");
    assert!(idle(&pool));
}

#[test]
fn a_token_cancelled_before_the_call_returns_at_once_everywhere() {
    let pool = private(tool(1, &[]));
    let token = CancelToken::new();
    token.cancel();
    let w = Wait::new(Duration::from_secs(30)).with_cancel(&token);
    let t0 = Instant::now();
    assert!(pool.request("x", &w).unwrap_err().is_cancelled());
    assert!(pool
        .request_sticky("k", "x", &w)
        .unwrap_err()
        .is_cancelled());
    assert!(pool.read_line(0, &w).unwrap_err().is_cancelled());
    assert!(pool.read_line_bytes(0, &w).unwrap_err().is_cancelled());
    assert!(pool.read_any(&w).unwrap_err().is_cancelled());
    assert!(pool.lease(&w).unwrap_err().is_cancelled());
    let all = pool.map(&["a", "b", "c"], &w);
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|r| matches!(r, Err(Error::Cancelled(_)))));
    let lease = pool.lease(T).unwrap();
    assert!(lease.request("x", &w).unwrap_err().is_cancelled());
    assert!(lease.read_line(&w).unwrap_err().is_cancelled());
    drop(lease);
    assert!(t0.elapsed() < SOON, "{:?}", t0.elapsed());
    assert_eq!(
        Error::Cancelled("x".into()).status(),
        toolpool::ToolpoolStatus::TOOLPOOL_CANCELLED
    );
    assert_eq!(Error::Cancelled("x".into()).code(), 17);
    // Nothing was sent: the instance was not recycled.
    let pid = pool.status().instances[0].pid;
    nonce_check(&pool, "nonce-pre");
    assert_eq!(pool.status().instances[0].pid, pid);
}

#[test]
fn read_line_read_any_and_lease_calls_are_cancelled_while_waiting() {
    let pool = private(tool(2, &[]));
    let token = CancelToken::new();
    let c = cancel_later(&token, Duration::from_millis(100));
    assert_cancelled_soon(pool.read_line(0, (Duration::from_secs(30), &token)), c);

    let token = CancelToken::new();
    let c = cancel_later(&token, Duration::from_millis(100));
    assert_cancelled_soon(pool.read_any((Duration::from_secs(30), &token)), c);

    let lease = pool.lease(T).unwrap();
    let token = CancelToken::new();
    let c = cancel_later(&token, Duration::from_millis(100));
    assert_cancelled_soon(lease.read_line((Duration::from_secs(30), &token)), c);
    let token = CancelToken::new();
    let c = cancel_later(&token, Duration::from_millis(100));
    assert_cancelled_soon(
        lease.request("delay:3000:late", (Duration::from_secs(30), &token)),
        c,
    );
    // The leased incarnation was recycled: its late reply can reach nobody.
    assert!(lease.request("x", T).is_err());
    drop(lease);

    // Both instances leased: the wait for a lease is cancelled.
    let (a, b) = (pool.lease(T).unwrap(), pool.lease(T).unwrap());
    let token = CancelToken::new();
    let c = cancel_later(&token, Duration::from_millis(100));
    assert_cancelled_soon(pool.lease((Duration::from_secs(30), &token)), c);
    drop((a, b));
    until_counter(&pool, idle);
    nonce_check(&pool, "nonce-after-reads");
}

#[test]
fn many_waiting_callers_cancelled_at_once_leave_the_counters_at_zero() {
    let pool = Arc::new(private(tool(1, &[])));
    let token = CancelToken::new();
    let callers: Vec<_> = (0..20)
        .map(|k| {
            let (pool, token) = (Arc::clone(&pool), token.clone());
            thread::spawn(move || {
                pool.request(
                    &format!("delay:3000:late-{k}"),
                    (Duration::from_secs(30), &token),
                )
            })
        })
        .collect();
    // One in flight, the others waiting for the instance.
    until_counter(&pool, |p| p.status().waiting == 19);
    let at = Instant::now();
    token.cancel();
    for c in callers {
        assert!(c.join().unwrap().unwrap_err().is_cancelled());
    }
    let all = at.elapsed();
    eprintln!("20 callers cancelled in {all:?}");
    assert!(all < SOON * 2, "{all:?}");
    let s = pool.status();
    assert_eq!(s.waiting, 0);
    assert!(s.instances.iter().all(|i| i.in_flight == 0), "{s:?}");
    nonce_check(&pool, "nonce-many");
    let m = pool.metrics();
    assert!(m.requests_error >= 20, "{m:?}");
}

#[test]
fn jsonrpc_cancel_drops_the_late_reply_counts_it_and_notifies_the_tool() {
    let spec = ToolSpec {
        cancel_notification: Some("$/cancelRequest".into()),
        max_in_flight: 4,
        ..rpc(1)
    };
    let pool = private(spec);
    let pid = pool.status().instances[0].pid;
    let token = CancelToken::new();
    let c = cancel_later(&token, Duration::from_millis(100));
    let r = pool.request(
        r#"{"method":"sleep","params":{"ms":600,"value":"late"}}"#,
        (Duration::from_secs(30), &token),
    );
    assert_cancelled_soon(r, c);
    let r = pool
        .request(r#"{"method":"nonce","params":{"nonce":"n-rpc"}}"#, T)
        .unwrap();
    assert!(r.text.contains("\"n-rpc\""), "{}", r.text);
    // The tool was told (the id is the one the dispatcher gave the request).
    let told = pool.request(r#"{"method":"cancelled"}"#, T).unwrap();
    let ids: Vec<u64> = serde_json::from_str(&told.text).unwrap();
    assert_eq!(ids.len(), 1, "{}", told.text);
    // The late reply is dropped and counted, and the incarnation kept (no recycle).
    until_counter(&pool, |p| p.metrics().late_replies_dropped == 1);
    assert_eq!(pool.status().instances[0].pid, pid);
    assert!(idle(&pool));
}

#[test]
fn mcp_cancel_notification_uses_request_id() {
    let spec = ToolSpec {
        cancel_notification: Some("notifications/cancelled".into()),
        ..rpc(1)
    };
    let pool = private(spec);
    let r = pool.request(
        r#"{"method":"sleep","params":{"ms":300,"value":"late"}}"#,
        Duration::from_millis(50),
    );
    assert!(r.unwrap_err().is_timeout());
    let told = pool.request(r#"{"method":"cancelled"}"#, T).unwrap();
    let ids: Vec<u64> = serde_json::from_str(&told.text).unwrap();
    assert_eq!(
        ids.len(),
        1,
        "a timed-out request is announced too: {}",
        told.text
    );
}

#[test]
fn cancel_notification_needs_jsonrpc() {
    let spec = ToolSpec {
        cancel_notification: Some("$/cancelRequest".into()),
        ..tool(1, &[])
    };
    let e = spec.validate().unwrap_err().to_string();
    assert!(e.contains("cancel_notification"), "{e}");
}

#[test]
fn the_wait_for_a_start_is_cancelled_and_the_next_use_starts_again() {
    let spec = ToolSpec {
        lazy: true,
        startup: toolpool::Startup {
            ready_line: Some("READY".into()),
            timeout_ms: 20_000,
            ..Default::default()
        },
        ..tool(1, &["--start-delay-ms", "3000", "--ready", "READY"])
    };
    let pool = private(spec);
    let token = CancelToken::new();
    let c = cancel_later(&token, Duration::from_millis(150));
    assert_cancelled_soon(pool.request("x", (Duration::from_secs(30), &token)), c);
    assert!(idle(&pool));
    let r = pool
        .request("after-start", Duration::from_secs(20))
        .unwrap();
    assert_eq!(r.text, "after-start");
}

#[test]
fn the_wait_for_a_limit_slot_is_cancelled() {
    let limiter = Limiter::new(1);
    let opts = || PoolOptions {
        limiter: Some(Arc::clone(&limiter)),
        ..Default::default()
    };
    let holder = Pool::with_options(tool(1, &[]), opts()).unwrap();
    let lazy = Pool::with_options(
        ToolSpec {
            lazy: true,
            ..tool(1, &[])
        },
        opts(),
    )
    .unwrap();
    let token = CancelToken::new();
    let c = cancel_later(&token, Duration::from_millis(100));
    assert_cancelled_soon(lazy.request("x", (Duration::from_secs(30), &token)), c);
    assert_eq!(limiter.status().active_processes, 1);
    drop(holder);
    assert_eq!(lazy.request("now", T).unwrap().text, "now");
}

#[test]
fn map_with_a_token_fails_what_is_not_answered() {
    let pool = private(tool(2, &[]));
    let token = CancelToken::new();
    let c = cancel_later(&token, Duration::from_millis(150));
    let payloads = ["a", "delay:3000:b", "delay:3000:c", "d", "e", "f"];
    let t0 = Instant::now();
    let out = pool.map(&payloads, (Duration::from_secs(30), &token));
    c.join().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(out[0].as_ref().unwrap().text, "a");
    assert!(out[1].as_ref().unwrap_err().is_cancelled());
    assert!(out[2].as_ref().unwrap_err().is_cancelled());
    for r in &out[3..] {
        match r {
            Ok(r) => assert!(["d", "e", "f"].contains(&r.text.as_str())),
            Err(e) => assert!(e.is_cancelled(), "{e}"),
        }
    }
    until_counter(&pool, idle);
    nonce_check(&pool, "nonce-map");
}

/// The bug: a reply longer than `limits.max_line_bytes` was cut into pieces and the next
/// requests received the pieces as their replies.
#[test]
fn an_over_long_reply_line_fails_and_never_reaches_the_next_caller() {
    let pool = private(ToolSpec {
        id: "cat".into(),
        ..ToolSpec::new(["cat"])
    });
    let big = "y".repeat(3 << 20);
    let e = pool.request(&big, Duration::from_secs(20)).unwrap_err();
    match &e {
        Error::Protocol(m) => assert!(m.contains("limits.max_line_bytes"), "{m}"),
        other => panic!("expected a protocol error, got {other}"),
    }
    for k in 0..3 {
        nonce_check(&pool, &format!("nonce-after-long-{k}"));
    }
    // A line of exactly the limit is a whole line, not a piece.
    let pool = private(ToolSpec {
        id: "cat".into(),
        limits: toolpool::Limits {
            max_line_bytes: 16,
            ..Default::default()
        },
        ..ToolSpec::new(["cat"])
    });
    let exact = "z".repeat(16);
    assert_eq!(pool.request(&exact, T).unwrap().text, exact);
    assert!(pool.request(&"z".repeat(17), T).is_err());
    nonce_check(&pool, "nonce-16");
}

#[test]
fn marker_framing_joins_a_cut_line_back_together() {
    let pool = private(ToolSpec {
        protocol: Protocol::Marker("END".into()),
        limits: toolpool::Limits {
            max_line_bytes: 10,
            ..Default::default()
        },
        ..tool(1, &[])
    });
    let text = "abcdefghijklmnopqrstuvwxyz";
    let r = pool.request(&format!("multi:2:{text}"), T).unwrap();
    assert_eq!(r.text, format!("{text} 0\n{text} 1"));
}
