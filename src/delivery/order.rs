//! Per-key order: no record reaches Kafka before an earlier accepted record with its key,
//! whichever way either travels.
//!
//! Records of one key take turns in the order they were accepted. A turn lasts until the
//! record's place is fixed: acknowledged by Kafka, its spool append issued (appends are
//! written in the order they are issued), or refused. While a key has records in the spool
//! that Kafka has not taken, its new records follow them into the spool; every other key
//! goes straight to Kafka, spool or no spool.
//!
//! A record whose produce outlives its deadline is spooled while librdkafka still holds
//! it. Its outcome is watched: acknowledged, the spooled copy is done and replay skips it;
//! failed, replay sends it. Replay leaves such a record (and the later ones of its key)
//! until that outcome is known, so no record is in Kafka twice through the bridge's own
//! doing.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::{watch, Notify};
use uuid::Uuid;

use crate::route::Message;
use crate::sync::Unpoisoned;

/// The order of every key with records waiting, and what the spool holds that is already
/// in Kafka.
#[derive(Default)]
pub struct Order {
    inner: Mutex<Inner>,
    hasher: RandomState,
    /// Notified when an original produce reports.
    reported: Notify,
}

#[derive(Default)]
struct Inner {
    keys: HashMap<u64, Key>,
    /// Spooled records known to be in Kafka, until replay moves the cursor past them.
    done: HashSet<Uuid>,
    /// Spooled records whose original produce has not reported yet.
    originals: HashSet<Uuid>,
    next_turn: u64,
}

/// A key with records waiting. Hash collisions only make two keys wait for each other.
#[derive(Default)]
struct Key {
    /// The latest turn taken: its number and whether it has ended.
    last: Option<(u64, watch::Receiver<bool>)>,
    /// Records in the spool not yet known to be in Kafka.
    spooled: i64,
}

impl Key {
    fn idle(&self) -> bool {
        self.spooled <= 0 && self.last.is_none()
    }
}

/// The original produce of a spooled record, watched.
pub struct Original {
    id: Uuid,
    key: Option<u64>,
}

/// A record's turn among the records of its key; ends when dropped.
pub struct Turn<'a> {
    order: &'a Order,
    key: Option<u64>,
    number: u64,
    before: Option<watch::Receiver<bool>>,
    ended: Option<watch::Sender<bool>>,
}

impl Order {
    pub fn new() -> Self {
        Self::default()
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.locked()
    }

    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Takes the next turn of `key`: the record's place among its key's records is fixed
    /// now, and [`Turn::ready`] waits for the records before it.
    pub fn enter(&self, key: Option<&str>) -> Turn<'_> {
        let Some(key) = key.map(|k| self.hash(k)) else {
            return Turn {
                order: self,
                key: None,
                number: 0,
                before: None,
                ended: None,
            };
        };
        let (tx, rx) = watch::channel(false);
        let mut inner = self.inner();
        inner.next_turn += 1;
        let number = inner.next_turn;
        let entry = inner.keys.entry(key).or_default();
        let before = entry.last.replace((number, rx)).map(|(_, rx)| rx);
        Turn {
            order: self,
            key: Some(key),
            number,
            before,
            ended: Some(tx),
        }
    }

    /// Counts spooled records of `message`'s key that a previous run left (before any
    /// turn is taken).
    pub fn count_spooled(&self, key: Option<&str>) {
        if let Some(key) = key.map(|k| self.hash(k)) {
            self.inner().keys.entry(key).or_default().spooled += 1;
        }
    }

    /// Keys with records waiting (in a turn or in the spool).
    pub fn waiting_keys(&self) -> usize {
        self.inner().keys.len()
    }

    /// A spooled record is in Kafka (replayed, dead-lettered, or its original acknowledged
    /// late): later records of its key no longer wait for it. Counted once per record.
    pub fn in_kafka(&self, message: &Message) {
        let key = message.key.as_deref().map(|k| self.hash(k));
        self.inner().in_kafka(message.id, key);
    }

    /// Whether a spooled record is known to be in Kafka already.
    pub fn is_done(&self, id: &Uuid) -> bool {
        self.inner().done.contains(id)
    }

    /// Replay moved the cursor past these records: forgets them.
    pub fn forget<'m>(&self, ids: impl IntoIterator<Item = &'m Uuid>) {
        let mut inner = self.inner();
        for id in ids {
            inner.done.remove(id);
        }
    }

    /// A spool append counted by [`Turn::spooled`] failed: the record is not in the spool.
    pub fn append_failed(&self, key: Option<&str>) {
        if let Some(key) = key.map(|k| self.hash(k)) {
            self.inner().unspool(key);
        }
    }

    /// Watches the original produce of `message`, which is being spooled; report its
    /// outcome with [`Order::original_reported`].
    pub fn watch_original(&self, message: &Message) -> Original {
        self.inner().originals.insert(message.id);
        Original {
            id: message.id,
            key: message.key.as_deref().map(|k| self.hash(k)),
        }
    }

    /// The original produce of a spooled record reported: if acknowledged, the spooled
    /// copy is done.
    pub fn original_reported(&self, original: Original, acknowledged: bool) {
        let mut inner = self.inner();
        if acknowledged {
            inner.in_kafka(original.id, original.key);
        }
        inner.originals.remove(&original.id);
        drop(inner);
        self.reported.notify_waiters();
    }

    /// Whether the original produce of spooled record `id` has yet to report.
    pub fn awaiting_original(&self, id: &Uuid) -> bool {
        self.inner().originals.contains(id)
    }

    /// Resolves when an original produce reports.
    pub async fn reported(&self) {
        self.reported.notified().await
    }
}

