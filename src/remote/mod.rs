//! Instances on other hosts (the spec's `remote` key): turns a spec and an instance's
//! host into the local argv that starts the tool there through the launcher (`ssh`,
//! `srun`, `kubectl exec`, or an argv template), and owns the pool's shared ssh
//! connections (`remote::ssh`). It sits above `process` (it only builds the argv that
//! `process` spawns, and runs the ssh masters) and below `lifecycle`, which asks it for
//! the local spec of each start (`Remote::local_spec`).
//!
//! On the remote side the tool always runs under the [`watchdog`], which ends it and its
//! descendants once the launcher is gone. Under `srun` that is not enough (a SIGKILLed
//! `srun` leaves its step running with its stdin open): [`slurm`] names every step and
//! cancels it once its `srun` has ended. The spec's `env` and `cwd` apply on the remote
//! side (`env` through `env(1)`, `cwd` by the watchdog); the local launcher runs with the
//! host's own environment.

pub mod quote;
pub mod slurm;
pub(crate) mod ssh;
pub mod watchdog;

pub use crate::spec::{Launcher, RemoteSpec, COMMAND_PLACEHOLDER, HOST_PLACEHOLDER};
pub use ssh::{SESSIONS_PER_CONNECTION, SSH_DEFAULTS};

use crate::error::{Error, Result};
use crate::spec::ToolSpec;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// The remote side of one pool: its hosts, the ssh masters or the Slurm steps, the last
/// start error of each instance.
pub(crate) struct Remote {
    spec: RemoteSpec,
    /// Made on the first ssh start (the private socket directory is created then).
    masters: Mutex<Option<Arc<ssh::Masters>>>,
    /// By instance index (a grown pool has indices beyond its first count).
    errors: Mutex<BTreeMap<usize, String>>,
    /// Set by shutdown: no master starts after it.
    closed: std::sync::atomic::AtomicBool,
    /// The steps of an `srun` pool (none in a dry run, where no srun runs).
    steps: Option<slurm::Steps>,
    /// The instance count the pool was created with (the start of a whole pool).
    count: usize,
}

/// What starts one remote instance locally.
pub(crate) struct LocalStart {
    /// The launcher's argv as a spec (see [`Remote::local_spec`]).
    pub spec: ToolSpec,
    /// For `srun`: dropped once the launcher has ended, it has the start's Slurm step
    /// cancelled if Slurm still runs it.
    pub step: Option<slurm::StepGuard>,
}

