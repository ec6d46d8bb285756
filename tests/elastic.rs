//! Elastic sizing (`min_instances`), `resize` and the rolling `reload`, with
//! real processes of the test tool.

mod common;
use common::*;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use toolpool::{Error, Pool, Routing, ToolSpec};

fn elastic(count: usize, min: usize, args: &[&str]) -> ToolSpec {
    ToolSpec {
        min_instances: Some(min),
        ..tool(count, args)
    }
}

/// The pid of the process that answers a request now (`pid` command of the test tool).
fn pid_of_reply(pool: &Pool) -> (usize, String) {
    let r = pool.request("pid", T).unwrap();
    (r.instance.unwrap(), r.text)
}

#[test]
fn one_sequential_caller_uses_one_process() {
    // The bug the issue opens with: a lazy pool of 4 started all four, under either routing.
    for routing in [Routing::RoundRobin, Routing::LeastBusy] {
        for spec in [
            ToolSpec {
                lazy: true,
                routing,
                ..tool(4, &[])
            },
            ToolSpec {
                routing,
                ..elastic(4, 1, &[])
            },
            ToolSpec {
                routing,
                ..elastic(4, 0, &[])
            },
        ] {
            let pool = private(spec.clone());
            let mut pids = HashSet::new();
            for _ in 0..20 {
                pids.insert(pid_of_reply(&pool).1);
            }
            assert_eq!(pids.len(), 1, "{spec:?}: {pids:?}");
            let st = pool.status();
            assert_eq!(st.started, 1, "{spec:?}");
            assert_eq!(st.max_instances, 4);
        }
    }
}

#[test]
fn on_demand_pool_starts_nothing_until_used() {
    let pool = private(elastic(3, 0, &[]));
    let st = pool.status();
    assert_eq!((st.started, st.max_instances, st.min_instances), (0, 3, 0));
    assert!(pool.status().instances.iter().all(|i| i.pid.is_none()));
    assert_eq!(pool.request("hello", T).unwrap().text, "hello");
    assert_eq!(pool.status().started, 1);
    assert_eq!(pool.metrics().grow_events, 1);
}

#[test]
fn elastic_pool_starts_min_instances() {
    let pool = private(elastic(5, 2, &[]));
    let st = pool.status();
    assert_eq!((st.started, st.max_instances, st.min_instances), (2, 5, 2));
    assert_eq!(pool.len(), 5);
}