impl Inner {
    fn in_kafka(&mut self, id: Uuid, key: Option<u64>) {
        if self.done.insert(id) {
            if let Some(key) = key {
                self.unspool(key);
            }
        }
    }

    fn unspool(&mut self, key: u64) {
        if let Entry::Occupied(mut entry) = self.keys.entry(key) {
            entry.get_mut().spooled -= 1;
            if entry.get().idle() {
                entry.remove();
            }
        }
    }
}

impl Turn<'_> {
    /// Waits until every earlier record of the key has its place; true if the key has
    /// records in the spool that Kafka has not taken (this one must follow them).
    pub async fn ready(&mut self) -> bool {
        if let Some(mut before) = self.before.take() {
            // A dropped turn has ended too.
            let _ = before.wait_for(|ended| *ended).await;
        }
        let Some(key) = self.key else { return false };
        self.order
            .inner()
            .keys
            .get(&key)
            .is_some_and(|k| k.spooled > 0)
    }

    /// The record's spool append is issued: later records of its key follow it.
    pub fn spooled(self) {
        if let Some(key) = self.key {
            self.order.inner().keys.entry(key).or_default().spooled += 1;
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let Some(ended) = self.ended.take() else {
            return;
        };
        ended.send_replace(true);
        let Some(key) = self.key else { return };
        let mut inner = self.order.inner();
        if let Entry::Occupied(mut entry) = inner.keys.entry(key) {
            if entry
                .get()
                .last
                .as_ref()
                .is_some_and(|(n, _)| *n == self.number)
            {
                entry.get_mut().last = None;
                if entry.get().idle() {
                    entry.remove();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn message(key: &str) -> Message {
        Message {
            id: Uuid::now_v7(),
            kind: crate::event::EventType::ChatEnded,
            topic: "t".into(),
            key: Some(key.into()),
            headers: vec![],
            value: b"{}".to_vec(),
        }
    }

    #[tokio::test]
    async fn a_turn_waits_for_the_earlier_records_of_its_key_only() {
        let order = Order::new();
        let mut first = order.enter(Some("a"));
        let mut second = order.enter(Some("a"));
        let mut other = order.enter(Some("b"));
        assert!(!first.ready().await);
        assert!(!other.ready().await);
        let waiting = tokio::time::timeout(Duration::from_millis(50), second.ready()).await;
        assert!(
            waiting.is_err(),
            "the second record went before the first ended"
        );
        first.spooled();
        assert!(
            second.ready().await,
            "the second must follow the first into the spool"
        );
        drop(second);
        drop(other);
        assert_eq!(order.waiting_keys(), 1, "a holds a spooled record");
        let spooled = message("a");
        order.in_kafka(&spooled);
        order.in_kafka(&spooled);
        assert!(order.is_done(&spooled.id));
        assert_eq!(
            order.waiting_keys(),
            0,
            "counted once, and the key forgotten"
        );
        assert!(!order.enter(Some("a")).ready().await);
        order.forget([&spooled.id]);
        assert!(!order.is_done(&spooled.id));
    }

    #[test]
    fn a_late_acknowledgement_makes_the_spooled_copy_done() {
        let order = Order::new();
        let (acked, failed) = (message("k"), message("k"));
        for record in [&acked, &failed] {
            order.enter(record.key.as_deref()).spooled();
        }
        let (first, second) = (order.watch_original(&acked), order.watch_original(&failed));
        assert!(order.awaiting_original(&acked.id) && order.awaiting_original(&failed.id));
        order.original_reported(first, true);
        order.original_reported(second, false);
        assert!(!order.awaiting_original(&acked.id) && !order.awaiting_original(&failed.id));
        assert!(order.is_done(&acked.id), "acknowledged late: skipped");
        assert!(!order.is_done(&failed.id), "failed: replayed");
        assert_eq!(order.waiting_keys(), 1, "k still holds the failed one");
    }
}
