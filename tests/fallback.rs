//! Fallback and retry: a request that fails on the pool runs again on it (`retry`) or once
//! through the `oneshot` command (`fallback`), by the cause of the failure, within the
//! caller's deadline; the reply says which path served it, and is shaped alike on every
//! path. Also `Pools`, a pool per tool of a registry.

mod common;
use common::*;
use std::time::{Duration, Instant};
use toolpool::{
    Cause, Error, Fallback, Oneshot, OneshotInput, Pools, Registry, RequestOptions, Restart,
    RestartPolicy, Retry, ServedBy, ToolSpec,
};

fn cat() -> Option<Oneshot> {
    Some(Oneshot {
        command: vec!["cat".into()],
        input: OneshotInput::Stdin,
    })
}

fn on(causes: &[Cause]) -> Fallback {
    Fallback {
        on: causes.to_vec(),
        attempt_ms: None,
    }
}

#[test]
fn each_cause_falls_back_only_when_listed() {
    // dead: the instance dies mid-request.
    let pool = private(ToolSpec {
        oneshot: cat(),
        fallback: on(&[Cause::Dead]),
        ..tool(1, &[])
    });
    let r = pool.request("crash:1", T).unwrap();
    assert_eq!(
        (r.text.as_str(), r.served_by),
        ("crash:1", ServedBy::Oneshot)
    );
    let m = pool.metrics();
    assert_eq!((m.fallbacks["dead"], m.fallbacks["timeout"]), (1, 0));
    assert_eq!(pool.status().fallbacks["dead"], 1);

    // timeout: the pooled attempt gets attempt_ms of the caller's time, the one-shot the rest.
    let pool = private(ToolSpec {
        oneshot: cat(),
        fallback: Fallback {
            on: vec![Cause::Timeout],
            attempt_ms: Some(300),
        },
        ..tool(1, &[])
    });
    let t0 = Instant::now();
    let r = pool
        .request("delay:5000:slow", Duration::from_secs(3))
        .unwrap();
    assert_eq!(
        (r.text.as_str(), r.served_by),
        ("delay:5000:slow", ServedBy::Oneshot)
    );
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    // Not listed: a death is the caller's error.
    let r = pool.request("crash:1", T);
    assert!(matches!(r, Err(Error::InstanceDead(_))), "{r:?}");

    // invalid_reply: a reply line longer than the limit.
    let mut spec = ToolSpec {
        oneshot: cat(),
        fallback: on(&[Cause::InvalidReply]),
        ..tool(1, &[])
    };
    spec.limits.max_line_bytes = 16;
    let pool = private(spec);
    let r = pool.request("hugenl:100", T).unwrap();
    assert_eq!(
        (r.text.as_str(), r.served_by),
        ("hugenl:100", ServedBy::Oneshot)
    );

    // unavailable: the only instance ended and the policy leaves it down.
    let pool = private(ToolSpec {
        oneshot: cat(),
        fallback: on(&[Cause::Unavailable]),
        ..tool(1, &[])
    });
    assert!(pool.request("crash:0", T).is_err());
    assert!(eventually(T, || pool.health().dead == 1));
    let r = pool.request("nobody home", T).unwrap();
    assert_eq!(r.served_by, ServedBy::Oneshot);

    // spawn_failed: a lazy pool whose program is missing.
    let pool = private(ToolSpec {
        oneshot: cat(),
        fallback: on(&[Cause::SpawnFailed]),
        lazy: true,
        ..ToolSpec::new(["/no/such/tool"])
    });
    let r = pool.request("started elsewhere", T).unwrap();
    assert_eq!(r.served_by, ServedBy::Oneshot);
    assert_eq!(pool.metrics().fallbacks["spawn_failed"], 1);
}

