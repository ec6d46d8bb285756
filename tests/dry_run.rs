//! Dry-run pools (`dry_run` spec key): canned replies, no process. Every pool in this
//! binary is dry, so no test here may ever see a child of the test process: each test
//! checks that after using its pool. The leak check takes the binary for itself (a write
//! lock every other test reads).

mod common;
use common::*;
use parking_lot::RwLock;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use toolpool::{
    DryDefault, DryError, DryReply, DryRun, Error, ExitInfo, Limiter, Pool, PoolOptions, Protocol,
    RestartPolicy, Routing, ServedBy, State, ToolSpec,
};

static SERIAL: RwLock<()> = RwLock::new(());

/// A command that does not exist: a dry pool must never need it.
const MISSING: &str = "/nonexistent/dry-run-tool";

fn reply(m: &str, r: &str) -> DryReply {
    DryReply {
        matches: m.into(),
        reply: Some(r.into()),
        delay_ms: 0,
        error: None,
    }
}

fn slow(m: &str, r: &str, delay_ms: u64) -> DryReply {
    DryReply {
        delay_ms,
        ..reply(m, r)
    }
}

fn failing(m: &str, code: i64, message: &str) -> DryReply {
    DryReply {
        matches: m.into(),
        reply: None,
        delay_ms: 0,
        error: Some(DryError {
            code,
            message: message.into(),
        }),
    }
}

fn dry(count: usize, replies: Vec<DryReply>) -> ToolSpec {
    ToolSpec {
        id: "dry".into(),
        count,
        dry_run: Some(DryRun {
            replies,
            default: DryDefault::Echo,
        }),
        ..ToolSpec::new([MISSING, "--flag"])
    }
}

fn assert_no_process(pool: &Pool) {
    assert_eq!(
        children(),
        Vec::<i32>::new(),
        "a dry pool started a process"
    );
    assert_eq!(pool.limiter().unwrap().status().active_processes, 0);
    assert!(pool.status().instances.iter().all(|s| s.pid.is_none()));
}

#[test]
fn lines_replies_with_no_process_and_no_binary() {
    let _g = SERIAL.read();
    let pool = Pool::from_spec(dry(3, vec![reply("6*7", "42")])).unwrap();
    assert_eq!(pool.request("6*7", T).unwrap().text, "42");
    let r = pool.request("2+2", T).unwrap();
    assert_eq!((r.text.as_str(), r.served_by), ("2+2", ServedBy::Pool));
    let st = pool.status();
    assert!(st.dry_run);
    assert!(!st.disabled);
    assert_eq!(st.command, vec![MISSING.to_string(), "--flag".into()]);
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["dry_run"], true);
    assert_eq!(json["instances"][0]["pid"], serde_json::Value::Null);
    let h = pool.health();
    assert_eq!((h.total, h.alive, h.ready, h.dead), (3, 3, 3, 0));
    assert!(st.instances.iter().all(|s| s.uptime_ms.is_some()));
    // Raw line I/O goes through the same responder.
    pool.send(1, "raw").unwrap();
    assert_eq!(pool.read_line(1, T).unwrap(), "raw");
    let m = pool.metrics();
    assert_eq!((m.requests_ok, m.requests_error), (2, 0));
    assert_eq!(m.lines_in, 3);
    assert_no_process(&pool);
    pool.shutdown(Duration::from_secs(2));
    assert_eq!(pool.health().stopped, 3);
    assert_no_process(&pool);
}

