//! The spec key `protocol`: how a request and its reply are framed. A name (`"lines"`,
//! `"jsonrpc"`, `"lsp"`) or an object: `{"marker": "END", "end_command": "..."}` or
//! `{"prompt": "REGEX", ...}`. The object form is read key by key, so an unknown key or a
//! wrong type is named, and so is a key of the other form.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

/// Request framing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Protocol {
    /// One request line, one reply line, matched in order.
    #[default]
    Lines,
    /// JSON-RPC 2.0, one object per line, matched by id.
    Jsonrpc,
    /// A reply is every line up to (not including) a terminator line.
    Marker(Marker),
    /// JSON-RPC 2.0 in the Language Server Protocol's base framing: every message, both
    /// directions, is `Content-Length: N\r\n\r\n` and N bytes of JSON; matched by id as
    /// in `jsonrpc`. A body longer than `limits.max_line_bytes` is skipped and counted.
    Lsp,
    /// An interactive tool: a reply is what the tool writes after the request up to its
    /// next prompt (see [`Prompt`]).
    Prompt(Prompt),
}

/// The `prompt` framing, for interactive tools that print a prompt and wait (`python3 -i`,
/// `sqlite3`, `node`, `tclsh`, IPython): `{"prompt": "REGEX"}` and the optional keys below.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prompt {
    /// A regular expression that matches the tool's prompt (no newline needed after it),
    /// on stdout or stderr; the reply to a request is what the tool writes after it up to
    /// the next match. It must not match the empty string.
    pub prompt: String,
    /// A regular expression for the continuation prompt a tool prints while a statement
    /// of several lines is incomplete; it is never part of a reply. Default
    /// [`DEFAULT_CONTINUATION`] (`... `, `   ...: `, `   ...> `).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuation: Option<String>,
    /// A regular expression that makes a reply that matches it a tool error, for tools
    /// that print their errors on stdout (output on stderr is a tool error already).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Lines sent once after the first prompt, each awaited to its prompt, on every start
    /// and restart (options, a file to load, a unique prompt). A failed one fails the
    /// start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init: Vec<String>,
    /// A timeout or a cancel interrupts the tool (SIGINT to its process group, as Ctrl-C
    /// on a terminal does) and waits up to `shutdown.grace_ms` for the prompt: if it comes
    /// back, the instance and its state are kept. Otherwise (and without this key) the
    /// instance is replaced.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupt: bool,
}

/// The continuation prompts of Python (`... `), IPython (`   ...: `), sqlite3 (`   ...> `)
/// and node (`... `), as [`Prompt::continuation`] takes them.
pub const DEFAULT_CONTINUATION: &str = r"(?m)[ \t]*\.\.\.[:>]?(?: |\r|$)";

impl Prompt {
    /// A prompt framing with every optional key at its default.
    pub fn new(prompt: impl Into<String>) -> Prompt {
        Prompt {
            prompt: prompt.into(),
            continuation: None,
            error: None,
            init: Vec::new(),
            interrupt: false,
        }
    }
}

/// The `marker` framing: `{"marker": "END"}`, or `{"marker": "END", "end_command":
/// "print \"END\\n\""}` for a tool that prints the marker only when told to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marker {
    /// The line that ends a reply (it is not part of it).
    pub marker: String,
    /// A line sent after each request that makes the tool print the marker (bc
    /// `print "END\n"`, sqlite3 `.print END`, a shell `echo END`): multi-line replies then
    /// arrive whole, and a late line can never reach the next caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_command: Option<String>,
}

impl Marker {
    /// A marker the tool prints by itself.
    pub fn new(marker: impl Into<String>) -> Marker {
        Marker {
            marker: marker.into(),
            end_command: None,
        }
    }
}

impl From<&str> for Marker {
    fn from(marker: &str) -> Marker {
        Marker::new(marker)
    }
}

impl From<String> for Marker {
    fn from(marker: String) -> Marker {
        Marker::new(marker)
    }
}

impl Protocol {
    /// True for the JSON-RPC framings (`jsonrpc`, `lsp`): replies matched by id, several
    /// requests in flight, notifications, handshakes.
    pub fn is_rpc(&self) -> bool {
        matches!(self, Protocol::Jsonrpc | Protocol::Lsp)
    }

