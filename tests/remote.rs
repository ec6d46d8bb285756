//! Instances on other hosts (`remote`), against a real OpenSSH server on 127.0.0.1 that
//! each test starts on a free port with throwaway keys (tests/common/sshd.rs), and
//! through stand-ins for `srun` and `kubectl` on PATH (the stand-ins record their exact
//! argv, then run the remote part locally; tests/slurm.rs runs a real Slurm cluster, no
//! Kubernetes runs here). All traffic goes to loopback.

mod common;
#[path = "common/sshd.rs"]
mod sshd;

use common::{eventually, reply_pid, testtool, Seen};
use sshd::Sshd;
use std::time::{Duration, Instant};
use toolpool::{Error, Launcher, Pool, RemoteSpec, Restart, RestartPolicy, State, ToolSpec};

const T: Duration = Duration::from_secs(10);

/// The tests of this file run one at a time: each starts its own sshd and many sessions,
/// and the start-up time test must not share the CPU with another one's sessions.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
/// The ask: the remote tool and its descendants end within 5 s.
const CLEANUP: Duration = Duration::from_secs(5);

fn ssh_spec(sshd: &Sshd, hosts: &[&str], count: usize, args: &[&str]) -> ToolSpec {
    common::remote_tool(Launcher::Ssh, hosts, sshd.options(), count, args)
}

fn pool(spec: ToolSpec) -> toolpool::Result<Pool> {
    common::try_private(spec)
}

/// Processes whose argv holds `needle` as one argument (ssh clients and masters of a test).
fn processes_with_arg(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if cmd.split(|b| *b == 0).any(|a| a == needle.as_bytes()) {
                out.push(pid);
            }
        }
    }
    out
}

