//! `toolpool serve` and its clients: every pool method through the service, errors as the
//! local call returns them, cancellation, leases that die with their client, the limit
//! shared by every client, bad frames, reloads under load, restarts, and no orphans.

mod common;
#[path = "common/service.rs"]
mod service;

use common::*;
use service::*;
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};
use toolpool::{CancelToken, Error, RequestOptions, Retry, Wait};

/// A registry of the test tool (`echo`, 2 instances) and the JSON-RPC tool (`rpc`).
fn two_tools() -> String {
    let rpc = format!(
        "{{\"command\": [\"python3\", \"-u\", {}, \"--ready\", \"READY\"], \"protocol\": \"jsonrpc\", \
         \"startup\": {{\"ready_line\": \"READY\", \"timeout_ms\": 20000}}}}",
        serde_json::to_string(&rpc_tool()).unwrap()
    );
    registry(&[("echo", testtool_spec(2, &[], "")), ("rpc", rpc)])
}

#[test]
fn every_pool_method_works_through_the_service() {
    let s = Served::start("methods", &two_tools(), &[]);
    let client = s.client();
    assert_eq!(client.tools().unwrap(), vec!["echo", "rpc"]);
    let pool = client.pool("echo").unwrap();
    assert!(pool.is_service());
    assert_eq!(pool.len(), 2);
    assert_eq!(pool.spec().count, 2);

    // Requests: plain, sticky, with options, bytes, batches.
    let r = pool.request("hello", T).unwrap();
    assert_eq!(r.text, "hello");
    assert!(r.instance.is_some());
    let a = pool.request_sticky("k", "one", T).unwrap();
    let b = pool.request_sticky("k", "two", T).unwrap();
    assert_eq!((a.text.as_str(), b.text.as_str()), ("one", "two"));
    assert_eq!(a.instance, b.instance);
    let opts = RequestOptions {
        key: None,
        retry: Some(Retry::new(1, [toolpool::Cause::Dead])),
    };
    assert_eq!(pool.request_with("three", &opts, T).unwrap().text, "three");
    let payloads: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    let results = pool.map(&payloads, T);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.as_ref().unwrap().text, format!("m{i}"));
    }

    // Lines: to one instance, to any, routed.
    pool.send(1, "line-one").unwrap();
    assert_eq!(pool.read_line(1, T).unwrap(), "line-one");
    let i = pool.send_routed("routed").unwrap();
    assert_eq!(pool.read_any(T).unwrap(), (i, "routed".to_string()));
    pool.send(0, "stderr:1").unwrap();
    assert!(!pool.read_stderr_line(0, T).unwrap().is_empty());
    // The test tool answers `stderr:N` on stdout too once it is done.
    let _ = pool.read_line(0, T);

    // A lease: exclusive use, its own requests and lines.
    {
        let lease = pool.lease(T).unwrap();
        assert!(lease.pid() > 0);
        assert_eq!(lease.request("leased", T).unwrap(), "leased");
        lease.send("raw").unwrap();
        assert_eq!(lease.read_line(T).unwrap(), "raw");
        let st = pool.status();
        assert!(st.instances[lease.index()].leased);
    }
    assert!(eventually(T, || pool
        .status()
        .instances
        .iter()
        .all(|i| !i.leased)));

    // Status, health, metrics, Prometheus.
    let st = pool.status();
    assert_eq!(st.tool, "echo");
    assert_eq!(st.service_error, None);
    assert_eq!(pool.health().alive, 2);
    assert!(pool.metrics().requests_ok >= 54);
    assert!(pool
        .metrics_prometheus()
        .contains("toolpool_requests_total"));

    // Restart, resize, reload.
    let before = st.instances[0].pid;
    pool.restart(0).unwrap();
    assert_ne!(pool.status().instances[0].pid, before);
    pool.resize(3).unwrap();
    assert_eq!(pool.len(), 3);
    pool.reload_json(&testtool_spec(3, &["--prefix", "P:"], ""))
        .unwrap();
    assert_eq!(pool.request("x", T).unwrap().text, "P:x");

    // JSON-RPC: a request and a notification.
    let rpc = client.pool("rpc").unwrap();
    let r = rpc
        .request(r#"{"method": "add", "params": [2, 3]}"#, T)
        .unwrap();
    assert_eq!(r.text, "5");
    rpc.notify(0, r#"{"method": "log", "params": {"msg": "hi"}}"#)
        .unwrap();

    // Shutting the handle down ends the handle, not the service's pool.
    pool.shutdown(Duration::ZERO);
    assert!(pool.is_shut_down());
    assert!(matches!(pool.request("x", T), Err(Error::ShutDown(_))));
    let again = client.pool("echo").unwrap();
    assert_eq!(again.request("still", T).unwrap().text, "P:still");
}

#[test]
fn errors_come_back_as_the_local_call_returns_them() {
    let s = Served::start("errors", &two_tools(), &[]);
    let client = s.client();
    match client.pool("nope") {
        Err(Error::UnknownTool { tool, known }) => {
            assert_eq!(tool, "nope");
            assert_eq!(known, vec!["echo", "rpc"]);
        }
        other => panic!("want UnknownTool, got {other:?}"),
    }
    let pool = client.pool("echo").unwrap();
    assert!(matches!(
        pool.read_line(7, T),
        Err(Error::IndexOutOfRange { index: 7, .. })
    ));
    let t0 = Instant::now();
    let e = pool
        .request("delay:3000:late", Duration::from_millis(200))
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(2));
    let rpc = client.pool("rpc").unwrap();
    match rpc.request(r#"{"method": "fail", "params": {}}"#, T) {
        Err(Error::Tool { .. }) => {}
        other => panic!("want a tool error, got {other:?}"),
    }
}

