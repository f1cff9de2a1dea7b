//! Prometheus metrics (text exposition format 0.0.4), served on `--metrics-listen`.
//!
//! The precise reason for every refusal is a label value here and in the logs, never on the
//! wire. Label values come from fixed `as_str()` tables, never from input.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::store::StoreError;

/// Upper bounds of the replay store latency histogram, in microseconds (0.1 ms to 1 s).
pub const STORE_LATENCY_BUCKETS_US: [u64; 10] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000, 1_000_000,
];

/// The replay store operations timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// A webhook's mint.
    Mint,
    /// A `start`'s redemption.
    Redeem,
}

impl StoreOp {
    fn index(self) -> usize {
        match self {
            Self::Mint => 0,
            Self::Redeem => 1,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Mint => "mint",
            Self::Redeem => "redeem",
        }
    }
}

/// A latency histogram of one operation.
#[derive(Debug, Default)]
struct Histogram {
    /// Observations at or under each bound of [`STORE_LATENCY_BUCKETS_US`] (not cumulative).
    buckets: [AtomicU64; STORE_LATENCY_BUCKETS_US.len()],
    over: AtomicU64,
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// A copy of a histogram.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Cumulative counts at each bound of [`STORE_LATENCY_BUCKETS_US`].
    pub cumulative: Vec<u64>,
    /// Sum of the observations, in microseconds.
    pub sum_us: u64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        match STORE_LATENCY_BUCKETS_US.iter().position(|b| us <= *b) {
            Some(i) => {
                if let Some(b) = self.buckets.get(i) {
                    bump(b);
                }
            }
            None => bump(&self.over),
        }
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        bump(&self.count);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0u64;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                running = running.saturating_add(b.load(Ordering::Relaxed));
                running
            })
            .collect();
        HistogramSnapshot {
            cumulative,
            sum_us: self.sum_us.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// Counters of one server.
#[derive(Debug, Default)]
pub struct Metrics {
    webhook_accepted: AtomicU64,
    webhook_rejected: Mutex<BTreeMap<&'static str, u64>>,
    streams_authenticated: AtomicU64,
    streams_rejected: Mutex<BTreeMap<&'static str, u64>>,
    media_frames: AtomicU64,
    accept_errors: AtomicU64,
    store_errors: Mutex<BTreeMap<&'static str, u64>>,
    store_latency: [Histogram; 2],
}

/// The gauges, read from the server's state when a snapshot is taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    /// `streamguard_streams_active`.
    pub streams_active: u64,
    /// `streamguard_connections_pending`.
    pub connections_pending: u64,
    /// `streamguard_connections_open`.
    pub connections_open: u64,
    /// `streamguard_connections_max`.
    pub connections_max: u64,
    /// `streamguard_connections_evicted_total`.
    pub connections_evicted: u64,
    /// `streamguard_connections_refused_total`.
    pub connections_refused: u64,
    /// `streamguard_call_records` (absent for a shared store).
    pub call_records: Option<u64>,
    /// `streamguard_call_records_capacity` (absent for a store bounded by TTLs only).
    pub call_records_capacity: Option<u64>,
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// `streamguard_webhook_requests_total{outcome="accepted"}`.
    pub webhook_accepted: u64,
    /// `streamguard_webhook_requests_total{outcome="rejected"}`: the sum of
    /// [`Self::webhook_rejected_by_reason`].
    pub webhook_rejected: u64,
    /// `streamguard_webhook_rejected_total` by reason.
    pub webhook_rejected_by_reason: BTreeMap<&'static str, u64>,
    /// `streamguard_streams_authenticated_total`.
    pub streams_authenticated: u64,
    /// `streamguard_streams_rejected_total` by reason.
    pub streams_rejected: BTreeMap<&'static str, u64>,
    /// `streamguard_media_frames_total`.
    pub media_frames: u64,
    /// `streamguard_accept_errors_total`.
    pub accept_errors: u64,
    /// `streamguard_replay_store_errors_total` by kind (`unreachable`, `timeout`, `error`).
    pub store_errors: BTreeMap<&'static str, u64>,
    /// `streamguard_replay_store_latency_seconds{op="mint"}`.
    pub store_mint_latency: HistogramSnapshot,
    /// `streamguard_replay_store_latency_seconds{op="redeem"}`.
    pub store_redeem_latency: HistogramSnapshot,
    /// The gauges.
    pub gauges: Gauges,
}

