//! The hyper + tokio shell around the pure core. The only module that knows about sockets,
//! clocks and tasks.
//!
//! - `http`: routing, the webhook, the pre-upgrade checks and the `101`;
//! - `stream`: one task per upgraded connection, feeding the [`crate::session::Session`]
//!   state machine with frames and the clock and carrying out what it returns;
//! - [`capacity`], `connections`, [`metrics`]: slot counters (pending, streams, TCP
//!   connections) and Prometheus counters;
//! - [`media`]: the [`MediaHandler`] trait through which an application receives
//!   authenticated audio.
//!
//! Shutdown ([`ServerHandle::shutdown`]): stop accepting, let HTTP connections finish, close
//! every stream with 1001, wait up to [`SHUTDOWN_GRACE`] for the tasks to end. Dropping the
//! [`ServerHandle`] starts the same shutdown without waiting for it.

pub mod capacity;
pub mod config;
mod connections;
mod http;
pub mod media;
pub mod metrics;
mod stream;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use ring::rand::SystemRandom;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use self::capacity::Capacity;
pub use self::config::{Config, ConfigError, PublicUrl, ReplayStoreConfig};
use self::connections::Connections;
pub use self::media::{
    Backpressure, Discard, Echo, HandlerFactory, MediaHandler, Outbox, StreamEnd,
};
pub use self::metrics::{Gauges, Metrics, Snapshot};
use crate::limits::{FD_RESERVE, SHUTDOWN_GRACE};
use crate::store::{MemoryStore, ReplayStore, StoreKey};
use crate::time::Clock;

/// Everything the connection tasks share. Only `store`, `capacity`, `connections` and
/// `metrics` change after start, each behind its own lock or atomics.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) webhook_url: String,
    pub(crate) stream_url: String,
    pub(crate) store: Arc<dyn ReplayStore>,
    pub(crate) store_key: StoreKey,
    pub(crate) capacity: Arc<Capacity>,
    pub(crate) connections: Arc<Connections>,
    pub(crate) metrics: Metrics,
    /// The fill percentage last warned about (see `http::warn_if_store_filling`).
    pub(crate) store_warned_percent: std::sync::atomic::AtomicU64,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) rng: SystemRandom,
    pub(crate) handlers: Arc<dyn HandlerFactory>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Never sent on: dropped with the last `Arc<Shared>`, which tells shutdown that every
    /// connection task has ended.
    pub(crate) _tasks: mpsc::Sender<()>,
}

/// Resolves once shutdown has been requested (or the server is gone).
pub(crate) async fn shutdown_requested(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, before the caller's branch runs.
    let _ = rx.wait_for(|s| *s).await;
}

impl Shared {
    /// The counters and gauges now.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let fill = self.store.fill();
        let to_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        self.metrics.snapshot(Gauges {
            streams_active: to_u64(self.capacity.active()),
            connections_pending: to_u64(self.capacity.pending()),
            connections_open: to_u64(self.connections.open()),
            connections_max: to_u64(self.connections.max()),
            connections_evicted: self.connections.evicted(),
            connections_refused: self.connections.refused(),
            call_records: fill.records,
            call_records_capacity: fill.capacity,
        })
    }
}

