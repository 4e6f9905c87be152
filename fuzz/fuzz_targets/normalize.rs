//! Parse + normalize + serialize any bytes: must never panic, and an accepted body must
//! be published as JSON that parses back, is byte for byte what `serde_json` writes, and
//! validates against the JSON Schema of its type, with a `ce_time` that is RFC 3339.
#![no_main]

use std::collections::HashMap;
use std::sync::LazyLock;

use comm100_bridge::config::Config;
use comm100_bridge::event::{EventType, Record, Site, Timestamp};
use comm100_bridge::route::Router;
use libfuzzer_sys::fuzz_target;

static ROUTER: LazyLock<Router> = LazyLock::new(|| {
    let config = Config::load_with_env(None, Some(Default::default())).expect("defaults load");
    Router::new(&config.topics)
});

/// The schema of each record type, read from `schemas/` once.
static SCHEMAS: LazyLock<HashMap<&'static str, jsonschema::Validator>> = LazyLock::new(|| {
    EventType::ALL
        .iter()
        .map(|kind| {
            let path = format!(
                "{}/../schemas/{}.schema.json",
                env!("CARGO_MANIFEST_DIR"),
                kind.as_str()
            );
            let text = std::fs::read(&path).expect("the schemas are beside the fuzz crate");
            let schema: serde_json::Value = serde_json::from_slice(&text).expect("a schema");
            let validator = jsonschema::draft202012::options()
                .should_validate_formats(true)
                .build(&schema)
                .expect("a valid schema");
            (kind.as_str(), validator)
        })
        .collect()
});

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = Record::from_body(data, Site::parse("fuzz"), Timestamp::now()) {
        let message = ROUTER.route(&record);
        let value: serde_json::Value =
            serde_json::from_slice(&message.value).expect("a record parses back");
        let reference = serde_json::to_vec(&record).expect("a record serializes");
        assert!(message.value == reference, "published bytes differ from serde_json's");
        let problems: Vec<String> = SCHEMAS[record.kind.as_str()]
            .iter_errors(&value)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(problems.is_empty(), "{problems:#?}\n{value}");
        let (_, time) = message
            .headers
            .iter()
            .find(|(name, _)| name == "ce_time")
            .expect("every record has ce_time");
        assert!(
            time.len() == 24 && time.ends_with('Z'),
            "ce_time {time} is not RFC 3339 UTC with milliseconds"
        );
    }
});
