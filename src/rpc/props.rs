//! Property tests of the line parser and the request encoder (moved from tests/: the parser
//! is private).

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
