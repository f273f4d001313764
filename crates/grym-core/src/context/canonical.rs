//! Canonical hashing of context: the same JSON, whatever the order of its
//! keys, hashes the same; the hash is blake3 over a type-tagged,
//! length-prefixed encoding, so no two different documents share an
//! encoding. A content hash is computed once per context and combined
//! cheaply with the tenant and the model kinds into cache keys.

#![cfg_attr(
    not(feature = "bench-internals"),
    expect(
        unreachable_pub,
        reason = "public to the benchmarks, through `internals`"
    )
)]

use serde_json::{Map, Value};

/// The blake3 hash of one context's canonical encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentHash([u8; 32]);

/// The key of one transformed context: content, source, target and tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl ContentHash {
    /// Hashes a context.
    pub fn of(context: &Map<String, Value>) -> Self {
        let mut hasher = Encoder::new();
        write_object(&mut hasher, context);
        Self(hasher.finalize())
    }

    /// The key of this content transformed from `source` to `target` kind
    /// for `tenant`: each part is length-prefixed, so no two different
    /// tuples share a key.
    pub fn key(&self, tenant: &str, source: &str, target: &str) -> CacheKey {
        let mut hasher = Encoder::new();
        for part in [tenant, source, target] {
            write_str(&mut hasher, part);
        }
        hasher.update(&self.0);
        CacheKey(hasher.finalize())
    }
}

/// Bytes gathered before blake3 sees them.
const BLOCK: usize = 1024;

/// The canonical encoding on its way into blake3, gathered into blocks:
/// it is made of many pieces of a few bytes, and each of blake3's updates
/// costs far more than copying them. The hash is that of the bytes, however
/// they are split.
struct Encoder {
    hasher: blake3::Hasher,
    block: [u8; BLOCK],
    len: usize,
}

