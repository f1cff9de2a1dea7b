//! The hyper + tokio shell around the pure core. The only module that knows about sockets,
//! clocks and tasks.
//!
//! - `http`: routing, the webhook, the pre-upgrade checks and the `101`;
//! - `stream`: one task per upgraded connection, feeding the [`crate::session::Session`]
//!   state machine with frames and the clock and carrying out what it returns;
//! - [`capacity`], [`metrics`]: slot counters and Prometheus counters;
//! - [`media`]: the [`MediaHandler`] trait through which an application receives
//!   authenticated audio.
//!
//! Shutdown ([`ServerHandle::shutdown`]): stop accepting, let HTTP connections finish, close
//! every stream with 1001, wait up to [`SHUTDOWN_GRACE`] for the tasks to end.

pub mod capacity;
pub mod config;
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
pub use self::config::{Config, ConfigError, PublicUrl};
pub use self::media::{
    Backpressure, Discard, Echo, HandlerFactory, MediaHandler, Outbox, StreamEnd,
};
pub use self::metrics::{Metrics, Snapshot};
use crate::limits::{
    DEFAULT_CALL_MEMORY, DEFAULT_LEDGER_CAPACITY, DEFAULT_REPLAY_CAPACITY, SHUTDOWN_GRACE,
};
use crate::replay::{ReplayGuard, TokenLedger};
use crate::time::Clock;

/// Everything the connection tasks share. Only `ledger`, `replay`, `capacity` and `metrics`
/// change after start, each behind its own lock or atomics.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) webhook_url: String,
    pub(crate) stream_url: String,
    pub(crate) ledger: TokenLedger,
    pub(crate) replay: ReplayGuard,
    pub(crate) capacity: Arc<Capacity>,
    pub(crate) metrics: Metrics,
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

/// A running server.
pub struct ServerHandle {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks_done: mpsc::Receiver<()>,
    accept_loops: Vec<JoinHandle<()>>,
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
        self.shared.metrics.snapshot(&self.shared.capacity)
    }

    /// Stops accepting, closes every stream with 1001 and waits (at most
    /// [`SHUTDOWN_GRACE`]) for connections to end.
    pub async fn shutdown(self) {
        let Self {
            shared,
            shutdown,
            mut tasks_done,
            accept_loops,
            ..
        } = self;
        let _ = shutdown.send(true);
        for task in accept_loops {
            let _ = task.await;
        }
        // Every connection task holds an `Arc<Shared>`, and `Shared` holds the only sender
        // of `tasks_done`: once the last task has ended and our own `Arc` is dropped,
        // `recv` returns `None`.
        drop(shared);
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, tasks_done.recv()).await;
    }
}

/// Starts serving on `listener` (and on `config.metrics_listen`, if set).
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
        ledger: TokenLedger::new(DEFAULT_LEDGER_CAPACITY),
        replay: ReplayGuard::new(DEFAULT_REPLAY_CAPACITY, DEFAULT_CALL_MEMORY),
        metrics: Metrics::default(),
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
        "streamguard listening"
    );
    Ok(ServerHandle {
        addr,
        metrics_addr,
        shared,
        shutdown: shutdown_tx,
        tasks_done: tasks_rx,
        accept_loops,
    })
}
