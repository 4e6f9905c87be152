//! Parse + normalize: one Comm100 webhook body in, one [`Record`] out.
//!
//! Parsing never fails on the *content* of a JSON object: unknown keys are kept under
//! `extra`, values of an unexpected type are kept under `extra` of their object, and unknown
//! `event` values become type [`EventType::Unknown`]. Only a body that is not a JSON object,
//! or one without a string `event`, is rejected.

#[macro_use]
mod declare;

mod fields;
mod meter;
mod objects;
mod schema;
mod shape;
mod time;

use std::fmt;

use serde::de::DeserializeSeed;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use fields::{Attachment, CustomField, CustomVariable, Text, VisitorStatus};
pub use meter::{Exceeded, Grow, Meter};
pub use objects::{Agent, AgentStatus, Chat, OfflineMessage, Visitor, Wrapup};
pub use schema::{Defs, Describe};
pub use time::Timestamp;

use fields::Fields;
use shape::{Kind, Raw, Read, Shape};

/// The top-level keys read from a payload.
static PAYLOAD: Shape = Shape {
    keys: &[
        ("event", Kind::Json),
        ("chat_id", Kind::Json),
        ("visitor", Kind::Object(&Visitor::SHAPE)),
        ("chat", Kind::Object(&Chat::SHAPE)),
        ("offline_message", Kind::Object(&OfflineMessage::SHAPE)),
        ("wrapup", Kind::Object(&Wrapup::SHAPE)),
        ("operator_id", Kind::Json),
    ],
};

/// The record format version, the record's `schema_version`.
pub const SCHEMA_VERSION: u32 = 1;

/// Where a record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A webhook Comm100 posted to the bridge.
    Webhook,
    /// Comm100's API, read by `comm100-bridge backfill` for an event no webhook delivered.
    Backfill,
}

/// The normalized type of an event, which selects its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    OfflineMessageSubmitted,
    ChatStarted,
    ChatEnded,
    ChatWrappedUp,
    AgentStatusChanged,
    ChatRequested,
    ChatTransferred,
    Unknown,
}

impl EventType {
    /// Every type, in a fixed order.
    pub const ALL: [EventType; 8] = [
        Self::OfflineMessageSubmitted,
        Self::ChatStarted,
        Self::ChatEnded,
        Self::ChatWrappedUp,
        Self::AgentStatusChanged,
        Self::ChatRequested,
        Self::ChatTransferred,
        Self::Unknown,
    ];

    /// The type's position in [`EventType::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The type's name, as in the record's `type` and the default topic.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OfflineMessageSubmitted => "offline_message_submitted",
            Self::ChatStarted => "chat_started",
            Self::ChatEnded => "chat_ended",
            Self::ChatWrappedUp => "chat_wrapped_up",
            Self::AgentStatusChanged => "agent_status_changed",
            Self::ChatRequested => "chat_requested",
            Self::ChatTransferred => "chat_transferred",
            Self::Unknown => "unknown",
        }
    }

    /// The `event` values of this type, as Comm100 spells them (matched case-insensitively
    /// after trimming); none for [`EventType::Unknown`].
    pub fn names(self) -> Vec<&'static str> {
        EVENT_NAMES
            .iter()
            .filter(|(_, kind, _)| *kind == self)
            .map(|(name, _, _)| *name)
            .collect()
    }

    /// Classifies a payload's `event` value (case-insensitive, trimmed); an agent status
    /// event also yields the status.
    pub fn classify(event: &str) -> (Self, Option<AgentStatus>) {
        let event = event.trim();
        EVENT_NAMES
            .iter()
            .find(|(name, _, _)| name.eq_ignore_ascii_case(event))
            .map_or((Self::Unknown, None), |&(_, kind, status)| (kind, status))
    }
}

