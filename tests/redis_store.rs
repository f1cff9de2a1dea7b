//! The Redis replay store (`src/store/redis.rs`) against a real `redis-server` (no mock):
//! its Lua scripts decide exactly what `CallRecord`'s rules decide (a differential test over
//! random operation sequences, the in-memory store as the oracle), exactly one of many
//! concurrent redemptions wins across several store instances, Redis holds no token, nonce or
//! CallSid and every key expires by itself, and a stopped or paused Redis fails closed and is
//! recovered from without a restart.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

mod common;
mod redis_support;

use std::sync::Arc;
use std::time::Duration;

use common::{ACCOUNT, T0, TTL, account, keyset};
use redis_support::RedisServer;
use ring::rand::{SecureRandom, SystemRandom};
use streamguard::secret::{AuthToken, KeySet, StreamToken};
use streamguard::sid::CallSid;
use streamguard::store::{
    self, CallId, LiveToken, MemoryStore, MintDecision, Presented, RedeemError, RedeemRefusal,
    RedisSettings, RedisStore, ReplayStore, StoreError, StoreKey, StorePolicy,
};
use streamguard::time::UnixTime;
use streamguard::token::verify;

const AUTH: &str = "f1e2d3c4b5a6978877665544332211ff";
const MEMORY: Duration = Duration::from_secs(4 * 3600);

fn policy(streams_per_call: u32) -> StorePolicy {
    StorePolicy {
        token_ttl: TTL,
        call_memory: MEMORY,
        streams_per_call,
    }
}

fn redis_store(server: &RedisServer, p: StorePolicy) -> RedisStore {
    let settings =
        RedisSettings::new(&server.url(), None, None, Duration::from_millis(250)).unwrap();
    RedisStore::new(&settings, p).unwrap()
}

fn random_bytes<const N: usize>(rng: &SystemRandom) -> [u8; N] {
    let mut b = [0u8; N];
    rng.fill(&mut b).unwrap();
    b
}

/// A small deterministic generator for the operation sequences (seeded per round, so a
/// failure names its round).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The same operations, at the same times, on the in-memory store and on Redis: every answer
/// is the same. Times jump by milliseconds to hours, across TTLs and call memories; presented
/// tokens are the live one, an older one, or one never minted; streams per call 1 to 3.
#[tokio::test]
async fn the_lua_scripts_decide_what_the_record_rules_decide() {
    let Some(server) = RedisServer::start("the_lua_scripts_decide_what_the_record_rules_decide")
    else {
        return;
    };
    let rng = SystemRandom::new();
    let key_id = keyset(1).current().id();
    let mut compared = 0u32;
    // Every kind of answer must come up, or the comparison proves little.
    let mut seen = std::collections::BTreeSet::new();
    for round in 0..60u64 {
        let mut g = Lcg(round.wrapping_mul(0x9E37_79B9) ^ 0xABCD);
        let p = policy(1 + u32::try_from(g.below(3)).unwrap());
        let memory = MemoryStore::new(1024, p);
        let redis = redis_store(&server, p);
        // Fresh calls each round, so rounds do not see each other's records.
        let calls: Vec<CallId> = (0..3).map(|_| CallId(random_bytes(&rng))).collect();
        let mut minted: Vec<Vec<LiveToken>> = vec![Vec::new(); calls.len()];
        let mut now = T0;
        for step in 0..40 {
            now = common::plus_ms(
                now,
                match g.below(6) {
                    0 => 0,
                    1 => g.below(1000),
                    2 => g.below(59_000),
                    3 => 60_000 + g.below(10),
                    4 => g.below(3_600_000),
                    _ => 4 * 3_600_000 + g.below(5),
                },
            );
            let c = usize::try_from(g.below(calls.len() as u64)).unwrap();
            if g.below(2) == 0 {
                let candidate = LiveToken {
                    key_id,
                    expires_at: common::after(now, TTL),
                    sealed: random_bytes(&rng),
                };
                let a = memory.mint(calls[c], candidate, now).await;
                let b = redis.mint(calls[c], candidate, now).await;
                assert_eq!(a, b, "round {round} step {step}: mint");
                seen.insert(match a {
                    Ok(MintDecision::Issued(_)) => "issued",
                    Ok(MintDecision::Reused(_)) => "reused",
                    Ok(MintDecision::Refused(_)) => "refused",
                    Err(_) => "mint error",
                });
                if let Ok(MintDecision::Issued(l)) = a {
                    minted[c].push(l);
                }
            } else {
                let presented = match (g.below(3), minted[c].last(), minted[c].first()) {
                    (0, Some(last), _) | (1, _, Some(last)) => Presented {
                        expires_at: last.expires_at,
                        sealed: last.sealed,
                    },
                    _ => Presented {
                        expires_at: common::after(now, TTL),
                        sealed: random_bytes(&rng),
                    },
                };
                let a = memory.redeem(calls[c], presented, now).await;
                let b = redis.redeem(calls[c], presented, now).await;
                assert_eq!(a, b, "round {round} step {step}: redeem");
                seen.insert(match a {
                    Ok(Ok(())) => "redeemed",
                    Ok(Err(RedeemRefusal::TokenReused)) => "token reused",
                    Ok(Err(RedeemRefusal::NotOnRecord)) => "not on record",
                    Ok(Err(RedeemRefusal::CallAlreadyStreamed)) => "call streamed",
                    Ok(Err(_)) => "other refusal",
                    Err(_) => "redeem error",
                });
            }
            compared += 1;
        }
    }
    assert_eq!(compared, 60 * 40);
    for kind in [
        "issued",
        "reused",
        "refused",
        "redeemed",
        "token reused",
        "not on record",
    ] {
        assert!(seen.contains(kind), "never saw {kind}: {seen:?}");
    }
    assert!(
        !seen.contains("mint error") && !seen.contains("redeem error"),
        "{seen:?}"
    );
}

