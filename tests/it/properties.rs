//! Property tests of parse + normalize: arbitrary bytes never panic, and arbitrary JSON put
//! where Comm100's fields go always yields a record whose published form parses back and is
//! byte for byte what `serde_json` writes for it; and the memory meter counts at least what
//! parsing, normalizing and routing a body really allocates.

use comm100_bridge::config::Config as BridgeConfig;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use comm100_bridge::event::{EventType, Meter, Record, Site, Timestamp};
use comm100_bridge::route::Router;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value};

const CASES: u32 = 3000;

/// The system allocator, counting on each thread the bytes it holds and their peak.
struct Counting;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = HELD.try_with(|held| {
        let now = held.get() + delta;
        held.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // While it moves, both blocks are held.
        count(new_size as isize);
        count(-(layout.size() as isize));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most this thread held at once while `f` ran, beyond what it held before.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = HELD.with(Cell::get);
    PEAK.with(|peak| peak.set(before));
    let out = f();
    (out, (PEAK.with(Cell::get) - before).max(0) as usize)
}

/// Checks that routing `body` allocates no more than the meter counted; the two figures.
fn metered(router: &Router, body: &[u8]) -> Result<(usize, usize), TestCaseError> {
    let meter = Meter::unlimited();
    let (message, peak) =
        peak_during(|| router.route_body(body, Site::parse("p"), Timestamp::now(), &meter));
    drop(message);
    prop_assert!(
        peak <= meter.peak(),
        "allocated {} bytes, counted {} for a body of {}",
        peak,
        meter.peak(),
        body.len()
    );
    Ok((peak, meter.peak()))
}

/// Keys the normalizer looks at, so arbitrary values land in the interesting places.
const KEYS: &[&str] = &[
    "event",
    "visitor",
    "chat",
    "offline_message",
    "wrapup",
    "wrap_up",
    "chat_id",
    "operator_id",
    "id",
    "name",
    "status",
    "time_zone",
    "department",
    "chats",
    "visits",
    "page_views",
    "first_visit_time",
    "visit_time",
    "end_time",
    "start_time",
    "time",
    "attachment",
    "uri",
    "url",
    "custom_variables",
    "custom_variable",
    "custom_fields",
    "field_id",
    "value",
    "fields",
    "operators",
    "chat_transcript",
    "rating",
    "extra",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(KEYS).prop_map(str::to_owned),
        1 => ".{0,12}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
        Just(Value::String("/Date(1584423203253+0800)/".into())),
        Just(Value::String("GMT -08:00".into())),
        Just(Value::String("a⊙b⊙".into())),
        (-1i64..20).prop_map(Value::from),
        date(),
        proptest::sample::select(&["", " ", "\t\n", "a\nb⊙c⊙⊙", "a\r\n\r\nb\n"][..])
            .prop_map(Value::from),
    ]
}

/// Dates in every shape Comm100 sends, at every magnitude: seconds, milliseconds,
/// microseconds, .NET's "no date" sentinels, lower-case and offset forms.
fn date() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(|n| Value::from(format!("/Date({n})/"))),
        (any::<i64>(), -1500i32..1500).prop_map(|(n, z)| Value::from(format!("/date({n}{z:+05})/"))),
        (0u32..19).prop_flat_map(|digits| (0..10u64.pow(digits)).prop_map(Value::from)),
        (0u32..19).prop_flat_map(|digits| (0..10u64.pow(digits)).prop_map(|n| Value::from(n.to_string()))),
        proptest::sample::select(
            &[
                "/Date(-62135596800000)/",
                "/Date(253402300799999)/",
                "0001-01-01T00:00:00",
                "9999-12-31T23:59:59.9999999",
                "2020-03-17T05:33:23+0000",
                "2020-03-17T05:33:23.5-05:30",
                "2020-03-17 05:33:23",
                "1584423203253123",
                "10000-01-01T00:00:00Z",
            ][..]
        )
        .prop_map(Value::from),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(key(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn event() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(
            &[
                "offline_message_submitted",
                "chat_started",
                " Chat_Ended ",
                "chat_wrapped_up",
                "chat_wraped_up",
                "online",
                "AWAY",
                "login",
                "logout",
                "chat_request",
                "chat_requested",
                "chat_transferred",
            ][..]
        )
        .prop_map(str::to_owned),
        ".{0,16}",
    ]
}

