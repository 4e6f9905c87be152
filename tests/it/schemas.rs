//! The JSON Schemas in `schemas/` describe the records exactly: every golden record and every
//! freshly normalized sample validates against the schema of its type, and a record with a
//! wrong type or an undocumented field does not.

use crate::common::{fixtures_dir, samples, validator};
use comm100_bridge::config::Config;
use comm100_bridge::event::{EventType, Record, Site, Timestamp};
use comm100_bridge::route::Router;
use serde_json::{json, Value};

fn errors(kind: &str, record: &Value) -> Vec<String> {
    validator(kind)
        .iter_errors(record)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn every_golden_record_validates_against_its_schema() {
    let mut checked = 0;
    for sample in samples() {
        let golden_path = sample.with_extension("expected.json");
        let mut golden: Value =
            serde_json::from_slice(&std::fs::read(&golden_path).unwrap()).unwrap();
        // The golden files leave out what changes per request.
        golden["id"] = json!("0193a8e4-5c3e-7a2b-8c4d-1e2f3a4b5c6d");
        golden["received_at"] = json!("2026-11-22T04:00:00.000Z");
        let kind = golden["type"].as_str().unwrap().to_owned();
        let problems = errors(&kind, &golden);
        assert!(
            problems.is_empty(),
            "{}: {problems:#?}",
            golden_path.display()
        );
        checked += 1;
    }
    assert_eq!(checked, samples().len());
    assert!(checked >= 21, "{checked}");
}

#[test]
fn fresh_records_with_site_extra_and_odd_shapes_validate() {
    let bodies = [
        std::fs::read(fixtures_dir().join("chat_ended.json")).unwrap(),
        br#"{"event":"bot_started","bot":{"id":1},"visitor":{"chat_id":"c","status":42,"new_key":[1]}}"#.to_vec(),
        br#"{"event":"chat_started","visitor":{"chats":"many","time_zone":"Mars"},"chat":"x"}"#.to_vec(),
        br#"{"event":"chat_ended","chat":{"attachment":{"name":"a.png","url":"https://x/a.png"},"wrap_up":{"category":"c","time":0},"operators":"A, B"}}"#.to_vec(),
        br#"{"event":"online","operator_id":{"weird":true}}"#.to_vec(),
        br#"{"event":"offline_message_submitted","offline_message":{"id":5,"custom_fields":[{"field_id":7,"name":"n","value":1}]}}"#.to_vec(),
    ];
    for body in bodies {
        let record = Record::from_body(&body, Site::parse("eu-1"), Timestamp::now()).unwrap();
        let value = serde_json::to_value(&record).unwrap();
        let problems = errors(record.kind.as_str(), &value);
        assert!(
            problems.is_empty(),
            "{}: {problems:#?}",
            String::from_utf8_lossy(&body)
        );
    }
}

#[test]
fn a_record_with_a_wrong_type_or_an_undocumented_field_fails() {
    let body = std::fs::read(fixtures_dir().join("chat_ended.json")).unwrap();
    let record = Record::from_body(&body, None, Timestamp::now()).unwrap();
    let good = serde_json::to_value(&record).unwrap();
    assert!(errors("chat_ended", &good).is_empty());

    let mut wrong_type = good.clone();
    wrong_type["visitor"]["chats"] = json!("many");
    assert!(!errors("chat_ended", &wrong_type).is_empty());

    let mut undocumented = good.clone();
    undocumented["chat"]["sentiment"] = json!("happy");
    assert!(!errors("chat_ended", &undocumented).is_empty());

    let mut bad_time = good.clone();
    bad_time["received_at"] = json!("yesterday");
    assert!(!errors("chat_ended", &bad_time).is_empty());

    // A record is only valid against the schema of its own type.
    assert!(!errors("chat_started", &good).is_empty());
}

#[test]
fn the_schemas_directory_is_what_schemas_write_generates() {
    let router = Router::new(
        &Config::load_with_env(None, Some(Default::default()))
            .unwrap()
            .topics,
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let mut expected: Vec<_> = EventType::ALL
        .iter()
        .map(|k| format!("{k}.schema.json"))
        .collect();
    expected.sort();
    assert_eq!(files, expected, "schemas/ holds one file per record type");
    for kind in EventType::ALL {
        let path = dir.join(format!("{kind}.schema.json"));
        assert!(
            std::fs::read_to_string(&path).unwrap() == router.schema_text(kind),
            "{} differs from the declarations; run `cargo run -- schemas write --dir schemas`",
            path.display()
        );
    }
}
