//! Requests and routing against real tools: the Python JSON-RPC daemon and the test tool.

mod common;
use common::*;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use toolpool::{
    Error, MapResult, Oneshot, OneshotInput, Pool, Pools, Protocol, Registry, Routing, ServedBy,
};

fn nonce_storm(
    pool: Arc<Pool>,
    payload: impl Fn(usize) -> String + Send + Sync + 'static,
    check: impl Fn(usize, &str) + Send + Sync + 'static,
) {
    let payload = Arc::new(payload);
    let check = Arc::new(check);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (pool, payload, check) =
                (Arc::clone(&pool), Arc::clone(&payload), Arc::clone(&check));
            std::thread::spawn(move || {
                for k in 0..25 {
                    let n = t * 1000 + k;
                    let r = pool.request(&payload(n), Duration::from_secs(20)).unwrap();
                    assert_eq!(r.served_by, ServedBy::Pool);
                    check(n, &r.text);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let m = pool.metrics();
    assert_eq!(m.requests_ok, 200);
    let used = m.instances.iter().filter(|i| i.requests_ok > 0).count();
    assert_eq!(used, 3, "all three instances served");
}

#[test]
fn jsonrpc_200_requests_from_8_threads_no_cross_talk() {
    for in_flight in [1, 4] {
        let mut spec = rpc(3);
        spec.max_in_flight = in_flight;
        let pool = Arc::new(private(spec));
        nonce_storm(
            Arc::clone(&pool),
            |n| format!(r#"{{"method":"nonce","params":{{"nonce":"n{n}"}}}}"#),
            |n, text| {
                let v: serde_json::Value = serde_json::from_str(text).unwrap();
                assert_eq!(v["nonce"], format!("n{n}"));
            },
        );
    }
}

#[test]
fn lines_200_requests_from_8_threads_no_cross_talk() {
    let pool = Arc::new(private(tool(3, &[])));
    nonce_storm(
        pool,
        |n| format!("delay:{}:nonce {n}", n % 3),
        |n, text| assert_eq!(text, format!("nonce {n}")),
    );
}

#[test]
fn after_a_timeout_the_late_reply_never_reaches_the_next_caller() {
    // lines: the instance is recycled.
    let pool = private(tool(1, &[]));
    let old = pool.status().instances[0].pid;
    let e = pool
        .request("delay:400:LATE", Duration::from_millis(100))
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    for k in 0..50 {
        assert_eq!(
            pool.request(&format!("r{k}"), T).unwrap().text,
            format!("r{k}")
        );
    }
    assert_ne!(pool.status().instances[0].pid, old, "recycled");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(pool.request("last", T).unwrap().text, "last");

    // marker framing: recycled too.
    let mut spec = tool(1, &[]);
    spec.protocol = Protocol::Marker("END".into());
    let pool = private(spec);
    assert_eq!(pool.request("multi:3:x", T).unwrap().text, "x 0\nx 1\nx 2");
    assert!(pool
        .request("delay:300:slow", Duration::from_millis(50))
        .unwrap_err()
        .is_timeout());
    for k in 0..20 {
        assert_eq!(
            pool.request(&format!("multi:1:m{k}"), T).unwrap().text,
            format!("m{k} 0")
        );
    }

    // jsonrpc: the late reply is dropped and counted; the instance stays.
    let pool = private(rpc(1));
    let pid = pool.status().instances[0].pid;
    let e = pool
        .request(
            r#"{"method":"sleep","params":{"ms":300,"value":"late"}}"#,
            Duration::from_millis(50),
        )
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    for k in 0..50 {
        let r = pool
            .request(&format!(r#"{{"method":"echo","params":[{k}]}}"#), T)
            .unwrap();
        assert_eq!(r.text, format!("[{k}]"));
    }
    assert!(eventually(T, || pool.metrics().late_replies_dropped == 1));
    assert_eq!(pool.status().instances[0].pid, pid);
    let m = pool.metrics();
    assert_eq!((m.requests_ok, m.requests_timeout), (50, 1));
}

#[test]
fn random_kills_during_load_every_request_accounted_for() {
    let mut spec = tool(3, &[]);
    spec.restart.policy = toolpool::RestartPolicy::Always;
    spec.restart.backoff_initial_ms = 10;
    spec.restart.backoff_max_ms = 100; // many kills: keep the backoff short
    spec.restart.max_restarts = 1000;
    let pool = Arc::new(private(spec));
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let (pool, stop) = (Arc::clone(&pool), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut kills = 0;
            let mut k = 0usize;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(30));
                k = k.wrapping_mul(31).wrapping_add(7);
                if let Some(pid) = pool.status().instances[k % 3].pid {
                    // SAFETY: sending a signal to a pid; no memory is involved.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    kills += 1;
                }
            }
            kills
        })
    };
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let (pool, ok, failed) = (Arc::clone(&pool), Arc::clone(&ok), Arc::clone(&failed));
            std::thread::spawn(move || {
                for k in 0..50 {
                    let n = format!("t{t}k{k}");
                    match pool.request(&format!("delay:2:{n}"), Duration::from_secs(5)) {
                        Ok(r) => {
                            assert_eq!(r.text, n, "a reply reached the wrong caller");
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(
                            Error::InstanceDead(_)
                            | Error::Timeout { .. }
                            | Error::Unavailable { .. },
                        ) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("unexpected outcome {e}"),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let kills = killer.join().unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(ok + failed, 400);
    assert!(
        kills > 3 && ok > 100,
        "kills {kills} ok {ok} failed {failed}"
    );
    let m = pool.metrics();
    assert_eq!(m.requests_ok + m.requests_error + m.requests_timeout, 400);
    assert_eq!(m.requests_ok as usize, ok);
    assert!(
        eventually(T, || pool.health().ready == 3),
        "{}",
        serde_json::to_string_pretty(&pool.status()).unwrap()
    );
}

#[test]
fn sticky_keys_stay_on_one_instance_and_move_when_it_dies() {
    let mut spec = rpc(3);
    spec.routing = Routing::Sticky;
    let pool = private(spec);
    let pid_of = |key: &str| {
        let r = pool.request_sticky(key, r#"{"method":"pid"}"#, T).unwrap();
        (r.text.parse::<i32>().unwrap(), r.instance.unwrap(), r.moved)
    };
    let (a, ia, _) = pid_of("alice");
    let (b, _, _) = pid_of("bob");
    for _ in 0..10 {
        assert_eq!(pid_of("alice").0, a);
        assert_eq!(pid_of("bob").0, b);
        pool.request(r#"{"method":"ping"}"#, T).unwrap(); // unkeyed traffic in between
    }
    pool.request_sticky("alice", r#"{"method":"crash"}"#, T)
        .unwrap_err();
    assert!(eventually(T, || pool.health().dead == 1));
    let (a2, ia2, moved) = pid_of("alice");
    assert!(moved, "the caller is told the key moved");
    assert_ne!(a2, a);
    assert_ne!(ia2, ia, "moved to a live instance");
    let (a3, _, moved) = pid_of("alice");
    assert_eq!((a3, moved), (a2, false));
}

#[test]
fn a_lease_keeps_a_conversation_on_one_instance() {
    let pool = private(tool(2, &[]));
    let lease = pool.lease(T).unwrap();
    lease.send("pid").unwrap();
    let pid: i32 = lease.read_line(T).unwrap().parse().unwrap();
    assert_eq!(pid, lease.pid());
    for k in 0..5 {
        assert_eq!(
            lease.request(&format!("step {k}"), T).unwrap(),
            format!("step {k}")
        );
    }
    // Routed work avoids the leased instance.
    for _ in 0..20 {
        let r = pool.request("x", T).unwrap();
        assert_ne!(r.instance, Some(lease.index()));
    }
    assert!(pool.status().instances[lease.index()].leased);
    // The other instance leased too: a third lease waits, then times out with its error.
    let other = pool.lease(T).unwrap();
    let t = Instant::now();
    let e = pool.lease(Duration::from_millis(150)).unwrap_err();
    assert!(
        matches!(&e, Error::Timeout { what, .. } if what.contains("to lease")),
        "{e}"
    );
    assert!(t.elapsed() >= Duration::from_millis(150));
    drop(other);
    let again = pool.lease(T).unwrap();
    assert_ne!(again.index(), lease.index());
    drop(again);
    drop(lease);
    assert!(pool.status().instances.iter().all(|s| !s.leased));
}

#[test]
fn read_any_returns_whichever_has_output_first() {
    let pool = private(tool(3, &[]));
    pool.send(0, "delay:400:slow").unwrap();
    pool.send(1, "delay:10:fast").unwrap();
    pool.send(2, "delay:200:middle").unwrap();
    let got: Vec<(usize, String)> = (0..3).map(|_| pool.read_any(T).unwrap()).collect();
    assert_eq!(
        got,
        [(1, "fast".into()), (2, "middle".into()), (0, "slow".into())]
    );
    let t = Instant::now();
    assert!(pool
        .read_any(Duration::from_millis(100))
        .unwrap_err()
        .is_timeout());
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    // Routed sends go round robin and say where.
    let idx: Vec<usize> = (0..3)
        .map(|k| pool.send_routed(&format!("r{k}")).unwrap())
        .collect();
    let mut sorted = idx.clone();
    sorted.sort();
    assert_eq!(sorted, [0, 1, 2]);
    let mut seen: Vec<(usize, String)> = (0..3).map(|_| pool.read_any(T).unwrap()).collect();
    seen.sort();
    for (i, line) in seen {
        let k = idx.iter().position(|&x| x == i).unwrap();
        assert_eq!(line, format!("r{k}"));
    }
}

#[test]
fn map_keeps_input_order_with_a_result_each() {
    let pool = private(tool(3, &[]));
    let payloads: Vec<String> = (0..30)
        .map(|k| {
            if k == 7 {
                "two\nlines".to_string()
            } else {
                format!("delay:{}:item {k}", (30 - k) * 2)
            }
        })
        .collect();
    let results = pool.map(&payloads, T);
    assert_eq!(results.len(), 30);
    for (k, r) in results.iter().enumerate() {
        if k == 7 {
            assert!(matches!(r, Err(Error::InvalidArgument(_))));
        } else {
            assert_eq!(r.as_ref().unwrap().text, format!("item {k}"));
        }
    }
    let used: HashSet<_> = results
        .iter()
        .filter_map(|r| r.as_ref().ok()?.instance)
        .collect();
    assert_eq!(used.len(), 3);
}

#[test]
fn map_results_as_json_and_on_a_shut_down_pool() {
    let pool = private(tool(1, &[]));
    let results: Vec<MapResult> = pool
        .map(&["a", "two\nlines"], T)
        .into_iter()
        .map(MapResult::from)
        .collect();
    assert_eq!(
        serde_json::to_string(&results).unwrap(),
        format!(
            r#"[{{"ok":true,"text":"a","instance":0,"served_by":"pool"}},{{"ok":false,"code":1,"error":{}}}]"#,
            serde_json::to_string(&pool.map(&["x\ny"], T)[0].as_ref().unwrap_err().to_string())
                .unwrap()
        )
    );
    // The same in every language: each item is its own ShutDown error.
    pool.shutdown(T);
    let results = pool.map(&["a", "b"], T);
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|r| matches!(r, Err(Error::ShutDown(_)))));
    assert!(matches!(
        MapResult::from(pool.map(&["a"], T).remove(0)),
        MapResult::Err {
            ok: false,
            code: 7,
            ..
        }
    ));
}

#[test]
fn jsonrpc_errors_notifications_and_garbage() {
    let pool = private(rpc(1));
    match pool.request(
        r#"{"method":"fail","params":{"code":-32001,"message":"no such file"}}"#,
        T,
    ) {
        Err(Error::Tool {
            code,
            message,
            data,
        }) => {
            assert_eq!((code, message.as_str()), (-32001, "no such file"));
            assert!(data.unwrap().contains("no such file"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        pool.request(r#"{"method":"nope"}"#, T),
        Err(Error::Tool { code: -32601, .. })
    ));
    // Notifications are kept for the caller to read.
    assert_eq!(
        pool.request(r#"{"method":"notify","params":{"text":"hi"}}"#, T)
            .unwrap()
            .text,
        r#""notified""#
    );
    let note: serde_json::Value = serde_json::from_str(&pool.read_line(0, T).unwrap()).unwrap();
    assert_eq!(note["method"], "log");
    // Lines that are not JSON-RPC are counted and kept; they never satisfy a request.
    assert_eq!(
        pool.request(r#"{"method":"garbage"}"#, T).unwrap().text,
        r#""after garbage""#
    );
    assert_eq!(pool.metrics().protocol_errors, 2);
    let tail = &pool.status().instances[0].protocol_errors_tail;
    assert_has_line(tail, "this is not json");
    // Bad payloads are the caller's error, and the instance is fine after them.
    for bad in ["not json", r#"{"params":[]}"#, "[1,2]"] {
        assert!(
            matches!(pool.request(bad, T), Err(Error::InvalidArgument(_))),
            "{bad}"
        );
    }
    assert_eq!(
        pool.request(r#"{"method":"add","params":[2,3]}"#, T)
            .unwrap()
            .text,
        "5"
    );
    // A death mid-request is its own outcome, with the exit status and stderr.
    match pool.request(r#"{"method":"crash","params":{"code":3}}"#, T) {
        Err(Error::InstanceDead(d)) => {
            assert_eq!(d.exit, Some(toolpool::ExitInfo::Code(3)));
            assert_has_line(&d.stderr_tail, "crash requested");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        pool.request(r#"{"method":"ping"}"#, T),
        Err(Error::Unavailable { .. })
    ));
}

#[test]
fn a_full_wait_queue_fails_at_once_with_saturated() {
    let mut spec = tool(1, &[]);
    spec.limits.max_waiting = 2;
    let pool = Arc::new(private(spec));
    let busy = {
        let p = Arc::clone(&pool);
        std::thread::spawn(move || p.request("delay:2000:busy", T).unwrap().text)
    };
    assert!(eventually(T, || pool.status().instances[0].in_flight == 1));
    let waiters: Vec<_> = (0..2)
        .map(|k| {
            let p = Arc::clone(&pool);
            std::thread::spawn(move || p.request(&format!("w{k}"), T).unwrap().text)
        })
        .collect();
    assert!(eventually(T, || pool.status().waiting == 2));
    let t = Instant::now();
    let e = pool.request("one too many", T).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Saturated {
                waiting: 2,
                max_waiting: 2,
                ..
            }
        ),
        "{e}"
    );
    // At once: well before the busy request (2 s) ends (slack for a loaded host).
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(busy.join().unwrap(), "busy");
    for (k, w) in waiters.into_iter().enumerate() {
        assert_eq!(w.join().unwrap(), format!("w{k}"));
    }
    assert!(pool.status().waited_for_instance >= 2);
    // Waiting past the deadline is a timeout naming what was awaited.
    let p = Arc::clone(&pool);
    let busy = std::thread::spawn(move || p.request("delay:500:busy", T));
    assert!(eventually(T, || pool.status().instances[0].in_flight == 1));
    let e = pool.request("x", Duration::from_millis(100)).unwrap_err();
    assert!(
        matches!(&e, Error::Timeout { what, .. } if what.contains("free instance")),
        "{e}"
    );
    busy.join().unwrap().unwrap();
}

#[test]
fn least_busy_avoids_the_busy_instance() {
    let mut spec = tool(2, &[]);
    spec.routing = Routing::LeastBusy;
    let pool = Arc::new(private(spec));
    let (slow, busy) = busy_elsewhere(&pool, 2000);
    for _ in 0..10 {
        assert_ne!(pool.request("quick", T).unwrap().instance, Some(busy));
    }
    assert_eq!(slow.join().unwrap(), busy);
}

/// A slow request (`ms`) on another thread, in flight on the instance returned beside it;
/// the handle gives the instance that served it.
fn busy_elsewhere(pool: &Arc<Pool>, ms: u64) -> (std::thread::JoinHandle<usize>, usize) {
    let p = Arc::clone(pool);
    let slow = std::thread::spawn(move || {
        let r = p.request(&format!("delay:{ms}:slow"), T).unwrap();
        r.instance.unwrap()
    });
    assert!(eventually(T, || pool.metrics().in_flight == 1));
    let busy = pool
        .status()
        .instances
        .iter()
        .position(|s| s.in_flight == 1)
        .unwrap();
    (slow, busy)
}

#[test]
fn least_busy_gives_a_thread_its_last_instance_among_ties() {
    let mut spec = tool(4, &[]);
    spec.routing = Routing::LeastBusy;
    let pool = Arc::new(private(spec));
    // Every instance idle: each thread keeps to the instance it took first.
    let per_thread: Vec<HashSet<Option<usize>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|t| {
                let pool = &pool;
                s.spawn(move || {
                    (0..20)
                        .map(|k| {
                            let r = pool.request(&format!("t{t} k{k}"), T).unwrap();
                            assert_eq!(r.text, format!("t{t} k{k}"), "no cross-talk");
                            r.instance
                        })
                        .collect::<HashSet<_>>()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for used in &per_thread {
        assert_eq!(used.len(), 1, "one instance per thread: {per_thread:?}");
    }
    // Its last instance busy, a thread takes another (least busy before the hint).
    let mine = pool.request("first", T).unwrap().instance.unwrap();
    // The other thread's first pick: the first idle one in turn, which may be `mine`.
    let (slow, busy) = busy_elsewhere(&pool, 1500);
    let now = pool.request("again", T).unwrap().instance.unwrap();
    assert_ne!(now, busy, "never the busy one");
    if busy != mine {
        assert_eq!(now, mine, "the last one while it is idle");
    }
    assert_eq!(slow.join().unwrap(), busy);
}

#[test]
fn fallback_serves_when_disabled_missing_or_dying() {
    let cat_oneshot = Some(Oneshot {
        command: vec!["cat".into()],
        input: OneshotInput::Stdin,
    });
    // Disabled by option.
    let mut spec = tool(2, &[]);
    spec.oneshot = cat_oneshot.clone();
    spec.disabled = true;
    let pool = private(spec);
    let r = pool.request("via oneshot", T).unwrap();
    assert_eq!(
        (r.text.as_str(), r.served_by, r.instance),
        ("via oneshot", ServedBy::Oneshot, None)
    );
    assert_eq!(pool.health().alive, 0);
    assert_eq!(pool.metrics().requests_fallback, 1);

    // The binary is missing: the pool cannot start, the one-shot path serves (fallback on
    // spawn failures).
    let spec = toolpool::ToolSpec {
        oneshot: Some(Oneshot {
            command: vec!["echo".into()],
            input: OneshotInput::Arg,
        }),
        fallback: toolpool::Fallback {
            on: vec![toolpool::Cause::SpawnFailed, toolpool::Cause::Unavailable],
            attempt_ms: None,
        },
        count: 2,
        ..toolpool::ToolSpec::new(["/no/such/binary"])
    };
    let pool = private(spec);
    let r = pool.request("as an argument", T).unwrap();
    assert_eq!(
        (r.text.as_str(), r.served_by),
        ("as an argument", ServedBy::Oneshot)
    );
    assert!(pool.status().instances[0]
        .failed_reason
        .as_ref()
        .unwrap()
        .contains("/no/such/binary"));

    // fallback: true and an instance dies mid-request.
    let mut spec = tool(1, &[]);
    spec.oneshot = cat_oneshot;
    spec.fallback = toolpool::Fallback::all();
    let pool = private(spec);
    assert_eq!(pool.request("normal", T).unwrap().served_by, ServedBy::Pool);
    let r = pool.request("crash:1", T).unwrap();
    assert_eq!(
        (r.text.as_str(), r.served_by),
        ("crash:1", ServedBy::Oneshot)
    );
    let m = pool.metrics();
    assert_eq!((m.requests_ok, m.requests_fallback), (2, 1));

    // A one-shot run that fails is a tool error with its exit code and stderr.
    let spec = toolpool::ToolSpec {
        oneshot: Some(Oneshot {
            command: vec!["sh".into(), "-c".into(), "echo oops >&2; exit 4".into()],
            input: OneshotInput::Stdin,
        }),
        disabled: true,
        ..toolpool::ToolSpec::new(["cat"])
    };
    let pool = private(spec);
    match pool.request("x", T) {
        Err(Error::Tool {
            code: 4, message, ..
        }) => assert!(message.contains("oops"), "{message}"),
        other => panic!("{other:?}"),
    }
    // And a hanging one is killed at the timeout.
    let spec = toolpool::ToolSpec {
        oneshot: Some(Oneshot {
            command: vec!["sleep".into(), "10".into()],
            input: OneshotInput::Stdin,
        }),
        disabled: true,
        ..toolpool::ToolSpec::new(["cat"])
    };
    let pool = private(spec);
    let t = Instant::now();
    assert!(pool
        .request("x", Duration::from_millis(200))
        .unwrap_err()
        .is_timeout());
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(no_lasting_zombies());
    // Without a oneshot, a disabled pool says so.
    let mut spec = tool(1, &[]);
    spec.disabled = true;
    assert!(
        matches!(private(spec).request("x", T), Err(Error::Unavailable { reason, .. }) if reason.contains("disabled"))
    );
}

#[test]
fn pools_map_mixed_jobs_grouped_by_tool() {
    let reg = Registry::from_json(&format!(
        r#"{{"tools": {{
            "echo": {{"command": ["{}"], "count": 2}},
            "bc": {{"command": ["bc", "-q"], "count": 2}}
        }}}}"#,
        testtool()
    ))
    .unwrap();
    let pools = Pools::new(reg).unwrap();
    let jobs = vec![
        ("bc", "1+1"),
        ("echo", "hello"),
        ("bc", "6*7"),
        ("nope", "x"),
        ("echo", "world"),
        ("nope", "y"),
        ("bc", "2^10"),
    ];
    let results = pools.map(&jobs, T);
    let texts: Vec<String> = results
        .iter()
        .map(|r| {
            r.as_ref()
                .map(|r| r.text.clone())
                .unwrap_or_else(|e| format!("error {}", e.code()))
        })
        .collect();
    assert_eq!(
        texts,
        ["2", "hello", "42", "error 2", "world", "error 2", "1024"]
    );
    // Created on first use, and reused.
    let a = pools.pool("bc").unwrap();
    let b = pools.pool("bc").unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    pools.shutdown(Some(Duration::from_millis(200)));
    assert!(a.is_shut_down());
}

#[test]
fn metrics_count_outcomes_and_latency() {
    let pool = private(tool(2, &[]));
    for k in 0..20 {
        pool.request(&format!("m{k}"), T).unwrap();
    }
    pool.request("delay:300:x", Duration::from_millis(50))
        .unwrap_err();
    pool.request("bad\nline", T).unwrap_err();
    let m = pool.metrics();
    assert_eq!(
        (m.requests_ok, m.requests_timeout, m.requests_error),
        (20, 1, 1)
    );
    assert_eq!(m.latency.count, 20);
    let (p50, p99) = (m.latency.p50_us.unwrap(), m.latency.p99_us.unwrap());
    assert!(p50 > 0 && p50 <= p99 && p99 < 1_000_000, "{p50} {p99}");
    assert_eq!(m.instances.iter().map(|i| i.requests_ok).sum::<u64>(), 20);
    assert_eq!(m.lines_in, 21, "the bad line is never sent");
    let json = serde_json::to_value(&m).unwrap();
    assert!(json["latency"]["p90_us"].is_u64());
}

#[test]
fn notifications_beyond_the_queue_drop_the_oldest_and_replies_keep_flowing() {
    let mut spec = rpc(1);
    spec.limits.queue_lines = 4;
    let pool = private(spec);
    for k in 0..10 {
        let r = pool
            .request(
                &format!(r#"{{"method":"notify","params":{{"text":"n{k}"}}}}"#),
                T,
            )
            .unwrap();
        assert_eq!(r.text, r#""notified""#);
    }
    let kept: Vec<String> = (0..4)
        .map(|_| {
            let v: serde_json::Value =
                serde_json::from_str(&pool.read_line(0, T).unwrap()).unwrap();
            v["params"]["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(kept, ["n6", "n7", "n8", "n9"]);
    assert_eq!(pool.status().instances[0].stdout_dropped, 6);
}