impl Remote {
    /// The remote side of `tool`, or `None` for a local pool. The hosts must be known
    /// (see [`slurm::take_allocation_nodes`]).
    pub fn new(tool: &ToolSpec) -> Option<Remote> {
        let spec = tool.remote.clone()?;
        let srun = spec.launcher == Launcher::Srun && tool.dry_run.is_none();
        Some(Remote {
            masters: Mutex::new(None),
            errors: Mutex::new(BTreeMap::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
            steps: srun.then(|| slurm::Steps::new(&tool.id, slurm::allocation())),
            count: tool.count,
            spec,
        })
    }

    /// Which of its host's ssh connections instance `index` uses: one per
    /// [`SESSIONS_PER_CONNECTION`] instances of that host, in index order.
    fn shard(&self, index: usize) -> usize {
        let host = self.host(index);
        let before = (0..index).filter(|&j| self.host(j) == host).count();
        before / SESSIONS_PER_CONNECTION
    }

    /// The host of instance `index`.
    pub fn host(&self, index: usize) -> &str {
        self.spec.host(index)
    }

    /// What starts instance `index` locally: a spec whose `command` is the launcher's
    /// argv, whose id names the host (`tool@host`, so every message about the instance
    /// does), and whose `env`/`cwd` have moved into the remote command; for `srun`, the
    /// guard of its step. For ssh the host's master connection is made first (by
    /// `deadline`): a host that cannot be reached fails here, naming the host and ssh's
    /// stderr.
    pub fn local_spec(
        &self,
        tool: &ToolSpec,
        index: usize,
        deadline: Instant,
    ) -> Result<LocalStart> {
        let host = self.host(index).to_string();
        let (tag, step) = match &self.steps {
            Some(s) => {
                let (tag, guard) = s.begin(index);
                (Some(tag), Some(guard))
            }
            None => (None, None),
        };
        let result = self.launcher_argv(tool, index, &host, tag.as_deref(), deadline);
        {
            let mut errors = self.errors.lock();
            match &result {
                Ok(_) => errors.remove(&index),
                Err(e) => errors.insert(index, e.to_string()),
            };
        }
        let argv = result.map_err(|e| match e {
            Error::Spawn(m) => Error::Spawn(format!("tool '{}' instance {index}: {m}", tool.id)),
            other => other,
        })?;
        Ok(LocalStart {
            spec: ToolSpec {
                id: format!("{}@{host}", tool.id),
                command: argv,
                env: BTreeMap::new(),
                env_clear: false,
                cwd: None,
                ..tool.clone()
            },
            step,
        })
    }

    /// The Slurm step (`JOB.STEP`) of the latest start of `index` (`srun` pools), once
    /// learned.
    pub fn step_id(&self, index: usize) -> Option<String> {
        self.steps.as_ref().and_then(|s| s.step_id(index))
    }

    /// The instances grouped by the connection they use (host, and for ssh the master
    /// of every [`SESSIONS_PER_CONNECTION`]), in index order within each group: a pool's
    /// start runs the groups in parallel.
    pub fn groups(&self) -> Vec<Vec<usize>> {
        let mut by: BTreeMap<(&str, usize), Vec<usize>> = BTreeMap::new();
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for i in 0..self.count {
            let host = self.host(i);
            let before = seen.entry(host).or_default();
            by.entry((host, *before / SESSIONS_PER_CONNECTION))
                .or_default()
                .push(i);
            *before += 1;
        }
        by.into_values().collect()
    }

    /// Record why the start of `index` failed after the launcher ran (no ready line).
    pub fn record_error(&self, index: usize, err: &Error) {
        self.errors.lock().insert(index, err.to_string());
    }

    /// The last failed start of `index` (cleared by a successful one).
    pub fn last_error(&self, index: usize) -> Option<String> {
        self.errors.lock().get(&index).cloned()
    }

    /// Stop the ssh masters and remove their directory; let the Slurm keeper finish its
    /// cancels.
    pub fn shutdown(&self) {
        let _g = self.masters.lock();
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        drop(_g);
        if let Some(m) = self.masters.lock().take() {
            m.shutdown();
        }
        if let Some(s) = &self.steps {
            s.shutdown();
        }
    }

    fn launcher_argv(
        &self,
        tool: &ToolSpec,
        index: usize,
        host: &str,
        tag: Option<&str>,
        deadline: Instant,
    ) -> Result<Vec<String>> {
        let wrapped = remote_argv(tool);
        let opts = self.spec.options.iter().cloned();
        Ok(match &self.spec.launcher {
            Launcher::Ssh => {
                let masters = self.masters()?;
                let shard = self.shard(index);
                let socket = masters.socket(host, shard, deadline)?;
                let mut argv: Vec<String> = vec![
                    "ssh".into(),
                    "-o".into(),
                    "ControlMaster=no".into(),
                    "-o".into(),
                    format!("ControlPath={}", socket.display()),
                ];
                argv.extend(opts);
                argv.extend(SSH_DEFAULTS.iter().map(|s| s.to_string()));
                argv.extend(["--".into(), host.into(), quote::sh_line(&wrapped)]);
                argv
            }
            Launcher::Srun => {
                let mut argv: Vec<String> = vec![
                    "srun".into(),
                    "--nodes=1".into(),
                    "--ntasks=1".into(),
                    "--unbuffered".into(),
                    format!("--nodelist={host}"),
                ];
                let allocation = self.steps.as_ref().and_then(|s| s.allocation());
                argv.extend(slurm::srun_flags(tag.unwrap_or("toolpool"), allocation));
                argv.extend(opts);
                argv.extend(wrapped);
                argv
            }
            Launcher::Kubectl => {
                let mut argv: Vec<String> = vec!["kubectl".into(), "exec".into(), "-i".into()];
                argv.extend(opts);
                argv.extend([host.to_string(), "--".into()]);
                argv.extend(wrapped);
                argv
            }
            Launcher::Template(t) => {
                let mut argv = Vec::new();
                let mut placed = false;
                for (i, a) in t.iter().enumerate() {
                    if a == COMMAND_PLACEHOLDER {
                        argv.push(quote::sh_line(&wrapped));
                        placed = true;
                    } else {
                        argv.push(a.replace(HOST_PLACEHOLDER, host));
                    }
                    if i == 0 {
                        argv.extend(opts.clone());
                    }
                }
                if !placed {
                    argv.extend(wrapped);
                }
                argv
            }
        })
    }
}

impl Remote {
    /// The pool's ssh masters, made (with their private directory) on first use.
    fn masters(&self) -> Result<Arc<ssh::Masters>> {
        let mut m = self.masters.lock();
        if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::ShutDown(format!(
                "{} (ssh connections closed)",
                self.spec.host(0)
            )));
        }
        if let Some(m) = m.as_ref() {
            return Ok(Arc::clone(m));
        }
        let made = Arc::new(ssh::Masters::new(&self.spec.options)?);
        *m = Some(Arc::clone(&made));
        Ok(made)
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The argv run on the remote host: the tool (under `env` when the spec sets `env` or
/// `env_clear`) wrapped in the watchdog, which also changes to `cwd`.
pub fn remote_argv(tool: &ToolSpec) -> Vec<String> {
    let mut argv = Vec::new();
    if tool.env_clear || !tool.env.is_empty() {
        argv.push("env".to_string());
        if tool.env_clear {
            argv.push("-i".into());
        }
        argv.extend(tool.env.iter().map(|(k, v)| format!("{k}={v}")));
    }
    argv.extend(tool.command.iter().cloned());
    let cwd = tool
        .cwd
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    watchdog::wrap(&cwd, &argv)
}
