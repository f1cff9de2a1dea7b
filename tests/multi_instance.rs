//! Many instances, one truth: three servers behind one public URL, sharing the token key,
//! the auth token and one real `redis-server` (`--replay-store redis://...`). A token
//! redeemed on one is refused on the others; 16 concurrent `start`s with one token spread over
//! the instances have exactly one winner; a webhook replayed on another instance mints nothing
//! new; a restarted instance refuses what was spent before; Redis going away refuses new calls
//! with the generic answer while live streams keep flowing, and coming back restores service
//! without a restart.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

mod harness;
mod redis_support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use harness::{Harness, Options, stream_sid};
use redis_support::RedisServer;
use streamguard::kit::simulator::{Signing, media_message, parse_twiml};
use streamguard::server::ReplayStoreConfig;
use streamguard::store::RedisSettings;

const PUBLIC: &str = "http://voice.example.com";
const POLICY: u16 = 1008;

fn redis_options(server: &RedisServer) -> Options {
    Options {
        echo: true,
        public_url: Some(PUBLIC),
        store: Some(ReplayStoreConfig::Redis(
            RedisSettings::new(&server.url(), None, None, Duration::from_millis(250)).unwrap(),
        )),
        configure: |c| {
            c.max_pending_per_ip = 64;
        },
        ..Options::default()
    }
}

async fn instances(server: &RedisServer, n: usize) -> Vec<Harness> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Harness::start(redis_options(server)).await);
    }
    out
}

fn token_of(body: &str) -> String {
    parse_twiml(body)
        .unwrap()
        .parameter("token")
        .unwrap()
        .to_owned()
}

/// The webhook on one instance, the stream on another (what a load balancer does), and the
/// spent token refused everywhere.
#[tokio::test]
async fn a_token_works_once_across_instances() {
    let Some(server) = RedisServer::start("a_token_works_once_across_instances") else {
        return;
    };
    let hs = instances(&server, 3).await;
    let token = hs[0].token_for(1).await;
    let first = hs[1].call_with(1, &token, 3).await;
    assert_eq!(first.close_code, Some(1000), "{first:?}");
    assert_eq!(first.echoed_payloads().len(), 3);
    for (i, h) in hs.iter().enumerate() {
        let again = h.call_with(1, &token, 3).await;
        assert_eq!(again.close_code, Some(POLICY), "instance {i}");
        assert!(!again.received_anything(), "instance {i}");
    }
    let rejected: u64 = hs
        .iter()
        .map(|h| h.server().metrics().streams_rejected_for("token_replayed"))
        .sum();
    assert_eq!(rejected, 3);
    for h in hs {
        h.shutdown().await;
    }
}

