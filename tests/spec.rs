//! Registry and spec parsing: every key, and errors that name the tool and the key.

use toolpool::{Error, Protocol, Registry, RestartPolicy, Routing, ToolSpec};

fn config_err(json: &str) -> String {
    match Registry::from_json(json) {
        Err(Error::Config(m)) => m,
        other => panic!("expected a config error for {json}, got {other:?}"),
    }
}

#[test]
fn a_full_registry_parses() {
    let reg = Registry::from_json(
        r#"{"tools": {"calc": {
            "command": ["bc", "-q"], "env": {"BC_LINE_LENGTH": "0"}, "env_clear": false,
            "cwd": "/tmp", "count": 3,
            "startup": {"ready_line": "READY", "timeout_ms": 500},
            "shutdown": {"grace_ms": 100},
            "limits": {"max_line_bytes": 4096, "queue_lines": 16, "max_waiting": 8, "stderr_tail_lines": 5},
            "protocol": {"marker": "END"}, "routing": "least_busy", "max_in_flight": 1,
            "oneshot": {"command": ["bc", "-q"], "input": "stdin"}, "fallback": true, "disabled": false,
            "restart": {"policy": "on_failure", "backoff_initial_ms": 50, "backoff_max_ms": 1000, "max_restarts": 3, "window_ms": 10000},
            "lazy": true, "idle_timeout_ms": 1000, "max_requests": 100, "max_lifetime_ms": 60000,
            "health": {"interval_ms": 1000, "timeout_ms": 200, "probe": "1", "expect": "1"}
        }, "rpc": {"command": ["python3"], "protocol": "jsonrpc", "max_in_flight": 4, "routing": "sticky"}}}"#,
    )
    .unwrap();
    let c = reg.get("calc").unwrap();
    assert_eq!(c.id, "calc");
    assert_eq!(c.count, 3);
    assert_eq!(c.protocol, Protocol::Marker("END".into()));
    assert_eq!(c.routing, Routing::LeastBusy);
    assert_eq!(c.restart.policy, RestartPolicy::OnFailure);
    assert_eq!(c.startup.ready_line.as_deref(), Some("READY"));
    assert_eq!(c.limits.queue_lines, 16);
    assert_eq!(c.health.as_ref().unwrap().expect.as_deref(), Some("1"));
    let r = reg.get("rpc").unwrap();
    assert_eq!(
        (r.protocol.clone(), r.max_in_flight, r.routing),
        (Protocol::Jsonrpc, 4, Routing::Sticky)
    );
    assert_eq!(r.count, 1);
}