impl Snapshot {
    /// Total rejected streams, whatever the reason.
    pub fn streams_rejected_total(&self) -> u64 {
        self.streams_rejected
            .values()
            .fold(0, |a, b| a.saturating_add(*b))
    }

    /// Rejected streams with this reason.
    pub fn streams_rejected_for(&self, reason: &str) -> u64 {
        self.streams_rejected.get(reason).copied().unwrap_or(0)
    }

    /// Rejected webhooks with this reason.
    pub fn webhook_rejected_for(&self, reason: &str) -> u64 {
        self.webhook_rejected_by_reason
            .get(reason)
            .copied()
            .unwrap_or(0)
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn bump_reason(map: &Mutex<BTreeMap<&'static str, u64>>, reason: &'static str) {
    let mut map = map
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let n = map.entry(reason).or_insert(0);
    *n = n.saturating_add(1);
}

fn read(map: &Mutex<BTreeMap<&'static str, u64>>) -> BTreeMap<&'static str, u64> {
    map.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

impl Metrics {
    /// A webhook was answered `200`.
    pub fn webhook_accepted(&self) {
        bump(&self.webhook_accepted);
    }

    /// A webhook was refused for `reason`.
    pub fn webhook_rejected(&self, reason: &'static str) {
        bump_reason(&self.webhook_rejected, reason);
    }

    /// A stream authenticated.
    pub fn stream_authenticated(&self) {
        bump(&self.streams_authenticated);
    }

    /// A stream was refused (before or after the upgrade) for `reason`.
    pub fn stream_rejected(&self, reason: &'static str) {
        bump_reason(&self.streams_rejected, reason);
    }

    /// An inbound media frame of an authenticated stream was handed to the handler.
    pub fn media_frame(&self) {
        bump(&self.media_frames);
    }

    /// `accept` failed.
    pub fn accept_error(&self) {
        bump(&self.accept_errors);
    }

    /// A replay store operation took `elapsed` and ended with `error` (if any).
    pub fn store_call(&self, op: StoreOp, elapsed: Duration, error: Option<StoreError>) {
        if let Some(h) = self.store_latency.get(op.index()) {
            h.observe(elapsed);
        }
        if let Some(e) = error.filter(|e| *e != StoreError::Full) {
            bump_reason(&self.store_errors, e.kind());
        }
    }

    /// The counters now, with `gauges`.
    pub fn snapshot(&self, gauges: Gauges) -> Snapshot {
        let webhook_rejected_by_reason = read(&self.webhook_rejected);
        Snapshot {
            webhook_accepted: self.webhook_accepted.load(Ordering::Relaxed),
            webhook_rejected: webhook_rejected_by_reason
                .values()
                .fold(0, |a, b| a.saturating_add(*b)),
            webhook_rejected_by_reason,
            streams_authenticated: self.streams_authenticated.load(Ordering::Relaxed),
            streams_rejected: read(&self.streams_rejected),
            media_frames: self.media_frames.load(Ordering::Relaxed),
            accept_errors: self.accept_errors.load(Ordering::Relaxed),
            store_errors: read(&self.store_errors),
            store_mint_latency: self
                .store_latency
                .get(StoreOp::Mint.index())
                .map(Histogram::snapshot)
                .unwrap_or_default(),
            store_redeem_latency: self
                .store_latency
                .get(StoreOp::Redeem.index())
                .map(Histogram::snapshot)
                .unwrap_or_default(),
            gauges,
        }
    }
}

fn by_reason(map: &BTreeMap<&'static str, u64>) -> Vec<(String, u64)> {
    map.iter()
        .map(|(reason, n)| (format!("{{reason=\"{reason}\"}}"), *n))
        .collect()
}

impl Snapshot {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let plain = |v: u64| [(String::new(), v)];
        let g = &self.gauges;
        metric(
            "streamguard_webhook_requests_total",
            "counter",
            "Voice webhook requests by outcome.",
            &[
                ("{outcome=\"accepted\"}".to_owned(), self.webhook_accepted),
                ("{outcome=\"rejected\"}".to_owned(), self.webhook_rejected),
            ],
        );
        metric(
            "streamguard_webhook_rejected_total",
            "counter",
            "Voice webhooks refused, by precise reason (e.g. signature_mismatch, call_already_streamed).",
            &by_reason(&self.webhook_rejected_by_reason),
        );
        metric(
            "streamguard_streams_authenticated_total",
            "counter",
            "Media streams that presented a valid token.",
            &plain(self.streams_authenticated),
        );
        metric(
            "streamguard_streams_rejected_total",
            "counter",
            "Media stream connections refused, before or after the upgrade, by precise reason.",
            &by_reason(&self.streams_rejected),
        );
        metric(
            "streamguard_streams_active",
            "gauge",
            "Authenticated media streams open now.",
            &plain(g.streams_active),
        );
        metric(
            "streamguard_connections_pending",
            "gauge",
            "Connections upgraded but not yet authenticated.",
            &plain(g.connections_pending),
        );
        metric(
            "streamguard_media_frames_total",
            "counter",
            "Inbound media frames of authenticated streams handed to the media handler.",
            &plain(self.media_frames),
        );
        metric(
            "streamguard_connections_open",
            "gauge",
            "TCP connections open now, of every kind.",
            &plain(g.connections_open),
        );
        metric(
            "streamguard_connections_max",
            "gauge",
            "The --max-connections cap in force (lowered to the file-descriptor limit).",
            &plain(g.connections_max),
        );
        metric(
            "streamguard_connections_evicted_total",
            "counter",
            "Connections waiting for a request, closed to admit a new one at --max-connections.",
            &plain(g.connections_evicted),
        );
        metric(
            "streamguard_connections_refused_total",
            "counter",
            "Connections closed at accept: --max-connections reached and none waiting.",
            &plain(g.connections_refused),
        );
        metric(
            "streamguard_accept_errors_total",
            "counter",
            "Failed accepts (out of file descriptors, ...).",
            &plain(self.accept_errors),
        );
        if let Some(records) = g.call_records {
            metric(
                "streamguard_call_records",
                "gauge",
                "Calls the replay store remembers now (in-memory store).",
                &plain(records),
            );
        }
        if let Some(cap) = g.call_records_capacity {
            metric(
                "streamguard_call_records_capacity",
                "gauge",
                "Most calls the in-memory replay store remembers (--call-capacity).",
                &plain(cap),
            );
        }
        let errors: Vec<(String, u64)> = self
            .store_errors
            .iter()
            .map(|(kind, n)| (format!("{{kind=\"{kind}\"}}"), *n))
            .collect();
        metric(
            "streamguard_replay_store_errors_total",
            "counter",
            "Replay store operations that failed (the call was refused): unreachable, timeout, error.",
            &errors,
        );
        render_histogram(
            &mut out,
            "streamguard_replay_store_latency_seconds",
            "Replay store operation latency (mint per webhook, redeem per start).",
            &[
                (StoreOp::Mint, &self.store_mint_latency),
                (StoreOp::Redeem, &self.store_redeem_latency),
            ],
        );
        out
    }
}

fn seconds(us: u64) -> String {
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

fn render_histogram(
    out: &mut String,
    name: &str,
    help: &str,
    series: &[(StoreOp, &HistogramSnapshot)],
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (op, h) in series {
        let op = op.as_str();
        for (bound, n) in STORE_LATENCY_BUCKETS_US.iter().zip(&h.cumulative) {
            let _ = writeln!(
                out,
                "{name}_bucket{{op=\"{op}\",le=\"{}\"}} {n}",
                seconds(*bound)
            );
        }
        let _ = writeln!(out, "{name}_bucket{{op=\"{op}\",le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum{{op=\"{op}\"}} {}", seconds(h.sum_us));
        let _ = writeln!(out, "{name}_count{{op=\"{op}\"}} {}", h.count);
    }
}
