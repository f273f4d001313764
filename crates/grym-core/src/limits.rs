//! The bounds on what one request may carry, beyond the message size the
//! server enforces: each a setting of the `[limits]` table with a default a
//! public endpoint can live with, each checked before any work starts, each
//! refusal naming the field and the limit.
//!
//! Nesting depth is bounded well below what protobuf decoders accept (100
//! levels of messages, about 33 of JSON), so that what grymd adds around a
//! task's JSON on its way to a worker (the call's own messages, a session's
//! history, the outputs of earlier steps) still decodes there.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{Error, SettingError};

/// The limits on a request's content.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The deepest nesting of objects and arrays in a task's context,
    /// parameters or JSON input, and in the context grymd composes for a
    /// worker (a scalar is 0 deep, `{}` is 1, `{"a": []}` is 2).
    pub max_json_depth: usize,
    /// The largest parameters object, in bytes of canonical JSON.
    pub max_parameters_bytes: usize,
    /// The most steps a composite may have.
    pub max_steps: usize,
    /// The most ids one task or step may list in `depends_on`.
    pub max_depends_on: usize,
    /// The longest audio MIME type, in bytes (RFC 6838 allows 127 for each
    /// of type and subtype).
    pub max_mime_type_bytes: usize,
    /// The longest `when` expression, in bytes.
    pub max_condition_bytes: usize,
    /// The deepest nesting of a `when` expression, measured on its tokens:
    /// one level per bracket and per link of a chain of members, indexes,
    /// calls and operators; a chain of `&&` or `||` by the logarithm of its
    /// terms.
    pub max_condition_depth: usize,
    /// The most work one evaluation of a `when` may do, estimated before it
    /// runs, in CEL cost units: one per node evaluated, plus the size of
    /// what a function reads whole (one per list or map entry, one per 10
    /// bytes of a string); a macro such as `exists` costs its body once per
    /// element.
    pub max_condition_cost: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_json_depth: 16,
            max_parameters_bytes: 256 * 1024,
            max_steps: 64,
            max_depends_on: 64,
            max_mime_type_bytes: 255,
            max_condition_bytes: 4096,
            max_condition_depth: 32,
            max_condition_cost: 100_000,
        }
    }
}

impl Limits {
    /// Checks the ranges: every limit admits something, and JSON depth
    /// stays where every worker can decode what grymd sends.
    pub fn validate(&self) -> Result<(), SettingError> {
        if !(1..=Self::DECODABLE_JSON_DEPTH).contains(&self.max_json_depth) {
            return Err(SettingError::new(
                "max_json_depth",
                format!("must be 1 to {}", Self::DECODABLE_JSON_DEPTH),
            ));
        }
        for (key, value) in [
            ("max_parameters_bytes", self.max_parameters_bytes),
            ("max_steps", self.max_steps),
            ("max_depends_on", self.max_depends_on),
            ("max_mime_type_bytes", self.max_mime_type_bytes),
            ("max_condition_bytes", self.max_condition_bytes),
            ("max_condition_depth", self.max_condition_depth),
        ] {
            if value == 0 {
                return Err(SettingError::new(key, "must be at least 1"));
            }
        }
        // The CEL parser stops at 96 nested expressions of its own, and 64
        // is the deepest whose stack needs were measured.
        if self.max_condition_depth > Self::MAX_CONDITION_DEPTH {
            return Err(SettingError::new(
                "max_condition_depth",
                format!("must be 1 to {}", Self::MAX_CONDITION_DEPTH),
            ));
        }
        if self.max_condition_cost == 0 {
            return Err(SettingError::new(
                "max_condition_cost",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The deepest JSON a limit may allow: protobuf decoders stop at 100
    /// nested messages, each JSON level costs up to three (`Value`,
    /// `Struct`, a map entry), and grymd's own messages and composition
    /// need the rest.
    pub const DECODABLE_JSON_DEPTH: usize = 24;

    /// The deepest `when` nesting a limit may allow.
    pub const MAX_CONDITION_DEPTH: usize = 64;

    /// Refuses `value` when it nests deeper than `max_json_depth`.
    pub(crate) fn check_depth(&self, field: &'static str, value: &Value) -> Result<(), Error> {
        self.within_depth(field, json_depth(value))
    }

    /// [`check_depth`](Self::check_depth) for an object.
    pub(crate) fn check_object_depth(
        &self,
        field: &'static str,
        object: &Map<String, Value>,
    ) -> Result<(), Error> {
        self.within_depth(field, object_depth(object))
    }

    fn within_depth(&self, field: &'static str, depth: usize) -> Result<(), Error> {
        if depth > self.max_json_depth {
            return Err(Error::invalid(
                field,
                format!(
                    "nests {depth} levels deep, over the limit of {}",
                    self.max_json_depth
                ),
            ));
        }
        Ok(())
    }
}

/// How deep an object nests: one level for itself, and its deepest value.
pub(crate) fn object_depth(object: &Map<String, Value>) -> usize {
    1 + object.values().map(json_depth).max().unwrap_or(0)
}

/// How deep `value` nests, without recursion (a value from a worker is as
/// deep as its decoder let it be).
pub(crate) fn json_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0_usize)];
    while let Some((value, above)) = stack.pop() {
        let depth = match value {
            Value::Array(items) => {
                stack.extend(items.iter().map(|child| (child, above + 1)));
                above + 1
            }
            Value::Object(fields) => {
                stack.extend(fields.values().map(|child| (child, above + 1)));
                above + 1
            }
            _ => above,
        };
        deepest = deepest.max(depth);
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn depth_counts_objects_and_arrays() {
        assert_eq!(json_depth(&json!(1)), 0);
        assert_eq!(json_depth(&json!({})), 1);
        assert_eq!(json_depth(&json!({"a": []})), 2);
        assert_eq!(json_depth(&json!([1, [2, [3]], {"b": 4}])), 3);
    }

    #[test]
    fn a_deep_object_is_refused_naming_the_field_and_the_limit() {
        let limits = Limits {
            max_json_depth: 3,
            ..Limits::default()
        };
        let ok = json!({"a": {"b": {}}});
        let Value::Object(ok) = ok else { panic!() };
        limits.check_object_depth("task.context", &ok).unwrap();
        let deep = json!({"a": {"b": {"c": {}}}});
        let Value::Object(deep) = deep else { panic!() };
        let error = limits
            .check_object_depth("task.context", &deep)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid task.context: nests 4 levels deep, over the limit of 3"
        );
    }

    #[test]
    fn json_depth_is_bounded_by_what_workers_decode() {
        let limits = Limits {
            max_json_depth: Limits::DECODABLE_JSON_DEPTH + 1,
            ..Limits::default()
        };
        assert_eq!(limits.validate().unwrap_err().key, "max_json_depth");
        let limits = Limits {
            max_condition_depth: Limits::MAX_CONDITION_DEPTH + 1,
            ..Limits::default()
        };
        assert_eq!(limits.validate().unwrap_err().key, "max_condition_depth");
        Limits::default().validate().unwrap();
    }
}