/// A running server.
///
/// Dropping it stops the server: it stops accepting and closes every stream with 1001, without
/// waiting for that to finish. Keep it for as long as the server should run; end with
/// [`Self::shutdown`] (or [`Self::serve_until`]) to wait for a clean end.
#[must_use = "dropping the ServerHandle shuts the server down; keep it, or call .serve_until(signal)"]
pub struct ServerHandle {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    /// `None` once shutdown has begun.
    shutdown: Option<watch::Sender<bool>>,
    tasks_done: Option<mpsc::Receiver<()>>,
    accept_loops: Vec<JoinHandle<()>>,
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            tracing::info!("server handle dropped: shutting down (closing streams with 1001)");
            let _ = tx.send(true);
        }
    }
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addr", &self.addr)
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// Where the server listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `GET /metrics` is served, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The counters now.
    pub fn metrics(&self) -> Snapshot {
        self.shared.snapshot()
    }

    /// Serves until `signal` resolves (Ctrl-C, SIGTERM, a test's trigger ...), then shuts
    /// down as [`Self::shutdown`] does.
    pub async fn serve_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }

    /// Stops accepting, closes every stream with 1001 and waits (at most
    /// [`SHUTDOWN_GRACE`]) for connections to end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        for task in std::mem::take(&mut self.accept_loops) {
            let _ = task.await;
        }
        let tasks_done = self.tasks_done.take();
        // Every connection task holds an `Arc<Shared>`, and `Shared` holds the only sender
        // of `tasks_done`: once the last task has ended and our own `Arc` (in `self`) is
        // dropped, `recv` returns `None`.
        drop(self);
        if let Some(mut done) = tasks_done {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, done.recv()).await;
        }
    }
}

/// The store `config` names.
fn replay_store(config: &Config) -> io::Result<Arc<dyn ReplayStore>> {
    Ok(match &config.replay_store {
        ReplayStoreConfig::Memory => Arc::new(MemoryStore::new(
            config.call_capacity,
            config.store_policy(),
        )),
        #[cfg(feature = "redis")]
        ReplayStoreConfig::Redis(settings) => {
            let store = crate::store::RedisStore::new(settings, config.store_policy())
                .map_err(|e| io::Error::other(format!("replay store {}: {e}", settings.url())))?;
            Arc::new(store)
        }
    })
}

/// Starts serving on `listener` (and on `config.metrics_listen`, if set). Keep the returned
/// handle: dropping it stops the server.
pub async fn start(
    listener: TcpListener,
    config: Config,
    handlers: Arc<dyn HandlerFactory>,
    clock: Arc<dyn Clock>,
) -> io::Result<ServerHandle> {
    config
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match config.metrics_listen {
        Some(a) => Some(TcpListener::bind(a).await?),
        None => None,
    };
    let metrics_addr = metrics_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;

    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let fds = connections::effective_max_connections(config.max_connections, FD_RESERVE);
    tracing::info!(
        max_connections = fds.max_connections,
        requested = config.max_connections,
        descriptor_limit = fds.limit,
        reserve = FD_RESERVE,
        "connection cap: the smaller of --max-connections and the descriptor limit less the reserve"
    );

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (tasks_tx, tasks_rx) = mpsc::channel(1);
    let shared = Arc::new(Shared {
        webhook_url: config.webhook_url(),
        stream_url: config.stream_url(),
        capacity: Arc::new(Capacity::new(
            config.max_pending,
            config.max_pending_per_ip,
            config.max_streams,
        )),
        connections: Arc::new(Connections::new(fds.max_connections)),
        store: replay_store(&config)?,
        store_key: StoreKey::derive(&config.auth_token),
        metrics: Metrics::default(),
        store_warned_percent: std::sync::atomic::AtomicU64::new(0),
        rng: SystemRandom::new(),
        config,
        clock,
        handlers,
        shutdown: shutdown_rx,
        _tasks: tasks_tx,
    });

    let mut accept_loops = vec![tokio::spawn(http::accept_loop(
        listener,
        Arc::clone(&shared),
        http::Site::Main,
    ))];
    if let Some(l) = metrics_listener {
        accept_loops.push(tokio::spawn(http::accept_loop(
            l,
            Arc::clone(&shared),
            http::Site::Metrics,
        )));
    }
    tracing::info!(
        %addr,
        webhook = %shared.webhook_url,
        stream = %shared.stream_url,
        upgrade_signature = shared.config.upgrade_signature.as_str(),
        replay_store = %shared.config.replay_store.describe(),
        "streamguard listening"
    );
    Ok(ServerHandle {
        addr,
        metrics_addr,
        shared,
        shutdown: Some(shutdown_tx),
        tasks_done: Some(tasks_rx),
        accept_loops,
    })
}
