//! Observability with real processes: log records for life-cycle events,
//! memory and CPU per instance, recycling on memory, and the Prometheus exposition.
//!
//! The log sink is process-wide, so each test uses its own tool id and looks only at the
//! records that name it.

mod common;
use common::*;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use toolpool::{Pool, RestartPolicy, StderrMode, ToolSpec};

type Records = Arc<Mutex<Vec<(log::Level, String, String)>>>;

/// Every record since the sink was installed (once per test binary).
fn records() -> Records {
    static RECORDS: OnceLock<Records> = OnceLock::new();
    RECORDS
        .get_or_init(|| {
            let r: Records = Arc::default();
            let sink = Arc::clone(&r);
            toolpool::log_bridge::set_sink(
                log::LevelFilter::Trace,
                Some(Box::new(move |level, target: &str, msg: &str| {
                    sink.lock()
                        .push((level, target.to_string(), msg.to_string()))
                })),
            )
            .expect("no other logger in this test binary");
            r
        })
        .clone()
}

/// Records naming `tool=<id>`.
fn of_tool(id: &str) -> Vec<(log::Level, String, String)> {
    let needle = format!("tool={id} ");
    records()
        .lock()
        .iter()
        .filter(|(_, _, m)| m.contains(&needle))
        .cloned()
        .collect()
}

