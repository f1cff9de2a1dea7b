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
use super::connections::ConnectionSlot;
use super::metrics::StoreOp;
use crate::limits::{
    ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN, ACCEPT_WARN_EVERY, CALL_RECORDS_WARN_PERCENT,
    HTTP_HEADER_TIMEOUT, MAX_REQUEST_HEAD_BYTES, MAX_WEBHOOK_BODY_BYTES, WEBHOOK_BODY_TIMEOUT,
};
use crate::store::{self, MintError};
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
    let svc_shared = Arc::clone(&shared);
    let svc_slot = slot.clone();
    let svc = service_fn(move |req| {
        let shared = Arc::clone(&svc_shared);
        let slot = svc_slot.clone();
        async move {
            Ok::<_, Infallible>(match site {
                Site::Main => route(req, shared, peer, slot).await,
                Site::Metrics => {
                    slot.set_waiting(false);
                    let r = metrics(&req, &shared);
                    slot.set_waiting(true);
                    r
                }
            })
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
    slot: ConnectionSlot,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path == shared.config.webhook_path {
        // Still waiting (evictable) while the body arrives; busy once it is in.
        let r = webhook(req, &shared, peer, &slot).await;
        slot.set_waiting(true);
        return r;
    }
    if path == shared.config.stream_path {
        slot.set_waiting(false);
        let r = upgrade(req, shared, peer, slot.clone());
        if r.status() != StatusCode::SWITCHING_PROTOCOLS {
            slot.set_waiting(true);
        }
        return r;
    }
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
    empty(StatusCode::NOT_FOUND)
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

fn webhook_rejected(
    shared: &Shared,
    peer: SocketAddr,
    reason: WebhookReject,
    signed_url: Option<&str>,
) -> Response<Full<Bytes>> {
    shared.metrics.webhook_rejected(reason.as_str());
    match (reason, signed_url) {
        // Behind a proxy the question is always "which URL?": say it (never the signature).
        (WebhookReject::Signature(_), Some(url)) => tracing::warn!(
            peer = %peer.ip(), reason = reason.as_str(), signed_url = %url,
            "webhook refused: {reason} (checked against the URL built from --public-url; \
             Twilio signs the URL it requested, so the two must be the same)"
        ),
        _ => {
            tracing::warn!(peer = %peer.ip(), reason = reason.as_str(), "webhook refused: {reason}")
        }
    }
    empty(status_of(reason.status()))
}

/// The URL the webhook's signature is checked against: the configured one plus the request's
/// query, as [`webhook::decide`] builds it.
fn signed_webhook_url(shared: &Shared, head: &RequestHead) -> String {
    match head.query() {
        Some(q) => format!("{}?{q}", shared.webhook_url),
        None => shared.webhook_url.clone(),
    }
}

async fn webhook(
    req: Request<Incoming>,
    shared: &Shared,
    peer: SocketAddr,
    slot: &ConnectionSlot,
) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        return webhook_rejected(shared, peer, WebhookReject::Method, None);
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_WEBHOOK_BODY_BYTES as u64) {
        return webhook_rejected(shared, peer, WebhookReject::TooLarge, None);
    }
    let head = head_of(&req);
    let collected = tokio::time::timeout(
        WEBHOOK_BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_WEBHOOK_BODY_BYTES).collect(),
    )
    .await;
    slot.set_waiting(false);
    let body = match collected {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return webhook_rejected(shared, peer, WebhookReject::TooLarge, None);
            }
            shared.metrics.webhook_rejected("body_unreadable");
            tracing::debug!(peer = %peer.ip(), "webhook body could not be read");
            return empty(StatusCode::BAD_REQUEST);
        }
        Err(_) => {
            shared.metrics.webhook_rejected("body_timeout");
            tracing::warn!(peer = %peer.ip(), reason = "body_timeout", "webhook refused: body not received in time");
            return empty(StatusCode::REQUEST_TIMEOUT);
        }
    };
    let policy = WebhookPolicy {
        signed_url: &shared.webhook_url,
        auth: &shared.config.auth_token,
        account: &shared.config.account_sid,
    };
    let verified = match webhook::decide(&head, &body, &policy) {
        Ok(v) => v,
        Err(reason) => {
            let url = signed_webhook_url(shared, &head);
            return webhook_rejected(shared, peer, reason, Some(&url));
        }
    };
    let now = shared.clock.now();
    let started = std::time::Instant::now();
    let minted = store::mint(
        &*shared.store,
        &shared.store_key,
        &shared.config.keys,
        &verified.account_sid,
        &verified.call_sid,
        now,
        shared.config.token_ttl,
        &shared.rng,
    )
    .await;
    let store_error = match &minted {
        Err(MintError::Store(e)) => Some(*e),
        _ => None,
    };
    shared
        .metrics
        .store_call(StoreOp::Mint, started.elapsed(), store_error);
    warn_if_store_filling(shared);
    let token = match minted {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(call_sid = %verified.call_sid, "no token minted: {e}");
            return webhook_rejected(shared, peer, WebhookReject::from(e), None);
        }
    };
    let twiml = match webhook::answer(&shared.stream_url, &token) {
        Ok(t) => t,
        Err(_) => return webhook_rejected(shared, peer, WebhookReject::Internal, None),
    };
    shared.metrics.webhook_accepted();
    tracing::info!(call_sid = %verified.call_sid, "webhook accepted, stream token issued");
    let mut r = Response::new(Full::new(Bytes::from(twiml)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE_XML),
    );
    r
}

/// Warns (at most once per 1% step) while the store is at least
/// [`CALL_RECORDS_WARN_PERCENT`] full.
fn warn_if_store_filling(shared: &Shared) {
    let fill = shared.store.fill();
    let (Some(records), Some(capacity)) = (fill.records, fill.capacity.filter(|c| *c > 0)) else {
        return;
    };
    let percent = records
        .saturating_mul(100)
        .checked_div(capacity)
        .unwrap_or(0);
    if percent < CALL_RECORDS_WARN_PERCENT {
        return;
    }
    let last = shared
        .store_warned_percent
        .swap(percent, std::sync::atomic::Ordering::Relaxed);
    if last != percent {
        tracing::warn!(
            records,
            capacity,
            percent,
            "the replay store is {percent}% full: webhooks are refused when it is full \
             (raise --call-capacity, or lower --call-memory)"
        );
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
    slot: ConnectionSlot,
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
                // The descriptor is the stream's until here.
                drop(slot);
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
