//! `--metrics-bind ADDR`: the process's metrics in Prometheus' text format on
//! `http://ADDR/metrics`, for verbs that run things without the web UI.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::observe::{ObserveError, PrometheusHandle, PrometheusRecorder};

/// The longest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// How long a client gets to send its request.
const READ_WAIT: Duration = Duration::from_secs(5);

/// Installs dagrs' Prometheus recorder and serves it on `addr` until the task is aborted.
///
/// A plain HTTP/1.1 answer per connection on tokio's own sockets: a scrape endpoint needs
/// nothing more, and the command line without feature `web` has no HTTP stack to lend.
pub(super) async fn serve(addr: SocketAddr) -> Result<(SocketAddr, JoinHandle<()>), ObserveError> {
    let handle = PrometheusRecorder::install()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ObserveError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ObserveError::Bind { addr, source })?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(answer(stream, handle.clone()));
        }
    });
    Ok((addr, task))
}

async fn answer(mut stream: TcpStream, metrics: PrometheusHandle) {
    let mut head = Vec::with_capacity(1024);
    let read = tokio::time::timeout(READ_WAIT, async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    if read.is_err() {
        return;
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let (status, kind, body) = if line.starts_with(b"GET /metrics ") {
        (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        )
    } else {
        (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "see /metrics\n".to_owned(),
        )
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
