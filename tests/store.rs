//! Single use (`src/store/`): one record per CallSid decides minting and redemption.
//!
//! - the record's rules (`CallRecord::mint`, `CallRecord::redeem`) against a table whose
//!   expected results are written out by hand;
//! - the in-memory store end to end through `store::mint` / `store::redeem` with real tokens:
//!   idempotent minting within the TTL, single use, one stream per call (or
//!   `--streams-per-call`), a streamed call refused for its whole call memory, tokens not on
//!   record refused, bounded and failing closed when full;
//! - exactly one winner among concurrent redemptions of one token, and one record among
//!   concurrent mints for one call;
//! - the store's key derivations against known answers computed by an independent script
//!   (`scripts/store_vectors.py`), and no token or nonce in what the store keeps.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

mod common;

use std::sync::Barrier;
use std::time::Duration;

use common::{ACCOUNT, CALL, OTHER_CALL, T0, TTL, account, call, keyset};
use futures_util::FutureExt as _;
use ring::rand::SystemRandom;
use streamguard::limits::DEFAULT_CALL_MEMORY;
use streamguard::secret::{AuthToken, KeySet, StreamToken};
use streamguard::sid::{AccountSid, CallSid};
use streamguard::store::{
    self, CallRecord, LiveToken, MemoryStore, MintDecision, MintError, MintRefusal, Presented,
    RedeemError, RedeemRefusal, StoreError, StoreKey, StorePolicy,
};
use streamguard::time::UnixTime;
use streamguard::token::{IssueError, verify};

const AUTH: &str = "f1e2d3c4b5a6978877665544332211ff";

fn policy(streams_per_call: u32) -> StorePolicy {
    StorePolicy {
        token_ttl: TTL,
        call_memory: DEFAULT_CALL_MEMORY,
        streams_per_call,
    }
}

struct World {
    keys: KeySet,
    store: MemoryStore,
    store_key: StoreKey,
}

impl World {
    fn new(capacity: usize, streams_per_call: u32) -> Self {
        Self {
            keys: keyset(1),
            store: MemoryStore::new(capacity, policy(streams_per_call)),
            store_key: StoreKey::derive(&AuthToken::new(AUTH).unwrap()),
        }
    }

    fn mint(&self, c: &CallSid, now: UnixTime) -> Result<StreamToken, MintError> {
        store::mint(
            &self.store,
            &self.store_key,
            &self.keys,
            &account(ACCOUNT),
            c,
            now,
            TTL,
            &SystemRandom::new(),
        )
        .now_or_never()
        .unwrap()
    }

    /// Verifies `token` as the session does, then redeems it as the server does.
    fn redeem(&self, token: &StreamToken, c: &CallSid, now: UnixTime) -> Result<(), RedeemError> {
        let claims = verify(&self.keys, token.as_str(), &account(ACCOUNT), c, now)
            .expect("the token verifies");
        store::redeem(
            &self.store,
            &self.store_key,
            &account(ACCOUNT),
            c,
            &claims,
            now,
        )
        .now_or_never()
        .unwrap()
    }
}

fn refused(r: RedeemRefusal) -> Result<(), RedeemError> {
    Err(RedeemError::Refused(r))
}

// ---------------------------------------------------------------------------------------------
// The record's rules
// ---------------------------------------------------------------------------------------------

fn live(expires_at: UnixTime, n: u8) -> LiveToken {
    LiveToken {
        key_id: keyset(1).current().id(),
        expires_at,
        sealed: [n; 16],
    }
}

fn presented(l: &LiveToken) -> Presented {
    Presented {
        expires_at: l.expires_at,
        sealed: l.sealed,
    }
}

/// (name, record before, now, record after, decision).
type MintCase = (
    &'static str,
    Option<CallRecord>,
    UnixTime,
    Option<CallRecord>,
    MintDecision,
);

