//! `comm100-bridge backfill`: the events of a time window that Comm100's API knows and the
//! topics do not, published as ordinary records with `origin: "backfill"`.
//!
//! Offline messages, ended chats and their wrap-ups can be recovered. Chat started and
//! chat requested are not backfilled: the API lists a chat only after it ended, with its
//! times, so such a record would arrive after the chat_ended of the same chat and say
//! nothing chat_ended does not (`chat.start_time`). Chat transferred and agent status
//! changed are not in the API at all.

pub mod existing;
pub mod source;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::error::KafkaError;
use serde::{Deserialize, Serialize};

use crate::comm100::{Api, ApiError};
use crate::config::Config;
use crate::delivery::kafka::Publisher;
use crate::event::{EventType, Origin, Record, Site, Timestamp};
use crate::metrics::Metrics;
use crate::registry::{Framing, RegistryError};
use crate::route::Router;
use source::Source;

/// How far before the window the topics are read for records of it: a webhook's record is
/// written when it arrives, which may be a little after or, by clock skew, before the time
/// Comm100 gives the event.
pub const MARGIN: Duration = Duration::from_secs(3600);
/// How far before the window chats are searched: the API searches chats by start time,
/// and a chat that ended in the window may have started before it.
pub const CHAT_LOOKBACK: Duration = Duration::from_secs(24 * 3600);

/// The record types backfill recovers by default, and the only ones it takes.
pub const RECOVERABLE: [EventType; 3] = [
    EventType::OfflineMessageSubmitted,
    EventType::ChatEnded,
    EventType::ChatWrappedUp,
];

/// Why a backfill stopped; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("{0} `{1}` is not an RFC 3339 time such as 2026-12-01T00:00:00Z")]
    BadTime(&'static str, String),
    #[error("--from {0} is not before --to {1}: give the window's start first")]
    Reversed(Timestamp, Timestamp),
    #[error(
        "--to {0} is in the future (now {1}): Comm100's API lists only what has happened; end \
         the window now or earlier"
    )]
    Future(Timestamp, Timestamp),
    #[error("--types: {0}")]
    Types(String),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(
        "cannot read {topic} to find the records published already: {error}; check \
         kafka.brokers and that the bridge's principal may read the topic"
    )]
    Read { topic: String, error: String },
    #[error(
        "cannot publish {kind} {id} to {topic}: {error}; what went before it is published, \
         and running the same command again continues from there"
    )]
    Publish {
        kind: EventType,
        id: String,
        topic: String,
        error: String,
    },
    #[error("cannot create the Kafka producer: {0}")]
    Client(String),
    #[error("kafka.value_format = \"json_sr\": {0}")]
    Registry(#[from] RegistryError),
    #[error("checkpoint {0}: {1}; give --checkpoint a file this command may write")]
    Checkpoint(PathBuf, String),
    #[error("Comm100's API gave {kind} {id}, which the bridge cannot normalize: {error}")]
    Normalize {
        kind: EventType,
        id: String,
        error: String,
    },
}

/// What to backfill.
#[derive(Debug, Clone)]
pub struct Options {
    pub from: Timestamp,
    pub to: Timestamp,
    pub kinds: Vec<EventType>,
    pub dry_run: bool,
    /// Where progress is kept, so an interrupted run continues where it stopped.
    pub checkpoint: PathBuf,
    /// The site label the records carry, as webhooks to /webhooks/comm100/{site} do.
    pub site: Option<Site>,
    /// Items asked for per page, 1 to [`source::PAGE_SIZE`].
    pub page_size: usize,
}

/// Parses `--from` and `--to`: RFC 3339, `from` before `to`, `to` not after `now`.
pub fn window(
    from: &str,
    to: &str,
    now: Timestamp,
) -> Result<(Timestamp, Timestamp), BackfillError> {
    let parse = |flag: &'static str, text: &str| {
        chrono::DateTime::parse_from_rfc3339(text.trim())
            .ok()
            .and_then(|t| Timestamp::from_millis(t.timestamp_millis()))
            .ok_or_else(|| BackfillError::BadTime(flag, text.to_owned()))
    };
    let (from, to) = (parse("--from", from)?, parse("--to", to)?);
    if from >= to {
        return Err(BackfillError::Reversed(from, to));
    }
    if to > now {
        return Err(BackfillError::Future(to, now));
    }
    Ok((from, to))
}

