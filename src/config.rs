//! Configuration: built-in defaults (`config/default.toml`) → `--config FILE` →
//! environment `COMM100_BRIDGE__<SECTION>__<KEY>`; a librdkafka property is
//! `COMM100_BRIDGE__KAFKA__PROPERTIES__<NAME>` with `.` written as `_`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Environment, File, FileFormat};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The built-in defaults: the documented default file, compiled in.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// The prefix of every configuration variable.
pub const ENV_PREFIX: &str = "COMM100_BRIDGE__";

/// The prefix of librdkafka property variables.
pub const ENV_PROPERTY_PREFIX: &str = "COMM100_BRIDGE__KAFKA__PROPERTIES__";

/// The prefix of the variables of `topics.config` (Kafka topic configurations, named with
/// dots: `..._MIN_INSYNC_REPLICAS` is `min.insync.replicas`).
pub const ENV_TOPIC_CONFIG_PREFIX: &str = "COMM100_BRIDGE__TOPICS__CONFIG__";

/// librdkafka properties whose names hold `_` (read back from the environment as written).
const UNDERSCORED_PROPERTIES: [&str; 1] = ["log_level"];

/// The librdkafka property a `COMM100_BRIDGE__KAFKA__PROPERTIES__<NAME>` variable sets:
/// `<NAME>` lower-cased with `_` read as `.`, except a trailing `_FILE` (the file form) and
/// the few properties named with `_`. A name written with dots is taken as it is.
pub fn property_from_env(name: &str) -> String {
    let name = name.to_ascii_lowercase();
    let (stem, file) = match name.strip_suffix("_file") {
        Some(stem) => (stem, "_file"),
        None => (name.as_str(), ""),
    };
    let stem = if UNDERSCORED_PROPERTIES.contains(&stem) {
        stem.to_owned()
    } else {
        stem.replace('_', ".")
    };
    stem + file
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The message says it all: it is not also the error's source, or `{:#}` (anyhow's
    /// chain) would print it twice.
    #[error("cannot load configuration: {0}")]
    Load(config::ConfigError),
    #[error("invalid configuration key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl From<config::ConfigError> for ConfigError {
    fn from(error: config::ConfigError) -> Self {
        Self::Load(error)
    }
}

/// A [`ConfigError::Invalid`] of `key`.
pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub admin: AdminConfig,
    pub auth: AuthConfig,
    pub kafka: KafkaConfig,
    pub delivery: DeliveryConfig,
    pub topics: TopicsConfig,
    pub spool: SpoolConfig,
    pub dlq: DlqConfig,
    #[serde(default)]
    pub schema_registry: SchemaRegistryConfig,
    #[serde(default)]
    pub comm100: Comm100Config,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub header_read_timeout_ms: u64,
    pub body_read_timeout_ms: u64,
    pub keep_alive_timeout_ms: u64,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_inflight_requests: usize,
    pub max_inflight_bytes: usize,
    pub max_inflight_requests_per_client: usize,
    pub max_inflight_bytes_per_client: usize,
    pub shutdown_delay_ms: u64,
    pub http2: bool,
    pub max_connections_per_client: usize,
    pub expose_admin_routes: bool,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// `[admin]`: the listener of `/healthz`, `/readyz` and `/metrics`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `None` (`""` in the file): no admin listener; the webhook listener answers the
    /// admin routes.
    #[serde(
        deserialize_with = "optional_address",
        serialize_with = "optional_address_text"
    )]
    pub listen: Option<SocketAddr>,
    pub max_connections: usize,
}

/// An address, or `""` for none.
fn optional_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    match text.trim() {
        "" => Ok(None),
        addr => addr
            .parse()
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("`{addr}`: {e} (host:port, or \"\")"))),
    }
}

fn optional_address_text<S: Serializer>(
    addr: &Option<SocketAddr>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&addr.map(|a| a.to_string()).unwrap_or_default())
}

/// `[http.tls]`: serve HTTPS with this certificate chain and key (PEM).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(deserialize_with = "list")]
    pub tokens: Vec<Secret>,
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
    pub allow_unauthenticated: bool,
    #[serde(deserialize_with = "list")]
    pub allowed_cidrs: Vec<IpNet>,
    #[serde(deserialize_with = "list")]
    pub trusted_proxies: Vec<IpNet>,
    #[serde(default)]
    pub forwarded_header: ForwardedHeader,
    #[serde(default)]
    pub site_tokens: BTreeMap<String, SiteTokens>,
    /// Per site label, a file of more tokens for that site, one per line.
    #[serde(default)]
    pub site_tokens_files: BTreeMap<String, PathBuf>,
}

/// Tokens read from `auth.tokens_file` and `auth.site_tokens_files`.
#[derive(Debug, Default)]
pub struct FileTokens {
    pub global: Vec<Secret>,
    pub sites: BTreeMap<String, Vec<Secret>>,
}

impl AuthConfig {
    /// Reads the token files now (they are read again on SIGHUP): tokens separated by line
    /// breaks or commas (the form of `auth.tokens` in the environment), blanks ignored.
    pub fn read_token_files(&self) -> Result<FileTokens, ConfigError> {
        let read = |key: String, path: &Path| -> Result<Vec<Secret>, ConfigError> {
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid(&key, format!("cannot read {}: {e}", path.display())))?;
            Ok(text
                .split(['\n', ','])
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(Secret::new)
                .collect())
        };
        let mut tokens = FileTokens::default();
        if let Some(path) = &self.tokens_file {
            tokens.global = read("auth.tokens_file".into(), path)?;
        }
        for (site, path) in &self.site_tokens_files {
            let key = format!("auth.site_tokens_files.{site}");
            tokens.sites.insert(site.clone(), read(key, path)?);
        }
        Ok(tokens)
    }
}

