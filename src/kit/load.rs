//! `streamguard load`: many concurrent calls the way Twilio makes them (signed webhook, TwiML,
//! signed upgrade, `connected`, `start`, 20 ms frames of 160-byte mu-law, `stop`), against
//! any media-stream server, with the figures a capacity claim needs: calls authenticated,
//! authentication latency, frames sent and echoed, lateness, errors by kind and, for a local
//! target, the server's CPU time and memory from `/proc`.
//!
//! It reuses the conformance kit's Twilio client ([`super::simulator`]); frames are built
//! once per call and cloned (a reference count), so the generator spends its time on sockets.
//! It runs on every worker thread the runtime has: give it a core of its own (`taskset`) and
//! it is not the limit of a one-core server; the report says when it fell behind (real-time
//! lateness).
//!
//! Calls are set up `setup_concurrency` at a time (4 by default: the reference server's
//! default per-address pending cap, and every call comes from one address), then stream for
//! `duration` each.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tungstenite::Message;

use super::simulator::{
    FRAME_INTERVAL, Signing, Twilio, connected_message, media_message_with, parse_twiml,
    random_sid, start_message, stop_message, strip_query, tone_frame,
};
use crate::secret::AuthToken;
use crate::sid::{AccountSid, CallSid, StreamSid};

/// How fast media frames are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rate {
    /// One frame every 20 ms per call, as Twilio sends them.
    Realtime,
    /// As fast as the connection takes them (throughput and cost per frame).
    Max,
    /// None: each call authenticates and stays open, silent, for the duration (memory per
    /// idle stream).
    Idle,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Where the bytes go.
    pub connect_to: SocketAddr,
    /// The public URL the target signs against.
    pub public_url: String,
    /// The webhook route.
    pub webhook_path: String,
    /// The stream route.
    pub stream_path: String,
    /// Concurrent calls.
    pub calls: usize,
    /// How long each call streams after its `start` (0: start, then stop).
    pub duration: Duration,
    /// Frame rate.
    pub rate: Rate,
    /// Whether the target echoes (measure echo latency and count echoes).
    pub echo: bool,
    /// No webhook, no signature, no token: for targets without authentication (the floor).
    pub unauthenticated: bool,
    /// Calls set up at the same time.
    pub setup_concurrency: usize,
    /// The target's process, for CPU and memory (found by its listening port when `None`).
    pub server_pid: Option<u32>,
    /// The account the target runs with.
    pub account_sid: AccountSid,
}

/// Percentiles of a set of durations, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Spread {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

fn spread(mut us: Vec<u32>) -> Spread {
    if us.is_empty() {
        return Spread::default();
    }
    us.sort_unstable();
    let at = |q: f64| {
        let last = us.len().saturating_sub(1);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((last as f64) * q).round() as usize;
        f64::from(us.get(i.min(last)).copied().unwrap_or(0)) / 1000.0
    };
    Spread {
        count: u64::try_from(us.len()).unwrap_or(u64::MAX),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    }
}

/// The target process's use of the machine during the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct ServerUsage {
    /// The process.
    pub pid: u32,
    /// CPU seconds (user and system) it used during the run.
    pub cpu_seconds: f64,
    /// Of which in user space.
    pub user_seconds: f64,
    /// Of which in the kernel (sockets, scheduling).
    pub system_seconds: f64,
    /// `cpu_seconds` over the run's wall time.
    pub cores_used: f64,
    /// Resident memory before the run, KiB.
    pub rss_before_kib: u64,
    /// Largest resident memory seen during the run (sampled every 100 ms), KiB.
    pub rss_kib: u64,
    /// Peak resident memory of the process (since it started), KiB.
    pub peak_rss_kib: u64,
    /// Media frames sent per CPU second of the server.
    pub frames_per_cpu_second: f64,
}

/// What a load run found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LoadReport {
    /// Calls started.
    pub calls: usize,
    /// Calls the target accepted (streamed until `stop`, or echoed).
    pub authenticated: usize,
    /// From the webhook's start to the first echoed frame (with echo).
    pub auth_latency: Spread,
    /// Media frames sent.
    pub frames_sent: u64,
    /// Media frames echoed back.
    pub frames_echoed: u64,
    /// Frames sent per wall second, all calls together.
    pub frames_per_second: f64,
    /// How late real-time frames left after their 20 ms schedule.
    pub lateness: Spread,
    /// From sending a frame to receiving its echo (with echo).
    pub echo_latency: Spread,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// The run's wall time, seconds.
    pub wall_seconds: f64,
    /// The server's use of the machine, when it is a local process.
    pub server: Option<ServerUsage>,
}

