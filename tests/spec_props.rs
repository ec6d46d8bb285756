//! Hostile specs: whatever a spec holds (NUL bytes, newlines, huge numbers,
//! wrong types, deep nesting, long strings), parsing and `Pool::from_spec` return `Ok` or
//! `Err(Error::Config)` and never panic, and every pool that starts shuts down cleanly.

mod common;
use common::*;
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::time::Duration;
use toolpool::{Error, Limiter, Pool, Registry, ToolSpec};

/// Strings that break things: NUL, newlines, `=`, empty, long, non-ASCII.
fn hostile_str() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("a\0b".to_string()),
        Just("a\nb".to_string()),
        Just("A=B".to_string()),
        Just("\0".to_string()),
        Just("ok".to_string()),
        Just("x".repeat(10_000)),
        Just("é\u{FFFD}\u{1F600}".to_string()),
        "[a-z]{1,8}",
    ]
}

/// Any JSON value, nested up to `depth`, as a wrong type for some key.
fn wrong_type() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!(-1)),
        Just(json!(1e300)),
        Just(json!(u64::MAX)),
        Just(json!("three")),
        Just(json!([1, "a", null])),
        Just(json!({"nested": {"deeper": [{}]}})),
        Just(deep(300)),
    ]
}

/// `[[[...]]]`, deeper than serde_json's recursion limit.
fn deep(n: usize) -> Value {
    (0..n).fold(json!(1), |v, _| json!([v]))
}

/// A number that is fine, zero, just too big, or huge.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (1u64..3).prop_map(Value::from),
        Just(json!(0)),
        Just(json!(u64::MAX)),
        Just(json!(30u64 * 24 * 3600 * 1000 + 1)),
        Just(json!(4097)),
        Just(json!(50)),
    ]
}

fn command() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => Just(json!(["/usr/bin/cat"])),
        2 => Just(json!([testtool()])),
        1 => Just(json!([])),
        1 => Just(json!([""])),
        1 => Just(json!(["/usr/bin/c\u{0}at"])),
        1 => Just(json!(["/usr/bin/cat", "a\u{0}"])),
        1 => wrong_type(),
    ]
}

/// One optional key of the spec with a hostile or fine value.
fn entry() -> impl Strategy<Value = (String, Value)> {
    let s = || hostile_str().prop_map(Value::from);
    prop_oneof![
        s().prop_map(|v| ("id".into(), v)),
        (hostile_str(), hostile_str()).prop_map(|(k, v)| ("env".into(), json!({ k: v }))),
        any::<bool>().prop_map(|b| ("env_clear".into(), json!(b))),
        // A missing directory might exist later: only NUL is a config error.
        prop_oneof![
            Just(json!("/tmp")),
            Just(json!("/tmp\u{0}")),
            Just(json!("\u{0}"))
        ]
        .prop_map(|v| ("cwd".into(), v)),
        number().prop_map(|v| ("count".into(), v)),
        // Only never-matching ready lines: cat prints none.
        (
            prop_oneof![Just(json!("a\u{0}")), Just(json!("a\nb")), Just(json!(7))],
            number()
        )
            .prop_map(|(r, t)| ("startup".into(), json!({"ready_line": r, "timeout_ms": t}))),
        number().prop_map(|v| ("shutdown".into(), json!({ "grace_ms": v }))),
        (number(), number()).prop_map(|(a, b)| (
            "limits".into(),
            json!({"max_line_bytes": a, "queue_lines": b})
        )),
        s().prop_map(|m| ("protocol".into(), json!({ "marker": m }))),
        Just(("protocol".into(), json!("jsonrpc"))),
        number().prop_map(|v| ("max_in_flight".into(), v)),
        (command(), s()).prop_map(|(c, _)| ("oneshot".into(), json!({ "command": c }))),
        (s(), s(), number()).prop_map(|(p, e, i)| (
            "health".into(),
            json!({"probe": p, "expect": e, "interval_ms": i, "timeout_ms": 50})
        )),
        number().prop_map(|v| ("idle_timeout_ms".into(), v)),
        number().prop_map(|v| ("max_lifetime_ms".into(), v)),
        any::<bool>().prop_map(|b| ("lazy".into(), json!(b))),
        any::<bool>().prop_map(|b| ("disabled".into(), json!(b))),
        (s(), wrong_type()).prop_map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), v)),
        wrong_type().prop_map(|v| ("count".into(), v)),
        wrong_type().prop_map(|v| ("env".into(), v)),
        wrong_type().prop_map(|v| ("startup".into(), v)),
    ]
}

