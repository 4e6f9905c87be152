//! Typed reading of a payload: each object's known keys land in fixed slots while the body is
//! parsed, with no intermediate map; nested known objects are read the same way. Every other
//! key is kept, with its position, so that `extra` keeps the sender's order.

use std::borrow::Cow;
use std::fmt;
use std::mem::size_of;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::meter::Meter;

/// The keys the normalizer reads from one kind of object, each with what its value is read as.
/// Keys are looked for from just after the previous one, so listing them in the order
/// payloads carry them, and taking them in that order, makes each lookup one comparison.
#[derive(Debug)]
pub(crate) struct Shape {
    pub(crate) keys: &'static [(&'static str, Kind)],
}

/// A key of a shape, with its place in the shape when that is known when compiling.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key {
    pub(crate) name: &'static str,
    index: Option<usize>,
}

impl From<&'static str> for Key {
    /// A key looked for by name.
    fn from(name: &'static str) -> Self {
        Self { name, index: None }
    }
}

impl Shape {
    /// `name`, a key of the shape, with its place; a name not in the shape does not compile
    /// where this is evaluated as a constant.
    pub(crate) const fn key(&self, name: &'static str) -> Key {
        let mut i = 0;
        while i < self.keys.len() {
            if same(self.keys[i].0, name) {
                return Key {
                    name,
                    index: Some(i),
                };
            }
            i += 1;
        }
        panic!("not a key of the shape")
    }
}