impl LoadReport {
    /// The report for a terminal.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let s = |sp: &Spread| {
            format!(
                "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
                sp.p50_ms, sp.p99_ms, sp.max_ms, sp.count
            )
        };
        let _ = writeln!(
            out,
            "calls                {} started, {} authenticated",
            self.calls, self.authenticated
        );
        let _ = writeln!(out, "auth latency         {}", s(&self.auth_latency));
        let _ = writeln!(
            out,
            "frames               {} sent, {} echoed, {:.0} per second",
            self.frames_sent, self.frames_echoed, self.frames_per_second
        );
        let _ = writeln!(out, "lateness             {}", s(&self.lateness));
        let _ = writeln!(out, "echo latency         {}", s(&self.echo_latency));
        let errors = if self.errors.is_empty() {
            "none".to_owned()
        } else {
            self.errors
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(out, "errors               {errors}");
        let _ = writeln!(out, "wall time            {:.2} s", self.wall_seconds);
        match &self.server {
            Some(u) => {
                let _ = writeln!(
                    out,
                    "server (pid {})     {:.3} CPU s ({:.3} user, {:.3} kernel), {:.3} cores, RSS {} -> {} KiB during the run ({} KiB peak since start), {:.0} frames per CPU second",
                    u.pid,
                    u.cpu_seconds,
                    u.user_seconds,
                    u.system_seconds,
                    u.cores_used,
                    u.rss_before_kib,
                    u.rss_kib,
                    u.peak_rss_kib,
                    u.frames_per_cpu_second
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "server               not a local process (no CPU or memory figures)"
                );
            }
        }
        out
    }
}

#[derive(Default)]
struct CallStats {
    authenticated: bool,
    auth_latency_us: Option<u32>,
    sent: u64,
    echoed: u64,
    lateness_us: Vec<u32>,
    echo_us: Vec<u32>,
    error: Option<String>,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn ws_url(public: &str, path: &str) -> String {
    let ws = match public.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => format!("ws://{}", public.strip_prefix("http://").unwrap_or(public)),
    };
    format!("{ws}{path}")
}

/// At `--rate max`, frames are built once per call, a ring of this many, and cloned by
/// reference count when sent (sequence numbers then repeat: the generator must outrun the
/// server). Real-time frames are built as they are sent, with increasing sequence numbers.
const RING: usize = 250;

/// The simulator's 440 Hz tone repeats every 8000 samples: 50 frames.
const TONE_PERIOD: usize = 50;

/// The tone's payloads (base64), computed once per process.
fn tone_payloads() -> &'static [String] {
    static PAYLOADS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    PAYLOADS.get_or_init(|| {
        use base64::Engine as _;
        (0..TONE_PERIOD)
            .map(|i| base64::engine::general_purpose::STANDARD.encode(tone_frame(i)))
            .collect()
    })
}

/// Media frame `i` of `stream`.
fn media_frame(stream: &StreamSid, i: usize) -> Message {
    let payload = tone_payloads()
        .get(i % TONE_PERIOD)
        .map_or("", String::as_str);
    Message::text(media_message_with(stream, i, payload))
}

