//! The Confluent-compatible schema registry: `schemas register`, and the schema ids of
//! `kafka.value_format = "json_sr"`, which frame each record value.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::client::{self, message, JsonClient, Reply, SetupError};
use crate::config::{Config, SchemaRegistryConfig, ValueFormat};
use crate::event::EventType;
use crate::route::Router;

/// How long one registry request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The media type of the Confluent API.
const MEDIA_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Why the registry could not do what was asked; each says what to check.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("the schema registry URL `{0}` is not an http:// or https:// URL")]
    BadUrl(String),
    #[error("cannot set up TLS for the schema registry: {0} (check schema_registry.ca_location)")]
    Tls(String),
    #[error(
        "cannot reach the schema registry at {url}: {reason}; check the URL \
         (schema_registry.url or --registry) and that the registry is running"
    )]
    Unreachable { url: String, reason: String },
    #[error(
        "{url} is not a Confluent-compatible schema registry API ({detail}); give the API's \
         base URL, e.g. http://host:8081 for Confluent Schema Registry or \
         http://host:8080/apis/ccompat/v7 for Apicurio Registry"
    )]
    NotARegistry { url: String, detail: String },
    #[error(
        "the schema registry at {url} refused the request ({status}); check \
         schema_registry.username and schema_registry.password"
    )]
    Unauthorized { url: String, status: StatusCode },
    #[error(
        "subject {subject} at {url} has no version with the schema of this bridge's {kind} \
         records; register them first: comm100-bridge schemas register --registry {url} \
         (with this configuration, whose topic names the subjects take)"
    )]
    NotRegistered {
        subject: String,
        url: String,
        kind: EventType,
    },
    #[error(
        "the schema registry refuses the schemas of {} as incompatible with their latest \
         versions under the subjects' compatibility mode: nothing was registered. A record \
         format change that breaks that mode needs new topics (topics.prefix), or the mode \
         changed on purpose by whoever owns the consumers", .0.join(", ")
    )]
    Incompatible(Vec<String>),
    #[error("the schema registry at {url} answered {status} to {what}: {message}")]
    Refused {
        url: String,
        what: String,
        status: StatusCode,
        message: String,
    },
}

/// A compatibility mode of the Confluent API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compatibility {
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
    None,
}

impl Compatibility {
    /// Every mode, as the registry names them.
    pub const ALL: [(&'static str, Self); 7] = [
        ("BACKWARD", Self::Backward),
        ("BACKWARD_TRANSITIVE", Self::BackwardTransitive),
        ("FORWARD", Self::Forward),
        ("FORWARD_TRANSITIVE", Self::ForwardTransitive),
        ("FULL", Self::Full),
        ("FULL_TRANSITIVE", Self::FullTransitive),
        ("NONE", Self::None),
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map(|(name, _)| *name)
            .expect("every mode is named")
    }
}

impl std::str::FromStr for Compatibility {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s.trim()))
            .map(|(_, mode)| *mode)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|(name, _)| *name).collect();
                format!("`{s}` is not one of {}", names.join(", "))
            })
    }
}

impl fmt::Display for Compatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A schema as the registry knows it under a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    pub id: u32,
    pub version: u32,
}

/// A client of one registry's Confluent-compatible REST API.
pub struct Registry {
    url: String,
    client: JsonClient,
}

impl Registry {
    /// A client of the registry at `url` (else `schema_registry.url`), with the
    /// credentials and CA of `config`.
    pub fn new(config: &SchemaRegistryConfig, url: Option<&str>) -> Result<Self, RegistryError> {
        let url = url
            .or(config.url.as_deref())
            .ok_or_else(|| RegistryError::BadUrl(String::new()))?;
        let authorization = match (&config.username, &config.password) {
            (Some(user), Some(password)) => Some(client::basic(user, password.expose())),
            _ => None,
        };
        let client = JsonClient::new(
            url,
            config.ca_location.as_deref(),
            authorization,
            MEDIA_TYPE,
            REQUEST_TIMEOUT,
        )
        .map_err(|e| match e {
            SetupError::BadUrl(url) => RegistryError::BadUrl(url),
            SetupError::Tls(e) => RegistryError::Tls(e),
        })?;
        Ok(Self {
            url: client.base().to_owned(),
            client,
        })
    }