/// The one header a trusted proxy's client address is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum ForwardedHeader {
    #[default]
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    #[serde(rename = "forwarded")]
    Forwarded,
}

/// The tokens of one site label: a TOML array or a comma-separated string.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(transparent)]
pub struct SiteTokens(#[serde(deserialize_with = "list")] pub Vec<Secret>);

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    #[serde(deserialize_with = "list")]
    pub brokers: Vec<String>,
    pub client_id: String,
    pub value_format: ValueFormat,
    pub properties: Properties,
}

/// How record values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueFormat {
    /// The record's JSON text.
    Json,
    /// Framed for schema-registry consumers: byte 0, the 4-byte big-endian schema id of
    /// `<topic>-value`, then the JSON text.
    JsonSr,
}

/// Comm100's REST API, for `comm100 webhooks` and `backfill`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Comm100Config {
    /// The API's base URL, e.g. `https://api15.comm100.io/v4`.
    pub api_base: Option<String>,
    /// The site id, sent as `siteId` on every call.
    pub site_id: Option<u64>,
    /// HTTP Basic: an agent's email and an API key.
    pub api_email: Option<String>,
    pub api_key: Option<Secret>,
    pub api_key_file: Option<PathBuf>,
    /// Or an OAuth bearer token.
    pub api_token: Option<Secret>,
    pub api_token_file: Option<PathBuf>,
}

/// The Confluent-compatible schema registry of `kafka.value_format = "json_sr"` and
/// `schemas register`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    /// Base URL of the API, e.g. `http://registry:8081`.
    pub url: Option<String>,
    /// HTTP basic authentication (e.g. a Confluent Cloud API key and secret).
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA certificates that sign an https registry's certificate, instead
    /// of the system's.
    pub ca_location: Option<PathBuf>,
}

/// librdkafka's default `message.max.bytes`.
pub const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

impl KafkaConfig {
    /// The producer's `message.max.bytes`: the largest record it sends.
    pub fn message_max_bytes(&self) -> usize {
        self.properties
            .get("message.max.bytes")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    pub deadline_ms: u64,
}

impl DeliveryConfig {
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }
}

impl Config {
    /// How long a request waits for Kafka before falling back to the spool.
    pub fn kafka_wait(&self) -> Duration {
        if self.spool.enabled {
            Duration::from_millis(self.delivery.deadline_ms - self.spool.append_budget_ms)
        } else {
            self.delivery.deadline()
        }
    }

    /// The dead-letter topic: `dlq.topic`, else `<prefix>.dlq`.
    pub fn dlq_topic(&self) -> String {
        self.dlq
            .topic
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.topics.prefix))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    pub prefix: String,
    pub offline_message_submitted: Option<String>,
    pub chat_started: Option<String>,
    pub chat_ended: Option<String>,
    pub chat_wrapped_up: Option<String>,
    pub agent_status_changed: Option<String>,
    pub chat_requested: Option<String>,
    pub chat_transferred: Option<String>,
    pub unknown: Option<String>,
    /// Partitions of the topics `topics ensure` creates; -1: the brokers' `num.partitions`.
    pub partitions: i32,
    /// Replicas of each partition of the topics `topics ensure` creates; -1: the brokers'
    /// `default.replication.factor`.
    pub replication_factor: i32,
    /// Topic configurations of the topics `topics ensure` creates (`min.insync.replicas`,
    /// `retention.ms`, …).
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

impl TopicsConfig {
    /// The record types, each a key of this table.
    pub const TYPES: [&'static str; 8] = [
        "offline_message_submitted",
        "chat_started",
        "chat_ended",
        "chat_wrapped_up",
        "agent_status_changed",
        "chat_requested",
        "chat_transferred",
        "unknown",
    ];

