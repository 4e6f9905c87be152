use serde_json::{json, Value};

use super::*;

/// The record of `body`; the body's text is leaked so the record may borrow it.
fn record(body: Value) -> Record<'static> {
    let text: &'static str = Box::leak(body.to_string().into_boxed_str());
    Record::from_body(text.as_bytes(), None, Timestamp::now()).unwrap()
}

fn value(r: &Record) -> Value {
    serde_json::to_value(r).unwrap()
}

#[test]
fn event_values_match_case_insensitively_after_trimming() {
    for (event, kind) in [
        ("chat_ended", EventType::ChatEnded),
        ("  Chat_Ended\n", EventType::ChatEnded),
        ("CHAT_WRAPED_UP", EventType::ChatWrappedUp),
        ("chat_wrapped_up", EventType::ChatWrappedUp),
        ("chat_request", EventType::ChatRequested),
        ("chat_requested", EventType::ChatRequested),
        ("chat_transferred", EventType::ChatTransferred),
        ("chat_started", EventType::ChatStarted),
        (
            "offline_message_submitted",
            EventType::OfflineMessageSubmitted,
        ),
        (" Online ", EventType::AgentStatusChanged),
        ("bot_started", EventType::Unknown),
        ("", EventType::Unknown),
    ] {
        assert_eq!(EventType::classify(event).0, kind, "{event:?}");
    }
    let r = record(json!({"event": " AWAY ", "operator_id": 7}));
    assert_eq!(r.event, " AWAY ", "the raw value is kept");
    assert_eq!(r.agent.unwrap().status, AgentStatus::Away);
}

#[test]
fn agent_status_changed_becomes_an_agent_object() {
    let r =
        record(json!({"event": "logout", "operator_id": "01000000-0000-0000-0000-0100000192b0"}));
    assert_eq!(r.kind, EventType::AgentStatusChanged);
    assert_eq!(r.key(), Some("01000000-0000-0000-0000-0100000192b0"));
    assert_eq!(
        value(&r)["agent"],
        json!({"operator_id": "01000000-0000-0000-0000-0100000192b0", "status": "logout"})
    );
    assert_eq!(
        record(json!({"event": "online", "operator_id": 1})).key(),
        Some("1")
    );
}

#[test]
fn chat_id_is_the_first_present_of_chat_id_chat_id_visitor_chat_id() {
    let both = record(
        json!({"event": "chat_ended", "chat_id": 1, "chat": {"id": 2}, "visitor": {"chat_id": 3}}),
    );
    assert_eq!(both.chat_id.as_deref(), Some("1"));
    let chat = record(json!({"event": "chat_ended", "chat": {"id": 2}, "visitor": {"chat_id": 3}}));
    assert_eq!(chat.chat_id.as_deref(), Some("2"));
    assert_eq!(chat.key(), Some("2"));
    let visitor = record(json!({"event": "chat_started", "visitor": {"chat_id": 3}}));
    assert_eq!(visitor.key(), Some("3"));
    let none = record(json!({"event": "chat_started"}));
    assert_eq!(none.key(), None);
}

#[test]
fn offline_messages_are_keyed_by_their_id() {
    let r = record(
        json!({"event": "offline_message_submitted", "offline_message": {"id": 58, "time": "/Date(1584423203253)/"}, "visitor": {"chat_id": 99}}),
    );
    assert_eq!(r.key(), Some("58"));
    assert_eq!(
        r.occurred_at.unwrap().to_string(),
        "2020-03-17T05:33:23.253Z"
    );
}

#[test]
fn unknown_events_keep_every_key_and_have_no_key() {
    let r = record(json!({
        "event": "bot_chat_started",
        "bot": {"id": 5, "name": "Ava"},
        "operator_id": 9,
        "visitor": {"chat_id": "c1", "status": 0, "brand_new": true}
    }));
    assert_eq!(r.kind, EventType::Unknown);
    assert_eq!(r.key(), None);
    let v = value(&r);
    assert_eq!(v["type"], "unknown");
    assert_eq!(
        v["extra"],
        json!({"bot": {"id": 5, "name": "Ava"}, "operator_id": 9})
    );
    assert_eq!(
        v["visitor"]["status"],
        json!({"code": 0, "name": "waiting_for_chat"})
    );
    assert_eq!(v["visitor"]["extra"], json!({"brand_new": true}));
}

