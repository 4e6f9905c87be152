//! Heap allocations per webhook request, end to end: the bridge runs in this process under a
//! counting global allocator, publishing to a broker in another process (`bench_broker
//! mock`); a client on a thread whose own allocations are not counted posts the seven
//! samples in rotation and every answer must be 200.
//!
//!     bench_allocations BOOTSTRAP [REQUESTS] [CONCURRENCY]
//!
//! Prints `allocations_per_request <n> bytes_per_request <n>`. What the bridge's threads and
//! librdkafka's allocate meanwhile for other reasons (statistics every second) is counted
//! too, so the figure is an upper bound.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use comm100_bridge::config::{Config, Secret};
use comm100_bridge::{serve, Listeners};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the client's thread: what it allocates is not the bridge's.
    static UNCOUNTED: Cell<bool> = const { Cell::new(false) };
}

struct Counting;

impl Counting {
    fn count(size: usize) {
        if !UNCOUNTED.try_with(Cell::get).unwrap_or(false) {
            ALLOCATIONS.fetch_add(1, Relaxed);
            BYTES.fetch_add(size as u64, Relaxed);
        }
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SAMPLES: [&str; 7] = [
    "chat_requested",
    "chat_started",
    "chat_transferred",
    "chat_ended",
    "chat_wrapped_up",
    "offline_message_submitted",
    "agent_status_changed_online",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bootstrap = args
        .first()
        .ok_or("usage: bench_allocations BOOTSTRAP [REQUESTS] [CONCURRENCY]")?;
    let requests: u64 = args.get(1).map_or(Ok(20_000), |n| n.parse())?;
    let concurrency: u64 = args.get(2).map_or(Ok(16), |n| n.parse())?;

    let spool = tempfile::tempdir()?;
    let mut config = Config::load_with_env(None, Some(Default::default()))?;
    config.kafka.brokers = vec![bootstrap.clone()];
    config.auth.tokens = vec![Secret::new("bench")];
    config.http.listen = "127.0.0.1:0".parse()?;
    config.admin.listen = None;
    config.spool.dir = spool.path().to_owned();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listeners = runtime.block_on(Listeners::bind(&config))?;
    let url = format!(
        "http://{}/webhooks/comm100?token=bench",
        listeners.webhook.local_addr()?
    );
    let server = runtime.spawn(serve(config, listeners, async {
        let _ = stopped.await;
    }));

    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let bodies: Vec<Bytes> = SAMPLES
        .iter()
        .map(|name| std::fs::read(fixtures.join(format!("{name}.json"))).map(Bytes::from))
        .collect::<Result<_, _>>()?;

    let client = std::thread::spawn(move || -> Result<(u64, u64), String> {
        UNCOUNTED.with(|c| c.set(true));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async move {
            let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            let post = |n: u64| {
                let request = hyper::Request::post(&url)
                    .header("content-type", "application/json")
                    .body(Full::new(
                        bodies[(n % bodies.len() as u64) as usize].clone(),
                    ))
                    .expect("a valid request");
                let answer = client.request(request);
                async move {
                    let status = answer.await.map_err(|e| e.to_string())?.status();
                    if status != hyper::StatusCode::OK {
                        return Err(format!("answered {status}"));
                    }
                    Ok(())
                }
            };
            let batch = |count: u64| async move {
                let mut next = 0;
                let mut running = tokio::task::JoinSet::new();
                while next < count || !running.is_empty() {
                    while next < count && (running.len() as u64) < concurrency {
                        running.spawn_local(post(next));
                        next += 1;
                    }
                    if let Some(done) = running.join_next().await {
                        done.map_err(|e| e.to_string())??;
                    }
                }
                Ok::<(), String>(())
            };
            // Warm up: connections, the producer's metadata, the allocator's caches.
            tokio::task::LocalSet::new().run_until(batch(2_000)).await?;
            let (allocations, bytes) = (ALLOCATIONS.load(Relaxed), BYTES.load(Relaxed));
            tokio::task::LocalSet::new()
                .run_until(batch(requests))
                .await?;
            Ok((
                ALLOCATIONS.load(Relaxed) - allocations,
                BYTES.load(Relaxed) - bytes,
            ))
        })
    });
    let (allocations, bytes) = client.join().map_err(|_| "the client panicked")??;
    let _ = stop.send(());
    runtime.block_on(server)??;
    println!(
        "allocations_per_request {:.1} bytes_per_request {:.0} requests {requests}",
        allocations as f64 / requests as f64,
        bytes as f64 / requests as f64
    );
    Ok(())
}
