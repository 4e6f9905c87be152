//! Gzip decoding of any body: never panics, never produces more than the limit, and pays
//! for every byte of its output buffer before it holds it.
#![no_main]

use comm100_bridge::http::{gunzip_within, Gunzip, Room};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 64 << 10;

fuzz_target!(|data: &[u8]| {
    let (mut held, mut peak) = (0usize, 0usize);
    let mut room = |room: Room| {
        match room {
            Room::Take(n) => held += n,
            Room::GiveBack(n) => held = held.checked_sub(n).expect("gave back more than taken"),
        }
        peak = peak.max(held);
        Ok(())
    };
    match gunzip_within(data, MAX, &mut room) {
        Ok(body) => {
            assert!(body.len() <= MAX);
            assert!(held >= body.len(), "holds {} bytes, paid for {held}", body.len());
            assert!(peak <= 2 * MAX, "paid for {peak} bytes at once");
        }
        Err(Gunzip::TooLarge | Gunzip::Invalid(_)) => {}
        Err(Gunzip::Crowded(_)) => unreachable!("the room never refuses"),
    }
});