fn spec() -> impl Strategy<Value = Value> {
    (command(), prop::collection::vec(entry(), 0..5)).prop_map(|(c, entries)| {
        let mut m = Map::new();
        m.insert("command".into(), c);
        for (k, v) in entries {
            m.insert(k, v);
        }
        Value::Object(m)
    })
}

/// Start the pool if the spec is valid; it must shut down with no child left.
fn start_and_stop(spec: ToolSpec) -> Result<(), TestCaseError> {
    match Pool::from_spec(spec) {
        Ok(pool) => {
            pool.shutdown(Duration::from_millis(500));
            prop_assert!(pool.status().instances.iter().all(|s| s.pid.is_none()));
            prop_assert_eq!(pool.health().alive, 0);
        }
        Err(Error::Config(m)) => prop_assert!(m.contains("tool '"), "{}", m),
        Err(e) => prop_assert!(false, "not a config error: {e:?}"),
    }
    prop_assert_eq!(Limiter::global().status().active_processes, 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn hostile_specs_are_ok_or_config_errors(spec in spec()) {
        let text = spec.to_string();
        match ToolSpec::from_json(&text) {
            Ok(s) => start_and_stop(s)?,
            Err(Error::Config(_)) => {}
            Err(e) => prop_assert!(false, "not a config error: {e:?}"),
        }
        // The same spec in a registry, under a hostile id.
        let reg = json!({"tools": {"a\u{0}b\nc": spec.clone(), "t": spec}}).to_string();
        match Registry::from_json(&reg) {
            Ok(r) => prop_assert!(false, "a NUL in an id must be refused: {r:?}"),
            Err(Error::Config(m)) => prop_assert!(!m.contains('\0'), "{}", m),
            Err(e) => prop_assert!(false, "not a config error: {e:?}"),
        }
    }

    #[test]
    fn any_text_is_ok_or_a_config_error(text in ".{0,64}") {
        match ToolSpec::from_json(&text) {
            Ok(_) | Err(Error::Config(_)) => {}
            Err(e) => prop_assert!(false, "{e:?}"),
        }
    }
}

/// Hostile values: each is a config error naming the key, before anything starts.
#[test]
fn values_that_can_never_work_name_their_key() {
    let cases = [
        (json!({"id": "a\u{0}b"}), "'id'"),
        (json!({"env": {"A\u{0}": "x"}}), "env.A"),
        (json!({"env": {"A": "x\u{0}"}}), "env.A"),
        (json!({"env": {"A=B": "x"}}), "env.A=B"),
        (json!({"env": {"": "x"}}), "'env'"),
        (json!({"cwd": "data\u{0}"}), "'cwd'"),
        (
            json!({"startup": {"ready_line": "a\u{0}"}}),
            "startup.ready_line",
        ),
        (
            json!({"startup": {"ready_line": "a\nb"}}),
            "startup.ready_line",
        ),
        (json!({"health": {"probe": "a\nb"}}), "health.probe"),
        (
            json!({"health": {"probe": "p", "expect": "a\nb"}}),
            "health.expect",
        ),
        (
            json!({"protocol": {"marker": "E\u{0}ND"}}),
            "protocol.marker",
        ),
        (
            json!({"oneshot": {"command": ["c\u{0}at"]}}),
            "oneshot.command",
        ),
    ];
    for (extra, key) in cases {
        let mut spec = json!({"command": ["/usr/bin/cat"]});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        match ToolSpec::from_json(&spec.to_string()) {
            Err(Error::Config(m)) => {
                assert!(m.contains(key) && m.contains("tool '"), "{key}: {m}");
                assert!(!m.contains('\0') && !m.contains('\n'), "{m:?}");
            }
            other => panic!("{spec}: {other:?}"),
        }
    }
    assert_eq!(Limiter::global().status().active_processes, 0);
}
