//! Protocol servers: a start-up handshake, the `lsp` framing, notifications from
//! the host, requests from the tool. Against real servers nobody here wrote (installed from
//! PyPI into target/protocol-venv by tests/protocol_venv.sh) and, for the error paths,
//! against examples/tools/rpc_tool.py.

mod common;

use common::{private, protocol_venv, rpc_tool, T};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use toolpool::{
    Error, HandshakeMessage, Pool, Protocol, Restart, RestartPolicy, Startup, State, ToolSpec,
};

fn bin(name: &str) -> String {
    format!("{}/bin/{name}", protocol_venv())
}

fn msg(method: &str, params: Value) -> HandshakeMessage {
    HandshakeMessage {
        method: method.into(),
        params: Some(params),
        notification: false,
    }
}

fn note(method: &str, params: Option<Value>) -> HandshakeMessage {
    HandshakeMessage {
        method: method.into(),
        params,
        notification: true,
    }
}

/// MCP's handshake: `initialize`, then `notifications/initialized`.
fn mcp_handshake() -> Vec<HandshakeMessage> {
    vec![
        msg(
            "initialize",
            json!({"protocolVersion": "2024-11-05", "capabilities": {},
                   "clientInfo": {"name": "toolpool-tests", "version": "0"}}),
        ),
        note("notifications/initialized", None),
    ]
}

fn mcp_spec(count: usize) -> ToolSpec {
    ToolSpec {
        id: "mcp-time".into(),
        count,
        protocol: Protocol::Jsonrpc,
        max_in_flight: 4,
        startup: Startup {
            timeout_ms: 30_000,
            handshake: mcp_handshake(),
            ..Default::default()
        },
        ..ToolSpec::new([
            bin("mcp-server-time"),
            "--local-timezone".into(),
            "UTC".into(),
        ])
    }
}

fn workspace() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lsp-workspace");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn lsp_spec(count: usize) -> ToolSpec {
    let root = format!("file://{}", workspace().display());
    ToolSpec {
        id: "jedi".into(),
        count,
        protocol: Protocol::Lsp,
        max_in_flight: 4,
        startup: Startup {
            timeout_ms: 30_000,
            handshake: vec![
                msg(
                    "initialize",
                    json!({"processId": null, "rootUri": root, "capabilities": {
                        "workspace": {"configuration": true},
                        "textDocument": {"documentSymbol": {"hierarchicalDocumentSymbolSupport": true}}}}),
                ),
                note("initialized", Some(json!({}))),
            ],
            ..Default::default()
        },
        ..ToolSpec::new([bin("jedi-language-server")])
    }
}

fn time_call(tz: &str) -> String {
    json!({"method": "tools/call", "params": {"name": "get_current_time", "arguments": {"timezone": tz}}})
        .to_string()
}

fn status_of(pool: &Pool, i: usize) -> toolpool::InstanceStatus {
    pool.status().instances[i].clone()
}

#[test]
fn mcp_handshake_on_start_then_a_tools_call_batch() {
    let pool = private(mcp_spec(2));
    for i in 0..2 {
        let s = status_of(&pool, i);
        assert_eq!(s.state, State::Ready);
        let reply = s.handshake_reply.expect("handshake_reply in status");
        assert_eq!(reply["serverInfo"]["name"], "mcp-time", "{reply}");
        assert!(reply["capabilities"]["tools"].is_object(), "{reply}");
    }
    let zones = ["UTC", "Europe/Paris", "Asia/Tokyo", "America/New_York"];
    let calls: Vec<String> = (0..40).map(|k| time_call(zones[k % 4])).collect();
    let results = pool.map(&calls, Duration::from_secs(20));
    assert_eq!(results.len(), 40);
    for (k, r) in results.into_iter().enumerate() {
        let reply = r.unwrap_or_else(|e| panic!("call {k}: {e}"));
        let v: Value = serde_json::from_str(&reply.text).unwrap();
        let text = v["content"][0]["text"].as_str().expect("text content");
        assert!(text.contains(zones[k % 4]), "call {k}: {text}");
        assert_ne!(v["isError"], true, "{text}");
    }
    let used: std::collections::BTreeSet<usize> = pool
        .status()
        .instances
        .iter()
        .filter(|s| s.requests > 0)
        .map(|s| s.index)
        .collect();
    assert_eq!(used.len(), 2, "both instances served");
    pool.shutdown(T);
}

