//! Lossless conversions between protobuf's JSON-shaped well-known types
//! (`google.protobuf.Struct` and `Value`) and `serde_json`.
//!
//! Protobuf numbers are doubles: an integer survives the round trip while it
//! fits in 53 bits, as in any JSON parser. A non-finite double has no JSON
//! form and becomes `null`.

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};
use serde_json::{Map, Number};

/// Converts a protobuf `Value` into JSON.
pub fn value_to_json(value: Value) -> serde_json::Value {
    match value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(b),
        Some(Kind::NumberValue(n)) => number_to_json(n),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s),
        Some(Kind::ListValue(list)) => {
            serde_json::Value::Array(list.values.into_iter().map(value_to_json).collect())
        }
        Some(Kind::StructValue(s)) => serde_json::Value::Object(struct_to_json(s)),
    }
}

/// Converts a protobuf `Struct` into a JSON object.
pub fn struct_to_json(s: Struct) -> Map<String, serde_json::Value> {
    s.fields
        .into_iter()
        .map(|(k, v)| (k, value_to_json(v)))
        .collect()
}

/// Converts JSON into a protobuf `Value`.
pub fn json_to_value(json: serde_json::Value) -> Value {
    let kind = match json {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => Kind::ListValue(ListValue {
            values: items.into_iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(json_to_struct(map)),
    };
    Value { kind: Some(kind) }
}

/// [`json_to_value`] of a borrowed value: what a kept result's output costs
/// to answer with, without copying the result first.
pub fn json_ref_to_value(json: &serde_json::Value) -> Value {
    let kind = match json {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(json_ref_to_value).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(json_ref_to_struct(map)),
    };
    Value { kind: Some(kind) }
}

/// [`json_to_struct`] of a borrowed object: what a context shared with a
/// cache costs to send, without copying it first.
pub fn json_ref_to_struct(map: &Map<String, serde_json::Value>) -> Struct {
    Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_ref_to_value(v)))
            .collect(),
    }
}

/// Converts a JSON object into a protobuf `Struct`.
pub fn json_to_struct(map: Map<String, serde_json::Value>) -> Struct {
    Struct {
        fields: map
            .into_iter()
            .map(|(k, v)| (k, json_to_value(v)))
            .collect(),
    }
}

/// Integral doubles become JSON integers, so `3` does not come back as `3.0`.
fn number_to_json(n: f64) -> serde_json::Value {
    const MAX_EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if n.fract() == 0.0 && n.abs() <= MAX_EXACT {
        #[expect(clippy::cast_possible_truncation, reason = "integral and within 2^53")]
        return serde_json::Value::Number(Number::from(n as i64));
    }
    Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips_through_struct() {
        let original = json!({
            "name": "clip",
            "count": 3,
            "ratio": 0.25,
            "ok": true,
            "missing": null,
            "tags": ["a", 1, {"nested": [false]}],
        });
        let serde_json::Value::Object(map) = original.clone() else {
            panic!("object expected");
        };
        let back = serde_json::Value::Object(struct_to_json(json_to_struct(map)));
        assert_eq!(back, original);
    }

    #[test]
    fn non_finite_numbers_become_null() {
        let value = Value {
            kind: Some(Kind::NumberValue(f64::INFINITY)),
        };
        assert_eq!(value_to_json(value), serde_json::Value::Null);
    }

    #[test]
    fn an_absent_kind_is_null() {
        assert_eq!(value_to_json(Value { kind: None }), serde_json::Value::Null);
    }
}
