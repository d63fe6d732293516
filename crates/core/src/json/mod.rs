//! Reading only part of a JSON object. A stage that reads a few top-level fields of a large
//! payload builds those into [`Value`]s and walks the rest without copying it ([`Check`]):
//! building and dropping the parts nobody reads (breadcrumbs, extra, SDK details) was most of
//! the cost of parsing such a payload. What is accepted is exactly what a full parse into a
//! [`Value`] accepts (the same strings, numbers and nesting limit), and the last of duplicate
//! keys wins, as it does there.

mod check;

pub use check::{special_first_key, Check, Key};

use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;
use std::marker::PhantomData;

/// Why a payload is not read, as a full parse into a [`Value`] says it.
#[derive(Debug)]
pub enum Refused {
    /// Valid JSON, but not an object.
    NotAnObject,
    /// Not valid JSON: the full parse's error.
    Invalid(serde_json::Error),
}

/// [`fields_with`] for a payload that must be a JSON object, refused as a full parse refuses
/// it: whatever the partial reading refuses is parsed in full, so the error names what a full
/// parse names, and a payload only the full parse accepts (an object it reads specially) is
/// read whole.
pub fn object_fields_with<S>(
    bytes: &[u8],
    seed_for: impl Fn(&str) -> Option<S>,
) -> Result<Map<String, Value>, Refused>
where
    S: for<'de> DeserializeSeed<'de, Value = Value>,
{
    fields_with(bytes, seed_for).or_else(|_| match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Refused::NotAnObject),
        Err(e) => Err(Refused::Invalid(e)),
    })
}

/// [`object_fields_with`], keeping whole the fields for which `wanted` is true.
pub fn object_fields(
    bytes: &[u8],
    wanted: impl Fn(&str) -> bool,
) -> Result<Map<String, Value>, Refused> {
    object_fields_with(bytes, |key| wanted(key).then_some(PhantomData::<Value>))
}

/// The top-level fields of the JSON object `bytes` that `seed_for` gives a seed for, each read
/// through its seed (a reader that may keep only part of the field's value), every byte of the
/// object checked. An error for anything a full parse would refuse, and for a non-object;
/// [`object_fields_with`] names the error as a full parse does.
pub fn fields_with<S>(
    bytes: &[u8],
    seed_for: impl Fn(&str) -> Option<S>,
) -> serde_json::Result<Map<String, Value>>
where
    S: for<'de> DeserializeSeed<'de, Value = Value>,
{
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let map = de.deserialize_map(Fields { seed_for })?;
    de.end()?;
    Ok(map)
}

struct Fields<F> {
    seed_for: F,
}

impl<'de, S, F> Visitor<'de> for Fields<F>
where
    S: DeserializeSeed<'de, Value = Value>,
    F: Fn(&str) -> Option<S>,
{
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Map::new();
        let mut first = true;
        while let Some(key) = map.next_key_seed(Key)? {
            special_first_key(&key, std::mem::take(&mut first))?;
            match (self.seed_for)(&key) {
                Some(seed) => {
                    out.insert(key.into_owned(), map.next_value_seed(seed)?);
                }
                None => map.next_value_seed(Check)?,
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(bytes: &str) -> serde_json::Result<Map<String, Value>> {
        fields_with(bytes.as_bytes(), |k| {
            (k == "a" || k == "b").then_some(PhantomData::<Value>)
        })
    }

    #[test]
    fn keeps_the_wanted_fields_and_the_last_of_duplicates() {
        let m = kept(r#"{"a":1,"x":{"deep":[1,2,{"y":null}]},"b":"s","a":2}"#)
            .map_err(|e| e.to_string());
        let expected: Map<String, Value> =
            serde_json::from_str(r#"{"a":2,"b":"s"}"#).unwrap_or_default();
        assert_eq!(m, Ok(expected));
    }

    #[test]
    fn refuses_what_a_full_parse_refuses_in_a_field_not_kept() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for bad in [
            r#"{"x":"\ud800"}"#.to_owned(),
            r#"{"x":1e999}"#.to_owned(),
            r#"{"x":"\q"}"#.to_owned(),
            r#"{"x":[1,]}"#.to_owned(),
            format!(r#"{{"x":{deep}}}"#),
            r#"{"a":1} trailing"#.to_owned(),
            "[1]".to_owned(),
            "7".to_owned(),
        ] {
            assert!(kept(&bad).is_err(), "{bad} accepted");
            assert!(
                serde_json::from_str::<Map<String, Value>>(&bad).is_err(),
                "{bad} is accepted by a full parse"
            );
        }
    }
}