#[test]
fn unknown_keys_are_kept_per_object_under_extra() {
    let v = value(&record(json!({
        "event": "chat_ended",
        "new_top": 1,
        "chat": {"id": "c", "sentiment": "happy", "wrap_up": {"category": "x", "score": 3}},
        "visitor": {"chat_id": "c", "custom_variables": [{"name": "a", "value": "b", "type": 1}]}
    })));
    assert_eq!(v["extra"], json!({"new_top": 1}));
    assert_eq!(v["chat"]["extra"], json!({"sentiment": "happy"}));
    assert_eq!(v["chat"]["wrap_up"]["extra"], json!({"score": 3}));
    assert_eq!(
        v["visitor"]["custom_variables"][0]["extra"],
        json!({"type": 1})
    );
    // An object without unknown keys has no `extra` at all.
    assert!(v["visitor"].get("extra").is_none());
}

#[test]
fn values_of_the_wrong_type_are_kept_under_extra() {
    let v = value(&record(json!({
        "event": "chat_started",
        "visitor": {"chats": "many", "first_visit_time": "last tuesday", "status": [], "name": {"first": "A"}},
        "chat": "x",
        "chat_id": 1.5,
    })));
    assert_eq!(v["visitor"]["chats"], Value::Null);
    assert_eq!(
        v["visitor"]["extra"],
        json!({"chats": "many", "first_visit_time": "last tuesday", "status": [], "name": {"first": "A"}})
    );
    assert_eq!(v["chat"], Value::Null);
    assert_eq!(v["extra"], json!({"chat": "x", "chat_id": 1.5}));

    let v = value(&record(json!({"event": "chat_started", "visitor": "x"})));
    assert_eq!(v["visitor"], Value::Null);
    assert_eq!(v["extra"], json!({"visitor": "x"}));
}

#[test]
fn occurred_at_comes_from_the_event_own_time() {
    let ended = record(json!({"event": "chat_ended", "chat": {"end_time": 1584416219000_i64}}));
    assert_eq!(
        ended.occurred_at.unwrap().to_string(),
        "2020-03-17T03:36:59.000Z"
    );
    let wrapped =
        record(json!({"event": "chat_wrapped_up", "wrapup": {"time": "2020-03-17T05:18:44.807Z"}}));
    assert_eq!(
        wrapped.occurred_at.unwrap().to_string(),
        "2020-03-17T05:18:44.807Z"
    );
    let transferred =
        record(json!({"event": "chat_transferred", "chat": {"end_time": 1584416219000_i64}}));
    assert_eq!(transferred.occurred_at, None);
    let started = record(json!({"event": "chat_started"}));
    assert_eq!(started.occurred_at, None);
}

#[test]
fn escaped_slashes_in_urls_and_dates() {
    let body = br#"{"event":"chat_started","visitor":{"landing_page":"https:\/\/example.com\/a","visit_time":"\/Date(1584415749307)\/"}}"#;
    let v = value(&Record::from_body(body, None, Timestamp::now()).unwrap());
    assert_eq!(v["visitor"]["landing_page"], "https://example.com/a");
    assert_eq!(v["visitor"]["visit_time"], "2020-03-17T03:29:09.307Z");
}

#[test]
fn utc_offset_is_added_next_to_the_time_zone() {
    let v = value(&record(
        json!({"event": "chat_started", "visitor": {"time_zone": "GMT 06:00"}}),
    ));
    assert_eq!(v["visitor"]["time_zone"], "GMT 06:00");
    assert_eq!(v["visitor"]["utc_offset_minutes"], 360);
    let v = value(&record(
        json!({"event": "chat_started", "visitor": {"time_zone": "Mars/Olympus"}}),
    ));
    assert_eq!(v["visitor"]["time_zone"], "Mars/Olympus");
    assert_eq!(v["visitor"]["utc_offset_minutes"], Value::Null);
}

