//! Golden tests: each sample in `tests/fixtures/NAME.json` normalizes to the record in
//! `tests/fixtures/NAME.expected.json`, compared field by field (`id` and `received_at`
//! excepted). `UPDATE_GOLDEN=1 cargo test --test it golden::` rewrites the expected files.

use std::path::Path;

use crate::common::samples;

use comm100_bridge::event::{Record, Timestamp};
use serde_json::Value;

fn normalized(sample: &Path) -> Value {
    let body = std::fs::read(sample).unwrap();
    let record = Record::from_body(&body, None, Timestamp::now()).unwrap();
    let mut value = serde_json::to_value(&record).unwrap();
    let object = value.as_object_mut().unwrap();
    assert!(object.remove("id").unwrap().is_string());
    assert!(object.remove("received_at").unwrap().is_string());
    value
}

/// Every path at which `actual` and `expected` differ.
fn diff(path: &str, actual: &Value, expected: &Value, out: &mut Vec<String>) {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            for (k, ev) in e {
                match a.get(k) {
                    Some(av) => diff(&format!("{path}.{k}"), av, ev, out),
                    None => out.push(format!("{path}.{k}: missing, expected {ev}")),
                }
            }
            for k in a.keys().filter(|k| !e.contains_key(*k)) {
                out.push(format!("{path}.{k}: unexpected key, value {}", a[k]));
            }
        }
        (Value::Array(a), Value::Array(e)) if a.len() == e.len() => {
            for (i, (av, ev)) in a.iter().zip(e).enumerate() {
                diff(&format!("{path}[{i}]"), av, ev, out);
            }
        }
        _ if actual == expected => {}
        _ => out.push(format!("{path}: got {actual}, expected {expected}")),
    }
}

#[test]
fn every_sample_normalizes_to_its_golden_record() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let samples = samples();
    assert!(samples.len() >= 13, "the fixtures are missing: {samples:?}");
    let mut failures = Vec::new();
    for sample in &samples {
        let actual = normalized(sample);
        let expected_path = sample.with_extension("expected.json");
        if update {
            let text = serde_json::to_string_pretty(&actual).unwrap() + "\n";
            std::fs::write(&expected_path, text).unwrap();
            continue;
        }
        let expected: Value = match std::fs::read(&expected_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap(),
            Err(e) => panic!(
                "{}: {e}; run with UPDATE_GOLDEN=1 and review",
                expected_path.display()
            ),
        };
        let mut differences = Vec::new();
        diff("$", &actual, &expected, &mut differences);
        if !differences.is_empty() {
            failures.push(format!(
                "{}:\n  {}",
                sample.display(),
                differences.join("\n  ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_comparison_catches_a_changed_field() {
    let sample = &samples()[0];
    let actual = normalized(sample);
    let mut changed = actual.clone();
    changed["type"] = Value::String("something_else".into());
    changed
        .as_object_mut()
        .unwrap()
        .insert("new".into(), Value::Null);
    let mut differences = Vec::new();
    diff("$", &actual, &changed, &mut differences);
    assert_eq!(differences.len(), 2, "{differences:?}");
}
