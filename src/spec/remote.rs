//! The `remote` key of a tool spec: where instances run and through which launcher. Data
//! and its checks only (part of [`crate::spec`]); the launcher argv is built in
//! [`crate::remote`], above.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Placeholder for the host in an argv template launcher.
pub const HOST_PLACEHOLDER: &str = "{host}";
/// Placeholder, in an argv template, for the whole remote command as one shell line
/// (each argument quoted); without it the remote argv is appended as separate arguments.
pub const COMMAND_PLACEHOLDER: &str = "{command}";

/// How an instance reaches its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launcher {
    /// OpenSSH `ssh`; the host is an ssh destination (`host`, `user@host`, an alias).
    Ssh,
    /// Slurm `srun`; the host is a node name (`--nodelist`). Each instance is a job step
    /// of its own, named so that toolpool can cancel it (see [`crate::remote::slurm`]).
    Srun,
    /// `kubectl exec -i`; the host is a pod name.
    Kubectl,
    /// Any launcher as an argv template: every `{host}` is replaced by the host; an element
    /// `{command}` is replaced by the remote command as one quoted shell line, else the
    /// remote argv is appended.
    Template(Vec<String>),
}

impl Serialize for Launcher {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Launcher::Ssh => s.serialize_str("ssh"),
            Launcher::Srun => s.serialize_str("srun"),
            Launcher::Kubectl => s.serialize_str("kubectl"),
            Launcher::Template(argv) => argv.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Launcher {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        const EXPECTED: &str =
            r#"expected "ssh", "srun", "kubectl" or an argv template array containing "{host}""#;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => match s.as_str() {
                "ssh" => Ok(Launcher::Ssh),
                "srun" => Ok(Launcher::Srun),
                "kubectl" => Ok(Launcher::Kubectl),
                other => Err(D::Error::custom(format!(
                    "unknown launcher '{}': {EXPECTED}",
                    super::sanitize(other)
                ))),
            },
            serde_json::Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => Ok(s),
                    _ => Err(D::Error::custom(format!(
                        "an argv template holds strings only: {EXPECTED}"
                    ))),
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map(Launcher::Template),
            _ => Err(D::Error::custom(EXPECTED)),
        }
    }
}

/// Instances on other hosts: `{"launcher": ..., "hosts": [...], "options": [...],
/// "per_host": N}`. Instance `i` runs on `hosts[i % hosts.len()]`.
///
/// With the `srun` launcher `hosts` may be left out (or empty) inside a Slurm allocation:
/// a pool then takes the allocation's nodes when it is created (see
/// [`crate::remote::slurm`]), and `per_host` counts per node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSpec {
    /// The launcher.
    pub launcher: Launcher,
    /// Hosts (ssh destinations, Slurm node names, pod names), at least one; for `srun`
    /// none means the nodes of the Slurm allocation toolpool runs in.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Extra launcher arguments (ssh options such as `-p 2222` or `-o Key=Value`, srun
    /// flags, kubectl flags such as `-n NAMESPACE` or `-c CONTAINER`); for a template they
    /// go right after its first element.
    #[serde(default)]
    pub options: Vec<String>,
    /// Instances per host, instead of `count` (then `count` = `per_host` × hosts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_host: Option<usize>,
}

impl RemoteSpec {
    /// The host of instance `index` (empty while the hosts are still to be taken from a
    /// Slurm allocation).
    pub fn host(&self, index: usize) -> &str {
        match self.hosts.len() {
            0 => "",
            n => &self.hosts[index % n],
        }
    }

    /// True when the hosts are to be taken from the Slurm allocation (`srun` without
    /// `hosts`).
    pub fn hosts_from_allocation(&self) -> bool {
        self.launcher == Launcher::Srun && self.hosts.is_empty()
    }

    /// The first bad key under `remote` and why (`count` is the spec's instance count).
    pub(crate) fn check(&self, count: usize) -> std::result::Result<(), (String, String)> {
        let bad = |key: &str, why: String| Err((format!("remote.{key}"), why));
        if self.hosts.is_empty() && self.launcher != Launcher::Srun {
            return bad("hosts", "must name at least one host".into());
        }
        for (i, h) in self.hosts.iter().enumerate() {
            if h.is_empty() {
                return bad(&format!("hosts[{i}]"), "is empty".into());
            }
            if h.starts_with('-') {
                return bad(
                    &format!("hosts[{i}]"),
                    "must not start with '-' (it would be read as an option)".into(),
                );
            }
            if h.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return bad(
                    &format!("hosts[{i}]"),
                    "must not contain spaces or control characters".into(),
                );
            }
        }
        if let Launcher::Template(argv) = &self.launcher {
            if argv.first().is_none_or(|a| a.is_empty()) {
                return bad("launcher", "an argv template must not be empty".into());
            }
            if !argv.iter().any(|a| a.contains(HOST_PLACEHOLDER)) {
                return bad(
                    "launcher",
                    format!("an argv template must contain \"{HOST_PLACEHOLDER}\""),
                );
            }
            if argv.iter().any(|a| a.contains('\0')) {
                return bad("launcher", "an argument contains a NUL byte".into());
            }
        }
        for (i, o) in self.options.iter().enumerate() {
            if o.contains('\0') || o.contains('\n') {
                return bad(
                    &format!("options[{i}]"),
                    "contains a NUL byte or a newline".into(),
                );
            }
            if self.launcher == Launcher::Srun
                && (o.starts_with("-J") || o.starts_with("--job-name"))
            {
                return bad(
                    &format!("options[{i}]"),
                    "toolpool names each srun step itself (to cancel it): drop --job-name/-J"
                        .into(),
                );
            }
        }
        if let Some(n) = self.per_host {
            // Hosts still to come from the allocation count as one until they are known.
            let hosts = self.hosts.len().max(1);
            let max = super::MAX_COUNT;
            if n == 0 || n.saturating_mul(hosts) > max {
                return bad(
                    "per_host",
                    format!("must be at least 1, and per_host × hosts at most {max}"),
                );
            }
            if count != n * hosts {
                return bad(
                    "per_host",
                    format!(
                        "count is {count} but per_host × hosts is {}: give one of count and per_host",
                        n * hosts
                    ),
                );
            }
        }
        Ok(())
    }

    /// True when the remote command travels as one shell line (ssh, or a template with
    /// `{command}`), so its arguments must not hold a newline.
    pub(crate) fn shell_line(&self) -> bool {
        match &self.launcher {
            Launcher::Ssh => true,
            Launcher::Template(argv) => argv.iter().any(|a| a == COMMAND_PLACEHOLDER),
            Launcher::Srun | Launcher::Kubectl => false,
        }
    }
}
