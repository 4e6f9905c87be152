//! The JSON Schema of a record, generated from the declarations of its fields: each field's
//! doc comment is its description and each field's Rust type gives the rest, so the schema
//! cannot drift from what the normalizer writes.

use std::borrow::Cow;

use serde_json::{json, Map, Value};

use super::fields::VisitorStatus;
use super::objects::{Agent, AgentStatus};
use super::time::Timestamp;
use super::{EventType, Record, SCHEMA_VERSION};

/// The `$defs` of a schema: one entry per object type, referred to by `$ref`.
#[derive(Debug, Default)]
pub struct Defs(Map<String, Value>);

impl Defs {
    /// A `$ref` to the definition `name`, built by `define` the first time it is needed.
    pub(crate) fn refer(&mut self, name: &str, define: impl FnOnce(&mut Self) -> Value) -> Value {
        if !self.0.contains_key(name) {
            let definition = define(self);
            self.0.insert(name.to_owned(), definition);
        }
        json!({ "$ref": format!("#/$defs/{name}") })
    }
}

/// A type that appears in records, with the JSON Schema its values follow.
pub trait Describe {
    /// The schema of one value; an object type adds its definition to `defs` and answers a
    /// `$ref` to it.
    fn describe(defs: &mut Defs) -> Value;
}

/// What each object's `extra` holds.
const EXTRA: &str = "Keys of this object the bridge does not know, and values of known keys \
                     that had an unexpected JSON type, exactly as received. Present only when \
                     non-empty.";

/// The snake_case name of a definition, from its type's name: `OfflineMessage` →
/// `offline_message`.
pub(crate) fn def_name(type_name: &str) -> String {
    let mut name = String::with_capacity(type_name.len() + 4);
    for (i, c) in type_name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_lowercase());
    }
    name
}

