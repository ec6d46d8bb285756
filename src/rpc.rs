//! JSON-RPC 2.0 framing: one object per line, replies matched by id.
//!
//! The dispatcher sits on an incarnation's stdout reader: replies go to the request that
//! waits for their id; notifications (and requests from the tool) go on to the stdout
//! queue for the caller to read; a reply with an unknown id (its request timed out) is
//! dropped and counted; anything else is a protocol error, counted and kept for status.

use crate::error::{Error, Result};
use crate::reader::StdoutFilter;
use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Bad lines kept per incarnation for diagnosis.
const BAD_LINES_KEPT: usize = 10;
/// Longest bad line kept (characters).
const BAD_LINE_CHARS: usize = 300;

/// A JSON-RPC error object from the tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RpcError {
    /// Its `code`.
    pub code: i64,
    /// Its `message`.
    pub message: String,
    /// Its `data`, as JSON text, when present.
    pub data: Option<String>,
}

impl From<RpcError> for Error {
    fn from(e: RpcError) -> Error {
        Error::Tool {
            code: e.code,
            message: e.message,
            data: e.data,
        }
    }
}

/// What one stdout line of a JSON-RPC tool is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Parsed {
    /// A reply to request `id`: the `result` as JSON text, or the error object.
    Reply {
        /// The id it answers.
        id: u64,
        /// `Ok(result JSON)` or the error object.
        outcome: RpcOutcome,
    },
    /// A notification or a request from the tool (has `method`): for the caller to read.
    Notification,
    /// Not valid JSON-RPC 2.0; the reason.
    Invalid(String),
}

/// One line as it comes from the tool. `result` is kept as the exact text the tool sent
/// (no float rounding, big integers intact); `Some` whenever the key is present, even
/// with `null`.
#[derive(Deserialize)]
struct Wire<'a> {
    jsonrpc: Option<Value>,
    id: Option<Value>,
    method: Option<Value>,
    #[serde(borrow, default, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<WireError<'a>>,
}

#[derive(Deserialize)]
struct WireError<'a> {
    code: i64,
    message: String,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Classify one line. Never panics, whatever the bytes.
pub(crate) fn parse_line(line: &[u8]) -> Parsed {
    let w: Wire = match serde_json::from_slice(line) {
        Ok(w) => w,
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            return Parsed::Invalid(format!("not a JSON-RPC object: {e}"))
        }
        Err(e) => return Parsed::Invalid(format!("not JSON: {e}")),
    };
    if w.jsonrpc != Some(Value::String("2.0".into())) {
        return Parsed::Invalid("missing \"jsonrpc\": \"2.0\"".into());
    }
    if w.method.as_ref().is_some_and(Value::is_string) {
        return Parsed::Notification;
    }
    let id = match &w.id {
        Some(Value::Number(n)) => match n.as_u64() {
            Some(id) => id,
            None => return Parsed::Invalid(format!("id {n} is not one we assigned")),
        },
        Some(Value::String(s)) => match s.parse::<u64>() {
            Ok(id) => id,
            Err(_) => return Parsed::Invalid(format!("id \"{s}\" is not one we assigned")),
        },
        Some(Value::Null) | None => {
            return Parsed::Invalid(match &w.error {
                Some(e) => format!("error without id: {} {}", e.code, e.message),
                None => "neither a method nor an id".into(),
            })
        }
        Some(other) => return Parsed::Invalid(format!("id {other} has a wrong type")),
    };
    match (w.result, w.error) {
        (Some(r), None) => Parsed::Reply {
            id,
            outcome: Ok(r.get().to_string()),
        },
        (None, Some(e)) => Parsed::Reply {
            id,
            outcome: Err(RpcError {
                code: e.code,
                message: e.message,
                data: e.data.map(|d| d.get().to_string()),
            }),
        },
        (Some(_), Some(_)) => Parsed::Invalid("both result and error".into()),
        (None, None) => Parsed::Invalid("a reply needs exactly one of result and error".into()),
    }
}

/// Build the request line for `payload` (`{"method": ..., "params": ...}`) with `id`.
pub(crate) fn encode_request(id: u64, payload: &str) -> Result<Vec<u8>> {
    let bad = |why: &str| {
        Error::InvalidArgument(format!(
            "JSON-RPC payload {why}; expected {{\"method\": \"...\", \"params\": ...}}"
        ))
    };
    let v: Value = serde_json::from_str(payload).map_err(|e| bad(&format!("is not JSON ({e})")))?;
    let Value::Object(mut o) = v else {
        return Err(bad("is not an object"));
    };
    let Some(Value::String(method)) = o.remove("method") else {
        return Err(bad("has no string \"method\""));
    };
    let params = o.remove("params");
    if let Some(k) = o.keys().next() {
        return Err(bad(&format!("has an unexpected key \"{k}\"")));
    }
    if params
        .as_ref()
        .is_some_and(|p| !p.is_array() && !p.is_object())
    {
        return Err(bad("has \"params\" that is neither an array nor an object"));
    }
    let mut req = Map::new();
    req.insert("jsonrpc".into(), "2.0".into());
    req.insert("id".into(), id.into());
    req.insert("method".into(), method.into());
    if let Some(p) = params {
        req.insert("params".into(), p);
    }
    // Serialising a `Value` (string keys, no non-finite floats) cannot fail.
    Ok(serde_json::to_vec(&Value::Object(req)).expect("a Value always serializes"))
}