/// `n` callers each make one slow request at the same time.
fn concurrent_slow(pool: &Pool, n: usize, ms: u64) -> Vec<toolpool::Reply> {
    let barrier = Barrier::new(n);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|k| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    pool.request(&format!("delay:{ms}:r{k}"), Duration::from_secs(30))
                        .unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn concurrent_slow_callers_grow_the_pool_then_idle_shrinks_it() {
    let pool = private(ToolSpec {
        idle_timeout_ms: Some(300),
        ..elastic(4, 1, &[])
    });
    assert_eq!(pool.status().started, 1);
    let replies = concurrent_slow(&pool, 3, 1500);
    assert_eq!(replies.len(), 3);
    let used: HashSet<_> = replies.iter().map(|r| r.instance).collect();
    assert_eq!(used.len(), 3, "three callers, three instances: {used:?}");
    // Grown to 3 (it may have begun shrinking once they were idle).
    assert!(pool.metrics().grow_events >= 2);
    // The same count in the Prometheus text.
    let grows = pool.metrics().grow_events;
    let text = pool.metrics_prometheus();
    assert!(
        text.lines()
            .any(|l| l.starts_with("toolpool_grow_events_total{")
                && l.ends_with(&format!(" {grows}"))),
        "{text}"
    );
    // More callers than count: never more than count.
    let replies = concurrent_slow(&pool, 6, 800);
    assert!(replies.iter().all(|r| r.instance.unwrap() < 4));
    assert!(pool.status().started <= 4);
    // Idle past idle_timeout_ms: back down to min_instances, never below.
    assert!(
        eventually(Duration::from_secs(10), || pool.status().started == 1),
        "started {}",
        pool.status().started
    );
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(pool.status().started, 1);
    assert!(pool.metrics().shrink_events >= 2);
    assert_eq!(pool.request("still", T).unwrap().text, "still");
}

#[test]
fn waiting_caller_takes_whichever_frees_first() {
    // New processes take 3 s to start; the busy instance frees after 200 ms.
    let pool = private(ToolSpec {
        min_instances: Some(1),
        ..ready(2, &["--start-delay-ms", "3000"])
    });
    let busy = std::thread::scope(|s| {
        let h = s.spawn(|| pool.request("delay:200:first", T).unwrap());
        std::thread::sleep(Duration::from_millis(50));
        let t0 = Instant::now();
        let r = pool.request("second", Duration::from_secs(10)).unwrap();
        let took = t0.elapsed();
        assert_eq!(h.join().unwrap().text, "first");
        (r, took)
    });
    let (reply, took) = busy;
    assert_eq!(reply.text, "second");
    assert_eq!(reply.instance, Some(0), "the busy one freed first");
    assert!(took < Duration::from_millis(2500), "waited {took:?}");
    // The new one was started meanwhile and becomes ready.
    assert!(eventually(Duration::from_secs(10), || pool
        .status()
        .started
        == 2));
}

#[test]
fn a_start_that_fails_reports_why_when_nothing_else_can_serve() {
    let pool = private(ToolSpec {
        min_instances: Some(0),
        ..ToolSpec::new(["/nonexistent/toolpool-no-such-tool"])
    });
    let e = pool.request("x", T).unwrap_err();
    assert!(matches!(e, Error::Spawn(_)), "{e:?}");
}

#[test]
fn resize_grows_and_shrinks_with_index_space_0_to_count() {
    let pool = private(tool(2, &[]));
    pool.resize(4).unwrap();
    assert_eq!(pool.len(), 4);
    assert_eq!(pool.spec().count, 4);
    let st = pool.status();
    assert_eq!((st.started, st.max_instances), (4, 4));
    pool.send(3, "three").unwrap();
    assert_eq!(pool.read_line(3, T).unwrap(), "three");
    let gone = pids(&pool)[2..].to_vec();
    pool.resize(2).unwrap();
    assert_eq!(pool.len(), 2);
    assert_eq!(pool.status().instances.len(), 2);
    assert!(matches!(
        pool.send(3, "x"),
        Err(Error::IndexOutOfRange {
            index: 3,
            count: 2,
            ..
        })
    ));
    assert!(matches!(
        pool.read_line(2, T),
        Err(Error::IndexOutOfRange { .. })
    ));
    // Idle removed instances are stopped before resize returns.
    for pid in gone {
        assert!(!Seen::of(pid).alive(), "pid {pid} outlived its removal");
    }
    // Growing again reuses the indices.
    pool.resize(3).unwrap();
    pool.send(2, "back").unwrap();
    assert_eq!(pool.read_line(2, T).unwrap(), "back");
    assert_eq!(pool.resize(3).map(|()| pool.len()).unwrap(), 3);
}

#[test]
fn resize_rejects_bad_counts_and_a_shut_down_pool() {
    let pool = private(tool(1, &[]));
    for n in [0, toolpool::spec::MAX_COUNT + 1] {
        match pool.resize(n) {
            Err(Error::InvalidArgument(m)) => {
                assert!(m.contains(&format!("to {n}")) && m.contains("4096"), "{m}")
            }
            other => panic!("resize({n}): {other:?}"),
        }
    }
    assert_eq!(pool.len(), 1);
    pool.shutdown(Duration::from_millis(200));
    assert!(matches!(pool.resize(2), Err(Error::ShutDown(_))));
    assert!(matches!(pool.reload(tool(1, &[])), Err(Error::ShutDown(_))));
}

#[test]
fn growing_respects_the_process_limit() {
    let limiter = toolpool::Limiter::new(2);
    let pool = Pool::with_options(
        ToolSpec {
            startup: toolpool::Startup {
                timeout_ms: 300,
                ..Default::default()
            },
            ..tool(2, &[])
        },
        toolpool::PoolOptions {
            limiter: Some(Arc::clone(&limiter)),
            ..Default::default()
        },
    )
    .unwrap();
    let e = pool.resize(3).unwrap_err();
    assert!(matches!(e, Error::LimitReached { .. }), "{e:?}");
    assert_eq!(pool.len(), 2, "a failed grow leaves the size");
    assert_eq!(limiter.status().active_processes, 2);
    assert_eq!(pool.request("ok", T).unwrap().text, "ok");
}

/// Three threads make requests until `stop`; every reply must match its request.
/// Run `body` while three threads send numbered requests (`delay:MS:tT-K`) one after
/// another, each checking that every reply is its own and in order; then stop them and
/// return how many requests were answered. A failed request fails the test.
fn under_load(pool: &Pool, delay_ms: u32, body: impl FnOnce()) -> usize {
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|t| {
                let (stop, done) = (&stop, &done);
                s.spawn(move || {
                    let mut k = 0;
                    while !stop.load(Ordering::Relaxed) {
                        k += 1;
                        let r = pool
                            .request(
                                &format!("delay:{delay_ms}:t{t}-{k}"),
                                Duration::from_secs(30),
                            )
                            .unwrap_or_else(|e| panic!("request failed under load: {e}"));
                        assert_eq!(r.text, format!("t{t}-{k}"));
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        body();
        stop.store(true, Ordering::Relaxed);
        for h in hs {
            h.join().unwrap();
        }
    });
    done.load(Ordering::Relaxed)
}

#[test]
fn resize_up_and_down_under_load_fails_no_request() {
    let pool = private(tool(2, &[]));
    let done = under_load(&pool, 3, || {
        for n in [4, 1, 3, 2, 5, 1, 2] {
            std::thread::sleep(Duration::from_millis(150));
            pool.resize(n).unwrap();
            assert_eq!(pool.len(), n);
        }
        std::thread::sleep(Duration::from_millis(150));
    });
    assert!(done > 30);
    assert_eq!(pool.metrics().requests_error, 0);
    assert_eq!(pool.len(), 2);
    // Every removed process is gone once its last request ended.
    assert!(eventually(Duration::from_secs(5), || {
        pool.limiter().unwrap().status().active_processes == 2
    }));
}

#[test]
fn shrinking_a_leased_instance_waits_for_the_lease() {
    let pool = private(tool(3, &[]));
    // Lease the top instance (leases take the first free one in turn: hold 0 and 1 first).
    let l0 = pool.lease(T).unwrap();
    let l1 = pool.lease(T).unwrap();
    let top = pool.lease(T).unwrap();
    assert_eq!(top.index(), 2);
    drop((l0, l1));
    let pid = top.pid();
    pool.resize(2).unwrap();
    // The lease goes on working; the index is gone for everyone else.
    assert_eq!(top.request("still mine", T).unwrap(), "still mine");
    assert!(matches!(
        pool.send(2, "x"),
        Err(Error::IndexOutOfRange { .. })
    ));
    assert!(Seen::of(pid).alive());
    drop(top);
    assert!(
        eventually(Duration::from_secs(5), || !Seen::of(pid).alive()),
        "retired after its lease"
    );
}

#[test]
fn sticky_keys_move_off_a_removed_instance() {
    let pool = private(ToolSpec {
        routing: Routing::Sticky,
        ..tool(3, &[])
    });
    // Find a key that lands on instance 2.
    let key = (0..100)
        .map(|k| format!("k{k}"))
        .find(|k| pool.request_sticky(k, "x", T).unwrap().instance == Some(2))
        .expect("some key lands on instance 2");
    pool.resize(2).unwrap();
    let r = pool.request_sticky(&key, "again", T).unwrap();
    assert!(r.moved, "{r:?}");
    assert!(r.instance.unwrap() < 2);
    let r2 = pool.request_sticky(&key, "stays", T).unwrap();
    assert!(!r2.moved);
    assert_eq!(r2.instance, r.instance);
}

/// The test tool with a ready line (`UP`).
fn ready(count: usize, args: &[&str]) -> ToolSpec {
    let mut argv = args.to_vec();
    argv.extend(["--ready", "UP"]);
    ToolSpec {
        startup: toolpool::Startup {
            ready_line: Some("UP".into()),
            timeout_ms: 10_000,
            ..Default::default()
        },
        ..tool(count, &argv)
    }
}

fn versioned(count: usize, version: &str) -> ToolSpec {
    let mut spec = ready(count, &[]);
    spec.env.insert("TOOL_VERSION".into(), version.into());
    spec
}

#[test]
fn reload_under_load_from_three_threads_fails_no_request() {
    let pool = private(versioned(3, "v1"));
    let before: HashSet<i32> = pids(&pool).into_iter().collect();
    let done = under_load(&pool, 5, || {
        std::thread::sleep(Duration::from_millis(200));
        pool.reload(versioned(3, "v2")).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    });
    assert!(done > 20);
    assert_eq!(pool.metrics().requests_error, 0);
    // Every instance runs the new spec: new pids, and the tool sees the new environment.
    let after: HashSet<i32> = pids(&pool).into_iter().collect();
    assert_eq!(after.len(), 3);
    assert!(before.is_disjoint(&after), "{before:?} {after:?}");
    for i in 0..3 {
        pool.send(i, "env:TOOL_VERSION").unwrap();
        assert_eq!(pool.read_line(i, T).unwrap(), "v2", "instance {i}");
    }
    assert_eq!(pool.spec().env["TOOL_VERSION"], "v2");
    // The old processes are gone once their requests ended.
    assert!(eventually(Duration::from_secs(5), || before
        .iter()
        .all(|&p| !Seen::of(p).alive())));
    assert!(eventually(Duration::from_secs(5), || {
        pool.limiter().unwrap().status().active_processes == 3
    }));
    pool.shutdown(Duration::from_millis(200));
    assert!(after.iter().all(|&p| !Seen::of(p).alive()));
    assert_eq!(toolpool::leaked_threads(), 0);
}

#[test]
fn reload_can_change_the_count() {
    let pool = private(versioned(2, "v1"));
    pool.reload(versioned(4, "v2")).unwrap();
    assert_eq!(pool.len(), 4);
    for i in 0..4 {
        pool.send(i, "env:TOOL_VERSION").unwrap();
        assert_eq!(pool.read_line(i, T).unwrap(), "v2", "instance {i}");
    }
    pool.reload(versioned(1, "v3")).unwrap();
    assert_eq!(pool.len(), 1);
    pool.send(0, "env:TOOL_VERSION").unwrap();
    assert_eq!(pool.read_line(0, T).unwrap(), "v3");
}

#[test]
fn reload_rejects_an_invalid_spec_or_fixed_keys_before_changing_anything() {
    let pool = private(versioned(2, "v1"));
    let before = pids(&pool);
    let mut bad = versioned(2, "v2");
    bad.command.clear();
    assert!(matches!(pool.reload(bad), Err(Error::Config(m)) if m.contains("command")));
    let fixed = ToolSpec {
        protocol: toolpool::Protocol::Jsonrpc,
        routing: Routing::LeastBusy,
        ..versioned(2, "v2")
    };
    match pool.reload(fixed) {
        Err(Error::Config(m)) => {
            assert!(m.contains("protocol") && m.contains("routing"), "{m}");
            assert!(!m.contains("command,") || m.contains("only"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        pool.reload_json("{\"command\": [\"cat\"], \"count\": 0}"),
        Err(Error::Config(_))
    ));
    // Keys the reload does not list are fixed too, named by their path (the check goes
    // through the spec's JSON form, so keys added later are covered).
    let mut later = versioned(2, "v2");
    later.limits.max_rss_mb = Some(512);
    later.stderr = toolpool::spec::StderrMode::Log;
    match pool.reload(later) {
        Err(Error::Config(m)) => {
            // Exactly those two (env, which also changed, may change in place).
            assert!(
                m.contains("cannot change limits.max_rss_mb, stderr in place"),
                "{m}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(pids(&pool), before);
    assert_eq!(pool.spec().env["TOOL_VERSION"], "v1");
}

#[test]
fn reload_whose_processes_cannot_start_keeps_the_old_ones_serving() {
    let pool = private(versioned(2, "v1"));
    let before = pids(&pool);
    // No such program.
    let mut missing = versioned(2, "v2");
    missing.command[0] = "/nonexistent/toolpool-no-such-tool".into();
    assert!(matches!(pool.reload(missing), Err(Error::Spawn(_))));
    // Starts, but never prints its ready line.
    let mut silent = versioned(2, "v2");
    silent.startup = toolpool::Startup {
        ready_line: Some("NEVER".into()),
        timeout_ms: 300,
        ..Default::default()
    };
    match pool.reload(silent) {
        Err(Error::Spawn(m)) => assert!(m.contains("NEVER"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(pids(&pool), before);
    for i in 0..2 {
        pool.send(i, "env:TOOL_VERSION").unwrap();
        assert_eq!(pool.read_line(i, T).unwrap(), "v1");
    }
    assert_eq!(pool.spec().env["TOOL_VERSION"], "v1");
    assert_eq!(pool.limiter().unwrap().status().active_processes, 2);
}

#[test]
fn reload_json_keeps_the_pool_id() {
    let pool = private(versioned(1, "v1"));
    let json = serde_json::json!({
        "command": [testtool(), "--ready", "UP"],
        "startup": {"ready_line": "UP"},
        "env": {"TOOL_VERSION": "v2"},
    });
    pool.resize(2).unwrap();
    pool.reload_json(&json.to_string()).unwrap();
    assert_eq!(pool.spec().id, "testtool");
    assert_eq!(pool.len(), 2, "no count: the pool keeps its count");
    pool.send(0, "env:TOOL_VERSION").unwrap();
    assert_eq!(pool.read_line(0, T).unwrap(), "v2");
}

#[test]
fn min_instances_above_count_is_a_config_error() {
    let e =
        ToolSpec::from_json(r#"{"command": ["cat"], "count": 2, "min_instances": 3}"#).unwrap_err();
    assert!(e.to_string().contains("min_instances"), "{e}");
}

#[test]
fn reload_stopped_by_the_process_limit_mid_way_keeps_serving() {
    // Room for one process beyond the pool: a reload replaces one instance at a time.
    let limiter = toolpool::Limiter::new(4);
    let mut spec = versioned(3, "v1");
    spec.startup.timeout_ms = 300;
    let pool = Pool::with_options(
        spec,
        toolpool::PoolOptions {
            limiter: Some(Arc::clone(&limiter)),
            ..Default::default()
        },
    )
    .unwrap();
    // A lease keeps instance 0's old process alive after its replacement, so the next
    // replacement finds no room.
    let lease = pool.lease(T).unwrap();
    assert_eq!(lease.index(), 0);
    let mut next = versioned(3, "v2");
    next.startup.timeout_ms = 300;
    let e = pool.reload(next).unwrap_err();
    assert!(matches!(e, Error::LimitReached { .. }), "{e:?}");
    assert_eq!(pool.spec().env["TOOL_VERSION"], "v1");
    // The lease still talks to its (old) process; the others never changed.
    assert_eq!(lease.request("env:TOOL_VERSION", T).unwrap(), "v1");
    for i in 1..3 {
        pool.send(i, "env:TOOL_VERSION").unwrap();
        assert_eq!(pool.read_line(i, T).unwrap(), "v1", "instance {i}");
    }
    // Instance 0 could not go back either (no room while the lease held the old one):
    // it serves on the new spec, which did start. Every request still succeeds.
    pool.send(0, "env:TOOL_VERSION").unwrap();
    assert_eq!(pool.read_line(0, T).unwrap(), "v2");
    drop(lease);
    for k in 0..6 {
        assert_eq!(
            pool.request(&format!("r{k}"), T).unwrap().text,
            format!("r{k}")
        );
    }
    assert!(eventually(Duration::from_secs(5), || {
        limiter.status().active_processes == 3
    }));
}