/// Wait up to `within` for a record of `id` that `f` accepts.
fn wait_record(
    id: &str,
    within: Duration,
    f: impl Fn(&(log::Level, String, String)) -> bool,
) -> (log::Level, String, String) {
    let end = Instant::now() + within;
    loop {
        if let Some(r) = of_tool(id).into_iter().find(|r| f(r)) {
            return r;
        }
        assert!(
            Instant::now() < end,
            "no such record for {id}; got {:#?}",
            of_tool(id)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn named(id: &str, count: usize, args: &[&str]) -> ToolSpec {
    ToolSpec {
        id: id.into(),
        ..tool(count, args)
    }
}

#[test]
fn crash_is_a_warning_restart_is_info_and_success_is_silent() {
    records();
    let mut spec = named("obs_crash", 1, &[]);
    spec.restart.policy = RestartPolicy::Always;
    spec.restart.backoff_initial_ms = 20;
    let pool = private(spec);
    let (level, target, msg) = wait_record("obs_crash", T, |(_, _, m)| m.starts_with("spawned"));
    assert_eq!((level, target.as_str()), (log::Level::Info, "toolpool"));
    assert!(msg.contains("instance=0") && msg.contains("pid="), "{msg}");
    assert!(msg.contains("toolpool-testtool"), "argv in {msg}");

    // The path of a successful request emits nothing.
    let before = of_tool("obs_crash").len();
    for k in 0..50 {
        assert_eq!(
            pool.request(&format!("r{k}"), T).unwrap().text,
            format!("r{k}")
        );
    }
    assert_eq!(
        of_tool("obs_crash").len(),
        before,
        "{:#?}",
        of_tool("obs_crash")
    );

    pool.send(0, "crash:3").unwrap();
    let (level, _, msg) = wait_record("obs_crash", T, |(_, _, m)| m.starts_with("exited"));
    assert_eq!(level, log::Level::Warn, "{msg}");
    assert!(msg.contains("code=3"), "{msg}");
    assert!(
        msg.contains("crash requested with code 3"),
        "stderr tail in {msg}"
    );
    let (level, _, msg) = wait_record("obs_crash", T, |(_, _, m)| {
        m.starts_with("restart scheduled")
    });
    assert_eq!(level, log::Level::Info);
    assert!(
        msg.contains("backoff_ms=") && msg.contains("restarts_in_window=0"),
        "{msg}"
    );
    let (level, _, _) = wait_record("obs_crash", T, |(_, _, m)| m.starts_with("restarted"));
    assert_eq!(level, log::Level::Info);
    assert_eq!(pool.request("after", T).unwrap().text, "after");

    // A shutdown stops processes on purpose: debug, never a warning.
    let warnings = |id| {
        of_tool(id)
            .iter()
            .filter(|r| r.0 <= log::Level::Warn)
            .count()
    };
    let w = warnings("obs_crash");
    pool.shutdown(Duration::from_secs(1));
    assert_eq!(warnings("obs_crash"), w, "{:#?}", of_tool("obs_crash"));
}

#[test]
fn giving_up_and_timeout_kills_are_warnings() {
    records();
    let mut spec = named("obs_gaveup", 1, &["--crash-after", "1"]);
    spec.restart.policy = RestartPolicy::Always;
    spec.restart.backoff_initial_ms = 10;
    spec.restart.max_restarts = 1;
    let pool = private(spec);
    let _ = pool.request("x", T);
    std::thread::sleep(Duration::from_millis(200));
    let _ = pool.request("y", T);
    let (level, _, msg) = wait_record("obs_gaveup", T, |(_, _, m)| m.starts_with("gave up"));
    assert_eq!(level, log::Level::Warn);
    assert!(msg.contains("max_restarts"), "{msg}");

    let pool = private(named("obs_timeout", 1, &[]));
    let e = pool
        .request("delay:2000:late", Duration::from_millis(100))
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    let (level, _, msg) = wait_record("obs_timeout", T, |(_, _, m)| m.starts_with("timeout kill"));
    assert_eq!(level, log::Level::Warn);
    assert!(msg.contains("timeout_ms=100"), "{msg}");
    let m = pool.metrics();
    assert_eq!(m.recycles["timeout"], 1, "{:?}", m.recycles);
}

#[test]
fn stderr_lines_become_records_when_asked() {
    records();
    let mut spec = named("obs_stderr", 1, &[]);
    spec.stderr = StderrMode::Log;
    let pool = private(spec);
    assert_eq!(pool.request("stderr:3", T).unwrap().text, "stderr done");
    for k in 0..3 {
        let (level, target, _) = wait_record("obs_stderr", T, |(_, _, m)| {
            m.ends_with(&format!(": stderr line {k}"))
        });
        assert_eq!(
            (level, target.as_str()),
            (log::Level::Info, "toolpool::stderr")
        );
    }
    // Without the key, stderr stays out of the log.
    let pool2 = private(named("obs_stderr_keep", 1, &[]));
    pool2.request("stderr:2", T).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(of_tool("obs_stderr_keep")
        .iter()
        .all(|(_, t, _)| t != "toolpool::stderr"));
    assert_eq!(
        ToolSpec::from_json(r#"{"command": ["cat"], "stderr": "log"}"#)
            .unwrap()
            .stderr,
        StderrMode::Log
    );
    let e = ToolSpec::from_json(r#"{"command": ["cat"], "stderr": "loud"}"#).unwrap_err();
    assert!(e.to_string().contains("stderr"), "{e}");
    drop(pool);
}

#[test]
fn status_and_metrics_show_memory_and_cpu_of_the_group() {
    let pool = private(named("obs_mem", 2, &[]));
    // Each has answered once, so it runs the tool (not a child between fork and exec).
    for i in 0..2 {
        pool.send(i, "pid").unwrap();
        pool.read_line(i, T).unwrap();
    }
    let st = pool.status();
    for i in &st.instances {
        let rss = i.rss_bytes.expect("running: rss");
        assert!(rss > 100 * 1024 && rss < 64 << 20, "{rss} {i:?}");
        assert!(i.cpu_seconds.expect("running: cpu") >= 0.0);
    }
    pool.send(1, "alloc:48").unwrap();
    assert_eq!(pool.read_line(1, T).unwrap(), "allocated 48");
    let st = pool.status();
    assert!(
        st.instances[1].rss_bytes.unwrap() >= 48 << 20,
        "{:?}",
        st.instances[1]
    );
    assert!(st.instances[0].rss_bytes.unwrap() < 32 << 20);
    // A grandchild in the group counts too.
    let before = pool.status().instances[0].rss_bytes.unwrap();
    pool.send(0, "grandchild").unwrap();
    pool.read_line(0, T).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let after = pool.status().instances[0].rss_bytes.unwrap();
    assert!(after > before, "group rss {before} -> {after}");
    let m = pool.metrics();
    assert!(m.rss_bytes >= 48 << 20);
    assert!(m.instances[1].rss_bytes.unwrap() >= 48 << 20);
    pool.shutdown(Duration::from_secs(1));
    assert!(pool
        .status()
        .instances
        .iter()
        .all(|i| i.rss_bytes.is_none()));
}

#[test]
fn an_instance_over_max_rss_is_recycled_and_no_request_fails() {
    records();
    let mut spec = named("obs_maxrss", 1, &[]);
    spec.limits.max_rss_mb = Some(40);
    let pool = Arc::new(private(spec));
    let old = pids(&pool)[0];
    // Requests keep flowing through the recycle, from another thread.
    let p2 = Arc::clone(&pool);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = Arc::clone(&stop);
    let load = std::thread::spawn(move || {
        let mut n = 0;
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            let r = p2
                .request(&format!("delay:5:q{n}"), T)
                .expect("no request fails");
            assert_eq!(r.text, format!("q{n}"));
            n += 1;
        }
        n
    });
    // The request that grows it succeeds itself.
    assert_eq!(pool.request("alloc:80", T).unwrap().text, "allocated 80");
    let end = Instant::now() + Duration::from_secs(15);
    while pids(&pool)[0] == old {
        assert!(Instant::now() < end, "not recycled: {:?}", pool.status());
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, _, msg) = wait_record("obs_maxrss", T, |(_, _, m)| {
        m.starts_with("recycle scheduled")
    });
    assert!(
        msg.contains("reason=memory") && msg.contains("limit_mb=40"),
        "{msg}"
    );
    let rss: u64 = msg
        .split("rss_bytes=")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(rss > 40 << 20, "over the limit when read: {msg}");
    wait_record("obs_maxrss", T, |(_, _, m)| {
        m.starts_with("recycled") && m.contains("reason=memory")
    });
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let served = load.join().expect("load thread");
    assert!(served > 0);
    let m = pool.metrics();
    assert_eq!(m.recycles["memory"], 1, "{:?}", m.recycles);
    assert_eq!(m.requests_error + m.requests_timeout, 0);
    assert!(pool.status().instances[0].rss_bytes.unwrap() < 40 << 20);
}

#[test]
fn over_the_memory_budget_the_largest_idle_instance_goes_first() {
    let mut spec = named("obs_budget", 3, &[]);
    spec.limits.memory_budget_mb = Some(100);
    let pool = private(spec);
    let before = pids(&pool);
    pool.send(0, "alloc:70").unwrap();
    assert_eq!(pool.read_line(0, T).unwrap(), "allocated 70");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(pids(&pool), before, "under budget: nothing recycled");
    pool.send(1, "alloc:40").unwrap();
    assert_eq!(pool.read_line(1, T).unwrap(), "allocated 40");
    let end = Instant::now() + Duration::from_secs(15);
    while pids(&pool)[0] == before[0] {
        assert!(
            Instant::now() < end,
            "largest not recycled: {:?}",
            pool.status()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Back under budget with the largest gone: the others stay.
    std::thread::sleep(Duration::from_millis(800));
    let now = pids(&pool);
    assert_eq!(&now[1..], &before[1..]);
    let st = pool.status();
    assert_eq!(st.instances[0].recycles, 1);
    assert_eq!(st.instances[1].recycles, 0);
    assert_eq!(pool.metrics().recycles["memory_budget"], 1);
}

#[test]
fn memory_keys_are_validated() {
    for (json, key) in [
        (
            r#"{"command": ["cat"], "limits": {"max_rss_mb": 0}}"#,
            "limits.max_rss_mb",
        ),
        (
            r#"{"command": ["cat"], "limits": {"memory_budget_mb": 0}}"#,
            "limits.memory_budget_mb",
        ),
        (
            r#"{"command": ["cat"], "limits": {"max_rss_mb": "big"}}"#,
            "limits.max_rss_mb",
        ),
    ] {
        let e = ToolSpec::from_json(json)
            .and_then(|s| s.validate().map(|_| s))
            .unwrap_err();
        assert!(e.to_string().contains(key), "{e}");
    }
}

/// The text format, checked line by line: HELP and TYPE once per family before its
/// samples, names and labels well formed, histograms cumulative and ending in +Inf.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut typed: HashMap<String, String> = HashMap::new();
    let mut helped: Vec<String> = Vec::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_string();
            assert!(!helped.contains(&name), "HELP twice: {name}");
            helped.push(name);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{line}");
            }
            assert!(
                typed.insert(name.into(), kind.into()).is_none(),
                "TYPE twice: {line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect(line);
        let v: f64 = value.parse().expect(line);
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        let fam = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(typed.contains_key(fam), "sample before its TYPE: {line}");
        assert!(
            samples.insert(series.to_string(), v).is_none(),
            "duplicate: {line}"
        );
    }
    samples
}

#[test]
fn prometheus_text_of_one_pool_and_of_all() {
    let pool = private(named("obs_prom", 2, &[]));
    for k in 0..20 {
        pool.request(&format!("p{k}"), T).unwrap();
    }
    let _ = pool.request("delay:1000:x", Duration::from_millis(50));
    // The timed-out instance is replaced: wait until the recycle is counted (just after
    // the new process is in place) and both are ready. Ready alone is not enough: the
    // timed-out process may still look ready for a moment before it is killed.
    let end = Instant::now() + T;
    while pool.metrics().recycles.get("timeout").copied().unwrap_or(0) < 1
        || pool.health().ready < 2
    {
        assert!(Instant::now() < end);
        std::thread::sleep(Duration::from_millis(10));
    }
    for i in 0..2 {
        pool.send(i, "pid").unwrap();
        pool.read_line(i, T).unwrap();
    }
    let text = pool.metrics_prometheus();
    let s = parse(&text);
    let get = |k: &str| *s.get(k).unwrap_or_else(|| panic!("{k} missing in\n{text}"));
    for (series, want) in [
        (
            r#"toolpool_requests_total{tool="obs_prom",outcome="ok"}"#,
            20.0,
        ),
        (
            r#"toolpool_requests_total{tool="obs_prom",outcome="timeout"}"#,
            1.0,
        ),
        (
            r#"toolpool_request_duration_seconds_count{tool="obs_prom"}"#,
            20.0,
        ),
        (
            r#"toolpool_request_duration_seconds_bucket{tool="obs_prom",le="+Inf"}"#,
            20.0,
        ),
        (r#"toolpool_instances{tool="obs_prom",state="ready"}"#, 2.0),
        (
            r#"toolpool_recycles_total{tool="obs_prom",reason="timeout"}"#,
            1.0,
        ),
    ] {
        assert_eq!(get(series), want, "{series}");
    }
    let mut buckets: BTreeMap<u64, f64> = BTreeMap::new();
    for (k, v) in &s {
        if let Some(le) = k
            .strip_prefix(r#"toolpool_request_duration_seconds_bucket{tool="obs_prom",le=""#)
            .and_then(|r| r.strip_suffix("\"}"))
            .filter(|le| *le != "+Inf")
        {
            buckets.insert((le.parse::<f64>().unwrap() * 1e9) as u64, *v);
        }
    }
    assert!(buckets.len() >= 10);
    let counts: Vec<f64> = buckets.values().copied().collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    assert!(get(r#"toolpool_request_duration_seconds_sum{tool="obs_prom"}"#) > 0.0);
    assert!(get(r#"toolpool_instance_rss_bytes{tool="obs_prom",instance="0"}"#) > 0.0);
    assert!(get(r#"toolpool_rss_bytes{tool="obs_prom"}"#) > 0.0);
    assert!(s.contains_key("toolpool_process_limit"));
    assert!(get("toolpool_processes_active") >= 2.0);

    // All pools: this one and a second with the same id (a `pool` label), not a shut-down one.
    let twin = private(named("obs_prom", 1, &[]));
    let gone = private(named("obs_prom_gone", 1, &[]));
    gone.shutdown(Duration::from_secs(1));
    let all = toolpool::metrics_prometheus_all();
    let s = parse(&all);
    assert!(s.contains_key(r#"toolpool_instances{tool="obs_prom",state="ready"}"#));
    assert!(
        s.keys()
            .any(|k| k.starts_with(r#"toolpool_instances{tool="obs_prom",pool=""#)),
        "{all}"
    );
    assert!(!all.contains("obs_prom_gone"));
    drop(twin);
}

#[test]
fn waiting_for_a_process_slot_and_saturation_are_logged() {
    records();
    let limiter = toolpool::Limiter::new(1);
    let mut spec = named("obs_limit", 2, &[]);
    spec.startup.timeout_ms = 200;
    let started = Pool::with_options(
        spec,
        toolpool::PoolOptions {
            limiter: Some(limiter),
            ..Default::default()
        },
    );
    let Err(e) = started else {
        panic!("the second start cannot get a slot")
    };
    assert!(matches!(e, toolpool::Error::LimitReached { .. }), "{e}");
    let find = |level, prefix: &str| {
        records()
            .lock()
            .iter()
            .any(|(l, _, m)| *l == level && m.starts_with(prefix) && m.contains("limit=1 "))
    };
    assert!(find(log::Level::Info, "waiting for a process slot"));
    assert!(find(log::Level::Warn, "limit reached"));

    let mut spec = named("obs_saturated", 1, &[]);
    spec.limits.max_waiting = 0;
    let pool = Arc::new(private(spec));
    let p2 = Arc::clone(&pool);
    let busy = std::thread::spawn(move || p2.request("delay:500:done", T));
    let end = Instant::now() + T;
    while pool.status().instances[0].in_flight == 0 {
        assert!(Instant::now() < end);
        std::thread::sleep(Duration::from_millis(5));
    }
    let e = pool.request("more", T).unwrap_err();
    assert!(matches!(e, toolpool::Error::Saturated { .. }), "{e}");
    let (level, _, msg) = wait_record("obs_saturated", T, |(_, _, m)| m.starts_with("saturated"));
    assert_eq!(level, log::Level::Warn);
    assert!(msg.contains("max_waiting=0"), "{msg}");
    assert_eq!(busy.join().unwrap().unwrap().text, "done");
}