    /// The name used in messages and by the command line (`lines`, `jsonrpc`, `lsp`,
    /// `marker:END`, `prompt:REGEX`).
    pub fn describe(&self) -> String {
        match self {
            Protocol::Lines => "lines".into(),
            Protocol::Jsonrpc => "jsonrpc".into(),
            Protocol::Lsp => "lsp".into(),
            Protocol::Marker(m) => format!("marker:{}", m.marker),
            Protocol::Prompt(p) => format!("prompt:{}", p.prompt),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Protocol::Lines => s.serialize_str("lines"),
            Protocol::Jsonrpc => s.serialize_str("jsonrpc"),
            Protocol::Lsp => s.serialize_str("lsp"),
            Protocol::Marker(m) => m.serialize(s),
            Protocol::Prompt(p) => p.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
        d.deserialize_any(ProtocolVisitor)
    }
}

struct ProtocolVisitor;

const NAMES: &[&str] = &["lines", "jsonrpc", "lsp"];

impl<'de> Visitor<'de> for ProtocolVisitor {
    type Value = Protocol;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            r#""lines", "jsonrpc", "lsp", {"marker": "END", ...} or {"prompt": "REGEX", ...}"#,
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Protocol, E> {
        match v {
            "lines" => Ok(Protocol::Lines),
            "jsonrpc" => Ok(Protocol::Jsonrpc),
            "lsp" => Ok(Protocol::Lsp),
            "marker" => Err(E::custom(
                r#"a marker protocol is an object: {"marker": "END"}"#,
            )),
            other => Err(E::unknown_variant(other, NAMES)),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Protocol, A::Error> {
        let o = Object::deserialize(de::value::MapAccessDeserializer::new(map))?;
        o.into_protocol().map_err(de::Error::custom)
    }
}

/// Every key of the object forms, read at once: which form it is shows only once all are
/// read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Object {
    marker: Option<String>,
    end_command: Option<String>,
    prompt: Option<String>,
    continuation: Option<String>,
    error: Option<String>,
    init: Option<Vec<String>>,
    interrupt: Option<bool>,
}

impl Object {
    fn into_protocol(self) -> Result<Protocol, String> {
        let prompt_keys = [
            ("continuation", self.continuation.is_some()),
            ("error", self.error.is_some()),
            ("init", self.init.is_some()),
            ("interrupt", self.interrupt.is_some()),
        ];
        match (self.marker, self.prompt) {
            (Some(_), Some(_)) => Err("give \"marker\" or \"prompt\", not both".into()),
            (Some(marker), None) => {
                if let Some((key, _)) = prompt_keys.iter().find(|(_, set)| *set) {
                    return Err(format!("\"{key}\" belongs to the prompt protocol, not marker"));
                }
                Ok(Protocol::Marker(Marker {
                    marker,
                    end_command: self.end_command,
                }))
            }
            (None, Some(prompt)) => {
                if self.end_command.is_some() {
                    return Err("\"end_command\" belongs to the marker protocol, not prompt".into());
                }
                Ok(Protocol::Prompt(Prompt {
                    prompt,
                    continuation: self.continuation,
                    error: self.error,
                    init: self.init.unwrap_or_default(),
                    interrupt: self.interrupt.unwrap_or(false),
                }))
            }
            (None, None) => Err(
                r#"a protocol object needs "marker" ({"marker": "END"}) or "prompt" ({"prompt": ">>> "})"#
                    .into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_objects_round_trip() {
        for json in [
            r#""lines""#,
            r#""jsonrpc""#,
            r#""lsp""#,
            r#"{"marker":"END"}"#,
            r#"{"marker":"END","end_command":"print \"END\\n\""}"#,
            r#"{"prompt":">>> "}"#,
            r#"{"prompt":">>> ","error":"Error","init":["x = 1"],"interrupt":true}"#,
        ] {
            let p: Protocol = serde_json::from_str(json).unwrap();
            assert_eq!(serde_json::to_string(&p).unwrap(), json);
        }
        let err = |json: &str| {
            serde_json::from_str::<Protocol>(json)
                .unwrap_err()
                .to_string()
        };
        assert!(err(r#""grpc""#).contains("unknown variant `grpc`"));
        assert!(err(r#"{"marker":"E","nope":1}"#).contains("unknown field `nope`"));
        assert!(err(r#"{"end_command":"x"}"#).contains(r#"needs "marker""#));
        assert!(err(r#"{"marker":"E","prompt":"> "}"#).contains("not both"));
        assert!(err(r#"{"marker":"E","init":[]}"#).contains("belongs to the prompt protocol"));
        assert!(err(r#"{"prompt":"> ","end_command":"x"}"#).contains("belongs to the marker"));
        assert!(err(r#""marker""#).contains(r#"{"marker": "END"}"#));
    }
}
