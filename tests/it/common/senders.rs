//! Senders under test conditions: what they were told, and the check that every
//! acknowledged event is in its topic, in order.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::json;

use super::*;

/// The event a sender posts: `seq` orders the events of one chat.
pub fn event(chat: &str, seq: usize) -> String {
    json!({"event": "chat_transferred", "visitor": {"chat_id": chat}, "seq": seq}).to_string()
}

/// What the senders were told: id → (chat, seq) for every 2xx.
#[derive(Default)]
pub struct Acked {
    pub ids: HashMap<String, (String, u64)>,
    pub statuses: HashMap<u16, usize>,
    pub sent: usize,
}

impl Acked {
    /// Adds what another sender was told.
    pub fn merge(&mut self, other: Acked) {
        self.ids.extend(other.ids);
        self.sent += other.sent;
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
    }

    pub fn record(&mut self, chat: &str, seq: usize, answer: Option<Answer>) {
        self.sent += 1;
        let Some(answer) = answer else {
            *self.statuses.entry(0).or_default() += 1;
            return;
        };
        *self.statuses.entry(answer.status.as_u16()).or_default() += 1;
        if answer.status.is_success() {
            let id = answer.json["id"].as_str().unwrap().to_owned();
            self.ids.insert(id, (chat.to_owned(), seq as u64));
        }
    }
}

/// Consumes `topic` until every acknowledged id is found, reports the counts, and with
/// `ordered` (each chat's events were posted one after another) checks per-chat order on
/// every copy: a duplicate may follow its original at once, never a later event of its
/// chat. Returns how many duplicates of acknowledged records the topic holds.
pub fn verify(test: &str, bootstrap: &str, topic: &str, acked: &Acked, ordered: bool) -> usize {
    let wanted: HashSet<&str> = acked.ids.keys().map(String::as_str).collect();
    // Counted as records arrive: rescanning every record at each poll is quadratic.
    let (mut found, mut scanned) = (HashSet::new(), 0);
    let records = consume_all(bootstrap, topic, Duration::from_secs(60), |got| {
        for r in &got[scanned..] {
            if let Some(id) = r.value["id"].as_str().filter(|id| wanted.contains(id)) {
                found.insert(id.to_owned());
            }
        }
        scanned = got.len();
        found.len() == wanted.len()
    });
    let mut seen = HashSet::new();
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    let mut duplicates = 0;
    // Records answered with something other than 2xx may be in Kafka all the same (a
    // broker can write a record whose acknowledgement came too late); they are owed
    // nothing and not part of the order checked.
    let mut unacknowledged = 0;
    for r in &records {
        let id = r.value["id"].as_str().unwrap();
        if !wanted.contains(id) {
            unacknowledged += 1;
            continue;
        }
        let copy = !seen.insert(id.to_owned());
        duplicates += usize::from(copy);
        let chat = r.key.clone().unwrap();
        assert_eq!(r.value["chat_id"].as_str(), Some(chat.as_str()));
        let seq = r.value["extra"]["seq"].as_u64().unwrap();
        if let Some(prev) = last_seq.insert(chat.clone(), seq).filter(|_| ordered) {
            assert!(
                prev < seq || (copy && prev == seq),
                "{test}: chat {chat}: seq {seq}{} arrived after {prev}",
                if copy { " (a copy)" } else { "" }
            );
        }
    }
    let missing: Vec<&&str> = wanted.iter().filter(|id| !seen.contains(**id)).collect();
    let mut statuses: Vec<_> = acked.statuses.iter().collect();
    statuses.sort();
    report(&format!(
        "{test}: sent {}, 2xx {}, found in Kafka {}, missing {}, duplicates {duplicates}, statuses {statuses:?}, other records in the topic {unacknowledged}",
        acked.sent,
        acked.ids.len(),
        wanted.len() - missing.len(),
        missing.len(),
    ));
    assert!(
        missing.is_empty(),
        "{test}: {} acknowledged ids never reached Kafka",
        missing.len()
    );
    duplicates
}
