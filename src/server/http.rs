//! The standalone server's accept loops: one HTTP/1 connection task per accepted socket,
//! under `--max-connections` and the request-head bound, serving [`MediaStreams`] (the same
//! service an embedding application mounts) with the client address and the connection's
//! slot as request extensions; and the metrics listener.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use tower_service::Service as _;

use super::Shared;
use super::config::METRICS_PATH;
use super::connections::ConnectionSlot;
use super::service::{MediaStreams, PeerAddr, empty};
use crate::limits::{
    ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN, ACCEPT_WARN_EVERY, HTTP_HEADER_TIMEOUT,
    MAX_REQUEST_HEAD_BYTES,
};

/// Which listener a connection came in on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Site {
    /// Webhook, stream and health check.
    Main,
    /// `GET /metrics` only.
    Metrics,
}

/// Accepts connections until shutdown. A failed `accept` (out of descriptors, say) backs off,
/// doubling from [`ACCEPT_BACKOFF_MIN`] to [`ACCEPT_BACKOFF_MAX`], and is logged at most once
/// per [`ACCEPT_WARN_EVERY`] with the number of failures since the last warning.
pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, site: Site) {
    let mut shutdown = shared.shutdown.clone();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut failures_unlogged: u64 = 0;
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    shared.metrics.accept_error();
                    failures_unlogged = failures_unlogged.saturating_add(1);
                    let now = tokio::time::Instant::now();
                    if last_warning.is_none_or(|t| now.duration_since(t) >= ACCEPT_WARN_EVERY) {
                        tracing::warn!(error = %e, failures = failures_unlogged, backoff_ms = backoff.as_millis(), "accept failed; backing off");
                        failures_unlogged = 0;
                        last_warning = Some(now);
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = super::shutdown_requested(&mut shutdown) => return,
                    }
                    backoff = backoff.saturating_mul(2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            },
            () = super::shutdown_requested(&mut shutdown) => return,
        };
        backoff = ACCEPT_BACKOFF_MIN;
        let Some((slot, evicted)) = shared.connections.admit() else {
            // Every connection is busy (answering a request, or an upgraded stream): close
            // this one at once rather than exceed --max-connections.
            tracing::debug!(%peer, "connection refused: --max-connections reached, none waiting");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve_connection(
            tcp,
            peer,
            Arc::clone(&shared),
            site,
            slot,
            evicted,
        ));
    }
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    site: Site,
    slot: ConnectionSlot,
    evicted: tokio::sync::oneshot::Receiver<()>,
) {
    let mut shutdown = shared.shutdown.clone();
    let routes = MediaStreams {
        shared: Arc::clone(&shared),
    };
    let svc_shared = Arc::clone(&shared);
    let svc_slot = slot.clone();
    let svc = service_fn(move |mut req: Request<Incoming>| {
        let shared = Arc::clone(&svc_shared);
        let slot = svc_slot.clone();
        let mut routes = routes.clone();
        async move {
            match site {
                Site::Main => {
                    req.extensions_mut().insert(PeerAddr(peer));
                    req.extensions_mut().insert(slot);
                    routes.call(req).await
                }
                Site::Metrics => {
                    slot.set_waiting(false);
                    let r = metrics(&req, &shared);
                    slot.set_waiting(true);
                    Ok::<_, Infallible>(r)
                }
            }
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HTTP_HEADER_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD_BYTES)
        .serve_connection(TokioIo::new(tcp), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(%peer, error = %e, "http connection ended with an error");
            }
        }
        Ok(()) = evicted => {
            tracing::debug!(%peer, "connection closed: the oldest waiting connection makes room at --max-connections");
        }
        () = super::shutdown_requested(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
    drop(slot);
}

fn metrics(req: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    if req.uri().path() != METRICS_PATH {
        return empty(StatusCode::NOT_FOUND);
    }
    if req.method() != Method::GET {
        return empty(StatusCode::METHOD_NOT_ALLOWED);
    }
    let body = shared.snapshot().render();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}
