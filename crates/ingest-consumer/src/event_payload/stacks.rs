//! The top-level fields that hold stack traces ([`crate::grouping::STACK_FIELDS`]), read into JSON
//! values except their frames: in an array under a `frames` key, a frame object keeps only the
//! keys grouping reads ([`crate::grouping::FRAME_FIELDS`]), and anything else in that array becomes
//! `null` (its place kept, since grouping counts frames from the innermost). The rest of a frame
//! (local variables, the source lines around it) is checked like every byte of the payload and
//! not kept: in a Python SDK's event it is most of a stack's bytes.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use sluice_core::json::{special_first_key, Check, Key};
use std::fmt;

/// A value inside a stack-holding field; `frames` when it is the value of a `frames` key, whose
/// frame objects keep `frame_keys`.
#[derive(Clone, Copy)]
pub(super) struct Stack<'k> {
    frames: bool,
    frame_keys: &'k [&'k str],
}

impl<'k> Stack<'k> {
    /// A stack-holding top-level field.
    pub(super) fn new(frame_keys: &'k [&'k str]) -> Stack<'k> {
        Stack {
            frames: false,
            frame_keys,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Stack<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// Builds values as serde_json's own `Value` does (a float out of `f64`'s range never reaches
/// here: the parser refuses it).
impl<'de> Visitor<'de> for Stack<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        if self.frames {
            while let Some(v) = seq.next_element_seed(Frame(self.frame_keys))? {
                out.push(v);
            }
        } else {
            while let Some(v) = seq.next_element_seed(Stack::new(self.frame_keys))? {
                out.push(v);
            }
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        let mut first = true;
        while let Some(key) = map.next_key_seed(Key)? {
            special_first_key(&key, std::mem::take(&mut first))?;
            let value = Stack {
                frames: key == "frames",
                frame_keys: self.frame_keys,
            };
            out.insert(key.into_owned(), map.next_value_seed(value)?);
        }
        Ok(Value::Object(out))
    }
}

/// One element of a `frames` array: an object keeps the given keys (grouping's); anything else
/// is checked and becomes `null` (grouping reads frame objects only).
struct Frame<'k>(&'k [&'k str]);

impl<'de> DeserializeSeed<'de> for Frame<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Frame<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a stack frame")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element_seed(Check)?.is_some() {}
        Ok(Value::Null)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        let mut first = true;
        while let Some(key) = map.next_key_seed(Key)? {
            special_first_key(&key, std::mem::take(&mut first))?;
            if self.0.contains(&key.as_ref()) {
                out.insert(key.into_owned(), map.next_value()?);
            } else {
                map.next_value_seed(Check)?;
            }
        }
        Ok(Value::Object(out))
    }
}