#[test]
fn counts_nothing_against_the_process_limit() {
    let _g = SERIAL.read();
    // A limit of 1 would hold back the second instance of a real pool for good.
    let limiter = Limiter::new(1);
    let pool = Pool::with_options(
        dry(3, vec![]),
        PoolOptions {
            limiter: Some(limiter.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(pool.health().ready, 3);
    let st = limiter.status();
    assert_eq!((st.active_processes, st.can_start_new), (0, true));
    // Kill-all signals processes; a dry pool has none, so it goes on serving.
    assert_eq!(limiter.kill_all().killed_count, 0);
    assert_eq!(pool.request("still here", T).unwrap().text, "still here");
    assert_no_process(&pool);
}

#[test]
fn routing_sticky_keys_and_leases() {
    let _g = SERIAL.read();
    let pool = Pool::from_spec(dry(3, vec![])).unwrap();
    let seen: Vec<usize> = (0..6)
        .map(|k| pool.request(&k.to_string(), T).unwrap().instance.unwrap())
        .collect();
    assert_eq!(seen, vec![0, 1, 2, 0, 1, 2], "round robin");
    let first = pool.request_sticky("user-7", "a", T).unwrap().instance;
    for _ in 0..5 {
        let r = pool.request_sticky("user-7", "b", T).unwrap();
        assert_eq!((r.instance, r.moved), (first, false));
    }
    // A restart ends the incarnation: the key moves and says so.
    pool.restart(first.unwrap()).unwrap();
    let r = pool.request_sticky("user-7", "c", T).unwrap();
    assert!(r.moved);
    assert_eq!(pool.status().instances[first.unwrap()].restarts, 1);

    let lease = pool.lease(T).unwrap();
    assert!(
        lease.pid() < 0,
        "a dry instance has no pid: {}",
        lease.pid()
    );
    assert_eq!(lease.request("leased", T).unwrap(), "leased");
    for _ in 0..4 {
        let r = pool.request("free", T).unwrap();
        assert_ne!(r.instance, Some(lease.index()), "routing skips the lease");
    }
    assert!(pool.status().instances[lease.index()].leased);
    drop(lease);

    let mut spec = dry(2, vec![slow("slow", "s", 400)]);
    spec.routing = Routing::LeastBusy;
    let pool2 = Pool::from_spec(spec).unwrap();
    std::thread::scope(|s| {
        let busy = s.spawn(|| pool2.request("slow", T).unwrap().instance);
        assert!(eventually(T, || pool2.metrics().in_flight == 1));
        let other = pool2.request("quick", T).unwrap().instance;
        assert_ne!(
            busy.join().unwrap(),
            other,
            "least busy avoids the busy one"
        );
    });
    assert_no_process(&pool);
}

#[test]
fn delay_makes_a_timeout_and_the_late_reply_reaches_nobody() {
    let _g = SERIAL.read();
    let pool = Pool::from_spec(dry(1, vec![slow("slow", "LATE", 4000)])).unwrap();
    let t0 = Instant::now();
    let err = pool
        .request("slow", Duration::from_millis(200))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "a timeout, not the delay"
    );
    // The next caller gets its own reply, never "LATE" (the incarnation was replaced).
    assert_eq!(pool.request("next", T).unwrap().text, "next");
    assert_eq!(pool.request("after", T).unwrap().text, "after");
    assert!(pool.status().instances[0].restarts >= 1);
    let m = pool.metrics();
    assert_eq!((m.requests_timeout, m.requests_ok), (1, 2));
    // A delay shorter than the timeout is only slow.
    let t0 = Instant::now();
    let pool = Pool::from_spec(dry(1, vec![slow("slow", "done", 300)])).unwrap();
    assert_eq!(pool.request("slow", T).unwrap().text, "done");
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert_no_process(&pool);
}

#[test]
fn one_in_flight_per_instance_waits_and_jsonrpc_overlaps() {
    let _g = SERIAL.read();
    // lines, max_in_flight 1: the second caller waits for the instance.
    let pool = Pool::from_spec(dry(1, vec![slow("slow", "s", 300)])).unwrap();
    std::thread::scope(|s| {
        let a = s.spawn(|| pool.request("slow", T));
        assert!(eventually(T, || pool.metrics().in_flight == 1));
        assert_eq!(pool.request("b", T).unwrap().text, "b");
        assert_eq!(a.join().unwrap().unwrap().text, "s");
    });
    assert!(pool.status().waited_for_instance >= 1);

    // jsonrpc, 4 in flight on one instance, each 1 s: they overlap, so all four finish
    // within a 3 s timeout (one after the other would need 4 s).
    let mut spec = dry(1, vec![slow("work", "7", 1000)]);
    spec.protocol = Protocol::Jsonrpc;
    spec.max_in_flight = 4;
    let rpc = Pool::from_spec(spec).unwrap();
    let replies: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| rpc.request(r#"{"method":"work"}"#, Duration::from_secs(3))))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in replies {
        assert_eq!(r.unwrap().text, "7");
    }
    assert_no_process(&rpc);
}

#[test]
fn jsonrpc_results_errors_and_echo() {
    let _g = SERIAL.read();
    let mut spec = dry(
        2,
        vec![
            reply(
                "add",
                "{\"sum\": 3,\n \"big\": 123456789012345678901234567890}",
            ),
            failing("boom", 42, "it broke"),
            slow("slow", "1", 1500),
        ],
    );
    spec.protocol = Protocol::Jsonrpc;
    let pool = Pool::from_spec(spec.clone()).unwrap();
    let r = pool
        .request(r#"{"method":"add","params":[1,2]}"#, T)
        .unwrap();
    // The result exactly as given (big integer intact), on one line.
    assert_eq!(
        r.text,
        "{\"sum\": 3,  \"big\": 123456789012345678901234567890}"
    );
    match pool.request(r#"{"method":"boom"}"#, T).unwrap_err() {
        Error::Tool { code, message, .. } => assert_eq!((code, message.as_str()), (42, "it broke")),
        other => panic!("{other}"),
    }
    let echo = pool.request(r#"{"method":"other","params":{"a":[1]}}"#, T);
    assert_eq!(echo.unwrap().text, r#"{"a":[1]}"#);
    assert_eq!(
        pool.request(r#"{"method":"bare"}"#, T).unwrap().text,
        "null"
    );
    // A timed-out request's late reply is dropped by id, never handed on.
    let err = pool.request(r#"{"method":"slow"}"#, Duration::from_millis(100));
    assert!(matches!(err, Err(Error::Timeout { .. })));
    for k in 0..4 {
        let p = format!(r#"{{"method":"x","params":[{k}]}}"#);
        assert_eq!(pool.request(&p, T).unwrap().text, format!("[{k}]"));
    }
    assert!(eventually(Duration::from_secs(5), || pool
        .metrics()
        .late_replies_dropped
        == 1));
    assert_eq!(
        pool.status()
            .instances
            .iter()
            .map(|s| s.restarts)
            .sum::<u64>(),
        0
    );

    spec.dry_run.as_mut().unwrap().default = DryDefault::Error;
    let strict = Pool::from_spec(spec.clone()).unwrap();
    match strict.request(r#"{"method":"nope"}"#, T).unwrap_err() {
        Error::Tool { code, message, .. } => {
            assert_eq!(code, -32601);
            assert!(message.contains("'nope'"), "{message}");
        }
        other => panic!("{other}"),
    }
    spec.dry_run.as_mut().unwrap().default = DryDefault::Reply("[\"fixed\"]".into());
    let fixed = Pool::from_spec(spec).unwrap();
    assert_eq!(
        fixed.request(r#"{"method":"q"}"#, T).unwrap().text,
        "[\"fixed\"]"
    );
    assert_no_process(&fixed);
}

#[test]
fn marker_framing_replies_lines_then_the_marker() {
    let _g = SERIAL.read();
    let mut spec = dry(1, vec![reply("table", "a\nb\n\nc"), reply("none", "")]);
    spec.protocol = Protocol::Marker("END".into());
    let pool = Pool::from_spec(spec).unwrap();
    assert_eq!(pool.request("table", T).unwrap().text, "a\nb\n\nc");
    assert_eq!(pool.request("none", T).unwrap().text, "");
    assert_eq!(pool.request("echoed", T).unwrap().text, "echoed");
    // Raw: the reply lines, then the marker.
    pool.send(0, "table").unwrap();
    let raw: Vec<String> = (0..5).map(|_| pool.read_line(0, T).unwrap()).collect();
    assert_eq!(raw, ["a", "b", "", "c", "END"]);
    assert_no_process(&pool);
}

#[test]
fn a_lines_error_ends_the_instance_like_a_failing_tool() {
    let _g = SERIAL.read();
    let mut spec = dry(1, vec![failing("crash", 3, "disk on fire")]);
    spec.restart.policy = RestartPolicy::Always;
    spec.restart.backoff_initial_ms = 10;
    let pool = Pool::from_spec(spec).unwrap();
    match pool.request("crash", T).unwrap_err() {
        Error::InstanceDead(d) => {
            assert_eq!(d.exit, Some(ExitInfo::Code(3)));
            assert_eq!(d.stderr_tail, vec!["disk on fire".to_string()]);
        }
        other => panic!("{other}"),
    }
    // The supervisor restarts it as it would a process.
    assert!(eventually(T, || pool.health().ready == 1
        && pool.status().instances[0].restarts == 1));
    assert_eq!(pool.request("ok", T).unwrap().text, "ok");

    let mut spec = dry(1, vec![reply("known", "yes")]);
    spec.dry_run.as_mut().unwrap().default = DryDefault::Error;
    let strict = Pool::from_spec(spec).unwrap();
    assert_eq!(strict.request("known", T).unwrap().text, "yes");
    match strict.request("unknown", T).unwrap_err() {
        Error::InstanceDead(d) => {
            assert_eq!(d.exit, Some(ExitInfo::Code(1)));
            assert!(
                d.stderr_tail[0].contains("'unknown'"),
                "{:?}",
                d.stderr_tail
            );
        }
        other => panic!("{other}"),
    }
    assert_eq!(
        strict.health().dead,
        1,
        "restart policy never: it stays dead"
    );

    let mut spec = dry(1, vec![]);
    spec.dry_run.as_mut().unwrap().default = DryDefault::Reply("same".into());
    let fixed = Pool::from_spec(spec).unwrap();
    assert_eq!(fixed.request("anything", T).unwrap().text, "same");
    assert_no_process(&fixed);
}

#[test]
fn ready_line_lazy_start_probes_and_disabled() {
    let _g = SERIAL.read();
    let mut spec = dry(2, vec![reply("ping", "pong")]);
    spec.startup.ready_line = Some("READY".into());
    spec.lazy = true;
    spec.health = Some(toolpool::HealthProbe {
        interval_ms: 20,
        timeout_ms: 1000,
        probe: Some("ping".into()),
        expect: Some("pong".into()),
    });
    // A dry pool ignores `disabled`: it runs no one-shot process either.
    spec.disabled = true;
    let pool = Pool::from_spec(spec.clone()).unwrap();
    assert_eq!(pool.health().stopped, 2, "lazy: nothing started yet");
    assert_eq!(pool.request("first", T).unwrap().text, "first");
    assert!(!pool.status().disabled);
    // Probes pass: no restart while they run.
    assert!(eventually(T, || pool.status().instances[0]
        .last_probe_us
        .is_some()));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(pool.status().instances[0].restarts, 0);
    // A probe whose reply is not the expected one restarts the instance.
    spec.health.as_mut().unwrap().expect = Some("other".into());
    spec.lazy = false;
    let failing = Pool::from_spec(spec).unwrap();
    assert!(eventually(T, || failing.status().instances[0].restarts >= 1));
    assert_no_process(&failing);
}

#[test]
fn recycling_and_idle_stop_replace_dry_instances() {
    let _g = SERIAL.read();
    let mut spec = dry(1, vec![]);
    spec.max_requests = Some(3);
    let pool = Pool::from_spec(spec).unwrap();
    // Three requests on an incarnation make it due; it is swapped once idle, and the next
    // one serves the next three.
    for round in 1..=2u64 {
        for k in 0..3 {
            assert_eq!(pool.request(&k.to_string(), T).unwrap().text, k.to_string());
        }
        assert!(eventually(T, || pool.status().instances[0].restarts == round));
    }
    let mut spec = dry(1, vec![]);
    spec.idle_timeout_ms = Some(50);
    let idle = Pool::from_spec(spec).unwrap();
    assert!(eventually(T, || idle.health().stopped == 1), "idle stop");
    assert_eq!(idle.request("again", T).unwrap().text, "again");
    assert_eq!(idle.status().instances[0].state, State::Ready);
    assert_no_process(&idle);
}

#[test]
fn shutdown_kill_and_restart_paths() {
    let _g = SERIAL.read();
    let pool = Pool::from_spec(dry(2, vec![slow("slow", "s", 10_000)])).unwrap();
    std::thread::scope(|s| {
        let stuck = s.spawn(|| pool.request("slow", Duration::from_secs(30)));
        assert!(eventually(T, || pool.metrics().in_flight == 1));
        let t0 = Instant::now();
        pool.shutdown(Duration::from_millis(500));
        // The slow reply does not hold shutdown (grace, then the responder is ended).
        assert!(t0.elapsed() < Duration::from_secs(5));
        let err = stuck.join().unwrap().unwrap_err();
        assert!(
            matches!(err, Error::InstanceDead(_) | Error::ShutDown(_)),
            "{err}"
        );
    });
    let st = pool.status();
    assert!(st.shut_down && st.instances.iter().all(|i| i.state == State::Stopped));
    assert!(matches!(pool.request("x", T), Err(Error::ShutDown(_))));
    assert_no_process(&pool);
}

#[test]
fn validation_names_the_key_path() {
    let _g = SERIAL.read();
    let cases = [
        (
            r#"{"command":["t"],"dry_run":{"replies":[{"match":"a","reply":"x"},{"match":"b","reply":"two\nlines"}]}}"#,
            "key 'dry_run.replies[1].reply': must be one line",
        ),
        (
            r#"{"command":["t"],"protocol":"jsonrpc","dry_run":{"replies":[{"match":"m","reply":"not json"}]}}"#,
            "key 'dry_run.replies[0].reply': must be JSON",
        ),
        (
            r#"{"command":["t"],"dry_run":{"replies":[{"match":"a"},{"match":"a","reply":"x"}]}}"#,
            "key 'dry_run.replies[1].match': 'a' is already matched by replies[0]",
        ),
        (
            r#"{"command":["t"],"dry_run":{"replies":[{"match":"a","reply":"x","error":{"code":1,"message":"m"}}]}}"#,
            "key 'dry_run.replies[0]': give 'reply' or 'error', not both",
        ),
        (
            r#"{"command":["t"],"dry_run":{"replies":[{"match":"a","error":{"code":0,"message":"m"}}]}}"#,
            "key 'dry_run.replies[0].error.code': must be an exit status from 1 to 255",
        ),
        (
            r#"{"command":["t"],"dry_run":{"replies":[{"match":"a","delay_ms":2592000001}]}}"#,
            "key 'dry_run.replies[0].delay_ms': must be at most",
        ),
        (
            r#"{"command":["t"],"dry_run":{"replies":[{"match":"a","colour":"red"}]}}"#,
            "key 'dry_run.replies[0].colour': unknown field `colour`",
        ),
        (
            r#"{"command":["t"],"dry_run":{"replies":[{"match":"a","delay_ms":"soon"}]}}"#,
            "key 'dry_run.replies[0].delay_ms': invalid type",
        ),
        (
            r#"{"command":["t"],"dry_run":{"default":7}}"#,
            "key 'dry_run.default': invalid type",
        ),
        (
            r#"{"command":["t"],"protocol":{"marker":"END"},"dry_run":{"default":"x\nEND"}}"#,
            "key 'dry_run.default': a line of the reply is the marker 'END'",
        ),
        (
            r#"{"command":["t"],"dry_run":{"replies":[{"reply":"x"}]}}"#,
            "key 'dry_run.replies[0]': missing field `match`",
        ),
        (
            r#"{"command":["t"],"dry_run":true}"#,
            "key 'dry_run': invalid type",
        ),
    ];
    for (json, want) in cases {
        let err = ToolSpec::from_json(json).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(want), "for {json}\n got: {msg}\nwant: {want}");
    }
    // The same checks run on a spec built in Rust.
    let err = Pool::from_spec(dry(1, vec![reply("a", "x\ny")])).unwrap_err();
    assert!(
        err.to_string().contains("dry_run.replies[0].reply"),
        "{err}"
    );
    // A good one round-trips through JSON.
    let spec = ToolSpec::from_json(
        r#"{"command":["t"],"dry_run":{"replies":[{"match":"a","reply":"b","delay_ms":5}],"default":"error"}}"#,
    )
    .unwrap();
    let dry = spec.dry_run.unwrap();
    assert_eq!(dry.default, DryDefault::Error);
    assert_eq!(dry.replies[0].delay_ms, 5);
    let back = serde_json::to_string(&dry).unwrap();
    assert!(back.contains(r#""default":"error""#), "{back}");
}

/// Log records of the `toolpool::dry_run` target, kept by the test logger.
static RECORDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Keep;
impl log::Log for Keep {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.target() == "toolpool::dry_run"
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let line = format!("{} {}", r.level(), r.args());
            RECORDS.lock().unwrap().push(line);
        }
    }
    fn flush(&self) {}
}

#[test]
fn a_debug_record_per_request_names_the_line_and_the_argv() {
    let _g = SERIAL.read();
    static LOGGER: Keep = Keep;
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Debug);
    let pool = Pool::from_spec(dry(1, vec![])).unwrap();
    pool.request("logged-request-1", T).unwrap();
    pool.request("logged-request-2", T).unwrap();
    let mine: Vec<String> = RECORDS
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.contains("logged-request-"))
        .cloned()
        .collect();
    assert_eq!(mine.len(), 2, "{mine:?}");
    assert!(mine[0].starts_with("DEBUG "), "{}", mine[0]);
    assert!(
        mine[0].contains("would send \"logged-request-1\"")
            && mine[0].contains(&format!("[\"{MISSING}\", \"--flag\"]"))
            && mine[0].contains("tool 'dry' instance 0"),
        "{}",
        mine[0]
    );
}

#[test]
fn create_shutdown_cycles_leak_no_fd_no_thread() {
    let _g = SERIAL.write();
    drop(Pool::from_spec(dry(1, vec![])).unwrap());
    let fds = fd_count();
    let threads = thread_count();
    for k in 0..30 {
        let pool = Pool::from_spec(dry(3, vec![failing("die", 2, "bye")])).unwrap();
        assert_eq!(pool.request("x", T).unwrap().text, "x");
        if k % 5 == 0 {
            let _ = pool.request("die", T); // an ended instance in some cycles
            pool.restart(0).unwrap();
        }
        if k % 2 == 0 {
            pool.shutdown(Duration::from_millis(100));
        } // else dropped without a shutdown
    }
    assert_eq!(fd_count(), fds, "fds leaked");
    // More threads would be a leak; fewer, a thread of before that has ended since.
    assert!(
        eventually(Duration::from_secs(2), || thread_count() <= threads),
        "threads: {} vs {threads}",
        thread_count()
    );
    assert_eq!(children(), Vec::<i32>::new());
    // The check sees a real child (it can fail): under the write lock, no pool runs.
    let mut child = std::process::Command::new("sleep")
        .arg("5")
        .spawn()
        .unwrap();
    assert_eq!(children(), vec![child.id() as i32]);
    child.kill().unwrap();
    child.wait().unwrap();
}