/// `keys` in byte order, as Comm100 sends them, so that reading looks for each key of a
/// payload just after the previous one.
pub(crate) const fn sorted<const N: usize>(
    mut keys: [(&'static str, Kind); N],
) -> [(&'static str, Kind); N] {
    let mut i = 1;
    while i < N {
        let mut j = i;
        while j > 0 && before(keys[j].0, keys[j - 1].0) {
            let t = keys[j];
            keys[j] = keys[j - 1];
            keys[j - 1] = t;
            j -= 1;
        }
        i += 1;
    }
    keys
}

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether `a` sorts before `b`, byte by byte.
const fn before(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut i = 0;
    while i < a.len() && i < b.len() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
        i += 1;
    }
    a.len() < b.len()
}

/// How the value of a known key is read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// As plain JSON.
    Json,
    /// An object is read against the shape.
    Object(&'static Shape),
    /// An object, or each object in an array, is read against the shape.
    Objects(&'static Shape),
}

impl Shape {
    #[cfg(test)]
    fn index(&self, key: &str) -> Option<usize> {
        self.index_from(0, key)
    }

    /// The index of `key`, looked for from `start` on, then from the beginning.
    fn index_from(&self, start: usize, key: &str) -> Option<usize> {
        let (first, len) = (key.as_bytes().first(), key.len());
        let (before, after) = self.keys.split_at(start.min(self.keys.len()));
        let same =
            |(k, _): &(&str, _)| k.len() == len && k.as_bytes().first() == first && *k == key;
        match after.iter().position(same) {
            Some(i) => Some(start + i),
            None => before.iter().position(same),
        }
    }
}

/// A value as read: a string (borrowed from the body unless it had escapes), another JSON
/// value, an object of a known shape, or an array of those.
#[derive(Debug)]
pub(crate) enum Raw<'a> {
    Str(Cow<'a, str>),
    Json(Value),
    Object(Object<'a>),
    List(Vec<Raw<'a>>),
}

impl<'a> Raw<'a> {
    /// Reads an already parsed JSON value as `kind` (the reference the streaming reader is
    /// tested against).
    #[cfg(test)]
    fn of(kind: Kind, value: Value) -> Self {
        match (kind, value) {
            (Kind::Object(shape) | Kind::Objects(shape), Value::Object(map)) => {
                Self::Object(Object::from_map(shape, map))
            }
            (Kind::Objects(shape), Value::Array(items)) => Self::List(
                items
                    .into_iter()
                    .map(|item| Self::of(Kind::Object(shape), item))
                    .collect(),
            ),
            (_, Value::String(s)) => Self::Str(Cow::Owned(s)),
            (_, value) => Self::Json(value),
        }
    }

    /// The object, if this is one.
    pub(crate) fn into_object(self) -> Option<Object<'a>> {
        match self {
            Self::Object(object) => Some(object),
            _ => None,
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Self::Json(Value::Null))
    }

    /// An empty string, or one of whitespace only.
    pub(crate) fn is_blank(&self) -> bool {
        matches!(self, Self::Str(s) if s.trim().is_empty())
    }

    /// What [`into_value`](Self::into_value) allocates.
    pub(crate) fn value_cost(&self) -> usize {
        match self {
            Self::Str(Cow::Borrowed(s)) => s.len(),
            Self::Str(Cow::Owned(_)) | Self::Json(_) => 0,
            Self::Object(object) => object.leftover_cost(),
            Self::List(items) => items
                .iter()
                .map(Self::value_cost)
                .fold(items.len() * size_of::<Value>(), usize::saturating_add),
        }
    }

    /// The value as plain JSON.
    pub(crate) fn into_value(self) -> Value {
        match self {
            Self::Str(s) => Value::String(s.into_owned()),
            Self::Json(value) => value,
            Self::Object(object) => Value::Object(object.into_map()),
            Self::List(items) => Value::Array(items.into_iter().map(Self::into_value).collect()),
        }
    }
}

/// A JSON object read against a [`Shape`].
#[derive(Debug)]
pub(crate) struct Object<'a> {
    shape: &'static Shape,
    /// One per key of the shape: the key's position among the object's keys, and its value.
    slots: Vec<Option<(u32, Raw<'a>)>>,
    /// The keys not in the shape, with their positions, in the order read.
    unknown: Vec<(u32, String, Value)>,
    /// Where to look first for the next key taken: callers take keys in the shape's order.
    next: usize,
}

impl<'a> Object<'a> {
    fn new(shape: &'static Shape) -> Self {
        let mut slots = Vec::with_capacity(shape.keys.len());
        slots.resize_with(shape.keys.len(), || None);
        Self {
            shape,
            slots,
            unknown: Vec::new(),
            next: 0,
        }
    }

    /// Reads an already parsed JSON object against `shape`.
    #[cfg(test)]
    pub(crate) fn from_map(shape: &'static Shape, map: Map<String, Value>) -> Self {
        let mut object = Self::new(shape);
        for (position, (key, value)) in (0..).zip(map) {
            match shape.index(&key) {
                Some(i) => object.put(i, position, Raw::of(shape.keys[i].1, value)),
                None => object.unknown.push((position, key, value)),
            }
        }
        object
    }

    /// A duplicate key keeps the first position and the last value, as a JSON map does.
    fn put(&mut self, i: usize, position: u32, raw: Raw<'a>) {
        let slot = &mut self.slots[i];
        let position = slot.as_ref().map_or(position, |(p, _)| *p);
        *slot = Some((position, raw));
    }

    /// Whether `key` (a key of the shape) was present, `null` included.
    #[cfg(test)]
    pub(crate) fn has(&self, key: &str) -> bool {
        self.shape
            .index(key)
            .is_some_and(|i| self.slots[i].is_some())
    }

    /// Removes the value of `key`, a key of the shape.
    pub(crate) fn take(&mut self, key: impl Into<Key>) -> Option<Raw<'a>> {
        let key = key.into();
        let i = match key.index {
            Some(i) => i,
            None => self.slot(key.name)?,
        };
        debug_assert_eq!(self.shape.keys[i].0, key.name);
        self.slots[i].take().map(|(_, raw)| raw)
    }

    fn slot(&mut self, key: &str) -> Option<usize> {
        let i = self.shape.index_from(self.next, key);
        debug_assert!(i.is_some(), "{key:?} is not a key of {:?}", self.shape);
        self.next = i.map_or(self.next, |i| i + 1);
        i
    }

    /// What [`into_map`](Self::into_map) allocates beyond what reading the unknown keys
    /// counted: the map itself, and the keys of the shape still held, with a sort of all.
    pub(crate) fn leftover_cost(&self) -> usize {
        let held = self.slots.iter().enumerate().filter_map(|(i, slot)| {
            let (_, raw) = slot.as_ref()?;
            Some(self.shape.keys[i].0.len() + MAP_ENTRY + raw.value_cost())
        });
        let (count, cost) = held.fold((0, 0), |(n, c), cost| (n + 1, c + cost));
        if count == 0 && self.unknown.is_empty() {
            return 0;
        }
        let sort = if count > 0 {
            (self.unknown.len() + count) * size_of::<(u32, String, Value)>()
        } else {
            0
        };
        MAP_START + cost + sort
    }

    /// What was not taken, as a JSON object in the sender's key order.
    pub(crate) fn into_map(self) -> Map<String, Value> {
        let Self {
            shape,
            slots,
            mut unknown,
            ..
        } = self;
        let before = unknown.len();
        for (i, slot) in slots.into_iter().enumerate() {
            if let Some((position, raw)) = slot {
                unknown.push((position, shape.keys[i].0.to_owned(), raw.into_value()));
            }
        }
        if unknown.len() > before {
            unknown.sort_by_key(|(position, _, _)| *position);
        }
        let mut map = Map::new();
        for (_, key, value) in unknown {
            map.insert(key, value);
        }
        map
    }
}

/// Reads any JSON value as the kind says, counting what the tree takes on `meter`.
#[derive(Clone, Copy)]
pub(crate) struct Read<'m, 'g>(pub(crate) Kind, pub(crate) &'m Meter<'g>);

impl<'de> DeserializeSeed<'de> for Read<'_, '_> {
    type Value = Raw<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Raw<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Read<'_, '_> {
    type Value = Raw<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Raw<'de>, E> {
        Ok(Raw::Json(Value::Bool(b)))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Raw<'de>, E> {
        Ok(Raw::Json(Value::Number(n.into())))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Raw<'de>, E> {
        Ok(Raw::Json(Value::Number(n.into())))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Raw<'de>, E> {
        Ok(Raw::Json(
            Number::from_f64(n).map_or(Value::Null, Value::Number),
        ))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Borrowed(s)))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Raw<'de>, E> {
        self.1.take(s.len())?;
        Ok(Raw::Str(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Raw<'de>, E> {
        self.1.take(s.capacity())?;
        Ok(Raw::Str(Cow::Owned(s)))
    }

    fn visit_unit<E>(self) -> Result<Raw<'de>, E> {
        Ok(Raw::Json(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw<'de>, A::Error> {
        let meter = self.1;
        if let Kind::Objects(shape) = self.0 {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element_seed(Read(Kind::Object(shape), meter))? {
                meter.push(&mut items, item)?;
            }
            return Ok(Raw::List(items));
        }
        Json(meter).visit_seq(seq).map(Raw::Json)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw<'de>, A::Error> {
        let meter = self.1;
        let shape = match self.0 {
            Kind::Object(shape) | Kind::Objects(shape) => shape,
            Kind::Json => return Json(meter).visit_map(map).map(Raw::Json),
        };
        let mut object = Object::new(shape);
        meter.take(object.slots.capacity() * size_of::<Option<(u32, Raw)>>())?;
        let mut position = 0u32;
        let mut next = 0;
        while let Some(key) = map.next_key_seed(KeyOf(shape, next))? {
            match key {
                ReadKey::Known(i) => {
                    next = i + 1;
                    let raw = map.next_value_seed(Read(shape.keys[i].1, meter))?;
                    object.put(i, position, raw);
                }
                ReadKey::Unknown(key) => {
                    // The key, and its entry in the `extra` map it moves to.
                    meter.take(key.capacity() + MAP_ENTRY)?;
                    let value = map.next_value_seed(Json(meter))?;
                    meter.push(&mut object.unknown, (position, key, value))?;
                }
            }
            position = position.saturating_add(1);
        }
        Ok(Raw::Object(object))
    }
}

/// Reads any JSON value as plain JSON, counting what it takes on the meter.
#[derive(Clone, Copy)]
struct Json<'m, 'g>(&'m Meter<'g>);

/// What one entry of a JSON object takes beyond its key's text: the entry (hash, key,
/// value) and its index slot, twice over for the growth of both.
pub(crate) const MAP_ENTRY: usize = 2 * (size_of::<(u64, String, Value)>() + size_of::<usize>());

/// What a JSON object takes for its first entry: room for four entries and their index.
const MAP_START: usize = 4 * (size_of::<(u64, String, Value)>() + size_of::<usize>()) + 32;

impl<'de> DeserializeSeed<'de> for Json<'_, '_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Json<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        self.0.take(s.len())?;
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        self.0.take(s.capacity())?;
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            self.0.push(&mut items, item)?;
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let start = if object.is_empty() { MAP_START } else { 0 };
            self.0.take(start + key.capacity() + MAP_ENTRY)?;
            let value = map.next_value_seed(self)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

enum ReadKey {
    Known(usize),
    Unknown(String),
}

/// Reads a key, matched against the shape (from the given index on) without allocating for
/// known keys.
struct KeyOf(&'static Shape, usize);

impl<'de> DeserializeSeed<'de> for KeyOf {
    type Value = ReadKey;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<ReadKey, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyOf {
    type Value = ReadKey;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<ReadKey, E> {
        Ok(match self.0.index_from(self.1, key) {
            Some(i) => ReadKey::Known(i),
            None => ReadKey::Unknown(key.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    static INNER: Shape = Shape {
        keys: &[("x", Kind::Json)],
    };
    static OUTER: Shape = Shape {
        keys: &[
            ("a", Kind::Json),
            ("inner", Kind::Object(&INNER)),
            ("b", Kind::Objects(&INNER)),
        ],
    };

    fn read(text: &str) -> Object<'_> {
        let mut de = serde_json::Deserializer::from_str(text);
        let raw = Read(Kind::Object(&OUTER), &Meter::unlimited())
            .deserialize(&mut de)
            .unwrap();
        raw.into_object().expect("an object")
    }

    #[test]
    fn untaken_keys_keep_the_senders_order() {
        let text = r#"{"z":1,"b":2,"inner":{"y":0,"x":1},"a":null,"z2":[{"a":1}]}"#;
        let mut object = read(text);
        assert_eq!(object.take("b").unwrap().into_value(), json!(2));
        assert_eq!(
            Value::Object(object.into_map()),
            json!({"z":1,"inner":{"y":0,"x":1},"a":null,"z2":[{"a":1}]})
        );
        let parsed: Value = serde_json::from_str(text).unwrap();
        assert_eq!(Value::Object(read(text).into_map()), parsed);
        assert_eq!(
            Value::Object(Object::from_map(&OUTER, parsed.as_object().unwrap().clone()).into_map()),
            parsed
        );
    }

    #[test]
    fn duplicate_keys_keep_the_first_position_and_the_last_value() {
        let text = r#"{"a":1,"u":1,"b":2,"a":3,"u":4}"#;
        let expected: Value = serde_json::from_str(text).unwrap();
        assert_eq!(expected, json!({"a":3,"u":4,"b":2}));
        assert_eq!(Value::Object(read(text).into_map()), expected);
    }

    #[test]
    fn lists_of_objects_are_read_item_by_item() {
        let mut object = read(r#"{"b":[{"x":1,"y":2},3,[{"x":4}]]}"#);
        let Some(Raw::List(items)) = object.take("b") else {
            panic!("not a list")
        };
        assert!(matches!(
            &items[..],
            [Raw::Object(_), Raw::Json(_), Raw::Json(_)]
        ));
        let value = Raw::List(items).into_value();
        assert_eq!(value, json!([{"x":1,"y":2},3,[{"x":4}]]));
    }

    #[test]
    fn a_known_object_key_with_another_type_is_plain_json() {
        let mut object = read(r#"{"inner":"text"}"#);
        assert!(object.has("inner"));
        assert!(matches!(object.take("inner"), Some(Raw::Str(s)) if s == "text"));
        assert!(!object.has("inner"));
    }
}
