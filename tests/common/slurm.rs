//! A real one-node Slurm cluster for tests (Debian's `slurm-wlm` and `munge`): `munged`,
//! `slurmctld` and `slurmd` started in the foreground in a private temp dir (mode 0700)
//! with their own munge key, socket, state, spool, logs, and a `slurm.conf` on two free
//! ports of 127.0.0.1. The one node is `localhost` (`ProctrackType=proctrack/linuxproc`,
//! `TaskPlugin=task/none`, no accounting, 64 CPUs declared so that many one-task jobs run
//! at once); every other setting is Slurm's default (`KillWait=30`, no `InactiveLimit`).
//! The clients find it through `SLURM_CONF`, which [`Slurm::start`] sets for this process
//! (the tests of a file that uses it run one at a time).
//!
//! Dropping it kills every `slurmstepd` of this cluster with everything below it and
//! every process started with its `SLURM_CONF` (a tool left behind by a failed test),
//! kills the daemons, and removes the dir: also when the test panics.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's packages put the daemons.
pub const SLURMCTLD: &str = "/usr/sbin/slurmctld";
pub const SLURMD: &str = "/usr/sbin/slurmd";
pub const MUNGED: &str = "/usr/sbin/munged";

/// The one node.
pub const NODE: &str = "localhost";

