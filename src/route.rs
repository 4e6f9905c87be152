//! Routing: a [`Record`] becomes a Kafka message — topic, key, CloudEvents headers, value.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::config::{invalid, Config, ConfigError, TopicsConfig};
use crate::event::{EventType, Meter, Record, RejectError, Site, Timestamp};

/// Room to keep in `message.max.bytes` for the record of a body of `body` bytes: the
/// normalized record runs up to an eighth larger than its body (dates written out, ids as
/// strings), plus 16 KiB for the envelope fields, the key and the headers.
pub fn record_room(body: usize) -> usize {
    body.saturating_add(body / 8).saturating_add(16 << 10)
}

/// Checks that the record of the largest body `config` accepts fits the producer's
/// `message.max.bytes`.
pub fn check_record_room(config: &Config) -> Result<(), ConfigError> {
    let needed = record_room(config.http.max_body_bytes);
    if needed > config.kafka.message_max_bytes() {
        return Err(invalid(
            "http.max_body_bytes",
            format!(
                "a body of {} bytes makes a record of up to {needed} bytes, over \
                     kafka.properties.message.max.bytes ({}), so large bodies would be \
                     dead-lettered instead of published: lower http.max_body_bytes, or raise \
                     message.max.bytes together with the topics' max.message.bytes",
                config.http.max_body_bytes,
                config.kafka.message_max_bytes()
            ),
        ));
    }
    Ok(())
}

/// `ce_source` of records without a site label.
pub const CE_SOURCE: &str = "/comm100/livechat";
/// Prefix of `ce_type`; the record type follows.
pub const CE_TYPE_PREFIX: &str = "com.comm100.livechat.";

/// Topic names per record type, resolved once from the configuration.
#[derive(Debug, Clone)]
pub struct Router {
    topics: Vec<String>,
}

/// A Kafka header: name and value, static where the value is a constant.
pub type Header = (Cow<'static, str>, Cow<'static, str>);

/// A record ready to publish; also what the spool stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub topic: String,
    pub key: Option<String>,
    pub headers: Vec<Header>,
    /// The record, JSON text.
    #[serde(serialize_with = "value_as_text", deserialize_with = "value_from_text")]
    pub value: Vec<u8>,
}

fn value_as_text<S: Serializer>(value: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    let text = std::str::from_utf8(value).map_err(serde::ser::Error::custom)?;
    serializer.serialize_str(text)
}

fn value_from_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    String::deserialize(deserializer).map(String::into_bytes)
}

impl Router {
    pub fn new(topics: &TopicsConfig) -> Self {
        Self {
            topics: EventType::ALL
                .iter()
                .map(|k| topics.topic(k.as_str()))
                .collect(),
        }
    }

    /// The topic of records of type `kind`.
    pub fn topic(&self, kind: EventType) -> &str {
        &self.topics[kind.index()]
    }

    /// Every topic the bridge publishes to.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// Parses, normalizes and routes one body, counting on `meter` all it takes: the record
    /// twice (the bridge's copy and the producer's, which outlive the parse) and the parse
    /// tree beside them.
    pub fn route_body(
        &self,
        body: &[u8],
        site: Option<Site>,
        received_at: Timestamp,
        meter: &Meter,
    ) -> Result<Message, RejectError> {
        let room = 2 * record_room(body.len());
        meter.charge(room).map_err(RejectError::Memory)?;
        let record = Record::from_body_metered(body, site, received_at, meter)?;
        let message = self.route(&record);
        let more = (2 * message.value.capacity()).saturating_sub(room);
        meter.charge(more).map_err(RejectError::Memory)?;
        Ok(message)
    }

    /// Serializes `record` and attaches its topic, key and headers.
    pub fn route(&self, record: &Record) -> Message {
        let source = match &record.site {
            Some(site) => Cow::Owned(format!("{CE_SOURCE}/{}", site.as_str())),
            None => Cow::Borrowed(CE_SOURCE),
        };
        let time = record.occurred_at.unwrap_or(record.received_at);
        let headers = [
            ("ce_specversion", Cow::Borrowed("1.0")),
            ("ce_id", Cow::Owned(record.id.to_string())),
            ("ce_type", Cow::Borrowed(ce_type(record.kind))),
            ("ce_source", source),
            ("ce_time", Cow::Owned(time.to_string())),
            ("content-type", Cow::Borrowed("application/json")),
        ]
        .map(|(k, v)| (Cow::Borrowed(k), v))
        .into();
        Message {
            id: record.id,
            kind: record.kind,
            topic: self.topic(record.kind).to_owned(),
            key: record.key().map(str::to_owned),
            headers,
            value: serialize(record),
        }
    }
}

