//! Field-level normalization: each helper takes one known key out of a payload object and
//! returns its normalized value. A value of an unexpected JSON type is never dropped: the
//! typed field becomes null (or empty) and the raw value is kept under the object's `extra`.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Map, Value};

use super::meter::Meter;
use super::shape::{sorted, Key, Kind, Object, Raw, Shape, MAP_ENTRY};
use super::time::{Date, Timestamp};

/// A string of a record: borrowed from the body unless it had escapes or was converted.
pub type Text<'a> = Cow<'a, str>;

/// One payload object being normalized: its known keys are taken one by one; what is left,
/// plus the values of an unexpected type, becomes `extra`.
/// What normalizing allocates past the parse tree (lists, split text, values moved to
/// `extra`) is counted on the meter first; once it refuses, nothing more is built and the
/// record is refused.
pub(crate) struct Fields<'a, 'm> {
    object: Object<'a>,
    extra: Map<String, Value>,
    meter: &'m Meter<'m>,
}

impl<'a, 'm> Fields<'a, 'm> {
    pub(crate) fn new(object: Object<'a>, meter: &'m Meter<'m>) -> Self {
        Self {
            object,
            extra: Map::new(),
            meter,
        }
    }

    /// Counts `n` bytes about to be allocated; false once the meter refuses.
    fn charge(&self, n: usize) -> bool {
        self.meter.refused().is_none() && self.meter.charge(n).is_ok()
    }

    /// Room for a vector of `n` items of `T`.
    fn charge_items<T>(&self, n: usize) -> bool {
        self.charge(n.saturating_mul(std::mem::size_of::<T>()))
    }

    /// The parts of `text` that `parts` picks, borrowed from the body when `text` is.
    fn split(&self, text: Text<'a>, parts: fn(&str) -> Vec<&str>) -> Vec<Text<'a>> {
        // At most one part per separator byte (`\n`, `,`, or the first byte of `⊙`) and
        // one more; each is held as a `&str`, then as a `Text`, with the text if it is copied.
        let most = 1 + text
            .bytes()
            .filter(|b| matches!(b, b'\n' | b',' | 0xE2))
            .count();
        let copied = if matches!(text, Cow::Owned(_)) {
            text.len()
        } else {
            0
        };
        if !self.charge_items::<(&str, Text)>(most) || !self.charge(copied) {
            return Vec::new();
        }
        match text {
            Cow::Borrowed(text) => parts(text).into_iter().map(Cow::Borrowed).collect(),
            Cow::Owned(text) => parts(&text)
                .into_iter()
                .map(|part| Cow::Owned(part.to_owned()))
                .collect(),
        }
    }

    /// Removes `key`; JSON `null` and an empty or blank string count as absent (whatever
    /// the field's type, `""` is null).
    pub(crate) fn take(&mut self, key: impl Into<Key>) -> Option<Raw<'a>> {
        let key = key.into();
        self.object
            .take(key)
            .filter(|raw| !raw.is_null() && !raw.is_blank())
    }