/// (name, record before, token presented, now, record after, result).
type RedeemCase = (
    &'static str,
    Option<CallRecord>,
    Presented,
    UnixTime,
    Option<CallRecord>,
    Result<(), RedeemRefusal>,
);

/// `CallRecord::mint` and `CallRecord::redeem` on every kind of record, with the expected
/// record and answer written out.
#[test]
fn record_rules_table() {
    let p = policy(1);
    let exp = common::after(T0, TTL);
    let memory_end = common::after(T0, DEFAULT_CALL_MEMORY);
    let cand = live(common::after(T0, TTL), 9);
    let fresh = CallRecord {
        live: Some(cand),
        streams: 0,
        keep_until: cand.expires_at,
    };

    // mint: (record before, now, expected record after, expected decision)
    let old_live = live(exp, 1);
    let minted = CallRecord {
        live: Some(old_live),
        streams: 0,
        keep_until: exp,
    };
    let streamed = CallRecord {
        live: None,
        streams: 1,
        keep_until: memory_end,
    };
    let mint_cases: Vec<MintCase> = vec![
        (
            "no record",
            None,
            T0,
            Some(fresh),
            MintDecision::Issued(cand),
        ),
        (
            "a live token: the same one back",
            Some(minted),
            T0,
            Some(minted),
            MintDecision::Reused(old_live),
        ),
        (
            "1 ms before the live token expires: still the same",
            Some(minted),
            UnixTime::from_millis(exp.as_millis() - 1),
            Some(minted),
            MintDecision::Reused(old_live),
        ),
        (
            "the record expired with its token: a fresh record",
            Some(minted),
            exp,
            Some(CallRecord {
                live: Some(cand),
                streams: 0,
                keep_until: cand.expires_at,
            }),
            MintDecision::Issued(cand),
        ),
        (
            "streamed: refused, record unchanged",
            Some(streamed),
            T0,
            Some(streamed),
            MintDecision::Refused(MintRefusal::CallAlreadyStreamed),
        ),
        (
            "streamed, 1 ms before the memory ends: refused",
            Some(streamed),
            UnixTime::from_millis(memory_end.as_millis() - 1),
            Some(streamed),
            MintDecision::Refused(MintRefusal::CallAlreadyStreamed),
        ),
        (
            "streamed, memory over: forgotten, a fresh record",
            Some(streamed),
            memory_end,
            Some(fresh),
            MintDecision::Issued(cand),
        ),
    ];
    for (name, before, now, after, decision) in mint_cases {
        assert_eq!(
            CallRecord::mint(before, cand, now, &p),
            (after, decision),
            "mint: {name}"
        );
    }

    // redeem: (record before, token presented, now, record after, result)
    let right = presented(&old_live);
    let wrong = Presented {
        sealed: [0u8; 16],
        ..right
    };
    let other_expiry = Presented {
        expires_at: common::plus_ms(exp, 1),
        ..right
    };
    let consumed = CallRecord {
        live: None,
        streams: 1,
        keep_until: memory_end,
    };
    let redeem_cases: Vec<RedeemCase> = vec![
        (
            "no record",
            None,
            right,
            T0,
            None,
            Err(RedeemRefusal::NotOnRecord),
        ),
        (
            "the live token",
            Some(minted),
            right,
            T0,
            Some(consumed),
            Ok(()),
        ),
        (
            "another token for a minted call",
            Some(minted),
            wrong,
            T0,
            Some(minted),
            Err(RedeemRefusal::NotOnRecord),
        ),
        (
            "the right nonce with another expiry",
            Some(minted),
            other_expiry,
            T0,
            Some(minted),
            Err(RedeemRefusal::NotOnRecord),
        ),
        (
            "the live token after it expired",
            Some(minted),
            right,
            exp,
            None,
            Err(RedeemRefusal::NotOnRecord),
        ),
        (
            "the spent token again",
            Some(consumed),
            right,
            T0,
            Some(consumed),
            Err(RedeemRefusal::TokenReused),
        ),
        (
            "any token for a streamed call",
            Some(consumed),
            wrong,
            T0,
            Some(consumed),
            Err(RedeemRefusal::TokenReused),
        ),
        (
            "a live token recorded although the streams are used (a lowered limit)",
            Some(CallRecord {
                live: Some(old_live),
                streams: 1,
                keep_until: memory_end,
            }),
            right,
            T0,
            Some(CallRecord {
                live: Some(old_live),
                streams: 1,
                keep_until: memory_end,
            }),
            Err(RedeemRefusal::CallAlreadyStreamed),
        ),
    ];
    for (name, before, offer, now, after, result) in redeem_cases {
        assert_eq!(
            CallRecord::redeem(before, &offer, now, &p),
            (after, result),
            "redeem: {name}"
        );
    }
}

