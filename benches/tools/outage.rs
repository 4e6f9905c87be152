//! Outage benchmark: the bridge under a fixed request rate while every Kafka broker is
//! down for a while, against a librdkafka mock cluster in its own process.
//!
//!     bench_outage BRIDGE BROKER RATE... [--outage S] [--connections N]
//!
//! BRIDGE is a comm100-bridge binary, BROKER the `bench_broker` example. For each RATE
//! (requests per second; `max/2` is half the maximum measured first, closed-loop, over the
//! same connections), an open-loop sender posts four sample types with fresh chat ids for
//! 5 s, the brokers go down for S seconds (default 6), come back, and the sender goes on
//! until the spool has been empty for 3 s (60 s at most). It prints, per rate: requests,
//! non-2xx answers, seconds from the brokers' return until at least 99 % of answers are 200
//! again (each 100 ms of requests from then on), the spool's peak, and seconds from the
//! return until the spool is empty.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::Semaphore;

const TOKEN: &str = "bench-token-0123456789";
const TYPES: [&str; 4] = [
    "chat_started",
    "chat_ended",
    "chat_transferred",
    "chat_requested",
];
const WARM_UP: Duration = Duration::from_secs(5);

type Http = Client<HttpConnector, Full<Bytes>>;

struct Rig {
    broker: Child,
    broker_in: ChildStdin,
    broker_out: BufReader<std::process::ChildStdout>,
    bridge: Child,
    hook: String,
    metrics: String,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn start(bridge: &str, broker: &str) -> Self {
        let mut broker = spawn(Command::new(broker).arg("mock").stdin(Stdio::piped()));
        let broker_in = broker.stdin.take().unwrap();
        let mut broker_out = BufReader::new(broker.stdout.take().unwrap());
        let mut line = String::new();
        broker_out.read_line(&mut line).unwrap();
        let bootstrap = line.trim().strip_prefix("bootstrap ").unwrap().to_owned();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("bridge.toml");
        std::fs::write(
            &config,
            format!(
                "[http]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
                 [auth]\ntokens = [\"{TOKEN}\"]\n[kafka]\nbrokers = [\"{bootstrap}\"]\n\
                 [spool]\ndir = \"{}\"\n[log]\nformat = \"json\"\nlevel = \"info\"\n",
                dir.path().join("spool").display()
            ),
        )
        .unwrap();
        let mut bridge = spawn(
            Command::new(bridge)
                .args(["serve", "--config"])
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let mut lines = BufReader::new(bridge.stderr.take().unwrap()).lines();
        let (addr, admin) = loop {
            let line = lines.next().expect("the bridge exited").unwrap();
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["fields"]["message"] == "comm100-bridge listening" {
                let field = |k: &str| v["fields"][k].as_str().unwrap().to_owned();
                break (field("addr"), field("admin"));
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Self {
            broker,
            broker_in,
            broker_out,
            bridge,
            hook: format!("http://{addr}/webhooks/comm100?token={TOKEN}"),
            metrics: format!("http://{admin}/metrics"),
            _dir: dir,
        }
    }

    fn brokers(&mut self, command: &str) {
        writeln!(self.broker_in, "{command}").unwrap();
        let mut ok = String::new();
        self.broker_out.read_line(&mut ok).unwrap();
        assert_eq!(ok.trim(), "ok", "bench_broker: {ok}");
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.bridge.kill();
        let _ = self.broker.kill();
        let _ = self.bridge.wait();
        let _ = self.broker.wait();
    }
}

/// This process never takes a mock broker down itself (`bench_broker` does).
#[allow(clippy::disallowed_methods)]
fn spawn(command: &mut Command) -> Child {
    command.stdout(Stdio::piped()).spawn().unwrap()
}

fn body(n: u64) -> Full<Bytes> {
    let kind = TYPES[(n % 4) as usize];
    Full::new(Bytes::from(format!(
        r#"{{"event":"{kind}","chat_id":"bench-{n}","site_id":10000,"visitor":{{"name":"Bench"}}}}"#
    )))
}

async fn post(http: &Http, hook: &str, n: u64) -> u16 {
    let request = Request::post(hook)
        .header("content-type", "application/json")
        .body(body(n))
        .unwrap();
    match http.request(request).await {
        Ok(response) => {
            let status = response.status().as_u16();
            let _ = response.into_body().collect().await;
            status
        }
        Err(_) => 0,
    }
}

async fn spool_events(http: &Http, url: &str) -> Option<f64> {
    let request = Request::get(url).body(Full::default()).ok()?;
    let body = http
        .request(request)
        .await
        .ok()?
        .into_body()
        .collect()
        .await;
    let text = String::from_utf8(body.ok()?.to_bytes().to_vec()).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("comm100_bridge_spool_events "))
        .and_then(|v| v.trim().parse().ok())
}

fn client(connections: usize) -> Http {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build_http()
}

/// Answers per second, closed-loop over `connections`, for 5 s.
async fn max_rate(rig: &Rig, connections: usize) -> f64 {
    let http = client(connections);
    let until = Instant::now() + Duration::from_secs(5);
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (http, hook, count) = (http.clone(), rig.hook.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = c as u64 * 1_000_000_000;
            while Instant::now() < until {
                if post(&http, &hook, n).await == 200 {
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                n += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    count.load(std::sync::atomic::Ordering::Relaxed) as f64 / 5.0
}

struct Figures {
    requests: usize,
    not_2xx: usize,
    back_to_200: Option<f64>,
    spool_peak: f64,
    spool_empty: Option<f64>,
}

async fn outage(rig: &mut Rig, rate: f64, down_for: Duration, connections: usize) -> Figures {
    let http = client(connections);
    let answers: Arc<Mutex<Vec<(Duration, u16)>>> = Arc::default();
    let started = Instant::now();
    let slots = Arc::new(Semaphore::new(connections));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (http, hook, answers, stop) = (
            http.clone(),
            rig.hook.clone(),
            answers.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let slot = slots.clone().acquire_owned().await.unwrap();
                let (http, hook, answers) = (http.clone(), hook.clone(), answers.clone());
                let sent = started.elapsed();
                tokio::spawn(async move {
                    let status = post(&http, &hook, n).await;
                    answers.lock().unwrap().push((sent, status));
                    drop(slot);
                });
                n += 1;
            }
        })
    };
    let mut samples = Vec::new();
    let sample_every = Duration::from_millis(100);
    let mut phase = 0;
    let mut up_at = Duration::ZERO;
    loop {
        tokio::time::sleep(sample_every).await;
        let now = started.elapsed();
        if let Some(events) = spool_events(&http, &rig.metrics).await {
            samples.push((now, events));
        }
        if phase == 0 && now >= WARM_UP {
            rig.brokers("down");
            phase = 1;
        } else if phase == 1 && now >= WARM_UP + down_for {
            rig.brokers("up");
            up_at = started.elapsed();
            phase = 2;
        } else if phase == 2 {
            let empty_for = samples
                .iter()
                .rev()
                .take_while(|(_, events)| *events == 0.0)
                .count();
            if now > up_at + Duration::from_secs(60)
                || (empty_for >= 30 && now > up_at + Duration::from_secs(10))
            {
                break;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.await.unwrap();
    let _ = slots_drained(&answers).await;
    let answers = answers.lock().unwrap().clone();
    let not_2xx = answers
        .iter()
        .filter(|(_, s)| !(200..300).contains(s))
        .count();
    // 100 ms buckets of requests by the time they were sent, from the return on.
    let bucket = |t: Duration| ((t.saturating_sub(up_at)).as_millis() / 100) as usize;
    let mut buckets: Vec<(usize, usize)> = Vec::new();
    for (sent, status) in answers.iter().filter(|(t, _)| *t >= up_at) {
        let b = bucket(*sent);
        if buckets.len() <= b {
            buckets.resize(b + 1, (0, 0));
        }
        buckets[b].0 += 1;
        buckets[b].1 += usize::from(*status == 200);
    }
    let good = |(all, ok): &(usize, usize)| *all == 0 || *ok * 100 >= *all * 99;
    let first_good_run = (0..buckets.len()).find(|&b| buckets[b..].iter().all(good));
    let spool_peak = samples.iter().map(|(_, e)| *e).fold(0.0, f64::max);
    let spool_empty = samples
        .iter()
        .position(|(t, e)| *t >= up_at && *e == 0.0)
        .filter(|&i| samples[i..].iter().all(|(_, e)| *e == 0.0))
        .map(|i| (samples[i].0 - up_at).as_secs_f64());
    Figures {
        requests: answers.len(),
        not_2xx,
        back_to_200: first_good_run.map(|b| b as f64 / 10.0),
        spool_peak,
        spool_empty,
    }
}

/// Waits until every request sent has its answer (each takes the deadline at most).
async fn slots_drained(answers: &Arc<Mutex<Vec<(Duration, u16)>>>) -> usize {
    let mut last = usize::MAX;
    loop {
        tokio::time::sleep(Duration::from_secs(6)).await;
        let now = answers.lock().unwrap().len();
        if now == last {
            return now;
        }
        last = now;
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (bridge, broker) = (&args[0], &args[1]);
    let mut rates = Vec::new();
    let (mut down_for, mut connections) = (Duration::from_secs(6), 64);
    let mut rest = args[2..].iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--outage" => down_for = Duration::from_secs(rest.next().unwrap().parse().unwrap()),
            "--connections" => connections = rest.next().unwrap().parse().unwrap(),
            rate => rates.push(rate.to_owned()),
        }
    }
    for rate in rates {
        let rate = if rate == "max/2" {
            let rig = Rig::start(bridge, broker);
            let max = max_rate(&rig, connections).await;
            println!("maximum: {max:.0} req/s closed-loop over {connections} connections");
            (max / 2.0).round()
        } else {
            rate.parse().unwrap()
        };
        let mut rig = Rig::start(bridge, broker);
        let f = outage(&mut rig, rate, down_for, connections).await;
        let secs = |v: Option<f64>| v.map_or_else(|| "never".to_owned(), |s| format!("{s:.1} s"));
        println!(
            "{rate:.0} req/s, {} s outage: {} requests, {} non-2xx, 99 % answered 200 again {} after the return, spool peak {:.0}, spool empty {} after the return",
            down_for.as_secs(),
            f.requests,
            f.not_2xx,
            secs(f.back_to_200),
            f.spool_peak,
            secs(f.spool_empty),
        );
    }
}
