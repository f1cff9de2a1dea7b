//! The routes as one tower [`Service`]: `POST {webhook-path}`, `GET {stream-path}` (the
//! upgrade) and `GET /healthz`. The standalone server runs it behind its own accept loop; an
//! application mounts it in its own router ([`MediaStreams`], or `Server::router` with the
//! `axum` feature), on its own listener and runtime.
//!
//! Routes match the request path alone (a proxy in front, or a router that nests this one,
//! may strip a prefix: put it in the public URL); URLs that are signed are always built from
//! the configured public URL, never from `Host` or `X-Forwarded-*`.
//!
//! The client address, which the per-address pending cap counts by, comes from the request's
//! [`PeerAddr`] extension (the standalone server sets it), or axum's `ConnectInfo` (serve the
//! app with `into_make_service_with_connect_info::<SocketAddr>()`); without either, every
//! client counts as one address, as behind a proxy.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tower_service::Service;

use super::Shared;
use super::config::HEALTH_PATH;
use super::connections::ConnectionSlot;
use super::metrics::StoreOp;
use crate::limits::{CALL_RECORDS_WARN_PERCENT, MAX_WEBHOOK_BODY_BYTES, WEBHOOK_BODY_TIMEOUT};
use crate::store::{self, MintError};
use crate::upgrade::{self, RequestHead, UpgradePolicy, UpgradeReject};
use crate::webhook::{self, CONTENT_TYPE_XML, WebhookPolicy, WebhookReject};

/// The client's address, as a request extension: what the per-address pending cap counts by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The webhook, the stream upgrade and the health check, as a tower service. Cheap to clone
/// (one `Arc`); every clone serves the same server.
#[derive(Clone)]
pub struct MediaStreams {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for MediaStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaStreams")
            .field("webhook", &self.shared.webhook_url)
            .field("stream", &self.shared.stream_url)
            .finish()
    }
}

/// The future a [`MediaStreams`] call returns.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>>;

impl<B> Service<Request<B>> for MediaStreams
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move { Ok(route(req, shared).await) })
    }
}

pub(crate) fn empty(status: StatusCode) -> Response<Full<Bytes>> {
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

fn peer_of<B>(req: &Request<B>) -> SocketAddr {
    if let Some(PeerAddr(a)) = req.extensions().get::<PeerAddr>() {
        return *a;
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(a)) = req
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return *a;
    }
    // Unknown: one shared address for all, as behind a proxy.
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
}

/// Marks the standalone server's connection waiting or busy (no-op when embedded).
fn set_waiting(slot: Option<&ConnectionSlot>, waiting: bool) {
    if let Some(s) = slot {
        s.set_waiting(waiting);
    }
}

async fn route<B>(req: Request<B>, shared: Arc<Shared>) -> Response<Full<Bytes>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let peer = peer_of(&req);
    let slot = req.extensions().get::<ConnectionSlot>().cloned();
    let path = req.uri().path();
    if path == shared.config.webhook_path {
        // Still waiting (evictable) while the body arrives; busy once it is in.
        let r = webhook(req, &shared, peer, slot.as_ref()).await;
        set_waiting(slot.as_ref(), true);
        return r;
    }
    if path == shared.config.stream_path {
        set_waiting(slot.as_ref(), false);
        let r = upgrade(req, shared, peer, slot.clone());
        if r.status() != StatusCode::SWITCHING_PROTOCOLS {
            set_waiting(slot.as_ref(), true);
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

async fn webhook<B>(
    req: Request<B>,
    shared: &Shared,
    peer: SocketAddr,
    slot: Option<&ConnectionSlot>,
) -> Response<Full<Bytes>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
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
    set_waiting(slot, false);
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
    let shape = shared.twiml.twiml(&verified);
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
    let twiml = match webhook::answer(&shared.stream_url, &token, &shape) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(call_sid = %verified.call_sid, "the TwiML hook's answer cannot be rendered: {e}");
            return webhook_rejected(shared, peer, WebhookReject::Internal, None);
        }
    };
    shared.calls.remember(&verified, now);
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
        // Below the mark again: the next time it is crossed is warned about again.
        shared
            .store_warned_percent
            .store(0, std::sync::atomic::Ordering::Relaxed);
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
    if matches!(reason, UpgradeReject::Signature(_)) {
        // As for the webhook, say which URL (never the signature). The request's query is
        // left out: it may carry a token (a URL token, or an attacker's guess).
        tracing::warn!(
            peer = %peer.ip(), reason = reason.as_str(), signed_url = %shared.stream_url,
            "stream upgrade refused: {reason} (checked against the stream URL built from \
             --public-url, plus the request's query if any)"
        );
    } else {
        tracing::warn!(peer = %peer.ip(), reason = reason.as_str(), "stream upgrade refused: {reason}");
    }
    empty(status_of(reason.status()))
}

fn upgrade<B>(
    mut req: Request<B>,
    shared: Arc<Shared>,
    peer: SocketAddr,
    slot: Option<ConnectionSlot>,
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