/// A record kept past its live token's expiry (a call that streamed once of two, and was
/// minted a second token): at the very millisecond that token expires it is expired for the
/// record too, as for `token::verify` (`now >= expiry`). Minting then issues the candidate
/// instead of handing the expired token back, and redeeming the expired token is refused.
#[test]
fn a_live_token_is_expired_at_its_expiry_inside_a_kept_record() {
    let p = policy(2);
    let exp = common::after(T0, TTL);
    let memory_end = common::after(T0, DEFAULT_CALL_MEMORY);
    let old_live = live(exp, 1);
    let kept = CallRecord {
        live: Some(old_live),
        streams: 1,
        keep_until: memory_end,
    };
    let cand = live(common::after(exp, TTL), 9);

    // 1 ms before: still the live token, both ways.
    let before = UnixTime::from_millis(exp.as_millis() - 1);
    assert_eq!(
        CallRecord::mint(Some(kept), cand, before, &p),
        (Some(kept), MintDecision::Reused(old_live)),
    );
    assert_eq!(
        CallRecord::redeem(Some(kept), &presented(&old_live), before, &p),
        (
            Some(CallRecord {
                live: None,
                streams: 2,
                keep_until: common::after(before, DEFAULT_CALL_MEMORY),
            }),
            Ok(())
        ),
    );

    // At the expiry: a new token, and the old one is no longer the call's.
    assert_eq!(
        CallRecord::mint(Some(kept), cand, exp, &p),
        (
            Some(CallRecord {
                live: Some(cand),
                streams: 1,
                keep_until: memory_end,
            }),
            MintDecision::Issued(cand)
        ),
    );
    assert_eq!(
        CallRecord::redeem(Some(kept), &presented(&old_live), exp, &p),
        (Some(kept), Err(RedeemRefusal::TokenReused)),
    );
}

// ---------------------------------------------------------------------------------------------
// The in-memory store with real tokens
// ---------------------------------------------------------------------------------------------

#[test]
fn minting_is_idempotent_within_the_ttl_and_fresh_after() {
    let w = World::new(16, 1);
    let c = call(CALL);
    let first = w.mint(&c, T0).unwrap();
    for at in [
        T0,
        common::plus_ms(T0, 1),
        common::before(common::after(T0, TTL), Duration::from_millis(1)),
    ] {
        assert_eq!(w.mint(&c, at).unwrap().as_str(), first.as_str(), "{at:?}");
    }
    assert_eq!(w.store.len(), 1);
    let later = common::after(T0, TTL);
    let second = w.mint(&c, later).unwrap();
    assert_ne!(second.as_str(), first.as_str());
    assert!(verify(&w.keys, second.as_str(), &account(ACCOUNT), &c, later).is_ok());
    // Distinct calls, distinct tokens.
    let other = w.mint(&call(OTHER_CALL), T0).unwrap();
    assert_ne!(other.as_str(), first.as_str());
    assert_eq!(w.store.len(), 2);
}