#[test]
fn a_cancelled_call_ends_within_milliseconds_and_the_pool_serves_on() {
    let s = Served::start(
        "cancel",
        &registry(&[("echo", testtool_spec(1, &[], ""))]),
        &[],
    );
    let pool = s.client().pool("echo").unwrap();
    let token = CancelToken::new();
    let t = token.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        t.cancel();
    });
    let t0 = Instant::now();
    let e = pool
        .request(
            "delay:10000:never",
            Wait::new(Duration::from_secs(20)).with_cancel(&token),
        )
        .unwrap_err();
    canceller.join().unwrap();
    assert!(e.is_cancelled(), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    // The instance was recycled (lines framing): the late reply reaches nobody.
    assert_eq!(
        pool.request("after", Duration::from_secs(20)).unwrap().text,
        "after"
    );
}

/// Not a test: the client process of `a_client_killed_holding_a_lease_frees_it_at_once`
/// (run by it as this binary with `--ignored --exact`). Leases an instance, says so on
/// stdout, and waits to be killed.
#[test]
#[ignore = "a helper process, run by another test"]
fn lease_holder_process() {
    let socket = std::env::var("TOOLPOOL_TEST_SOCKET").expect("TOOLPOOL_TEST_SOCKET");
    let pool = toolpool::Client::connect(socket)
        .unwrap()
        .pool("echo")
        .unwrap();
    let lease = pool.lease(T).unwrap();
    println!("LEASED {}", lease.index());
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn a_client_killed_holding_a_lease_frees_it_at_once() {
    let s = Served::start(
        "lease-kill",
        &registry(&[("echo", testtool_spec(1, &[], ""))]),
        &[],
    );
    let mut holder = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lease_holder_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TOOLPOOL_TEST_SOCKET", &s.socket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("LEASED") {
        line.clear();
        assert_ne!(
            out.read_line(&mut line).unwrap(),
            0,
            "the holder ended before leasing"
        );
    }
    let pool = s.client().pool("echo").unwrap();
    assert!(pool.status().instances[0].leased);
    // The only instance is leased: a request waits.
    assert!(pool
        .request("x", Duration::from_millis(200))
        .unwrap_err()
        .is_timeout());
    holder.kill().unwrap();
    holder.wait().unwrap();
    let killed = Instant::now();
    assert!(eventually(Duration::from_secs(1), || !pool
        .status()
        .instances[0]
        .leased));
    assert!(killed.elapsed() < Duration::from_secs(1));
    assert_eq!(pool.request("again", T).unwrap().text, "again");
}

/// The tool pids of every pool of the service.
fn tool_pids(client: &toolpool::Client) -> Vec<i32> {
    let mut pids = Vec::new();
    for tool in client.tools().unwrap() {
        let st = client.pool(&tool).unwrap().status();
        pids.extend(st.instances.iter().filter_map(|i| i.pid));
    }
    pids
}

#[test]
fn the_service_killed_leaves_no_tool_process() {
    // SIGKILL to the service: the watchdog kills what it left. SIGKILL to the watchdog:
    // the service shuts down. Either way no tool is alive 2 s later. A tool that ignores
    // SIGTERM and one with a grandchild make it harder.
    let reg = registry(&[
        ("echo", testtool_spec(2, &["--ignore-term"], "")),
        ("grand", testtool_spec(1, &["--grandchild"], "")),
    ]);
    for victim in ["service", "watchdog"] {
        let s = Served::start("orphans", &reg, &[]);
        let pids = tool_pids(&s.client());
        assert_eq!(pids.len(), 3);
        let grand = children_of(pids[2]);
        assert!(pids.iter().chain(&grand).all(|p| process_alive(*p)));
        let pid = match victim {
            "service" => s.service_pid(),
            _ => s.child.id() as i32,
        };
        // SAFETY: SIGKILL to a process this test started (or its child).
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let until = Instant::now() + Duration::from_secs(2);
        while pids.iter().chain(&grand).any(|p| process_alive(*p)) {
            assert!(
                Instant::now() < until,
                "{victim} killed: still alive after 2 s: {:?}",
                pids.iter()
                    .chain(&grand)
                    .filter(|p| process_alive(**p))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
