//! The benchmark's ceiling: a bare hyper server that reads the request body and answers
//! 200, with the same HTTP stack as the bridge and no work.
//!
//!     cargo run --release --example bench_ceiling -- 127.0.0.1:18081

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

async fn read_and_ok(
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let _body = req.into_body().collect().await.map(|b| b.to_bytes());
    Ok(Response::new(Full::new(Bytes::from_static(
        b"{\"status\":\"ok\"}",
    ))))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18081".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service_fn(read_and_ok))
                .await;
        });
    }
}