    /// Removes `key` as it was sent, blank or not.
    pub(crate) fn take_raw(&mut self, key: impl Into<Key>) -> Option<Raw<'a>> {
        let key = key.into();
        self.object.take(key)
    }

    /// Keeps a value of an unexpected type under `extra`.
    fn mistyped(&mut self, key: impl Into<Key>, raw: Raw<'a>) {
        let key = key.into();
        if self.charge(key.name.len() + MAP_ENTRY + raw.value_cost()) {
            self.extra.insert(key.name.to_owned(), raw.into_value());
        }
    }

    /// Applies `convert` to the value of `key`; on `None` the raw value goes to `extra`.
    fn with<T>(
        &mut self,
        key: impl Into<Key>,
        convert: impl FnOnce(&Raw<'a>) -> Option<T>,
    ) -> Option<T> {
        let key = key.into();
        let raw = self.take(key)?;
        let converted = convert(&raw);
        if converted.is_none() {
            self.mistyped(key, raw);
        }
        converted
    }

    /// Free text; empty or blank is null. Numbers are kept as their JSON text.
    pub(crate) fn text(&mut self, key: impl Into<Key>) -> Option<Text<'a>> {
        let key = key.into();
        match self.take(key)? {
            Raw::Str(s) if s.is_empty() => None,
            Raw::Str(s) => Some(s),
            Raw::Json(Value::Number(n)) => Some(Cow::Owned(n.to_string())),
            other => {
                self.mistyped(key, other);
                None
            }
        }
    }

    /// An id: a string, or an integer written in decimal.
    pub(crate) fn id(&mut self, key: impl Into<Key>) -> Option<Text<'a>> {
        let key = key.into();
        match self.take(key)? {
            Raw::Str(s) if s.is_empty() => None,
            Raw::Str(s) => Some(s),
            Raw::Json(Value::Number(n)) if n.is_i64() || n.is_u64() => {
                Some(Cow::Owned(n.to_string()))
            }
            other => {
                self.mistyped(key, other);
                None
            }
        }
    }

    /// A non-negative count; digit strings are accepted.
    pub(crate) fn count(&mut self, key: impl Into<Key>) -> Option<u64> {
        let key = key.into();
        self.with(key, |raw| match raw {
            Raw::Json(Value::Number(n)) => n.as_u64(),
            Raw::Str(s) => s.trim().parse().ok(),
            _ => None,
        })
    }

    /// A date.
    pub(crate) fn time(&mut self, key: impl Into<Key>) -> Option<Timestamp> {
        let key = key.into();
        let raw = self.take(key)?;
        let date = match &raw {
            Raw::Str(s) => Date::of_str(s),
            Raw::Json(value) => Date::of_value(value),
            _ => Date::Invalid,
        };
        match date {
            Date::At(t) => Some(t),
            Date::Unset => None,
            Date::Invalid => {
                self.mistyped(key, raw);
                None
            }
        }
    }

    /// A department: an id, with `-1` (number or text) meaning none.
    pub(crate) fn department(&mut self, key: impl Into<Key>) -> Option<Text<'a>> {
        let key = key.into();
        self.id(key).filter(|d| d.trim() != "-1")
    }

    /// `visitor.status`, a code (number or digit string) with its name.
    pub(crate) fn visitor_status(&mut self, key: impl Into<Key>) -> Option<VisitorStatus> {
        let key = key.into();
        self.with(key, |raw| {
            let code = match raw {
                Raw::Json(Value::Number(n)) => n.as_i64()?,
                Raw::Str(s) => s.trim().parse().ok()?,
                _ => return None,
            };
            Some(VisitorStatus::new(code))
        })
    }

    /// Transcript messages (see [`transcript_lines`]).
    pub(crate) fn transcript(&mut self, key: impl Into<Key>) -> Vec<Text<'a>> {
        let key = key.into();
        match self.take(key) {
            None => Vec::new(),
            Some(Raw::Str(s)) => self.split(s, transcript_lines),
            Some(other) => {
                self.mistyped(key, other);
                Vec::new()
            }
        }
    }

    /// Comma-separated agent names, or an array of names.
    pub(crate) fn operators(&mut self, key: impl Into<Key>) -> Vec<Text<'a>> {
        let key = key.into();
        match self.take(key) {
            None => Vec::new(),
            Some(Raw::Str(s)) => self.split(s, operator_names),
            Some(Raw::Json(Value::Array(items)))
                if items.iter().all(Value::is_string) && self.charge_items::<Text>(items.len()) =>
            {
                items
                    .into_iter()
                    .filter_map(|item| match item {
                        Value::String(name) => Some(Cow::Owned(name)),
                        _ => None,
                    })
                    .collect()
            }
            Some(other) => {
                self.mistyped(key, other);
                Vec::new()
            }
        }
    }

    /// A nested object, normalized by `normalize`; any other non-null value goes to `extra`.
    pub(crate) fn object<T>(
        &mut self,
        key: impl Into<Key>,
        normalize: impl FnOnce(Fields<'a, 'm>) -> T,
    ) -> Option<T> {
        let key = key.into();
        match self.take(key)? {
            Raw::Object(object) => Some(normalize(Fields::new(object, self.meter))),
            other => {
                self.mistyped(key, other);
                None
            }
        }
    }

    /// A list of objects, each normalized by `item`; if the value is not an array or an item
    /// is not an object, the whole raw value goes to `extra` and the list is empty.
    fn objects<T>(&mut self, key: impl Into<Key>, item: impl Fn(Fields<'a, 'm>) -> T) -> Vec<T> {
        let key = key.into();
        match self.take(key) {
            Some(raw) => self.items(key, raw, item),
            None => Vec::new(),
        }
    }

    /// The items of the value `raw` of `key`, as [`Fields::objects`].
    fn items<T>(
        &mut self,
        key: impl Into<Key>,
        raw: Raw<'a>,
        item: impl Fn(Fields<'a, 'm>) -> T,
    ) -> Vec<T> {
        let key = key.into();
        match raw {
            Raw::List(items)
                if items.iter().all(|i| matches!(i, Raw::Object(_)))
                    && self.charge_items::<T>(items.len()) =>
            {
                let mut out = Vec::with_capacity(items.len());
                for object in items.into_iter().filter_map(Raw::into_object) {
                    out.push(item(Fields::new(object, self.meter)));
                }
                out
            }
            other => {
                self.mistyped(key, other);
                Vec::new()
            }
        }
    }

    /// `custom_variables` or `custom_variable` → `[{"name","value"}]`.
    pub(crate) fn custom_variables(
        &mut self,
        plural: impl Into<Key>,
        singular: impl Into<Key>,
    ) -> Vec<CustomVariable<'a>> {
        let mut all = self.objects(plural, CustomVariable::normalize);
        let singular = self.objects(singular, CustomVariable::normalize);
        if !singular.is_empty() && self.charge_items::<CustomVariable>(all.len() + singular.len()) {
            all.extend(singular);
        }
        all
    }

    /// The first present of two ids; the other key, if also sent, stays in `extra`.
    pub(crate) fn first_id(
        &mut self,
        first: impl Into<Key>,
        second: impl Into<Key>,
    ) -> Option<Text<'a>> {
        match self.id(first) {
            Some(id) => Some(id),
            None => self.id(second),
        }
    }

    /// The first present of two texts; the other key, if also sent, stays in `extra`.
    pub(crate) fn first_text(
        &mut self,
        first: impl Into<Key>,
        second: impl Into<Key>,
    ) -> Option<Text<'a>> {
        match self.text(first) {
            Some(text) => Some(text),
            None => self.text(second),
        }
    }

    /// `custom_fields` (or `fields` of a wrap-up) → `[{"id","name","value"}]`.
    pub(crate) fn custom_fields(&mut self, key: impl Into<Key>) -> Vec<CustomField<'a>> {
        let key = key.into();
        self.objects(key, CustomField::normalize)
    }

    /// `attachment` as an object, array or null → `[{"name","uri"}]`; items with
    /// neither name nor uri are dropped.
    pub(crate) fn attachments(&mut self, key: impl Into<Key>) -> Vec<Attachment<'a>> {
        let key = key.into();
        match self.take(key) {
            None => Vec::new(),
            Some(Raw::Object(object)) => {
                let attachment = Attachment::normalize(Fields::new(object, self.meter));
                if attachment.holds_something() {
                    vec![attachment]
                } else {
                    Vec::new()
                }
            }
            Some(raw) => {
                let mut items = self.items(key, raw, Attachment::normalize);
                items.retain(Attachment::holds_something);
                items
            }
        }
    }

    /// Whatever keys were not taken, plus the mistyped values.
    pub(crate) fn finish(mut self) -> Map<String, Value> {
        if self.charge(self.object.leftover_cost()) {
            self.extra.append(&mut self.object.into_map());
        }
        self.extra
    }
}