#[test]
fn spec_errors_name_the_key() {
    let _serial = serial();
    let cases = [
        (
            r#"{"command":["cat"],"remote":{"launcher":"ssh","hosts":[]}}"#,
            "remote.hosts",
        ),
        (
            r#"{"command":["cat"],"remote":{"launcher":["myrsh","-x"],"hosts":["a"]}}"#,
            "{host}",
        ),
        (
            r#"{"command":["cat"],"count":2,"remote":{"launcher":"ssh","hosts":["a"],"per_host":2}}"#,
            "remote.per_host",
        ),
        (
            r#"{"command":["cat"],"remote":{"launcher":"ssh","hosts":["a"],"per_host":0}}"#,
            "remote.per_host",
        ),
        (
            r#"{"command":["cat","a\nb"],"remote":{"launcher":"ssh","hosts":["a"]}}"#,
            "command[1]",
        ),
        (
            r#"{"command":["cat"],"remote":{"launcher":"rsh","hosts":["a"]}}"#,
            "unknown launcher 'rsh'",
        ),
        (
            r#"{"command":["cat"],"remote":{"launcher":"ssh","hosts":["-oProxyCommand=x"]}}"#,
            "remote.hosts[0]",
        ),
        (
            r#"{"command":["cat"],"remote":{"launcher":"ssh","hosts":["a"],"port":22}}"#,
            "port",
        ),
        // only srun may leave the hosts to the Slurm allocation
        (
            r#"{"command":["cat"],"remote":{"launcher":"kubectl"}}"#,
            "remote.hosts",
        ),
        (
            r#"{"command":["cat"],"remote":{"launcher":"srun","hosts":["n1"],"options":["-Jmine"]}}"#,
            "remote.options[0]",
        ),
        (
            r#"{"command":["cat"],"remote":{"launcher":"srun","options":["--job-name=x"]}}"#,
            "--job-name",
        ),
        (
            r#"{"command":["cat"],"remote":{"launcher":"srun","per_host":0}}"#,
            "remote.per_host",
        ),
    ];
    for (json, want) in cases {
        match ToolSpec::from_json(json) {
            Err(Error::Config(m)) => assert!(m.contains(want), "{json}: {m} lacks {want}"),
            other => panic!("{json}: expected a config error, got {other:?}"),
        }
    }
    // per_host sets count; a newline is fine where the launcher takes an argv
    let s = ToolSpec::from_json(
        r#"{"command":["cat","a\nb"],"remote":{"launcher":"srun","hosts":["n1","n2"],"per_host":3}}"#,
    )
    .unwrap();
    assert_eq!(s.count, 6);
    // without hosts (srun: the allocation's nodes, known when a pool is made) per_host
    // counts one node until then
    let s = ToolSpec::from_json(r#"{"command":["cat"],"remote":{"launcher":"srun","per_host":3}}"#)
        .unwrap();
    assert_eq!((s.count, s.remote.unwrap().hosts.len()), (3, 0));
    // a spec goes back to JSON and parses to the same (the launcher as string or array)
    for json in [
        r#"{"command":["cat"],"remote":{"launcher":"kubectl","hosts":["p"],"options":["-n","x"]}}"#,
        r#"{"command":["cat"],"remote":{"launcher":["docker","exec","-i","{host}"],"hosts":["c"]}}"#,
    ] {
        let a = ToolSpec::from_json(json).unwrap();
        let back = serde_json::to_string(&a).unwrap();
        assert_eq!(ToolSpec::from_json(&back).unwrap(), a, "{back}");
    }
}

#[test]
fn ssh_pool_on_two_host_names_serves_and_shows_hosts() {
    let _serial = serial();
    let sshd = Sshd::start();
    let weird = r#"it's "quoted" $HOME `id` $(id); a|b & *? \ end"#;
    let mut spec = ssh_spec(&sshd, &["127.0.0.1", "localhost"], 4, &["--prefix", weird]);
    spec.env.insert("TP_VAR".into(), "two words; 'q' $x".into());
    spec.cwd = Some("/usr".into());
    // the tests of this file run one at a time, so these counts are this test's own
    let (fds0, threads0) = (common::fd_count(), common::thread_count());
    let p = pool(spec).expect("pool starts over ssh");
    for i in 0..8 {
        let r = p.request(&format!("hello {i}"), T).unwrap();
        assert_eq!(r.text, format!("{weird}hello {i}"));
    }
    // (these two commands reply without the prefix)
    assert_eq!(
        p.request("env:TP_VAR", T).unwrap().text,
        "two words; 'q' $x"
    );
    assert_eq!(p.request("cwd", T).unwrap().text, "/usr");
    let st = p.status();
    let hosts: Vec<_> = st
        .instances
        .iter()
        .map(|i| i.host.clone().unwrap())
        .collect();
    assert_eq!(hosts, ["127.0.0.1", "localhost", "127.0.0.1", "localhost"]);
    assert_eq!(st.hosts.len(), 2);
    for h in &st.hosts {
        assert_eq!((h.instances, h.ready, h.dead), (2, 2, 0), "{h:?}");
    }
    // the local launcher: shared connection, no prompt, host keys checked as the options say
    let argv: Vec<String> =
        std::fs::read(format!("/proc/{}/cmdline", st.instances[0].pid.unwrap()))
            .unwrap()
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
    assert_eq!(argv[..3], ["ssh", "-o", "ControlMaster=no"]);
    for want in [
        "BatchMode=yes",
        "StrictHostKeyChecking=yes",
        "-T",
        "--",
        "127.0.0.1",
    ] {
        assert!(argv.iter().any(|a| a == want), "{want} in {argv:?}");
    }
    assert!(!argv.iter().any(|a| a.contains("StrictHostKeyChecking=no")));
    let line = argv.iter().rev().find(|a| !a.is_empty()).unwrap();
    assert!(
        line.starts_with("'sh' '-c' 'eval \"$1\"' 'toolpool-watchdog' "),
        "{line}"
    );
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["instances"][1]["host"], "localhost");
    assert_eq!(json["hosts"][0]["host"], "127.0.0.1");
    assert_eq!(json["hosts"][0]["ready"], 2);
    // one master connection per host, gone with the pool
    let control: Vec<i32> = processes_with_arg("ControlMaster=yes");
    let ours: Vec<i32> = control
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&sshd.port.to_string()))
        })
        .collect();
    assert_eq!(ours.len(), 2, "one master per host: {ours:?}");
    // the private directory of the control sockets, from a master's argv
    let cmd = std::fs::read(format!("/proc/{}/cmdline", ours[0])).unwrap();
    let socket = cmd
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .find_map(|a| a.strip_prefix("ControlPath=").map(String::from))
        .unwrap();
    let dir = std::path::Path::new(&socket)
        .parent()
        .unwrap()
        .to_path_buf();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    p.shutdown(Duration::from_secs(2));
    assert!(
        !dir.exists(),
        "control socket dir {} removed",
        dir.display()
    );
    drop(p);
    common::assert_fds_and_threads_back(fds0, threads0);
    assert!(
        eventually(Duration::from_secs(3), || ours
            .iter()
            .all(|pid| !Seen::of(*pid).alive())),
        "masters stopped at shutdown"
    );
    assert!(common::no_lasting_zombies());
}

