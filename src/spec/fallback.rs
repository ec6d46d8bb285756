//! The spec keys `fallback` and `retry`: what a failed request does next, by the cause of
//! its failure ([`Cause`]). A retry runs the request again on the pool (another instance,
//! or the same one restarted); a fallback runs it once through the spec's `oneshot`
//! command. Both stay within the caller's deadline.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// Why a pooled attempt failed, as `fallback` and `retry` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The instance died mid-request (`InstanceDead`).
    Dead,
    /// No reply (or no free instance) in time (`Timeout`).
    Timeout,
    /// A reply the framing cannot read, or a JSON-RPC reply that is not JSON-RPC
    /// (`Protocol`).
    InvalidReply,
    /// Nothing can serve: the process limit, the restart cap, instances down for good, a
    /// full wait queue (`Unavailable`, `LimitReached`, `Failed`, `Saturated`).
    Unavailable,
    /// An instance could not start (`Spawn`).
    SpawnFailed,
    /// The tool answered with an error (`Tool`).
    ToolError,
}

impl Cause {
    /// Every cause, in the order metrics list them.
    pub const ALL: [Cause; 6] = [
        Cause::Dead,
        Cause::Timeout,
        Cause::InvalidReply,
        Cause::Unavailable,
        Cause::SpawnFailed,
        Cause::ToolError,
    ];

    /// The name in specs, metrics and Prometheus labels.
    pub fn name(self) -> &'static str {
        match self {
            Cause::Dead => "dead",
            Cause::Timeout => "timeout",
            Cause::InvalidReply => "invalid_reply",
            Cause::Unavailable => "unavailable",
            Cause::SpawnFailed => "spawn_failed",
            Cause::ToolError => "tool_error",
        }
    }
}

/// The spec key `fallback`: on which causes a request that failed on the pool is run once
/// through `oneshot`. Written `false` (never; the default), `true` (every cause but
/// `tool_error`), a list of causes, or `{"on": [causes], "attempt_ms": N}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fallback {
    /// The causes that fall back (empty: never).
    pub on: Vec<Cause>,
    /// When `timeout` is a cause, the part of the caller's timeout the pooled attempt (and
    /// its retries) may use; the one-shot run gets the rest. Default: half.
    pub attempt_ms: Option<u64>,
}

impl Fallback {
    /// Falling back on `cause`.
    pub fn on(&self, cause: Cause) -> bool {
        self.on.contains(&cause)
    }

    /// True when a request may fall back at all.
    pub fn any(&self) -> bool {
        !self.on.is_empty()
    }

    /// `true` in a spec: every cause but `tool_error`.
    pub fn all() -> Fallback {
        Fallback {
            on: Cause::ALL
                .into_iter()
                .filter(|c| *c != Cause::ToolError)
                .collect(),
            attempt_ms: None,
        }
    }
}

impl Serialize for Fallback {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.on.is_empty() {
            return s.serialize_bool(false);
        }
        #[derive(Serialize)]
        struct Object<'a> {
            on: &'a [Cause],
            #[serde(skip_serializing_if = "Option::is_none")]
            attempt_ms: Option<u64>,
        }
        Object {
            on: &self.on,
            attempt_ms: self.attempt_ms,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Fallback {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Fallback, D::Error> {
        d.deserialize_any(FallbackVisitor)
    }
}

struct FallbackVisitor;

impl<'de> Visitor<'de> for FallbackVisitor {
    type Value = Fallback;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            r#"false, true, a list of causes (dead, timeout, invalid_reply, unavailable, spawn_failed, tool_error), or {"on": [causes], "attempt_ms": N}"#,
        )
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Fallback, E> {
        Ok(if v {
            Fallback::all()
        } else {
            Fallback::default()
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Fallback, A::Error> {
        let on = Vec::<Cause>::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Fallback {
            on: dedup(on),
            attempt_ms: None,
        })
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Fallback, A::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Object {
            on: Vec<Cause>,
            #[serde(default)]
            attempt_ms: Option<u64>,
        }
        let o = Object::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Fallback {
            on: dedup(o.on),
            attempt_ms: o.attempt_ms,
        })
    }
}

/// The spec key `retry`: `{"max": N, "on": [causes]}`. The request runs again on the pool
/// (another instance, or the same one restarted), up to `max` more times, before it falls
/// back or fails, within the caller's deadline. No retry by default: only the host knows
/// whether a request may run twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Runs after the first, at most.
    pub max: u32,
    /// The causes that retry. Default `["dead"]`.
    #[serde(default = "Retry::default_on")]
    pub on: Vec<Cause>,
}

impl Retry {
    fn default_on() -> Vec<Cause> {
        vec![Cause::Dead]
    }

    /// `max` more runs on `on`.
    pub fn new(max: u32, on: impl IntoIterator<Item = Cause>) -> Retry {
        Retry {
            max,
            on: dedup(on.into_iter().collect()),
        }
    }

    /// Retrying on `cause`.
    pub fn on(&self, cause: Cause) -> bool {
        self.max > 0 && self.on.contains(&cause)
    }
}

fn dedup(mut v: Vec<Cause>) -> Vec<Cause> {
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_fallback() {
        let f = |json: &str| serde_json::from_str::<Fallback>(json);
        assert_eq!(f("false").unwrap(), Fallback::default());
        assert_eq!(f("true").unwrap(), Fallback::all());
        assert!(!Fallback::all().on(Cause::ToolError));
        let l = f(r#"["timeout", "dead", "dead"]"#).unwrap();
        assert_eq!(l.on, vec![Cause::Dead, Cause::Timeout]);
        let o = f(r#"{"on": ["timeout"], "attempt_ms": 300}"#).unwrap();
        assert_eq!((o.on(Cause::Timeout), o.attempt_ms), (true, Some(300)));
        let e = f(r#"["deadd"]"#).unwrap_err().to_string();
        assert!(e.contains("unknown variant `deadd`"), "{e}");
        assert!(f(r#"{"on": [], "nope": 1}"#).is_err());
        for json in ["false", r#"{"on":["dead","timeout"],"attempt_ms":5}"#] {
            assert_eq!(serde_json::to_string(&f(json).unwrap()).unwrap(), json);
        }
    }

    #[test]
    fn retry_defaults_to_dead() {
        let r: Retry = serde_json::from_str(r#"{"max": 2}"#).unwrap();
        assert_eq!(r.on, vec![Cause::Dead]);
        assert!(r.on(Cause::Dead) && !r.on(Cause::Timeout));
        assert!(!Retry::new(0, [Cause::Dead]).on(Cause::Dead));
    }
}
