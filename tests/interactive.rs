//! Interactive tools in `prompt` framing: real REPLs nobody here wrote (python3 -i,
//! sqlite3, IPython from PyPI in the protocol virtualenv, node), kept warm with their
//! state: replies end at the prompt, blocks of several lines, errors, interrupts that keep
//! the session, init lines on every start.

mod common;
use common::*;
use std::time::{Duration, Instant};
use toolpool::spec::Prompt;
use toolpool::{Error, Protocol, Restart, RestartPolicy, State, ToolSpec};

fn prompt_spec(argv: &[&str], p: Prompt) -> ToolSpec {
    ToolSpec {
        protocol: Protocol::Prompt(p),
        pty: true,
        ..ToolSpec::new(argv.iter().copied())
    }
}

fn python(p: Prompt) -> ToolSpec {
    prompt_spec(&["python3", "-i", "-q"], p)
}

/// The stderr or stdout text of a tool error.
fn tool_error(r: toolpool::Result<toolpool::Reply>) -> String {
    match r {
        Err(Error::Tool {
            code: 0, message, ..
        }) => message,
        other => panic!("not a tool error: {other:?}"),
    }
}

#[test]
fn python_keeps_its_state_and_answers_blocks_and_errors() {
    let pool = private(python(Prompt::new(">>> ")));
    assert_eq!(pool.request("1+1", T).unwrap().text, "2");
    // A reply equal to the request is the reply, not an echo of it.
    assert_eq!(pool.request("5", T).unwrap().text, "5");
    assert_eq!(pool.request("'x'", T).unwrap().text, "'x'");
    assert_eq!(pool.request("x = 5", T).unwrap().text, "");
    // A block of several lines: the continuation prompts are not in the reply.
    let block = "def f(a):\n    if a > 3:\n        return a * 2\n    return a\n";
    assert_eq!(pool.request(block, T).unwrap().text, "");
    assert_eq!(pool.request("f(x), f(1)", T).unwrap().text, "(10, 1)");
    // Several statements: the output of each, not the prompts between them.
    assert_eq!(
        pool.request("print('a')\nprint('b\\nc')", T).unwrap().text,
        "a\nb\nc"
    );
    // A traceback on stderr is the tool error; the session goes on.
    let msg = tool_error(pool.request("1/0", T));
    assert!(msg.contains("ZeroDivisionError: division by zero"), "{msg}");
    assert_eq!(pool.request("x", T).unwrap().text, "5");
    // Output without a final newline, then the prompt on the same row.
    assert_eq!(
        pool.request("print('no newline', end='')", T).unwrap().text,
        "no newline"
    );
}

#[test]
fn python_without_a_terminal_prompts_on_stderr() {
    let pool = private(ToolSpec {
        pty: false,
        ..prompt_spec(&["python3", "-i", "-q", "-u"], Prompt::new(">>> "))
    });
    assert_eq!(pool.request("6*7", T).unwrap().text, "42");
    assert_eq!(
        pool.request("for i in range(3):\n    print(i)\n", T)
            .unwrap()
            .text,
        "0\n1\n2"
    );
    let msg = tool_error(pool.request("undefined_name", T));
    assert!(msg.contains("NameError"), "{msg}");
    assert!(!msg.contains(">>>"), "{msg}");
}

#[test]
fn an_interrupt_stops_a_long_statement_and_keeps_the_session() {
    let mut p = Prompt::new(">>> ");
    p.interrupt = true;
    let pool = private(python(p));
    assert_eq!(pool.request("x = 41", T).unwrap().text, "");
    let pid = pool.status().instances[0].pid;
    let t0 = Instant::now();
    let r = pool.request("import time; time.sleep(60)", Duration::from_millis(500));
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(10));
    // Same process, same variables.
    assert_eq!(pool.request("x + 1", T).unwrap().text, "42");
    assert_eq!(pool.status().instances[0].pid, pid);
    assert_eq!(pool.status().instances[0].restarts, 0);
    // A cancel does the same.
    let token = toolpool::CancelToken::new();
    let t = token.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        t.cancel();
    });
    let r = pool.request(
        "while True: pass",
        toolpool::Wait::new(Duration::from_secs(60)).with_cancel(&token),
    );
    canceller.join().unwrap();
    assert!(matches!(r, Err(Error::Cancelled(_))), "{r:?}");
    assert_eq!(pool.request("x", T).unwrap().text, "41");
    assert_eq!(pool.status().instances[0].pid, pid);
}

#[test]
fn without_interrupt_a_timeout_replaces_the_instance() {
    let pool = private(ToolSpec {
        restart: Restart {
            policy: RestartPolicy::Always,
            ..Restart::default()
        },
        ..python(Prompt::new(">>> "))
    });
    let pid = pool.status().instances[0].pid;
    let r = pool.request("import time; time.sleep(60)", Duration::from_millis(300));
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    assert!(eventually(T, || {
        let i = &pool.status().instances[0];
        i.pid != pid && i.state == State::Ready
    }));
    assert_eq!(pool.request("1+2", T).unwrap().text, "3");
}