/// The notification that tells the tool request `id` was abandoned (spec key
/// `cancel_notification`): MCP's `notifications/cancelled` takes `requestId` and a reason,
/// any other method (LSP's `$/cancelRequest`) takes `id`.
pub(crate) fn encode_cancel(method: &str, id: u64, reason: &str) -> Vec<u8> {
    let params = if method == "notifications/cancelled" {
        serde_json::json!({"requestId": id, "reason": reason})
    } else {
        serde_json::json!({"id": id})
    };
    let v = serde_json::json!({"jsonrpc": "2.0", "method": method, "params": params});
    // Serialising a `Value` (string keys, no non-finite floats) cannot fail.
    serde_json::to_vec(&v).expect("a Value always serializes")
}

/// The outcome delivered to a waiting request: the `result` as JSON text, or the error.
pub(crate) type RpcOutcome = std::result::Result<String, RpcError>;

/// Matches replies to pending requests for one incarnation.
pub(crate) struct Dispatcher {
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, Sender<RpcOutcome>>>,
    bad: Mutex<VecDeque<String>>,
    closed: AtomicBool,
    pub protocol_errors: AtomicU64,
    pub late_replies: AtomicU64,
}

impl Dispatcher {
    /// The dispatcher of one incarnation of instance `index`.
    pub fn new(index: usize) -> Dispatcher {
        Dispatcher {
            // Ids differ between instances, which makes logs easier to read.
            next_id: AtomicU64::new((index as u64) << 32 | 1),
            pending: Mutex::new(HashMap::new()),
            bad: Mutex::new(VecDeque::new()),
            closed: AtomicBool::new(false),
            protocol_errors: AtomicU64::new(0),
            late_replies: AtomicU64::new(0),
        }
    }

    /// Register a new request: its id and where its reply will arrive. `None` when the
    /// incarnation's stdout has closed.
    pub fn register(&self) -> Option<(u64, Receiver<RpcOutcome>)> {
        let id = self.next_id.fetch_add(1, Relaxed);
        let (tx, rx) = bounded(1);
        let mut p = self.pending.lock();
        if self.closed.load(Relaxed) {
            return None;
        }
        p.insert(id, tx);
        Some((id, rx))
    }

    /// Forget request `id` (it timed out): a late reply will be dropped and counted.
    pub fn forget(&self, id: u64) {
        self.pending.lock().remove(&id);
    }

    /// The last lines that broke the framing.
    pub fn bad_lines(&self) -> Vec<String> {
        self.bad.lock().iter().cloned().collect()
    }

    fn record_bad(&self, line: &[u8], why: &str) {
        self.protocol_errors.fetch_add(1, Relaxed);
        let mut text: String = String::from_utf8_lossy(line)
            .chars()
            .take(BAD_LINE_CHARS)
            .collect();
        text.push_str(" -- ");
        text.push_str(why);
        let mut b = self.bad.lock();
        if b.len() == BAD_LINES_KEPT {
            b.pop_front();
        }
        b.push_back(text);
    }
}

impl StdoutFilter for Dispatcher {
    fn filter(&self, line: Vec<u8>) -> Option<Vec<u8>> {
        match parse_line(&line) {
            Parsed::Reply { id, outcome } => {
                match self.pending.lock().remove(&id) {
                    Some(tx) => {
                        let _ = tx.send(outcome);
                    }
                    None => {
                        self.late_replies.fetch_add(1, Relaxed);
                    }
                }
                None
            }
            Parsed::Notification => Some(line),
            Parsed::Invalid(why) => {
                self.record_bad(&line, &why);
                None
            }
        }
    }