    /// The API's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Checks that the URL is a registry's API: `GET /subjects` lists subjects.
    pub async fn probe(&self) -> Result<Vec<String>, RegistryError> {
        let (status, body) = self
            .call(Method::GET, "/subjects", None, "listing subjects")
            .await?;
        match (status, serde_json::from_value::<Vec<String>>(body.clone())) {
            (StatusCode::OK, Ok(subjects)) => Ok(subjects),
            _ => Err(RegistryError::NotARegistry {
                url: self.url.clone(),
                detail: format!("GET /subjects answered {status}: {}", message(&body)),
            }),
        }
    }

    /// The id and version of `schema` under `subject`, if registered there.
    pub async fn lookup(
        &self,
        subject: &str,
        schema: &str,
    ) -> Result<Option<Registered>, RegistryError> {
        let what = format!("looking up the schema of {subject}");
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/subjects/{subject}"),
                Some(json_schema(schema)),
                &what,
            )
            .await?;
        match status {
            StatusCode::OK => registered(&body)
                .map(Some)
                .ok_or_else(|| self.odd(&what, status, &body)),
            StatusCode::NOT_FOUND if error_code(&body).is_some() => Ok(None),
            _ => Err(self.refused(what, status, &body)),
        }
    }

    /// Whether `schema` may be registered under `subject` by the subject's compatibility
    /// mode (always, when the subject has no version yet).
    pub async fn compatible(&self, subject: &str, schema: &str) -> Result<bool, RegistryError> {
        let what = format!("checking the compatibility of {subject}");
        let path = format!("/compatibility/subjects/{subject}/versions/latest");
        let (status, body) = self
            .call(Method::POST, &path, Some(json_schema(schema)), &what)
            .await?;
        match status {
            StatusCode::OK => body
                .get("is_compatible")
                .and_then(Value::as_bool)
                .ok_or_else(|| self.odd(&what, status, &body)),
            StatusCode::NOT_FOUND if error_code(&body).is_some() => Ok(true),
            _ => Err(self.refused(what, status, &body)),
        }
    }

    /// Registers `schema` under `subject` (the registry keeps an identical one) and
    /// returns its id and version.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<Registered, RegistryError> {
        let what = format!("registering {subject}");
        let path = format!("/subjects/{subject}/versions");
        let (status, body) = self
            .call(Method::POST, &path, Some(json_schema(schema)), &what)
            .await?;
        if status == StatusCode::CONFLICT {
            return Err(RegistryError::Incompatible(vec![subject.to_owned()]));
        }
        if status != StatusCode::OK {
            return Err(self.refused(what, status, &body));
        }
        self.lookup(subject, schema)
            .await?
            .ok_or_else(|| self.odd(&what, status, &body))
    }

    /// Sets the compatibility mode of `subject`.
    pub async fn set_compatibility(
        &self,
        subject: &str,
        mode: Compatibility,
    ) -> Result<(), RegistryError> {
        let what = format!("setting the compatibility of {subject}");
        let body = json!({ "compatibility": mode.as_str() });
        let (status, answer) = self
            .call(
                Method::PUT,
                &format!("/config/{subject}"),
                Some(body),
                &what,
            )
            .await?;
        match status {
            StatusCode::OK => Ok(()),
            _ => Err(self.refused(what, status, &answer)),
        }
    }

    /// The compatibility mode in force for `subject`: its own, else the registry's.
    pub async fn compatibility(&self, subject: &str) -> Result<String, RegistryError> {
        let what = format!("reading the compatibility of {subject}");
        let path = format!("/config/{subject}?defaultToGlobal=true");
        let (status, body) = self.call(Method::GET, &path, None, &what).await?;
        let level = body
            .get("compatibilityLevel")
            .or_else(|| body.get("compatibility"))
            .and_then(Value::as_str);
        match (status, level) {
            (StatusCode::OK, Some(level)) => Ok(level.to_owned()),
            _ => Err(self.refused(what, status, &body)),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        what: &str,
    ) -> Result<(StatusCode, Value), RegistryError> {
        let Reply { status, body, .. } = self
            .client
            .call(method, path, body.as_ref())
            .await
            .map_err(|reason| RegistryError::Unreachable {
                url: self.url.clone(),
                reason: format!("{what}: {reason}"),
            })?;
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(RegistryError::Unauthorized {
                url: self.url.clone(),
                status,
            });
        }
        Ok((status, body))
    }

    fn refused(&self, what: String, status: StatusCode, body: &Value) -> RegistryError {
        if status == StatusCode::NOT_FOUND {
            return RegistryError::NotARegistry {
                url: self.url.clone(),
                detail: format!("{what} answered {status}: {}", message(body)),
            };
        }
        RegistryError::Refused {
            url: self.url.clone(),
            what,
            status,
            message: message(body),
        }
    }

    fn odd(&self, what: &str, status: StatusCode, body: &Value) -> RegistryError {
        RegistryError::NotARegistry {
            url: self.url.clone(),
            detail: format!("{what} answered {status} with {}", message(body)),
        }
    }
}

