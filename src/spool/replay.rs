//! Replays spooled records to Kafka in order, with exponential backoff and jitter between
//! failed attempts. A record leaves the spool only after its delivery report succeeds (or,
//! for a permanent rejection, after it is in the dead-letter topic).

use std::time::Duration;

use tokio::sync::watch;

use super::{Batch, Spool};
use crate::kafka::{Publisher, Rejection};
use crate::metrics::Metrics;

/// Records read and sent per round.
const BATCH: usize = 512;
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Runs until `stop` turns true. Records not yet acknowledged then stay in the spool for
/// the next start.
pub async fn run(
    spool: Spool,
    publisher: Publisher,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    loop {
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            () = spool.wait_for_records() => {}
            _ = stop.changed() => return,
        }
        let reader = spool.clone();
        let batch = match tokio::task::spawn_blocking(move || reader.read_batch(BATCH)).await {
            Ok(Ok(batch)) if !batch.messages.is_empty() => batch,
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the spool; retrying");
                failures += 1;
                if !pause(failures, &mut stop).await {
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "spool reader panicked");
                return;
            }
        };
        let total = batch.messages.len();
        let done = send(&publisher, &batch).await;
        if done > 0 {
            let bytes = batch.sizes[..done].iter().sum();
            if let Err(e) = spool.commit(batch.ends[done - 1], done as u64, bytes) {
                tracing::error!(error = %e, "cannot save the spool cursor; records may be replayed twice");
            }
        }
        if done < total {
            failures += 1;
            metrics.kafka_retries.inc();
            tracing::warn!(
                replayed = done,
                remaining = spool.pending_events(),
                attempt = failures,
                "Kafka did not acknowledge every spooled record; backing off"
            );
            if !pause(failures, &mut stop).await {
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
    let mut queued = Vec::with_capacity(batch.messages.len());
    for message in &batch.messages {
        match publisher.enqueue(message) {
            Ok(pending) => queued.push(Ok(pending)),
            // Refused at once and for good (too large): settled below, in its turn.
            Err(e) if Rejection::of(&e).is_some() => queued.push(Err(e)),
            // Stop here so nothing overtakes the record that could not be queued.
            Err(e) => {
                tracing::warn!(id = %message.id, error = %e, "cannot queue a spooled record");
                break;
            }
        }
    }
    let mut done = 0;
    let mut blocked = false;
    for (message, queued) in batch.messages.iter().zip(queued) {
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

/// Sleeps for the backoff of the `failures`-th failure in a row; false if stopped meanwhile.
async fn pause(failures: u32, stop: &mut watch::Receiver<bool>) -> bool {
    let delay = backoff(failures);
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        _ = stop.changed() => false,
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
