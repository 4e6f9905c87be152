//! Parse + normalize + serialize one sample N times, for counting instructions under
//! callgrind, which unlike wall-clock timing is repeatable on a shared machine:
//!
//!     valgrind --tool=callgrind target/release/examples/bench_instructions SAMPLE N
//!
//! The difference between the totals for two values of N, divided by their difference, is
//! the count per event. Under valgrind SHA-256 runs in software (no SHA-NI), which adds
//! about 55 instructions per body byte that a native run does not spend.

use comm100_bridge::config::Config;
use comm100_bridge::event::{Record, Timestamp};
use comm100_bridge::route::Router;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(sample), Some(n)) = (args.next(), args.next()) else {
        return Err("usage: bench_instructions SAMPLE.json ITERATIONS".into());
    };
    let n: usize = n.parse()?;
    let body = std::fs::read(sample)?;
    let config = Config::load_with_env(None, Some(Default::default()))?;
    let router = Router::new(&config.topics);
    let mut bytes = 0;
    for _ in 0..n {
        let record = Record::from_body(std::hint::black_box(&body), None, Timestamp::now())?;
        bytes += router.route(&record).value.len();
    }
    println!("{n} events, {bytes} bytes of records");
    Ok(())
}
