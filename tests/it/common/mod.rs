//! Shared test harness: a bridge on port 0 against an in-process mock Kafka cluster, an HTTP
//! client and a consumer that reads back exactly what a 200 answer points at.

#![allow(dead_code)]

mod bridge;
mod comm100;
mod process;
mod requests;
mod senders;
mod spawn;
mod topics;

pub use bridge::*;
pub use comm100::*;
pub use process::*;
pub use requests::*;
pub use senders::*;
pub use spawn::*;
pub use topics::*;

use std::path::{Path, PathBuf};
use std::time::Duration;
use std::time::Instant;

use serde_json::Value;

pub const TOKEN: &str = "test-token-0123456789";

pub const PARTITIONS: i32 = 3;

/// Appends a line to `target/tmp/test-report.txt`, which `.ci/run` prints.
pub fn report(line: &str) {
    use std::io::Write;
    eprintln!("{line}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-report.txt");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

/// `path` in the repository.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub fn fixtures_dir() -> PathBuf {
    repo("tests/fixtures")
}

/// The documents of a multi-document YAML text, empty ones left out.
pub fn yaml_documents(text: &str) -> Vec<serde_yaml_ng::Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| <serde_yaml_ng::Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// Every sample payload (not the `.expected.json` golden records).
pub fn samples() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.ends_with(".json") && !name.ends_with(".expected.json")
        })
        .collect();
    paths.sort();
    paths
}

/// Polls `check` until it gives a value, failing the test after `bound` with `what` it
/// waited for.
pub async fn eventually<T>(
    bound: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < bound, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn wait_until(mut condition: impl FnMut() -> bool, bound: Duration) {
    eventually(bound, "condition", async || condition().then_some(())).await
}

/// The JSON Schema of records of type `kind`, from `schemas/`, checking formats.
pub fn validator(kind: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("schemas/{kind}.schema.json"));
    let schema: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    jsonschema::draft7::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
