//! Frames on disk, `[payload length: u32 LE][CRC-32 of payload: u32 LE][payload]`, and a
//! reader of a segment's frames that steps over damage to the next intact frame.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

/// Bytes before a frame's payload.
pub(super) const FRAME_HEADER: u64 = 8;

pub(super) fn encode_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(FRAME_HEADER as usize + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// What is at a place in a segment.
#[derive(Debug)]
enum Frame {
    /// An intact frame: its payload.
    Intact(Vec<u8>),
    /// The clean end of the data.
    End,
    /// No intact frame starts here: a torn write, or damage on disk. A frame of length 0 is
    /// damage too (the writer never writes one, and eight zero bytes would pass the check).
    Damaged,
}

/// Reads one frame of at most `available` bytes whose payload is at most `limit` bytes.
/// Errors are the file's own (a read that failed), never the data's.
fn read_frame(reader: &mut impl Read, available: u64, limit: u64) -> io::Result<Frame> {
    let mut header = [0u8; FRAME_HEADER as usize];
    let mut filled = 0;
    while filled < header.len() {
        match reader.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Ok(Frame::End),
            Ok(0) => return Ok(Frame::Damaged),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if available < FRAME_HEADER {
        return Ok(Frame::Damaged);
    }
    let len = u64::from(u32::from_le_bytes(header[..4].try_into().expect("4 bytes")));
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if len == 0 || len > limit || FRAME_HEADER + len > available {
        return Ok(Frame::Damaged);
    }
    let mut payload = vec![0u8; len as usize];
    match reader.read_exact(&mut payload) {
        Ok(()) => {}
        // The file is shorter than the data it should hold.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Frame::Damaged),
        Err(e) => return Err(e),
    }
    if crc32fast::hash(&payload) != crc {
        return Ok(Frame::Damaged);
    }
    Ok(Frame::Intact(payload))
}

/// Where the first intact frame at or after `from` starts, in `file`'s data up to `end`,
/// or `None` when there is none. A candidate must declare a length that fits, begin its
/// payload as every record does (`{"`) and match its checksum.
fn next_intact(file: &File, from: u64, end: u64, limit: u64) -> io::Result<Option<u64>> {
    const LOOK: usize = FRAME_HEADER as usize + 2;
    let mut window = vec![0u8; (64 << 10) + LOOK];
    let mut base = from;
    while base + LOOK as u64 <= end {
        let want = ((end - base) as usize).min(window.len());
        let got = read_up_to_at(file, &mut window[..want], base)?;
        for i in 0..(got + 1).saturating_sub(LOOK) {
            let at = base + i as u64;
            let len = u64::from(u32::from_le_bytes(window[i..i + 4].try_into().expect("4")));
            if len < 2 || len > limit || at + FRAME_HEADER + len > end {
                continue;
            }
            if window[i + 8..i + 10] != *b"{\"" {
                continue;
            }
            let crc = u32::from_le_bytes(window[i + 4..i + 8].try_into().expect("4"));
            if checksum_at(file, at + FRAME_HEADER, len)? == Some(crc) {
                return Ok(Some(at));
            }
        }
        if got < window.len() {
            return Ok(None);
        }
        // The next window overlaps this one so that no candidate is missed.
        base += (got + 1 - LOOK) as u64;
    }
    return Ok(None);

    fn checksum_at(file: &File, at: u64, len: u64) -> io::Result<Option<u32>> {
        let mut hasher = crc32fast::Hasher::new();
        let mut chunk = vec![0u8; len.min(256 << 10) as usize];
        let mut done = 0;
        while done < len {
            let n = chunk.len().min((len - done) as usize);
            let got = read_up_to_at(file, &mut chunk[..n], at + done)?;
            if got < n {
                return Ok(None);
            }
            hasher.update(&chunk[..n]);
            done += n as u64;
        }
        Ok(Some(hasher.finalize()))
    }
}

/// Reads into `buf` from `at` until it is full or the file ends; how many bytes were read.
fn read_up_to_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], at + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Bytes kept of a damaged span for the dead-letter topic.
const DAMAGED_PREFIX: u64 = 64 << 10;

/// One segment read in order from a place in it, stepping over damage.
pub(super) struct SegmentReader {
    reader: BufReader<File>,
    offset: u64,
    /// Where the data read ends.
    pub(super) end: u64,
    limit: u64,
}

/// What [`SegmentReader::next`] found, at `offset`, taking `size` bytes.
#[derive(Debug)]
pub(super) enum Found {
    Intact(Vec<u8>),
    /// Bytes that are no intact frame, followed by an intact one (`tail` false) or by
    /// nothing (`tail` true: a write cut short, or damage at the end): their first
    /// [`DAMAGED_PREFIX`] bytes.
    Damaged {
        prefix: Vec<u8>,
        tail: bool,
    },
}

impl SegmentReader {
    /// Reads `path` from `offset` up to `end` (its length when `None`).
    pub(super) fn open(
        path: PathBuf,
        offset: u64,
        end: Option<u64>,
        limit: usize,
    ) -> io::Result<Self> {
        let mut file = File::open(path)?;
        let end = match end {
            Some(end) => end,
            None => file.metadata()?.len(),
        };
        file.seek(SeekFrom::Start(offset))?;
        Ok(Self {
            reader: BufReader::with_capacity(256 << 10, file),
            offset,
            end,
            limit: limit as u64,
        })
    }

    /// The next frame or damaged span, its offset and size; `None` at the end.
    pub(super) fn next(&mut self) -> io::Result<Option<(Found, u64, u64)>> {
        if self.offset >= self.end {
            return Ok(None);
        }
        let at = self.offset;
        match read_frame(&mut self.reader, self.end - at, self.limit)? {
            Frame::Intact(payload) => {
                let size = FRAME_HEADER + payload.len() as u64;
                self.offset += size;
                Ok(Some((Found::Intact(payload), at, size)))
            }
            Frame::End => {
                // The file is shorter than the data it should hold.
                self.offset = self.end;
                Ok(Some((
                    Found::Damaged {
                        prefix: Vec::new(),
                        tail: true,
                    },
                    at,
                    self.end - at,
                )))
            }
            Frame::Damaged => {
                let file = self.reader.get_ref();
                let next = next_intact(file, at + 1, self.end, self.limit)?;
                let stop = next.unwrap_or(self.end);
                let mut prefix = vec![0u8; (stop - at).min(DAMAGED_PREFIX) as usize];
                let filled = read_up_to_at(file, &mut prefix, at)?;
                prefix.truncate(filled);
                self.reader.seek(SeekFrom::Start(stop))?;
                self.offset = stop;
                let tail = next.is_none();
                Ok(Some((Found::Damaged { prefix, tail }, at, stop - at)))
            }
        }
    }
}