#[test]
fn a_token_opens_one_stream_and_the_call_is_then_refused_for_its_memory() {
    let w = World::new(16, 1);
    let c = call(CALL);
    let t = w.mint(&c, T0).unwrap();
    assert_eq!(w.redeem(&t, &c, T0), Ok(()));
    assert_eq!(
        w.redeem(&t, &c, common::plus_ms(T0, 1)),
        refused(RedeemRefusal::TokenReused)
    );
    for at in [
        common::plus_ms(T0, 1),
        common::after(T0, TTL),
        common::after(T0, Duration::from_secs(610)),
        UnixTime::from_millis(common::after(T0, DEFAULT_CALL_MEMORY).as_millis() - 1),
    ] {
        assert_eq!(
            w.mint(&c, at).map(|_| ()),
            Err(MintError::Refused(MintRefusal::CallAlreadyStreamed)),
            "{at:?}"
        );
    }
    let after_memory = common::after(T0, DEFAULT_CALL_MEMORY);
    assert!(w.mint(&c, after_memory).is_ok());
}

/// A token with a valid MAC that this store did not mint is refused: one issued outside the
/// store, one minted before a restart (a new store), one superseded after its TTL.
#[test]
fn a_token_not_on_record_is_refused() {
    let w = World::new(16, 1);
    let c = call(CALL);
    let outside = common::token_for(&w.keys, &account(ACCOUNT), &c, T0, 7);
    assert_eq!(
        w.redeem(&outside, &c, T0),
        refused(RedeemRefusal::NotOnRecord)
    );
    assert!(w.store.is_empty(), "a refused redemption records nothing");

    let before_restart = w.mint(&c, T0).unwrap();
    let restarted = World::new(16, 1);
    assert_eq!(
        restarted.redeem(&before_restart, &c, T0),
        refused(RedeemRefusal::NotOnRecord)
    );
    // The original store still redeems it exactly once.
    assert_eq!(w.redeem(&before_restart, &c, T0), Ok(()));
}

#[test]
fn streams_per_call_bounds_the_streams_of_a_call() {
    let w = World::new(16, 3);
    let c = call(CALL);
    let mut spent = Vec::new();
    for i in 0..3u64 {
        let at = common::plus_ms(T0, i);
        let t = w.mint(&c, at).unwrap();
        assert!(spent.iter().all(|s: &StreamToken| s.as_str() != t.as_str()));
        assert_eq!(w.redeem(&t, &c, at), Ok(()), "stream {i}");
        spent.push(t);
    }
    let at = common::plus_ms(T0, 10);
    assert_eq!(
        w.mint(&c, at).map(|_| ()),
        Err(MintError::Refused(MintRefusal::CallAlreadyStreamed))
    );
    for t in &spent {
        assert_eq!(w.redeem(t, &c, at), refused(RedeemRefusal::TokenReused));
    }
}

#[test]
fn a_full_store_refuses_new_calls_and_still_serves_known_ones() {
    let w = World::new(2, 1);
    let (a, b) = (common::nth_call(1), common::nth_call(2));
    let ta = w.mint(&a, T0).unwrap();
    let tb = w.mint(&b, T0).unwrap();
    let third = common::nth_call(3);
    assert_eq!(
        w.mint(&third, T0).map(|_| ()),
        Err(MintError::Store(StoreError::Full))
    );
    assert_eq!(w.store.len(), 2);
    // Known calls: same token, and they stream.
    assert_eq!(w.mint(&a, T0).unwrap().as_str(), ta.as_str());
    assert_eq!(w.redeem(&ta, &a, T0), Ok(()));
    assert_eq!(w.redeem(&tb, &b, T0), Ok(()));
    assert_eq!(w.store.len(), 2);
    // Streamed records are kept for the call memory, never forgotten early.
    assert_eq!(
        w.mint(&third, common::after(T0, TTL)).map(|_| ()),
        Err(MintError::Store(StoreError::Full))
    );
    assert!(
        w.mint(&third, common::after(T0, DEFAULT_CALL_MEMORY))
            .is_ok()
    );
}

