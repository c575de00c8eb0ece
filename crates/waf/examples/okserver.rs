//! A minimal HTTP/1.1 upstream for proxy benchmarks: answers every request `200 ok`, without
//! a Content-Type, or with the one given as second argument.
//! `cargo run --release -p rampart-waf --example okserver -- 127.0.0.1:9000 [CONTENT_TYPE]`

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: std::net::SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".into())
        .parse()?;
    let content_type: Option<&'static str> = std::env::args()
        .nth(2)
        .map(|t| &*Box::leak(t.into_boxed_str()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("listening {addr}");
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(async move {
                let svc = service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| async move {
                        let _ = req.into_body().collect().await;
                        let mut resp = hyper::Response::new(Full::new(Bytes::from_static(b"ok\n")));
                        if let Some(t) = content_type {
                            resp.headers_mut().insert(
                                hyper::header::CONTENT_TYPE,
                                hyper::header::HeaderValue::from_static(t),
                            );
                        }
                        Ok::<_, Infallible>(resp)
                    },
                );
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
        #[allow(unreachable_code)]
        Ok::<_, std::io::Error>(())
    })?;
    Ok(())
}
