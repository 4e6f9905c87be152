//! Replays spooled records to Kafka, each key's in order, with exponential backoff and
//! jitter between failed attempts, cut short when Kafka recovers. A record leaves the spool
//! only after its delivery report succeeds (or, for a permanent rejection, after it is in
//! the dead-letter topic); one done while an earlier one failed is not sent again.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use std::collections::{HashMap, HashSet};

use futures_util::future::join_all;

use super::{Batch, Position, Spool, Spooled};
use crate::delivery::kafka::Publisher;
use crate::delivery::order::Order;
use crate::metrics::Metrics;
use crate::route::Message;

/// Records read and sent per round, at most.
const BATCH: usize = 512;
/// The most memory one replay round holds: the records read (at most half of it, or one
/// record when a single one is larger) and the producer's copies of them.
const ROUND_BYTES: usize = 16 << 20;

const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The memory replay may hold, taken for each round from a pool of bytes: the webhook
/// listener's in-flight budget (`http.max_inflight_bytes`), so that requests and replay
/// together stay within it, or a pool of its own for `spool drain`.
#[derive(Clone)]
pub struct Memory {
    pool: Arc<Semaphore>,
    per_round: u32,
}

impl Memory {
    /// Rounds take a quarter of `pool` (of `pool_bytes` bytes) at most, 16 MiB at most.
    pub fn shared(pool: Arc<Semaphore>, pool_bytes: usize) -> Self {
        let per_round = (pool_bytes / 4).clamp(1, ROUND_BYTES);
        Self {
            pool,
            per_round: u32::try_from(per_round).unwrap_or(u32::MAX),
        }
    }

    /// A pool of 16 MiB for replay alone.
    pub fn own() -> Self {
        Self::shared(Arc::new(Semaphore::new(ROUND_BYTES)), 4 * ROUND_BYTES)
    }

    /// Bytes of spooled frames one round reads.
    fn frames(&self) -> u64 {
        u64::from(self.per_round / 2)
    }
}

/// What replay is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Replay whenever records are spooled, backing off while Kafka fails.
    Run,
    /// Replay until the spool is empty, retrying quickly; with `give_up`, stop after a
    /// failed round while no broker is connected.
    Drain {
        give_up: bool,
    },
    Stop,
}

/// The replay task.
pub struct Replay {
    mode: watch::Sender<Mode>,
    task: JoinHandle<()>,
    spool: Spool,
}

impl Replay {
    /// Starts replaying `spool` in the background, within `memory`; `order` learns which
    /// spooled records are in Kafka, and knows those that were already.
    pub fn spawn(
        spool: Spool,
        publisher: Publisher,
        order: Arc<Order>,
        metrics: Metrics,
        memory: Memory,
    ) -> Self {
        let (mode, rx) = watch::channel(Mode::Run);
        let task = tokio::spawn(run(spool.clone(), publisher, order, metrics, memory, rx));
        Self { mode, task, spool }
    }

    /// Stops replay; records not yet acknowledged stay in the spool for the next start.
    pub async fn stop(self) {
        let _ = self.mode.send(Mode::Stop);
        let _ = self.task.await;
    }

    /// Replays until the spool is empty or `until` resolves, and stops. With `give_up`, also
    /// stops after a failed round while no broker is connected. Returns how many records
    /// are left.
    pub async fn drain(mut self, until: impl Future<Output = ()>, give_up: bool) -> u64 {
        let _ = self.mode.send(Mode::Drain { give_up });
        tokio::select! {
            _ = &mut self.task => {}
            () = until => {
                let _ = self.mode.send(Mode::Stop);
                let _ = self.task.await;
            }
        }
        self.spool.pending_events()
    }
}

