//! librdkafka properties from `kafka.properties`: each must be one librdkafka knows and
//! takes the value of, and none one the bridge sets itself.

use rdkafka::producer::BaseProducer;

use crate::config::{invalid, is_secret_property, Config, ConfigError, Properties};

/// librdkafka properties the bridge sets itself, aliases included.
const OWNED_PROPERTIES: [&str; 8] = [
    "bootstrap.servers",
    "metadata.broker.list",
    "client.id",
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "message.timeout.ms",
    "delivery.timeout.ms",
];

/// Asks librdkafka whether it knows property `key` and takes `value` for it.
fn check_property(key: &str, value: &str) -> Result<(), ConfigError> {
    let Err(e) = rdkafka::ClientConfig::new()
        .set(key, value)
        .create_native_config()
    else {
        return Ok(());
    };
    let reason = match e {
        rdkafka::error::KafkaError::ClientConfig(_, ref message, _, _) => message.clone(),
        other => other.to_string(),
    };
    let reason = if is_secret_property(key) && !value.is_empty() {
        reason.replace(value, "<redacted>")
    } else {
        reason
    };
    let message = format!("{reason} (librdkafka's CONFIGURATION.md lists its properties)");
    Err(invalid(format!("kafka.properties.{key}"), message))
}

/// Checks every property of `properties`, naming the first that fails.
pub fn check(properties: &Properties) -> Result<(), ConfigError> {
    for (key, value) in properties.iter() {
        if OWNED_PROPERTIES.contains(&key) {
            return Err(invalid(
                format!("kafka.properties.{key}"),
                "the bridge sets this property itself (see kafka.brokers, kafka.client_id \
                 and delivery.deadline_ms); remove it",
            ));
        }
        check_property(key, value)?;
    }
    Ok(())
}

/// Checks the properties together, as the producer takes them: builds the producer `serve`
/// would build (it connects to nothing until it has a request) and names the setting
/// librdkafka refuses, such as an unknown SASL mechanism, a CA file it cannot read, or SASL
/// without a password.
pub fn check_producer(config: &Config) -> Result<(), ConfigError> {
    let client = super::producer_config(
        &config.kafka,
        config.kafka_wait(),
        config.http.max_inflight_bytes / 2,
    );
    let Err(e) = client.create::<BaseProducer>() else {
        return Ok(());
    };
    let reason = match e {
        rdkafka::error::KafkaError::ClientCreation(ref message) => message.clone(),
        other => other.to_string(),
    };
    let properties = &config.kafka.properties;
    let key = format!("kafka.properties.{}", refused_property(properties, &reason));
    let mut reason = reason;
    for (key, value) in properties.iter() {
        if is_secret_property(key) && !value.is_empty() {
            reason = reason.replace(value, "<redacted>");
        }
    }
    Err(invalid(
        key,
        format!("librdkafka cannot create the producer with these properties: {reason}"),
    ))
}