#[test]
fn errors_name_the_tool_and_the_key() {
    let m = config_err(r#"{"tools": {"t1": {"command": ["cat"], "colour": 1}}}"#);
    assert!(m.contains("'t1'") && m.contains("colour"), "{m}");
    let m =
        config_err(r#"{"tools": {"t2": {"command": ["cat"], "startup": {"timeout_ms": "soon"}}}}"#);
    assert!(
        m.contains("'t2'") && m.contains("startup.timeout_ms"),
        "{m}"
    );
    let m = config_err(r#"{"tools": {"t3": {"command": []}}}"#);
    assert!(m.contains("'t3'") && m.contains("command"), "{m}");
    let m = config_err(r#"{"tools": {"t4": {"command": ["cat"], "count": 0}}}"#);
    assert!(m.contains("'t4'") && m.contains("count"), "{m}");
    let m = config_err(r#"{"tools": {"t5": {"command": "cat"}}}"#);
    assert!(m.contains("'t5'") && m.contains("command"), "{m}");
    let m = config_err(r#"{"tools": {"t6": {"env": {}}}}"#);
    assert!(m.contains("'t6'") && m.contains("command"), "{m}");
    let m = config_err(r#"{"tools": {"t7": {"command": ["cat"], "limits": {"queue_lines": 0}}}}"#);
    assert!(m.contains("limits.queue_lines"), "{m}");
    let m = config_err(
        r#"{"tools": {"t7": {"command": ["cat"], "limits": {"queue_lines": 1000000000000}}}}"#,
    );
    assert!(m.contains("limits.queue_lines"), "{m}");
    let m = config_err(r#"{"tools": {"t7": {"command": ["cat"], "count": 100000}}}"#);
    assert!(m.contains("count") && m.contains("4096"), "{m}");
    let m = config_err(
        r#"{"tools": {"t7": {"command": ["cat"], "idle_timeout_ms": 18446744073709551615}}}"#,
    );
    assert!(m.contains("idle_timeout_ms"), "{m}");
    let m = config_err(r#"{"tools": {"t7": {"command": ["cat"], "limits": {"queue_lines": 0}}}}"#);
    assert!(m.contains("limits.queue_lines"), "{m}");
    let m = config_err(r#"{"tools": {"t8": {"command": ["cat"], "max_in_flight": 3}}}"#);
    assert!(m.contains("max_in_flight") && m.contains("jsonrpc"), "{m}");
    let m = config_err(r#"{"tools": {"t9": {"command": ["cat"], "protocol": "xml"}}}"#);
    assert!(m.contains("'t9'") && m.contains("protocol"), "{m}");
    let m = config_err(
        r#"{"tools": {"ta": {"command": ["cat"], "restart": {"policy": "sometimes"}}}}"#,
    );
    assert!(m.contains("restart.policy"), "{m}");
    let m = config_err(r#"{"tools": {"tb": {"command": ["cat"], "health": {"interval_ms": 10}}}}"#);
    assert!(m.contains("health.probe"), "{m}");
    assert!(config_err(r#"{"tool": {}}"#).contains("'tool'"));
    assert!(config_err(r#"{"tools": []}"#).contains("tools"));
    assert!(config_err("{not json").contains("not valid JSON"));
    assert!(config_err(r#"{"tools": {"tc": 5}}"#).contains("'tc'"));
}

#[test]
fn a_standalone_spec_takes_its_id_from_the_command() {
    let s = ToolSpec::from_json(r#"{"command": ["/usr/bin/bc", "-q"], "count": 2}"#).unwrap();
    assert_eq!((s.id.as_str(), s.count), ("bc", 2));
    let s = ToolSpec::from_json(r#"{"id": "calc", "command": ["bc"]}"#).unwrap();
    assert_eq!(s.id, "calc");
    assert!(matches!(ToolSpec::from_json("[1]"), Err(Error::Config(_))));
    assert!(
        matches!(ToolSpec::from_json(r#"{"command": ["x"], "nope": 1}"#), Err(Error::Config(m)) if m.contains("nope"))
    );
    // Errors name the tool as its id will be, even when the spec does not parse.
    let err = |json: &str| ToolSpec::from_json(json).unwrap_err().to_string();
    let m = err(r#"{"command": ["/usr/bin/bc", "-q"], "count": "two"}"#);
    assert!(m.contains("tool 'bc': key 'count'"), "{m}");
    let m = err(r#"{"id": "calc", "command": ["bc"], "count": 0}"#);
    assert!(m.contains("tool 'calc'"), "{m}");
    let m = err(r#"{"command": 5}"#);
    assert!(m.contains("tool '<spec>'"), "{m}");
}

#[test]
fn registry_from_path() {
    let dir = std::env::temp_dir().join(format!("toolpool-reg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tools.json");
    std::fs::write(
        &path,
        r#"{"tools": {"cat": {"command": ["cat"], "count": 2}}}"#,
    )
    .unwrap();
    let reg = Registry::from_path(&path).unwrap();
    assert_eq!(reg.get("cat").unwrap().count, 2);
    // `Registry::from_env` and `Pool::from_registry(None, ..)` read TOOLPOOL_REGISTRY:
    // tested in tests/env_registry.rs, a binary of their own.
    let e = Registry::from_path(dir.join("missing.json")).unwrap_err();
    assert!(
        matches!(&e, Error::Io(m) if m.contains("missing.json")),
        "{e}"
    );
    std::fs::write(
        &path,
        r#"{"tools": {"cat": {"command": ["cat"], "count": -1}}}"#,
    )
    .unwrap();
    let e = Registry::from_path(&path).unwrap_err();
    assert!(
        e.to_string().contains("tools.json") && e.to_string().contains("count"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
