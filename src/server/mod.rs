//! The hyper + tokio shell around the pure core. The only module that knows about sockets,
//! clocks and tasks.
//!
//! - [`Server::builder`]: the server from a [`Config`] (see [`Config::from_env`]), with an
//!   optional clock, media handlers ([`HandlerFactory`]) and TwiML hook
//!   ([`crate::webhook::TwimlHook`]);
//! - [`MediaStreams`]: the webhook, stream and health routes as one tower service, to mount in
//!   an application's own router (with the `axum` feature, [`Server::router`]); the standalone
//!   [`Server::serve`] runs the same service behind its own accept loop;
//! - `stream`: one task per upgraded connection, feeding the [`crate::session::Session`]
//!   state machine with frames and the clock and carrying out what it returns;
//! - [`handler`]: the [`MediaHandler`] trait an application receives audio through, and the
//!   [`StreamHandle`] it sends audio with, from any task;
//! - capacity, connections, metrics: slot counters (pending, streams, TCP connections) and the
//!   Prometheus counters ([`Snapshot`]).
//!
//! Shutdown ([`Server::shutdown`], [`ServerHandle::shutdown`]): stop accepting, let HTTP
//! connections finish, close every stream with 1001, wait up to [`SHUTDOWN_GRACE`] for the
//! tasks to end. Dropping the [`Server`] (or the [`ServerHandle`]) starts the same shutdown
//! without waiting for it.

mod calls;
#[cfg(not(streamguard_loom))]
mod capacity;
/// The slot counters, public only in the loom build (`--cfg streamguard_loom`), for
/// `tests/loom.rs`; not part of the API.
#[cfg(streamguard_loom)]
#[doc(hidden)]
pub mod capacity;
pub mod config;
mod connections;
pub mod handler;
mod http;
mod metrics;
mod service;
mod stream;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use ring::rand::SystemRandom;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use self::calls::CallContexts;
use self::capacity::Capacity;
pub use self::config::{Config, ConfigError, EnvError, PublicUrl, ReplayStoreConfig};
use self::connections::Connections;
pub use self::handler::{
    Discard, Echo, HandlerFactory, IncomingStream, IncomingStreams, MediaHandler, SendError,
    StartedStream, StreamEnd, StreamEvent, StreamEvents, StreamHandle,
};
use self::metrics::Metrics;
pub use self::metrics::{Gauges, HistogramSnapshot, STORE_LATENCY_BUCKETS_US, Snapshot};
pub use self::service::{MediaStreams, PeerAddr, ResponseFuture};
use crate::limits::{FD_RESERVE, SHUTDOWN_GRACE};
use crate::store::{MemoryStore, ReplayStore, StoreKey};
use crate::time::{Clock, SystemClock};
use crate::webhook::{BareStream, TwimlHook};

/// Everything the connection tasks share. Only `store`, `capacity`, `connections`, `calls`
/// and `metrics` change after start, each behind its own lock or atomics.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) webhook_url: String,
    pub(crate) stream_url: String,
    pub(crate) store: Arc<dyn ReplayStore>,
    pub(crate) store_key: StoreKey,
    pub(crate) capacity: Arc<Capacity>,
    pub(crate) connections: Arc<Connections>,
    pub(crate) metrics: Metrics,
    /// The fill percentage last warned about (see `service::warn_if_store_filling`).
    pub(crate) store_warned_percent: std::sync::atomic::AtomicU64,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) rng: SystemRandom,
    pub(crate) handlers: Arc<dyn HandlerFactory>,
    pub(crate) twiml: Arc<dyn TwimlHook>,
    pub(crate) calls: CallContexts,
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

/// The store `config` names.
fn replay_store(config: &Config) -> Result<Arc<dyn ReplayStore>, ConfigError> {
    Ok(match &config.replay_store {
        ReplayStoreConfig::Memory => Arc::new(MemoryStore::new(
            config.call_capacity,
            config.store_policy(),
        )),
        #[cfg(feature = "redis")]
        ReplayStoreConfig::Redis(settings) => {
            let store = crate::store::RedisStore::new(settings, config.store_policy())
                .map_err(|_| ConfigError::Store("the Redis replay store cannot be set up"))?;
            Arc::new(store)
        }
    })
}