/// A description from the lines of a doc comment.
pub(crate) fn doc(lines: &[&str]) -> String {
    lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `schema` with `description` first; a description the schema already has (that of its
/// type) follows the field's.
pub(crate) fn described(description: &str, schema: Value) -> Value {
    let Value::Object(schema) = schema else {
        return schema;
    };
    let mut out = Map::new();
    let own = schema.get("description").and_then(Value::as_str);
    let text = match own {
        Some(own) if !description.is_empty() => format!("{description} {own}"),
        Some(own) => own.to_owned(),
        None => description.to_owned(),
    };
    if !text.is_empty() {
        out.insert("description".into(), text.into());
    }
    out.extend(schema.into_iter().filter(|(k, _)| k != "description"));
    Value::Object(out)
}

/// The schema of a closed object: every listed property required; `extra` allowed when
/// `extra` is set.
pub(crate) fn object(
    description: &str,
    properties: Vec<(&str, String, Value)>,
    extra: bool,
    defs: &mut Defs,
) -> Value {
    let required: Vec<&str> = properties.iter().map(|(name, _, _)| *name).collect();
    let mut props: Map<String, Value> = properties
        .into_iter()
        .map(|(name, doc, schema)| (name.to_owned(), described(&doc, schema)))
        .collect();
    if extra {
        let extra = defs.refer(
            "extra",
            |_| json!({ "description": EXTRA, "type": "object", "minProperties": 1 }),
        );
        props.insert("extra".into(), extra);
    }
    json!({
        "description": description,
        "type": "object",
        "additionalProperties": false,
        "required": required,
        "properties": props,
    })
}

/// What a normalizer rule promises beyond its field's type.
pub(crate) fn refine(rule: &str, mut schema: Value) -> Value {
    if rule == "transcript" {
        schema["items"]["pattern"] = "\\S".into();
    }
    schema
}

/// `schema` or null.
fn nullable(schema: Value) -> Value {
    match schema {
        Value::Object(mut map) if map.contains_key("type") => {
            let kind = map.remove("type").unwrap_or_default();
            let mut kinds = match kind {
                Value::Array(kinds) => kinds,
                one => vec![one],
            };
            kinds.push("null".into());
            let mut out = Map::new();
            if let Some(d) = map.remove("description") {
                out.insert("description".into(), d);
            }
            out.insert("type".into(), kinds.into());
            out.extend(map);
            Value::Object(out)
        }
        other => json!({ "anyOf": [other, { "type": "null" }] }),
    }
}

impl<T: Describe> Describe for Option<T> {
    fn describe(defs: &mut Defs) -> Value {
        nullable(T::describe(defs))
    }
}

impl<T: Describe> Describe for Vec<T> {
    fn describe(defs: &mut Defs) -> Value {
        json!({ "type": "array", "items": T::describe(defs) })
    }
}

impl Describe for Cow<'_, str> {
    fn describe(_: &mut Defs) -> Value {
        json!({ "type": "string" })
    }
}

impl Describe for u64 {
    fn describe(_: &mut Defs) -> Value {
        json!({ "type": "integer", "minimum": 0 })
    }
}

impl Describe for i32 {
    fn describe(_: &mut Defs) -> Value {
        json!({ "type": "integer" })
    }
}

impl Describe for Timestamp {
    fn describe(_: &mut Defs) -> Value {
        json!({
            "description": "RFC 3339 UTC with milliseconds.",
            "type": "string",
            "format": "date-time",
            "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
        })
    }
}

impl Describe for VisitorStatus {
    fn describe(defs: &mut Defs) -> Value {
        let names: Vec<&str> = VisitorStatus::NAMES
            .iter()
            .copied()
            .chain([VisitorStatus::UNKNOWN])
            .collect();
        let properties = vec![
            (
                "code",
                "Comm100 status code.".to_owned(),
                json!({ "type": "integer" }),
            ),
            (
                "name",
                "Name of the code; `unknown` for codes Comm100 does not document.".to_owned(),
                json!({ "enum": names }),
            ),
        ];
        let mut schema = object("", properties, false, defs);
        schema.as_object_mut().map(|m| m.remove("description"));
        schema
    }
}

impl Describe for AgentStatus {
    fn describe(_: &mut Defs) -> Value {
        json!({ "enum": AgentStatus::ALL.map(AgentStatus::as_str) })
    }
}

impl Describe for Agent<'_> {
    fn describe(defs: &mut Defs) -> Value {
        defs.refer("agent", |defs| {
            let properties = vec![
                (
                    "operator_id",
                    "Agent id: a decimal integer on classic platforms, a GUID on Comm100 X2."
                        .to_owned(),
                    Option::<Cow<str>>::describe(defs),
                ),
                (
                    "status",
                    "The new status, which Comm100 sends as the `event` value.".to_owned(),
                    AgentStatus::describe(defs),
                ),
            ];
            object("The agent whose status changed.", properties, false, defs)
        })
    }
}

impl EventType {
    /// What its Kafka key is, for people reading its schema.
    pub fn key_summary(self) -> &'static str {
        match self {
            Self::OfflineMessageSubmitted => "Key: `offline_message.id`.",
            Self::AgentStatusChanged => "Key: `agent.operator_id`.",
            Self::Unknown => "No key.",
            _ => "Key: the chat id.",
        }
    }

    /// What an event of this type means, for people reading its schema.
    pub fn summary(self) -> &'static str {
        match self {
            Self::OfflineMessageSubmitted => {
                "Offline Message Submitted: a visitor left a message while no agent was available."
            }
            Self::ChatStarted => "Chat Started: an agent accepted the chat.",
            Self::ChatEnded => "Chat Ended: the chat is over; carries the transcript.",
            Self::ChatWrappedUp => "Chat Wrapped-Up: an agent saved the wrap-up form.",
            Self::AgentStatusChanged => {
                "Agent Status Changed: an agent went online, away, logged in or out."
            }
            Self::ChatRequested => "Chat Requested: a visitor asked for a chat and is queued.",
            Self::ChatTransferred => {
                "Chat Transferred: the chat moved to another agent or department."
            }
            Self::Unknown => {
                "An event value the bridge does not know; every key of the payload is kept \
                 (known objects normalized, the rest under `extra`)."
            }
        }
    }
}

