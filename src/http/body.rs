//! Reading a request body, and decompressing a gzip one, paying for every buffer from the
//! budget before it is allocated.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::budget::{Crowded, Room};

/// Why a body was not read.
pub(super) enum ReadError {
    TooLarge,
    Crowded(Crowded),
    Hyper(hyper::Error),
}

/// Grows a buffer of capacity `from` to `to` with `grow`, paying for it through `room`.
pub(super) fn regrow(
    from: usize,
    to: usize,
    grow: impl FnOnce(),
    room: &mut impl FnMut(Room) -> Result<(), Crowded>,
) -> Result<(), Crowded> {
    room(Room::Take(to))?;
    grow();
    room(Room::GiveBack(from))
}

/// The capacity a buffer of `capacity` bytes grows to when it must hold `need`: doubling
/// (at least 16 KiB), never past `max`, nor past `expected` when that is known.
pub(super) fn next_capacity(capacity: usize, need: usize, expected: usize, max: usize) -> usize {
    let mut to = need.max(2 * capacity).max(16 << 10).min(max);
    if expected > 0 {
        to = to.min(expected.max(need));
    }
    to.max(need)
}

/// Reads a body of at most `max` bytes into one buffer, sized for `expected` bytes when
/// that is known, asking `room` for each growth before it is made.
pub(super) async fn read_body(
    mut body: Incoming,
    expected: usize,
    max: usize,
    room: &mut impl FnMut(Room) -> Result<(), Crowded>,
) -> Result<Bytes, ReadError> {
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(ReadError::Hyper)?.into_data() else {
            continue;
        };
        let need = buffer.len() + data.len();
        if need > max {
            return Err(ReadError::TooLarge);
        }
        if need > buffer.capacity() {
            let (from, to) = (
                buffer.capacity(),
                next_capacity(buffer.capacity(), need, expected, max),
            );
            let grow = || {
                let mut grown = BytesMut::with_capacity(to);
                grown.extend_from_slice(&buffer);
                buffer = grown;
            };
            regrow(from, to, grow, room).map_err(ReadError::Crowded)?;
        }
        buffer.extend_from_slice(&data);
    }
    Ok(buffer.freeze())
}

/// Why a gzip body was refused.
#[derive(Debug)]
pub enum Gunzip {
    /// It decompresses to more than the limit.
    TooLarge,
    Invalid(std::io::Error),
    /// The budget has no room for what it decompresses to.
    Crowded(Crowded),
}

/// Decompresses a gzip body (one or more members), refusing to produce more than `max`
/// bytes, asking `room` for each growth of the output before it is made.
pub fn gunzip_within(
    body: &[u8],
    max: usize,
    room: &mut impl FnMut(Room) -> Result<(), Crowded>,
) -> Result<Bytes, Gunzip> {
    use std::io::Read;
    let mut decoder = flate2::read::MultiGzDecoder::new(body);
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        let n = match decoder.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Gunzip::Invalid(e)),
        };
        let need = out.len() + n;
        if need > max {
            return Err(Gunzip::TooLarge);
        }
        if need > out.capacity() {
            let (from, to) = (out.capacity(), next_capacity(out.capacity(), need, 0, max));
            let grow = || {
                let mut grown = Vec::with_capacity(to);
                grown.extend_from_slice(&out);
                out = grown;
            };
            regrow(from, to, grow, room).map_err(Gunzip::Crowded)?;
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_grows_by_doubling_to_what_is_expected_and_never_past_the_limit() {
        assert_eq!(next_capacity(0, 100, 0, 1 << 20), 16 << 10);
        assert_eq!(
            next_capacity(16 << 10, (16 << 10) + 1, 0, 1 << 20),
            32 << 10
        );
        assert_eq!(next_capacity(0, 100, 5_000, 1 << 20), 5_000);
        assert_eq!(
            next_capacity(512 << 10, (512 << 10) + 1, 700_000, 1 << 20),
            700_000
        );
        assert_eq!(
            next_capacity(768 << 10, (768 << 10) + 1, 0, 1 << 20),
            1 << 20
        );
        assert_eq!(
            next_capacity(0, 9_000, 5_000, 1 << 20),
            9_000,
            "more than declared"
        );
    }
}
