//! What Comm100's API says happened: offline messages and ended chats (with wrap-ups), a
//! page at a time, each made into the webhook body Comm100 would have posted, so that the
//! record comes from the same normalizer.

use http::Method;
use serde_json::{json, Map, Value};

use crate::comm100::{Api, ApiError};
use crate::event::{EventType, Timestamp};

/// Items per page, at most (Comm100's default is 50).
pub const PAGE_SIZE: usize = 100;

/// Where the events of a record type come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// `POST livechat/offlineMessages:search`.
    OfflineMessages,
    /// `POST livechat/chats:Search`, with wrap-ups: chat_ended and chat_wrapped_up.
    Chats,
}

impl Source {
    pub fn of(kind: EventType) -> Option<Self> {
        match kind {
            EventType::OfflineMessageSubmitted => Some(Self::OfflineMessages),
            EventType::ChatEnded | EventType::ChatWrappedUp => Some(Self::Chats),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OfflineMessages => "offline_messages",
            Self::Chats => "chats",
        }
    }
}

/// One event found in the API: its record type, the id a webhook record of it carries
/// (the chat's or the offline message's GUID), its time and the webhook body.
#[derive(Debug, Clone)]
pub struct Found {
    pub kind: EventType,
    pub id: String,
    pub at: Timestamp,
    pub body: Value,
}

/// A page of `source` for items whose search time is in `[from, to]`: the events found,
/// the items skipped (no GUID, no time) and whether more pages follow.
pub struct Page {
    pub found: Vec<Found>,
    pub skipped: Vec<String>,
    pub last: bool,
}

/// Reads page `index` (from 1), of `size` items, of `source`.
pub async fn page(
    api: &Api,
    source: Source,
    (from, to): (Timestamp, Timestamp),
    index: usize,
    size: usize,
) -> Result<Page, ApiError> {
    let body = json!({ "startTime": from.to_string(), "endTime": to.to_string() });
    let mut query = vec![
        ("pageIndex", index.to_string()),
        ("pageSize", size.to_string()),
    ];
    let path = match source {
        Source::OfflineMessages => "livechat/offlineMessages:search",
        Source::Chats => {
            for part in [
                "chatWrapup",
                "chatAgent",
                "customVariable",
                "postChatSurvey",
            ] {
                query.push(("include", part.to_owned()));
            }
            "livechat/chats:Search"
        }
    };
    let answer = api
        .call(Method::POST, path, &query, Some(&body), true)
        .await?;
    let items = answer
        .get("list")
        .and_then(Value::as_array)
        .or(answer.as_array())
        .ok_or_else(|| ApiError::Malformed {
            what: format!("POST {path}"),
            detail: format!(
                "expected {{\"list\": [...]}}, got {}",
                answer.to_string().chars().take(200).collect::<String>()
            ),
        })?;
    let mut page = Page {
        found: Vec::new(),
        skipped: Vec::new(),
        last: items.len() < size,
    };
    for item in items {
        match source {
            Source::OfflineMessages => match offline_message(item) {
                Some(found) => page.found.push(found),
                None => page.skipped.push(describe(
                    item,
                    "an offline message without a guid or createdTime",
                )),
            },
            Source::Chats => {
                let item = match text(item, "guid") {
                    Some(_) => item.clone(),
                    None => with_guid(api, item).await?,
                };
                let found = chat(&item);
                if found.is_empty() {
                    page.skipped
                        .push(describe(&item, "a chat without a guid or endTime"));
                }
                page.found.extend(found);
            }
        }
    }
    Ok(page)
}

/// The chat as `GET livechat/chats/{id}` has it, for a search answer without `guid`.
async fn with_guid(api: &Api, item: &Value) -> Result<Value, ApiError> {
    let Some(id) = text(item, "id") else {
        return Ok(item.clone());
    };
    let whole = api
        .call(
            Method::GET,
            &format!("livechat/chats/{id}"),
            &[],
            None,
            true,
        )
        .await?;
    let mut merged = item.as_object().cloned().unwrap_or_default();
    if let Value::Object(more) = whole {
        for (k, v) in more {
            merged.entry(k).or_insert(v);
        }
    }
    Ok(Value::Object(merged))
}

fn describe(item: &Value, what: &str) -> String {
    format!(
        "{what} (id {})",
        text(item, "id").unwrap_or_else(|| "none".into())
    )
}