/// A record is forgotten at the very millisecond it expires, not later: a full store takes a
/// new call as soon as an old one's token has expired.
#[test]
fn an_expired_record_frees_its_place_at_its_expiry() {
    let w = World::new(1, 1);
    let (a, b) = (common::nth_call(1), common::nth_call(2));
    w.mint(&a, T0).unwrap();
    let expiry = common::after(T0, TTL);
    assert_eq!(
        w.mint(&b, UnixTime::from_millis(expiry.as_millis() - 1))
            .map(|_| ()),
        Err(MintError::Store(StoreError::Full))
    );
    assert!(w.mint(&b, expiry).is_ok());
    assert_eq!(w.store.len(), 1);
}

/// A call that streamed is remembered for the call memory, and a call minted after it is
/// still forgotten when its own token expires: the long memory of one record does not hold
/// back the expiry of records minted later.
#[test]
fn a_streamed_call_does_not_delay_forgetting_later_ones() {
    let w = World::new(2, 1);
    let (a, b, c) = (
        common::nth_call(1),
        common::nth_call(2),
        common::nth_call(3),
    );
    let ta = w.mint(&a, T0).unwrap();
    assert_eq!(w.redeem(&ta, &a, T0), Ok(()));
    let t1 = common::plus_ms(T0, 1_000);
    w.mint(&b, t1).unwrap();
    let b_expiry = common::after(t1, TTL);
    assert_eq!(
        w.mint(&c, UnixTime::from_millis(b_expiry.as_millis() - 1))
            .map(|_| ()),
        Err(MintError::Store(StoreError::Full))
    );
    assert!(
        w.mint(&c, b_expiry).is_ok(),
        "b's record was forgotten at its expiry"
    );
    assert_eq!(w.store.len(), 2, "a (remembered) and c");
    // a is still remembered: it may not mint again.
    assert_eq!(
        w.mint(&a, b_expiry).map(|_| ()),
        Err(MintError::Refused(MintRefusal::CallAlreadyStreamed))
    );
}

#[test]
fn a_store_with_no_capacity_mints_nothing() {
    let w = World::new(0, 1);
    assert_eq!(
        w.mint(&call(CALL), T0).map(|_| ()),
        Err(MintError::Store(StoreError::Full))
    );
    assert!(w.store.is_empty());
}

/// N threads redeem the same token at the same instant (released together by a barrier):
/// exactly one wins and every other one is told `TokenReused`. Many rounds, one shared store.
#[test]
fn concurrent_redemptions_of_one_token_have_exactly_one_winner() {
    const THREADS: usize = 16;
    const ROUNDS: u64 = 200;
    let w = World::new(1024, 1);
    let barrier = Barrier::new(THREADS);
    for round in 0..ROUNDS {
        let c = common::nth_call(round);
        let t = w.mint(&c, T0).unwrap();
        let results: Vec<Result<(), RedeemError>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        w.redeem(&t, &c, T0)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "round {round}"
        );
        assert!(
            results.iter().all(|r| matches!(
                r,
                Ok(()) | Err(RedeemError::Refused(RedeemRefusal::TokenReused))
            )),
            "round {round}: {results:?}"
        );
    }
    assert_eq!(w.store.len(), usize::try_from(ROUNDS).unwrap());
}

/// N threads mint for the same call at the same instant (Twilio retrying, or a replay racing
/// the original): every one gets the identical token, and one record exists.
#[test]
fn concurrent_mints_for_one_call_agree_on_one_token() {
    const THREADS: usize = 16;
    const ROUNDS: u64 = 100;
    let w = World::new(1024, 1);
    let barrier = Barrier::new(THREADS);
    for round in 0..ROUNDS {
        let c = common::nth_call(round);
        let tokens: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        w.mint(&c, T0).unwrap().as_str().to_owned()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(tokens.iter().all(|t| *t == tokens[0]), "round {round}");
    }
    assert_eq!(w.store.len(), usize::try_from(ROUNDS).unwrap());
}