pub struct Slurm {
    pub dir: PathBuf,
    pub conf: PathBuf,
    /// munged, slurmctld, slurmd (stopped in reverse order).
    daemons: Vec<(&'static str, Child)>,
    /// From the start of [`Slurm::start`] until the node was idle.
    pub up_after: Duration,
}

/// True when the daemons and the clients are installed.
pub fn available() -> bool {
    [
        SLURMCTLD,
        SLURMD,
        MUNGED,
        "/usr/bin/srun",
        "/usr/bin/scontrol",
    ]
    .iter()
    .all(|p| Path::new(p).exists())
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

fn daemon(name: &'static str, cmd: &mut Command, log: &Path) -> (&'static str, Child) {
    let log = std::fs::File::create(log).unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{name} starts: {e}"));
    (name, child)
}

impl Slurm {
    /// Start the cluster and wait until its node is idle; panics with the way to install
    /// the packages when they are missing, and with the daemons' logs when it does not
    /// come up.
    pub fn start() -> Slurm {
        let t0 = Instant::now();
        assert!(
            available(),
            "Slurm is missing: `apt-get install -y slurm-wlm munge` (make test installs them)"
        );
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("toolpool-slurm-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("temp dir");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        for sub in ["state", "spool"] {
            std::fs::create_dir(dir.join(sub)).unwrap();
        }
        let mut key = vec![0u8; 1024];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key))
            .expect("random munge key");
        std::fs::write(dir.join("munge.key"), &key).unwrap();
        std::fs::set_permissions(
            dir.join("munge.key"),
            std::fs::Permissions::from_mode(0o400),
        )
        .unwrap();
        let d = dir.display();
        let ctld = free_port();
        let conf = dir.join("slurm.conf");
        std::fs::write(
            &conf,
            format!(
                "ClusterName=toolpooltest\n\
                 SlurmctldHost={NODE}(127.0.0.1)\n\
                 SlurmctldPort={ctld}\nSlurmdPort={slurmd}\n\
                 SlurmUser=root\nSlurmdUser=root\n\
                 AuthType=auth/munge\nCredType=cred/munge\nAuthInfo=socket={d}/munge.sock\n\
                 StateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\n\
                 SlurmctldPidFile={d}/slurmctld.pid\nSlurmdPidFile={d}/slurmd.pid\n\
                 SlurmctldLogFile={d}/slurmctld.log\nSlurmdLogFile={d}/slurmd.log\n\
                 SlurmdDebug=debug\n\
                 ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nMpiDefault=none\n\
                 JobAcctGatherType=jobacct_gather/none\n\
                 AccountingStorageType=accounting_storage/none\nJobCompType=jobcomp/none\n\
                 SchedulerType=sched/builtin\n\
                 SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\n\
                 SlurmdParameters=config_overrides\nReturnToService=2\n\
                 NodeName={NODE} NodeAddr=127.0.0.1 CPUs=64 State=UNKNOWN\n\
                 PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE State=UP\n",
                slurmd = free_port(),
            ),
        )
        .unwrap();
        // The clients of this process (srun, squeue, scancel, run by toolpool too) use
        // this cluster, and no job of another one (tests run inside a CI job on Slurm).
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SLURM_") {
                std::env::remove_var(k);
            }
        }
        std::env::set_var("SLURM_CONF", &conf);
        let mut me = Slurm {
            dir: dir.clone(),
            conf: conf.clone(),
            daemons: Vec::new(),
            up_after: Duration::ZERO,
        };
        me.daemons.push(daemon(
            "munged",
            Command::new(MUNGED)
                .args(["--foreground", "--force"])
                .arg(format!("--key-file={d}/munge.key"))
                .arg(format!("--socket={d}/munge.sock"))
                .arg(format!("--pid-file={d}/munged.pid"))
                .arg(format!("--seed-file={d}/munged.seed"))
                .arg(format!("--log-file={d}/munged.log")),
            &dir.join("munged.out"),
        ));
        me.wait_for("munged's socket", Duration::from_secs(10), |s| {
            s.dir.join("munge.sock").exists()
        });
        me.daemons.push(daemon(
            "slurmctld",
            Command::new(SLURMCTLD).arg("-D").arg("-f").arg(&conf),
            &dir.join("slurmctld.out"),
        ));
        // slurmd and the clients retry a controller that does not answer yet only once a
        // second: they start once its port is open.
        me.wait_for("slurmctld's port", Duration::from_secs(30), |_| {
            std::net::TcpStream::connect(("127.0.0.1", ctld)).is_ok()
        });
        me.daemons.push(daemon(
            "slurmd",
            Command::new(SLURMD)
                .args(["-D", "-N", NODE, "-f"])
                .arg(&conf),
            &dir.join("slurmd.out"),
        ));
        me.wait_for("the node to be idle", Duration::from_secs(30), |s| {
            s.run("sinfo", &["-h", "-o", "%T"])
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle")
        });
        me.up_after = t0.elapsed();
        me
    }

    /// Poll `ready` until true; panics with the daemons' logs after `limit` or when one of
    /// them has exited.
    fn wait_for(&mut self, what: &str, limit: Duration, ready: impl Fn(&Slurm) -> bool) {
        let end = Instant::now() + limit;
        loop {
            if ready(self) {
                return;
            }
            let exited: Vec<&str> = self
                .daemons
                .iter_mut()
                .filter_map(|(n, c)| matches!(c.try_wait(), Ok(Some(_))).then_some(*n))
                .collect();
            if !exited.is_empty() || Instant::now() >= end {
                panic!("waiting for {what}: exited {exited:?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemons' logs, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for f in [
            "munged.out",
            "munged.log",
            "slurmctld.out",
            "slurmctld.log",
            "slurmd.out",
            "slurmd.log",
        ] {
            if let Ok(t) = std::fs::read_to_string(self.dir.join(f)) {
                let tail: Vec<&str> = t.lines().rev().take(40).collect();
                out.push_str(&format!("--- {f} (last lines)\n"));
                for l in tail.iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }

    /// Run a Slurm client (`squeue`, `scancel`, `scontrol`, `sinfo`, `salloc`) against
    /// this cluster, stdin empty.
    pub fn run(&self, program: &str, args: &[&str]) -> std::io::Result<Output> {
        Command::new(program)
            .args(args)
            .env("SLURM_CONF", &self.conf)
            .stdin(Stdio::null())
            .output()
    }

    /// `srun --version`: "slurm-wlm 22.05.8" on Debian bookworm.
    pub fn version(&self) -> String {
        let o = self.run("srun", &["--version"]).expect("srun runs");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Processes of this cluster: those that hold a file of the private dir open (its
    /// daemons and their `slurmstepd`s) or were started with its `SLURM_CONF` (what runs
    /// in its steps, also after its parent died), this process excepted.
    fn holders(&self) -> Vec<i32> {
        let me = std::process::id() as i32;
        let mut env_mark = b"SLURM_CONF=".to_vec();
        env_mark.extend(self.conf.as_os_str().as_encoded_bytes());
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if pid == me {
                continue;
            }
            let by_env = std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == env_mark.as_slice()));
            let by_fd = || {
                std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                    fds.flatten().any(|fd| {
                        std::fs::read_link(fd.path()).is_ok_and(|t| t.starts_with(&self.dir))
                    })
                })
            };
            if by_env || by_fd() {
                out.push(pid);
            }
        }
        out
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        // What runs in steps first, the whole tree at once, then the daemons; slurmstepd
        // outlives slurmd by design, so this cluster's are ours to end, and so is what
        // still runs with its SLURM_CONF (see `holders`).
        let daemons: Vec<i32> = self.daemons.iter().map(|(_, c)| c.id() as i32).collect();
        let steps: Vec<i32> = self
            .holders()
            .into_iter()
            .filter(|p| !daemons.contains(p))
            .collect();
        for pid in with_descendants(steps) {
            // SAFETY: plain syscall; a slurmstepd of this cluster or a process below one.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // The state is thrown away with the dir: nothing to save (slurmctld takes 3 s to
        // stop on SIGTERM).
        for (_, c) in self.daemons.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for pid in with_descendants(self.holders()) {
            // SAFETY: as above (started while the daemons stopped).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `roots` and every process below them.
fn with_descendants(roots: Vec<i32>) -> Vec<i32> {
    let parent = |pid: i32| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let all: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter_map(|pid| Some((pid, parent(pid)?)))
        .collect();
    let mut out = roots;
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(all.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// A Slurm client's output against the cluster `SLURM_CONF` names (the one
/// [`Slurm::start`] made, also in a process salloc started from it).
fn client(program: &str, args: &[&str]) -> String {
    let o = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The running steps as (`JOB.STEP`, step name).
pub fn steps() -> Vec<(String, String)> {
    client("squeue", &["-h", "--steps", "-o", "%i %j"])
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
        .collect()
}

/// The jobs as (job id, name, state).
pub fn jobs() -> Vec<(String, String, String)> {
    client("squeue", &["-h", "-o", "%i %j %T"])
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3).then(|| (f[0].into(), f[1].into(), f[2].into()))
        })
        .collect()
}
