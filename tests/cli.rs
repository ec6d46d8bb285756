//! The `toolpool` command, run as a built binary against real tools: `bc`, the Python
//! JSON-RPC tool (examples/tools/rpc_tool.py) and the test tool. Needs the `cli` feature:
//! `cargo test --features cli --test cli`.

mod common;

use common::{eventually, rpc_tool, testtool, Seen};
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn toolpool() -> &'static str {
    env!("CARGO_BIN_EXE_toolpool")
}

/// Run the command with `stdin` as its input; stdout and stderr captured.
fn cli(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(toolpool())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("toolpool runs");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_string();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(data.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn jsonl(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

fn rpc_args() -> Vec<String> {
    [
        "--protocol",
        "jsonrpc",
        "--ready-line",
        "READY",
        "--startup-timeout",
        "20s",
        "--",
        "python3",
        "-u",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([rpc_tool(), "--ready".into(), "READY".into()])
    .collect()
}

fn write_file(name: &str, content: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("toolpool-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

#[test]
fn ten_thousand_lines_through_bc_come_back_in_order() {
    let input: String = (1..=10_000).map(|k| format!("{k}*2\n")).collect();
    let out = cli(&["run", "-n", "3", "--", "bc", "-q"], &input);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 10_000);
    for (k, l) in lines.iter().enumerate() {
        assert_eq!(l, &((k as u64 + 1) * 2).to_string(), "line {}", k + 1);
    }
    assert!(
        stderr.contains("10000 requests, 10000 ok, 0 failed"),
        "{stderr}"
    );
    assert!(stderr.contains("3/3 instances used"), "{stderr}");
    assert!(
        stderr.contains("p50 ") && stderr.contains("calls/s"),
        "{stderr}"
    );
    // Not drawn: stderr is a pipe.
    assert!(
        !stderr.contains('\x1b') && !stderr.contains('\r'),
        "{stderr:?}"
    );
}

#[test]
fn ordered_by_default_completion_order_with_unordered() {
    let input = "delay:600:slow\ndelay:0:fast\n";
    let args = ["-n", "2", "--", testtool()];
    let ordered = cli(&[&["run"], &args[..]].concat(), input);
    assert_eq!(text(&ordered.stdout), "slow\nfast\n");
    let unordered = cli(&[&["run", "--unordered"], &args[..]].concat(), input);
    assert_eq!(text(&unordered.stdout), "fast\nslow\n");
    assert_eq!(unordered.status.code(), Some(0));
}

#[test]
fn failing_rows_carry_errors_and_the_rest_replies() {
    let mut input = String::new();
    for k in 0..20 {
        if k % 5 == 3 {
            input += &format!("{{\"method\": \"fail\", \"params\": {{\"code\": 4{k}, \"message\": \"no {k}\"}}}}\n");
        } else {
            input += &format!("{{\"method\": \"add\", \"params\": [{k}, 1000]}}\n");
        }
    }
    let mut args = vec!["run", "--jsonl", "-n", "2"];
    let rpc = rpc_args();
    args.extend(rpc.iter().map(String::as_str));
    let out = cli(&args, &input);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let rows = jsonl(&out);
    assert_eq!(rows.len(), 20);
    for (k, row) in rows.iter().enumerate() {
        assert_eq!(row["line"], k + 1);
        if k % 5 == 3 {
            assert_eq!(row["ok"], false, "{row}");
            assert_eq!(row["error"]["name"], "tool_error", "{row}");
            assert_eq!(row["error"]["code"], 10, "{row}");
            assert_eq!(
                row["error"]["tool_code"],
                format!("4{k}").parse::<i64>().unwrap()
            );
            assert!(row["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("no {k}")));
        } else {
            assert_eq!(row["ok"], true, "{row}");
            assert_eq!(row["reply"], k + 1000, "{row}");
            assert!(row["instance"].as_u64().unwrap() < 2);
            assert!(row["ms"].as_f64().unwrap() >= 0.0);
        }
    }
    assert!(stderr.contains("20 requests, 16 ok, 4 failed"), "{stderr}");
}

#[test]
fn a_malformed_jsonl_row_is_an_error_row_and_the_run_goes_on() {
    let input = "{\"method\": \"echo\", \"params\": [1]}\n{\"method\": \"echo\", \"params\n{\"method\": \"upper\", \"params\": {\"text\": \"ok\"}}\n";
    let mut args = vec!["run", "--jsonl", "-n", "1"];
    let rpc = rpc_args();
    args.extend(rpc.iter().map(String::as_str));
    let out = cli(&args, input);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let rows = jsonl(&out);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["reply"], serde_json::json!([1]));
    assert_eq!(rows[1]["ok"], false);
    assert_eq!(rows[1]["line"], 2);
    assert_eq!(rows[1]["error"]["name"], "invalid_argument");
    assert!(rows[1]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not JSON"));
    assert_eq!(rows[2]["reply"], "OK");
}

#[test]
fn plain_output_keeps_one_line_per_row_and_reports_errors_on_stderr() {
    let input = "a\ndelay:3000:late\nb\n";
    let out = cli(
        &["run", "-n", "2", "--timeout", "300ms", "--", testtool()],
        input,
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(text(&out.stdout), "a\n\nb\n");
    assert!(
        stderr.contains("line 2: timed out after 300 ms"),
        "{stderr}"
    );
    assert!(stderr.contains("3 requests, 2 ok, 1 failed"), "{stderr}");
}

#[test]
fn retries_cover_instances_that_die_and_restart() {
    // Each instance exits after 4 lines; with restarts and retries every row succeeds.
    let input: String = (0..24).map(|k| format!("row{k}\n")).collect();
    let out = cli(
        &[
            "run",
            "-n",
            "2",
            "--retries",
            "5",
            "--restart",
            "always",
            "--jsonl",
            "--",
            testtool(),
            "--crash-after",
            "4",
        ],
        &input,
    );
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stderr}\n{}",
        text(&out.stdout)
    );
    let rows = jsonl(&out);
    assert_eq!(rows.len(), 24);
    for (k, r) in rows.iter().enumerate() {
        assert_eq!(r["reply"], format!("row{k}"), "{r}");
    }
    let restarts: u64 = stderr
        .split(", ")
        .find_map(|p| p.strip_suffix(" restarts")?.parse().ok())
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(restarts >= 4, "{stderr}");
}

#[test]
fn marker_protocol_replies_span_lines() {
    let out = cli(
        &[
            "run",
            "-n",
            "2",
            "--protocol",
            "marker:END",
            "--",
            testtool(),
        ],
        "multi:2:T\nmulti:1:U\nmulti:0:V\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "T 0\nT 1\nU 0\n\n");
}

#[test]
fn env_cwd_and_ready_line_with_lines_protocol() {
    let dir = std::fs::canonicalize(std::env::temp_dir()).unwrap();
    let input = write_file("env.txt", "env:CLI_FLAG\ncwd\n");
    let output = input.with_file_name("env.out");
    let out = cli(
        &[
            "run",
            "-n",
            "1",
            "--env",
            "CLI_FLAG=hello=world",
            "--cwd",
            dir.to_str().unwrap(),
            "--ready-line",
            "UP",
            "-i",
            input.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
            "--",
            testtool(),
            "--banner",
            "2",
            "--ready",
            "UP",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let got = std::fs::read_to_string(&output).unwrap();
    assert_eq!(got, format!("hello=world\n{}\n", dir.display()));
}

/// Assert the exit status and that stderr names every one of `needles`.
fn fails(out: &Output, code: i32, needles: &[&str]) {
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{e}");
    for n in needles {
        assert!(e.contains(n), "{n:?} not in {e}");
    }
}

#[test]
fn configuration_errors_exit_2_and_name_the_problem() {
    let reg = write_file(
        "reg.json",
        r#"{"tools": {"bc": {"command": ["bc", "-q"]}, "echo": {"command": ["cat"]}}}"#,
    );
    let reg = reg.to_str().unwrap();
    let unknown = cli(&["run", "--registry", reg, "--tool", "nope"], "1\n");
    fails(&unknown, 2, &["unknown tool 'nope'", "bc, echo"]);

    let bad = write_file(
        "bad-spec.json",
        r#"{"command": ["bc"], "startup": {"timeout_ms": "soon"}}"#,
    );
    let out = cli(&["run", "--spec", bad.to_str().unwrap()], "1\n");
    fails(&out, 2, &["startup.timeout_ms", "bad-spec.json"]);

    let missing = "/no/such/registry.json";
    let out = cli(&["run", "--registry", missing, "--tool", "bc"], "");
    fails(&out, 2, &[missing]);

    fails(
        &cli(&["run", "--", "/no/such/tool"], ""),
        2,
        &["/no/such/tool"],
    );
    fails(&cli(&["run"], ""), 2, &["no tool given"]);
    let out = cli(&["run", "--protocol", "xml", "--", "cat"], "");
    fails(&out, 2, &["not a protocol"]);
    let out = cli(&["run", "--in-flight", "4", "--", "cat"], "");
    fails(&out, 2, &["max_in_flight", "--in-flight"]);
}

/// Run the command with stderr on a pseudo-terminal; everything written to the terminal.
fn under_pty(args: &[&str], stdin: &str) -> (Option<i32>, String, String) {
    let (mut master, mut slave) = (0, 0);
    let ws = libc::winsize {
        ws_row: 24,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty fills two fds.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    assert_eq!(rc, 0);
    use std::os::fd::FromRawFd;
    // SAFETY: fresh fds we own.
    let (master, slave) = unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::os::fd::OwnedFd::from_raw_fd(slave),
        )
    };
    let mut child = Command::new(toolpool())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    let mut m = master;
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the last holder of the slave side has gone.
        while let Ok(n) = m.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        all
    });
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let term = reader.join().unwrap();
    (out.status.code(), text(&out.stdout), text(&term))
}

#[test]
fn progress_is_drawn_on_a_terminal_and_not_when_piped() {
    let input: String = (0..30).map(|k| format!("delay:40:r{k}\n")).collect();
    let args = ["run", "-n", "2", "--", testtool()];
    let (code, stdout, term) = under_pty(&args, &input);
    assert_eq!(code, Some(0), "{term}");
    assert_eq!(stdout.lines().count(), 30);
    assert!(term.contains("rows"), "no progress drawn: {term:?}");
    assert!(term.contains("errors: 0"), "{term:?}");
    assert!(term.contains('\x1b') || term.contains('\r'), "{term:?}");
    assert!(term.contains("30 requests, 30 ok, 0 failed"), "{term:?}");

    // From a file the total is known: done/total.
    let file = write_file("progress.txt", &input);
    let args = [
        "run",
        "-n",
        "2",
        "-i",
        file.to_str().unwrap(),
        "--",
        testtool(),
    ];
    let (code, _, term) = under_pty(&args, "");
    assert_eq!(code, Some(0), "{term}");
    assert!(term.contains("/30 rows"), "no total drawn: {term:?}");

    // --progress never on a terminal: only the summary.
    let args = ["run", "-n", "2", "--progress", "never", "--", testtool()];
    let (code, _, term) = under_pty(&args, &input);
    assert_eq!(code, Some(0));
    assert!(!term.contains("rows") && !term.contains('\x1b'), "{term:?}");
    assert!(term.contains("30 requests"), "{term:?}");

    // Piped: nothing drawn; --progress always draws anyway.
    let out = cli(&["run", "-n", "2", "--", testtool()], &input);
    let e = text(&out.stderr);
    assert!(!e.contains("rows") && !e.contains('\x1b'), "{e:?}");
    let out = cli(
        &["run", "-n", "2", "--progress", "always", "--", testtool()],
        &input,
    );
    assert!(
        text(&out.stderr).contains("rows"),
        "{:?}",
        text(&out.stderr)
    );
}

/// Every pid with `file` of /proc/<pid>/ as text (processes that vanish are skipped).
fn procs(file: &str) -> Vec<(i32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<i32>().ok()?;
            let data = std::fs::read(format!("/proc/{pid}/{file}")).ok()?;
            Some((pid, String::from_utf8_lossy(&data).into_owned()))
        })
        .collect()
}

/// Processes whose parent is `pid`.
fn children_of(pid: i32) -> Vec<Seen> {
    procs("stat")
        .into_iter()
        .filter(|(_, stat)| {
            // pid (comm) state ppid ...
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
            ppid == Some(pid)
        })
        .map(|(p, _)| Seen::of(p))
        .collect()
}

/// Live processes whose command line contains `marker`.
fn with_marker(marker: &str) -> Vec<i32> {
    procs("cmdline")
        .into_iter()
        .filter(|(p, cmd)| cmd.contains(marker) && Seen::of(*p).alive())
        .map(|(p, _)| p)
        .collect()
}

fn start_endless(args: &[&str]) -> (Child, std::thread::JoinHandle<u64>) {
    let mut child = Command::new(toolpool())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // An endless input: lines until the command stops reading and exits.
    let feeder = std::thread::spawn(move || {
        let mut n = 0u64;
        let line = format!("delay:100:{}\n", "x".repeat(200));
        while input.write_all(line.as_bytes()).is_ok() {
            n += 1;
        }
        n
    });
    (child, feeder)
}

#[test]
fn ctrl_c_mid_run_finishes_in_flight_and_leaves_no_child() {
    let marker = format!("cli-sigint-{}", std::process::id());
    let (child, feeder) = start_endless(&[
        "run",
        "-n",
        "2",
        "--max-pending",
        "16",
        "--",
        testtool(),
        "--prefix",
        &marker,
    ]);
    let pid = child.id() as i32;
    // The pool is up once both instances are its children.
    assert!(
        eventually(Duration::from_secs(20), || children_of(pid).len() >= 2),
        "instances did not start"
    );
    let kids = children_of(pid);
    std::thread::sleep(Duration::from_millis(800));
    // Like a terminal's Ctrl-C: SIGINT to the command's process group.
    // SAFETY: kill(2) takes plain integers; the pid is our own child (or its group).
    unsafe { libc::kill(-pid, libc::SIGINT) };
    let t0 = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let rows: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert!(!rows.is_empty(), "{stderr}");
    assert!(rows.iter().all(|r| r.starts_with(&marker)), "{rows:?}");
    // The input was endless and is held back: the feeder got only a bounded way ahead
    // (16 pending lines, the reader's 64 KiB buffer and the pipe's 64 KiB).
    let fed = feeder.join().unwrap();
    assert!(fed < 2000, "fed {fed} lines: the input was not held back");
    // No child left behind: every instance is gone, nothing of the group remains.
    assert!(!kids.is_empty());
    assert!(
        eventually(Duration::from_secs(5), || kids.iter().all(|k| !k.alive())),
        "{kids:?}"
    );
    assert!(
        with_marker(&marker).is_empty(),
        "{:?}",
        with_marker(&marker)
    );
    assert!(!common::group_alive(pid, common::ticks_now()));
}

/// Start the command with `args` (the tool's last: `--prefix marker` is appended) and an
/// input pipe; return once `kids` tool processes run, with them.
fn started(args: &[&str], marker: &str, kids: usize) -> (Child, Vec<Seen>) {
    let child = Command::new(toolpool())
        .args(args)
        .args(["--prefix", marker])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let up = eventually(Duration::from_secs(20), || children_of(pid).len() >= kids);
    assert!(up, "the tool processes did not start");
    (child, children_of(pid))
}

/// Its output once the command has exited (within a generous bound), after checking that
/// none of the tool processes `seen` (nor any with `marker`) is left.
fn finished(mut child: Child, seen: &[Seen], marker: &str) -> Output {
    let t0 = Instant::now();
    let stdin = child.stdin.take();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    let gone = eventually(Duration::from_secs(5), || seen.iter().all(|k| !k.alive()));
    assert!(gone, "{seen:?}");
    assert!(with_marker(marker).is_empty(), "{:?}", with_marker(marker));
    out
}

/// Start, wait for `kids` tool processes, send `sig` (nothing arrives on the input), and
/// return the output.
fn signal_when_started(args: &[&str], marker: &str, kids: usize, sig: i32) -> Output {
    let (child, seen) = started(args, marker, kids);
    // SAFETY: kill(2) takes plain integers; the pid is our own child (or its group).
    unsafe { libc::kill(child.id() as i32, sig) };
    finished(child, &seen, marker)
}

#[test]
fn sigterm_and_a_quiet_pipe_also_stop_cleanly() {
    // No input arrives at all: the reader must still notice the stop.
    let marker = format!("cli-sigterm-{}", std::process::id());
    let args = ["run", "-n", "1", "--", testtool()];
    let out = signal_when_started(&args, &marker, 1, libc::SIGTERM);
    fails(&out, 143, &["0 requests"]);
}

#[test]
fn ctrl_c_while_the_pool_starts_ends_the_start() {
    let marker = format!("cli-start-{}", std::process::id());
    let args = [
        "run",
        "-n",
        "2",
        "--ready-line",
        "R",
        "--startup-timeout",
        "60s",
        "--",
        testtool(),
        "--start-delay-ms",
        "30000",
        "--ready",
        "R",
    ];
    let out = signal_when_started(&args, &marker, 2, libc::SIGINT);
    fails(&out, 130, &["interrupted while starting"]);
}

#[test]
fn a_second_ctrl_c_stops_requests_in_flight() {
    let marker = format!("cli-second-{}", std::process::id());
    let args = ["run", "-n", "2", "--jsonl", "--", testtool()];
    let (mut child, seen) = started(&args, &marker, 2);
    let pid = child.id() as i32;
    // stderr line by line, to see what the first Ctrl-C says.
    let (tx, rx) = crossbeam_channel::unbounded::<String>();
    let stderr = child.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    // Two requests that never get a reply (the default timeout is a minute).
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hang\nhang\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) takes plain integers; the pid is our own child (or its group).
    unsafe { libc::kill(pid, libc::SIGINT) };
    // The first Ctrl-C waits for what is in flight, and says so.
    let said = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("nothing said at the first Ctrl-C");
    assert!(
        said.contains("waiting for 2 requests in flight (Ctrl-C again stops them)"),
        "{said}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited at the first Ctrl-C"
    );
    // SAFETY: kill(2) takes plain integers; the pid is our own child (or its group).
    unsafe { libc::kill(pid, libc::SIGINT) };
    let mut out = finished(child, &seen, &marker);
    drop(stdin);
    out.stderr = lines.join().unwrap().into_bytes();
    fails(&out, 130, &["2 requests, 0 ok, 2 failed", "interrupted"]);
    let rows = jsonl(&out);
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["ok"] == false), "{rows:?}");
}

#[test]
fn plain_output_passes_the_tools_bytes_through_and_jsonl_replaces_them() {
    let out = cli(&["run", "-n", "1", "--", testtool()], "badutf8\nok\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"bad \xff\xfe\xc3 bytes\nok\n");
    let out = cli(
        &["run", "-n", "1", "--jsonl", "--", testtool()],
        "badutf8\n",
    );
    let rows = jsonl(&out);
    assert_eq!(
        rows[0]["reply"], "bad \u{FFFD}\u{FFFD}\u{FFFD} bytes",
        "{rows:?}"
    );
}

#[test]
fn restart_policy_takes_both_spellings() {
    for policy in ["on-failure", "on_failure", "always", "never"] {
        let out = cli(
            &["run", "-n", "1", "--restart", policy, "--", testtool()],
            "x\n",
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{policy}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout), "x\n");
    }
    let out = cli(&["run", "--restart", "sometimes", "--", testtool()], "x\n");
    fails(&out, 2, &["'sometimes' is not a restart policy"]);
}

#[test]
fn check_good_and_bad_registries() {
    let good = write_file(
        "good.json",
        &format!(
            r#"{{"tools": {{
                "bc": {{"command": ["bc", "-q"], "count": 2}},
                "rpc": {{"command": ["python3", "-u", "{}", "--ready", "READY"], "protocol": "jsonrpc",
                         "startup": {{"ready_line": "READY", "timeout_ms": 20000}}}}
            }}}}"#,
            rpc_tool()
        ),
    );
    let out = cli(&["check", good.to_str().unwrap()], "");
    let o = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{o}{}", text(&out.stderr));
    assert!(o.contains("valid, 2 tool(s)"), "{o}");
    assert!(
        o.contains("bc -q") && o.contains("jsonrpc") && o.contains("\"READY\""),
        "{o}"
    );

    let out = cli(&["check", good.to_str().unwrap(), "--start"], "");
    let o = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{o}");
    assert_eq!(o.matches("ready in ").count(), 2, "{o}");
    assert!(o.contains("2 of 2 tool(s) started"), "{o}");

    let broken = write_file(
        "broken.json",
        r#"{"tools": {"bc": {"command": ["bc"]}, "slow": {"command": ["bc"], "restart": {"policy": "sometimes"}}}}"#,
    );
    let out = cli(&["check", broken.to_str().unwrap()], "");
    fails(&out, 2, &["tool 'slow'", "restart.policy"]);

    let missing = write_file(
        "missing.json",
        r#"{"tools": {"gone": {"command": ["/no/such/tool"]}}}"#,
    );
    let out = cli(&["check", missing.to_str().unwrap(), "--start"], "");
    let o = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{o}");
    assert!(o.contains("FAILED") && o.contains("/no/such/tool"), "{o}");

    let out = cli(&["check", "/no/such/registry.json"], "");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bench_prints_a_speed_up() {
    let input: String = (1..=100).map(|k| format!("{k}*3\n")).collect();
    let out = cli(
        &["bench", "-n", "2", "--spawn-calls", "20", "--", "bc", "-q"],
        &input,
    );
    let o = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{o}{}", text(&out.stderr));
    assert!(o.contains("pooled") && o.contains("spawn per call"), "{o}");
    let last = o.lines().last().unwrap();
    // e.g. "pooled 0.21 ms, spawn per call 9.4 ms: 45x (calls/s: 40x)"
    let x: f64 = last
        .split(": ")
        .nth(1)
        .and_then(|s| s.split('x').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no speed-up in {last:?}"));
    assert!(x > 0.0, "{last}");
}

#[test]
fn help_is_complete() {
    let out = cli(&["--help"], "");
    let h = text(&out.stdout);
    for word in ["run", "bench", "check", "Exit status", "Examples"] {
        assert!(h.contains(word), "{word} missing from --help:\n{h}");
    }
    let out = cli(&["run", "--help"], "");
    let h = text(&out.stdout);
    for flag in [
        "--instances",
        "--protocol",
        "--timeout",
        "--retries",
        "--jsonl",
        "--unordered",
        "--progress",
        "--ready-line",
        "--env",
        "--cwd",
        "--restart",
        "--spec",
        "--registry",
        "--tool",
        "--input",
        "--output",
        "Ctrl-C",
    ] {
        assert!(h.contains(flag), "{flag} missing from run --help:\n{h}");
    }
    let h = text(&cli(&["bench", "--help"], "").stdout);
    assert!(h.contains("--spawn-calls") && h.contains("speed-up"), "{h}");
    let h = text(&cli(&["check", "--help"], "").stdout);
    assert!(h.contains("--start") && h.contains("REGISTRY"), "{h}");
}

/// A spec file with a handshake, and `--protocol lsp` on the command line: the pooled side
/// handshakes once per instance, the spawned side starts (and handshakes) a server per call.
#[test]
fn bench_speaks_lsp_with_a_handshake_from_a_spec_file() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-lsp");
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("spec.json");
    std::fs::write(
        &spec,
        serde_json::json!({
            "command": ["python3", "-u", rpc_tool(), "--lsp"],
            "protocol": "lsp",
            "count": 2,
            "startup": {"timeout_ms": 20000, "handshake": [
                {"method": "echo", "params": {"hello": 1}},
                {"method": "initialized", "notification": true}]}
        })
        .to_string(),
    )
    .unwrap();
    let calls = dir.join("calls.jsonl");
    // `notes` answers only after the handshake's notification arrived: a call on an
    // instance that skipped the handshake would reply [].
    std::fs::write(
        &calls,
        "{\"method\":\"notes\"}\n{\"method\":\"add\",\"params\":[1,2]}\n",
    )
    .unwrap();
    let out = cli(
        &[
            "bench",
            "--spec",
            spec.to_str().unwrap(),
            "--protocol",
            "lsp",
            "--input",
            calls.to_str().unwrap(),
            "--calls",
            "50",
            "--spawn-calls",
            "2",
        ],
        "",
    );
    let o = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{o}{}", text(&out.stderr));
    assert!(o.contains("pooled") && o.contains("50 calls"), "{o}");
    assert!(o.contains("spawn per call") && o.contains("2 calls"), "{o}");
    assert!(o.lines().last().unwrap().contains("x (calls/s:"), "{o}");
    // The same through `toolpool run`: the reply shows the handshake reached the tool.
    let out = cli(
        &["run", "--spec", spec.to_str().unwrap(), "-n", "1"],
        "{\"method\":\"notes\"}\n",
    );
    let o = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{o}{}", text(&out.stderr));
    assert!(o.contains("initialized"), "{o}");
}

