//! The spec key `protocol`: how a request and its reply are framed. A name (`"lines"`,
//! `"jsonrpc"`, `"lsp"`) or an object (`{"marker": "END", "end_command": "..."}`); the
//! object form is read key by key, so an unknown key or a wrong type is named.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
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
    /// `marker:END`).
    pub fn describe(&self) -> String {
        match self {
            Protocol::Lines => "lines".into(),
            Protocol::Jsonrpc => "jsonrpc".into(),
            Protocol::Lsp => "lsp".into(),
            Protocol::Marker(m) => format!("marker:{}", m.marker),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Protocol::Lines => s.serialize_str("lines"),
            Protocol::Jsonrpc => s.serialize_str("jsonrpc"),
            Protocol::Lsp => s.serialize_str("lsp"),
            Protocol::Marker(m) => {
                let mut map = s.serialize_map(None)?;
                map.serialize_entry("marker", &m.marker)?;
                if let Some(c) = &m.end_command {
                    map.serialize_entry("end_command", c)?;
                }
                map.end()
            }
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
        f.write_str(r#""lines", "jsonrpc", "lsp" or {"marker": "END", "end_command": ...}"#)
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
        let m = Marker::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Protocol::Marker(m))
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
        assert!(err(r#"{"end_command":"x"}"#).contains("missing field `marker`"));
        assert!(err(r#""marker""#).contains(r#"{"marker": "END"}"#));
    }
}
