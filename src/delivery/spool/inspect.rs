//! `comm100-bridge spool inspect`: what a spool directory holds, read without changing it
//! (a torn tail is reported, not cut), so it is safe on the spool of a running bridge.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use serde::Serialize;

use super::{holder, read_cursor, segment_path, Found, Position, SegmentReader};
use super::{SpoolError, SEGMENT_SUFFIX};
use crate::route::Message;

/// What a spool holds after its cursor.
#[derive(Debug, Default, Serialize)]
pub struct Inspection {
    pub dir: String,
    /// The pid of the process holding the directory's lock, if any.
    pub held_by: Option<String>,
    /// Records waiting to be replayed, and their bytes on disk.
    pub records: u64,
    pub bytes: u64,
    pub oldest_received_at: Option<String>,
    pub newest_received_at: Option<String>,
    pub types: BTreeMap<String, TypeCount>,
    /// Records waiting that are dead letters (spooled as such, for the dead-letter topic).
    pub dead_letters: u64,
    /// Bytes after the last whole record of a segment (a write cut short by a crash, or
    /// one in progress); a bridge opening the spool cuts them off.
    pub torn_bytes: u64,
    /// Bytes before an intact record that are no record (damaged on disk, or written by an
    /// incompatible version); replay sends them to the dead-letter topic.
    pub damaged_bytes: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct TypeCount {
    pub records: u64,
    pub bytes: u64,
}

/// Reads every record of `dir` after the saved cursor.
pub fn inspect(dir: &Path) -> Result<Inspection, SpoolError> {
    let io_err = |error| SpoolError::Io {
        dir: dir.to_owned(),
        error,
    };
    if !dir.is_dir() {
        return Err(io_err(io::Error::new(
            io::ErrorKind::NotFound,
            "no such directory",
        )));
    }
    let mut ids: Vec<u64> = fs::read_dir(dir)
        .map_err(io_err)?
        .filter_map(|e| {
            let name = e.ok()?.file_name();
            name.to_str()?.strip_suffix(SEGMENT_SUFFIX)?.parse().ok()
        })
        .collect();
    ids.sort_unstable();
    let start = read_cursor(dir)
        .filter(|c| ids.contains(&c.segment))
        .unwrap_or(Position {
            segment: ids.first().copied().unwrap_or(0),
            offset: 0,
        });
    let mut out = Inspection {
        dir: dir.display().to_string(),
        held_by: holder(dir),
        ..Inspection::default()
    };
    for id in ids.into_iter().filter(|&id| id >= start.segment) {
        let offset = if id == start.segment { start.offset } else { 0 };
        let mut reader =
            SegmentReader::open(segment_path(dir, id), offset, None, u32::MAX as usize)
                .map_err(io_err)?;
        while let Some((found, _, size)) = reader.next().map_err(io_err)? {
            match found {
                Found::Intact(payload) => match serde_json::from_slice::<Message>(&payload) {
                    Ok(message) => out.add(&message, size),
                    Err(_) => out.damaged_bytes += size,
                },
                Found::Damaged { tail: false, .. } => out.damaged_bytes += size,
                Found::Damaged { tail: true, .. } => out.torn_bytes += size,
            }
        }
    }
    Ok(out)
}

impl Inspection {
    fn add(&mut self, message: &Message, size: u64) {
        self.records += 1;
        self.bytes += size;
        let count = self
            .types
            .entry(message.kind.as_str().to_owned())
            .or_default();
        count.records += 1;
        count.bytes += size;
        if message
            .headers
            .iter()
            .any(|(k, _)| k == crate::delivery::kafka::DLQ_REASON)
        {
            self.dead_letters += 1;
        }
        #[derive(serde::Deserialize)]
        struct Received {
            received_at: Option<String>,
        }
        let Ok(Received {
            received_at: Some(at),
        }) = serde_json::from_slice(&message.value)
        else {
            return;
        };
        // RFC 3339 UTC with a fixed width: text order is time order.
        if self.oldest_received_at.as_ref().is_none_or(|o| at < *o) {
            self.oldest_received_at = Some(at.clone());
        }
        if self.newest_received_at.as_ref().is_none_or(|n| at > *n) {
            self.newest_received_at = Some(at);
        }
    }
}