    /// The topic of records of type `kind` (one of [`TopicsConfig::TYPES`]): its own key,
    /// else `<prefix>.<type>`.
    pub fn topic(&self, kind: &str) -> String {
        let explicit = match kind {
            "offline_message_submitted" => &self.offline_message_submitted,
            "chat_started" => &self.chat_started,
            "chat_ended" => &self.chat_ended,
            "chat_wrapped_up" => &self.chat_wrapped_up,
            "agent_status_changed" => &self.agent_status_changed,
            "chat_requested" => &self.chat_requested,
            "chat_transferred" => &self.chat_transferred,
            _ => &self.unknown,
        };
        explicit
            .clone()
            .unwrap_or_else(|| format!("{}.{kind}", self.prefix))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    pub enabled: bool,
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
    pub append_budget_ms: u64,
    pub drain_on_shutdown_ms: u64,
}

/// When the spool calls fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    Always,
    Never,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DlqConfig {
    pub topic: Option<String>,
    pub rejected_bodies: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A list given as a TOML array or, as environment variables must, one comma-separated string.
fn list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        Many(Vec<String>),
        One(String),
    }
    let items = match List::deserialize(deserializer)? {
        List::Many(items) => items,
        List::One(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    items
        .iter()
        .map(|item| {
            item.parse()
                .map_err(|e| serde::de::Error::custom(format!("`{item}`: {e}")))
        })
        .collect()
}

/// A secret string: never printed, serialized as `<redacted>`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

/// Whether a librdkafka property holds a secret (passwords, keys, credentials, every
/// OAUTHBEARER setting).
pub fn is_secret_property(key: &str) -> bool {
    key.starts_with("sasl.oauthbearer.")
        || [
            "password",
            "secret",
            "key.pem",
            "sasl.username",
            "credential",
        ]
        .iter()
        .any(|s| key.contains(s))
}

/// `value` with the credentials of any URL in it (`scheme://user:pass@host`) redacted.
fn redact_url_credentials(value: &str) -> Cow<'_, str> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(scheme_end) = rest.find("://") {
        let authority_start = scheme_end + 3;
        let authority_len = rest[authority_start..]
            .find(['/', '?', '#', ' ', ','])
            .unwrap_or(rest.len() - authority_start);
        let authority = &rest[authority_start..authority_start + authority_len];
        out.push_str(&rest[..authority_start]);
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("<redacted>");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &rest[authority_start + authority_len..];
    }
    if out.is_empty() {
        return Cow::Borrowed(value);
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Raw librdkafka properties; secret values are redacted when printed or serialized.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Properties(BTreeMap<String, String>);

impl Properties {
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn remove(&mut self, key: &str) {
        self.0.remove(key);
    }

    /// Sets a property, replacing any earlier value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }

    fn redacted(&self) -> impl Iterator<Item = (&str, Cow<'_, str>)> {
        self.iter().map(|(k, v)| {
            (
                k,
                if is_secret_property(k) {
                    Cow::Borrowed("<redacted>")
                } else {
                    redact_url_credentials(v)
                },
            )
        })
    }
}

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.redacted()).finish()
    }
}

impl Serialize for Properties {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.redacted())
    }
}

/// Removes the variables named `prefix` + a non-empty rest from `env`: (rest, value) pairs.
fn take_prefixed(
    env: &mut std::collections::HashMap<String, String>,
    prefix: &str,
) -> Vec<(String, String)> {
    let names: Vec<String> = env
        .keys()
        .filter(|k| k.len() > prefix.len() && k.starts_with(prefix))
        .cloned()
        .collect();
    names
        .into_iter()
        .filter_map(|k| {
            let value = env.remove(&k)?;
            Some((k[prefix.len()..].to_owned(), value))
        })
        .collect()
}

