//! Prometheus metrics (text exposition format 0.0.4), served on `--metrics-listen`.
//!
//! The precise reason for every rejected stream is a label value here and in the logs,
//! never on the wire. Label values come from fixed `as_str()` tables, never from input.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::capacity::Capacity;

/// Counters of one server.
#[derive(Debug, Default)]
pub struct Metrics {
    webhook_accepted: AtomicU64,
    webhook_rejected: AtomicU64,
    streams_authenticated: AtomicU64,
    streams_rejected: Mutex<BTreeMap<&'static str, u64>>,
    media_frames: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// `streamguard_webhook_requests_total{outcome="accepted"}`.
    pub webhook_accepted: u64,
    /// `streamguard_webhook_requests_total{outcome="rejected"}`.
    pub webhook_rejected: u64,
    /// `streamguard_streams_authenticated_total`.
    pub streams_authenticated: u64,
    /// `streamguard_streams_rejected_total` by reason.
    pub streams_rejected: BTreeMap<&'static str, u64>,
    /// `streamguard_streams_active`.
    pub streams_active: u64,
    /// `streamguard_connections_pending`.
    pub connections_pending: u64,
    /// `streamguard_media_frames_total`.
    pub media_frames: u64,
}

impl Snapshot {
    /// Total rejected streams, whatever the reason.
    pub fn streams_rejected_total(&self) -> u64 {
        self.streams_rejected
            .values()
            .fold(0, |a, b| a.saturating_add(*b))
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// A webhook was answered `200`.
    pub fn webhook_accepted(&self) {
        bump(&self.webhook_accepted);
    }

    /// A webhook was refused.
    pub fn webhook_rejected(&self) {
        bump(&self.webhook_rejected);
    }

    /// A stream authenticated.
    pub fn stream_authenticated(&self) {
        bump(&self.streams_authenticated);
    }

    /// A stream was refused (before or after the upgrade) for `reason`.
    pub fn stream_rejected(&self, reason: &'static str) {
        let mut map = self
            .streams_rejected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(reason).or_insert(0);
        *n = n.saturating_add(1);
    }

    /// An inbound media frame of an authenticated stream was handed to the handler.
    pub fn media_frame(&self) {
        bump(&self.media_frames);
    }

    /// The counters now, with the gauges read from `capacity`.
    pub fn snapshot(&self, capacity: &Capacity) -> Snapshot {
        Snapshot {
            webhook_accepted: self.webhook_accepted.load(Ordering::Relaxed),
            webhook_rejected: self.webhook_rejected.load(Ordering::Relaxed),
            streams_authenticated: self.streams_authenticated.load(Ordering::Relaxed),
            streams_rejected: self
                .streams_rejected
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            streams_active: u64::try_from(capacity.active()).unwrap_or(u64::MAX),
            connections_pending: u64::try_from(capacity.pending()).unwrap_or(u64::MAX),
            media_frames: self.media_frames.load(Ordering::Relaxed),
        }
    }
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
            "streamguard_streams_authenticated_total",
            "counter",
            "Media streams that presented a valid token.",
            &[(String::new(), self.streams_authenticated)],
        );
        let rejected: Vec<(String, u64)> = self
            .streams_rejected
            .iter()
            .map(|(reason, n)| (format!("{{reason=\"{reason}\"}}"), *n))
            .collect();
        metric(
            "streamguard_streams_rejected_total",
            "counter",
            "Media stream connections refused, before or after the upgrade, by precise reason.",
            &rejected,
        );
        metric(
            "streamguard_streams_active",
            "gauge",
            "Authenticated media streams open now.",
            &[(String::new(), self.streams_active)],
        );
        metric(
            "streamguard_connections_pending",
            "gauge",
            "Connections upgraded but not yet authenticated.",
            &[(String::new(), self.connections_pending)],
        );
        metric(
            "streamguard_media_frames_total",
            "counter",
            "Inbound media frames of authenticated streams handed to the media handler.",
            &[(String::new(), self.media_frames)],
        );
        out
    }
}
