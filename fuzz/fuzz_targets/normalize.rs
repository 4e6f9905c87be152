//! Parse + normalize + serialize any bytes: must never panic, and an accepted body must
//! be published as JSON that parses back and is byte for byte what `serde_json` writes.
#![no_main]

use std::sync::LazyLock;

use comm100_bridge::config::Config;
use comm100_bridge::event::{Record, Site, Timestamp};
use comm100_bridge::route::Router;
use libfuzzer_sys::fuzz_target;

static ROUTER: LazyLock<Router> = LazyLock::new(|| {
    let config = Config::load_with_env(None, Some(Default::default())).expect("defaults load");
    Router::new(&config.topics)
});

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = Record::from_body(data, Site::parse("fuzz"), Timestamp::now()) {
        let text = ROUTER.route(&record).value;
        serde_json::from_slice::<serde_json::Value>(&text).expect("a record parses back");
        let reference = serde_json::to_vec(&record).expect("a record serializes");
        assert!(text == reference, "published bytes differ from serde_json's");
    }
});