/// 16 connections start with one token at once, spread over three instances: exactly one is
/// accepted, every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_with_one_token_over_three_instances_have_one_winner() {
    let Some(server) = RedisServer::start("concurrent_starts_with_one_token") else {
        return;
    };
    let hs = instances(&server, 3).await;
    for round in 0..8u64 {
        let n = 100 + round;
        let token = hs[0].token_for(n).await;
        // Open all 16 first, then send every start at once.
        let mut sockets = Vec::new();
        for i in 0..16 {
            sockets.push(hs[i % 3].connect_stream().await);
        }
        let starts = sockets.iter_mut().enumerate().map(|(i, ws)| {
            let h = &hs[i % 3];
            let token = token.clone();
            async move { h.send_start(ws, n, &token, 0).await }
        });
        futures_util::future::join_all(starts).await;
        // Wait until all 16 were decided (by the metrics), then read what each one got.
        let decided = |hs: &[Harness]| -> u64 {
            hs.iter()
                .map(|h| {
                    let m = h.server().metrics();
                    m.streams_authenticated + m.streams_rejected_for("token_replayed")
                })
                .sum()
        };
        let target = 16 * (round + 1);
        for _ in 0..500 {
            if decided(&hs) >= target {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(decided(&hs), target, "round {round}");
        let mut outcomes = Vec::new();
        for ws in &mut sockets {
            outcomes.push(close_or_open(ws).await);
        }
        let winners = outcomes.iter().filter(|o| **o == Outcome::Open).count();
        assert_eq!(winners, 1, "round {round}: {outcomes:?}");
        assert!(
            outcomes
                .iter()
                .all(|o| *o == Outcome::Open || *o == Outcome::Closed(POLICY)),
            "round {round}: {outcomes:?}"
        );
    }
    let authenticated: u64 = hs
        .iter()
        .map(|h| h.server().metrics().streams_authenticated)
        .sum();
    assert_eq!(authenticated, 8);
    for h in hs {
        h.shutdown().await;
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Open,
    Closed(u16),
}

/// Whether the server closed the connection (and with what), or left it open (authenticated:
/// an authenticated stream with nothing to send stays silent). Called once every decision has
/// been made, so a close is already on its way.
async fn close_or_open(ws: &mut harness::Client) -> Outcome {
    match tokio::time::timeout(Duration::from_millis(300), ws.next()).await {
        Err(_) => Outcome::Open,
        Ok(Some(Ok(tungstenite::Message::Close(Some(f))))) => Outcome::Closed(u16::from(f.code)),
        Ok(other) => panic!("unexpected {other:?}"),
    }
}

/// A webhook replayed on another instance: within the TTL the same token (nothing new), after
/// the stream nothing at all.
#[tokio::test]
async fn a_replayed_webhook_on_another_instance_mints_nothing_new() {
    let Some(server) = RedisServer::start("a_replayed_webhook_on_another_instance") else {
        return;
    };
    let hs = instances(&server, 2).await;
    let first = hs[0].webhook(1, Signing::Valid).await;
    let replay = hs[1].webhook(1, Signing::Valid).await;
    assert_eq!((first.status, replay.status), (200, 200));
    assert_eq!(
        first.body, replay.body,
        "byte-identical TwiML, the same token"
    );
    let token = token_of(&first.body);
    assert_eq!(hs[0].call_with(1, &token, 1).await.close_code, Some(1000));
    for h in &hs {
        let after = h.webhook(1, Signing::Valid).await;
        assert_eq!((after.status, after.body.as_str()), (403, ""));
        assert_eq!(
            h.server()
                .metrics()
                .webhook_rejected_for("call_already_streamed"),
            1
        );
    }
    for h in hs {
        h.shutdown().await;
    }
}

/// A restarted instance (a new server on the same Redis) refuses the token spent before the
/// restart, and accepts the one minted before the restart and not yet used.
#[tokio::test]
async fn a_restarted_instance_remembers_what_was_spent() {
    let Some(server) = RedisServer::start("a_restarted_instance_remembers") else {
        return;
    };
    let h = Harness::start(redis_options(&server)).await;
    let spent = h.token_for(1).await;
    assert_eq!(h.call_with(1, &spent, 1).await.close_code, Some(1000));
    let unspent = h.token_for(2).await;
    h.shutdown().await;

    let restarted = Harness::start(redis_options(&server)).await;
    let o = restarted.call_with(1, &spent, 1).await;
    assert_eq!(o.close_code, Some(POLICY));
    assert!(!o.received_anything());
    assert_eq!(
        restarted
            .server()
            .metrics()
            .streams_rejected_for("token_replayed"),
        1
    );
    let o = restarted.call_with(2, &unspent, 2).await;
    assert_eq!(
        o.close_code,
        Some(1000),
        "a token survives the restart: {o:?}"
    );
    restarted.shutdown().await;
}

/// Redis stops mid-run: new calls are refused with the generic answers (webhook 503 empty,
/// stream 1008) and the precise reason `replay_store_unavailable`; a stream authenticated
/// before keeps flowing; nothing panics. Redis comes back: new calls succeed, no restart.
/// A paused Redis is bounded by the store timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_fails_closed_keeps_live_streams_and_recovers() {
    let Some(mut server) = RedisServer::start("redis_going_away_fails_closed") else {
        return;
    };
    let h = Harness::start(redis_options(&server)).await;
    let live_token = h.token_for(1).await;
    let mut live = h.open_stream(1, &live_token, 2).await;
    h.wait_metrics(|m| m.gauges.streams_active == 1).await;
    // A token minted before the outage, used during it.
    let minted_before = h.token_for(2).await;

    server.stop();
    let refused = h.webhook(3, Signing::Valid).await;
    assert_eq!((refused.status, refused.body.as_str()), (503, ""));
    let o = h.call_with(2, &minted_before, 1).await;
    assert_eq!(o.close_code, Some(POLICY));
    assert!(!o.received_anything());
    let m = h.server().metrics();
    assert_eq!(m.webhook_rejected_for("replay_store_unavailable"), 1);
    assert_eq!(m.streams_rejected_for("replay_store_unavailable"), 1);
    assert!(
        m.store_errors.values().sum::<u64>() >= 2,
        "{:?}",
        m.store_errors
    );
    // The live stream still flows both ways.
    for i in 2..5 {
        live.send(tungstenite::Message::text(media_message(&stream_sid(1), i)))
            .await
            .unwrap();
    }
    h.wait_metrics(|m| m.media_frames == 5).await;
    let mut echoes = 0;
    while echoes < 5 {
        match tokio::time::timeout(Duration::from_secs(5), live.next()).await {
            Ok(Some(Ok(tungstenite::Message::Text(_)))) => echoes += 1,
            other => panic!("the live stream stopped: {other:?}"),
        }
    }

    server.restart();
    let mut back = None;
    for _ in 0..100 {
        let reply = h.webhook(4, Signing::Valid).await;
        if reply.status == 200 {
            back = Some(token_of(&reply.body));
            break;
        }
        assert_eq!(reply.status, 503);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = back.expect("service resumed without a restart");
    assert_eq!(h.call_with(4, &token, 2).await.close_code, Some(1000));

    server.pause();
    let started = std::time::Instant::now();
    let paused = tokio::time::timeout(Duration::from_secs(5), h.webhook(5, Signing::Valid))
        .await
        .expect("bounded by the store timeout, not hung");
    assert_eq!(paused.status, 503);
    eprintln!(
        "paused Redis: webhook refused after {:?}",
        started.elapsed()
    );
    server.resume();
    drop(live);
    h.shutdown().await;
}