/// Builds a [`Server`]: everything but the [`Config`] is optional.
///
/// ```
/// use streamguard::server::{Echo, Server};
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// # let config = || streamguard::server::Config::from_env();
/// # let config = || config().unwrap();
/// let server = Server::builder(config()).handlers(Echo).build()?;
/// let listener = tokio::net::TcpListener::bind(server.config().listen).await?;
/// let running = server.serve(listener).await?;
/// running.serve_until(async { let _ = tokio::signal::ctrl_c().await; }).await;
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until .build()"]
pub struct ServerBuilder {
    config: Config,
    clock: Arc<dyn Clock>,
    handlers: Arc<dyn HandlerFactory>,
    twiml: Arc<dyn TwimlHook>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// The clock (the system clock by default; a `ManualClock` for tests).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The clock, shared with the caller.
    pub fn shared_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Makes the handler of each authenticated stream ([`Discard`] by default).
    pub fn handlers(mut self, handlers: impl HandlerFactory) -> Self {
        self.handlers = Arc::new(handlers);
        self
    }

    /// The handler factory, shared with the caller.
    pub fn shared_handlers(mut self, handlers: Arc<dyn HandlerFactory>) -> Self {
        self.handlers = handlers;
        self
    }

    /// Shapes the TwiML of each verified webhook ([`BareStream`] by default).
    pub fn twiml(mut self, hook: impl TwimlHook) -> Self {
        self.twiml = Arc::new(hook);
        self
    }

    /// Checks the configuration and builds the server. Performs no I/O (a Redis store
    /// connects on first use); call it inside a Tokio runtime.
    pub fn build(self) -> Result<Server, ConfigError> {
        let Self {
            config,
            clock,
            handlers,
            twiml,
        } = self;
        config.validate()?;
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
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
            connections: Arc::new(Connections::new(config.max_connections)),
            store: replay_store(&config)?,
            store_key: StoreKey::derive(&config.auth_token),
            metrics: Metrics::default(),
            store_warned_percent: std::sync::atomic::AtomicU64::new(0),
            rng: SystemRandom::new(),
            calls: CallContexts::new(config.token_ttl),
            config,
            clock,
            handlers,
            twiml,
            shutdown: shutdown_rx,
            _tasks: tasks_tx,
        });
        Ok(Server {
            shared,
            shutdown: Some(shutdown_tx),
            tasks_done: Some(tasks_rx),
        })
    }
}

/// A server: its state, its routes, its shutdown. Mount [`Self::service`] (or, with the `axum`
/// feature, [`Self::router`]) in an application, or run it alone with [`Self::serve`].
///
/// Dropping it shuts it down: every stream is closed with 1001 (the routes it handed out
/// answer nothing more). Keep it for as long as it should serve.
#[must_use = "dropping the Server shuts it down"]
pub struct Server {
    shared: Arc<Shared>,
    /// `None` once shutdown has begun.
    shutdown: Option<watch::Sender<bool>>,
    tasks_done: Option<mpsc::Receiver<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("webhook", &self.shared.webhook_url)
            .field("stream", &self.shared.stream_url)
            .finish_non_exhaustive()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            tracing::info!("server dropped: shutting down (closing streams with 1001)");
            let _ = tx.send(true);
        }
    }
}