/// An elastic remote pool starts `min_instances` over ssh, like a local one, and grows on
/// the remote host when every started instance is busy; `min_instances: 0` starts none.
#[test]
fn elastic_remote_pool_starts_min_instances_and_grows() {
    let _serial = serial();
    let sshd = Sshd::start();
    let spec = ToolSpec {
        min_instances: Some(1),
        ..ssh_spec(&sshd, &["127.0.0.1"], 3, &[])
    };
    let p = pool(spec.clone()).expect("pool starts over ssh");
    let st = p.status();
    assert_eq!((st.started, st.max_instances, st.min_instances), (1, 3, 1));
    // Three slow callers at once: the pool grows to serve them, on the remote host.
    std::thread::scope(|s| {
        for k in 0..3 {
            let p = &p;
            s.spawn(move || {
                let r = p.request(&format!("delay:1500:slow {k}"), T).unwrap();
                assert_eq!(r.text, format!("slow {k}"));
            });
        }
    });
    let st = p.status();
    assert!(st.started >= 2, "started {}", st.started);
    assert!(st
        .instances
        .iter()
        .filter(|i| i.pid.is_some())
        .all(|i| i.host.as_deref() == Some("127.0.0.1")));
    p.shutdown(Duration::from_secs(1));
    let lazy = pool(ToolSpec {
        min_instances: Some(0),
        ..spec
    })
    .expect("a pool of none started");
    assert_eq!(lazy.status().started, 0);
    assert_eq!(lazy.request("on demand", T).unwrap().text, "on demand");
    assert_eq!(lazy.status().started, 1);
}

#[test]
fn killed_local_launcher_ends_the_remote_tool() {
    let _serial = serial();
    let sshd = Sshd::start();
    let p = pool(ssh_spec(&sshd, &["127.0.0.1"], 1, &["--ignore-term"])).unwrap();
    let tool = Seen::of(reply_pid(&p, 0, "pid"));
    let grandchild = Seen::of(reply_pid(&p, 0, "grandchild"));
    assert!(tool.alive() && grandchild.alive());
    // the tool stops reading: it will never see end of input
    p.send(0, "hang").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let launcher = p.status().instances[0].pid.unwrap();
    // SAFETY: plain syscall on our own child.
    unsafe { libc::kill(launcher, libc::SIGKILL) };
    let t0 = Instant::now();
    assert!(
        eventually(CLEANUP, || !tool.alive() && !grandchild.alive()),
        "remote tool {} and its child {} still alive {:?} after the local ssh was killed",
        tool.pid,
        grandchild.pid,
        t0.elapsed()
    );
    eprintln!("remote tool gone {:?} after its launcher", t0.elapsed());
}

#[test]
fn stubborn_remote_tool_is_gone_after_shutdown() {
    let _serial = serial();
    let sshd = Sshd::start();
    let p = pool(ssh_spec(
        &sshd,
        &["127.0.0.1", "localhost"],
        2,
        &["--ignore-term"],
    ))
    .unwrap();
    let mut seen = Vec::new();
    for i in 0..2 {
        seen.push(Seen::of(reply_pid(&p, i, "pid")));
        seen.push(Seen::of(reply_pid(&p, i, "grandchild")));
        p.send(i, "hang").unwrap(); // ignores end of input and SIGTERM from now on
    }
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    p.shutdown(Duration::from_millis(500));
    assert!(
        eventually(CLEANUP, || seen.iter().all(|s| !s.alive())),
        "remote processes left after shutdown: {:?}",
        seen.iter().filter(|s| s.alive()).collect::<Vec<_>>()
    );
    eprintln!(
        "stubborn remote tools gone {:?} after shutdown began",
        t0.elapsed()
    );
}