#[test]
fn transcript_and_operators() {
    let v = value(&record(json!({"event": "chat_ended", "chat": {
        "chat_transcript": "a\nb\n", "operators": "Walid,Ann"
    }})));
    assert_eq!(v["chat"]["transcript"], json!(["a", "b"]));
    assert_eq!(v["chat"]["operators"], json!(["Walid", "Ann"]));
    assert!(v["chat"].get("chat_transcript").is_none());
}

#[test]
fn fingerprint_is_stable_for_identical_bodies_and_depends_on_the_site() {
    let body = br#"{"event":"online","operator_id":1}"#;
    let a = Record::from_body(body, None, Timestamp::now()).unwrap();
    let b = Record::from_body(body, None, Timestamp::now()).unwrap();
    assert_eq!(a.fingerprint, b.fingerprint);
    assert_ne!(a.id, b.id);
    let site = Record::from_body(body, Site::parse("eu"), Timestamp::now()).unwrap();
    assert_ne!(site.fingerprint, a.fingerprint);
    let mut expected = Sha256::new();
    expected.update(b"eu");
    expected.update(body);
    assert_eq!(site.fingerprint, format!("{:x}", expected.finalize()));
}

#[test]
fn rejections() {
    let reject = |body: &[u8]| Record::from_body(body, None, Timestamp::now()).unwrap_err();
    assert_eq!(reject(b"not json").code(), "invalid_json");
    assert_eq!(reject(b"").code(), "invalid_json");
    assert_eq!(reject(b"[1,2]").code(), "invalid_json");
    assert_eq!(reject(b"\"chat_ended\"").code(), "invalid_json");
    assert_eq!(reject(b"{\"event\": 1}").code(), "missing_event");
    assert_eq!(reject(b"{\"event\": null}").code(), "missing_event");
    assert_eq!(reject(b"{}").code(), "missing_event");
    assert_eq!(reject(&[0xff, 0xfe]).code(), "invalid_json");
}

#[test]
fn hostile_shapes_never_panic() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_object = format!(
        "{{\"event\":\"chat_ended\",\"chat\":{}1{}}}",
        "{\"a\":".repeat(5000),
        "}".repeat(5000)
    );
    let bodies: Vec<Vec<u8>> = vec![
        deep.into_bytes(),
        deep_object.into_bytes(),
        br#"{"event":"chat_ended","chat":{"end_time":1e400}}"#.to_vec(),
        br#"{"event":"chat_ended","chat":{"end_time":-1e300,"start_time":"/Date(-99999999999999999)/"}}"#.to_vec(),
        b"{\"event\":\"chat\\u0000ended\",\"x\":\"\\u0000\"}".to_vec(),
        br#"{"event":"chat_ended","event":"chat_started"}"#.to_vec(),
        br#"{"event":"chat_ended","visitor":{"status":18446744073709551615,"chats":-1,"time_zone":"GMT +99:99"}}"#.to_vec(),
        br#"{"event":"chat_ended","chat":{"attachment":[1,{"name":null}],"operators":[null],"custom_variable":{"a":1}}}"#.to_vec(),
        br#"{"event":"online","operator_id":{"nested":[]}}"#.to_vec(),
        br#"{"event":"chat_wrapped_up","wrapup":{"fields":[{"id":[],"name":1}]}}"#.to_vec(),
    ];
    for body in bodies {
        if let Ok(r) = Record::from_body(&body, None, Timestamp::now()) {
            let out = serde_json::to_vec(&r).unwrap();
            serde_json::from_slice::<Value>(&out).unwrap();
        }
    }
}

#[test]
fn site_labels() {
    assert!(Site::parse("eu-1.prod_a").is_some());
    assert!(Site::parse(&"a".repeat(64)).is_some());
    assert!(Site::parse(&"a".repeat(65)).is_none());
    assert!(Site::parse("").is_none());
    assert!(Site::parse("a/b").is_none());
    assert!(Site::parse("é").is_none());
}