impl Server {
    /// A builder for a server with `config` (an example at [`ServerBuilder`]).
    pub fn builder(config: Config) -> ServerBuilder {
        ServerBuilder {
            config,
            clock: Arc::new(SystemClock),
            handlers: Arc::new(Discard),
            twiml: Arc::new(BareStream),
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The webhook, stream and health routes, as a tower service: clone it into each
    /// connection of your own HTTP server (hyper, tower, any router that takes a
    /// `Service<Request<B>>`). Set a [`PeerAddr`] extension on each request so the
    /// per-address pending cap sees client addresses.
    ///
    /// ```
    /// use http_body_util::Full;
    /// use hyper::body::Bytes;
    /// use streamguard::server::{Echo, PeerAddr, Server};
    /// use tower_service::Service as _;
    /// # use streamguard::secret::{AuthToken, KeySet, TokenKey};
    /// # use streamguard::{server::{Config, PublicUrl}, sid::AccountSid};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let config = Config::new(
    /// #     PublicUrl::parse("https://voice.example.com")?,
    /// #     AuthToken::new("0f0e0d0c0b0a09080706050403020100")?,
    /// #     AccountSid::parse("AC0123456789abcdef0123456789abcdef")?,
    /// #     KeySet::single(TokenKey::from_bytes(&[7; 32])?),
    /// # );
    /// let server = Server::builder(config).handlers(Echo).build()?;
    /// let mut routes = server.service();
    ///
    /// let mut req = hyper::Request::get("/healthz").body(Full::new(Bytes::new()))?;
    /// req.extensions_mut().insert(PeerAddr("203.0.113.7:40000".parse()?));
    /// let res = routes.call(req).await?;
    /// assert_eq!(res.status(), 200);
    /// # Ok(()) }
    /// ```
    pub fn service(&self) -> MediaStreams {
        MediaStreams {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The routes as an axum `Router` (`{webhook-path}`, `{stream-path}`, `/healthz`) to
    /// `merge` into an application's router or `nest` under a prefix (then put the prefix in
    /// the public URL). Serve the app with
    /// `into_make_service_with_connect_info::<SocketAddr>()` so the per-address cap sees
    /// client addresses.
    ///
    /// ```no_run
    /// use std::net::SocketAddr;
    /// use streamguard::server::{Config, Echo, Server};
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = Server::builder(Config::from_env()?).handlers(Echo).build()?;
    /// let app = axum::Router::new()
    ///     .route("/", axum::routing::get(|| async { "the application's own page" }))
    ///     .merge(server.router());
    ///
    /// let listener = tokio::net::TcpListener::bind(server.config().listen).await?;
    /// axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
    ///     .with_graceful_shutdown(async { let _ = tokio::signal::ctrl_c().await; })
    ///     .await?;
    /// server.shutdown().await; // closes the streams with 1001 and waits for them
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "axum")]
    pub fn router(&self) -> axum::Router {
        let svc = self.service();
        axum::Router::new()
            .route_service(&self.shared.config.webhook_path, svc.clone())
            .route_service(&self.shared.config.stream_path, svc.clone())
            .route_service(config::HEALTH_PATH, svc)
    }

    /// The counters now.
    pub fn metrics(&self) -> Snapshot {
        self.shared.snapshot()
    }

    /// Serves alone on `listener` (and on `config.metrics_listen`, if set), with the
    /// connection cap lowered to the file-descriptor limit. Keep the returned handle.
    pub async fn serve(self, listener: TcpListener) -> io::Result<ServerHandle> {
        let shared = Arc::clone(&self.shared);
        let addr = listener.local_addr()?;
        let metrics_listener = match shared.config.metrics_listen {
            Some(a) => Some(TcpListener::bind(a).await?),
            None => None,
        };
        let metrics_addr = metrics_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let fds = connections::effective_max_connections(shared.config.max_connections, FD_RESERVE);
        shared.connections.set_max(fds.max_connections);
        tracing::info!(
            max_connections = fds.max_connections,
            requested = shared.config.max_connections,
            descriptor_limit = fds.limit,
            reserve = FD_RESERVE,
            "connection cap: the smaller of --max-connections and the descriptor limit less the reserve"
        );
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
            server: Some(self),
            accept_loops,
        })
    }

    /// Closes every stream with 1001 and waits (at most [`SHUTDOWN_GRACE`]) for connections
    /// to end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
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

/// A server running alone ([`Server::serve`]).
///
/// Dropping it stops the server: it stops accepting and closes every stream with 1001, without
/// waiting for that to finish. Keep it for as long as the server should run; end with
/// [`Self::shutdown`] (or [`Self::serve_until`]) to wait for a clean end.
#[must_use = "dropping the ServerHandle shuts the server down; keep it, or call .serve_until(signal)"]
pub struct ServerHandle {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    server: Option<Server>,
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
        self.server
            .as_ref()
            .map(Server::metrics)
            .unwrap_or_default()
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
        let server = self.server.take();
        if let Some(s) = &server
            && let Some(tx) = &s.shutdown
        {
            let _ = tx.send(true);
        }
        for task in std::mem::take(&mut self.accept_loops) {
            let _ = task.await;
        }
        if let Some(s) = server {
            s.shutdown().await;
        }
    }
}