#[test]
fn dropped_connection_ends_the_remote_tool_and_the_instance_restarts() {
    let _serial = serial();
    let sshd = Sshd::start();
    let mut spec = ssh_spec(&sshd, &["127.0.0.1"], 1, &["--ignore-term"]);
    spec.restart = Restart {
        policy: RestartPolicy::Always,
        backoff_initial_ms: 50,
        ..Restart::default()
    };
    let p = pool(spec).unwrap();
    let tool = Seen::of(reply_pid(&p, 0, "pid"));
    p.send(0, "hang").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // the shared connection: kill its master (the TCP connection closes under the sessions)
    let masters: Vec<i32> = processes_with_arg("ControlMaster=yes")
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&sshd.port.to_string()))
        })
        .collect();
    assert_eq!(masters.len(), 1);
    // SAFETY: plain syscall on our own child.
    unsafe { libc::kill(masters[0], libc::SIGKILL) };
    assert!(
        eventually(CLEANUP, || !tool.alive()),
        "remote tool {} left after the connection dropped",
        tool.pid
    );
    // the instance comes back through a new master
    assert!(
        eventually(T, || p.status().instances[0].state == State::Ready
            && p.request("again", Duration::from_secs(2))
                .is_ok_and(|r| r.text == "again")),
        "instance restarted: {:?}",
        p.status().instances[0]
    );
    assert!(p.status().instances[0].restarts >= 1);
}

#[test]
fn unreachable_host_fails_clearly_while_the_other_serves() {
    let _serial = serial();
    let sshd = Sshd::start();
    let closed = sshd::free_port();
    let good = format!("ssh://127.0.0.1:{}", sshd.port);
    let bad = format!("ssh://127.0.0.1:{closed}");
    let mut opts = sshd.options();
    let p_at = opts.iter().position(|o| o == "-p").unwrap();
    opts.drain(p_at..p_at + 2); // the port comes from each host here
    let mut spec = ssh_spec(&sshd, &[&good, &bad], 4, &[]);
    spec.remote.as_mut().unwrap().options = opts;
    spec.restart = Restart {
        policy: RestartPolicy::OnFailure,
        backoff_initial_ms: 50,
        max_restarts: 3,
        ..Restart::default()
    };
    let p = pool(spec.clone()).expect("one good host is enough");
    for i in 0..6 {
        let r = p.request(&format!("r{i}"), T).unwrap();
        assert!(
            matches!(r.instance, Some(0) | Some(2)),
            "routed to a live instance: {r:?}"
        );
    }
    let st = p.status();
    for i in [1, 3] {
        let s = &st.instances[i];
        assert_ne!(s.state, State::Ready);
        let e = s
            .host_error
            .as_deref()
            .expect("the failed start is in the status");
        assert!(e.contains(&bad), "names the host: {e}");
        assert!(e.contains("Connection refused"), "has ssh's stderr: {e}");
    }
    let good_h = st.hosts.iter().find(|h| h.host == good).unwrap();
    let bad_h = st.hosts.iter().find(|h| h.host == bad).unwrap();
    assert_eq!(good_h.ready, 2);
    assert_eq!(bad_h.ready, 0);
    assert_eq!(bad_h.dead + bad_h.failed + bad_h.starting, 2, "{bad_h:?}");
    // the policy retries the dead host per instance, with backoff, up to its cap; the
    // good host serves all along
    assert!(
        eventually(T, || p
            .status()
            .hosts
            .iter()
            .any(|h| h.host == bad && h.failed == 2)),
        "{:?}",
        p.status().hosts
    );
    let st = p.status();
    let reason = st.instances[1].failed_reason.as_deref().unwrap();
    assert!(reason.contains("restart.max_restarts"), "{reason}");
    assert!(p.request("still", T).is_ok_and(|r| r.text == "still"));
    drop(p);
    // every host down: the pool does not start, and says why
    let mut all_bad = spec;
    all_bad.remote.as_mut().unwrap().hosts = vec![bad.clone()];
    all_bad.count = 1;
    match pool(all_bad) {
        Err(Error::Spawn(m)) => {
            assert!(m.contains(&bad) && m.contains("Connection refused"), "{m}")
        }
        other => panic!("expected a spawn error, got {other:?}"),
    }
}