async fn run(
    spool: Spool,
    publisher: Publisher,
    order: Arc<Order>,
    metrics: Metrics,
    memory: Memory,
    mut mode: watch::Receiver<Mode>,
) {
    let mut failures: u32 = 0;
    let mut cursor_failing = false;
    // Unreadable frames past the cursor already in the dead-letter topic.
    let mut dead_lettered = HashSet::new();
    loop {
        match *mode.borrow_and_update() {
            Mode::Stop => return,
            Mode::Drain { .. } if spool.pending_events() == 0 => return,
            _ => {}
        }
        tokio::select! {
            () = spool.wait_for_records() => {}
            _ = mode.changed() => continue,
        }
        // Held until the round's records are acknowledged or given up.
        let held = tokio::select! {
            held = memory.pool.clone().acquire_many_owned(memory.per_round) => held,
            _ = mode.changed() => continue,
        };
        let Ok(held) = held else { return };
        let reader = spool.clone();
        let frames = memory.frames();
        let read = move || reader.read_batch(BATCH, frames);
        let batch = match tokio::task::spawn_blocking(read).await {
            Ok(Ok(batch)) if !batch.entries.is_empty() => batch,
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => {
                drop(held);
                // Once per streak; a fault of the disk itself is reported by the spool.
                if failures == 0 {
                    tracing::warn!(error = %e, "cannot read the spool; retrying");
                }
                // A removed directory is noticed and recreated by the spool's writer.
                spool.check();
                failures += 1;
                if !pause(failures, &mut mode, &publisher, &order).await {
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "spool reader panicked");
                return;
            }
        };
        let total = batch.entries.len();
        let sent = send(&publisher, &order, &batch, &dead_lettered).await;
        let in_kafka = record_round(
            &spool,
            &order,
            &batch,
            &sent,
            &mut dead_lettered,
            &mut cursor_failing,
        );
        drop(batch);
        drop(held);
        if in_kafka == total {
            if failures > 0 {
                tracing::info!(remaining = spool.pending_events(), "spool replay resumed");
            }
            failures = 0;
            continue;
        }
        failures += 1;
        metrics.spool.replay_retries.inc();
        if !back_off(failures, in_kafka, &spool, &publisher, &order, &mut mode).await {
            return;
        }
    }
}

/// After a round Kafka did not fully acknowledge: waits before the next ([`pause`]), unless
/// a drain that gives up finds no broker. Returns whether to go on.
async fn back_off(
    failures: u32,
    in_kafka: usize,
    spool: &Spool,
    publisher: &Publisher,
    order: &Order,
    mode: &mut watch::Receiver<Mode>,
) -> bool {
    tracing::warn!(
        replayed = in_kafka,
        remaining = spool.pending_events(),
        attempt = failures,
        "Kafka did not acknowledge every spooled record; backing off"
    );
    if *mode.borrow() == (Mode::Drain { give_up: true }) && publisher.known_down() {
        tracing::warn!(
            remaining = spool.pending_events(),
            "no Kafka broker is connected; the spool keeps the rest"
        );
        return false;
    }
    pause(failures, mode, publisher, order).await
}

/// Records what a round achieved: the cursor moves past its first entries that are done
/// (their keys forgotten by `order`), and unreadable frames past them that went to the
/// dead-letter topic are remembered so they are not sent again. Returns how many entries
/// are in Kafka.
fn record_round(
    spool: &Spool,
    order: &Order,
    batch: &Batch,
    sent: &[bool],
    dead_lettered: &mut HashSet<Position>,
    cursor_failing: &mut bool,
) -> usize {
    let done = sent.iter().take_while(|&&ok| ok).count();
    let committed = spool.commit(batch, done);
    if committed.is_ok() {
        order.forget(batch.entries[..done].iter().filter_map(|e| match e {
            Spooled::Record(m) => Some(&m.id),
            Spooled::Unreadable { .. } => None,
        }));
        let cursor = batch.ends.get(done.wrapping_sub(1)).copied();
        dead_lettered.retain(|p| Some(*p) > cursor);
    }
    for (i, _) in sent.iter().enumerate().skip(done).filter(|(_, &ok)| ok) {
        if matches!(batch.entries[i], Spooled::Unreadable { .. }) {
            dead_lettered.insert(batch.ends[i]);
        }
    }
    match committed {
        Ok(()) if *cursor_failing => {
            *cursor_failing = false;
            tracing::info!("the spool cursor is saved again");
        }
        Ok(()) => {}
        // Once per streak: a full disk would otherwise log it every round.
        Err(e) if !*cursor_failing => {
            *cursor_failing = true;
            tracing::error!(error = %e, "cannot save the spool cursor; records replayed since may be replayed again after a restart");
        }
        Err(_) => {}
    }
    sent.iter().filter(|&&ok| ok).count()
}

/// Sends a batch and says which entries are done: acknowledged, rejected for good and in
/// the dead-letter topic ([`Publisher::settle`]), or known to be in Kafka already. The
/// records of one key go one after another, each once the one before it is done, so a
/// failed record is never overtaken by a later one of its key; keys go side by side.
async fn send(
    publisher: &Publisher,
    order: &Order,
    batch: &Batch,
    dead_lettered: &HashSet<Position>,
) -> Vec<bool> {
    let mut chains: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut alone = Vec::new();
    for (i, entry) in batch.entries.iter().enumerate() {
        match entry {
            Spooled::Record(Message { key: Some(key), .. }) => {
                chains.entry(key.as_str()).or_default().push(i)
            }
            _ => alone.push(vec![i]),
        }
    }
    let chains = chains.into_values().chain(alone).map(|chain| async move {
        let mut done = Vec::with_capacity(chain.len());
        for i in chain {
            let ok = send_one(publisher, order, batch, i, dead_lettered).await;
            done.push((i, ok));
            if !ok {
                break;
            }
        }
        done
    });
    let mut done = vec![false; batch.entries.len()];
    for (i, ok) in join_all(chains).await.into_iter().flatten() {
        done[i] = ok;
    }
    done
}

