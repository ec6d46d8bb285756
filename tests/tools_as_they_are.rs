//! The command-line tools people have, as they are: errors on stderr, stdout buffered on a
//! pipe, answers of several lines, tools that exit. Real programs nobody here wrote (bc,
//! sqlite3, jq, sed, python3; `make test` installs the ones a fresh machine lacks) and the
//! test tool for the timing-exact cases.

mod common;
use common::*;
use std::time::{Duration, Instant};
use toolpool::spec::Marker;
use toolpool::{Error, Protocol, Restart, RestartPolicy, State, ToolSpec};

fn spec(argv: &[&str]) -> ToolSpec {
    ToolSpec::new(argv.iter().copied())
}

fn marker(end: &str, end_command: &str) -> Protocol {
    Protocol::Marker(Marker {
        marker: end.into(),
        end_command: Some(end_command.into()),
    })
}

/// The stderr lines of a tool error (or a panic naming what came instead).
fn tool_error(r: toolpool::Result<toolpool::Reply>) -> String {
    match r {
        Err(Error::Tool {
            code: 0, message, ..
        }) => message,
        other => panic!("not a tool error from stderr: {other:?}"),
    }
}

#[test]
fn bc_errors_on_stderr_fail_fast_and_the_instance_serves_on() {
    let pool = private(ToolSpec {
        stderr_error_ms: Some(200),
        env: [("BC_LINE_LENGTH".to_string(), "0".to_string())].into(),
        ..spec(&["bc", "-q"])
    });
    let pid = pool.status().instances[0].pid;
    let t0 = Instant::now();
    let msg = tool_error(pool.request("1/0", T));
    assert!(msg.contains("Divide by zero"), "{msg}");
    // Failed after the window, not the timeout.
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    // The same process answers next, and the error stays in its stderr tail.
    assert_eq!(pool.request("6*7", T).unwrap().text, "42");
    let st = pool.status();
    assert_eq!(st.instances[0].pid, pid);
    assert!(
        st.instances[0]
            .stderr_tail
            .iter()
            .any(|l| l.contains("Divide by zero")),
        "{:?}",
        st.instances[0].stderr_tail
    );
    // BC_LINE_LENGTH=0: a long result is one line, whole.
    let big = pool.request("2^300", T).unwrap().text;
    assert_eq!(big.len(), 91, "{big}");
    assert!(big.starts_with("2037035976334486086268445688409378161051"));
}

#[test]
fn a_warning_followed_by_a_reply_within_the_window_is_no_error() {
    let pool = private(ToolSpec {
        stderr_error_ms: Some(500),
        ..tool(1, &[])
    });
    // stderr first, the reply 100 ms later: inside the window.
    assert_eq!(pool.request("warn:100:fine", T).unwrap().text, "fine");
    // stderr and no reply: the error, with the tool's words.
    let msg = tool_error(pool.request("fail:it broke", T));
    assert_eq!(msg, "error: it broke");
    // stderr, then a reply later than the window: the error (the late reply is dropped
    // before the next request, never taken for its reply).
    let msg = tool_error(pool.request("warn:900:too late", T));
    assert!(msg.contains("too late is coming"), "{msg}");
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(pool.request("next", T).unwrap().text, "next");
    assert!(pool.status().instances[0].unsolicited >= 1);
    // Without the key, stderr is only kept: a request waits for its reply.
    let plain = private(tool(1, &[]));
    assert!(matches!(
        plain.request("fail:quiet", Duration::from_millis(400)),
        Err(Error::Timeout { .. })
    ));
}

#[test]
fn sqlite3_with_an_end_command_gives_whole_answers_and_its_errors() {
    let pool = private(ToolSpec {
        protocol: marker("END", ".print END"),
        stderr_error_ms: Some(200),
        ..spec(&["sqlite3"])
    });
    // A statement with no output is an empty reply, not an error.
    assert_eq!(pool.request("create table t(a, b);", T).unwrap().text, "");
    assert_eq!(
        pool.request("insert into t values (1, 'x'), (2, 'y'), (3, 'z');", T)
            .unwrap()
            .text,
        ""
    );
    assert_eq!(
        pool.request("select a, b from t order by a;", T)
            .unwrap()
            .text,
        "1|x\n2|y\n3|z"
    );
    let msg = tool_error(pool.request("selec 1;", T));
    assert!(msg.contains("syntax error"), "{msg}");
    assert_eq!(
        pool.request("select count(*) from t;", T).unwrap().text,
        "3"
    );
}