struct World {
    keys: KeySet,
    store_key: StoreKey,
}

impl World {
    fn new() -> Self {
        Self {
            keys: keyset(1),
            store_key: StoreKey::derive(&AuthToken::new(AUTH).unwrap()),
        }
    }

    async fn mint(
        &self,
        s: &dyn ReplayStore,
        c: &CallSid,
        now: UnixTime,
    ) -> Result<StreamToken, store::MintError> {
        store::mint(
            s,
            &self.store_key,
            &self.keys,
            &account(ACCOUNT),
            c,
            now,
            TTL,
            &SystemRandom::new(),
        )
        .await
    }

    async fn redeem(
        &self,
        s: &dyn ReplayStore,
        t: &StreamToken,
        c: &CallSid,
        now: UnixTime,
    ) -> Result<(), RedeemError> {
        let claims = verify(&self.keys, t.as_str(), &account(ACCOUNT), c, now).unwrap();
        store::redeem(s, &self.store_key, &account(ACCOUNT), c, &claims, now).await
    }
}

/// Three store instances (three servers' connections) on one Redis; 16 concurrent
/// redemptions of one token spread over them: exactly one wins, every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_concurrent_redemptions_wins_across_instances() {
    let Some(server) = RedisServer::start("exactly_one_of_concurrent_redemptions_wins") else {
        return;
    };
    let w = Arc::new(World::new());
    let stores: Vec<Arc<RedisStore>> = (0..3)
        .map(|_| Arc::new(redis_store(&server, policy(1))))
        .collect();
    for round in 0..30u64 {
        let c = common::nth_call(10_000 + round);
        let token = w.mint(&*stores[0], &c, T0).await.unwrap();
        // Minting again on another instance gets the same token: nothing new.
        assert_eq!(
            w.mint(&*stores[1], &c, T0).await.unwrap().as_str(),
            token.as_str()
        );
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (w, s, t) = (Arc::clone(&w), Arc::clone(&stores[i % 3]), token.clone());
                tokio::spawn(async move { w.redeem(&*s, &t, &c, T0).await })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "round {round}: {results:?}"
        );
        assert!(
            results.iter().all(|r| matches!(
                r,
                Ok(()) | Err(RedeemError::Refused(RedeemRefusal::TokenReused))
            )),
            "round {round}: {results:?}"
        );
        // And the call mints nothing more anywhere.
        for s in &stores {
            assert!(w.mint(&**s, &c, T0).await.is_err());
        }
    }
}

fn redis_command(port: u16, args: &[&str]) -> redis::Value {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut conn = client.get_connection().unwrap();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut conn).unwrap()
}

fn strings(v: &redis::Value) -> Vec<String> {
    match v {
        redis::Value::Array(items) => items.iter().flat_map(strings).collect(),
        redis::Value::BulkString(b) => vec![String::from_utf8_lossy(b).into_owned()],
        redis::Value::SimpleString(s) => vec![s.clone()],
        redis::Value::Int(n) => vec![n.to_string()],
        redis::Value::Map(pairs) => pairs
            .iter()
            .flat_map(|(k, v)| strings(k).into_iter().chain(strings(v)))
            .collect(),
        _ => Vec::new(),
    }
}