/// Every `event` value Comm100 sends, with its type and, for an agent's, the status.
const EVENT_NAMES: [(&str, EventType, Option<AgentStatus>); 12] = [
    (
        "offline_message_submitted",
        EventType::OfflineMessageSubmitted,
        None,
    ),
    ("chat_started", EventType::ChatStarted, None),
    ("chat_ended", EventType::ChatEnded, None),
    ("chat_wrapped_up", EventType::ChatWrappedUp, None),
    ("chat_wraped_up", EventType::ChatWrappedUp, None),
    ("chat_request", EventType::ChatRequested, None),
    ("chat_requested", EventType::ChatRequested, None),
    ("chat_transferred", EventType::ChatTransferred, None),
    (
        "online",
        EventType::AgentStatusChanged,
        Some(AgentStatus::Online),
    ),
    (
        "away",
        EventType::AgentStatusChanged,
        Some(AgentStatus::Away),
    ),
    (
        "login",
        EventType::AgentStatusChanged,
        Some(AgentStatus::Login),
    ),
    (
        "logout",
        EventType::AgentStatusChanged,
        Some(AgentStatus::Logout),
    ),
];

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A site label from `/webhooks/comm100/{site}`: `[A-Za-z0-9_.-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Site(String);

impl Site {
    /// Accepts a label of 1 to 64 ASCII letters, digits, `_`, `.` or `-`.
    pub fn parse(label: &str) -> Option<Self> {
        let valid = (1..=64).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        valid.then(|| Self(label.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a body was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectError {
    /// Not JSON, or JSON that is not an object.
    #[error("{0}")]
    InvalidJson(String),
    /// A JSON object without a string `event`.
    #[error("the payload has no string \"event\" field; Comm100 always sends one")]
    MissingEvent,
    /// Its parse tree would take more memory than the request may hold.
    #[error("{0}")]
    Memory(Exceeded),
}

impl RejectError {
    /// The `code` of the HTTP error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::MissingEvent => "missing_event",
            Self::Memory(Exceeded::Limit) => "body_too_complex",
            Self::Memory(Exceeded::Busy) => "too_many_requests",
        }
    }
}

/// One normalized event: the Kafka message value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record<'a> {
    pub schema_version: u32,
    pub id: Uuid,
    pub fingerprint: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub event: Text<'a>,
    pub origin: Origin,
    pub site: Option<Site>,
    pub received_at: Timestamp,
    pub occurred_at: Option<Timestamp>,
    pub chat_id: Option<Text<'a>>,
    pub visitor: Option<Visitor<'a>>,
    pub chat: Option<Chat<'a>>,
    pub offline_message: Option<OfflineMessage<'a>>,
    pub wrapup: Option<Wrapup<'a>>,
    pub agent: Option<Agent<'a>>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl<'a> Record<'a> {
    /// Parses and normalizes one webhook body received at `received_at`.
    /// Strings of the record are borrowed from `body` where they need no unescaping.
    pub fn from_body(
        body: &'a [u8],
        site: Option<Site>,
        received_at: Timestamp,
    ) -> Result<Self, RejectError> {
        Self::from_body_metered(body, site, received_at, &Meter::unlimited())
    }

    /// [`from_body`](Self::from_body), counting the parse tree on `meter` and stopping when
    /// it refuses more.
    pub fn from_body_metered(
        body: &'a [u8],
        site: Option<Site>,
        received_at: Timestamp,
        meter: &Meter,
    ) -> Result<Self, RejectError> {
        let invalid = |e: serde_json::Error| match meter.refused() {
            Some(exceeded) => RejectError::Memory(exceeded),
            None => RejectError::InvalidJson(format!("the body is not valid JSON: {e}")),
        };
        // One pass over the whole body is cheaper than serde_json's check of every string;
        // outside strings, JSON is ASCII, so the two accept the same bodies.
        let text = std::str::from_utf8(body).map_err(|e| {
            RejectError::InvalidJson(format!("the body is not valid UTF-8 JSON: {e}"))
        })?;
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let raw = Read(Kind::Object(&PAYLOAD), meter)
            .deserialize(&mut deserializer)
            .map_err(invalid)?;
        deserializer.end().map_err(invalid)?;
        let object = match raw {
            Raw::Object(object) => object,
            other => {
                return Err(RejectError::InvalidJson(format!(
                    "the body is JSON but not an object (found {})",
                    json_type(&other.into_value())
                )))
            }
        };
        let record = Self::normalize(Fields::new(object, meter), body, site, received_at)?;
        match meter.refused() {
            Some(exceeded) => Err(RejectError::Memory(exceeded)),
            None => Ok(record),
        }
    }

    /// Normalizes the payload object `f` of `body`.
    fn normalize(
        mut f: Fields<'a, '_>,
        body: &'a [u8],
        site: Option<Site>,
        received_at: Timestamp,
    ) -> Result<Self, RejectError> {
        let Some(Raw::Str(event)) = f.take_raw("event") else {
            return Err(RejectError::MissingEvent);
        };
        let (kind, status) = EventType::classify(&event);

        // An offline message has no chat: a `chat_id` it carries is kept under `extra`.
        let offline = kind == EventType::OfflineMessageSubmitted;
        let top_chat_id = if offline { None } else { f.id("chat_id") };
        let visitor = f.object("visitor", Visitor::normalize);
        let chat = f.object("chat", Chat::normalize);
        let offline_message = f.object("offline_message", OfflineMessage::normalize);
        let wrapup = f.object("wrapup", Wrapup::normalize);
        let agent = status.map(|status| Agent {
            operator_id: f.id("operator_id"),
            status,
        });

        let chat_id = if offline {
            None
        } else {
            top_chat_id
                .or_else(|| chat.as_ref().and_then(|c| c.id.clone()))
                .or_else(|| visitor.as_ref().and_then(|v| v.chat_id.clone()))
        };
        let occurred_at = match kind {
            EventType::OfflineMessageSubmitted => offline_message.as_ref().and_then(|m| m.time),
            EventType::ChatWrappedUp => wrapup.as_ref().and_then(|w| w.time),
            EventType::ChatEnded => chat.as_ref().and_then(|c| c.end_time),
            _ => None,
        };

        Ok(Self {
            schema_version: SCHEMA_VERSION,
            id: Uuid::now_v7(),
            fingerprint: fingerprint(site.as_ref(), body),
            kind,
            event,
            origin: Origin::Webhook,
            site,
            received_at,
            occurred_at,
            chat_id,
            visitor,
            chat,
            offline_message,
            wrapup,
            agent,
            extra: f.finish(),
        })
    }

    /// The Kafka key: the id that keeps one chat's (or agent's, or message's) events in order.
    pub fn key(&self) -> Option<&str> {
        match self.kind {
            EventType::OfflineMessageSubmitted => self.offline_message.as_ref()?.id.as_deref(),
            EventType::AgentStatusChanged => self.agent.as_ref()?.operator_id.as_deref(),
            EventType::Unknown => None,
            _ => self.chat_id.as_deref(),
        }
    }
}

/// Hex SHA-256 of the site label followed by the raw body. The concatenation is
/// unambiguous: a body that parses as an object starts with `{` or whitespace, which no
/// site label contains.
fn fingerprint(site: Option<&Site>, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    if let Some(site) = site {
        hasher.update(site.as_str().as_bytes());
    }
    hasher.update(body);
    let mut text = [0u8; 64];
    hex::encode_to_slice(hasher.finalize(), &mut text).expect("64 hex digits for 32 bytes");
    String::from_utf8(text.to_vec()).expect("hex digits are ASCII")
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    /// The record of `body`; the body's text is leaked so the record may borrow it.
    fn record(body: Value) -> Record<'static> {
        let text: &'static str = Box::leak(body.to_string().into_boxed_str());
        Record::from_body(text.as_bytes(), None, Timestamp::now()).unwrap()
    }

    fn value(r: &Record) -> Value {
        serde_json::to_value(r).unwrap()
    }

    #[test]
    fn event_values_match_case_insensitively_after_trimming() {
        for (event, kind) in [
            ("chat_ended", EventType::ChatEnded),
            ("  Chat_Ended\n", EventType::ChatEnded),
            ("CHAT_WRAPED_UP", EventType::ChatWrappedUp),
            ("chat_wrapped_up", EventType::ChatWrappedUp),
            ("chat_request", EventType::ChatRequested),
            ("chat_requested", EventType::ChatRequested),
            ("chat_transferred", EventType::ChatTransferred),
            ("chat_started", EventType::ChatStarted),
            (
                "offline_message_submitted",
                EventType::OfflineMessageSubmitted,
            ),
            (" Online ", EventType::AgentStatusChanged),
            ("bot_started", EventType::Unknown),
            ("", EventType::Unknown),
        ] {
            assert_eq!(EventType::classify(event).0, kind, "{event:?}");
        }
        let r = record(json!({"event": " AWAY ", "operator_id": 7}));
        assert_eq!(r.event, " AWAY ", "the raw value is kept");
        assert_eq!(r.agent.unwrap().status, AgentStatus::Away);
    }

    #[test]
    fn agent_status_changed_becomes_an_agent_object() {
        let r = record(
            json!({"event": "logout", "operator_id": "01000000-0000-0000-0000-0100000192b0"}),
        );
        assert_eq!(r.kind, EventType::AgentStatusChanged);
        assert_eq!(r.key(), Some("01000000-0000-0000-0000-0100000192b0"));
        assert_eq!(
            value(&r)["agent"],
            json!({"operator_id": "01000000-0000-0000-0000-0100000192b0", "status": "logout"})
        );
        assert_eq!(
            record(json!({"event": "online", "operator_id": 1})).key(),
            Some("1")
        );
    }

    #[test]
    fn chat_id_is_the_first_present_of_chat_id_chat_id_visitor_chat_id() {
        let both = record(
            json!({"event": "chat_ended", "chat_id": 1, "chat": {"id": 2}, "visitor": {"chat_id": 3}}),
        );
        assert_eq!(both.chat_id.as_deref(), Some("1"));
        let chat =
            record(json!({"event": "chat_ended", "chat": {"id": 2}, "visitor": {"chat_id": 3}}));
        assert_eq!(chat.chat_id.as_deref(), Some("2"));
        assert_eq!(chat.key(), Some("2"));
        let visitor = record(json!({"event": "chat_started", "visitor": {"chat_id": 3}}));
        assert_eq!(visitor.key(), Some("3"));
        let none = record(json!({"event": "chat_started"}));
        assert_eq!(none.key(), None);
    }

    #[test]
    fn offline_messages_are_keyed_by_their_id() {
        let r = record(
            json!({"event": "offline_message_submitted", "offline_message": {"id": 58, "time": "/Date(1584423203253)/"}, "visitor": {"chat_id": 99}}),
        );
        assert_eq!(r.key(), Some("58"));
        assert_eq!(
            r.occurred_at.unwrap().to_string(),
            "2020-03-17T05:33:23.253Z"
        );
    }

    #[test]
    fn unknown_events_keep_every_key_and_have_no_key() {
        let r = record(json!({
            "event": "bot_chat_started",
            "bot": {"id": 5, "name": "Ava"},
            "operator_id": 9,
            "visitor": {"chat_id": "c1", "status": 0, "brand_new": true}
        }));
        assert_eq!(r.kind, EventType::Unknown);
        assert_eq!(r.key(), None);
        let v = value(&r);
        assert_eq!(v["type"], "unknown");
        assert_eq!(
            v["extra"],
            json!({"bot": {"id": 5, "name": "Ava"}, "operator_id": 9})
        );
        assert_eq!(
            v["visitor"]["status"],
            json!({"code": 0, "name": "waiting_for_chat"})
        );
        assert_eq!(v["visitor"]["extra"], json!({"brand_new": true}));
    }

    #[test]
    fn unknown_keys_are_kept_per_object_under_extra() {
        let v = value(&record(json!({
            "event": "chat_ended",
            "new_top": 1,
            "chat": {"id": "c", "sentiment": "happy", "wrap_up": {"category": "x", "score": 3}},
            "visitor": {"chat_id": "c", "custom_variables": [{"name": "a", "value": "b", "type": 1}]}
        })));
        assert_eq!(v["extra"], json!({"new_top": 1}));
        assert_eq!(v["chat"]["extra"], json!({"sentiment": "happy"}));
        assert_eq!(v["chat"]["wrap_up"]["extra"], json!({"score": 3}));
        assert_eq!(
            v["visitor"]["custom_variables"][0]["extra"],
            json!({"type": 1})
        );
        // An object without unknown keys has no `extra` at all.
        assert!(v["visitor"].get("extra").is_none());
    }

    #[test]
    fn values_of_the_wrong_type_are_kept_under_extra() {
        let v = value(&record(json!({
            "event": "chat_started",
            "visitor": {"chats": "many", "first_visit_time": "last tuesday", "status": [], "name": {"first": "A"}},
            "chat": "x",
            "chat_id": 1.5,
        })));
        assert_eq!(v["visitor"]["chats"], Value::Null);
        assert_eq!(
            v["visitor"]["extra"],
            json!({"chats": "many", "first_visit_time": "last tuesday", "status": [], "name": {"first": "A"}})
        );
        assert_eq!(v["chat"], Value::Null);
        assert_eq!(v["extra"], json!({"chat": "x", "chat_id": 1.5}));

        let v = value(&record(json!({"event": "chat_started", "visitor": "x"})));
        assert_eq!(v["visitor"], Value::Null);
        assert_eq!(v["extra"], json!({"visitor": "x"}));
    }

    #[test]
    fn occurred_at_comes_from_the_event_own_time() {
        let ended = record(json!({"event": "chat_ended", "chat": {"end_time": 1584416219000_i64}}));
        assert_eq!(
            ended.occurred_at.unwrap().to_string(),
            "2020-03-17T03:36:59.000Z"
        );
        let wrapped = record(
            json!({"event": "chat_wrapped_up", "wrapup": {"time": "2020-03-17T05:18:44.807Z"}}),
        );
        assert_eq!(
            wrapped.occurred_at.unwrap().to_string(),
            "2020-03-17T05:18:44.807Z"
        );
        let transferred =
            record(json!({"event": "chat_transferred", "chat": {"end_time": 1584416219000_i64}}));
        assert_eq!(transferred.occurred_at, None);
        let started = record(json!({"event": "chat_started"}));
        assert_eq!(started.occurred_at, None);
    }

    #[test]
    fn escaped_slashes_in_urls_and_dates() {
        let body = br#"{"event":"chat_started","visitor":{"landing_page":"https:\/\/example.com\/a","visit_time":"\/Date(1584415749307)\/"}}"#;
        let v = value(&Record::from_body(body, None, Timestamp::now()).unwrap());
        assert_eq!(v["visitor"]["landing_page"], "https://example.com/a");
        assert_eq!(v["visitor"]["visit_time"], "2020-03-17T03:29:09.307Z");
    }

    #[test]
    fn utc_offset_is_added_next_to_the_time_zone() {
        let v = value(&record(
            json!({"event": "chat_started", "visitor": {"time_zone": "GMT 06:00"}}),
        ));
        assert_eq!(v["visitor"]["time_zone"], "GMT 06:00");
        assert_eq!(v["visitor"]["utc_offset_minutes"], 360);
        let v = value(&record(
            json!({"event": "chat_started", "visitor": {"time_zone": "Mars/Olympus"}}),
        ));
        assert_eq!(v["visitor"]["time_zone"], "Mars/Olympus");
        assert_eq!(v["visitor"]["utc_offset_minutes"], Value::Null);
    }

    #[test]
    fn transcript_and_operators() {
        let v = value(&record(json!({"event": "chat_ended", "chat": {
            "chat_transcript": "a\nb\n", "operators": "Walid,Ann"
        }})));
        assert_eq!(v["chat"]["transcript"], json!(["a", "b"]));
        assert_eq!(v["chat"]["operators"], json!(["Walid", "Ann"]));
        assert!(v["chat"].get("chat_transcript").is_none());
    }

    #[test]
    fn fingerprint_is_stable_for_identical_bodies_and_depends_on_the_site() {
        let body = br#"{"event":"online","operator_id":1}"#;
        let a = Record::from_body(body, None, Timestamp::now()).unwrap();
        let b = Record::from_body(body, None, Timestamp::now()).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.id, b.id);
        let site = Record::from_body(body, Site::parse("eu"), Timestamp::now()).unwrap();
        assert_ne!(site.fingerprint, a.fingerprint);
        let mut expected = Sha256::new();
        expected.update(b"eu");
        expected.update(body);
        assert_eq!(site.fingerprint, format!("{:x}", expected.finalize()));
    }

    #[test]
    fn rejections() {
        let reject = |body: &[u8]| Record::from_body(body, None, Timestamp::now()).unwrap_err();
        assert_eq!(reject(b"not json").code(), "invalid_json");
        assert_eq!(reject(b"").code(), "invalid_json");
        assert_eq!(reject(b"[1,2]").code(), "invalid_json");
        assert_eq!(reject(b"\"chat_ended\"").code(), "invalid_json");
        assert_eq!(reject(b"{\"event\": 1}").code(), "missing_event");
        assert_eq!(reject(b"{\"event\": null}").code(), "missing_event");
        assert_eq!(reject(b"{}").code(), "missing_event");
        assert_eq!(reject(&[0xff, 0xfe]).code(), "invalid_json");
    }

    #[test]
    fn hostile_shapes_never_panic() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let deep_object = format!(
            "{{\"event\":\"chat_ended\",\"chat\":{}1{}}}",
            "{\"a\":".repeat(5000),
            "}".repeat(5000)
        );
        let bodies: Vec<Vec<u8>> = vec![
            deep.into_bytes(),
            deep_object.into_bytes(),
            br#"{"event":"chat_ended","chat":{"end_time":1e400}}"#.to_vec(),
            br#"{"event":"chat_ended","chat":{"end_time":-1e300,"start_time":"/Date(-99999999999999999)/"}}"#.to_vec(),
            b"{\"event\":\"chat\\u0000ended\",\"x\":\"\\u0000\"}".to_vec(),
            br#"{"event":"chat_ended","event":"chat_started"}"#.to_vec(),
            br#"{"event":"chat_ended","visitor":{"status":18446744073709551615,"chats":-1,"time_zone":"GMT +99:99"}}"#.to_vec(),
            br#"{"event":"chat_ended","chat":{"attachment":[1,{"name":null}],"operators":[null],"custom_variable":{"a":1}}}"#.to_vec(),
            br#"{"event":"online","operator_id":{"nested":[]}}"#.to_vec(),
            br#"{"event":"chat_wrapped_up","wrapup":{"fields":[{"id":[],"name":1}]}}"#.to_vec(),
        ];
        for body in bodies {
            if let Ok(r) = Record::from_body(&body, None, Timestamp::now()) {
                let out = serde_json::to_vec(&r).unwrap();
                serde_json::from_slice::<Value>(&out).unwrap();
            }
        }
    }

    #[test]
    fn site_labels() {
        assert!(Site::parse("eu-1.prod_a").is_some());
        assert!(Site::parse(&"a".repeat(64)).is_some());
        assert!(Site::parse(&"a".repeat(65)).is_none());
        assert!(Site::parse("").is_none());
        assert!(Site::parse("a/b").is_none());
        assert!(Site::parse("é").is_none());
    }

    /// The streaming reader agrees with reading a parsed `serde_json` map, whose semantics
    /// (duplicate keys: first position, last value) are the reference, for bodies with
    /// duplicate and unknown keys in any order at every level.
    /// Keys of the generated payloads: known ones, at every level, and others.
    const KEYS: &[&str] = &[
        "event",
        "visitor",
        "chat",
        "wrapup",
        "wrap_up",
        "offline_message",
        "chat_id",
        "operator_id",
        "id",
        "name",
        "status",
        "end_time",
        "custom_variable",
        "custom_variables",
        "custom_fields",
        "attachment",
        "fields",
        "uri",
        "zz",
        "extra",
    ];
    /// A JSON object of `entries`, in their order, duplicates kept.
    fn text(entries: &[(String, Value)]) -> String {
        let body: Vec<String> = entries
            .iter()
            .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), v))
            .collect();
        format!("{{{}}}", body.join(","))
    }

    #[test]
    fn streaming_reader_agrees_with_a_parsed_map() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};

        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
            "[a-z]{0,3}".prop_map(Value::String),
            Just(json!("/Date(1584416219000)/")),
        ];
        let key = proptest::sample::select(KEYS).prop_map(str::to_owned);
        let json = leaf.prop_recursive(3, 48, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                proptest::collection::vec((key.clone(), inner), 0..6)
                    .prop_map(|entries| serde_json::from_str(&text(&entries)).unwrap()),
            ]
        });
        let events = prop_oneof![Just("chat_ended"), Just("online"), Just("x")];
        let body = (
            events,
            proptest::collection::vec((proptest::sample::select(KEYS), json), 0..8),
        )
            .prop_map(|(event, entries)| {
                let mut all = vec![("event".to_owned(), json!(event))];
                all.extend(entries.into_iter().map(|(k, v)| (k.to_owned(), v)));
                text(&all)
            });
        let mut runner = TestRunner::new(Config {
            cases: 2000,
            ..Config::default()
        });
        runner
            .run(&body, |body| {
                let now = Timestamp::now();
                let streamed = Record::from_body(body.as_bytes(), None, now);
                let map: Map<String, Value> = serde_json::from_str(&body).unwrap();
                let meter = Meter::unlimited();
                let fields = Fields::new(shape::Object::from_map(&PAYLOAD, map), &meter);
                let reference = Record::normalize(fields, body.as_bytes(), None, now);
                match (streamed, reference) {
                    (Ok(mut a), Ok(b)) => {
                        a.id = b.id;
                        // Text, not `Value`: map equality ignores key order.
                        let text = |r: &Record| serde_json::to_string(r).unwrap();
                        prop_assert_eq!(text(&a), text(&b));
                    }
                    (a, b) => prop_assert_eq!(a.err(), b.err()),
                }
                Ok(())
            })
            .unwrap();
    }

    /// An offline message has no chat: `chat_id` is null, and a top-level one is kept in `extra`.
    #[test]
    fn an_offline_message_has_no_chat_id() {
        let r = record(json!({
            "event": "offline_message_submitted",
            "offline_message": {"id": "m-1"},
            "visitor": {"chat_id": "m-1"}
        }));
        assert_eq!(r.chat_id, None);
        assert_eq!(r.key(), Some("m-1"));
        assert_eq!(value(&r)["visitor"]["chat_id"], "m-1");
        let r = record(json!({
            "event": "offline_message_submitted",
            "chat_id": "c-9",
            "offline_message": {"id": "m-1"}
        }));
        assert_eq!(r.chat_id, None);
        assert_eq!(r.extra["chat_id"], "c-9");
    }

    /// A date that cannot be written is null in `occurred_at` too, so `ce_time` never carries it.
    #[test]
    fn an_unwritable_event_time_leaves_occurred_at_null() {
        let r = record(json!({
            "event": "chat_ended",
            "chat": {"id": "c", "end_time": "/Date(1584416219000000)/"}
        }));
        assert_eq!(r.occurred_at, None);
        assert_eq!(
            value(&r)["chat"]["extra"]["end_time"],
            "/Date(1584416219000000)/"
        );
    }
}