/// The example MCP spec (examples/specs/mcp-time.json, `make demo`) against the real server.
#[test]
fn bench_drives_the_example_mcp_spec() {
    let root = env!("CARGO_MANIFEST_DIR");
    let venv = Command::new(format!("{root}/tests/protocol_venv.sh"))
        .output()
        .unwrap();
    assert!(venv.status.success(), "{}", text(&venv.stderr));
    let out = Command::new(toolpool())
        .current_dir(root)
        .args([
            "bench",
            "--spec",
            "examples/specs/mcp-time.json",
            "--input",
            "examples/specs/mcp-time-calls.jsonl",
            "--calls",
            "40",
            "--spawn-calls",
            "1",
        ])
        .output()
        .unwrap();
    let o = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{o}{}", text(&out.stderr));
    assert!(
        o.contains("2 instance(s) of 'mcp-time'") && o.contains("40 calls"),
        "{o}"
    );
}

#[test]
fn the_tools_people_have_from_the_command_line() {
    // bc's error on stderr fails its row fast, in bc's own words; the rest answer.
    let t0 = Instant::now();
    let out = cli(&["run", "-n", "1", "--", "bc", "-q"], "1+1\n1/0\n2*3\n");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(text(&out.stdout), "2\n\n6\n");
    assert!(
        stderr.contains("line 2: tool error: Runtime error (func=(main), adr=3): Divide by zero"),
        "{stderr}"
    );
    // A long bc result wraps over two lines, which `lines` framing cannot tell apart
    // from the next reply: one line is left over, counted, and the cure named.
    let out = cli(&["run", "-n", "1", "--", "bc", "-q"], "2^300\n1+1\n");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("1 output lines outside any request"),
        "{stderr}"
    );
    assert!(stderr.contains("--end-command"), "{stderr}");
    // ... and with an end command it arrives whole.
    let out = cli(
        &[
            "run",
            "-n",
            "1",
            "--protocol",
            "marker:END",
            "--end-command",
            "print \"END\\n\"",
            "--jsonl",
            "--",
            "bc",
            "-q",
        ],
        "2^300\n",
    );
    let rows = jsonl(&out);
    assert_eq!(
        rows[0]["reply"].as_str().unwrap().lines().count(),
        2,
        "{rows:?}"
    );
    // sqlite3: a query's rows are one reply; an error is its row's error.
    let out = cli(
        &[
            "run",
            "-n",
            "1",
            "--protocol",
            "marker:END",
            "--end-command",
            ".print END",
            "--jsonl",
            "--",
            "sqlite3",
        ],
        "create table t(a);\ninsert into t values (1), (2);\nselect a from t;\nselec 1;\n",
    );
    let rows = jsonl(&out);
    assert_eq!(rows[2]["reply"], "1\n2", "{rows:?}");
    assert_eq!(rows[3]["error"]["name"], "tool_error", "{rows:?}");
    assert!(
        rows[3]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("syntax error"),
        "{rows:?}"
    );
    // jq buffers on a pipe; on a terminal it answers.
    let out = cli(
        &["run", "-n", "1", "--pty", "--", "jq", "-M", "-c", ".a"],
        "{\"a\": 7}\n",
    );
    assert_eq!(text(&out.stdout), "7\n", "{}", text(&out.stderr));
    let out = cli(
        &[
            "run",
            "-n",
            "1",
            "--timeout",
            "500ms",
            "--",
            "jq",
            "-c",
            ".a",
        ],
        "{\"a\": 7}\n",
    );
    assert!(text(&out.stderr).contains("--pty"), "{}", text(&out.stderr));
    // A tool that crashes on every line: the cap stops it and the rows say so at once.
    let out = cli(
        &[
            "run",
            "-n",
            "1",
            "--max-restarts",
            "1",
            "--",
            testtool(),
            "--crash-after",
            "1",
        ],
        &"x\n".repeat(20),
    );
    let stderr = text(&out.stderr);
    assert!(stderr.contains("restart.max_restarts"), "{stderr}");
}

#[test]
fn an_interactive_tool_from_the_command_line() {
    // python3 -i on a terminal: each input line is one statement, its reply what Python
    // printed before its next prompt; a traceback is that row's error.
    let out = cli(
        &[
            "run",
            "-n",
            "1",
            "--pty",
            "--protocol",
            "prompt:>>> ",
            "--jsonl",
            "--",
            "python3",
            "-i",
            "-q",
        ],
        "x = 6\nx * 7\nprint('a'); print('b')\n1/0\nx\n",
    );
    let rows = jsonl(&out);
    assert_eq!(rows.len(), 5, "{}", text(&out.stderr));
    assert_eq!(rows[0]["reply"], "");
    assert_eq!(rows[1]["reply"], "42");
    assert_eq!(rows[2]["reply"], "a\nb");
    assert_eq!(rows[3]["error"]["name"], "tool_error", "{rows:?}");
    assert!(
        rows[3]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ZeroDivisionError"),
        "{rows:?}"
    );
    assert_eq!(rows[4]["reply"], "6");
    assert_eq!(out.status.code(), Some(1));
}
