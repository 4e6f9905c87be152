//! The site's webhook subscriptions: the seven the bridge takes, listed, registered for a
//! target URL (idempotently) and removed.

use http::Method;
use serde_json::{json, Value};

use super::{Api, ApiError};
use crate::event::EventType;

/// Comm100's event ids of the seven webhooks, with the record type each becomes.
pub const EVENTS: [(&str, EventType); 7] = [
    (
        "offlineMessageIsSubmitted",
        EventType::OfflineMessageSubmitted,
    ),
    ("chatStarts", EventType::ChatStarted),
    ("chatEnds", EventType::ChatEnded),
    ("chatIsWrappedUp", EventType::ChatWrappedUp),
    ("agentStatusChanges", EventType::AgentStatusChanged),
    ("chatIsRequested", EventType::ChatRequested),
    ("chatIsTransferred", EventType::ChatTransferred),
];

const PATH: &str = "livechat/webhooks";

/// One subscription: Comm100 posts `event` to `target_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub id: String,
    pub event: String,
    pub target_url: String,
}

impl Subscription {
    fn parse(item: &Value) -> Option<Self> {
        let text = |key: &str| match item.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        Some(Self {
            id: text("id")?,
            event: text("event")?,
            target_url: text("targetUrl")?,
        })
    }

    /// The record type of its event, when it is one of the seven.
    pub fn kind(&self) -> Option<EventType> {
        EVENTS
            .iter()
            .find(|(id, _)| id.eq_ignore_ascii_case(&self.event))
            .map(|(_, kind)| *kind)
    }
}

/// The site's subscriptions.
pub async fn list(api: &Api) -> Result<Vec<Subscription>, ApiError> {
    let body = api.call(Method::GET, PATH, &[], None, true).await?;
    // A bare array, as documented; some answers wrap lists as {"list": [...]}.
    let items = match &body {
        Value::Array(items) => items,
        Value::Object(o) => match o.get("list") {
            Some(Value::Array(items)) => items,
            _ => return Err(malformed(&body)),
        },
        _ => return Err(malformed(&body)),
    };
    items
        .iter()
        .map(|item| Subscription::parse(item).ok_or_else(|| malformed(item)))
        .collect()
}

fn malformed(body: &Value) -> ApiError {
    ApiError::Malformed {
        what: format!("GET {PATH}"),
        detail: format!(
            "expected a list of {{\"id\", \"event\", \"targetUrl\"}}, got {}",
            body.to_string().chars().take(200).collect::<String>()
        ),
    }
}

/// What `register` did for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// An identical subscription existed; it is kept.
    Kept(String),
    /// Created with this id.
    Created(String),
}

/// Makes sure each of the seven events is posted to `target`: an identical subscription
/// is kept, a missing one created. Returns what was done per event id, and the site's
/// other subscriptions to those events (to other URLs), which it leaves alone.
pub async fn register(
    api: &Api,
    target: &str,
) -> Result<(Vec<(&'static str, Registered)>, Vec<Subscription>), ApiError> {
    let existing = list(api).await?;
    let mut done = Vec::new();
    for (event, _) in EVENTS {
        let same = existing
            .iter()
            .find(|s| s.event.eq_ignore_ascii_case(event) && s.target_url == target);
        let outcome = match same {
            Some(s) => Registered::Kept(s.id.clone()),
            None => {
                let body = json!({ "event": event, "targetUrl": target });
                let created = api
                    .call(Method::POST, PATH, &[], Some(&body), false)
                    .await?;
                let id = Subscription::parse(&created)
                    .map(|s| s.id)
                    .unwrap_or_else(|| "(no id in the answer)".to_owned());
                Registered::Created(id)
            }
        };
        done.push((event, outcome));
    }
    let elsewhere = existing
        .into_iter()
        .filter(|s| s.kind().is_some() && s.target_url != target)
        .collect();
    Ok((done, elsewhere))
}

/// Deletes every subscription that posts to `target`; returns them.
pub async fn unregister(api: &Api, target: &str) -> Result<Vec<Subscription>, ApiError> {
    let mut deleted = Vec::new();
    for subscription in list(api).await? {
        if subscription.target_url == target {
            let path = format!("{PATH}/{}", subscription.id);
            api.call(Method::DELETE, &path, &[], None, true).await?;
            deleted.push(subscription);
        }
    }
    Ok(deleted)
}

/// `url` fit to print: query values that may be secrets (`token`, `key`, `secret`,
/// `password`, `sig`, …) and a password in it replaced by `<redacted>`.
pub fn redact(url: &str) -> String {
    const SECRET: [&str; 8] = [
        "token",
        "key",
        "secret",
        "password",
        "pass",
        "sig",
        "signature",
        "auth",
    ];
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let head = match head.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split('/').next().unwrap_or("");
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = userinfo.split(':').next().unwrap_or("");
                    let path = &rest[authority.len()..];
                    format!("{scheme}://{user}:<redacted>@{host}{path}")
                }
                None => head.to_owned(),
            }
        }
        None => head.to_owned(),
    };
    let Some(query) = query else {
        return head;
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if SECRET.iter().any(|s| name.to_ascii_lowercase().contains(s)) => {
                format!("{name}=<redacted>")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{head}?{}", pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_a_target_url_are_redacted() {
        assert_eq!(
            redact("https://bridge.example.com/webhooks/comm100/eu?token=s3cr3t&x=1"),
            "https://bridge.example.com/webhooks/comm100/eu?token=<redacted>&x=1"
        );
        assert_eq!(
            redact("https://user:pw@bridge.example.com/hook?api_key=k"),
            "https://user:<redacted>@bridge.example.com/hook?api_key=<redacted>"
        );
        assert_eq!(
            redact("https://bridge.example.com/webhooks/comm100"),
            "https://bridge.example.com/webhooks/comm100"
        );
    }

    #[test]
    fn the_seven_event_ids_name_the_seven_webhook_types() {
        let mut kinds: Vec<EventType> = EVENTS.iter().map(|(_, k)| *k).collect();
        kinds.sort_by_key(|k| k.index());
        let mut webhooks: Vec<EventType> = EventType::ALL
            .into_iter()
            .filter(|k| *k != EventType::Unknown)
            .collect();
        webhooks.sort_by_key(|k| k.index());
        assert_eq!(kinds, webhooks);
    }
}