    fn closed(&self) {
        let mut p = self.pending.lock();
        self.closed.store(true, Relaxed);
        p.clear(); // waiting requests see a disconnected channel: the incarnation died
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_lines() {
        assert_eq!(
            parse_line(br#"{"jsonrpc":"2.0","id":7,"result":{"a":1}}"#),
            Parsed::Reply {
                id: 7,
                outcome: Ok(r#"{"a":1}"#.into())
            }
        );
        assert_eq!(
            parse_line(br#"{"jsonrpc":"2.0","id":"8","error":{"code":-32601,"message":"nope","data":[1]}}"#),
            Parsed::Reply {
                id: 8,
                outcome: Err(RpcError {
                    code: -32601,
                    message: "nope".into(),
                    data: Some("[1]".into())
                })
            }
        );
        assert_eq!(
            parse_line(br#"{"jsonrpc":"2.0","method":"log","params":[1]}"#),
            Parsed::Notification
        );
        for bad in [
            &b"hello"[..],
            b"[]",
            b"{}",
            br#"{"jsonrpc":"2.0","id":1}"#,
            br#"{"jsonrpc":"1.0","id":1,"result":1}"#,
            b"\xff\xfe",
        ] {
            assert!(
                matches!(parse_line(bad), Parsed::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn encodes_requests_and_rejects_bad_payloads() {
        let line = encode_request(5, r#"{"method":"add","params":[1,2]}"#).unwrap();
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["jsonrpc"], "2.0");
        assert_eq!(v["id"], 5);
        assert_eq!(v["params"][1], 2);
        assert!(!line.contains(&b'\n'));
        for bad in [
            "",
            "[]",
            r#"{"params":1}"#,
            r#"{"method":1}"#,
            r#"{"method":"a","params":3}"#,
            r#"{"method":"a","x":1}"#,
        ] {
            assert!(
                matches!(encode_request(1, bad), Err(Error::InvalidArgument(_))),
                "{bad}"
            );
        }
    }
}

/// Property tests of the line parser and the request encoder (moved from tests/: the parser
/// is private).
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".*".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(".{0,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn big_numbers_pass_through_exactly(digits in "[1-9][0-9]{20,60}") {
            let line = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{digits}}}"#);
            prop_assert_eq!(parse_line(line.as_bytes()), Parsed::Reply { id: 1, outcome: Ok(digits) });
        }

        #[test]
        fn any_bytes_parse_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_line(&bytes);
        }

        #[test]
        fn a_result_reply_round_trips(id in any::<u64>(), result in json_value()) {
            let line = serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id, "result": result})).unwrap();
            match parse_line(&line) {
                Parsed::Reply { id: got, outcome: Ok(text) } => {
                    prop_assert_eq!(got, id);
                    // Exactly the text the tool sent: no float rounding on the way.
                    prop_assert_eq!(text, serde_json::to_string(&result).unwrap());
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }

        #[test]
        fn an_error_reply_round_trips(id in any::<u64>(), code in any::<i64>(), message in ".*", data in proptest::option::of(json_value())) {
            let mut err = json!({"code": code, "message": message});
            if let Some(d) = &data {
                err["data"] = d.clone();
            }
            let line = serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id, "error": err})).unwrap();
            match parse_line(&line) {
                Parsed::Reply { id: got, outcome: Err(RpcError { code: c, message: m, data: d }) } => {
                    prop_assert_eq!((got, c), (id, code));
                    prop_assert_eq!(m, message);
                    prop_assert_eq!(d, data.map(|d| serde_json::to_string(&d).unwrap()));
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }

        #[test]
        fn a_reply_needs_exactly_one_of_result_and_error(id in any::<u64>(), v in json_value()) {
            let both = serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id, "result": v, "error": {"code": 1, "message": "x"}})).unwrap();
            prop_assert!(matches!(parse_line(&both), Parsed::Invalid(_)));
            let neither = serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id})).unwrap();
            prop_assert!(matches!(parse_line(&neither), Parsed::Invalid(_)));
            let old = serde_json::to_vec(&json!({"jsonrpc": "1.0", "id": id, "result": v})).unwrap();
            prop_assert!(matches!(parse_line(&old), Parsed::Invalid(_)));
        }

        #[test]
        fn encoded_requests_are_one_line_with_our_id(id in any::<u64>(), method in ".*", params in proptest::option::of(prop::collection::vec(json_value(), 0..4))) {
            let mut payload = json!({"method": method});
            if let Some(p) = &params {
                payload["params"] = Value::from(p.clone());
            }
            let line = encode_request(id, &payload.to_string()).unwrap();
            prop_assert!(!line.contains(&b'\n'));
            let v: Value = serde_json::from_slice(&line).unwrap();
            prop_assert_eq!(&v["jsonrpc"], "2.0");
            prop_assert_eq!(v["id"].as_u64(), Some(id));
            prop_assert_eq!(&v["method"], &Value::from(method));
            // A request seen from the other side is a call for the caller, never a reply.
            prop_assert_eq!(parse_line(&line), Parsed::Notification);
        }
    }
}