fn payload() -> impl Strategy<Value = Value> {
    (event(), btree_map(key(), json(), 0..8)).prop_map(|(event, fields)| {
        let mut object: Map<String, Value> = fields.into_iter().collect();
        object.insert("event".into(), Value::String(event));
        Value::Object(object)
    })
}

/// A bundled sample with one to four of its keys (at the top or in one of its objects) set
/// to generated values: realistic records with odd values where Comm100 puts them.
fn mutated_sample() -> impl Strategy<Value = Value> {
    let samples: Vec<Value> = crate::common::samples()
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect();
    let objects = &["", "visitor", "chat", "offline_message", "wrapup"][..];
    (
        proptest::sample::select(samples),
        vec((proptest::sample::select(objects), key(), json()), 1..4),
    )
        .prop_map(|(mut sample, changes)| {
            for (object, key, value) in changes {
                let target = match object {
                    "" => sample.as_object_mut(),
                    name => sample.get_mut(name).and_then(Value::as_object_mut),
                };
                if let Some(target) = target {
                    if key != "event" {
                        target.insert(key, value);
                    }
                }
            }
            sample
        })
}

/// The schema of each record type, compiled once.
fn validators() -> std::collections::HashMap<&'static str, jsonschema::Validator> {
    EventType::ALL
        .iter()
        .map(|kind| (kind.as_str(), crate::common::validator(kind.as_str())))
        .collect()
}

/// The router of the default configuration: what the bridge publishes.
fn router() -> Router {
    let config = BridgeConfig::load_with_env(None, Some(Default::default())).unwrap();
    Router::new(&config.topics)
}

#[test]
fn arbitrary_bytes_never_panic() {
    let router = router();
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        ..Config::default()
    });
    runner
        .run(&vec(any::<u8>(), 0..2048), |bytes| {
            if let Ok(record) = Record::from_body(&bytes, None, Timestamp::now()) {
                let text = router.route(&record).value;
                prop_assert!(serde_json::from_slice::<Value>(&text).is_ok());
            }
            Ok(())
        })
        .unwrap();
    crate::common::report(&format!(
        "proptest: {CASES} arbitrary byte strings, no panic"
    ));
}

#[test]
fn arbitrary_json_payloads_normalize_to_records_that_parse_back() {
    let router = router();
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        ..Config::default()
    });
    runner
        .run(&payload(), |payload| {
            let body = serde_json::to_vec(&payload).unwrap();
            let record =
                Record::from_body(&body, Site::parse("p"), Timestamp::now()).map_err(|e| {
                    TestCaseError::fail(format!("rejected an object with a string event: {e}"))
                })?;
            let event = payload["event"].as_str().unwrap();
            prop_assert_eq!(record.kind, EventType::classify(event).0);
            let text = router.route(&record).value;
            prop_assert_eq!(
                std::str::from_utf8(&text).unwrap(),
                serde_json::to_string(&record).unwrap()
            );
            let back: Value = serde_json::from_slice(&text).unwrap();
            prop_assert_eq!(&back["event"], &payload["event"]);
            prop_assert_eq!(&back["schema_version"], &Value::from(1));
            // Nothing at the top level is lost: unknown keys are under `extra`.
            for key in payload.as_object().unwrap().keys() {
                let known = [
                    "event",
                    "visitor",
                    "chat",
                    "offline_message",
                    "wrapup",
                    "chat_id",
                    "operator_id",
                ];
                if !known.contains(&key.as_str()) {
                    prop_assert!(back["extra"].get(key).is_some(), "{} was dropped", key);
                }
            }
            Ok(())
        })
        .unwrap();
    crate::common::report(&format!(
        "proptest: {CASES} arbitrary JSON payloads normalized and re-parsed"
    ));
}