payload_object! {
    /// A value captured from the visitor's page by Comm100 custom-variable code (payload
    /// `custom_variable` or `custom_variables`).
    CustomVariable {
        /// Variable name.
        name: Option<Text<'a>> = text("name"),
        /// Captured value; null when empty.
        value: Option<Text<'a>> = text("value"),
    }
}

payload_object! {
    /// A pre-chat, offline-message or wrap-up form field.
    CustomField {
        /// Field id (payload `id` or `field_id`), decimal when it was an integer.
        id: Option<Text<'a>> = first_id("id", "field_id"),
        /// Field label.
        name: Option<Text<'a>> = text("name"),
        /// Entered value, as text (numbers arrive as text).
        value: Option<Text<'a>> = text("value"),
    }
}

payload_object! {
    /// A file attached by the visitor or exchanged in the chat.
    Attachment {
        /// File name.
        name: Option<Text<'a>> = text("name"),
        /// Where the file can be fetched (payload `uri` or `url`).
        uri: Option<Text<'a>> = first_text("uri", "url"),
    }
}

impl Attachment<'_> {
    /// Whether it holds anything: a value under any key that is not null, blank or empty.
    fn holds_something(&self) -> bool {
        self.name.is_some() || self.uri.is_some() || self.extra.values().any(non_empty)
    }
}

