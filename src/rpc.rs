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
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

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
    encode(Some(id), payload)
}

/// Build the notification line for `payload` (`{"method": ..., "params": ...}`): no id.
pub(crate) fn encode_notification(payload: &str) -> Result<Vec<u8>> {
    encode(None, payload)
}

fn encode(id: Option<u64>, payload: &str) -> Result<Vec<u8>> {
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
    if let Some(id) = id {
        req.insert("id".into(), id.into());
    }
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
    /// How requests from the tool are answered (set once by the incarnation).
    client: OnceLock<ClientReplies>,
    /// Requests from the tool answered (with a fixed result or "method not found").
    pub client_requests: AtomicU64,
}

/// Answers to requests from the tool: fixed results by method, and where to write them.
pub(crate) struct ClientReplies {
    /// `client_replies` of the spec.
    pub results: Arc<BTreeMap<String, Value>>,
    /// Writes one encoded message (framed by the incarnation) to the tool's stdin.
    pub send: Box<dyn Fn(Vec<u8>) + Send + Sync>,
}

/// The JSON-RPC code of "method not found".
pub(crate) const METHOD_NOT_FOUND: i64 = -32601;

/// The id and method of a request from the tool (a message with both).
#[derive(Deserialize)]
struct ToolCall {
    id: Option<Value>,
    method: String,
}

/// The reply to a request from the tool: the fixed result for its method, or
/// "method not found".
fn client_reply(line: &[u8], results: &BTreeMap<String, Value>) -> Option<Vec<u8>> {
    let call: ToolCall = serde_json::from_slice(line).ok()?;
    let id = call.id.filter(|id| !id.is_null())?;
    let reply = match results.get(&call.method) {
        Some(result) => serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result}),
        None => serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {
            "code": METHOD_NOT_FOUND,
            "message": format!("method not found: {} (toolpool answers requests from the tool with client_replies)", call.method),
        }}),
    };
    serde_json::to_vec(&reply).ok()
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
            client: OnceLock::new(),
            client_requests: AtomicU64::new(0),
        }
    }

    /// Answer requests from the tool with `client` from now on (called once, at start).
    pub fn answer_with(&self, client: ClientReplies) {
        let _ = self.client.set(client);
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

    /// Count a protocol error and keep `line` (cut) and `why` for status.
    pub fn record_bad(&self, line: &[u8], why: &str) {
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
            Parsed::Notification => {
                // A request from the tool (it has an id) is answered at once, so the tool
                // never waits on the host; it is still queued for the caller to see.
                if let Some(c) = self.client.get() {
                    if let Some(reply) = client_reply(&line, &c.results) {
                        self.client_requests.fetch_add(1, Relaxed);
                        (c.send)(reply);
                    }
                }
                Some(line)
            }
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
    fn encodes_notifications_without_an_id() {
        let line = encode_notification(r#"{"method":"initialized","params":{}}"#).unwrap();
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"jsonrpc": "2.0", "method": "initialized", "params": {}})
        );
        assert!(matches!(
            encode_notification("{}"),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn answers_requests_from_the_tool() {
        let results: BTreeMap<String, Value> =
            [("roots/list".to_string(), serde_json::json!({"roots": []}))].into();
        let reply = |line: &str| -> Option<Value> {
            client_reply(line.as_bytes(), &results).map(|r| serde_json::from_slice(&r).unwrap())
        };
        assert_eq!(
            reply(r#"{"jsonrpc":"2.0","id":"a1","method":"roots/list"}"#),
            Some(serde_json::json!({"jsonrpc": "2.0", "id": "a1", "result": {"roots": []}}))
        );
        let nf = reply(r#"{"jsonrpc":"2.0","id":0,"method":"sampling/createMessage"}"#).unwrap();
        assert_eq!(nf["id"], 0);
        assert_eq!(nf["error"]["code"], METHOD_NOT_FOUND);
        // Notifications (no id, or a null one) get no answer.
        assert_eq!(reply(r#"{"jsonrpc":"2.0","method":"log"}"#), None);
        assert_eq!(reply(r#"{"jsonrpc":"2.0","id":null,"method":"log"}"#), None);
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
mod props;