async fn one_call(
    twilio: Arc<Twilio>,
    spec: Arc<LoadSpec>,
    gate: Arc<tokio::sync::Semaphore>,
) -> CallStats {
    let mut stats = CallStats::default();
    let rng = ring::rand::SystemRandom::new();
    let (Ok(call), Ok(stream)) = (
        random_sid("CA", &rng).map(|s| CallSid::parse(&s)),
        random_sid("MZ", &rng).map(|s| StreamSid::parse(&s)),
    ) else {
        stats.error = Some("setup".to_owned());
        return stats;
    };
    let (Ok(call), Ok(stream)) = (call, stream) else {
        stats.error = Some("setup".to_owned());
        return stats;
    };
    let permit = gate.acquire_owned().await;
    let t0 = Instant::now();
    let (url, params) = if spec.unauthenticated {
        (ws_url(&spec.public_url, &spec.stream_path), Vec::new())
    } else {
        let hook = format!("{}{}", spec.public_url, spec.webhook_path);
        match twilio
            .post_webhook(&hook, &twilio.voice_params(&call), Signing::Valid)
            .await
        {
            Ok(r) if r.status == 200 => match parse_twiml(&r.body) {
                Ok(t) => (strip_query(&t.url).to_owned(), t.parameters),
                Err(_) => {
                    stats.error = Some("twiml_unreadable".to_owned());
                    return stats;
                }
            },
            Ok(r) => {
                stats.error = Some(format!("webhook_{}", r.status));
                return stats;
            }
            Err(_) => {
                stats.error = Some("webhook_failed".to_owned());
                return stats;
            }
        }
    };
    let signing = if spec.unauthenticated {
        Signing::Absent
    } else {
        Signing::Valid
    };
    let ws = match twilio.handshake(&url, signing).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(status)) => {
            stats.error = Some(format!("upgrade_{status}"));
            return stats;
        }
        Err(_) => {
            stats.error = Some("upgrade_failed".to_owned());
            return stats;
        }
    };
    let (mut sink, mut read) = ws.split();
    let start = start_message(&spec.account_sid, &call, &stream, &params);
    if sink.feed(Message::text(connected_message())).await.is_err()
        || sink.send(Message::text(start)).await.is_err()
    {
        stats.error = Some("send_failed".to_owned());
        return stats;
    }
    drop(permit);

    let sent_at: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
    let echo = spec.echo;
    let reader_times = Arc::clone(&sent_at);
    let reader = tokio::spawn(async move {
        let mut echoed = 0u64;
        let mut first: Option<Instant> = None;
        let mut latencies = Vec::new();
        let mut closed: Option<u16> = None;
        while let Some(m) = read.next().await {
            match m {
                Ok(Message::Text(t)) => {
                    if echo && t.as_str().contains("\"media\"") {
                        echoed = echoed.saturating_add(1);
                        let now = Instant::now();
                        first.get_or_insert(now);
                        let sent = reader_times
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .pop_front();
                        if let Some(s) = sent {
                            latencies.push(micros(now.saturating_duration_since(s)));
                        }
                    }
                }
                Ok(Message::Close(f)) => {
                    closed = Some(f.map_or(1005, |f| u16::from(f.code)));
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        (echoed, first, latencies, closed)
    });

    let ring: Vec<Message> = if spec.rate == Rate::Max {
        (0..RING).map(|i| media_frame(&stream, i)).collect()
    } else {
        Vec::new()
    };
    let ends = Instant::now()
        .checked_add(spec.duration)
        .unwrap_or_else(Instant::now);
    let mut i = 0usize;
    let mut failed = false;
    match spec.rate {
        Rate::Realtime => {
            let mut ticks = tokio::time::interval(FRAME_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let first_tick = tokio::time::Instant::now();
            while Instant::now() < ends && !spec.duration.is_zero() {
                ticks.tick().await;
                let scheduled = first_tick
                    .checked_add(
                        FRAME_INTERVAL.saturating_mul(u32::try_from(i).unwrap_or(u32::MAX)),
                    )
                    .unwrap_or(first_tick);
                stats.lateness_us.push(micros(
                    tokio::time::Instant::now().saturating_duration_since(scheduled),
                ));
                if echo {
                    sent_at
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push_back(Instant::now());
                }
                if sink.send(media_frame(&stream, i)).await.is_err() {
                    failed = true;
                    break;
                }
                i = i.saturating_add(1);
            }
        }
        Rate::Idle => tokio::time::sleep(spec.duration).await,
        Rate::Max => {
            while Instant::now() < ends && !spec.duration.is_zero() {
                for _ in 0..32 {
                    if echo {
                        sent_at
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push_back(Instant::now());
                    }
                    let frame = ring
                        .get(i % RING)
                        .cloned()
                        .unwrap_or_else(|| Message::text(""));
                    if sink.feed(frame).await.is_err() {
                        failed = true;
                        break;
                    }
                    i = i.saturating_add(1);
                }
                if failed || sink.flush().await.is_err() {
                    failed = true;
                    break;
                }
            }
        }
    }
    stats.sent = u64::try_from(i).unwrap_or(u64::MAX);
    let stop = stop_message(&spec.account_sid, &call, &stream, i.saturating_add(2));
    let _ = sink.send(Message::text(stop)).await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), reader).await;
    let _ = sink.close().await;
    match outcome {
        Ok(Ok((echoed, first, latencies, closed))) => {
            stats.echoed = echoed;
            stats.echo_us = latencies;
            stats.auth_latency_us = first.map(|f| micros(f.saturating_duration_since(t0)));
            // Accepted: the server kept the stream until our `stop` (and closed normally), or
            // echoed.
            let normal = matches!(closed, Some(1000) | None);
            stats.authenticated = echoed > 0 || (!failed && normal);
            // A stream the target ended early (backpressure, a limit) is an error even after
            // it echoed: the call did not run its course.
            if !normal {
                stats.error = closed.map(|c| format!("closed_{c}"));
            } else if failed {
                stats.error = Some("send_failed".to_owned());
            }
        }
        _ => {
            stats.error = Some("no_close_after_stop".to_owned());
        }
    }
    stats
}

/// What `/proc` says about a process at one moment.
#[derive(Clone, Copy)]
struct ProcUsage {
    /// CPU ticks in user space.
    user: u64,
    /// CPU ticks in the kernel.
    system: u64,
    rss_kib: u64,
    peak_kib: u64,
}

/// CPU ticks and resident memory of `pid`, from `/proc`.
#[cfg(target_os = "linux")]
fn proc_usage(pid: u32) -> Option<ProcUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime); after the comm, state is field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Some(ProcUsage {
        user: utime,
        system: stime,
        rss_kib: kib("VmRSS:"),
        peak_kib: kib("VmHWM:"),
    })
}