/// Parses `--types` (empty: the recoverable ones), refusing, with the reason, types that
/// cannot be recovered.
pub fn kinds(names: &[String]) -> Result<Vec<EventType>, BackfillError> {
    if names.is_empty() {
        return Ok(RECOVERABLE.to_vec());
    }
    let mut kinds = Vec::new();
    for name in names {
        let kind = EventType::ALL
            .into_iter()
            .find(|k| k.as_str() == name.trim())
            .ok_or_else(|| {
                BackfillError::Types(format!(
                    "`{name}` is not a record type; backfill takes offline_message_submitted, \
                     chat_ended and chat_wrapped_up"
                ))
            })?;
        let why = match kind {
            _ if RECOVERABLE.contains(&kind) => None,
            EventType::ChatStarted | EventType::ChatRequested => Some(
                "Comm100's API lists a chat only after it ended, so this record would come \
                 after the chat's chat_ended and carry nothing it lacks (chat.start_time)",
            ),
            _ => Some("Comm100's API does not keep these events"),
        };
        if let Some(why) = why {
            return Err(BackfillError::Types(format!(
                "{kind} cannot be backfilled: {why}"
            )));
        }
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Ok(kinds)
}

/// What a run found and did, per record type.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Events of the window in Comm100's API (this run's pages).
    pub found: usize,
    /// Of those, already in their topic.
    pub present: usize,
    /// Published (or, in a dry run, that would be).
    pub published: usize,
}

/// Progress of a run, saved after each page whose records are all acknowledged.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Checkpoint {
    from: String,
    to: String,
    types: Vec<String>,
    /// The last page done, per source.
    pages: BTreeMap<String, usize>,
    /// Sources done to their last page.
    done: BTreeSet<String>,
}

impl Checkpoint {
    fn new(options: &Options) -> Self {
        Self {
            from: options.from.to_string(),
            to: options.to.to_string(),
            types: options
                .kinds
                .iter()
                .map(|k| k.as_str().to_owned())
                .collect(),
            ..Self::default()
        }
    }

    /// The checkpoint at `path` when it is of the same window and types; else a new one.
    fn load(options: &Options, say: &mut impl FnMut(&str)) -> Self {
        let fresh = Self::new(options);
        let Ok(text) = std::fs::read_to_string(&options.checkpoint) else {
            return fresh;
        };
        match serde_json::from_str::<Self>(&text) {
            Ok(saved)
                if (&saved.from, &saved.to, &saved.types)
                    == (&fresh.from, &fresh.to, &fresh.types) =>
            {
                say(&format!(
                    "continuing from {} (pages done: {:?})",
                    options.checkpoint.display(),
                    saved.pages
                ));
                saved
            }
            _ => {
                say(&format!(
                    "{} is of another window or other types: starting over",
                    options.checkpoint.display()
                ));
                fresh
            }
        }
    }

    fn save(&self, path: &Path) -> Result<(), BackfillError> {
        let failed = |e: std::io::Error| BackfillError::Checkpoint(path.to_owned(), e.to_string());
        let part = path.with_extension("part");
        let text = serde_json::to_string_pretty(self).expect("a checkpoint serializes");
        std::fs::write(&part, text).map_err(failed)?;
        std::fs::rename(&part, path).map_err(failed)
    }
}

/// `duration` before `time` (`time` itself when that is not representable).
fn before(time: Timestamp, duration: Duration) -> Timestamp {
    Timestamp::from_millis(time.millis() - duration.as_millis() as i64).unwrap_or(time)
}