#[test]
fn init_lines_run_on_every_start() {
    let mut p = Prompt::new(">>> ");
    p.init = vec!["import math".into(), "y = 7".into()];
    let pool = private(ToolSpec {
        restart: Restart {
            policy: RestartPolicy::Always,
            backoff_initial_ms: 10,
            ..Restart::default()
        },
        ..python(p)
    });
    assert_eq!(pool.request("math.floor(y * 1.5)", T).unwrap().text, "10");
    assert_eq!(pool.request("y = 1", T).unwrap().text, "");
    // Killed: the restart runs the init lines again (y is 7, not 1).
    let pid = pool.status().instances[0].pid.unwrap();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(eventually(Duration::from_secs(10), || {
        let i = &pool.status().instances[0];
        i.pid != Some(pid) && i.state == State::Ready
    }));
    assert_eq!(pool.request("y", T).unwrap().text, "7");
    // A failing init line fails the start, naming it.
    let mut bad = Prompt::new(">>> ");
    bad.init = vec!["import no_such_module_here".into()];
    let err = toolpool::Pool::from_spec(python(bad))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("protocol.init[0]") && err.contains("ModuleNotFoundError"),
        "{err}"
    );
}

#[test]
fn sqlite3_interactive_with_its_continuation_prompt() {
    let pool = private(prompt_spec(
        &["sqlite3", "-interactive"],
        Prompt::new("sqlite> "),
    ));
    assert_eq!(pool.request("create table t(a, b);", T).unwrap().text, "");
    assert_eq!(
        pool.request("insert into t\nvalues (1, 'x'),\n(2, 'y');", T)
            .unwrap()
            .text,
        ""
    );
    assert_eq!(
        pool.request("select a, b\nfrom t order by a;", T)
            .unwrap()
            .text,
        "1|x\n2|y"
    );
    let msg = tool_error(pool.request("selec 1;", T));
    assert!(msg.contains("syntax error"), "{msg}");
    assert_eq!(
        pool.request("select count(*) from t;", T).unwrap().text,
        "2"
    );
}

#[test]
fn ipython_as_a_person_starts_it() {
    let venv = protocol_venv();
    let ipython = format!("{venv}/bin/ipython");
    let mut p = Prompt::new(r"In \[\d+\]: ");
    p.error = Some(r"Traceback \(most recent call last\)".into());
    p.interrupt = true;
    let pool = private(ToolSpec {
        startup: toolpool::Startup {
            timeout_ms: 60_000,
            ..Default::default()
        },
        ..prompt_spec(&[&ipython, "--no-banner"], p)
    });
    assert_eq!(pool.request("x = 20", T).unwrap().text, "");
    assert_eq!(pool.request("x * 2 + 2", T).unwrap().text, "Out[2]: 42");
    assert_eq!(
        pool.request("def g(n):\n    return n + x\n", T)
            .unwrap()
            .text,
        ""
    );
    assert_eq!(pool.request("print(g(1))", T).unwrap().text, "21");
    // IPython prints its tracebacks on stdout, in colour: the error pattern finds them, and
    // no escape sequence reaches the text.
    let msg = tool_error(pool.request("1/0", T));
    assert!(msg.contains("ZeroDivisionError"), "{msg}");
    assert!(!msg.contains('\x1b'), "{msg:?}");
    let r = pool.request("import time; time.sleep(60)", Duration::from_millis(800));
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    assert_eq!(pool.request("print(x)", T).unwrap().text, "20");
}

#[test]
fn node_echoes_its_input_and_the_reply_leaves_it_out() {
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("node is not installed: skipped");
        return;
    }
    let pool = private(prompt_spec(&["node"], Prompt::new("> ")));
    assert_eq!(pool.request("1+1", T).unwrap().text, "2");
    // node echoes the input line before its result: the echo goes, the equal result stays.
    assert_eq!(pool.request("5", T).unwrap().text, "5");
    assert_eq!(pool.request("let x = 5", T).unwrap().text, "undefined");
    assert_eq!(pool.request("x * 3", T).unwrap().text, "15");
    assert_eq!(
        pool.request("console.log('a'); console.log('b')", T)
            .unwrap()
            .text,
        "a\nb\nundefined"
    );
}

#[test]
fn bad_prompt_patterns_are_config_errors_naming_the_key() {
    for (json, key) in [
        (
            r#"{"command": ["x"], "protocol": {"prompt": "("}}"#,
            "protocol.prompt",
        ),
        (
            r#"{"command": ["x"], "protocol": {"prompt": ".*"}}"#,
            "protocol.prompt",
        ),
        (
            r#"{"command": ["x"], "protocol": {"prompt": "> ", "error": "a|"}}"#,
            "protocol.error",
        ),
        (
            r#"{"command": ["x"], "protocol": {"prompt": "> "}, "startup": {"ready_line": "R"}}"#,
            "startup.ready_line",
        ),
    ] {
        let err = ToolSpec::from_json(json).unwrap_err();
        let m = err.to_string();
        assert!(
            matches!(err, Error::Config(_)) && m.contains(key),
            "{json}: {m}"
        );
    }
}