#[cfg(not(target_os = "linux"))]
fn proc_usage(_pid: u32) -> Option<ProcUsage> {
    None
}

/// The process listening on `port` on this machine, from `/proc/net/tcp{,6}` and the
/// processes' descriptors.
#[cfg(target_os = "linux")]
pub fn find_listener(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if *state == "0A" && local_port == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let procs = std::fs::read_dir("/proc").ok()?;
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| link.as_os_str() == i.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

#[cfg(not(target_os = "linux"))]
pub fn find_listener(_port: u16) -> Option<u32> {
    None
}

fn clock_ticks() -> f64 {
    #[cfg(unix)]
    {
        #[allow(clippy::cast_precision_loss)]
        return rustix::param::clock_ticks_per_second() as f64;
    }
    #[cfg(not(unix))]
    100.0
}

/// Runs the load `spec` describes; `auth_token` signs (unused with `unauthenticated`).
pub async fn run(spec: LoadSpec, auth_token: AuthToken) -> LoadReport {
    let spec = Arc::new(spec);
    let twilio = Arc::new(Twilio {
        connect_to: spec.connect_to,
        auth_token,
        account_sid: spec.account_sid,
    });
    let pid = spec
        .server_pid
        .or_else(|| find_listener(spec.connect_to.port()));
    let before = pid.and_then(proc_usage);
    let started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(spec.setup_concurrency.max(1)));
    let tasks: Vec<_> = (0..spec.calls)
        .map(|_| {
            tokio::spawn(one_call(
                Arc::clone(&twilio),
                Arc::clone(&spec),
                Arc::clone(&gate),
            ))
        })
        .collect();
    let mut report = LoadReport {
        calls: spec.calls,
        ..LoadReport::default()
    };
    let (mut auth, mut late, mut echo) = (Vec::new(), Vec::new(), Vec::new());
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = Arc::clone(&sampling);
        tokio::spawn(async move {
            let mut max = 0u64;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(ProcUsage { rss_kib: rss, .. }) = pid.and_then(proc_usage) {
                    max = max.max(rss);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            max
        })
    };
    for t in tasks {
        let Ok(s) = t.await else {
            let n = report.errors.entry("task_panicked".to_owned()).or_insert(0);
            *n = n.saturating_add(1);
            continue;
        };
        report.authenticated = report
            .authenticated
            .saturating_add(usize::from(s.authenticated));
        report.frames_sent = report.frames_sent.saturating_add(s.sent);
        report.frames_echoed = report.frames_echoed.saturating_add(s.echoed);
        auth.extend(s.auth_latency_us);
        late.extend(s.lateness_us);
        echo.extend(s.echo_us);
        if let Some(e) = s.error {
            let n = report.errors.entry(e).or_insert(0);
            *n = n.saturating_add(1);
        }
    }
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let rss_max = sampler.await.unwrap_or(0);
    let after = pid.and_then(proc_usage);
    let wall = started.elapsed().as_secs_f64();
    report.wall_seconds = wall;
    #[allow(clippy::cast_precision_loss)]
    let sent = report.frames_sent as f64;
    report.frames_per_second = if wall > 0.0 { sent / wall } else { 0.0 };
    report.auth_latency = spread(auth);
    report.lateness = spread(late);
    report.echo_latency = spread(echo);
    if let (Some(pid), Some(u0), Some(u1)) = (pid, before, after) {
        #[allow(clippy::cast_precision_loss)]
        let seconds = |a: u64, b: u64| b.saturating_sub(a) as f64 / clock_ticks();
        let user = seconds(u0.user, u1.user);
        let system = seconds(u0.system, u1.system);
        let cpu = user + system;
        let (rss0, rss, peak) = (u0.rss_kib, u1.rss_kib, u1.peak_kib);
        report.server = Some(ServerUsage {
            pid,
            cpu_seconds: cpu,
            user_seconds: user,
            system_seconds: system,
            cores_used: if wall > 0.0 { cpu / wall } else { 0.0 },
            rss_before_kib: rss0,
            rss_kib: rss_max.max(rss),
            peak_rss_kib: peak,
            frames_per_cpu_second: if cpu > 0.0 { sent / cpu } else { 0.0 },
        });
    }
    report
}
