//! Reading any JSON value the way a full parse into a [`Value`](serde_json::Value) reads it,
//! keeping nothing: what the parts of a payload that are not kept go through.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// The key serde_json reads, as an object's first key, as an embedded raw JSON text rather than
/// an object.
const RAW_VALUE_KEY: &str = "$serde_json::private::RawValue";

/// Refuses an object that starts with [`RAW_VALUE_KEY`]: a full parse treats it specially
/// (mostly refuses it), and it decides.
pub fn special_first_key<E: de::Error>(key: &str, first: bool) -> Result<(), E> {
    if first && key == RAW_VALUE_KEY {
        return Err(E::custom("an object read specially by a full parse"));
    }
    Ok(())
}

/// An object key, borrowed from the payload when it has no escapes.
pub struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// Walks any JSON value through the same parsing a [`Value`] gets (strings decoded, numbers
/// converted, nesting counted), keeping nothing. (`IgnoredAny` would only skip: it lets lone
/// surrogates and out-of-range numbers through, which PostgreSQL or a later parse refuses.)
pub struct Check;

impl<'de> DeserializeSeed<'de> for Check {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Check)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut first = true;
        while let Some(key) = map.next_key_seed(Key)? {
            special_first_key(&key, std::mem::take(&mut first))?;
            map.next_value_seed(Check)?;
        }
        Ok(())
    }
}