impl Router {
    /// The JSON Schema document of the records of type `kind`, as `schemas write` writes it
    /// to `<type>.schema.json`: the record's schema with where and how it is published.
    pub fn schema(&self, kind: EventType) -> Value {
        let mut document = Map::new();
        let mut put = |k: &str, v: Value| document.insert(k.to_owned(), v);
        put("$schema", "http://json-schema.org/draft-07/schema#".into());
        put("$id", format!("{SCHEMA_ID_BASE}{kind}.schema.json").into());
        put("title", format!("comm100-bridge {kind} record").into());
        put(
            "description",
            format!(
                "{} {} Published as JSON on the topic `{}` (configurable) with CloudEvents \
                 headers ce_specversion, ce_id, ce_type={}, ce_source, ce_time and content-type, and a W3C traceparent.",
                kind.summary(),
                kind.key_summary(),
                self.topic(kind),
                ce_type(kind),
            )
            .into(),
        );
        if let Value::Object(schema) = Record::schema(kind) {
            document.extend(schema);
        }
        Value::Object(document)
    }

    /// [`Router::schema`] as the text of its file: indented JSON and a final newline.
    pub fn schema_text(&self, kind: EventType) -> String {
        let mut text =
            serde_json::to_string_pretty(&self.schema(kind)).expect("a JSON value serializes");
        text.push('\n');
        text
    }
}

/// Where the schemas' `$id`s live; the file name follows.
const SCHEMA_ID_BASE: &str = "https://comm100-bridge.dev/schemas/";

/// `ce_type` of records of type `kind`: [`CE_TYPE_PREFIX`] and the type.
fn ce_type(kind: EventType) -> &'static str {
    match kind {
        EventType::OfflineMessageSubmitted => "com.comm100.livechat.offline_message_submitted",
        EventType::ChatStarted => "com.comm100.livechat.chat_started",
        EventType::ChatEnded => "com.comm100.livechat.chat_ended",
        EventType::ChatWrappedUp => "com.comm100.livechat.chat_wrapped_up",
        EventType::AgentStatusChanged => "com.comm100.livechat.agent_status_changed",
        EventType::ChatRequested => "com.comm100.livechat.chat_requested",
        EventType::ChatTransferred => "com.comm100.livechat.chat_transferred",
        EventType::Unknown => "com.comm100.livechat.unknown",
    }
}

/// The record as JSON text, byte for byte what `serde_json` writes (a property test holds
/// the two to it); sonic-rs escapes strings a block at a time rather than a byte at a time.
fn serialize(record: &Record) -> Vec<u8> {
    // Records of the samples serialize to 300–3,000 bytes; start past the usual size.
    let mut value = Vec::with_capacity(4096);
    // Serializing a tree of strings, numbers and maps with string keys cannot fail.
    sonic_rs::to_writer(&mut value, record).expect("a record always serializes");
    value
}

impl Message {
    /// `{"topic","key","headers","value"}`, as `comm100-bridge normalize` prints it.
    pub fn to_json(&self) -> Value {
        let headers: Map<String, Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        let value: Value = serde_json::from_slice(&self.value).unwrap_or(Value::Null);
        json!({ "topic": self.topic, "key": self.key, "headers": headers, "value": value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{env, file, load_then};

    /// Loads the settings, then checks that the largest body's record fits.
    fn checked(
        file: Option<&std::path::Path>,
        env: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Config, ConfigError> {
        load_then(file, env, check_record_room)
    }

    #[test]
    fn a_body_limit_whose_records_would_not_fit_is_refused() {
        let c = checked(None, env(&[])).unwrap();
        assert!(record_room(c.http.max_body_bytes) <= c.kafka.message_max_bytes());
        let err = checked(
            None,
            env(&[("COMM100_BRIDGE__HTTP__MAX_BODY_BYTES", "1048576")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("http.max_body_bytes") && err.contains("message.max.bytes"),
            "{err}"
        );
        // Raising message.max.bytes makes room.
        let f = file("[http]\nmax_body_bytes = 1048576\n[kafka.properties]\n\"message.max.bytes\" = \"1200000\"\n");
        let c = checked(Some(f.path()), env(&[])).unwrap();
        assert_eq!(c.kafka.message_max_bytes(), 1_200_000);
        let f = file("[kafka.properties]\n\"message.max.bytes\" = \"lots\"\n");
        let err = checked(Some(f.path()), env(&[])).unwrap_err().to_string();
        assert!(err.contains("kafka.properties.message.max.bytes"), "{err}");
    }

    #[test]
    fn every_record_type_has_its_key_in_the_topics_table() {
        assert_eq!(EventType::ALL.map(EventType::as_str), TopicsConfig::TYPES);
    }

    #[test]
    fn ce_type_is_the_prefix_and_the_type() {
        for kind in EventType::ALL {
            assert_eq!(ce_type(kind), format!("{CE_TYPE_PREFIX}{kind}"));
        }
    }
}