/// The request body that carries a JSON Schema.
fn json_schema(schema: &str) -> Value {
    json!({ "schemaType": "JSON", "schema": schema })
}

fn registered(body: &Value) -> Option<Registered> {
    let number = |key| body.get(key)?.as_u64()?.try_into().ok();
    Some(Registered {
        id: number("id")?,
        version: number("version")?,
    })
}

fn error_code(body: &Value) -> Option<i64> {
    body.get("error_code")?.as_i64()
}

/// The subject of the values of `topic` (Confluent's TopicNameStrategy).
pub fn subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// What became of one record type's schema in `schemas register`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub subject: String,
    pub registered: Registered,
    /// False when the registry held this schema under the subject already.
    pub new: bool,
}

/// Registers the schema of every record type of `router` as `<topic>-value`, after
/// setting each subject's mode to `mode` when given. Every subject is checked first:
/// when one would be refused as incompatible, none is registered.
pub async fn register_all(
    registry: &Registry,
    router: &Router,
    mode: Option<Compatibility>,
) -> Result<Vec<Outcome>, RegistryError> {
    registry.probe().await?;
    let mut pending = Vec::new();
    let mut outcomes = Vec::new();
    let mut incompatible = Vec::new();
    for kind in EventType::ALL {
        let subject = subject(router.topic(kind));
        let schema = router.schema_text(kind);
        match registry.lookup(&subject, &schema).await? {
            Some(registered) => outcomes.push(Outcome {
                subject,
                registered,
                new: false,
            }),
            None if registry.compatible(&subject, &schema).await? => {
                pending.push((subject, schema))
            }
            None => incompatible.push(subject),
        }
    }
    if !incompatible.is_empty() {
        return Err(RegistryError::Incompatible(incompatible));
    }
    if let Some(mode) = mode {
        for kind in EventType::ALL {
            registry
                .set_compatibility(&subject(router.topic(kind)), mode)
                .await?;
        }
    }
    for (subject, schema) in pending {
        let registered = registry.register(&subject, &schema).await?;
        outcomes.push(Outcome {
            subject,
            registered,
            new: true,
        });
    }
    Ok(outcomes)
}

/// How the producer writes record values: as they are, or framed with the schema id of
/// their topic (`kafka.value_format = "json_sr"`).
#[derive(Debug, Clone, Default)]
pub struct Framing {
    /// Each record topic with the id of its subject's schema; empty for plain JSON.
    ids: Arc<Vec<(String, u32)>>,
}

impl Framing {
    /// Values as they are.
    pub fn plain() -> Self {
        Self::default()
    }