// ---------------------------------------------------------------------------------------------
// What the store keeps, and its key derivations
// ---------------------------------------------------------------------------------------------

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex16(s: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// Known answers from `scripts/store_vectors.py` (Python's hmac): a change to a label or an
/// input layout, which would split a rolling deploy's instances, fails here.
#[test]
fn store_key_derivations_match_the_independent_vectors() {
    let doc: serde_json::Value = serde_json::from_str(include_str!("data/store-key.json")).unwrap();
    let vectors = doc["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 2);
    for v in vectors {
        let key = StoreKey::derive(&AuthToken::new(v["auth_token"].as_str().unwrap()).unwrap());
        let a = AccountSid::parse(v["account"].as_str().unwrap()).unwrap();
        let c = CallSid::parse(v["call"].as_str().unwrap()).unwrap();
        let expiry = UnixTime::from_millis(v["expires_at_ms"].as_u64().unwrap());
        let nonce = unhex16(v["nonce"].as_str().unwrap());
        let sealed = key.seal_nonce(&a, &c, expiry, &nonce);
        assert_eq!(hex(&sealed), v["sealed"].as_str().unwrap());
        // Sealing opens.
        assert_eq!(key.seal_nonce(&a, &c, expiry, &sealed), nonce);
        assert_eq!(hex(&key.call_id(&a, &c).0), v["call_id"].as_str().unwrap());
        // Tampered twins: another expiry, another call, another auth token.
        let later = common::plus_ms(expiry, 1);
        assert_ne!(
            hex(&key.seal_nonce(&a, &c, later, &nonce)),
            v["sealed"].as_str().unwrap()
        );
        let other_call = common::nth_call(999);
        assert_ne!(
            hex(&key.seal_nonce(&a, &other_call, expiry, &nonce)),
            v["sealed"].as_str().unwrap()
        );
        assert_ne!(
            hex(&key.call_id(&a, &other_call).0),
            v["call_id"].as_str().unwrap()
        );
        let other_key = StoreKey::derive(&AuthToken::new("another auth token").unwrap());
        assert_ne!(
            hex(&other_key.seal_nonce(&a, &c, expiry, &nonce)),
            v["sealed"].as_str().unwrap()
        );
    }
}

/// The record of a minted call holds neither the token nor its nonce (in any rendering), and
/// its Debug shows no sealed nonce either.
#[test]
fn the_store_keeps_no_token_and_no_nonce() {
    let w = World::new(16, 1);
    let c = call(CALL);
    let t = w.mint(&c, T0).unwrap();
    let claims = verify(&w.keys, t.as_str(), &account(ACCOUNT), &c, T0).unwrap();
    let id = w.store_key.call_id(&account(ACCOUNT), &c);
    let record = w.store.record(id, T0).unwrap();
    let live = record.live.unwrap();
    assert_ne!(live.sealed, claims.nonce);
    assert_eq!(
        w.store_key
            .seal_nonce(&account(ACCOUNT), &c, live.expires_at, &live.sealed),
        claims.nonce,
        "the store key opens it"
    );
    let shown = format!("{record:?} {:?}", w.store);
    let mut secrets = vec![t.as_str().to_owned()];
    secrets.extend(common::renderings(&claims.nonce));
    secrets.extend(common::renderings(&live.sealed));
    for secret in &secrets {
        common::assert_no_leak(&shown, &[secret]);
    }
    common::assert_no_leak(&format!("{:?}", w.store_key), &[AUTH]);
    // Records are kept under the keyed name, not the CallSid.
    assert!(!shown.contains(CALL));
    // What the Debug output does show: the record's live token by its key and expiry, the
    // store by its counts, the presented token by its expiry.
    let expiry = format!("{:?}", live.expires_at);
    for part in ["LiveToken", "key_id", "expires_at", &expiry] {
        assert!(shown.contains(part), "{part} not in {shown}");
    }
    assert!(shown.contains("MemoryStore"), "{shown}");
    assert!(shown.contains("records: 1"), "{shown}");
    assert!(shown.contains("capacity: 16"), "{shown}");
    let offer = store::presented(&w.store_key, &account(ACCOUNT), &c, &claims);
    let offer_shown = format!("{offer:?}");
    assert!(offer_shown.contains("Presented"), "{offer_shown}");
    assert!(offer_shown.contains(&expiry), "{offer_shown}");
    for secret in &secrets {
        common::assert_no_leak(&offer_shown, &[secret]);
    }
    assert!(format!("{:?}", w.store_key).contains("StoreKey"));
}

/// The labels metrics and logs count refusals and store failures by are the documented,
/// stable ones; every refusal and failure has a message of its own.
#[test]
fn labels_are_stable_and_messages_distinct() {
    let refusals = [
        (RedeemRefusal::TokenReused, "token_replayed"),
        (RedeemRefusal::CallAlreadyStreamed, "call_already_streamed"),
        (RedeemRefusal::NotOnRecord, "token_not_on_record"),
    ];
    let failures = [
        (StoreError::Full, "call_records_full", "full"),
        (
            StoreError::Unavailable,
            "replay_store_unavailable",
            "unreachable",
        ),
        (StoreError::Timeout, "replay_store_unavailable", "timeout"),
        (StoreError::Failed, "replay_store_unavailable", "error"),
    ];
    for (r, label) in refusals {
        assert_eq!(r.as_str(), label);
        assert_eq!(RedeemError::Refused(r).as_str(), label);
    }
    for (e, label, kind) in failures {
        assert_eq!(e.as_str(), label);
        assert_eq!(e.kind(), kind);
        assert_eq!(RedeemError::Store(e).as_str(), label);
    }

    let mut redeem_messages = Vec::new();
    for (r, _) in refusals {
        redeem_messages.push(r.to_string());
        // The error a caller gets says what the refusal says.
        assert_eq!(RedeemError::Refused(r).to_string(), r.to_string());
    }
    for (e, _, _) in failures {
        redeem_messages.push(e.to_string());
        assert_eq!(RedeemError::Store(e).to_string(), e.to_string());
    }
    common::assert_distinct_messages(&redeem_messages);

    let mut mint_messages = vec![
        MintError::Refused(MintRefusal::CallAlreadyStreamed).to_string(),
        MintError::KeyGone.to_string(),
    ];
    mint_messages.extend(
        failures
            .iter()
            .map(|(e, _, _)| MintError::Store(*e).to_string()),
    );
    mint_messages.extend(
        [
            IssueError::TtlOutOfRange,
            IssueError::ExpiryOverflow,
            IssueError::Randomness,
        ]
        .iter()
        .map(|e| MintError::Issue(*e).to_string()),
    );
    common::assert_distinct_messages(&mint_messages);
}

/// The in-memory store's gauges: its capacity as configured, and its fill (records held,
/// capacity) as it takes records.
#[test]
fn the_memory_store_reports_its_fill() {
    use streamguard::store::{ReplayStore, StoreFill};
    let w = World::new(3, 1);
    assert_eq!(w.store.capacity(), 3);
    assert!(w.store.is_empty());
    assert_eq!(
        w.store.fill(),
        StoreFill {
            records: Some(0),
            capacity: Some(3)
        }
    );
    w.mint(&call(CALL), T0).unwrap();
    w.mint(&call(OTHER_CALL), T0).unwrap();
    assert!(!w.store.is_empty());
    assert_eq!(w.store.len(), 2);
    assert_eq!(
        w.store.fill(),
        StoreFill {
            records: Some(2),
            capacity: Some(3)
        }
    );
}