impl Config {
    /// Loads the layered configuration from the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, None)
    }

    /// Loads the layered configuration; `env` replaces the process environment when given.
    pub fn load_with_env(
        file: Option<&Path>,
        env: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Self, ConfigError> {
        let mut env: std::collections::HashMap<String, String> = env.unwrap_or_else(|| {
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .filter(|(k, _)| k.starts_with(ENV_PREFIX) || k == "RUST_LOG")
                .collect()
        });
        // librdkafka property and topic configuration names hold dots, which the layered
        // loader would split on: these variables are applied after it, by name.
        let properties: Vec<(String, String)> = take_prefixed(&mut env, ENV_PROPERTY_PREFIX)
            .into_iter()
            .map(|(name, value)| (property_from_env(&name), value))
            .collect();
        let topic_configs: Vec<(String, String)> = take_prefixed(&mut env, ENV_TOPIC_CONFIG_PREFIX)
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase().replace('_', "."), value))
            .collect();
        let rust_log = env.remove("RUST_LOG").filter(|f| !f.trim().is_empty());
        let mut builder =
            config::Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(invalid(
                    "--config",
                    format!("{} does not exist or is not a file", path.display()),
                ));
            }
            builder = builder.add_source(File::from(path).format(FileFormat::Toml));
        }
        builder = builder.add_source(
            Environment::with_prefix("COMM100_BRIDGE")
                .prefix_separator("__")
                .separator("__")
                .source(Some(env)),
        );
        let mut config: Config = builder.build()?.try_deserialize()?;
        for (key, value) in properties {
            // The variable replaces the file's value in either form.
            let other = match key.strip_suffix("_file") {
                Some(stem) => stem.to_owned(),
                None => format!("{key}_file"),
            };
            config.kafka.properties.remove(&other);
            config.kafka.properties.insert(key, value);
        }
        config.topics.config.extend(topic_configs);
        if let Some(filter) = rust_log {
            tracing_subscriber::EnvFilter::try_new(&filter)
                .map_err(|e| invalid("RUST_LOG", format!("{e} (it replaces log.level)")))?;
            config.log.level = filter;
        }
        config.read_secret_files()?;
        config.validate()?;
        Ok(config)
    }

    /// Replaces `kafka.properties.*_file` by the secrets they name; checks the token files.
    fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        let read = |key: &str, path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))
        };
        // Token files are read by the auth rules, at start and on SIGHUP; here only checked.
        self.auth.read_token_files()?;
        let secret = |name: &str, file: Option<PathBuf>, value: &mut Option<Secret>| {
            let Some(path) = file else {
                return Ok(());
            };
            let key = format!("{name}_file");
            if value.is_some() {
                return Err(invalid(
                    &key,
                    format!("`{name}` is set too; keep one of them"),
                ));
            }
            let text = read(&key, &path)?;
            *value = Some(Secret::new(text.trim_end_matches(['\r', '\n'])));
            Ok(())
        };
        let registry = &mut self.schema_registry;
        secret(
            "schema_registry.password",
            registry.password_file.take(),
            &mut registry.password,
        )?;
        let comm100 = &mut self.comm100;
        secret(
            "comm100.api_key",
            comm100.api_key_file.take(),
            &mut comm100.api_key,
        )?;
        secret(
            "comm100.api_token",
            comm100.api_token_file.take(),
            &mut comm100.api_token,
        )?;
        let files: Vec<(String, String)> = self
            .kafka
            .properties
            .iter()
            .filter(|(k, _)| k.ends_with("_file"))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        for (key, path) in files {
            let target = key.trim_end_matches("_file").to_owned();
            let name = format!("kafka.properties.{key}");
            if self.kafka.properties.get(&target).is_some() {
                return Err(invalid(
                    name,
                    format!("`{target}` is set too; keep one of them"),
                ));
            }
            let value = read(&name, Path::new(&path))?;
            self.kafka.properties.remove(&key);
            self.kafka
                .properties
                .insert(target, value.trim_end_matches(['\r', '\n']));
        }
        Ok(())
    }

    /// Checks what types alone cannot.
    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_http()?;
        self.validate_auth()?;
        self.validate_delivery()?;
        self.validate_kafka()?;
        self.validate_topics()?;
        self.validate_schema_registry()?;
        self.validate_comm100()?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", e.to_string()))?;
        Ok(())
    }

    /// `http.*` and `admin.*`: limits that are at least 1, and room for the largest body.
    fn validate_http(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("http.max_body_bytes", self.http.max_body_bytes as u64),
            (
                "http.header_read_timeout_ms",
                self.http.header_read_timeout_ms,
            ),
            ("http.body_read_timeout_ms", self.http.body_read_timeout_ms),
            (
                "http.keep_alive_timeout_ms",
                self.http.keep_alive_timeout_ms,
            ),
            ("http.max_connections", self.http.max_connections as u64),
            (
                "http.max_connections_per_client",
                self.http.max_connections_per_client as u64,
            ),
            ("admin.max_connections", self.admin.max_connections as u64),
            ("http.max_headers", self.http.max_headers as u64),
            (
                "http.max_inflight_requests",
                self.http.max_inflight_requests as u64,
            ),
            (
                "http.max_inflight_requests_per_client",
                self.http.max_inflight_requests_per_client as u64,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.http.max_header_bytes < 8192 {
            return Err(invalid(
                "http.max_header_bytes",
                "must be at least 8192 (hyper's smallest read buffer)",
            ));
        }
        if self.http.max_inflight_bytes > u32::MAX as usize {
            return Err(invalid(
                "http.max_inflight_bytes",
                "must be at most 4294967295",
            ));
        }
        if self.http.max_inflight_bytes < self.http.max_body_bytes {
            return Err(invalid(
                "http.max_inflight_bytes",
                "must be at least http.max_body_bytes, or the largest body never fits",
            ));
        }
        if self.http.max_inflight_bytes_per_client < self.http.max_body_bytes {
            return Err(invalid(
                "http.max_inflight_bytes_per_client",
                "must be at least http.max_body_bytes, or the largest body never fits",
            ));
        }
        Ok(())
    }

    /// `auth.*`: no empty token.
    fn validate_auth(&self) -> Result<(), ConfigError> {
        for (site, tokens) in &self.auth.site_tokens {
            if tokens.0.is_empty() || tokens.0.iter().any(|t| t.expose().is_empty()) {
                return Err(invalid(
                    format!("auth.site_tokens.{site}"),
                    "list at least one non-empty token",
                ));
            }
        }
        if self.auth.tokens.iter().any(|t| t.expose().is_empty()) {
            return Err(invalid("auth.tokens", "a token must not be empty"));
        }
        Ok(())
    }

    /// `delivery.*` and `spool.*`: a deadline the spool append fits in.
    fn validate_delivery(&self) -> Result<(), ConfigError> {
        if self.delivery.deadline_ms == 0 || self.delivery.deadline_ms > i32::MAX as u64 {
            return Err(invalid(
                "delivery.deadline_ms",
                "must be between 1 and 2147483647",
            ));
        }
        if self.spool.enabled {
            if self.spool.append_budget_ms == 0
                || self.spool.append_budget_ms >= self.delivery.deadline_ms
            {
                return Err(invalid(
                    "spool.append_budget_ms",
                    format!(
                        "must be at least 1 and less than delivery.deadline_ms ({})",
                        self.delivery.deadline_ms
                    ),
                ));
            }
            if self.spool.segment_bytes < 4096 || self.spool.segment_bytes > self.spool.max_bytes {
                return Err(invalid(
                    "spool.segment_bytes",
                    "must be at least 4096 and at most spool.max_bytes",
                ));
            }
        }
        Ok(())
    }

    /// `kafka.*`: brokers, and the properties the bridge relies on.
    fn validate_kafka(&self) -> Result<(), ConfigError> {
        if self.kafka.brokers.iter().all(|b| b.trim().is_empty()) {
            return Err(invalid("kafka.brokers", "list at least one host:port"));
        }
        if let Some(value) = self.kafka.properties.get("message.max.bytes") {
            if value.trim().parse::<usize>().map_or(true, |n| n < 1000) {
                return Err(invalid(
                    "kafka.properties.message.max.bytes",
                    "must be a number of bytes, at least 1000",
                ));
            }
        }
        let stats = self.kafka.properties.get("statistics.interval.ms");
        if stats.is_none_or(|v| v.trim().parse::<u64>().map_or(true, |ms| ms == 0)) {
            return Err(invalid(
                "kafka.properties.statistics.interval.ms",
                "must be a positive number of milliseconds: readiness and the broker and \
                 queue metrics come from librdkafka's statistics",
            ));
        }
        Ok(())
    }

    /// `schema_registry.*`: a URL when `kafka.value_format = "json_sr"` needs one; a
    /// username and a password together.
    fn validate_schema_registry(&self) -> Result<(), ConfigError> {
        let registry = &self.schema_registry;
        match &registry.url {
            None if self.kafka.value_format == ValueFormat::JsonSr => {
                return Err(invalid(
                    "schema_registry.url",
                    "kafka.value_format = \"json_sr\" needs the schema registry's URL",
                ))
            }
            Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                return Err(invalid(
                    "schema_registry.url",
                    format!("`{url}` is not an http:// or https:// URL"),
                ))
            }
            _ => {}
        }
        if registry.username.is_some() != registry.password.is_some() {
            return Err(invalid(
                "schema_registry.username",
                "set schema_registry.username and schema_registry.password (or password_file) together",
            ));
        }
        Ok(())
    }

    /// `comm100.*`: an http(s) base URL, and one way to authenticate (an email with a key,
    /// or a token), when set.
    fn validate_comm100(&self) -> Result<(), ConfigError> {
        let c = &self.comm100;
        if let Some(base) = &c.api_base {
            if !(base.starts_with("https://") || base.starts_with("http://")) {
                return Err(invalid(
                    "comm100.api_base",
                    format!("`{base}` is not an https:// URL such as https://api15.comm100.io/v4"),
                ));
            }
        }
        if c.api_email.is_some() != c.api_key.is_some() {
            return Err(invalid(
                "comm100.api_email",
                "set comm100.api_email and comm100.api_key (or api_key_file) together",
            ));
        }
        if c.api_key.is_some() && c.api_token.is_some() {
            return Err(invalid(
                "comm100.api_token",
                "set comm100.api_email with api_key, or api_token, not both",
            ));
        }
        Ok(())
    }

    /// `topics.*` and `dlq.topic`: valid Kafka topic names.
    fn validate_topics(&self) -> Result<(), ConfigError> {
        for kind in TopicsConfig::TYPES {
            let topic = self.topics.topic(kind);
            if !valid_topic_name(&topic) {
                return Err(invalid(
                    format!("topics.{kind}"),
                    format!("`{topic}` is not a valid Kafka topic name (1-249 of [A-Za-z0-9._-])"),
                ));
            }
        }
        if !valid_topic_name(&self.dlq_topic()) {
            return Err(invalid(
                "dlq.topic",
                format!("`{}` is not a valid Kafka topic name", self.dlq_topic()),
            ));
        }
        for (key, value) in [
            ("topics.partitions", self.topics.partitions),
            ("topics.replication_factor", self.topics.replication_factor),
        ] {
            if value == 0 || value < -1 {
                return Err(invalid(
                    key,
                    "must be at least 1, or -1 for the brokers' default",
                ));
            }
        }
        Ok(())
    }

    /// Settings that work but put data or credentials at risk, one sentence each.
    pub fn warnings(&self) -> Vec<String> {
        let p = &self.kafka.properties;
        let is = |key: &str, value: &str| {
            p.get(key)
                .is_some_and(|v| v.trim().eq_ignore_ascii_case(value))
        };
        let mut out = Vec::new();
        if is("security.protocol", "SASL_PLAINTEXT") {
            out.push(
                "kafka.properties.security.protocol is SASL_PLAINTEXT: records (chat transcripts) \
                 and, with sasl.mechanisms PLAIN, the password cross the network unencrypted; \
                 use SASL_SSL"
                    .to_owned(),
            );
        }
        if is("enable.ssl.certificate.verification", "false") {
            out.push(
                "kafka.properties.enable.ssl.certificate.verification is false: anyone on the \
                 path can pose as the brokers; name their CA in ssl.ca.location instead"
                    .to_owned(),
            );
        }
        if is("ssl.endpoint.identification.algorithm", "none") {
            out.push(
                "kafka.properties.ssl.endpoint.identification.algorithm is none: the brokers' \
                 certificates are not checked against their host names"
                    .to_owned(),
            );
        }
        if self.spool.enabled && self.spool.fsync == FsyncPolicy::Never {
            out.push(
                "spool.fsync is \"never\": a 202 answered while Kafka is away says \
                 \"durable\": false, and those records are lost if the machine (not only the \
                 process) crashes before the OS writes them; use \"always\""
                    .to_owned(),
            );
        }
        out
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

fn valid_topic_name(name: &str) -> bool {
    (1..=249).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::Write;

    /// An environment of exactly `pairs`.
    pub(crate) fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// Loads `file` over the defaults with exactly `env`, then runs a stage's `check` on it.
    pub(crate) fn load_then(
        file: Option<&Path>,
        env: Option<HashMap<String, String>>,
        check: impl FnOnce(&Config) -> Result<(), ConfigError>,
    ) -> Result<Config, ConfigError> {
        let config = Config::load_with_env(file, env)?;
        check(&config)?;
        Ok(config)
    }

    /// A TOML file holding `contents`.
    pub(crate) fn file(contents: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(contents.as_bytes()).unwrap();
        f
    }

    #[test]
    fn defaults_load() {
        let c = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(c.http.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.http.max_body_bytes, 768 << 10);
        assert_eq!(c.kafka.message_max_bytes(), 1_000_000);
        assert_eq!(c.delivery.deadline_ms, 5000);
        assert!(!c.auth.allow_unauthenticated);
        assert_eq!(c.kafka.properties.get("compression.type"), Some("lz4"));
        assert_eq!(c.topics.topic("chat_ended"), "comm100.chat_ended");
        assert_eq!(c.log.format, LogFormat::Text);
        assert!(c.spool.enabled);
        assert_eq!(c.spool.fsync, FsyncPolicy::Always);
        assert_eq!(c.kafka_wait(), Duration::from_millis(4000));
        assert_eq!(c.dlq_topic(), "comm100.dlq");
        assert!(c.dlq.rejected_bodies);
    }

    #[test]
    fn file_then_environment() {
        let f = file("[http]\nlisten = \"127.0.0.1:9000\"\n[topics]\nprefix = \"acme\"\nchat_ended = \"ended\"\n[kafka.properties]\n\"linger.ms\" = 7\n");
        let c = Config::load_with_env(
            Some(f.path()),
            env(&[
                ("COMM100_BRIDGE__HTTP__LISTEN", "127.0.0.1:9001"),
                ("COMM100_BRIDGE__AUTH__TOKENS", "a1,b2"),
                ("COMM100_BRIDGE__KAFKA__BROKERS", "k1:9092,k2:9092"),
                ("COMM100_BRIDGE__DELIVERY__DEADLINE_MS", "1500"),
            ]),
        )
        .unwrap();
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:9001");
        assert_eq!(c.auth.tokens, vec![Secret::new("a1"), Secret::new("b2")]);
        assert_eq!(c.kafka.brokers, ["k1:9092", "k2:9092"]);
        assert_eq!(c.delivery.deadline_ms, 1500);
        assert_eq!(c.kafka.properties.get("linger.ms"), Some("7"));
        assert_eq!(c.topics.topic("chat_ended"), "ended");
        assert_eq!(c.topics.topic("chat_started"), "acme.chat_started");
    }

    #[test]
    fn numeric_tokens_from_the_environment_stay_strings() {
        let c =
            Config::load_with_env(None, env(&[("COMM100_BRIDGE__AUTH__TOKENS", "12345")])).unwrap();
        assert_eq!(c.auth.tokens, vec![Secret::new("12345")]);
        let c = Config::load_with_env(
            None,
            env(&[
                ("COMM100_BRIDGE__AUTH__ALLOW_UNAUTHENTICATED", "true"),
                ("COMM100_BRIDGE__HTTP__MAX_BODY_BYTES", "2048"),
            ]),
        )
        .unwrap();
        assert!(c.auth.allow_unauthenticated);
        assert_eq!(c.http.max_body_bytes, 2048);
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let f = file("[http]\nlisten_addr = \"127.0.0.1:9000\"\n");
        let err = Config::load_with_env(Some(f.path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_addr"), "{err}");

        let f = file("[htp]\nlisten = \"127.0.0.1:9000\"\n");
        let err = Config::load_with_env(Some(f.path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("htp"), "{err}");

        let err = Config::load_with_env(None, env(&[("COMM100_BRIDGE__AUTH__TOKEN", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("token"), "{err}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        for (pairs, key) in [
            (
                vec![("COMM100_BRIDGE__DELIVERY__DEADLINE_MS", "0")],
                "delivery.deadline_ms",
            ),
            (
                vec![("COMM100_BRIDGE__TOPICS__PREFIX", "bad topic")],
                "topics.offline_message_submitted",
            ),
            (vec![("COMM100_BRIDGE__LOG__LEVEL", "info,=[")], "log.level"),
        ] {
            let err = Config::load_with_env(None, env(&pairs))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{err}");
        }
        let f = file("[kafka.properties]\n\"statistics.interval.ms\" = \"0\"\n");
        let err = Config::load_with_env(Some(f.path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("statistics.interval.ms"), "{err}");
        let missing = Config::load_with_env(Some(Path::new("/nonexistent/bridge.toml")), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("/nonexistent/bridge.toml"), "{missing}");
    }

    #[test]
    fn the_schema_registry_settings_are_checked_and_its_password_is_never_printed() {
        let json_sr = ("COMM100_BRIDGE__KAFKA__VALUE_FORMAT", "json_sr");
        let url = (
            "COMM100_BRIDGE__SCHEMA_REGISTRY__URL",
            "http://registry:8081",
        );
        for (pairs, key, says) in [
            (
                vec![json_sr],
                "schema_registry.url",
                "needs the schema registry's URL",
            ),
            (
                vec![
                    json_sr,
                    ("COMM100_BRIDGE__SCHEMA_REGISTRY__URL", "registry:8081"),
                ],
                "schema_registry.url",
                "not an http:// or https:// URL",
            ),
            (
                vec![url, ("COMM100_BRIDGE__SCHEMA_REGISTRY__USERNAME", "key")],
                "schema_registry.username",
                "together",
            ),
            (
                vec![("COMM100_BRIDGE__KAFKA__VALUE_FORMAT", "avro")],
                "kafka.value_format",
                "avro",
            ),
        ] {
            let err = Config::load_with_env(None, env(&pairs))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key) && err.contains(says), "{err}");
        }
        let plain = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(plain.kafka.value_format, ValueFormat::Json);

        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("password");
        std::fs::write(&password, "registry-secret\n").unwrap();
        let file_var = password.display().to_string();
        let c = Config::load_with_env(
            None,
            env(&[
                json_sr,
                url,
                ("COMM100_BRIDGE__SCHEMA_REGISTRY__USERNAME", "key"),
                ("COMM100_BRIDGE__SCHEMA_REGISTRY__PASSWORD_FILE", &file_var),
            ]),
        )
        .unwrap();
        assert_eq!(c.kafka.value_format, ValueFormat::JsonSr);
        assert_eq!(
            c.schema_registry.password.as_ref().map(Secret::expose),
            Some("registry-secret")
        );
        let printed = toml::to_string(&c).unwrap();
        assert!(!printed.contains("registry-secret"), "{printed}");
        let both = Config::load_with_env(
            None,
            env(&[
                url,
                ("COMM100_BRIDGE__SCHEMA_REGISTRY__USERNAME", "key"),
                ("COMM100_BRIDGE__SCHEMA_REGISTRY__PASSWORD", "inline"),
                ("COMM100_BRIDGE__SCHEMA_REGISTRY__PASSWORD_FILE", &file_var),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(both.contains("schema_registry.password_file"), "{both}");
    }

    #[test]
    fn the_comm100_api_settings_are_checked_and_its_key_is_never_printed() {
        for (pairs, says) in [
            (
                vec![("COMM100_BRIDGE__COMM100__API_BASE", "api15.comm100.io")],
                "comm100.api_base",
            ),
            (
                vec![("COMM100_BRIDGE__COMM100__API_EMAIL", "a@example.com")],
                "comm100.api_email",
            ),
            (
                vec![
                    ("COMM100_BRIDGE__COMM100__API_EMAIL", "a@example.com"),
                    ("COMM100_BRIDGE__COMM100__API_KEY", "k"),
                    ("COMM100_BRIDGE__COMM100__API_TOKEN", "t"),
                ],
                "comm100.api_token",
            ),
        ] {
            let err = Config::load_with_env(None, env(&pairs))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "comm100-secret-key\n").unwrap();
        let path = key.display().to_string();
        let c = Config::load_with_env(
            None,
            env(&[
                ("COMM100_BRIDGE__COMM100__API_EMAIL", "a@example.com"),
                ("COMM100_BRIDGE__COMM100__API_KEY_FILE", &path),
                ("COMM100_BRIDGE__COMM100__SITE_ID", "10100000"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.comm100.api_key.as_ref().map(Secret::expose),
            Some("comm100-secret-key")
        );
        assert_eq!(c.comm100.site_id, Some(10100000));
        let printed = toml::to_string(&c).unwrap();
        assert!(!printed.contains("comm100-secret-key"), "{printed}");
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, "first-token\n\n  second-token  \n").unwrap();
        let password = dir.path().join("password");
        std::fs::write(&password, "hunter2\n").unwrap();
        let f = file(&format!(
            "[auth]\ntokens = [\"inline\"]\ntokens_file = \"{}\"\n[kafka.properties]\n\"sasl.password_file\" = \"{}\"\n",
            tokens.display(),
            password.display()
        ));
        let c = Config::load_with_env(Some(f.path()), env(&[])).unwrap();
        assert_eq!(c.auth.tokens, vec![Secret::new("inline")]);
        assert_eq!(
            c.auth.read_token_files().unwrap().global,
            vec![Secret::new("first-token"), Secret::new("second-token")]
        );
        assert_eq!(c.kafka.properties.get("sasl.password"), Some("hunter2"));
        assert_eq!(c.kafka.properties.get("sasl.password_file"), None);
        assert!(!c.to_redacted_toml().contains("hunter2"));

        let missing = file("[kafka.properties]\n\"ssl.key.password_file\" = \"/nonexistent/pw\"\n");
        let err = Config::load_with_env(Some(missing.path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kafka.properties.ssl.key.password_file")
                && err.contains("/nonexistent/pw"),
            "{err}"
        );
    }

    #[test]
    fn rust_log_replaces_log_level() {
        let c = Config::load_with_env(
            None,
            env(&[
                ("COMM100_BRIDGE__LOG__LEVEL", "warn"),
                ("RUST_LOG", "info,rdkafka=debug"),
            ]),
        )
        .unwrap();
        assert_eq!(c.log.level, "info,rdkafka=debug");
        let c = Config::load_with_env(None, env(&[("RUST_LOG", " ")])).unwrap();
        assert_eq!(c.log.level, "info", "a blank RUST_LOG is not set");
        let err = Config::load_with_env(None, env(&[("RUST_LOG", "info,=[")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("RUST_LOG"), "{err}");
    }

    #[test]
    fn every_kafka_property_can_come_from_the_environment() {
        for (name, property) in [
            ("SASL_PASSWORD", "sasl.password"),
            ("sasl.password", "sasl.password"),
            ("SASL_PASSWORD_FILE", "sasl.password_file"),
            ("SSL_KEY_PASSWORD_FILE", "ssl.key.password_file"),
            (
                "ENABLE_SSL_CERTIFICATE_VERIFICATION",
                "enable.ssl.certificate.verification",
            ),
            ("LOG_LEVEL", "log_level"),
        ] {
            assert_eq!(property_from_env(name), property, "{name}");
        }

        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("password");
        std::fs::write(&password, "from-a-file\n").unwrap();
        let f = file(
            "[kafka.properties]\n\"sasl.password\" = \"in-the-file\"\n\"linger.ms\" = \"5\"\n",
        );
        let c = Config::load_with_env(
            Some(f.path()),
            env(&[
                (
                    "COMM100_BRIDGE__KAFKA__PROPERTIES__SECURITY_PROTOCOL",
                    "SASL_SSL",
                ),
                (
                    "COMM100_BRIDGE__KAFKA__PROPERTIES__SASL_MECHANISMS",
                    "SCRAM-SHA-512",
                ),
                ("COMM100_BRIDGE__KAFKA__PROPERTIES__SASL_USERNAME", "bridge"),
                ("COMM100_BRIDGE__KAFKA__PROPERTIES__LINGER_MS", "0"),
                ("COMM100_BRIDGE__KAFKA__PROPERTIES__LOG_LEVEL", "3"),
                (
                    "COMM100_BRIDGE__KAFKA__PROPERTIES__sasl.kerberos.service.name",
                    "kafka",
                ),
                (
                    "COMM100_BRIDGE__KAFKA__PROPERTIES__SASL_PASSWORD_FILE",
                    password.to_str().unwrap(),
                ),
            ]),
        )
        .unwrap();
        let props = &c.kafka.properties;
        assert_eq!(props.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(props.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(props.get("sasl.username"), Some("bridge"));
        assert_eq!(props.get("linger.ms"), Some("0"), "the environment wins");
        assert_eq!(props.get("log_level"), Some("3"));
        assert_eq!(props.get("sasl.kerberos.service.name"), Some("kafka"));
        // The variable's file form replaces the file's inline value.
        assert_eq!(props.get("sasl.password"), Some("from-a-file"));
        assert_eq!(props.get("compression.type"), Some("lz4"), "defaults stay");

        let c = Config::load_with_env(
            None,
            env(&[(
                "COMM100_BRIDGE__KAFKA__PROPERTIES__SASL_PASSWORD",
                "only-here",
            )]),
        )
        .unwrap();
        assert_eq!(c.kafka.properties.get("sasl.password"), Some("only-here"));
        assert!(!c.to_redacted_toml().contains("only-here"));
    }

    #[test]
    fn credentials_in_urls_and_oauthbearer_settings_are_redacted() {
        // This build has no OIDC (librdkafka without libcurl), so these never load; what
        // prints them still redacts them.
        let mut oauth = Properties::default();
        oauth.insert("sasl.oauthbearer.client.id", "my-client");
        oauth.insert(
            "sasl.oauthbearer.token.endpoint.url",
            "https://idp.example/token",
        );
        let out = format!("{oauth:?}");
        assert!(
            !out.contains("my-client") && !out.contains("idp.example"),
            "{out}"
        );
        let f = file("[kafka.properties]\n\"ssl.crl.location\" = \"https://user:hunter2@crl.example/x.crl\"\n");
        let c = Config::load_with_env(Some(f.path()), env(&[])).unwrap();
        let out = c.to_redacted_toml();
        assert!(!out.contains("hunter2") && !out.contains("user:"), "{out}");
        assert!(
            out.contains("https://<redacted>@crl.example/x.crl"),
            "{out}"
        );
        assert_eq!(
            redact_url_credentials("a://u:p@h:1/x, b://h2/y?z=c://w@v"),
            "a://<redacted>@h:1/x, b://h2/y?z=c://<redacted>@v"
        );
        assert_eq!(redact_url_credentials("plain"), "plain");
    }

    #[test]
    fn a_spool_that_does_not_fsync_is_warned_about() {
        let mut c = Config::load_with_env(None, env(&[])).unwrap();
        assert!(c.warnings().is_empty());
        c.spool.fsync = FsyncPolicy::Never;
        let warnings = c.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("\"durable\": false"), "{warnings:?}");
        c.spool.enabled = false;
        assert!(c.warnings().is_empty());
    }

    #[test]
    fn risky_kafka_settings_are_warned_about() {
        let c = Config::load_with_env(None, env(&[])).unwrap();
        assert!(c.warnings().is_empty());
        let f = file("[kafka.properties]\n\"security.protocol\" = \"sasl_plaintext\"\n\"enable.ssl.certificate.verification\" = \"false\"\n\"ssl.endpoint.identification.algorithm\" = \"none\"\n");
        let c = Config::load_with_env(Some(f.path()), env(&[])).unwrap();
        let warnings = c.warnings();
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].contains("SASL_PLAINTEXT"));
    }

    #[test]
    fn redacted_output_hides_secrets() {
        let f = file("[auth]\ntokens = [\"s3cret-token\"]\n[kafka.properties]\n\"sasl.password\" = \"hunter2\"\n\"sasl.username\" = \"alice\"\n");
        let c = Config::load_with_env(Some(f.path()), env(&[])).unwrap();
        let out = c.to_redacted_toml();
        assert!(
            !out.contains("s3cret-token") && !out.contains("hunter2") && !out.contains("alice"),
            "{out}"
        );
        assert!(out.contains("<redacted>"));
        assert!(out.contains("compression.type"));
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("s3cret-token") && !debug.contains("hunter2"),
            "{debug}"
        );
        // The rendered configuration loads back.
        let back: Config = toml::from_str(&out).unwrap();
        assert_eq!(back.http.listen, c.http.listen);
    }
}