/// A string or number field as text.
fn text(item: &Value, key: &str) -> Option<String> {
    match item.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Takes `keys` out of `rest` into `target` under new names.
fn take(rest: &mut Map<String, Value>, target: &mut Map<String, Value>, keys: &[(&str, &str)]) {
    for (from, to) in keys {
        if let Some(v) = rest.remove(*from) {
            target.insert((*to).to_owned(), v);
        }
    }
}

/// The webhook body of an offline message (API.md's mapping); the API's other fields go
/// to the record's `extra` under `comm100_api`.
fn offline_message(item: &Value) -> Option<Found> {
    let guid = text(item, "guid")?;
    let at = item.get("createdTime").and_then(Timestamp::parse_value)?;
    let mut rest = item.as_object().cloned().unwrap_or_default();
    rest.remove("guid");
    let mut message = Map::new();
    message.insert("id".into(), guid.clone().into());
    take(
        &mut rest,
        &mut message,
        &[
            ("createdTime", "time"),
            ("message", "content"),
            ("subject", "subject"),
            ("name", "name"),
            ("email", "email"),
            ("phone", "phone"),
            ("company", "company"),
            ("departmentId", "department"),
            ("skillId", "skill"),
        ],
    );
    if let Some(name) = rest.remove("attachmentFileName") {
        message.insert("attachment".into(), json!([{ "name": name }]));
    }
    let mut visitor = Map::new();
    visitor.insert("chat_id".into(), guid.clone().into());
    take(&mut rest, &mut visitor, &[("visitorId", "id")]);
    let body = json!({
        "event": "offline_message_submitted",
        "offline_message": message,
        "visitor": visitor,
        "comm100_api": rest,
    });
    Some(Found {
        kind: EventType::OfflineMessageSubmitted,
        id: guid,
        at,
        body,
    })
}

/// The chat_ended body of an ended chat and, when it has a wrap-up, the chat_wrapped_up
/// body (API.md's mapping).
fn chat(item: &Value) -> Vec<Found> {
    let (Some(guid), Some(end)) = (
        text(item, "guid"),
        item.get("endTime").and_then(Timestamp::parse_value),
    ) else {
        return Vec::new();
    };
    let mut rest = item.as_object().cloned().unwrap_or_default();
    rest.remove("guid");
    let mut chat = Map::new();
    chat.insert("id".into(), guid.clone().into());
    take(
        &mut rest,
        &mut chat,
        &[
            ("startTime", "start_time"),
            ("endTime", "end_time"),
            ("preChatName", "name"),
            ("preChatEmail", "email"),
            ("preChatPhone", "phone"),
            ("preChatCompany", "company"),
            ("preChatProductService", "product_service"),
            ("departmentId", "department"),
            ("skillId", "skill"),
            ("customVariables", "custom_variable"),
        ],
    );
    if let Some(seconds) = rest.get("waitingTime").and_then(Value::as_f64) {
        rest.remove("waitingTime");
        chat.insert("waiting_time".into(), format!("{seconds}s").into());
    }
    if let Some(Value::Array(messages)) = rest.get("messages") {
        let lines: Option<Vec<String>> = messages.iter().map(message_line).collect();
        if let Some(lines) = lines {
            rest.remove("messages");
            chat.insert("chat_transcript".into(), lines.join("\u{2299}").into());
        }
    }
    if let Some(Value::Array(agents)) = rest.get("chatAgents") {
        let names: Vec<&str> = agents
            .iter()
            .filter_map(|a| a.pointer("/agent/displayName").and_then(Value::as_str))
            .collect();
        chat.insert("operators".into(), names.join(",").into());
        rest.remove("chatAgents");
    }
    if let Some(survey) = rest.remove("postChatSurvey") {
        chat.insert(
            "rating".into(),
            survey.get("ratingGrade").cloned().unwrap_or(Value::Null),
        );
        chat.insert(
            "rating_comment".into(),
            survey.get("ratingComment").cloned().unwrap_or(Value::Null),
        );
    }
    let wrapup = rest
        .remove("chatWrapup")
        .filter(|w| w.is_object())
        .map(|w| {
            let mut w = w.as_object().cloned().unwrap_or_default();
            let mut out = Map::new();
            take(
                &mut w,
                &mut out,
                &[
                    ("categoriesName", "category"),
                    ("comment", "comment"),
                    ("fields", "fields"),
                    ("time", "time"),
                ],
            );
            out.extend(w);
            out
        });
    let mut visitor = Map::new();
    visitor.insert("chat_id".into(), guid.clone().into());
    for (from, to) in [
        ("name", "name"),
        ("email", "email"),
        ("phone", "phone"),
        ("company", "company"),
        ("product_service", "product_service"),
    ] {
        if let Some(v) = chat.get(from) {
            visitor.insert(to.into(), v.clone());
        }
    }
    take(&mut rest, &mut visitor, &[("visitorId", "id")]);
    if let Some(w) = &wrapup {
        chat.insert("wrap_up".into(), Value::Object(w.clone()));
    }
    let mut found = vec![Found {
        kind: EventType::ChatEnded,
        id: guid.clone(),
        at: end,
        body: json!({
            "event": "chat_ended",
            "chat_id": guid,
            "visitor": visitor,
            "chat": chat,
            "comm100_api": rest,
        }),
    }];
    if let Some(wrapup) = wrapup {
        let at = wrapup
            .get("time")
            .and_then(Timestamp::parse_value)
            .unwrap_or(end);
        found.push(Found {
            kind: EventType::ChatWrappedUp,
            id: guid.clone(),
            at,
            body: json!({
                "event": "chat_wrapped_up",
                "chat_id": guid,
                "visitor": visitor,
                "wrapup": wrapup,
            }),
        });
    }
    found
}

/// A transcript line of a message: a string as it is, else its text (`content`,
/// `message` or `text`) after its sender (`senderName`, `sender`, `displayName`).
fn message_line(message: &Value) -> Option<String> {
    if let Some(s) = message.as_str() {
        return Some(s.to_owned());
    }
    let body = ["content", "message", "text"]
        .iter()
        .find_map(|k| message.get(*k).and_then(Value::as_str))?;
    let sender = ["senderName", "sender", "displayName"]
        .iter()
        .find_map(|k| message.get(*k).and_then(Value::as_str));
    Some(match sender {
        Some(sender) => format!("{sender}: {body}"),
        None => body.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Record;

    #[test]
    fn an_offline_message_becomes_the_record_its_webhook_would_have_made() {
        let item = json!({
            "id": 42, "guid": "58f738e3-86e5-4ce2-92da-f65ecc0d5318",
            "createdTime": "2020-03-17T05:33:23.253Z", "subject": "Hi", "message": "Call me",
            "name": "Ann", "email": "ann@example.com", "phone": "", "company": "Acme",
            "departmentId": 7, "skillId": null, "attachmentFileName": "a.pdf",
            "visitorId": 99, "sessionId": 5
        });
        let found = offline_message(&item).unwrap();
        assert_eq!(found.id, "58f738e3-86e5-4ce2-92da-f65ecc0d5318");
        let text = found.body.to_string();
        let record = Record::from_body(text.as_bytes(), None, Timestamp::now()).unwrap();
        let value = serde_json::to_value(&record).unwrap();
        assert_eq!(value["type"], "offline_message_submitted");
        assert_eq!(value["offline_message"]["id"], found.id.as_str());
        assert_eq!(value["offline_message"]["content"], "Call me");
        assert_eq!(value["offline_message"]["department"], "7");
        assert_eq!(value["offline_message"]["attachment"][0]["name"], "a.pdf");
        assert_eq!(value["occurred_at"], "2020-03-17T05:33:23.253Z");
        assert_eq!(value["visitor"]["id"], "99");
        assert_eq!(value["extra"]["comm100_api"]["sessionId"], 5);
        assert_eq!(record.key(), Some(found.id.as_str()));
    }

    #[test]
    fn an_ended_chat_with_a_wrapup_becomes_two_records() {
        let item = json!({
            "id": 7, "guid": "16c2cc3a-1b15-4b4f-9298-1cd04d6cec15",
            "startTime": "2020-03-17T03:30:01Z", "endTime": "2020-03-17T03:36:59Z",
            "messages": [{"senderName": "Walid", "content": "Hello"}, "The chat is ended."],
            "preChatName": "Ann", "waitingTime": 6,
            "chatAgents": [{"agent": {"displayName": "Walid"}}, {"agent": {"displayName": "Sam"}}],
            "postChatSurvey": {"ratingGrade": 5, "ratingComment": "great"},
            "chatWrapup": {"categoriesName": "Support", "comment": "ok", "fields": [], "time": "2020-03-17T03:40:00Z"},
            "status": "normal"
        });
        let found = chat(&item);
        assert_eq!(found.len(), 2);
        let (first, second) = (found[0].body.to_string(), found[1].body.to_string());
        let ended = Record::from_body(first.as_bytes(), None, Timestamp::now()).unwrap();
        let value = serde_json::to_value(&ended).unwrap();
        assert_eq!(value["type"], "chat_ended");
        assert_eq!(value["chat_id"], "16c2cc3a-1b15-4b4f-9298-1cd04d6cec15");
        assert_eq!(
            value["chat"]["transcript"],
            json!(["Walid: Hello", "The chat is ended."])
        );
        assert_eq!(value["chat"]["operators"], json!(["Walid", "Sam"]));
        assert_eq!(value["chat"]["rating"], "5");
        assert_eq!(value["chat"]["waiting_time"], "6s");
        assert_eq!(value["occurred_at"], "2020-03-17T03:36:59.000Z");
        assert_eq!(value["extra"]["comm100_api"]["status"], "normal");
        let wrapped = Record::from_body(second.as_bytes(), None, Timestamp::now()).unwrap();
        let value = serde_json::to_value(&wrapped).unwrap();
        assert_eq!(value["type"], "chat_wrapped_up");
        assert_eq!(value["wrapup"]["category"], "Support");
        assert_eq!(value["occurred_at"], "2020-03-17T03:40:00.000Z");
        assert!(chat(&json!({"id": 8, "endTime": "2020-03-17T03:36:59Z"})).is_empty());
    }
}
