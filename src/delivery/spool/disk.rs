//! The spool directory on disk: its lock, its private files, the cursor, the segments, and
//! what a scan of them recovers when the spool opens.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::frame::{Found, SegmentReader};
use super::{Position, SpoolError, CURSOR_FILE, LOCK_FILE, SEGMENT_SUFFIX};

/// Takes the directory's lock (an advisory `flock` on `lock`, released when the process
/// ends however it ends) and writes this process's pid in it.
pub(super) fn lock(dir: &Path) -> Result<File, SpoolError> {
    let io_err = |error| SpoolError::Io {
        dir: dir.to_owned(),
        error,
    };
    let path = dir.join(LOCK_FILE);
    let mut file = private_file()
        .read(true)
        .write(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err)?;
    // `spool inspect` takes a shared lock for an instant to see whether anyone holds it:
    // a few tries tell that apart from a holder.
    let mut tries = 0;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(fs::TryLockError::WouldBlock) if tries < 10 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(SpoolError::Locked {
                    dir: dir.to_owned(),
                    holder: holder(dir).unwrap_or_else(|| "unknown".into()),
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(e)),
        }
    }
    file.set_len(0).map_err(io_err)?;
    writeln!(file, "{}", std::process::id()).map_err(io_err)?;
    Ok(file)
}

/// The pid written by the process that holds `dir`'s lock, or `None` when no one holds it.
pub fn holder(dir: &Path) -> Option<String> {
    let file = File::open(dir.join(LOCK_FILE)).ok()?;
    match file.try_lock_shared() {
        Ok(()) => None,
        Err(_) => {
            let pid = fs::read_to_string(dir.join(LOCK_FILE)).ok()?;
            Some(pid.trim().to_owned()).filter(|p| !p.is_empty())
        }
    }
}

/// Creates `dir` (and its parents) if needed, and makes it the owner's alone (0700): the
/// spool holds chat transcripts and visitor details. A directory the process may not
/// change (a mounted volume owned by another user) is logged and left as it is.
pub(super) fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        if let Err(e) = fs::set_permissions(dir, fs::Permissions::from_mode(0o700)) {
            tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), error = %e, "the spool directory is readable by others and cannot be made private (0700); its files are 0600");
        }
    }
    Ok(())
}

/// Options that create a file readable and writable by its owner only (0600).
pub(super) fn private_file() -> OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = OpenOptions::new();
    options.create(true).mode(0o600);
    options
}

pub(super) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{SEGMENT_SUFFIX}"))
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The cursor file: segment and offset, then a CRC-32 of both.
pub(super) fn write_cursor(dir: &Path, pos: Position) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(20);
    bytes.extend_from_slice(&pos.segment.to_le_bytes());
    bytes.extend_from_slice(&pos.offset.to_le_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join("cursor.tmp");
    private_file()
        .write(true)
        .truncate(true)
        .open(&tmp)?
        .write_all(&bytes)?;
    fs::rename(&tmp, dir.join(CURSOR_FILE))
}

pub(super) fn read_cursor(dir: &Path) -> Option<Position> {
    let bytes = fs::read(dir.join(CURSOR_FILE)).ok()?;
    if bytes.len() != 20 || crc32fast::hash(&bytes[..16]).to_le_bytes() != bytes[16..] {
        tracing::warn!(dir = %dir.display(), "spool cursor is unreadable; replaying from the oldest segment");
        return None;
    }
    Some(Position {
        segment: u64::from_le_bytes(bytes[..8].try_into().ok()?),
        offset: u64::from_le_bytes(bytes[8..16].try_into().ok()?),
    })
}

pub(super) struct Recovered {
    pub(super) segments: BTreeMap<u64, u64>,
    pub(super) read: Position,
    pub(super) pending_events: u64,
    pub(super) pending_bytes: u64,
}

/// The ids of the segments in `dir`, oldest first.
pub(super) fn segment_ids(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids: Vec<u64> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)) else {
            continue;
        };
        if let Ok(id) = stem.parse() {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Scans every segment, cuts off torn tails, and counts what follows the cursor. A damaged
/// span followed by intact frames is kept: replay sends it to the dead-letter topic and goes
/// on with the frames after it.
pub(super) fn recover(dir: &Path, limit: usize) -> io::Result<Recovered> {
    let ids = segment_ids(dir)?;
    let oldest = ids.first().copied().unwrap_or(1);
    let newest = ids.last().copied().unwrap_or(1);
    let mut read = read_cursor(dir).unwrap_or(Position {
        segment: oldest,
        offset: 0,
    });
    if read.segment < oldest || read.segment > newest {
        read = Position {
            segment: oldest,
            offset: 0,
        };
    }

    let mut segments = BTreeMap::new();
    let (mut pending_events, mut pending_bytes) = (0, 0);
    for id in ids {
        let path = segment_path(dir, id);
        let mut reader = SegmentReader::open(path.clone(), 0, None, limit)?;
        let file_len = reader.end;
        let mut offset = 0u64;
        let mut boundaries_hit_cursor = read.segment != id || read.offset == 0;
        let mut frames = Vec::new();
        while let Some((found, at, size)) = reader.next()? {
            match found {
                Found::Intact(_) => {}
                Found::Damaged { tail: false, .. } => tracing::warn!(
                    segment = %path.display(),
                    offset = at,
                    damaged_bytes = size,
                    "spool segment has a damaged frame; it goes to the dead-letter topic and the records after it are kept"
                ),
                Found::Damaged { tail: true, .. } => {
                    tracing::warn!(
                        segment = %path.display(),
                        valid_bytes = at,
                        dropped_bytes = file_len - at,
                        "spool segment has a torn or corrupt tail (a crash during a write); cutting it off"
                    );
                    let file = OpenOptions::new().write(true).open(&path)?;
                    file.set_len(at)?;
                    file.sync_all()?;
                    break;
                }
            }
            frames.push((at, size));
            offset = at + size;
            if read.segment == id && offset == read.offset {
                boundaries_hit_cursor = true;
            }
        }
        if read.segment == id && (!boundaries_hit_cursor || read.offset > offset) {
            tracing::warn!(segment = %path.display(), "spool cursor is not on a record boundary; replaying the segment from its start");
            read.offset = 0;
        }
        for (start, size) in frames {
            if (id, start) >= (read.segment, read.offset) {
                pending_events += 1;
                pending_bytes += size;
            }
        }
        segments.insert(id, offset);
    }
    Ok(Recovered {
        segments,
        read,
        pending_events,
        pending_bytes,
    })
}