/// Sends entry `i` of `batch`; true once it is done.
async fn send_one(
    publisher: &Publisher,
    order: &Order,
    batch: &Batch,
    i: usize,
    dead_lettered: &HashSet<Position>,
) -> bool {
    let message = match &batch.entries[i] {
        Spooled::Record(message) => message,
        Spooled::Unreadable { .. } if dead_lettered.contains(&batch.ends[i]) => return true,
        Spooled::Unreadable { prefix, len } => {
            return match publisher.dead_letter_unreadable(prefix, *len).await {
                Ok(()) => {
                    tracing::error!(bytes = len, "spooled bytes that are not a record (damaged on disk, or written by an incompatible version) went to the dead-letter topic; replay goes on after them");
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "an unreadable spooled frame was not dead-lettered");
                    false
                }
            };
        }
    };
    if order.is_done(&message.id) {
        return true;
    }
    if order.awaiting_original(&message.id) {
        // Not yet: librdkafka may still deliver it.
        return false;
    }
    let result = match publisher.enqueue(message) {
        Ok(pending) => pending.wait().await,
        Err(e) => Err(e),
    };
    match publisher.settle(message, result).await {
        Ok(_) => {
            order.in_kafka(message);
            true
        }
        Err(e) => {
            tracing::warn!(id = %message.id, r#type = message.kind.as_str(), error = %e, "spooled record not acknowledged");
            false
        }
    }
}

/// Draining retries at least this often.
const DRAIN_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Sleeps for the backoff of the `failures`-th failure in a row, cut short when Kafka
/// recovers (a broker connects, or a record is acknowledged), a spooled record's original
/// produce reports, or a drain begins; false if stopped meanwhile.
async fn pause(
    failures: u32,
    mode: &mut watch::Receiver<Mode>,
    publisher: &Publisher,
    order: &Order,
) -> bool {
    let delay = match *mode.borrow() {
        Mode::Drain { .. } => backoff(failures).min(DRAIN_BACKOFF_MAX),
        _ => backoff(failures),
    };
    let probing = async {
        // Nothing else makes librdkafka reconnect while replay waits.
        loop {
            if publisher.known_down() {
                publisher.probe().await;
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
    };
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = publisher.recovered() => true,
        () = order.reported() => true,
        () = probing => unreachable!("probing never ends"),
        _ = mode.changed() => *mode.borrow() != Mode::Stop,
    }
}

/// How often a paused replay asks for metadata while no broker is connected.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// Exponential in the number of failures, capped, with the upper half jittered.
fn backoff(failures: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << failures.min(16).saturating_sub(1));
    let cap = exp.min(BACKOFF_MAX);
    let half = cap / 2;
    half + Duration::from_millis(fastrand::u64(0..=half.as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_takes_a_quarter_of_the_budget_and_never_more_than_it_has() {
        let pool = |bytes: usize| Arc::new(Semaphore::new(bytes));
        let default = Memory::shared(pool(64 << 20), 64 << 20);
        assert_eq!((default.per_round, default.frames()), (16 << 20, 8 << 20));
        assert_eq!(Memory::shared(pool(1 << 30), 1 << 30).per_round, 16 << 20);
        // A small budget still lets a round (of at least one record) through.
        let small = Memory::shared(pool(100_000), 100_000);
        assert_eq!(small.per_round, 25_000);
        assert!(small.pool.try_acquire_many(small.per_round).is_ok());
        assert_eq!(Memory::own().per_round, 16 << 20);
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        for failures in 1..40 {
            let d = backoff(failures);
            let cap = BACKOFF_BASE
                .saturating_mul(1u32 << (failures.min(16) - 1))
                .min(BACKOFF_MAX);
            assert!(d >= cap / 2 && d <= cap, "{failures}: {d:?} vs {cap:?}");
        }
        assert!(backoff(1) <= Duration::from_millis(100));
        assert!(backoff(30) >= Duration::from_secs(15));
        let samples: std::collections::HashSet<_> = (0..20).map(|_| backoff(10)).collect();
        assert!(samples.len() > 1, "no jitter");
    }
}