impl Record<'_> {
    /// The JSON Schema (draft-07) of the value of a record of type `kind`, without
    /// `$schema`, `$id` and `title`, which name where it is published.
    pub fn schema(kind: EventType) -> Value {
        let mut defs = Defs::default();
        let d = &mut defs;
        let properties = Self::properties(kind, d);
        let mut schema = object("", properties, true, d);
        // Every schema defines every object, the agent's too.
        Agent::describe(d);
        if let Some(map) = schema.as_object_mut() {
            map.remove("description");
            map.insert("$defs".into(), Value::Object(defs.0));
        }
        schema
    }

    /// The `event` property's description: the values of type `kind`.
    fn event_description(kind: EventType) -> String {
        let names = EventType::names(kind);
        match names.is_empty() {
            true => "The payload's `event` value exactly as received.".to_owned(),
            false => format!(
                "The payload's `event` value exactly as received. Matches, case-insensitively \
                 after trimming, one of: {}.",
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// The `chat_id` and `agent` properties, which depend on the type.
    fn per_type(kind: EventType, d: &mut Defs) -> ((&'static str, Value), (&'static str, Value)) {
        let chat_id = match kind {
            EventType::OfflineMessageSubmitted => (
                "Always null: an offline message has no chat. Its id is `offline_message.id`, \
                 the record's key.",
                json!({ "type": "null" }),
            ),
            _ => (
                "The chat id: the first present of `chat_id`, `chat.id`, `visitor.chat_id`.",
                Option::<Cow<str>>::describe(d),
            ),
        };
        let agent = match kind {
            EventType::AgentStatusChanged => ("", Agent::describe(d)),
            _ => (
                "Only in agent_status_changed records.",
                json!({ "type": "null" }),
            ),
        };
        (chat_id, agent)
    }

    /// The properties of a record of type `kind`, in order, each with its description.
    fn properties(kind: EventType, d: &mut Defs) -> Vec<(&'static str, String, Value)> {
        let (chat_id, agent) = Self::per_type(kind, d);
        let when = |what: &str| format!("The {what}, when the payload has one.");
        vec![
            (
                "schema_version",
                "Version of this record format.".to_owned(),
                json!({ "const": SCHEMA_VERSION }),
            ),
            (
                "id",
                "Unique per accepted request (UUID v7) and unchanged through the bridge's \
                 retries and spool replays: drop duplicates by it. Also the `ce_id` header."
                    .to_owned(),
                json!({ "type": "string", "format": "uuid" }),
            ),
            (
                "fingerprint",
                "Hex SHA-256 of the site label and the raw body: equal for byte-identical \
                 redeliveries (a sender's retry). Not unique on its own."
                    .to_owned(),
                json!({ "type": "string", "pattern": "^[0-9a-f]{64}$" }),
            ),
            (
                "type",
                "The record type; selects the topic.".to_owned(),
                json!({ "const": kind.as_str() }),
            ),
            (
                "event",
                Self::event_description(kind),
                json!({ "type": "string" }),
            ),
            (
                "origin",
                "Where the record comes from: `webhook` (Comm100 posted the event to the \
                 bridge) or `backfill` (made from Comm100's API by `comm100-bridge backfill` \
                 for an event no webhook delivered)."
                    .to_owned(),
                json!({ "enum": ["webhook", "backfill"] }),
            ),
            (
                "site",
                "Site label from /webhooks/comm100/{site}, or null.".to_owned(),
                json!({ "type": ["string", "null"], "pattern": "^[A-Za-z0-9_.-]{1,64}$" }),
            ),
            (
                "received_at",
                "When the bridge received the request.".to_owned(),
                Timestamp::describe(d),
            ),
            (
                "occurred_at",
                "The event's own time where the payload has one (`offline_message.time`, \
                 `wrapup.time`, `chat.end_time` for chat_ended); else null."
                    .to_owned(),
                Option::<Timestamp>::describe(d),
            ),
            ("chat_id", chat_id.0.to_owned(), chat_id.1),
            (
                "visitor",
                when("visitor"),
                Option::<super::Visitor>::describe(d),
            ),
            ("chat", when("chat"), Option::<super::Chat>::describe(d)),
            (
                "offline_message",
                when("offline message"),
                Option::<super::OfflineMessage>::describe(d),
            ),
            (
                "wrapup",
                when("wrap-up form (payload `wrapup`)"),
                Option::<super::Wrapup>::describe(d),
            ),
            ("agent", agent.0.to_owned(), agent.1),
        ]
    }
}