/// The property a librdkafka refusal is about: one it names that is set, the missing one of
/// a pair it asks for, or the SASL mechanism when it refuses one.
fn refused_property(properties: &Properties, reason: &str) -> String {
    if reason.contains("sasl.username and sasl.password") {
        let missing = ["sasl.password", "sasl.username"]
            .into_iter()
            .find(|key| properties.get(key).is_none_or(str::is_empty));
        return missing.unwrap_or("sasl.password").to_owned();
    }
    if reason.contains("hash function") || reason.contains("SASL mechanism") {
        return "sasl.mechanisms".to_owned();
    }
    properties
        .iter()
        .map(|(key, _)| key)
        .filter(|key| reason.contains(key))
        .max_by_key(|key| key.len())
        .unwrap_or("security.protocol")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::{check, check_producer};
    use crate::config::tests::{env, file, load_then};
    use crate::config::{Config, ConfigError, ENV_PROPERTY_PREFIX};

    /// Loads the settings, then checks their Kafka properties.
    fn checked(
        file: Option<&std::path::Path>,
        env: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Config, ConfigError> {
        load_then(file, env, |c| check(&c.kafka.properties))
    }

    #[test]
    fn librdkafka_refuses_unknown_properties_and_bad_values_at_load() {
        for (name, value, says) in [
            ("SASL_PASSWROD", "x", "kafka.properties.sasl.passwrod"),
            (
                "COMPRESSION_TYPE",
                "zip",
                "kafka.properties.compression.type",
            ),
            ("BOOTSTRAP_SERVERS", "k:9092", "sets this property itself"),
        ] {
            let var = format!("{ENV_PROPERTY_PREFIX}{name}");
            let err = checked(None, env(&[(&var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{name}: {err}");
        }
        let f = file("[kafka.properties]\n\"security.protocol\" = \"bogus\"\n");
        let err = checked(Some(f.path()), env(&[])).unwrap_err().to_string();
        assert!(err.contains("kafka.properties.security.protocol"), "{err}");
        // A secret's value is never repeated, even in librdkafka's words.
        let f = file("[kafka.properties]\n\"sasl.oauthbearer.client.secret\" = \"s3cr3t-value\"\n");
        let err = checked(Some(f.path()), env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("not supported in this build") && !err.contains("s3cr3t-value"),
            "{err}"
        );
    }

    #[test]
    fn properties_the_bridge_owns_are_refused_under_every_alias() {
        for key in [
            "bootstrap.servers",
            "metadata.broker.list",
            "client.id",
            "acks",
            "request.required.acks",
            "enable.idempotence",
            "message.timeout.ms",
            "delivery.timeout.ms",
        ] {
            let f = file(&format!("[kafka.properties]\n\"{key}\" = \"1\"\n"));
            let err = checked(Some(f.path()), env(&[])).unwrap_err().to_string();
            assert!(
                err.contains(&format!("kafka.properties.{key}")) && err.contains("itself"),
                "{key}: {err}"
            );
        }
    }

    #[test]
    fn the_producer_check_names_the_setting_librdkafka_refuses_in_combination() {
        let dir = tempfile::tempdir().unwrap();
        let missing_ca = dir.path().join("ca.pem");
        let missing_ca = missing_ca.to_str().unwrap();
        for (properties, says) in [
            (
                vec![
                    ("security.protocol", "SASL_SSL"),
                    ("sasl.mechanisms", "SCRAM-SHA-999"),
                    ("sasl.username", "bridge-user"),
                    ("sasl.password", "s3cr3t-value"),
                ],
                "kafka.properties.sasl.mechanisms",
            ),
            (
                vec![
                    ("security.protocol", "SSL"),
                    ("ssl.ca.location", missing_ca),
                ],
                "kafka.properties.ssl.ca.location",
            ),
            (
                vec![
                    ("security.protocol", "SASL_SSL"),
                    ("sasl.mechanisms", "SCRAM-SHA-512"),
                    ("sasl.username", "bridge-user"),
                ],
                "kafka.properties.sasl.password",
            ),
            (
                vec![
                    ("security.protocol", "SASL_PLAINTEXT"),
                    ("sasl.mechanisms", "PLAIN"),
                    ("sasl.password", "s3cr3t-value"),
                ],
                "kafka.properties.sasl.username",
            ),
        ] {
            let mut config = Config::load_with_env(None, env(&[])).unwrap();
            for (key, value) in &properties {
                config.kafka.properties.insert(*key, *value);
            }
            // Each property alone is one librdkafka takes.
            check(&config.kafka.properties).unwrap();
            let err = check_producer(&config).unwrap_err().to_string();
            assert!(err.contains(says), "{properties:?}: {err}");
            assert!(!err.contains("s3cr3t-value"), "{err}");
        }
        let defaults = Config::load_with_env(None, env(&[])).unwrap();
        check_producer(&defaults).unwrap();
    }
}