    /// The framing `config` asks for: for `json_sr`, the id of each record type's schema
    /// looked up once in the registry; an unreachable registry or a schema not registered
    /// is an error, never plain values.
    pub async fn from_config(config: &Config) -> Result<Self, RegistryError> {
        if config.kafka.value_format == ValueFormat::Json {
            return Ok(Self::plain());
        }
        let registry = Registry::new(&config.schema_registry, None)?;
        let router = Router::new(&config.topics);
        let mut ids = Vec::new();
        for kind in EventType::ALL {
            let topic = router.topic(kind);
            let subject = subject(topic);
            let registered = registry
                .lookup(&subject, &router.schema_text(kind))
                .await?
                .ok_or_else(|| RegistryError::NotRegistered {
                    subject,
                    url: registry.url().to_owned(),
                    kind,
                })?;
            ids.push((topic.to_owned(), registered.id));
        }
        Ok(Self { ids: Arc::new(ids) })
    }

    /// Framing with these ids, for tests.
    pub fn with_ids(ids: Vec<(String, u32)>) -> Self {
        Self { ids: Arc::new(ids) }
    }

    /// Whether values are framed.
    pub fn is_framed(&self) -> bool {
        !self.ids.is_empty()
    }

    /// The schema id of `topic`'s values, when they are framed.
    fn id(&self, topic: &str) -> Option<u32> {
        self.ids.iter().find(|(t, _)| t == topic).map(|(_, id)| *id)
    }

    /// The bytes framing adds to a value of `topic`.
    pub fn overhead(&self, topic: &str) -> usize {
        self.id(topic).map_or(0, |_| FRAME_HEADER)
    }

    /// `value` as published to `topic`: framed when the topic is a record topic of a
    /// framing configuration, else as it is (the dead-letter topic keeps plain JSON). A
    /// value framed already (its first byte is 0, which JSON text never is) stays as it is.
    pub fn frame<'a>(&self, topic: &str, value: &'a [u8]) -> Cow<'a, [u8]> {
        match self.id(topic) {
            Some(id) if value.first() != Some(&0) => {
                let mut framed = Vec::with_capacity(FRAME_HEADER + value.len());
                framed.push(0);
                framed.extend_from_slice(&id.to_be_bytes());
                framed.extend_from_slice(value);
                Cow::Owned(framed)
            }
            _ => Cow::Borrowed(value),
        }
    }
}

/// The magic byte and the 4-byte schema id before a framed value.
const FRAME_HEADER: usize = 5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framed_value_is_byte_zero_the_big_endian_id_and_the_json() {
        let framing = Framing::with_ids(vec![("comm100.chat_ended".into(), 0x0102_0304)]);
        assert_eq!(
            framing.frame("comm100.chat_ended", b"{}").as_ref(),
            b"\x00\x01\x02\x03\x04{}"
        );
        assert_eq!(framing.frame("comm100.dlq", b"{}").as_ref(), b"{}");
        let framed = framing.frame("comm100.chat_ended", b"{}").into_owned();
        assert_eq!(
            framing.frame("comm100.chat_ended", &framed).as_ref(),
            framed
        );
        assert_eq!(framing.overhead("comm100.chat_ended"), 5);
        assert_eq!(framing.overhead("comm100.dlq"), 0);
        assert_eq!(
            Framing::plain().frame("comm100.chat_ended", b"{}").as_ref(),
            b"{}"
        );
    }

    #[test]
    fn compatibility_modes_parse_by_the_registrys_names() {
        for (name, mode) in Compatibility::ALL {
            assert_eq!(name.parse::<Compatibility>(), Ok(mode));
            assert_eq!(name.to_lowercase().parse::<Compatibility>(), Ok(mode));
        }
        let err = "SIDEWAYS".parse::<Compatibility>().unwrap_err();
        assert!(err.contains("BACKWARD_TRANSITIVE"), "{err}");
    }

    #[test]
    fn a_url_that_is_not_http_is_refused() {
        let config = SchemaRegistryConfig::default();
        for url in ["registry:8081", "ftp://registry", "http://exa mple"] {
            assert!(
                matches!(
                    Registry::new(&config, Some(url)),
                    Err(RegistryError::BadUrl(_))
                ),
                "{url}"
            );
        }
        assert!(Registry::new(&config, Some("https://registry.example/apis/ccompat/v7/")).is_ok());
    }
}
