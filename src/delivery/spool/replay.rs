//! Replays spooled records to Kafka in order, with exponential backoff and jitter between
//! failed attempts. A record leaves the spool only after its delivery report succeeds (or,
//! for a permanent rejection, after it is in the dead-letter topic).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use super::{Batch, Spool, Spooled};
use crate::delivery::kafka::{Publisher, Rejection};
use crate::metrics::Metrics;

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
    /// Starts replaying `spool` in the background, within `memory`.
    pub fn spawn(spool: Spool, publisher: Publisher, metrics: Metrics, memory: Memory) -> Self {
        let (mode, rx) = watch::channel(Mode::Run);
        let task = tokio::spawn(run(spool.clone(), publisher, metrics, memory, rx));
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
    metrics: Metrics,
    memory: Memory,
    mut mode: watch::Receiver<Mode>,
) {
    let mut failures: u32 = 0;
    let mut cursor_failing = false;
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
                if !pause(failures, &mut mode).await {
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
        let done = send(&publisher, &batch).await;
        match spool.commit(&batch, done) {
            Ok(()) if cursor_failing => {
                cursor_failing = false;
                tracing::info!("the spool cursor is saved again");
            }
            Ok(()) => {}
            // Once per streak: a full disk would otherwise log it every round.
            Err(e) if !cursor_failing => {
                cursor_failing = true;
                tracing::error!(error = %e, "cannot save the spool cursor; records replayed since may be replayed again after a restart");
            }
            Err(_) => {}
        }
        drop(batch);
        drop(held);
        if done < total {
            failures += 1;
            metrics.spool_replay_retries.inc();
            tracing::warn!(
                replayed = done,
                remaining = spool.pending_events(),
                attempt = failures,
                "Kafka did not acknowledge every spooled record; backing off"
            );
            if *mode.borrow() == (Mode::Drain { give_up: true }) && publisher.known_down() {
                tracing::warn!(
                    remaining = spool.pending_events(),
                    "no Kafka broker is connected; the spool keeps the rest"
                );
                return;
            }
            if !pause(failures, &mut mode).await {
                return;
            }
        } else {
            if failures > 0 {
                tracing::info!(remaining = spool.pending_events(), "spool replay resumed");
            }
            failures = 0;
        }
    }
}

/// Sends a batch in order and returns how many leading records are done: acknowledged, or
/// rejected for good and in the dead-letter topic ([`Publisher::settle`]).
async fn send(publisher: &Publisher, batch: &Batch) -> usize {
    let mut queued = Vec::with_capacity(batch.entries.len());
    for entry in &batch.entries {
        let message = match entry {
            Spooled::Record(message) => message,
            // Sent in its turn below.
            Spooled::Unreadable { .. } => {
                queued.push(None);
                continue;
            }
        };
        match publisher.enqueue(message) {
            Ok(pending) => queued.push(Some(Ok(pending))),
            // Refused at once and for good (too large): settled below, in its turn.
            Err(e) if Rejection::of(&e).is_some() => queued.push(Some(Err(e))),
            // Stop here so nothing overtakes the record that could not be queued.
            Err(e) => {
                tracing::warn!(id = %message.id, error = %e, "cannot queue a spooled record");
                break;
            }
        }
    }
    let mut done = 0;
    let mut blocked = false;
    for (entry, queued) in batch.entries.iter().zip(queued) {
        let (message, queued) = match (entry, queued) {
            (Spooled::Record(message), Some(queued)) => (message, queued),
            (Spooled::Unreadable { prefix, len }, _) => {
                if !blocked {
                    match publisher.dead_letter_unreadable(prefix, *len).await {
                        Ok(()) => {
                            tracing::error!(bytes = len, "spooled bytes that are not a record (damaged on disk, or written by an incompatible version) went to the dead-letter topic; replay goes on after them");
                            done += 1;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "an unreadable spooled frame was not dead-lettered");
                            blocked = true;
                        }
                    }
                }
                continue;
            }
            (Spooled::Record(_), None) => unreachable!("every record is queued or refused"),
        };
        let result = match queued {
            Ok(pending) => pending.wait().await,
            Err(e) => Err(e),
        };
        if blocked {
            // Later records' reports are still awaited, so none is left behind unread;
            // they are sent again next round.
            continue;
        }
        match publisher.settle(message, result).await {
            Ok(_) => done += 1,
            Err(e) => {
                tracing::warn!(id = %message.id, r#type = message.kind.as_str(), error = %e, "spooled record not acknowledged");
                blocked = true;
            }
        }
    }
    done
}

/// Draining retries at least this often.
const DRAIN_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Sleeps for the backoff of the `failures`-th failure in a row (cut short when a drain
/// begins); false if stopped meanwhile.
async fn pause(failures: u32, mode: &mut watch::Receiver<Mode>) -> bool {
    let delay = match *mode.borrow() {
        Mode::Drain { .. } => backoff(failures).min(DRAIN_BACKOFF_MAX),
        _ => backoff(failures),
    };
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        _ = mode.changed() => *mode.borrow() != Mode::Stop,
    }
}

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