#[test]
fn true_falls_back_on_every_cause_but_a_tool_error() {
    let rpc_oneshot = Some(Oneshot {
        command: vec!["python3".into(), "-u".into(), rpc_tool()],
        input: OneshotInput::Stdin,
    });
    let pool = private(ToolSpec {
        oneshot: rpc_oneshot.clone(),
        fallback: Fallback::all(),
        ..rpc(1)
    });
    match pool.request(r#"{"method": "fail"}"#, T) {
        Err(Error::Tool { .. }) => {}
        other => panic!("a tool error fell back: {other:?}"),
    }
    let pool = private(ToolSpec {
        oneshot: rpc_oneshot,
        fallback: on(&[Cause::ToolError]),
        ..rpc(1)
    });
    // Listed, it falls back, and the one-shot's error is the caller's.
    match pool.request(r#"{"method": "fail"}"#, T) {
        Err(Error::Tool { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(pool.metrics().fallbacks["tool_error"], 1);
}

#[test]
fn a_jsonrpc_one_shot_reply_has_the_pooled_shape() {
    let oneshot = Some(Oneshot {
        command: vec!["python3".into(), "-u".into(), rpc_tool()],
        input: OneshotInput::Stdin,
    });
    let pooled = private(rpc(1));
    let direct = private(ToolSpec {
        oneshot,
        disabled: true,
        ..rpc(1)
    });
    for payload in [
        r#"{"method": "add", "params": [2, 40]}"#,
        r#"{"method": "echo", "params": {"a": [1, "x"]}}"#,
    ] {
        let a = pooled.request(payload, T).unwrap();
        let b = direct.request(payload, T).unwrap();
        assert_eq!(a.text, b.text, "{payload}");
        assert_eq!(
            (a.served_by, b.served_by),
            (ServedBy::Pool, ServedBy::Oneshot)
        );
    }
    // An error object is a tool error on both paths, with the same code.
    let code = |r: toolpool::Result<toolpool::Reply>| match r {
        Err(Error::Tool { code, .. }) => code,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        code(pooled.request(r#"{"method": "fail"}"#, T)),
        code(direct.request(r#"{"method": "fail"}"#, T))
    );
}

#[test]
fn a_retry_after_a_kill_gives_the_caller_one_reply() {
    let pool = std::sync::Arc::new(private(ToolSpec {
        retry: Some(Retry::new(2, [Cause::Dead])),
        restart: Restart {
            policy: RestartPolicy::Always,
            backoff_initial_ms: 10,
            ..Restart::default()
        },
        ..tool(2, &[])
    }));
    let p = std::sync::Arc::clone(&pool);
    let caller =
        std::thread::spawn(move || p.request("delay:1500:survived", Duration::from_secs(20)));
    // Kill the instance that has it, once it is in flight there.
    assert!(eventually(T, || pool.metrics().in_flight == 1));
    let busy = pool
        .status()
        .instances
        .iter()
        .find(|i| i.in_flight == 1)
        .and_then(|i| i.pid)
        .unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(busy, libc::SIGKILL) };
    let r = caller.join().unwrap().unwrap();
    assert_eq!(
        (r.text.as_str(), r.served_by),
        ("survived", ServedBy::Retry)
    );
    assert_eq!(pool.metrics().retries["dead"], 1);
    let m = pool.metrics();
    assert_eq!((m.requests_ok, m.requests_error), (1, 0));
}

#[test]
fn a_per_call_retry_overrides_the_spec() {
    let pool = private(ToolSpec {
        restart: Restart {
            policy: RestartPolicy::Always,
            backoff_initial_ms: 10,
            ..Restart::default()
        },
        ..tool(2, &[])
    });
    // The spec has no retry: the death is the caller's error.
    assert!(matches!(
        pool.request("crash:1", T),
        Err(Error::InstanceDead(_))
    ));
    // The call's own retry runs it again (`crash:1` dies every time: two runs more).
    let options = RequestOptions {
        key: None,
        retry: Some(Retry::new(2, [Cause::Dead])),
    };
    assert!(matches!(
        pool.request_with("crash:1", &options, Duration::from_secs(20)),
        Err(Error::InstanceDead(_))
    ));
    assert_eq!(pool.metrics().retries["dead"], 2);
    let r = pool.request_with("fine", &options, T).unwrap();
    assert_eq!((r.text.as_str(), r.served_by), ("fine", ServedBy::Pool));
}

#[test]
fn lease_requests_count_in_the_pools_prometheus_families() {
    let pool = private(ToolSpec {
        id: "lease_prom".into(),
        ..tool(1, &[])
    });
    let lease = pool.lease(T).unwrap();
    for k in 0..3 {
        assert_eq!(lease.request(&format!("l{k}"), T).unwrap(), format!("l{k}"));
    }
    drop(lease);
    let text = pool.metrics_prometheus();
    assert!(
        text.contains(r#"toolpool_requests_total{tool="lease_prom",outcome="ok"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"toolpool_request_duration_seconds_count{tool="lease_prom"} 3"#),
        "{text}"
    );
    assert_eq!(pool.metrics().instances[0].requests_ok, 3);
}

#[test]
fn pools_start_each_tool_as_its_spec_says() {
    let reg = Registry::from_json(&format!(
        r#"{{"tools": {{
            "eager": {{"command": ["{t}"], "count": 2}},
            "lazy": {{"command": ["{t}"], "count": 2, "lazy": true}}
        }}}}"#,
        t = testtool()
    ))
    .unwrap();
    let pools = Pools::new(reg).unwrap();
    let st = pools.status();
    assert_eq!((st["eager"].started, st["lazy"].started), (2, 0));
    assert_eq!(
        pools.pool("lazy").unwrap().request("x", T).unwrap().text,
        "x"
    );
    assert!(matches!(pools.pool("nope"), Err(Error::UnknownTool { .. })));
    let text = pools.metrics_prometheus();
    assert!(text.contains(r#"tool="eager""#) && text.contains(r#"tool="lazy""#));
    // A tool that cannot start fails the whole: nothing is left running.
    let reg = Registry::from_json(r#"{"tools": {"bad": {"command": ["/no/such/tool"]}}}"#).unwrap();
    assert!(matches!(Pools::new(reg), Err(Error::Spawn(_))));
}