/// The streaming reader agrees with reading a parsed `serde_json` map, whose semantics
/// (duplicate keys: first position, last value) are the reference, for bodies with
/// duplicate and unknown keys in any order at every level.
/// Keys of the generated payloads: known ones, at every level, and others.
const KEYS: &[&str] = &[
    "event",
    "visitor",
    "chat",
    "wrapup",
    "wrap_up",
    "offline_message",
    "chat_id",
    "operator_id",
    "id",
    "name",
    "status",
    "end_time",
    "custom_variable",
    "custom_variables",
    "custom_fields",
    "attachment",
    "fields",
    "uri",
    "zz",
    "extra",
];
/// A JSON object of `entries`, in their order, duplicates kept.
fn text(entries: &[(String, Value)]) -> String {
    let body: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), v))
        .collect();
    format!("{{{}}}", body.join(","))
}

#[test]
fn streaming_reader_agrees_with_a_parsed_map() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let leaf = prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        "[a-z]{0,3}".prop_map(Value::String),
        Just(json!("/Date(1584416219000)/")),
    ];
    let key = proptest::sample::select(KEYS).prop_map(str::to_owned);
    let json = leaf.prop_recursive(3, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|entries| serde_json::from_str(&text(&entries)).unwrap()),
        ]
    });
    let events = prop_oneof![Just("chat_ended"), Just("online"), Just("x")];
    let body = (
        events,
        proptest::collection::vec((proptest::sample::select(KEYS), json), 0..8),
    )
        .prop_map(|(event, entries)| {
            let mut all = vec![("event".to_owned(), json!(event))];
            all.extend(entries.into_iter().map(|(k, v)| (k.to_owned(), v)));
            text(&all)
        });
    let mut runner = TestRunner::new(Config {
        cases: 2000,
        ..Config::default()
    });
    runner
        .run(&body, |body| {
            let now = Timestamp::now();
            let streamed = Record::from_body(body.as_bytes(), None, now);
            let map: Map<String, Value> = serde_json::from_str(&body).unwrap();
            let meter = Meter::unlimited();
            let fields = Fields::new(shape::Object::from_map(&PAYLOAD, map), &meter);
            let reference = Record::normalize(fields, body.as_bytes(), None, now);
            match (streamed, reference) {
                (Ok(mut a), Ok(b)) => {
                    a.id = b.id;
                    // Text, not `Value`: map equality ignores key order.
                    let text = |r: &Record| serde_json::to_string(r).unwrap();
                    prop_assert_eq!(text(&a), text(&b));
                }
                (a, b) => prop_assert_eq!(a.err(), b.err()),
            }
            Ok(())
        })
        .unwrap();
}

/// An offline message has no chat: `chat_id` is null, and a top-level one is kept in `extra`.
#[test]
fn an_offline_message_has_no_chat_id() {
    let r = record(json!({
        "event": "offline_message_submitted",
        "offline_message": {"id": "m-1"},
        "visitor": {"chat_id": "m-1"}
    }));
    assert_eq!(r.chat_id, None);
    assert_eq!(r.key(), Some("m-1"));
    assert_eq!(value(&r)["visitor"]["chat_id"], "m-1");
    let r = record(json!({
        "event": "offline_message_submitted",
        "chat_id": "c-9",
        "offline_message": {"id": "m-1"}
    }));
    assert_eq!(r.chat_id, None);
    assert_eq!(r.extra["chat_id"], "c-9");
}

/// A date that cannot be written is null in `occurred_at` too, so `ce_time` never carries it.
#[test]
fn an_unwritable_event_time_leaves_occurred_at_null() {
    let r = record(json!({
        "event": "chat_ended",
        "chat": {"id": "c", "end_time": "/Date(1584416219000000)/"}
    }));
    assert_eq!(r.occurred_at, None);
    assert_eq!(
        value(&r)["chat"]["extra"]["end_time"],
        "/Date(1584416219000000)/"
    );
}