/// `visitor.status` with its name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VisitorStatus {
    pub code: i64,
    pub name: &'static str,
}

impl VisitorStatus {
    /// The names of the codes Comm100 documents, by code.
    pub(crate) const NAMES: [&'static str; 12] = [
        "waiting_for_chat",
        "voice_chatting",
        "chatting",
        "pre_chat",
        "manually_invited",
        "auto_invited",
        "offline_message",
        "refused_by_agent",
        "refused_by_visitor",
        "chat_ended",
        "in_site",
        "out_of_site",
    ];

    /// The name of a code Comm100 does not document.
    pub(crate) const UNKNOWN: &'static str = "unknown";

    fn new(code: i64) -> Self {
        let name = usize::try_from(code)
            .ok()
            .and_then(|i| Self::NAMES.get(i))
            .copied()
            .unwrap_or(Self::UNKNOWN);
        Self { code, name }
    }
}

/// Minutes east of UTC from `"GMT -08:00"`, `"GMT 06:00"`, `"UTC-08:00"`, `"+0530"`.
pub fn utc_offset_minutes(zone: &str) -> Option<i32> {
    let s = zone.trim();
    let s = ["GMT", "UTC", "gmt", "utc"]
        .iter()
        .find_map(|p| s.strip_prefix(p))
        .unwrap_or(s)
        .trim_start();
    if s.is_empty() {
        return Some(0);
    }
    let (sign, s) = match s.as_bytes()[0] {
        b'-' => (-1, s[1..].trim_start()),
        b'+' => (1, s[1..].trim_start()),
        _ => (1, s),
    };
    let (hours, minutes) = match s.split_once(':') {
        Some((h, m)) => (h, m),
        None if s.len() == 4 => s.split_at_checked(2)?,
        None => (s, "0"),
    };
    let all_digits =
        |p: &str| !p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(hours) || !all_digits(minutes) {
        return None;
    }
    let (h, m): (i32, i32) = (hours.parse().ok()?, minutes.parse().ok()?);
    (h <= 14 && m < 60).then_some(sign * (h * 60 + m))
}

/// Transcript messages. A transcript with `⊙` is split on `⊙` only, so a newline
/// inside a message stays in it; one without (older payloads) is split on newlines. Empty
/// and blank entries are dropped wherever they are.
pub fn transcript_lines(transcript: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = if transcript.contains('\u{2299}') {
        transcript.split('\u{2299}').collect()
    } else {
        transcript
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .collect()
    };
    lines.retain(|l| !l.trim().is_empty());
    lines
}

/// Whether a kept value holds anything: not null, not a blank string, not an empty array
/// or object.
fn non_empty(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.trim().is_empty(),
        Value::Array(items) => items.iter().any(non_empty),
        Value::Object(map) => map.values().any(non_empty),
        Value::Bool(_) | Value::Number(_) => true,
    }
}