/// Runs a backfill; `say` hears each record published (or that would be) and each note.
pub async fn run(
    config: &Config,
    options: &Options,
    mut say: impl FnMut(&str),
) -> Result<BTreeMap<EventType, Counts>, BackfillError> {
    let api = Api::from_config(&config.comm100)?;
    let router = Router::new(&config.topics);
    let since = before(options.from, MARGIN);
    let mut known: HashMap<EventType, HashSet<String>> = HashMap::new();
    for &kind in &options.kinds {
        let ids = tokio::task::block_in_place(|| existing::ids(config, &router, kind, since))
            .map_err(|error| BackfillError::Read {
                topic: router.topic(kind).to_owned(),
                error: error.to_string(),
            })?;
        known.insert(kind, ids);
    }
    let publisher = match options.dry_run {
        true => None,
        false => {
            let framing = Framing::from_config(config).await?;
            Some(
                Publisher::new(config, Metrics::new(), framing)
                    .map_err(|e| BackfillError::Client(e.to_string()))?,
            )
        }
    };
    let mut checkpoint = match options.dry_run {
        true => Checkpoint::new(options),
        false => Checkpoint::load(options, &mut say),
    };
    let sources: BTreeSet<Source> = options
        .kinds
        .iter()
        .filter_map(|k| Source::of(*k))
        .collect();
    let mut counts: BTreeMap<EventType, Counts> = options
        .kinds
        .iter()
        .map(|k| (*k, Counts::default()))
        .collect();
    for source in sources {
        if checkpoint.done.contains(source.as_str()) {
            continue;
        }
        let search_from = match source {
            Source::Chats => before(options.from, CHAT_LOOKBACK),
            Source::OfflineMessages => options.from,
        };
        let mut index = checkpoint.pages.get(source.as_str()).copied().unwrap_or(0) + 1;
        loop {
            let size = options.page_size.clamp(1, source::PAGE_SIZE);
            let page = source::page(&api, source, (search_from, options.to), index, size).await?;
            for skipped in &page.skipped {
                say(&format!(
                    "skipped {skipped}: no webhook record could match it"
                ));
            }
            let mut found: Vec<_> = page
                .found
                .into_iter()
                .filter(|f| options.kinds.contains(&f.kind))
                .filter(|f| options.from <= f.at && f.at <= options.to)
                .collect();
            found.sort_by_key(|f| f.at);
            for f in found {
                let count = counts.entry(f.kind).or_default();
                count.found += 1;
                let ids = known.entry(f.kind).or_default();
                if ids.contains(&f.id) {
                    count.present += 1;
                    continue;
                }
                let body = f.body.to_string();
                let mut record =
                    Record::from_body(body.as_bytes(), options.site.clone(), Timestamp::now())
                        .map_err(|e| BackfillError::Normalize {
                            kind: f.kind,
                            id: f.id.clone(),
                            error: e.to_string(),
                        })?;
                record.origin = Origin::Backfill;
                let message = router.route(&record);
                match &publisher {
                    None => say(&format!(
                        "would publish {} {} ({}) to {}",
                        f.kind, f.id, f.at, message.topic
                    )),
                    Some(publisher) => {
                        let failed = |error: KafkaError| BackfillError::Publish {
                            kind: f.kind,
                            id: f.id.clone(),
                            topic: message.topic.clone(),
                            error: error.to_string(),
                        };
                        let pending = publisher.enqueue(&message).map_err(failed)?;
                        pending.wait().await.map_err(failed)?;
                        say(&format!(
                            "published {} {} ({}) to {} as {}",
                            f.kind, f.id, f.at, message.topic, message.id
                        ));
                    }
                }
                ids.insert(f.id);
                count.published += 1;
            }
            if !options.dry_run {
                checkpoint.pages.insert(source.as_str().to_owned(), index);
                if page.last {
                    checkpoint.done.insert(source.as_str().to_owned());
                }
                checkpoint.save(&options.checkpoint)?;
            }
            if page.last {
                break;
            }
            index += 1;
        }
    }
    if !options.dry_run {
        // Done: the next run over this window starts from the first page again.
        let _ = std::fs::remove_file(&options.checkpoint);
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_two_rfc_3339_times_in_order_and_not_in_the_future() {
        let now = Timestamp::parse_str("2026-12-04T12:00:00Z").unwrap();
        let (from, to) = window("2026-12-01T00:00:00Z", "2026-12-02T00:00:00+01:00", now).unwrap();
        assert_eq!(from.to_string(), "2026-12-01T00:00:00.000Z");
        assert_eq!(to.to_string(), "2026-12-01T23:00:00.000Z");
        let err = |f: &str, t: &str| window(f, t, now).unwrap_err().to_string();
        assert!(err("yesterday", "2026-12-02T00:00:00Z").contains("--from `yesterday`"));
        assert!(err("2026-12-02T00:00:00Z", "2026-12-01T00:00:00Z").contains("is not before --to"));
        assert!(err("2026-12-01T00:00:00Z", "2026-12-05T00:00:00Z").contains("in the future"));
    }

    #[test]
    fn only_recoverable_types_are_taken_and_the_others_say_why() {
        assert_eq!(kinds(&[]).unwrap(), RECOVERABLE);
        assert_eq!(
            kinds(&["chat_ended".into(), "chat_ended".into()]).unwrap(),
            [EventType::ChatEnded]
        );
        let err = |name: &str| kinds(&[name.to_owned()]).unwrap_err().to_string();
        assert!(err("chat_started").contains("after the chat's chat_ended"));
        assert!(err("chat_requested").contains("after the chat's chat_ended"));
        assert!(err("chat_transferred").contains("does not keep these events"));
        assert!(err("agent_status_changed").contains("does not keep these events"));
        assert!(err("chats").contains("not a record type"));
    }
}
