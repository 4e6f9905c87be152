//! librdkafka properties from `kafka.properties`: each must be one librdkafka knows and
//! takes the value of, and none one the bridge sets itself.

use crate::config::{invalid, is_secret_property, ConfigError, Properties};

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

#[cfg(test)]
mod tests {
    use crate::config::tests::{env, file};
    use crate::config::{Config, ConfigError, ENV_PROPERTY_PREFIX};

    /// Loads the settings, then checks their Kafka properties.
    fn checked(
        file: Option<&std::path::Path>,
        env: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Config, ConfigError> {
        let config = Config::load_with_env(file, env)?;
        super::check(&config.kafka.properties)?;
        Ok(config)
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
}
