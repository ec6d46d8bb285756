//! The `dry_run` spec key: canned replies that stand in for the tool, so a host program's
//! own tests run without the tool installed. A dry pool starts no process (see the
//! `dry` module); this module is only the data and its validation.

use super::{Marker, Protocol, MAX_DURATION_MS};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Environment variable that makes every pool dry (`TOOLPOOL_DRY_RUN=1`): a spec without
/// its own `dry_run` key gets [`DryRun::echo`].
pub const DRY_RUN_ENV: &str = "TOOLPOOL_DRY_RUN";

/// Largest `error.code` in `lines` and `marker` framing, where a dry error is an exit status.
pub const MAX_DRY_EXIT_CODE: i64 = 255;

/// Canned replies of a dry-run pool (spec key `dry_run`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DryRun {
    /// Replies by request, first match wins (a `match` may appear once).
    pub replies: Vec<DryReply>,
    /// What a request that matches no reply gets.
    pub default: DryDefault,
}

/// One canned reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DryReply {
    /// The exact request line (`lines`, `marker`) or the method name (`jsonrpc`).
    #[serde(rename = "match")]
    pub matches: String,
    /// The reply: one line (`lines`), lines joined by `\n` (`marker`), or the `result`
    /// JSON (`jsonrpc`). With neither `reply` nor `error`, the [`DryRun::default`] answers
    /// (after the delay).
    #[serde(default)]
    pub reply: Option<String>,
    /// Milliseconds before the reply is written (a timeout shorter than this times out).
    #[serde(default)]
    pub delay_ms: u64,
    /// Fail instead of replying (excludes `reply`).
    #[serde(default)]
    pub error: Option<DryError>,
}

/// A canned failure. In `jsonrpc` it is the reply's error object (the caller gets
/// `Error::Tool` with this code and message). `lines` and `marker` have no error reply,
/// so there the dry instance fails as a tool does: it writes `message` on stderr and
/// exits with status `code` (1 to 255); the caller gets `Error::InstanceDead` with that
/// exit and the message in its stderr tail, and the restart policy applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DryError {
    /// The error code (JSON-RPC) or the exit status (`lines`, `marker`).
    pub code: i64,
    /// The error message.
    pub message: String,
}

/// The reply to a request no [`DryReply`] matches.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DryDefault {
    /// `"echo"`: the request itself (`jsonrpc`: its `params`, `null` without).
    #[default]
    Echo,
    /// `"error"`: a failure ([`DryError`] semantics) with code 1 (`jsonrpc`: -32601,
    /// method not found) and a message naming the request.
    Error,
    /// Any other string: this fixed reply (the same rules as [`DryReply::reply`]). The
    /// words `echo` and `error` cannot be fixed replies this way; give them per `match`.
    Reply(String),
}

impl Serialize for DryDefault {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            DryDefault::Echo => "echo",
            DryDefault::Error => "error",
            DryDefault::Reply(r) => r,
        })
    }
}

impl<'de> Deserialize<'de> for DryDefault {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "echo" => DryDefault::Echo,
            "error" => DryDefault::Error,
            _ => DryDefault::Reply(s),
        })
    }
}

impl DryRun {
    /// Every request answered with itself: what `TOOLPOOL_DRY_RUN=1` gives a spec without
    /// its own `dry_run`.
    pub fn echo() -> DryRun {
        DryRun::default()
    }

    /// The reply for `key` (request line or method), if one matches.
    pub fn find(&self, key: &str) -> Option<&DryReply> {
        self.replies.iter().find(|r| r.matches == key)
    }

    /// Check every value against `protocol`: `Err((key path, why))` for the first bad one.
    pub(crate) fn check(&self, protocol: &Protocol) -> Result<(), (String, String)> {
        if !matches!(
            protocol,
            Protocol::Lines | Protocol::Marker(_) | Protocol::Jsonrpc
        ) {
            return Err((
                "dry_run".into(),
                "is not supported for this protocol (lines, marker and jsonrpc only)".into(),
            ));
        }
        let mut seen = std::collections::HashMap::new();
        for (k, r) in self.replies.iter().enumerate() {
            let at = |key: &str| format!("dry_run.replies[{k}].{key}");
            one_line(&at("match"), &r.matches)?;
            if let Some(first) = seen.insert(r.matches.as_str(), k) {
                return Err((
                    at("match"),
                    format!("'{}' is already matched by replies[{first}]", r.matches),
                ));
            }
            if r.delay_ms > MAX_DURATION_MS {
                return Err((
                    at("delay_ms"),
                    format!("must be at most {MAX_DURATION_MS} (30 days)"),
                ));
            }
            if let Some(reply) = &r.reply {
                if r.error.is_some() {
                    return Err((
                        format!("dry_run.replies[{k}]"),
                        "give 'reply' or 'error', not both".into(),
                    ));
                }
                check_reply(&at("reply"), reply, protocol)?;
            }
            if let Some(e) = &r.error {
                check_error(&at("error"), e, protocol)?;
            }
        }
        if let DryDefault::Reply(reply) = &self.default {
            check_reply("dry_run.default", reply, protocol)?;
        }
        Ok(())
    }
}

fn one_line(key: &str, s: &str) -> Result<(), (String, String)> {
    if s.contains('\0') {
        return Err((key.into(), "contains a NUL byte".into()));
    }
    if s.contains('\n') {
        return Err((key.into(), "must be one line (contains a newline)".into()));
    }
    Ok(())
}

fn check_reply(key: &str, reply: &str, protocol: &Protocol) -> Result<(), (String, String)> {
    match protocol {
        Protocol::Lines => one_line(key, reply),
        Protocol::Marker(Marker { marker: m, .. }) => {
            if reply.contains('\0') {
                return Err((key.into(), "contains a NUL byte".into()));
            }
            if reply.split('\n').any(|l| l == m) {
                return Err((
                    key.into(),
                    format!("a line of the reply is the marker '{m}', which would end it"),
                ));
            }
            Ok(())
        }
        Protocol::Jsonrpc => serde_json::from_str::<serde_json::Value>(reply)
            .map(drop)
            .map_err(|e| {
                (
                    key.into(),
                    format!("must be JSON (the result of a jsonrpc reply): {e}"),
                )
            }),
        // A framing added later has no dry responder until one is written for it.
        #[allow(unreachable_patterns)]
        _ => Err((
            "dry_run".into(),
            "is not supported for this protocol (lines, marker and jsonrpc only)".into(),
        )),
    }
}

fn check_error(key: &str, e: &DryError, protocol: &Protocol) -> Result<(), (String, String)> {
    if *protocol != Protocol::Jsonrpc && !(1..=MAX_DRY_EXIT_CODE).contains(&e.code) {
        return Err((
            format!("{key}.code"),
            format!(
                "must be an exit status from 1 to {MAX_DRY_EXIT_CODE} for this protocol \
                 (a dry error without JSON-RPC ends the instance with that status)"
            ),
        ));
    }
    if e.message.contains('\0') {
        return Err((format!("{key}.message"), "contains a NUL byte".into()));
    }
    Ok(())
}