#[test]
fn bc_with_an_end_command_gives_wrapped_results_whole() {
    let pool = private(ToolSpec {
        protocol: marker("END", r#"print "END\n""#),
        ..spec(&["bc", "-q"])
    });
    let big = pool.request("2^300", T).unwrap().text;
    let lines: Vec<&str> = big.lines().collect();
    assert_eq!(lines.len(), 2, "{big}");
    assert!(lines[0].ends_with('\\'));
    assert_eq!(pool.request("1+1", T).unwrap().text, "2");
}

#[test]
fn tclsh_and_a_shell_with_an_end_command() {
    let tcl = private(ToolSpec {
        protocol: marker("END", "puts END; flush stdout"),
        stderr_error_ms: Some(200),
        ..spec(&["tclsh"])
    });
    assert_eq!(tcl.request("puts [expr 6*7]", T).unwrap().text, "42");
    let msg = tool_error(tcl.request("puts [expr 1/0]", T));
    assert!(msg.contains("divide by zero"), "{msg}");
    assert_eq!(tcl.request("puts a; puts b", T).unwrap().text, "a\nb");
    let sh = private(ToolSpec {
        protocol: marker("END", "echo END"),
        stderr_error_ms: Some(200),
        ..spec(&["sh"])
    });
    assert_eq!(sh.request("printf 'x\\ny\\n'", T).unwrap().text, "x\ny");
    assert_eq!(sh.request("cd /tmp && pwd", T).unwrap().text, "/tmp");
    // The shell keeps its state: the next request runs in /tmp.
    assert_eq!(sh.request("pwd", T).unwrap().text, "/tmp");
    let msg = tool_error(sh.request("ls /no/such/dir", T));
    assert!(msg.contains("No such file"), "{msg}");
}

#[test]
fn a_late_second_line_never_reaches_the_next_caller_with_an_end_command() {
    // `late:300:a` prints "a", then 300 ms later "late a", then reads on; the end command
    // is read after that, so the marker comes after both lines.
    let pool = private(ToolSpec {
        protocol: marker("END", "END"),
        ..tool(1, &[])
    });
    assert_eq!(pool.request("late:300:a", T).unwrap().text, "a\nlate a");
    assert_eq!(pool.request("b", T).unwrap().text, "b");
    assert_eq!(pool.status().instances[0].unsolicited, 0);
}

#[test]
fn tools_that_buffer_on_a_pipe_answer_on_a_pty_and_the_timeout_says_why() {
    // jq buffers stdout on a pipe: the request times out, and the message names pty.
    let pipe = private(spec(&["jq", "-c", ".a"]));
    let err = pipe
        .request(r#"{"a": 1}"#, Duration::from_millis(500))
        .unwrap_err();
    let m = err.to_string();
    assert!(matches!(err, Error::Timeout { .. }), "{m}");
    assert!(
        m.contains("buffer its output on a pipe") && m.contains("\"pty\": true"),
        "{m}"
    );
    // On a terminal it answers line by line (-M: no colours).
    for (argv, input, want) in [
        (&["jq", "-M", "-c", ".a"][..], r#"{"a": [1, 2]}"#, "[1,2]"),
        (&["sed", "s/b/B/"][..], "abc", "aBc"),
        (&["mawk", "{ print $2 }"][..], "x y z", "y"),
        (
            &[
                "python3",
                "-c",
                "import sys\nfor l in sys.stdin: print(eval(l))",
            ][..],
            "6*7",
            "42",
        ),
    ] {
        let pool = private(ToolSpec {
            pty: true,
            count: 2,
            ..spec(argv)
        });
        for _ in 0..3 {
            assert_eq!(pool.request(input, T).unwrap().text, want, "{argv:?}");
        }
    }
    // The same jq with --unbuffered on pipes.
    let pool = private(spec(&["jq", "--unbuffered", "-c", ".a"]));
    assert_eq!(pool.request(r#"{"a": 1}"#, T).unwrap().text, "1");
}

#[test]
fn a_pty_is_raw_and_only_stdin_and_stdout_are_on_it() {
    let pool = private(ToolSpec {
        pty: true,
        ..tool(1, &[])
    });
    assert_eq!(
        pool.request("tty", T).unwrap().text,
        "stdin true stdout true stderr false TERM=dumb"
    );
    // Raw: no echo, no CR added, and a 1 MB line goes through whole (no 4 KiB canonical
    // limit).
    let line = "y".repeat(1 << 20);
    assert_eq!(pool.request(&line, T).unwrap().text, line);
    assert_eq!(pool.request("a\tb", T).unwrap().text, "a\tb");
    // The spec's TERM wins.
    let pool = private(ToolSpec {
        pty: true,
        env: [("TERM".to_string(), "xterm".to_string())].into(),
        ..tool(1, &[])
    });
    assert!(pool.request("tty", T).unwrap().text.ends_with("TERM=xterm"));
}

#[test]
fn a_pty_tool_is_killed_with_its_group_and_leaves_nothing() {
    let pool = private(ToolSpec {
        pty: true,
        count: 2,
        restart: Restart {
            policy: RestartPolicy::Always,
            ..Restart::default()
        },
        ..tool(2, &[])
    });
    let grandchild: i32 = pool.request("grandchild", T).unwrap().text.parse().unwrap();
    let pids: Vec<i32> = pool
        .status()
        .instances
        .iter()
        .filter_map(|i| i.pid)
        .collect();
    assert_eq!(pids.len(), 2);
    // A crash is seen as a death (EIO on the terminal), and the policy restarts it.
    let r = pool.request("crash:3", T);
    assert!(matches!(r, Err(Error::InstanceDead(_))), "{r:?}");
    assert!(eventually(T, || pool.health().alive == 2));
    pool.shutdown(T);
    assert!(
        eventually(T, || !alive(grandchild)),
        "grandchild {grandchild}"
    );
    for pid in pids {
        assert!(eventually(T, || !alive(pid)), "{pid}");
    }
}

#[test]
fn tools_that_exit_fail_requests_at_once_with_the_reason() {
    // Two instances exit with status 0 after one request each; on_failure leaves them.
    let pool = private(ToolSpec {
        restart: Restart {
            policy: RestartPolicy::OnFailure,
            ..Restart::default()
        },
        ..tool(2, &[])
    });
    for _ in 0..2 {
        let r = pool.request("crash:0", T);
        assert!(matches!(r, Err(Error::InstanceDead(_))), "{r:?}");
    }
    assert!(eventually(T, || pool.health().dead == 2));
    let t0 = Instant::now();
    let err = pool.request("x", Duration::from_secs(30)).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let m = err.to_string();
    assert!(matches!(err, Error::Unavailable { .. }), "{m}");
    assert!(
        m.contains(
            "2 instances exited with status 0; restart.policy on_failure does not restart it"
        ),
        "{m}"
    );
    // A lease is told the same.
    assert!(matches!(
        pool.lease(Duration::from_secs(30)),
        Err(Error::Unavailable { .. })
    ));
}

#[test]
fn the_restart_cap_is_named_when_it_stops_a_pool() {
    let pool = private(ToolSpec {
        restart: Restart {
            policy: RestartPolicy::Always,
            max_restarts: 2,
            backoff_initial_ms: 10,
            ..Restart::default()
        },
        ..tool(1, &["--crash-after", "1"])
    });
    let failed = eventually(Duration::from_secs(20), || {
        let _ = pool.request("boom", Duration::from_millis(500));
        pool.status().instances[0].state == State::Failed
    });
    assert!(failed, "{:?}", pool.status().instances[0]);
    let t0 = Instant::now();
    let m = pool
        .request("x", Duration::from_secs(30))
        .unwrap_err()
        .to_string();
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert!(
        m.contains("restarts within 60000 ms (restart.max_restarts)"),
        "{m}"
    );
}

#[test]
fn lines_outside_any_request_are_counted() {
    // `twice:x` answers two lines: the second is no one's reply, and is dropped (and
    // counted) before the next request.
    let pool = private(tool(1, &[]));
    assert_eq!(pool.request("twice:x", T).unwrap().text, "x");
    assert!(eventually(T, || {
        pool.request("y", T).unwrap().text == "y" && pool.status().instances[0].unsolicited == 1
    }));
}

fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks the pid.
    let exists = unsafe { libc::kill(pid, 0) == 0 };
    exists
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}
