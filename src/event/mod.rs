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

/// The normalized type of an event, which selects its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
mod tests;
