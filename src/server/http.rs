//! Accept loops, routing, the webhook and the pre-upgrade answer.
//!
//! Routes match the request path alone (a proxy in front may strip a prefix); URLs that are
//! signed are always built from the configured public URL, never from `Host` or
//! `X-Forwarded-*`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::Shared;
use super::config::{HEALTH_PATH, METRICS_PATH};
use crate::limits::{HTTP_HEADER_TIMEOUT, MAX_WEBHOOK_BODY_BYTES, WEBHOOK_BODY_TIMEOUT};
use crate::upgrade::{self, RequestHead, UpgradePolicy, UpgradeReject};
use crate::webhook::{self, CONTENT_TYPE_XML, WebhookPolicy, WebhookReject};

/// Which listener a connection came in on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Site {
    /// Webhook, stream and health check.
    Main,
    /// `GET /metrics` only.
    Metrics,
}

/// Accepts connections until shutdown.
pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, site: Site) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: log, back off briefly, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = super::shutdown_requested(&mut shutdown) => return,
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve_connection(tcp, peer, Arc::clone(&shared), site));
    }
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    site: Site,
) {
    let mut shutdown = shared.shutdown.clone();
    let svc_shared = Arc::clone(&shared);
    let svc = service_fn(move |req| {
        let shared = Arc::clone(&svc_shared);
        async move {
            Ok::<_, Infallible>(match site {
                Site::Main => route(req, shared, peer).await,
                Site::Metrics => metrics(&req, &shared),
            })
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HTTP_HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(tcp), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(%peer, error = %e, "http connection ended with an error");
            }
        }
        () = super::shutdown_requested(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

fn status_of(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The request head as the pure core sees it.
fn head_of<B>(req: &Request<B>) -> RequestHead {
    RequestHead {
        method: req.method().as_str().to_owned(),
        target: req.uri().to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
    }
}

async fn route(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path == HEALTH_PATH {
        return if req.method() == Method::GET {
            let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        } else {
            empty(StatusCode::METHOD_NOT_ALLOWED)
        };
    }
    if path == shared.config.webhook_path {
        return webhook(req, &shared, peer).await;
    }
    if path == shared.config.stream_path {
        return upgrade(req, shared, peer);
    }
    empty(StatusCode::NOT_FOUND)
}

fn metrics(req: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    if req.uri().path() != METRICS_PATH {
        return empty(StatusCode::NOT_FOUND);
    }
    if req.method() != Method::GET {
        return empty(StatusCode::METHOD_NOT_ALLOWED);
    }
    let body = shared.metrics.snapshot(&shared.capacity).render();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

fn webhook_rejected(
    shared: &Shared,
    peer: SocketAddr,
    reason: WebhookReject,
) -> Response<Full<Bytes>> {
    shared.metrics.webhook_rejected();
    tracing::warn!(peer = %peer.ip(), reason = reason.as_str(), "webhook refused: {reason}");
    empty(status_of(reason.status()))
}

async fn webhook(
    req: Request<Incoming>,
    shared: &Shared,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        return webhook_rejected(shared, peer, WebhookReject::Method);
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_WEBHOOK_BODY_BYTES as u64) {
        return webhook_rejected(shared, peer, WebhookReject::TooLarge);
    }
    let head = head_of(&req);
    let collected = tokio::time::timeout(
        WEBHOOK_BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_WEBHOOK_BODY_BYTES).collect(),
    )
    .await;
    let body = match collected {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return webhook_rejected(shared, peer, WebhookReject::TooLarge);
            }
            shared.metrics.webhook_rejected();
            tracing::debug!(peer = %peer.ip(), "webhook body could not be read");
            return empty(StatusCode::BAD_REQUEST);
        }
        Err(_) => {
            shared.metrics.webhook_rejected();
            tracing::warn!(peer = %peer.ip(), reason = "body_timeout", "webhook refused: body not received in time");
            return empty(StatusCode::REQUEST_TIMEOUT);
        }
    };
    let policy = WebhookPolicy {
        signed_url: &shared.webhook_url,
        stream_url: &shared.stream_url,
        auth: &shared.config.auth_token,
        account: &shared.config.account_sid,
        keys: &shared.config.keys,
        token_ttl: shared.config.token_ttl,
    };
    let now = shared.clock.now();
    match webhook::decide(&head, &body, &policy, &shared.ledger, now, &shared.rng) {
        Ok(accepted) => {
            shared.metrics.webhook_accepted();
            tracing::info!(call_sid = %accepted.call_sid, "webhook accepted, stream token issued");
            let mut r = Response::new(Full::new(Bytes::from(accepted.twiml)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(CONTENT_TYPE_XML),
            );
            r
        }
        Err(reason) => webhook_rejected(shared, peer, reason),
    }
}

fn upgrade_rejected(
    shared: &Shared,
    peer: SocketAddr,
    reason: UpgradeReject,
) -> Response<Full<Bytes>> {
    shared.metrics.stream_rejected(reason.as_str());
    tracing::warn!(peer = %peer.ip(), reason = reason.as_str(), "stream upgrade refused: {reason}");
    empty(status_of(reason.status()))
}

fn upgrade(
    mut req: Request<Incoming>,
    shared: Arc<Shared>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let head = head_of(&req);
    let policy = UpgradePolicy {
        stream_path: &shared.config.stream_path,
        signed_url: &shared.stream_url,
        auth: &shared.config.auth_token,
        mode: shared.config.upgrade_signature,
    };
    let accepted = match upgrade::decide(&head, &policy) {
        Ok(a) => a,
        Err(reason) => return upgrade_rejected(&shared, peer, reason),
    };
    let permit = match shared.capacity.try_pending(peer.ip()) {
        Ok(p) => p,
        Err(reason) => return upgrade_rejected(&shared, peer, reason),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let task_shared = Arc::clone(&shared);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                super::stream::run(
                    TokioIo::new(upgraded),
                    task_shared,
                    accepted.url_token,
                    permit,
                    peer,
                )
                .await;
            }
            Err(e) => tracing::debug!(%peer, error = %e, "upgrade did not complete"),
        }
    });
    let mut r = empty(StatusCode::SWITCHING_PROTOCOLS);
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    match HeaderValue::from_str(&accepted.accept_key) {
        Ok(v) => {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        // base64 is always a valid header value; refuse rather than answer a broken 101.
        Err(_) => return empty(StatusCode::INTERNAL_SERVER_ERROR),
    }
    r
}