#[test]
fn thirty_two_instances_on_one_host_start_within_two_seconds() {
    let _serial = serial();
    let sshd = Sshd::start();
    let mut spec = ssh_spec(&sshd, &["127.0.0.1"], 32, &[]);
    spec.remote.as_mut().unwrap().per_host = Some(32);
    // warm the disk cache and the server once (not timed), as a pool in a running host would
    drop(pool(ssh_spec(&sshd, &["127.0.0.1"], 1, &[])).unwrap());
    // The best of up to three starts: the machine running the tests is shared, and a
    // start is mostly CPU (4 ssh handshakes, 32 sessions); the best start is the figure.
    let mut times = Vec::new();
    let mut p = None;
    for _ in 0..3 {
        drop(p.take());
        let t0 = Instant::now();
        let started = pool(spec.clone()).unwrap();
        times.push(t0.elapsed());
        assert_eq!(started.health().ready, 32);
        p = Some(started);
        if times.last().is_some_and(|t| *t <= Duration::from_secs(2)) {
            break;
        }
    }
    let best = times.iter().min().copied().unwrap();
    eprintln!("32 instances over ssh ready in {times:?}");
    assert!(
        best <= Duration::from_secs(2),
        "32 instances took {times:?}"
    );
    let p = p.unwrap();
    let replies = p.map(&(0..64).map(|i| i.to_string()).collect::<Vec<_>>(), T);
    assert!(replies.iter().all(|r| r.is_ok()));
}

/// Stand-in launchers on PATH for one test (the tests of this file run one at a time):
/// each records its argv (NUL-separated) in `DIR/log/NAME.PID`, drops its own arguments as
/// the real one would, and runs the rest here. Dropping it restores PATH and removes DIR.
struct Standins {
    dir: std::path::PathBuf,
    old_path: std::ffi::OsString,
}

