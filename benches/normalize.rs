//! Parse + normalize + serialize (what the bridge does to every body before Kafka) for
//! every sample in `tests/fixtures/`: time per event and bytes of input per second.
//! `cargo bench --bench normalize`

use std::path::Path;

use comm100_bridge::config::Config;
use comm100_bridge::event::{Record, Timestamp};
use comm100_bridge::route::Router;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn samples() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut samples: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.ends_with(".json") && !name.ends_with(".expected.json")
        })
        .map(|p| {
            let name = p.file_stem().unwrap().to_str().unwrap().to_owned();
            (name, std::fs::read(p).unwrap())
        })
        .collect();
    samples.sort();
    samples
}

fn normalize(c: &mut Criterion) {
    let config = Config::load_with_env(None, Some(Default::default())).unwrap();
    let router = Router::new(&config.topics);
    let mut group = c.benchmark_group("parse_normalize_serialize");
    for (name, body) in samples() {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(&name), &body, |b, body| {
            b.iter(|| {
                let record = Record::from_body(body, None, Timestamp::now()).unwrap();
                router.route(&record)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, normalize);
criterion_main!(benches);
