//! The remote watchdog: a POSIX `sh` script that runs the tool on the remote host and
//! ends it, with its descendants, when the local launcher is gone.
//!
//! Why a wrapper: without a terminal nothing on the remote side gets SIGHUP when the
//! launcher dies or the connection drops, and a tool that ignores end of input and
//! SIGTERM would run on for ever. The wrapper (the way GNU parallel wraps remote jobs):
//!
//! - relays its stdin to the tool through a FIFO with `cat`, so it sees the launcher's
//!   end of input itself (a killed `ssh` client, a closed channel, a `kubectl exec` that
//!   died, or toolpool closing stdin to stop the instance) even when the tool never
//!   reads, and even when ssh connections are shared (the remote `sshd` outlives a
//!   single session, so watching the parent alone would miss it). Under `srun` only an
//!   end of input that `srun` forwards arrives: `slurmstepd` keeps the stdin of a step
//!   whose `srun` was killed open, so [`super::slurm`] cancels such steps;
//! - watches its parent (the remote `sshd` session, `slurmstepd`, the container runtime)
//!   once a second, for a launcher that dies without closing stdin;
//! - then gives the tool [`EOF_GRACE`] to exit on the end of input, sends SIGTERM to its
//!   process group, and SIGKILL [`TERM_GRACE`] later: every tool and descendant ends
//!   within about 3 s of the launcher's end;
//! - when the tool exits on its own, passes its exit status on, and kills what it left in
//!   the group (SIGTERM now, SIGKILL after 1 s).
//!
//! During that clean-up it ignores SIGTERM and SIGPIPE itself (a dropped connection has
//! closed its stderr: a message there must not kill it before the tool is gone); the tool
//! starts with the dispositions the wrapper was given.
//!
//! It leads its process group: `sshd` starts every session with `setsid`; under `srun` or
//! `kubectl exec` it re-executes itself under `setsid` when it is not a group leader. On a
//! host without `setsid` it falls back to signalling the tool's pid only (descendants the
//! tool leaves are then not reached). It needs `sh`, `cat`, `mkdir`, `mkfifo` and `rm` (POSIX),
//! and `/proc` or `ps`, on the remote host; the FIFO lives in a private directory
//! (`mkdir -m 700`, named after the wrapper's pid) under `$TMPDIR` (else `/tmp`), removed
//! before it exits.
//!
//! Arguments: `sh -c 'eval "$1"' toolpool-watchdog SCRIPT MODE CWD ARGV...` where MODE is
//! `0` (may re-execute under `setsid`) and CWD is the working directory or empty. Its
//! own messages on stderr start with `toolpool-watchdog:`.

/// How long the tool has to exit once its input has ended because the launcher is gone.
pub const EOF_GRACE_S: u32 = 1;
/// How long between SIGTERM and SIGKILL on the remote side.
pub const TERM_GRACE_S: u32 = 1;

/// [`EOF_GRACE_S`] as a duration (for docs and tests).
pub const EOF_GRACE: std::time::Duration = std::time::Duration::from_secs(EOF_GRACE_S as u64);
/// [`TERM_GRACE_S`] as a duration.
pub const TERM_GRACE: std::time::Duration = std::time::Duration::from_secs(TERM_GRACE_S as u64);

/// The script, one line (no newline: a C-shell login shell could not pass one through a
/// quoted argument). The `sleep 1` lines are [`EOF_GRACE_S`] and [`TERM_GRACE_S`].
pub const SCRIPT: &str = concat!(
    r#"s=$1; m=$2; c=$3; shift 3; "#,
    r#"pg() { set -- $1; g=$3; }; "#,
    r#"if read -r st </proc/$$/stat 2>/dev/null; then pg "${st##*) }"; else g=$(ps -o pgid= -p $$ 2>/dev/null); g=${g#"${g%%[! ]*}"}; fi; "#,
    r#"if [ "$g" = "$$" ]; then L=1; else L=0; fi; "#,
    r#"if [ "$m" = 0 ] && [ "$L" = 0 ] && command -v setsid >/dev/null 2>&1; then exec setsid sh -c 'eval "$1"' toolpool-watchdog "$s" 1 "$c" "$@"; fi; "#,
    r#"if [ -n "$c" ]; then cd -- "$c" || { echo "toolpool-watchdog: cannot change to directory $c" >&2; exit 126; }; fi; "#,
    r#"t=${TMPDIR:-/tmp}/toolpool-wd.$$; { mkdir -m 700 "$t" || { rm -rf "$t" && mkdir -m 700 "$t"; }; } || exit 125; "#,
    r#"mkfifo "$t/in" || { rm -rf "$t"; exit 125; }; "#,
    r#"trap ':' USR1; exec 3<&0; "#,
    r#""$@" <"$t/in" 3<&- & j=$!; "#,
    r#"( cat <&3 >"$t/in"; kill -USR1 $$ ) >/dev/null 2>&1 & f=$!; "#,
    r#"( while kill -0 "$PPID" 2>/dev/null; do sleep 1; done; kill -USR1 $$ ) </dev/null >/dev/null 2>&1 3<&- & w=$!; "#,
    r#"exec 3<&- </dev/null; "#,
    r#"wait "$j"; st=$?; "#,
    r#"if kill -0 "$j" 2>/dev/null; then kill "$f" "$w" 2>/dev/null; ( sleep 1; kill -USR1 $$ ) </dev/null >/dev/null 2>&1 & wait "$j"; st=$?; fi; "#,
    r#"rm -rf "$t"; trap '' TERM PIPE; "#,
    r#"if kill -0 "$j" 2>/dev/null; then "#,
    r#"echo "toolpool-watchdog: the launcher is gone and the tool did not exit at end of input: SIGTERM, then SIGKILL in 1 s" >&2; "#,
    r#"if [ "$L" = 1 ]; then kill -TERM 0; else kill -TERM "$j"; fi 2>/dev/null; "#,
    r#"( sleep 1; kill -USR1 $$ ) </dev/null >/dev/null 2>&1 & wait "$j"; "#,
    r#"if [ "$L" = 1 ]; then kill -KILL 0; else kill -KILL "$j"; fi 2>/dev/null; exit 137; fi; "#,
    r#"kill "$f" "$w" 2>/dev/null; "#,
    r#"if [ "$L" = 1 ]; then kill -TERM 0 2>/dev/null; ( sleep 1; kill -KILL 0 ) </dev/null >/dev/null 2>&1 & fi; "#,
    r#"exit "$st""#,
);

/// The argv that runs `argv` under the watchdog, in `cwd` (empty: the remote default).
pub fn wrap(cwd: &str, argv: &[String]) -> Vec<String> {
    let mut out = vec![
        "sh".to_string(),
        "-c".into(),
        r#"eval "$1""#.into(),
        "toolpool-watchdog".into(),
        SCRIPT.into(),
        "0".into(),
        cwd.into(),
    ];
    out.extend(argv.iter().cloned());
    out
}