/// Comma-separated agent names → names.
pub fn operator_names(names: &str) -> Vec<&str> {
    names
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    static TEST: Shape = Shape {
        keys: &[
            ("a", Kind::Json),
            ("b", Kind::Json),
            ("c", Kind::Json),
            ("d", Kind::Json),
            ("e", Kind::Json),
            ("guid", Kind::Json),
            ("int", Kind::Json),
            ("minus_one", Kind::Json),
            ("minus_one_text", Kind::Json),
            ("empty", Kind::Json),
            ("name", Kind::Json),
            ("null", Kind::Json),
            ("bool", Kind::Json),
            ("missing", Kind::Json),
            ("obj", Kind::Objects(&Attachment::SHAPE)),
            ("empty_obj", Kind::Objects(&Attachment::SHAPE)),
            ("arr", Kind::Objects(&Attachment::SHAPE)),
            ("bad", Kind::Json),
            ("custom_variable", Kind::Objects(&CustomVariable::SHAPE)),
            ("custom_variables", Kind::Objects(&CustomVariable::SHAPE)),
            ("custom_fields", Kind::Objects(&CustomField::SHAPE)),
        ],
    };

    fn fields(v: Value) -> Fields<'static, 'static> {
        let meter = Box::leak(Box::new(Meter::unlimited()));
        Fields::new(
            Object::from_map(&TEST, v.as_object().unwrap().clone()),
            meter,
        )
    }

    #[test]
    fn ids_are_strings() {
        let mut f =
            fields(json!({"a": 1, "b": "x-1", "c": 18446744073709551615_u64, "d": 1.5, "e": ""}));
        assert_eq!(f.id("a").as_deref(), Some("1"));
        assert_eq!(f.id("b").as_deref(), Some("x-1"));
        assert_eq!(f.id("c").as_deref(), Some("18446744073709551615"));
        assert_eq!(f.id("d"), None);
        assert_eq!(f.id("e"), None);
        assert_eq!(f.finish(), *json!({"d": 1.5}).as_object().unwrap());
    }

    #[test]
    fn every_department_shape() {
        let mut f = fields(json!({
            "guid": "c47c5e3a-0a3b-4aa5-98ea-cec0ae5ab7b9", "int": 1165, "minus_one": -1,
            "minus_one_text": "-1", "empty": "", "name": "Support", "null": null, "bool": true
        }));
        assert_eq!(
            f.department("guid").as_deref(),
            Some("c47c5e3a-0a3b-4aa5-98ea-cec0ae5ab7b9")
        );
        assert_eq!(f.department("int").as_deref(), Some("1165"));
        assert_eq!(f.department("minus_one"), None);
        assert_eq!(f.department("minus_one_text"), None);
        assert_eq!(f.department("empty"), None);
        assert_eq!(f.department("name").as_deref(), Some("Support"));
        assert_eq!(f.department("null"), None);
        assert_eq!(f.department("missing"), None);
        assert_eq!(f.department("bool"), None);
        assert_eq!(f.finish(), *json!({"bool": true}).as_object().unwrap());
    }

    #[test]
    fn empty_strings_become_null() {
        let mut f = fields(json!({"a": "", "b": "x", "c": 5}));
        assert_eq!(f.text("a"), None);
        assert_eq!(f.text("b").as_deref(), Some("x"));
        assert_eq!(f.text("c").as_deref(), Some("5"));
        assert!(f.finish().is_empty());
    }

    /// A blank string is null whatever the field's type, and `[]` for a list.
    #[test]
    fn blank_strings_are_null_for_every_field_type() {
        let mut f = fields(json!({
            "a": " ", "int": "", "d": "\t", "e": "  \n", "arr": "", "obj": "",
            "custom_fields": "", "name": "x"
        }));
        assert_eq!(f.text("a"), None);
        assert_eq!(f.count("int"), None);
        assert_eq!(f.time("d"), None);
        assert_eq!(f.id("e"), None);
        assert!(f.attachments("arr").is_empty());
        assert!(f.attachments("obj").is_empty());
        assert!(f.custom_fields("custom_fields").is_empty());
        assert_eq!(f.text("name").as_deref(), Some("x"));
        assert!(f.finish().is_empty(), "nothing under extra");
    }

    /// Both spellings give one list, plural first; null or [] hides nothing.
    #[test]
    fn both_custom_variable_spellings_are_kept() {
        let both = json!({
            "custom_variables": [{"name": "a", "value": "1"}],
            "custom_variable": [{"name": "b", "value": "2"}]
        });
        let names = |v: Value| -> Vec<Option<String>> {
            fields(v)
                .custom_variables("custom_variables", "custom_variable")
                .into_iter()
                .map(|c| c.name.map(|n| n.into_owned()))
                .collect()
        };
        assert_eq!(names(both), [Some("a".into()), Some("b".into())]);
        for hidden in [json!(null), json!([]), json!("")] {
            let v = json!({"custom_variables": hidden, "custom_variable": [{"name": "b"}]});
            assert_eq!(names(v), [Some("b".into())]);
            let v = json!({"custom_variable": hidden, "custom_variables": [{"name": "a"}]});
            assert_eq!(names(v), [Some("a".into())]);
        }
    }

    /// An attachment is dropped only when it holds nothing at all.
    #[test]
    fn attachments_are_dropped_only_when_empty() {
        let mut f = fields(json!({
            "arr": [
                {"name": "", "uri": "", "size": 2048},
                {"name": "", "uri": " ", "note": "", "more": [null, ""]},
                {"url": "https://x/y"}
            ]
        }));
        let kept = f.attachments("arr");
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert_eq!(kept[0].name, None);
        assert_eq!(kept[0].extra, *json!({"size": 2048}).as_object().unwrap());
        assert_eq!(kept[1].uri.as_deref(), Some("https://x/y"));
    }

    #[test]
    fn time_zones() {
        assert_eq!(utc_offset_minutes("GMT -08:00"), Some(-480));
        assert_eq!(utc_offset_minutes("GMT +06:00"), Some(360));
        assert_eq!(utc_offset_minutes("GMT 06:00"), Some(360));
        assert_eq!(utc_offset_minutes("UTC-08:00"), Some(-480));
        assert_eq!(utc_offset_minutes("GMT +05:30"), Some(330));
        assert_eq!(utc_offset_minutes("UTC+0545"), Some(345));
        assert_eq!(utc_offset_minutes("GMT"), Some(0));
        assert_eq!(utc_offset_minutes("GMT -8"), Some(-480));
        assert_eq!(utc_offset_minutes("Pacific"), None);
        assert_eq!(utc_offset_minutes("GMT +25:00"), None);
        assert_eq!(utc_offset_minutes("GMT +08:75"), None);
        assert_eq!(utc_offset_minutes("GMT +"), None);
        // Four bytes without a colon, split where a character is not whole.
        assert_eq!(utc_offset_minutes("G\u{202e}"), None);
        assert_eq!(utc_offset_minutes("+1\u{e9}1"), None);
    }

    proptest::proptest! {
        /// Zone, transcript, operator and time rules on short strings of the characters
        /// their syntax uses mixed with multi-byte ones: no panic, results in range, and
        /// transcript lines as one split on either separator gives them.
        #[test]
        fn text_rules_hold_for_any_short_string(
            s in "(GMT|UTC)?[ +\\-:0-9GMTé\u{202e}⊙,\n\r/()Date]{0,8}"
        ) {
            if let Some(m) = utc_offset_minutes(&s) {
                proptest::prop_assert!(m.abs() <= 14 * 60 + 59);
            }
            let lines = transcript_lines(&s);
            proptest::prop_assert!(lines.iter().all(|l| !l.trim().is_empty()));
            if s.contains('\u{2299}') {
                // Split on ⊙ only: every message is a piece between two of them.
                let circled_dot = '\u{2299}';
                proptest::prop_assert!(lines.iter().all(|l| !l.contains(circled_dot)));
                let pieces: Vec<&str> = s.split('\u{2299}').collect();
                proptest::prop_assert!(lines.iter().all(|l| pieces.contains(l)));
            } else {
                proptest::prop_assert!(lines.iter().all(|l| !l.contains('\n')));
            }
            for name in operator_names(&s) {
                proptest::prop_assert!(!name.is_empty() && name.trim() == name && !name.contains(','));
            }
            if let Some(t) = Timestamp::parse_str(&s) {
                proptest::prop_assert!(chrono::DateTime::parse_from_rfc3339(&t.to_string()).is_ok());
            }
        }
    }

    #[test]
    fn transcripts_split_on_circled_dot_only_else_on_newlines() {
        assert_eq!(
            transcript_lines("a⊙[03:30:01] b: hi⊙c.(03:36:59)⊙"),
            ["a", "[03:30:01] b: hi", "c.(03:36:59)"]
        );
        assert_eq!(transcript_lines("a\nb\r\nc\n"), ["a", "b", "c"]);
        assert_eq!(transcript_lines("a\n\n\nb"), ["a", "b"]);
        // With ⊙, a newline stays inside its message; empty entries go wherever they are.
        assert_eq!(
            transcript_lines("[03:30:01] b: line one\nline two⊙⊙ ⊙c"),
            ["[03:30:01] b: line one\nline two", "c"]
        );
        assert!(transcript_lines("⊙").is_empty());
    }

    #[test]
    fn operators_split_on_commas() {
        assert_eq!(operator_names("Walid, Ann ,"), ["Walid", "Ann"]);
        assert_eq!(operator_names("Walid"), ["Walid"]);
        assert!(operator_names("").is_empty());
        let mut f = fields(json!({"a": ["A", "B"], "b": [1], "c": "x,y"}));
        assert_eq!(f.operators("a"), ["A", "B"]);
        assert!(f.operators("b").is_empty());
        assert_eq!(f.operators("c"), ["x", "y"]);
        assert_eq!(f.finish(), *json!({"b": [1]}).as_object().unwrap());
    }

    #[test]
    fn attachment_as_object_array_or_null() {
        let mut f = fields(json!({
            "obj": {"name": "a.png", "uri": "https://x/a.png"},
            "empty_obj": {"name": "", "uri": ""},
            "arr": [{"name": "a", "uri": "u"}, {"name": "", "uri": ""}, {"name": "b", "url": "v"}],
            "null": null,
            "bad": "x"
        }));
        let obj = f.attachments("obj");
        assert_eq!(obj.len(), 1);
        assert_eq!(obj[0].uri.as_deref(), Some("https://x/a.png"));
        assert!(f.attachments("empty_obj").is_empty());
        let arr = f.attachments("arr");
        assert_eq!(
            arr.iter().map(|a| a.uri.as_deref()).collect::<Vec<_>>(),
            [Some("u"), Some("v")]
        );
        assert!(f.attachments("null").is_empty());
        assert!(f.attachments("bad").is_empty());
        assert_eq!(f.finish(), *json!({"bad": "x"}).as_object().unwrap());
    }

    #[test]
    fn custom_variables_singular_or_plural_and_custom_fields_id_or_field_id() {
        let mut f = fields(json!({"custom_variable": [{"name": "N", "value": ""}]}));
        let vars = f.custom_variables("custom_variables", "custom_variable");
        assert_eq!(vars[0].name.as_deref(), Some("N"));
        assert_eq!(vars[0].value, None);

        let mut f = fields(
            json!({"custom_fields": [{"field_id": 7, "name": "Budget", "value": "500.00"}, {"id": "8", "name": "x", "value": 3}]}),
        );
        let cf = f.custom_fields("custom_fields");
        assert_eq!(cf[0].id.as_deref(), Some("7"));
        assert_eq!(cf[0].value.as_deref(), Some("500.00"));
        assert_eq!(cf[1].id.as_deref(), Some("8"));
        assert_eq!(cf[1].value.as_deref(), Some("3"));

        let mut f = fields(json!({"custom_fields": [1, 2]}));
        assert!(f.custom_fields("custom_fields").is_empty());
        assert_eq!(
            f.finish(),
            *json!({"custom_fields": [1, 2]}).as_object().unwrap()
        );
    }

    #[test]
    fn visitor_status_names() {
        let mut f = fields(json!({"a": 2, "b": " 11", "c": 42, "d": -3, "e": "x"}));
        let s = f.visitor_status("a").unwrap();
        assert_eq!((s.code, s.name), (2, "chatting"));
        assert_eq!(f.visitor_status("b").unwrap().name, "out_of_site");
        let unknown = f.visitor_status("c").unwrap();
        assert_eq!((unknown.code, unknown.name), (42, "unknown"));
        assert_eq!(f.visitor_status("d").unwrap().name, "unknown");
        assert_eq!(f.visitor_status("e"), None);
        assert_eq!(f.finish(), *json!({"e": "x"}).as_object().unwrap());
    }
}