/// Bodies that cost many times their size once parsed, `size` bytes or less.
fn costly_bodies(size: usize) -> Vec<(&'static str, String)> {
    let fill = |unit: &str, overhead: usize| unit.repeat((size - overhead) / unit.len());
    vec![
        (
            "zeros",
            format!(r#"{{"event":"chat_ended","x":[{}0]}}"#, fill("0,", 64)),
        ),
        (
            "unknown keys",
            format!(
                r#"{{"event":"chat_ended",{}"z":0}}"#,
                (0..size / 24)
                    .map(|i| format!(r#""k{i:07}":[0,0,0],"#))
                    .collect::<String>()
            ),
        ),
        (
            "escapes",
            format!(
                r#"{{"event":"chat_ended","chat":{{"chat_transcript":"{}"}}}}"#,
                fill("\\n", 80)
            ),
        ),
        (
            "escaped unknown",
            format!(r#"{{"event":"chat_ended","x":"{}"}}"#, fill("\\u00e9", 80)),
        ),
        (
            "empty objects",
            format!(
                r#"{{"event":"chat_ended","chat":{{"attachment":[{}{{}}]}}}}"#,
                fill("{},", 80)
            ),
        ),
        (
            "objects in unknown",
            format!(
                r#"{{"event":"chat_ended","x":[{}{{}}]}}"#,
                fill(r#"{"a":1},"#, 80)
            ),
        ),
        (
            "custom variables",
            format!(
                r#"{{"event":"chat_started","visitor":{{"custom_variables":[{}{{}}]}}}}"#,
                fill(r#"{"name":"n","value":"v"},"#, 120)
            ),
        ),
        (
            "transcript lines",
            format!(
                r#"{{"event":"chat_ended","chat":{{"chat_transcript":"{}"}}}}"#,
                fill("a\u{2299}", 80)
            ),
        ),
        (
            "escaped transcript lines",
            format!(
                r#"{{"event":"chat_ended","chat":{{"chat_transcript":"{}"}}}}"#,
                fill("a\\n", 80)
            ),
        ),
        (
            "operator names",
            format!(
                r#"{{"event":"chat_transferred","chat":{{"operators":"{}"}}}}"#,
                fill("a,", 80)
            ),
        ),
        (
            "mistyped list",
            format!(
                r#"{{"event":"chat_ended","chat":{{"attachment":[{}1]}}}}"#,
                fill(r#"{"name":"n"},"#, 80)
            ),
        ),
        (
            "empty arrays",
            format!(r#"{{"event":"chat_ended","x":[{}[]]}}"#, fill("[],", 64)),
        ),
        (
            "nested",
            format!(
                r#"{{"event":"chat_ended","x":{}0{}}}"#,
                "[".repeat(120),
                "]".repeat(120)
            ),
        ),
    ]
}

#[test]
fn the_meter_counts_at_least_what_a_body_takes() {
    let router = router();
    let mut worst: f64 = 0.0;
    for path in crate::common::samples() {
        let body = std::fs::read(&path).unwrap();
        let (peak, counted) = metered(&router, &body).unwrap();
        worst = worst.max(counted as f64 / body.len() as f64);
        assert!(peak > 0, "{}", path.display());
    }
    let mut figures = Vec::new();
    for (name, body) in costly_bodies(256 << 10) {
        let (peak, counted) =
            metered(&router, body.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        figures.push(format!(
            "{name} {:.1}x (allocated {:.1}x)",
            counted as f64 / body.len() as f64,
            peak as f64 / body.len() as f64
        ));
    }
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        ..Config::default()
    });
    runner
        .run(&payload(), |payload| {
            metered(&router, &serde_json::to_vec(&payload).unwrap()).map(drop)
        })
        .unwrap();
    crate::common::report(&format!(
        "meter: {CASES} arbitrary payloads, the samples and 256 KiB costly bodies each allocate no more than counted; counted per body byte: {}",
        figures.join(", ")
    ));
}

#[test]
fn generated_payloads_make_records_that_validate_against_their_schema() {
    const PAYLOADS: u32 = 10_000;
    let router = router();
    let validators = validators();
    let mut runner = TestRunner::new(Config {
        cases: PAYLOADS,
        ..Config::default()
    });
    runner
        .run(&prop_oneof![payload(), mutated_sample()], |payload| {
            let body = serde_json::to_vec(&payload).unwrap();
            let record = Record::from_body(&body, Site::parse("p"), Timestamp::now()).unwrap();
            let message = router.route(&record);
            let value: Value = serde_json::from_slice(&message.value).unwrap();
            let kind = record.kind.as_str();
            let problems: Vec<String> = validators[kind]
                .iter_errors(&value)
                .map(|e| format!("{e} at {}", e.instance_path()))
                .collect();
            prop_assert!(problems.is_empty(), "{:#?}\n{}", problems, value);
            let time = message
                .headers
                .iter()
                .find(|(k, _)| k == "ce_time")
                .map(|(_, v)| v.to_string())
                .unwrap();
            prop_assert!(
                chrono::DateTime::parse_from_rfc3339(&time).is_ok() && time.len() == 24,
                "ce_time {}",
                time
            );
            Ok(())
        })
        .unwrap();
    crate::common::report(&format!(
        "proptest: {PAYLOADS} generated payloads (arbitrary, and samples with generated values), every record valid against its type's schema, every ce_time RFC 3339"
    ));
}