#[test]
fn a_killed_mcp_server_is_handshaken_again_and_no_call_fails_after() {
    let pool = private(ToolSpec {
        restart: Restart {
            policy: RestartPolicy::Always,
            backoff_initial_ms: 10,
            ..Default::default()
        },
        ..mcp_spec(1)
    });
    assert!(pool.request(&time_call("UTC"), T).is_ok());
    let old = status_of(&pool, 0).pid.unwrap();
    // SAFETY: a pid toolpool started and still holds (not reaped while current).
    unsafe { libc::kill(old, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let back = loop {
        let s = status_of(&pool, 0);
        if s.state == State::Ready && s.pid.is_some_and(|p| p != old) {
            break s;
        }
        assert!(Instant::now() < deadline, "not back in 30 s: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(back.restarts, 1);
    assert!(back.handshake_reply.is_some(), "re-handshaken: {back:?}");
    // An MCP server that was not initialised would refuse these.
    for _ in 0..20 {
        let r = pool
            .request(&time_call("UTC"), T)
            .expect("call after restart");
        assert!(r.text.contains("UTC"), "{}", r.text);
    }
    pool.shutdown(T);
}

#[test]
fn lsp_did_open_then_document_symbol_through_a_lease() {
    let pool = private(lsp_spec(2));
    let reply = status_of(&pool, 0)
        .handshake_reply
        .expect("handshake_reply");
    assert_eq!(
        reply["serverInfo"]["name"], "jedi-language-server",
        "{reply}"
    );
    let path = workspace().join("shapes.py");
    let text = "class Circle:\n    def area(self):\n        return 3.14\n\ndef make_circle():\n    return Circle()\n";
    std::fs::write(&path, text).unwrap();
    let uri = format!("file://{}", path.display());
    let lease = pool.lease(T).unwrap();
    lease
        .notify(
            &json!({"method": "textDocument/didOpen", "params": {"textDocument": {
                "uri": uri, "languageId": "python", "version": 1, "text": text}}})
            .to_string(),
        )
        .unwrap();
    let symbols = lease
        .request(
            &json!({"method": "textDocument/documentSymbol",
                    "params": {"textDocument": {"uri": uri}}})
            .to_string(),
            Duration::from_secs(20),
        )
        .unwrap();
    let v: Value = serde_json::from_str(&symbols).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .expect("a symbol list")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(names.contains(&"Circle"), "{symbols}");
    assert!(names.contains(&"make_circle"), "{symbols}");
    // A hover on `Circle` in the opened (in-memory) document, same instance.
    let hover = lease
        .request(
            &json!({"method": "textDocument/hover", "params": {
                "textDocument": {"uri": uri}, "position": {"line": 4, "character": 6}}})
            .to_string(),
            Duration::from_secs(20),
        )
        .unwrap();
    assert!(hover.contains("make_circle"), "{hover}");
    drop(lease);
    let st = status_of(&pool, 0);
    assert_eq!(st.protocol_errors_tail, Vec::<String>::new());
    pool.shutdown(T);
}

#[test]
fn lsp_many_requests_in_flight_are_matched_by_id() {
    let pool = private(lsp_spec(1));
    let uris: Vec<String> = (0..3)
        .map(|k| {
            let path = workspace().join(format!("many{k}.py"));
            let text = format!("def only_in_file_{k}():\n    pass\n");
            std::fs::write(&path, &text).unwrap();
            let uri = format!("file://{}", path.display());
            pool.notify(
                0,
                &json!({"method": "textDocument/didOpen", "params": {"textDocument": {
                    "uri": uri, "languageId": "python", "version": 1, "text": text}}})
                .to_string(),
            )
            .unwrap();
            uri
        })
        .collect();
    let calls: Vec<String> = (0..30)
        .map(|k| {
            json!({"method": "textDocument/documentSymbol",
                   "params": {"textDocument": {"uri": uris[k % 3]}}})
            .to_string()
        })
        .collect();
    for (k, r) in pool
        .map(&calls, Duration::from_secs(30))
        .into_iter()
        .enumerate()
    {
        let text = r.unwrap_or_else(|e| panic!("{k}: {e}")).text;
        // Each caller gets the symbols of its own document.
        assert!(
            text.contains(&format!("only_in_file_{}", k % 3)),
            "{k}: {text}"
        );
        for other in (0..3).filter(|o| *o != k % 3) {
            assert!(
                !text.contains(&format!("only_in_file_{other}")),
                "{k}: {text}"
            );
        }
    }
    assert_eq!(pool.metrics().protocol_errors, 0);
    pool.shutdown(T);
}

/// The rpc tool over LSP framing, with `args` and `extra` spec settings.
fn rpc_lsp(count: usize, handshake: Vec<HandshakeMessage>) -> ToolSpec {
    ToolSpec {
        id: "rpc_lsp".into(),
        count,
        protocol: Protocol::Lsp,
        startup: Startup {
            timeout_ms: 20_000,
            handshake,
            ..Default::default()
        },
        ..ToolSpec::new([
            "python3".to_string(),
            "-u".into(),
            rpc_tool(),
            "--lsp".into(),
        ])
    }
}

#[test]
fn a_request_from_the_tool_is_answered_by_default_and_from_client_replies() {
    for protocol in [Protocol::Lsp, Protocol::Jsonrpc] {
        let spec = ToolSpec {
            protocol: protocol.clone(),
            client_replies: [("workspace/configuration".to_string(), json!([{"x": 1}]))]
                .into_iter()
                .collect(),
            ..rpc_lsp(1, vec![])
        };
        let spec = if protocol == Protocol::Jsonrpc {
            ToolSpec {
                command: vec!["python3".into(), "-u".into(), rpc_tool()],
                ..spec
            }
        } else {
            spec
        };
        let pool = private(spec);
        let ask = |m: &str| {
            let r = pool
                .request(
                    &json!({"method": "ask", "params": {"method": m}}).to_string(),
                    T,
                )
                .unwrap_or_else(|e| panic!("{protocol:?} {m}: {e}"));
            serde_json::from_str::<Value>(&r.text).unwrap()
        };
        let got = ask("workspace/configuration");
        assert_eq!(got["result"], json!([{"x": 1}]), "{protocol:?}: {got}");
        let got = ask("roots/list");
        assert_eq!(got["error"]["code"], -32601, "{protocol:?}: {got}");
        assert!(
            got["error"]["message"]
                .as_str()
                .unwrap()
                .contains("roots/list"),
            "{got}"
        );
        assert_eq!(status_of(&pool, 0).client_requests, 2);
        // The requests are also queued for the host to see.
        let seen = pool.read_line(0, T).unwrap();
        assert!(seen.contains("workspace/configuration"), "{seen}");
        pool.shutdown(T);
    }
}

/// ruff's language server, which asks the client `client/registerCapability` after
/// `initialized` when the client can register file watchers dynamically.
fn ruff_spec(client_replies: &[(&str, Value)]) -> ToolSpec {
    ToolSpec {
        id: "ruff".into(),
        protocol: Protocol::Lsp,
        cwd: Some(workspace()),
        client_replies: client_replies
            .iter()
            .map(|(m, v)| (m.to_string(), v.clone()))
            .collect(),
        startup: Startup {
            timeout_ms: 30_000,
            handshake: vec![
                msg(
                    "initialize",
                    json!({"processId": null, "capabilities": {"workspace": {
                        "didChangeWatchedFiles": {"dynamicRegistration": true}}}}),
                ),
                note("initialized", Some(json!({}))),
            ],
            ..Default::default()
        },
        ..ToolSpec::new([bin("ruff"), "server".into()])
    }
}

#[test]
fn a_real_language_server_asking_the_client_gets_an_answer() {
    for replies in [vec![("client/registerCapability", Value::Null)], vec![]] {
        let answered = !replies.is_empty();
        let pool = private(ruff_spec(&replies));
        let uri = format!("file://{}/fmt.py", workspace().display());
        pool.notify(
            0,
            &json!({"method": "textDocument/didOpen", "params": {"textDocument": {
                "uri": uri, "languageId": "python", "version": 1, "text": "x  =  1\n"}}})
            .to_string(),
        )
        .unwrap();
        let edits = pool
            .request(
                &json!({"method": "textDocument/formatting", "params": {
                    "textDocument": {"uri": uri}, "options": {"tabSize": 4, "insertSpaces": true}}})
                .to_string(),
                Duration::from_secs(30),
            )
            .unwrap();
        assert!(
            edits.text.contains("x = 1"),
            "answered={answered}: {}",
            edits.text
        );
        // The request it sent is queued for the host too, and was answered once.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        while seen.is_empty() && Instant::now() < deadline {
            while let Ok(l) = pool.read_line(0, Duration::from_millis(100)) {
                if l.contains("client/registerCapability") {
                    seen.push(l);
                }
            }
        }
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(status_of(&pool, 0).client_requests, 1);
        pool.shutdown(T);
    }
}

#[test]
fn notify_reaches_the_tool_in_both_framings_and_is_refused_elsewhere() {
    for lsp in [true, false] {
        let mut spec = rpc_lsp(2, vec![]);
        if !lsp {
            spec.protocol = Protocol::Jsonrpc;
            spec.command.pop();
        }
        let pool = private(spec);
        pool.notify(1, r#"{"method":"didSomething","params":{"n":1}}"#)
            .unwrap();
        {
            let lease = pool.lease(T).unwrap();
            lease.notify(r#"{"method":"fromLease"}"#).unwrap();
            let notes: Value =
                serde_json::from_str(&lease.request(r#"{"method":"notes"}"#, T).unwrap()).unwrap();
            let mut want = vec![json!(["fromLease", null])];
            if lease.index() == 1 {
                want.insert(0, json!(["didSomething", {"n": 1}]));
            }
            assert_eq!(notes, Value::from(want), "lsp={lsp}");
        }
        // Bad payloads name what is wrong.
        for bad in ["", "[]", r#"{"params":{}}"#, r#"{"method":"m","id":3}"#] {
            match pool.notify(0, bad) {
                Err(Error::InvalidArgument(m)) => assert!(m.contains("payload"), "{m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(matches!(
            pool.notify(9, r#"{"method":"m"}"#),
            Err(Error::IndexOutOfRange { .. })
        ));
        pool.shutdown(T);
        assert!(matches!(
            pool.notify(0, r#"{"method":"m"}"#),
            Err(Error::ShutDown(_))
        ));
    }
    let lines = private(common::tool(1, &[]));
    match lines.notify(0, r#"{"method":"m"}"#) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("jsonrpc or lsp"), "{m}"),
        other => panic!("{other:?}"),
    }
    lines.shutdown(T);
}

#[test]
fn notify_to_a_given_instance_is_seen_by_that_instance_only() {
    let pool = private(rpc_lsp(2, vec![]));
    pool.notify(1, r#"{"method":"only1","params":[1]}"#)
        .unwrap();
    let l0 = pool.lease(T).unwrap();
    let l1 = pool.lease(T).unwrap();
    let (a, b) = if l0.index() == 0 { (l0, l1) } else { (l1, l0) };
    let notes = |l: &toolpool::Lease| -> Value {
        serde_json::from_str(&l.request(r#"{"method":"notes"}"#, T).unwrap()).unwrap()
    };
    assert_eq!(notes(&a), json!([]));
    assert_eq!(notes(&b), json!([["only1", [1]]]));
    drop((a, b));
    pool.shutdown(T);
}

#[test]
fn the_handshake_runs_before_any_request_on_every_start() {
    let pool = private(ToolSpec {
        restart: Restart {
            policy: RestartPolicy::Always,
            backoff_initial_ms: 10,
            ..Default::default()
        },
        ..rpc_lsp(
            1,
            vec![
                msg("echo", json!({"hello": "from the handshake"})),
                note("initialized", Some(json!({"n": 1}))),
            ],
        )
    });
    for round in 0..2 {
        let s = status_of(&pool, 0);
        assert_eq!(
            s.handshake_reply,
            Some(json!({"hello": "from the handshake"}))
        );
        let notes: Value =
            serde_json::from_str(&pool.request(r#"{"method":"notes"}"#, T).unwrap().text).unwrap();
        assert_eq!(notes, json!([["initialized", {"n": 1}]]), "round {round}");
        if round == 0 {
            let old = s.pid.unwrap();
            let _ = pool.request(r#"{"method":"crash"}"#, T);
            let deadline = Instant::now() + Duration::from_secs(20);
            while !(status_of(&pool, 0).state == State::Ready
                && status_of(&pool, 0).pid != Some(old))
            {
                assert!(Instant::now() < deadline, "not restarted");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    pool.shutdown(T);
}

#[test]
fn a_handshake_error_fails_the_start_with_the_tools_error() {
    let spec = rpc_lsp(
        1,
        vec![msg("fail", json!({"code": -32099, "message": "not today"}))],
    );
    match Pool::from_spec(spec) {
        Err(Error::Spawn(m)) => {
            assert!(m.contains("handshake message 0 ('fail')"), "{m}");
            assert!(m.contains("-32099") && m.contains("not today"), "{m}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_handshake_timeout_fails_the_start_within_the_startup_timeout() {
    let mut spec = rpc_lsp(1, vec![msg("sleep", json!({"ms": 60_000}))]);
    spec.startup.timeout_ms = 1_000;
    let t0 = Instant::now();
    match Pool::from_spec(spec) {
        Err(Error::Spawn(m)) => {
            assert!(
                m.contains("no reply within startup.timeout_ms (1000 ms)"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
}

#[test]
fn a_failing_handshake_on_restart_counts_toward_the_restart_cap() {
    // A handshake that always fails, on a lazy pool: the first start fails for the caller,
    // then the supervisor retries, each failed start counting toward the cap.
    let spec = ToolSpec {
        lazy: true,
        restart: Restart {
            policy: RestartPolicy::Always,
            backoff_initial_ms: 5,
            backoff_max_ms: 20,
            max_restarts: 3,
            window_ms: 60_000,
        },
        ..rpc_lsp(1, vec![msg("fail", json!({"message": "refused"}))])
    };
    let pool = private(spec);
    match pool.request(r#"{"method":"ping"}"#, T) {
        Err(Error::Spawn(m)) => assert!(m.contains("refused"), "{m}"),
        other => panic!("{other:?}"),
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status_of(&pool, 0);
        if s.state == State::Failed {
            assert!(
                s.failed_reason
                    .as_deref()
                    .unwrap()
                    .contains("restart.max_restarts"),
                "{s:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never marked failed: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    pool.shutdown(T);
}

#[test]
fn bad_lsp_headers_are_counted_kept_and_the_stream_resynchronised() {
    let mut spec = rpc_lsp(1, vec![]);
    spec.limits.max_line_bytes = 4096;
    let pool = private(spec);
    let r = pool.request(r#"{"method":"bad_headers"}"#, T).unwrap();
    assert_eq!(r.text, r#""after bad headers""#);
    let s = status_of(&pool, 0);
    let tail = s.protocol_errors_tail.join("\n");
    for why in [
        "no Content-Length header",
        "'twelve' is not a decimal number",
        "exceeds the body cap of 4096 bytes (limits.max_line_bytes)",
        "not JSON",
    ] {
        assert!(tail.contains(why), "{why}: {tail}");
    }
    assert_eq!(pool.metrics().protocol_errors, 4, "{tail}");
    // The same incarnation goes on serving.
    let pid = s.pid;
    for k in 0..5 {
        let r = pool
            .request(&format!(r#"{{"method":"add","params":[{k},1]}}"#), T)
            .unwrap();
        assert_eq!(r.text, (k + 1).to_string());
    }
    assert_eq!(status_of(&pool, 0).pid, pid);
    pool.shutdown(T);
}

#[test]
fn spec_keys_are_checked() {
    let bad = [
        (
            r#"{"command":["x"],"startup":{"handshake":[{"method":"initialize"}]}}"#,
            "startup.handshake': needs the jsonrpc or lsp protocol",
        ),
        (
            r#"{"command":["x"],"protocol":"jsonrpc","startup":{"handshake":[{"method":"a","params":3}]}}"#,
            "startup.handshake[0].params': must be an array or an object",
        ),
        (
            r#"{"command":["x"],"protocol":"jsonrpc","startup":{"handshake":[{"method":"a","id":3}]}}"#,
            "unknown field `id`",
        ),
        (
            r#"{"command":["x"],"protocol":"lsp","startup":{"ready_line":"READY"}}"#,
            "the lsp protocol has no ready line",
        ),
        (
            r#"{"command":["x"],"client_replies":{"a":1}}"#,
            "client_replies': needs the jsonrpc or lsp protocol",
        ),
    ];
    for (json, want) in bad {
        match ToolSpec::from_json(json) {
            Err(Error::Config(m)) => assert!(m.contains(want), "{json}: {m}"),
            other => panic!("{json}: {other:?}"),
        }
    }
    let ok = ToolSpec::from_json(
        r#"{"command":["x"],"protocol":"lsp","max_in_flight":8,"client_replies":{"workspace/configuration":[null]},
            "startup":{"handshake":[{"method":"initialize","params":{}},{"method":"initialized","params":{},"notification":true}]}}"#,
    )
    .unwrap();
    assert_eq!(ok.protocol, Protocol::Lsp);
    assert!(ok.startup.handshake[1].notification);
    // Round trip through JSON keeps the new keys.
    let again = ToolSpec::from_json(&serde_json::to_string(&ok).unwrap()).unwrap();
    assert_eq!(again, ok);
}

#[test]
fn lsp_late_replies_are_dropped_and_counted_never_given_to_the_next_caller() {
    let mut spec = rpc_lsp(1, vec![]);
    spec.max_in_flight = 4;
    let pool = private(spec);
    match pool.request(
        r#"{"method":"sleep","params":{"ms":300,"value":"late"}}"#,
        Duration::from_millis(50),
    ) {
        Err(Error::Timeout { .. }) => {}
        other => panic!("{other:?}"),
    }
    let pid = status_of(&pool, 0).pid;
    // The next caller gets its own reply, not the late one.
    let r = pool
        .request(
            r#"{"method":"sleep","params":{"ms":500,"value":"mine"}}"#,
            T,
        )
        .unwrap();
    assert_eq!(r.text, r#""mine""#);
    assert_eq!(pool.metrics().late_replies_dropped, 1);
    // Matched by id: no recycle, as in jsonrpc.
    assert_eq!(status_of(&pool, 0).pid, pid);
    pool.shutdown(T);
}
