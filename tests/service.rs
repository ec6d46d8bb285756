//! `toolpool serve` and its clients: every pool method through the service, errors as the
//! local call returns them, cancellation, leases that die with their client, the limit
//! shared by every client, bad frames, reloads under load, restarts, and no orphans.

mod common;
#[path = "common/service.rs"]
mod service;

use common::*;
use service::*;
use std::io::{BufRead, Write};
use std::os::unix::process::ExitStatusExt as _;
use std::time::{Duration, Instant};
use toolpool::{CancelToken, Client, Error, RequestOptions, Retry, Wait};

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

#[test]
fn a_client_of_another_user_is_refused_with_a_message() {
    // The socket file lets everyone in (0666); the peer check does not.
    let s = Served::start(
        "other-user",
        &registry(&[("echo", testtool_spec(1, &[], ""))]),
        &["--socket-mode", "0666"],
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&s.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666);
    std::fs::set_permissions(&s.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    // `nobody` runs a copy of the command it can read.
    let bin = s.dir.join("toolpool");
    std::fs::copy(toolpool_bin(), &bin).unwrap();
    let out = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(&bin)
        .args(["run", "--tool", "echo"])
        .env("TOOLPOOL_SERVER", format!("unix:{}", s.socket.display()))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("runuser runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("uid 65534") && err.contains("may not use this toolpool service"),
        "{err}"
    );
    assert!(s.wait_logged("refused client", T), "{:?}", s.log.lock());
    // The service serves on.
    assert_eq!(
        s.client()
            .pool("echo")
            .unwrap()
            .request("ok", T)
            .unwrap()
            .text,
        "ok"
    );
}

#[test]
fn random_and_truncated_frames_close_their_connection_only() {
    let s = Served::start(
        "fuzz",
        &registry(&[("echo", testtool_spec(1, &[], ""))]),
        &[],
    );
    let client = s.client();
    let pool = client.pool("echo").unwrap();
    let threads_before = threads_of(s.service_pid());
    let hello = serde_json::json!({"hello": "toolpool", "version": 1, "pid": 1, "build": "x"});
    let hello = frame(hello.to_string().as_bytes(), b"");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..10_000u64 {
        let mut sock = std::os::unix::net::UnixStream::connect(&s.socket).unwrap();
        let r = next();
        let bytes: Vec<u8> = match i % 5 {
            // Random bytes.
            0 => (0..(r % 64)).map(|_| next() as u8).collect(),
            // A header announcing more than the limit.
            1 => frame_header(u32::MAX, 7),
            // A hello cut short.
            2 => hello[..(r as usize % hello.len())].to_vec(),
            // A hello, then a call that is not JSON.
            3 => [hello.clone(), frame(b"{not json", b"")].concat(),
            // A hello, then a truncated call.
            _ => {
                let call = frame(
                    br#"{"id":1,"op":"request","tool":"echo","timeout_ms":100}"#,
                    b"x",
                );
                [
                    hello.clone(),
                    call[..call.len() - 1 - (r as usize % 8)].to_vec(),
                ]
                .concat()
            }
        };
        let _ = sock.write_all(&bytes);
        drop(sock);
        if i % 1000 == 999 {
            assert_eq!(
                pool.request("alive", T).unwrap().text,
                "alive",
                "after {i} frames"
            );
        }
    }
    assert!(s.logged("closing the connection"));
    // Every connection's thread is gone again.
    let pid = s.service_pid();
    assert!(
        eventually(Duration::from_secs(10), || threads_of(pid)
            <= threads_before),
        "{} threads, {threads_before} before",
        threads_of(pid)
    );
}

/// One frame: the header, `json`, `data`.
fn frame(json: &[u8], data: &[u8]) -> Vec<u8> {
    [
        frame_header(json.len() as u32, data.len() as u32),
        json.to_vec(),
        data.to_vec(),
    ]
    .concat()
}

fn frame_header(json: u32, data: u32) -> Vec<u8> {
    [json.to_be_bytes(), data.to_be_bytes()].concat()
}

/// Threads of process `pid`.
fn threads_of(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

#[test]
fn sighup_reloads_the_registry_under_load_and_fails_no_request() {
    // `a` changes a reloadable key (its argv), `b` also one that needs a new pool (its
    // routing), `c` goes away, `d` comes.
    let before = registry(&[
        ("a", testtool_spec(2, &["--prefix", "A1:"], "")),
        ("b", testtool_spec(1, &["--prefix", "B1:"], "")),
        ("c", testtool_spec(1, &[], "")),
    ]);
    let after = registry(&[
        ("a", testtool_spec(2, &["--prefix", "A2:"], "")),
        (
            "b",
            testtool_spec(1, &["--prefix", "B2:"], "\"routing\": \"least_busy\""),
        ),
        ("d", testtool_spec(1, &[], "")),
    ]);
    let s = Served::start("sighup", &before, &[]);
    let client = s.client();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = ["a", "b"]
        .into_iter()
        .flat_map(|tool| [tool; 2])
        .enumerate()
        .map(|(k, tool)| {
            let pool = client.pool(tool).unwrap();
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut seen = std::collections::BTreeSet::new();
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let payload = format!("{k}-{n}");
                    let r = pool
                        .request(&payload, Duration::from_secs(20))
                        .unwrap_or_else(|e| panic!("{tool}: {e}"));
                    let (prefix, rest) = r.text.split_once(':').unwrap();
                    assert_eq!(rest, payload, "a reply for another request");
                    seen.insert(prefix.to_string());
                    n += 1;
                }
                (n, seen)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&s.registry, after).unwrap();
    s.signal(libc::SIGHUP);
    assert!(
        s.wait_logged("reloaded", Duration::from_secs(30)),
        "{:?}",
        s.log.lock()
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for (k, h) in load.into_iter().enumerate() {
        let (n, seen) = h.join().expect("no request failed");
        assert!(n > 0);
        let tool = if k < 2 { "A" } else { "B" };
        assert!(
            seen.contains(&format!("{tool}1")) && seen.contains(&format!("{tool}2")),
            "{seen:?}"
        );
    }
    assert_eq!(client.tools().unwrap(), vec!["a", "b", "d"]);
    assert!(matches!(client.pool("c"), Err(Error::UnknownTool { .. })));
    assert_eq!(
        client.pool("d").unwrap().request("new", T).unwrap().text,
        "new"
    );
    let log = s.log.lock().join("\n");
    assert!(
        log.contains(r#""added":["d"]"#) && log.contains(r#""reloaded":["a"]"#),
        "{log}"
    );
    assert!(
        log.contains(r#""replaced":["b"]"#) && log.contains(r#""removed":["c"]"#),
        "{log}"
    );
}

#[test]
fn a_restarted_service_fails_the_calls_in_flight_and_the_next_call_reconnects() {
    let s = Served::start(
        "restart",
        &registry(&[("echo", testtool_spec(1, &[], ""))]),
        &[],
    );
    let client = s.client();
    let pool = client.pool("echo").unwrap();
    assert_eq!(pool.request("before", T).unwrap().text, "before");
    let slow = {
        let pool = client.pool("echo").unwrap();
        std::thread::spawn(move || pool.request("delay:5000:slow", Duration::from_secs(20)))
    };
    std::thread::sleep(Duration::from_millis(300));
    let (dir, socket, reg) = (s.dir.clone(), s.socket.clone(), s.registry.clone());
    // SAFETY: SIGKILL to the service process this test started.
    unsafe { libc::kill(s.service_pid(), libc::SIGKILL) };
    match slow.join().unwrap() {
        Err(Error::Service(m)) => assert!(m.contains("went away"), "{m}"),
        other => panic!("want a service error, got {other:?}"),
    }
    assert!(matches!(pool.request("down", T), Err(Error::Service(_))));
    drop(s);
    // A new service on the same (stale) socket path: the same client and pool go on.
    let s2 = Served::start_at(dir, socket, reg, &[]);
    assert_eq!(pool.request("after", T).unwrap().text, "after");
    drop(s2);
}

#[test]
fn a_live_service_is_refused_a_stale_socket_replaced_and_the_mode_kept() {
    let s = Served::start(
        "live",
        &registry(&[("echo", testtool_spec(1, &[], ""))]),
        &["--socket-mode", "0660"],
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&s.socket).unwrap().permissions().mode() & 0o777,
        0o660
    );
    let second = std::process::Command::new(toolpool_bin())
        .args(["serve", "--registry"])
        .arg(&s.registry)
        .arg("--socket")
        .arg(&s.socket)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(err.contains("already listens on"), "{err}");
    // The first one serves on.
    assert_eq!(
        s.client()
            .pool("echo")
            .unwrap()
            .request("x", T)
            .unwrap()
            .text,
        "x"
    );
    // Killed outright, it leaves its socket file; the next start replaces it.
    let (dir, socket, reg) = (s.dir.clone(), s.socket.clone(), s.registry.clone());
    // SAFETY: SIGKILL to the service process this test started.
    unsafe { libc::kill(s.service_pid(), libc::SIGKILL) };
    drop(s);
    assert!(is_socket(&socket));
    let s2 = Served::start_at(dir, socket.clone(), reg, &[]);
    assert_eq!(
        s2.client()
            .pool("echo")
            .unwrap()
            .request("y", T)
            .unwrap()
            .text,
        "y"
    );
    // A graceful stop removes it.
    assert!(s2.stop().success());
    assert!(!socket.exists());
}

#[test]
fn a_flood_gets_saturated_and_the_service_stays_bounded() {
    // One instance, two waiters at most: of four callers at once, one is Saturated. And at
    // most 6 connections: the four callers' (kept idle by their client) and two more
    // clients; the next is refused by name.
    let s = Served::start(
        "flood",
        &registry(&[(
            "echo",
            testtool_spec(1, &[], "\"limits\": {\"max_waiting\": 2}"),
        )]),
        &["--max-clients", "6"],
    );
    let client = s.client();
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let pool = client.pool("echo").unwrap();
            std::thread::spawn(move || pool.request("delay:1000:x", Duration::from_secs(20)))
        })
        .collect();
    let results: Vec<_> = callers.into_iter().map(|h| h.join().unwrap()).collect();
    let saturated = results
        .iter()
        .filter(|r| matches!(r, Err(Error::Saturated { .. })))
        .count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!((ok, saturated), (3, 1), "{results:?}");
    let mut more = Vec::new();
    let refused = loop {
        match Client::connect(&s.socket) {
            Ok(c) => more.push(c),
            Err(e) => break e,
        }
        assert!(more.len() <= 2, "a seventh connection was let in");
    };
    assert_eq!(more.len(), 2);
    match refused {
        Error::Service(m) => assert!(
            m.contains("too many clients") && m.contains("--max-clients"),
            "{m}"
        ),
        other => panic!("want a service error, got {other:?}"),
    }
    assert!(s.wait_logged("too many clients", T));
    // Clients that leave make room.
    drop(more);
    assert!(eventually(T, || Client::connect(&s.socket).is_ok()));
}

#[test]
fn systemd_socket_activation_serves_the_socket_it_is_given() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let dir = fresh_dir("systemd");
    let socket = dir.join("activated.sock");
    let registry_path = dir.join("tools.json");
    std::fs::write(
        &registry_path,
        registry(&[("echo", testtool_spec(1, &[], ""))]),
    )
    .unwrap();
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let fd = listener.as_raw_fd();
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" serve --registry \"$1\"")
        .arg(toolpool_bin())
        .arg(&registry_path)
        .stderr(std::process::Stdio::null());
    // SAFETY: only dup2 and fcntl between fork and exec. The listener may be fd 3 already:
    // then dup2 does nothing and the close-on-exec flag must be cleared by hand.
    unsafe {
        cmd.pre_exec(move || {
            let ok = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(fd, 3) == 3
            };
            if !ok {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(listener);
    let until = Instant::now() + Duration::from_secs(30);
    let client = loop {
        if let Ok(c) = Client::connect(&socket) {
            break c;
        }
        assert!(Instant::now() < until, "no answer on the activated socket");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        client.pool("echo").unwrap().request("hi", T).unwrap().text,
        "hi"
    );
    // SAFETY: SIGTERM to our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

#[test]
fn metrics_and_status_over_http_and_the_limit_through_the_client() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let s = Served::start(
        "http",
        &registry(&[("echo", testtool_spec(2, &[], ""))]),
        &["--metrics", &addr, "--max-processes", "5"],
    );
    let client = s.client();
    client.pool("echo").unwrap().request("x", T).unwrap();
    let get = |path: &str| {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        write!(c, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut body = String::new();
        std::io::Read::read_to_string(&mut c, &mut body).unwrap();
        body
    };
    let metrics = get("/metrics");
    assert!(
        metrics.starts_with("HTTP/1.") && metrics.contains(" 200 "),
        "{metrics}"
    );
    assert!(
        metrics.contains("toolpool_requests_total{tool=\"echo\""),
        "{metrics}"
    );
    assert!(metrics.contains("toolpool_process_limit 5"), "{metrics}");
    let status = get("/status");
    let json: serde_json::Value =
        serde_json::from_str(status.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["pid"], s.service_pid());
    assert_eq!(json["limit"]["max_allowed"], 5);
    assert_eq!(
        json["pools"]["echo"]["instances"].as_array().unwrap().len(),
        2
    );
    assert!(get("/nope").contains(" 404 "));

    // The limit calls go to the service.
    assert_eq!(client.limit_status().unwrap().active_processes, 2);
    assert_eq!(client.set_limit(7).unwrap(), 5);
    assert_eq!(toolpool::limit_status().unwrap().max_allowed, 7);
    let pids = tool_pids(&client);
    let report = toolpool::kill_all().unwrap();
    assert_eq!(report.killed_count, 2);
    assert!(eventually(T, || pids.iter().all(|p| !process_alive(*p))));
}

/// The service's status of registered processes: their pids.
fn registered(client: &Client) -> Vec<i32> {
    client
        .limit_status()
        .unwrap()
        .processes
        .iter()
        .filter(|p| p.kind == toolpool::ProcessKind::Registered)
        .map(|p| p.pid)
        .collect()
}

#[test]
fn permits_of_the_service_count_every_clients_processes() {
    // A limit of 2: one pool instance, one permit; a second permit waits and fails.
    let s = Served::start(
        "permits",
        &registry(&[("echo", testtool_spec(1, &[], ""))]),
        &["--max-processes", "2"],
    );
    let client = s.client();
    let permit = client.acquire(T).unwrap();
    assert!(permit.holds_slot());
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = sleeper.id() as i32;
    permit.register_pid(pid).unwrap();
    assert_eq!(permit.pid(), Some(pid));
    assert_eq!(registered(&client), vec![pid]);
    assert_eq!(client.limit_status().unwrap().active_processes, 2);
    let t0 = Instant::now();
    match client.acquire(Duration::from_millis(300)) {
        Err(Error::LimitReached { limit: 2, .. }) => {}
        other => panic!("want LimitReached, got {other:?}"),
    }
    assert!(t0.elapsed() >= Duration::from_millis(250));
    // The registered process ends: its slot comes back without a release.
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert!(eventually(T, || registered(&client).is_empty()));
    let second = client.acquire(T).unwrap();
    // A permit whose client dies gives its slot back at once: here, dropping it.
    drop(second);
    drop(permit);
    assert!(eventually(T, || client.limit_status().unwrap().reserved == 0));
    // The service's kill_all ends a registered process of another process.
    let permit = client.acquire(T).unwrap();
    let mut victim = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    permit.register_pid(victim.id() as i32).unwrap();
    assert!(client.kill_all().unwrap().killed_count >= 1);
    assert_eq!(victim.wait().unwrap().signal(), Some(libc::SIGKILL));
}

#[test]
fn toolpool_exec_runs_a_command_under_the_services_limit() {
    // A lazy pool starts nothing: the limit of 1 is the commands'.
    let s = Served::start(
        "exec",
        &registry(&[("echo", testtool_spec(1, &[], "\"lazy\": true"))]),
        &["--max-processes", "1"],
    );
    let client = s.client();
    let exec = |args: &[&str]| {
        let mut cmd = std::process::Command::new(toolpool_bin());
        cmd.arg("exec")
            .args(args)
            .env("TOOLPOOL_SERVER", format!("unix:{}", s.socket.display()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd
    };
    let out = exec(&["--", "sh", "-c", "echo out; exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    // One holds the slot; another waits for it, then fails, naming the limit.
    let mut holder = exec(&["--", "sleep", "30"]).spawn().unwrap();
    assert!(eventually(T, || registered(&client).len() == 1));
    let sleep_pid = registered(&client)[0];
    assert!(argv_of(sleep_pid).contains(&"sleep".to_string()));
    let refused = exec(&["--wait", "300ms", "--", "true"]).output().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(
        err.contains("maximum concurrent processes reached: 1 of 1"),
        "{err}"
    );
    // The service's kill_all ends the command; exec passes its status on.
    client.kill_all().unwrap();
    assert_eq!(holder.wait().unwrap().code(), Some(128 + libc::SIGKILL));
    assert!(eventually(T, || registered(&client).is_empty()));
    // Without a service, exec says so.
    let none = std::process::Command::new(toolpool_bin())
        .args(["exec", "--", "true"])
        .env_remove("TOOLPOOL_SERVER")
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no service"));
}

/// Not a test: the client process of `runs_of_a_process_using_the_service_count_there`
/// (run by it with `--ignored --exact`, `TOOLPOOL_SERVER` set). Starts a run, says its pid,
/// waits for a line on stdin, then runs one `run_output` and says its stdout.
#[test]
#[ignore = "a helper process, run by another test"]
fn run_client_process() {
    let run = toolpool::Run::start(toolpool::RunSpec::new(["sleep", "30"])).unwrap();
    println!("RUN {}", run.pid().unwrap());
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    drop(run);
    let out = toolpool::run_output(toolpool::RunSpec::new(["echo", "collected"]), T).unwrap();
    println!("OUTPUT {}", out.stdout_text().trim());
    std::io::stdout().flush().unwrap();
}

#[test]
fn runs_of_a_process_using_the_service_count_there() {
    let s = Served::start(
        "runs",
        &registry(&[("echo", testtool_spec(1, &[], ""))]),
        &[],
    );
    let client = s.client();
    let mut helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "run_client_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TOOLPOOL_SERVER", format!("unix:{}", s.socket.display()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(helper.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("RUN ") {
        line.clear();
        assert_ne!(
            out.read_line(&mut line).unwrap(),
            0,
            "the helper ended early"
        );
    }
    let pid: i32 = line.rsplit(' ').next().unwrap().trim().parse().unwrap();
    assert_eq!(registered(&client), vec![pid]);
    writeln!(helper.stdin.as_mut().unwrap()).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(rest.contains("OUTPUT collected"), "{rest}");
    assert!(helper.wait().unwrap().success());
    assert!(eventually(T, || registered(&client).is_empty()));
}

/// Not a test: the client process of `a_client_that_leaves_mid_call_cancels_the_call` (run
/// by it as this binary with `--ignored --exact`). Says so on stdout, then makes a request
/// the test tool answers after a minute, and is killed while it waits.
#[test]
#[ignore = "a helper process, run by another test"]
fn slow_caller_process() {
    let socket = std::env::var("TOOLPOOL_TEST_SOCKET").expect("TOOLPOOL_TEST_SOCKET");
    let pool = toolpool::Client::connect(socket)
        .unwrap()
        .pool("echo")
        .unwrap();
    println!("CALLING");
    let _ = pool.request("delay:60000:late", Duration::from_secs(120));
}

#[test]
fn a_client_that_leaves_mid_call_cancels_the_call() {
    // The only instance is busy with a call whose client is then killed: the service
    // cancels the call (the instance is recycled) and serves the next client at once, not
    // a minute later.
    let s = Served::start(
        "leave",
        &registry(&[("echo", testtool_spec(1, &[], ""))]),
        &[],
    );
    let pool = s.client().pool("echo").unwrap();
    let mut caller = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "slow_caller_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TOOLPOOL_TEST_SOCKET", &s.socket)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(T, || pool.status().instances[0].in_flight == 1),
        "the slow call never reached the instance"
    );
    caller.kill().unwrap();
    caller.wait().unwrap();
    let killed = Instant::now();
    assert_eq!(pool.request("next", T).unwrap().text, "next");
    assert!(
        killed.elapsed() < Duration::from_secs(3),
        "{:?}",
        killed.elapsed()
    );
}

#[test]
fn a_client_outlives_a_restart_of_the_service() {
    // The connections the client kept were closed by the old service: the next call
    // goes on a new connection to the new one, without an error.
    let s = Served::start(
        "restart",
        &registry(&[("echo", testtool_spec(1, &[], ""))]),
        &[],
    );
    let client = s.client();
    let pool = client.pool("echo").unwrap();
    assert_eq!(pool.request("before", T).unwrap().text, "before");
    let (dir, socket, reg) = (s.dir.clone(), s.socket.clone(), s.registry.clone());
    assert!(s.stop().success());
    let _again = Served::start_at(dir, socket, reg, &[]);
    assert_eq!(pool.request("after", T).unwrap().text, "after");
}

#[test]
fn a_cancel_sent_together_with_its_call_cancels_it() {
    // Call and cancel in one write: the service reads both at once, before the call runs.
    let s = Served::start(
        "cancel-same-read",
        &registry(&[("echo", testtool_spec(1, &[], ""))]),
        &[],
    );
    let mut sock = std::os::unix::net::UnixStream::connect(&s.socket).unwrap();
    let hello = serde_json::json!({"hello": "toolpool", "version": 1, "pid": 1, "build": "x"});
    sock.write_all(&frame(hello.to_string().as_bytes(), b""))
        .unwrap();
    let call = frame(
        br#"{"id":7,"op":"request","tool":"echo","timeout_ms":20000}"#,
        b"delay:5000:late",
    );
    let cancel = frame(br#"{"id":7,"op":"cancel"}"#, b"");
    let t0 = Instant::now();
    sock.write_all(&[call, cancel].concat()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The service's hello, then the answer.
    let mut answers = Vec::new();
    for _ in 0..2 {
        let mut header = [0u8; 8];
        std::io::Read::read_exact(&mut sock, &mut header).unwrap();
        let json_len = u32::from_be_bytes(header[..4].try_into().unwrap()) as usize;
        let data_len = u32::from_be_bytes(header[4..].try_into().unwrap()) as usize;
        let mut body = vec![0u8; json_len + data_len];
        std::io::Read::read_exact(&mut sock, &mut body).unwrap();
        answers.push(String::from_utf8_lossy(&body[..json_len]).into_owned());
    }
    assert!(
        answers[1].contains(r#""id":7"#) && answers[1].contains("Cancelled"),
        "{answers:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}
