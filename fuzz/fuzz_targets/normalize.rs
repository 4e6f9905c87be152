//! Parse + normalize + serialize any bytes: must never panic, and an accepted body must
//! serialize to JSON that parses back.
#![no_main]

use comm100_bridge::event::{Record, Site, Timestamp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = Record::from_body(data, Site::parse("fuzz"), Timestamp::now()) {
        let text = serde_json::to_vec(&record).expect("a record serializes");
        serde_json::from_slice::<serde_json::Value>(&text).expect("a record parses back");
    }
});