/// What Redis holds after calls were minted and streamed: namespaced keys named by a hash,
/// no token, nonce or CallSid in any rendering, and every key with a TTL. Also reports the
/// memory each record takes.
#[tokio::test]
async fn redis_holds_no_token_nonce_or_callsid_and_every_key_expires() {
    let Some(server) = RedisServer::start("redis_holds_no_token_nonce_or_callsid") else {
        return;
    };
    let w = World::new();
    let s = redis_store(&server, policy(1));
    let mut secrets = Vec::new();
    for n in 0..20u64 {
        let c = common::nth_call(n);
        let t = w.mint(&s, &c, T0).await.unwrap();
        let claims = verify(&w.keys, t.as_str(), &account(ACCOUNT), &c, T0).unwrap();
        if n % 2 == 0 {
            w.redeem(&s, &t, &c, T0).await.unwrap();
        }
        secrets.push(t.as_str().to_owned());
        secrets.push(c.as_str().to_owned());
        secrets.extend(common::renderings(&claims.nonce));
    }
    let keys = strings(&redis_command(server.port, &["KEYS", "*"]));
    assert_eq!(keys.len(), 20, "{keys:?}");
    let mut sizes = Vec::new();
    for k in &keys {
        let hex = k
            .strip_prefix(streamguard::store::KEY_PREFIX)
            .unwrap_or_else(|| panic!("{k}"));
        assert_eq!(hex.len(), 32, "{k}");
        let pttl = strings(&redis_command(server.port, &["PTTL", k]));
        let pttl: i64 = pttl[0].parse().unwrap();
        assert!(pttl > 0, "{k} has no expiry ({pttl})");
        let fields = strings(&redis_command(server.port, &["HGETALL", k])).join(" ");
        for secret in &secrets {
            common::assert_no_leak(&format!("{k} {fields}"), &[secret]);
        }
        let bytes = strings(&redis_command(server.port, &["MEMORY", "USAGE", k]));
        sizes.push(bytes[0].parse::<u64>().unwrap());
    }
    let max = sizes.iter().max().unwrap();
    eprintln!("redis memory per call record (MEMORY USAGE): {sizes:?}, at most {max} bytes");
    assert!(*max < 1024, "a record takes {max} bytes");
}

/// Redis stopped: minting and redemption fail closed (an error, not a panic, not a hang);
/// Redis started again on the same address: the same store instance works again by itself.
/// Redis paused (SIGSTOP, connections open, no answers): bounded by the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_or_paused_redis_fails_closed_and_is_recovered_from() {
    let Some(mut server) = RedisServer::start("a_stopped_or_paused_redis_fails_closed") else {
        return;
    };
    let w = World::new();
    let s = redis_store(&server, policy(1));
    let c = common::nth_call(1);
    let t = w.mint(&s, &c, T0).await.unwrap();

    server.stop();
    let down = w.mint(&s, &common::nth_call(2), T0).await;
    assert!(
        matches!(
            down,
            Err(store::MintError::Store(
                StoreError::Unavailable | StoreError::Timeout
            ))
        ),
        "{down:?}"
    );
    let down = w.redeem(&s, &t, &c, T0).await;
    assert!(
        matches!(
            down,
            Err(RedeemError::Store(
                StoreError::Unavailable | StoreError::Timeout
            ))
        ),
        "{down:?}"
    );

    server.restart();
    let mut recovered = None;
    for _ in 0..100 {
        if let Ok(token) = w.mint(&s, &common::nth_call(3), T0).await {
            recovered = Some(token);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = recovered.expect("the store recovered once Redis was back");
    assert_eq!(w.redeem(&s, &token, &common::nth_call(3), T0).await, Ok(()));

    server.pause();
    let paused = tokio::time::timeout(Duration::from_secs(5), w.mint(&s, &common::nth_call(4), T0))
        .await
        .expect("bounded by the store timeout, not hung");
    assert_eq!(
        paused.map(|_| ()),
        Err(store::MintError::Store(StoreError::Timeout))
    );
    server.resume();
    let mut resumed = false;
    for _ in 0..100 {
        if w.mint(&s, &common::nth_call(5), T0).await.is_ok() {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(resumed, "the store works again after SIGCONT");
}

#[test]
fn settings_refuse_credentials_in_the_url_and_never_show_the_password() {
    let t = Duration::from_millis(250);
    for (url, words) in [
        (
            "redis://:hunter2@127.0.0.1:6379",
            "STREAMGUARD_REDIS_PASSWORD",
        ),
        (
            "redis://user:hunter2@127.0.0.1:6379",
            "STREAMGUARD_REDIS_PASSWORD",
        ),
        ("redis://user@127.0.0.1:6379", "STREAMGUARD_REDIS_USERNAME"),
        ("http://127.0.0.1:6379", "redis:// or rediss://"),
        ("redis://", "must name a host"),
        ("redis://127.0.0.1:6379/0?x=1", "no query"),
    ] {
        let e = RedisSettings::new(url, None, None, t)
            .unwrap_err()
            .to_string();
        assert!(e.contains(words), "{url}: {e}");
        assert!(!e.contains("hunter2"), "{url}: the password is echoed: {e}");
    }
    let ok = RedisSettings::new(
        "rediss://redis.internal:6380/2",
        Some("streamguard".to_owned()),
        Some("hunter2".to_owned()),
        t,
    )
    .unwrap();
    assert!(ok.is_tls());
    assert_eq!(ok.url(), "rediss://redis.internal:6380/2");
    assert!(!format!("{ok:?}").contains("hunter2"));
}