impl Standins {
    fn install() -> Standins {
        let dir = std::env::temp_dir().join(format!("toolpool-standins-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("log")).unwrap();
        let write = |name: &str, skip: &str| {
            let path = dir.join(name);
            std::fs::write(
                &path,
                format!(
                    "#!/bin/sh\nprintf '%s\\0' \"$0\" \"$@\" > \"{log}/{name}.$$\"\n{skip}\nexec \"$@\"\n",
                    log = dir.join("log").display()
                ),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        // srun: options up to the program; kubectl exec: everything up to `--`
        write("srun", r#"while [ "$1" != sh ]; do shift; done"#);
        write("kubectl", r#"while [ "$1" != -- ]; do shift; done; shift"#);
        let old_path = std::env::var_os("PATH").unwrap_or_default();
        let mut path = std::ffi::OsString::from(&dir);
        path.push(":");
        path.push(&old_path);
        // Only `srun` and `kubectl` live there, so no other lookup changes.
        std::env::set_var("PATH", path);
        Standins { dir, old_path }
    }
}

impl Drop for Standins {
    fn drop(&mut self) {
        std::env::set_var("PATH", &self.old_path);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn standin_argv(dir: &std::path::Path, name: &str, pid: i32) -> Vec<String> {
    let raw = std::fs::read(dir.join("log").join(format!("{name}.{pid}"))).unwrap();
    raw.split(|b| *b == 0)
        .take(raw.iter().filter(|b| **b == 0).count())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn standin_pool(launcher: Launcher, options: &[&str]) -> Pool {
    let options = options.iter().map(|s| s.to_string()).collect();
    let mut spec = ToolSpec {
        id: "standin".into(),
        ..common::remote_tool(
            launcher,
            &["node-a", "node-b"],
            options,
            2,
            &["--prefix", "a b 'c'"],
        )
    };
    spec.env.insert("TP_VAR".into(), "v w".into());
    pool(spec).unwrap()
}

fn expected_tail() -> Vec<String> {
    let mut want: Vec<String> = ["sh", "-c", r#"eval "$1""#, "toolpool-watchdog"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    want.push(toolpool::remote::watchdog::SCRIPT.into());
    want.extend(["0".into(), "".into(), "env".into(), "TP_VAR=v w".into()]);
    want.extend([testtool(), "--prefix", "a b 'c'", "--ready", "READY"].map(String::from));
    want
}

#[test]
fn srun_argv_through_a_stand_in() {
    let _serial = serial();
    let standins = Standins::install();
    let dir = standins.dir.clone();
    let p = standin_pool(Launcher::Srun, &["--partition=debug", "--time=5"]);
    assert_eq!(p.request("x", T).unwrap().text, "a b 'c'x");
    assert_eq!(p.request("env:TP_VAR", T).unwrap().text, "v w");
    let st = p.status();
    for (i, node) in ["node-a", "node-b"].iter().enumerate() {
        assert_eq!(st.instances[i].host.as_deref(), Some(*node));
        let argv = standin_argv(&dir, "srun", st.instances[i].pid.unwrap());
        // each start's step is named with a tag of its own (see tests/slurm.rs)
        let tag = argv[5]
            .strip_prefix("--job-name=")
            .unwrap_or_else(|| panic!("a step name in {argv:?}"));
        assert!(tag.starts_with(&format!("toolpool-standin-{i}-")), "{tag}");
        let mut want: Vec<String> = vec![
            dir.join("srun").display().to_string(),
            "--nodes=1".into(),
            "--ntasks=1".into(),
            "--unbuffered".into(),
            format!("--nodelist={node}"),
            format!("--job-name={tag}"),
            "--partition=debug".into(),
            "--time=5".into(),
        ];
        want.extend(expected_tail());
        assert_eq!(argv, want);
    }
}

#[test]
fn kubectl_argv_through_a_stand_in() {
    let _serial = serial();
    let standins = Standins::install();
    let dir = standins.dir.clone();
    let p = standin_pool(Launcher::Kubectl, &["-n", "tools", "-c", "main"]);
    assert_eq!(p.request("y", T).unwrap().text, "a b 'c'y");
    let st = p.status();
    for (i, pod) in ["node-a", "node-b"].iter().enumerate() {
        let argv = standin_argv(&dir, "kubectl", st.instances[i].pid.unwrap());
        let mut want: Vec<String> = [
            dir.join("kubectl").display().to_string(),
            "exec".into(),
            "-i".into(),
            "-n".into(),
            "tools".into(),
            "-c".into(),
            "main".into(),
            pod.to_string(),
            "--".into(),
        ]
        .to_vec();
        want.extend(expected_tail());
        assert_eq!(argv, want);
    }
    // the watchdog under kubectl: a stopped instance takes its (stubborn) tool with it
    let tool = Seen::of(reply_pid(&p, 0, "pid"));
    p.send(0, "hang").unwrap();
    p.shutdown(Duration::from_millis(300));
    assert!(eventually(CLEANUP, || !tool.alive()));
}

#[test]
fn argv_template_launcher() {
    let _serial = serial();
    let spec = ToolSpec {
        id: "tmpl".into(),
        count: 2,
        remote: Some(RemoteSpec {
            launcher: Launcher::Template(vec!["env".into(), "TP_HOST=on {host}".into()]),
            hosts: vec!["h1".into(), "h2".into()],
            options: vec![],
            per_host: None,
        }),
        ..ToolSpec::new([testtool()])
    };
    let p = pool(spec).unwrap();
    p.send(1, "env:TP_HOST").unwrap();
    assert_eq!(p.read_line(1, T).unwrap(), "on h2");
}
