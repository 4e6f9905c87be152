//! Gzip decoding of any body: never panics, never produces more than the limit.
#![no_main]

use comm100_bridge::http::{gunzip, Gunzip};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 64 << 10;

fuzz_target!(|data: &[u8]| {
    match gunzip(data, MAX) {
        Ok(body) => assert!(body.len() <= MAX),
        Err(Gunzip::TooLarge | Gunzip::Invalid(_)) => {}
    }
});