impl Encoder {
    fn new() -> Self {
        Self {
            hasher: blake3::Hasher::new(),
            block: [0; BLOCK],
            len: 0,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        if bytes.len() > BLOCK - self.len {
            self.flush();
            if bytes.len() >= BLOCK {
                self.hasher.update(bytes);
                return;
            }
        }
        self.block[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn flush(&mut self) {
        self.hasher.update(&self.block[..self.len]);
        self.len = 0;
    }

    fn finalize(mut self) -> [u8; 32] {
        self.flush();
        *self.hasher.finalize().as_bytes()
    }
}

fn write_len(hasher: &mut Encoder, len: usize) {
    hasher.update(&(len as u64).to_le_bytes());
}

fn write_str(hasher: &mut Encoder, s: &str) {
    write_len(hasher, s.len());
    hasher.update(s.as_bytes());
}

fn write_object(hasher: &mut Encoder, object: &Map<String, Value>) {
    hasher.update(b"o");
    write_len(hasher, object.len());
    let mut keys = object.keys();
    let sorted = keys.next().is_none_or(|mut previous| {
        keys.all(|key| {
            let ascending = previous < key;
            previous = key;
            ascending
        })
    });
    if sorted {
        // serde_json's map iterates in key order unless a dependency turns on
        // its insertion order: then the keys are sorted here.
        for (key, value) in object {
            write_str(hasher, key);
            write_value(hasher, value);
        }
    } else {
        let mut entries: Vec<(&String, &Value)> = object.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (key, value) in entries {
            write_str(hasher, key);
            write_value(hasher, value);
        }
    }
}

fn write_value(hasher: &mut Encoder, value: &Value) {
    match value {
        Value::Null => {
            hasher.update(b"n");
        }
        Value::Bool(b) => {
            hasher.update(if *b { b"t" } else { b"f" });
        }
        Value::Number(n) => match n.as_f64() {
            // Integers and floats of the same value hash the same: as the
            // bits of the double, or as text past its exact range.
            Some(f)
                if n.as_u64().is_none_or(|u| u < (1 << 53))
                    && n.as_i64().is_none_or(|i| i.unsigned_abs() < (1 << 53)) =>
            {
                hasher.update(b"d");
                let f = if f == 0.0 { 0.0_f64 } else { f };
                hasher.update(&f.to_bits().to_le_bytes());
            }
            _ => {
                hasher.update(b"D");
                write_str(hasher, &n.to_string());
            }
        },
        Value::String(s) => {
            hasher.update(b"s");
            write_str(hasher, s);
        }
        Value::Array(items) => {
            hasher.update(b"a");
            write_len(hasher, items.len());
            for item in items {
                write_value(hasher, item);
            }
        }
        Value::Object(object) => write_object(hasher, object),
    }
}

/// The heap a JSON value takes beyond its strings: a `Value` is 32 bytes.
const VALUE_BYTES: usize = 32;
/// An object's map node: serde_json's B-tree allocates room for eleven
/// entries even for one.
const OBJECT_BYTES: usize = 640;

/// An estimate of the bytes a context holds in memory, for limits and for
/// the cache's weigher: the map's node, each value, and each string's bytes.
pub fn weight(context: &Map<String, Value>) -> usize {
    OBJECT_BYTES
        + context
            .iter()
            .map(|(k, v)| k.len() + value_weight(v))
            .sum::<usize>()
}

fn value_weight(value: &Value) -> usize {
    VALUE_BYTES
        + match value {
            Value::String(s) => s.len(),
            Value::Array(items) => items.iter().map(value_weight).sum(),
            Value::Object(object) => weight(object),
            _ => 0,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::object;
    use serde_json::json;

    #[test]
    fn the_hash_is_stable_under_key_order() {
        let a = object(json!({"b": 1, "a": {"y": [1, 2], "x": "s"}}));
        let mut b = Map::new();
        b.insert("a".into(), json!({"x": "s", "y": [1, 2]}));
        b.insert("b".into(), json!(1));
        assert_eq!(ContentHash::of(&a), ContentHash::of(&b));
    }

    #[test]
    fn different_content_hashes_differently() {
        let pairs = [
            (json!({"a": "1"}), json!({"a": 1})),
            (json!({"a": [1, 2]}), json!({"a": [2, 1]})),
            (json!({"ab": "c"}), json!({"a": "bc"})),
            (json!({"a": null}), json!({})),
        ];
        for (x, y) in pairs {
            assert_ne!(
                ContentHash::of(&object(x.clone())),
                ContentHash::of(&object(y.clone())),
                "{x} vs {y}"
            );
        }
    }

    #[test]
    fn an_integer_and_the_same_float_hash_the_same() {
        assert_eq!(
            ContentHash::of(&object(json!({"n": 3}))),
            ContentHash::of(&object(json!({"n": 3.0})))
        );
        assert_eq!(
            ContentHash::of(&object(json!({"n": 0.0}))),
            ContentHash::of(&object(json!({"n": -0.0})))
        );
        assert_ne!(
            ContentHash::of(&object(json!({"n": u64::MAX}))),
            ContentHash::of(&object(json!({"n": u64::MAX - 1})))
        );
    }

    #[test]
    fn gathering_into_blocks_leaves_the_hash_of_the_bytes() {
        // Pieces small and large, crossing block boundaries.
        let pieces: Vec<Vec<u8>> = (0..200_usize)
            .map(|i| vec![u8::try_from(i % 251).unwrap(); (i * 37) % (3 * BLOCK)])
            .collect();
        let mut encoder = Encoder::new();
        let mut plain = blake3::Hasher::new();
        for piece in &pieces {
            encoder.update(piece);
            plain.update(piece);
        }
        assert_eq!(encoder.finalize(), *plain.finalize().as_bytes());
    }

    #[test]
    fn the_key_separates_tenants_and_kinds() {
        let hash = ContentHash::of(&object(json!({"clip": "birdsong"})));
        let base = hash.key("acme", "audio-language", "text-generation");
        assert_eq!(base, hash.key("acme", "audio-language", "text-generation"));
        assert_ne!(
            base,
            hash.key("globex", "audio-language", "text-generation")
        );
        assert_ne!(
            base,
            hash.key("acme", "speech-recognition", "text-generation")
        );
        assert_ne!(base, hash.key("acme", "audio-language", "audio-language"));
        // Length prefixes: moving a boundary changes the key.
        assert_ne!(hash.key("ab", "c", "d"), hash.key("a", "bc", "d"));
    }

    #[test]
    fn weight_grows_with_content() {
        let small = object(json!({"a": "x"}));
        let large = object(json!({"a": "x".repeat(1000)}));
        assert!(weight(&large) > weight(&small) + 900);
    }
}
