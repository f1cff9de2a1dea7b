//! The shared state (`src/replay.rs`): `ReplayGuard` (single use per token, one stream per
//! call, bounded, forgetting only expired entries, atomic under concurrency) and
//! `TokenLedger` (idempotent minting per call within the TTL, bounded).
//!
//! "State unchanged" after a refusal is checked two ways: `len()` did not move, and the call
//! that was refused can still be redeemed afterwards with a fresh token (so the refusal did
//! not record it).
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

use common::{ACCOUNT, CALL, OTHER_ACCOUNT, OTHER_CALL, T0, TTL, account, call, keyset};
use ring::rand::SystemRandom;
use streamguard::limits::DEFAULT_CALL_MEMORY;
use streamguard::replay::{MintError, ReplayError, ReplayGuard, TokenLedger};
use streamguard::secret::KeySet;
use streamguard::sid::{AccountSid, CallSid};
use streamguard::time::UnixTime;
use streamguard::token::{Claims, IssueError, TokenError, verify};

/// Claims of a real token for (ACCOUNT, `call`) issued at `issued` with nonce `n`, obtained
/// through `verify` as the session obtains them.
fn claims(keys: &KeySet, c: &CallSid, issued: UnixTime, n: u64) -> Claims {
    let a = account(ACCOUNT);
    let t = common::token_for(keys, &a, c, issued, n);
    verify(keys, t.as_str(), &a, c, issued).unwrap()
}

#[test]
fn a_token_redeems_once() {
    let keys = keyset(1);
    let guard = ReplayGuard::default();
    let c = call(CALL);
    let cl = claims(&keys, &c, T0, 1);
    assert!(guard.is_empty());
    assert_eq!(guard.redeem(&cl, &c, T0), Ok(()));
    assert_eq!(guard.len(), 1);
    for later in [T0, common::plus_ms(T0, 1), common::plus_ms(T0, 59_999)] {
        assert_eq!(guard.redeem(&cl, &c, later), Err(ReplayError::TokenReused));
        assert_eq!(guard.len(), 1);
    }
}

#[test]
fn a_second_token_for_the_same_call_is_refused() {
    let keys = keyset(1);
    let guard = ReplayGuard::default();
    let c = call(CALL);
    assert_eq!(guard.redeem(&claims(&keys, &c, T0, 1), &c, T0), Ok(()));
    // A fresh token (fresh nonce), even one issued later, for the same call.
    let second = claims(&keys, &c, common::plus_ms(T0, 10), 2);
    assert_eq!(
        guard.redeem(&second, &c, common::plus_ms(T0, 10)),
        Err(ReplayError::CallAlreadyStreamed)
    );
    assert_eq!(guard.len(), 1);
    // The refused token's nonce was not recorded: it still redeems for a call that has not
    // streamed. (A token is bound to its call by the MAC; the guard itself only sees claims.)
    let other = call(OTHER_CALL);
    assert_eq!(
        guard.redeem(&second, &other, common::plus_ms(T0, 10)),
        Ok(())
    );
    assert_eq!(guard.len(), 2);
}

#[test]
fn the_used_token_is_refused_for_another_call_too() {
    let keys = keyset(1);
    let guard = ReplayGuard::default();
    let c = call(CALL);
    let cl = claims(&keys, &c, T0, 1);
    assert_eq!(guard.redeem(&cl, &c, T0), Ok(()));
    let other = call(OTHER_CALL);
    assert_eq!(guard.redeem(&cl, &other, T0), Err(ReplayError::TokenReused));
    assert_eq!(guard.len(), 1);
    // OTHER_CALL was not recorded by the refusal.
    assert_eq!(
        guard.redeem(&claims(&keys, &other, T0, 2), &other, T0),
        Ok(())
    );
}

/// The nonce is remembered until the token's expiry and forgotten from then on (a token
/// cannot verify from its expiry on, so nothing is lost).
#[test]
fn nonce_is_forgotten_only_at_token_expiry() {
    let keys = keyset(1);
    let guard = ReplayGuard::new(16, Duration::from_secs(1));
    let cl = claims(&keys, &call(CALL), T0, 1);
    let expiry = cl.expires_at;
    assert_eq!(expiry, common::after(T0, TTL));
    assert_eq!(guard.redeem(&cl, &call(CALL), T0), Ok(()));
    // Each probe uses a call that has never streamed, so only the nonce can refuse it.
    let cases: &[(UnixTime, u64, Result<(), ReplayError>)] = &[
        (common::plus_ms(T0, 1), 100, Err(ReplayError::TokenReused)),
        (
            common::before(expiry, Duration::from_millis(1)),
            101,
            Err(ReplayError::TokenReused),
        ),
        (expiry, 102, Ok(())),
    ];
    for (now, call_n, expected) in cases {
        let fresh_call = common::nth_call(*call_n);
        assert_eq!(guard.redeem(&cl, &fresh_call, *now), *expected, "{now:?}");
    }
}

/// A call is remembered for `call_memory` after redemption, or until its token expires if
/// that is later.
#[test]
fn call_is_forgotten_only_after_call_memory_or_token_expiry() {
    let keys = keyset(1);
    // call_memory longer than the token TTL: the memory decides.
    let memory = Duration::from_secs(600);
    let guard = ReplayGuard::new(16, memory);
    let c = call(CALL);
    assert_eq!(guard.redeem(&claims(&keys, &c, T0, 1), &c, T0), Ok(()));
    let until = common::after(T0, memory);
    let mut n = 10;
    for (now, expected) in [
        (
            common::after(T0, TTL),
            Err(ReplayError::CallAlreadyStreamed),
        ),
        (
            common::before(until, Duration::from_millis(1)),
            Err(ReplayError::CallAlreadyStreamed),
        ),
        (until, Ok(())),
    ] {
        n += 1;
        // A fresh token issued at `now`, so it verifies then.
        let fresh = claims(&keys, &c, now, n);
        assert_eq!(guard.redeem(&fresh, &c, now), expected, "{now:?}");
    }

    // call_memory shorter than the token TTL: the token's expiry decides.
    let guard = ReplayGuard::new(16, Duration::from_secs(5));
    assert_eq!(guard.redeem(&claims(&keys, &c, T0, 1), &c, T0), Ok(()));
    let expiry = common::after(T0, TTL);
    for (now, expected) in [
        (
            common::after(T0, Duration::from_secs(30)),
            Err(ReplayError::CallAlreadyStreamed),
        ),
        (
            common::before(expiry, Duration::from_millis(1)),
            Err(ReplayError::CallAlreadyStreamed),
        ),
        (expiry, Ok(())),
    ] {
        n += 1;
        let fresh = claims(&keys, &c, now, n);
        assert_eq!(guard.redeem(&fresh, &c, now), expected, "{now:?}");
    }
    assert_eq!(DEFAULT_CALL_MEMORY, Duration::from_secs(600));
}

#[test]
fn full_guard_refuses_and_changes_nothing() {
    let keys = keyset(1);
    let guard = ReplayGuard::new(2, Duration::from_secs(1));
    let (c1, c2, c3) = (
        common::nth_call(1),
        common::nth_call(2),
        common::nth_call(3),
    );
    assert_eq!(guard.redeem(&claims(&keys, &c1, T0, 1), &c1, T0), Ok(()));
    assert_eq!(guard.redeem(&claims(&keys, &c2, T0, 2), &c2, T0), Ok(()));
    let third = claims(&keys, &c3, T0, 3);
    for now in [
        T0,
        common::before(common::after(T0, TTL), Duration::from_millis(1)),
    ] {
        assert_eq!(guard.redeem(&third, &c3, now), Err(ReplayError::Full));
        assert_eq!(guard.len(), 2);
    }
    // The live entries were not evicted to make room: c1's token is still single use and
    // c1 still counts as streamed.
    assert_eq!(
        guard.redeem(&claims(&keys, &c1, T0, 1), &c1, T0),
        Err(ReplayError::TokenReused)
    );
    assert_eq!(
        guard.redeem(&claims(&keys, &c1, T0, 9), &c1, T0),
        Err(ReplayError::CallAlreadyStreamed)
    );
    // Once the entries have expired there is room again, and the refused token was not
    // recorded: it redeems now.
    let later = common::after(T0, TTL);
    assert_eq!(guard.redeem(&third, &c3, later), Ok(()));
    assert_eq!(guard.len(), 1);
}

#[test]
fn zero_capacity_refuses_everything() {
    let keys = keyset(1);
    let guard = ReplayGuard::new(0, DEFAULT_CALL_MEMORY);
    let c = call(CALL);
    assert_eq!(
        guard.redeem(&claims(&keys, &c, T0, 1), &c, T0),
        Err(ReplayError::Full)
    );
    assert!(guard.is_empty());
}

/// N threads redeem the same token for the same call at the same instant (released together
/// by a barrier); exactly one wins and every other one is told `TokenReused`. Repeated over
/// many rounds, each with a fresh token and a fresh call, on one shared guard.
#[test]
fn concurrent_redemptions_of_one_token_have_exactly_one_winner() {
    const THREADS: usize = 16;
    const ROUNDS: u64 = 200;
    let keys = keyset(1);
    let guard = ReplayGuard::default();
    let barrier = Barrier::new(THREADS);
    for round in 0..ROUNDS {
        let c = common::nth_call(round);
        let cl = claims(&keys, &c, T0, round);
        let results: Vec<Result<(), ReplayError>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        guard.redeem(&cl, &c, T0)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {results:?}");
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Ok(()) | Err(ReplayError::TokenReused))),
            "round {round}: {results:?}"
        );
    }
    assert_eq!(guard.len(), usize::try_from(ROUNDS).unwrap());
}

/// N threads redeem N different tokens for the same call at the same instant: exactly one
/// stream opens, the rest are told `CallAlreadyStreamed`.
#[test]
fn concurrent_tokens_for_one_call_open_exactly_one_stream() {
    const THREADS: u64 = 16;
    const ROUNDS: u64 = 100;
    let keys = keyset(1);
    let guard = ReplayGuard::default();
    let barrier = Barrier::new(usize::try_from(THREADS).unwrap());
    for round in 0..ROUNDS {
        let c = common::nth_call(round);
        let all: Vec<Claims> = (0..THREADS)
            .map(|i| claims(&keys, &c, T0, round * THREADS + i))
            .collect();
        let results: Vec<Result<(), ReplayError>> = std::thread::scope(|s| {
            let handles: Vec<_> = all
                .iter()
                .map(|cl| {
                    let (barrier, guard, c) = (&barrier, &guard, &c);
                    s.spawn(move || {
                        barrier.wait();
                        guard.redeem(cl, c, T0)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Ok(()) | Err(ReplayError::CallAlreadyStreamed))),
            "{results:?}"
        );
    }
}

/// Many threads redeeming distinct tokens for distinct calls all succeed.
#[test]
fn concurrent_distinct_redemptions_all_succeed() {
    const THREADS: u64 = 16;
    const PER_THREAD: u64 = 100;
    let keys = keyset(1);
    let guard = ReplayGuard::default();
    let barrier = Barrier::new(usize::try_from(THREADS).unwrap());
    let work: Vec<Vec<(CallSid, Claims)>> = (0..THREADS)
        .map(|t| {
            (0..PER_THREAD)
                .map(|i| {
                    let n = t * PER_THREAD + i;
                    let c = common::nth_call(n);
                    let cl = claims(&keys, &c, T0, n);
                    (c, cl)
                })
                .collect()
        })
        .collect();
    std::thread::scope(|s| {
        for items in &work {
            let (barrier, guard) = (&barrier, &guard);
            s.spawn(move || {
                barrier.wait();
                for (c, cl) in items {
                    assert_eq!(guard.redeem(cl, c, T0), Ok(()), "{c}");
                }
            });
        }
    });
    assert_eq!(guard.len(), usize::try_from(THREADS * PER_THREAD).unwrap());
}

// ---------------------------------------------------------------------------------------------
// TokenLedger
// ---------------------------------------------------------------------------------------------

fn mint(
    ledger: &TokenLedger,
    keys: &KeySet,
    a: &AccountSid,
    c: &CallSid,
    now: UnixTime,
) -> Result<String, MintError> {
    ledger
        .mint(keys, a, c, now, TTL, &SystemRandom::new())
        .map(|t| t.as_str().to_owned())
}

#[test]
fn ledger_returns_the_same_token_within_ttl_and_a_new_one_after() {
    let keys = keyset(1);
    let ledger = TokenLedger::default();
    let (a, c) = (account(ACCOUNT), call(CALL));
    let first = mint(&ledger, &keys, &a, &c, T0).unwrap();
    assert!(verify(&keys, &first, &a, &c, T0).is_ok());
    for now in [
        T0,
        common::plus_ms(T0, 1),
        common::before(common::after(T0, TTL), Duration::from_millis(1)),
    ] {
        assert_eq!(mint(&ledger, &keys, &a, &c, now).unwrap(), first, "{now:?}");
        assert_eq!(ledger.len(), 1);
    }
    // The token expires at T0 + TTL; from then on a new one is minted.
    let expiry = common::after(T0, TTL);
    assert_eq!(
        verify(&keys, &first, &a, &c, expiry).map(|_| ()),
        Err(TokenError::Expired)
    );
    let second = mint(&ledger, &keys, &a, &c, expiry).unwrap();
    assert_ne!(second, first);
    assert!(verify(&keys, &second, &a, &c, expiry).is_ok());
    assert_eq!(ledger.len(), 1);
}

#[test]
fn ledger_mints_distinct_tokens_per_call_and_account() {
    let keys = keyset(1);
    let ledger = TokenLedger::default();
    let pairs = [
        (ACCOUNT, CALL),
        (ACCOUNT, OTHER_CALL),
        (OTHER_ACCOUNT, CALL),
        (OTHER_ACCOUNT, OTHER_CALL),
    ];
    let tokens: Vec<String> = pairs
        .iter()
        .map(|(a, c)| mint(&ledger, &keys, &account(a), &call(c), T0).unwrap())
        .collect();
    for (i, t) in tokens.iter().enumerate() {
        for u in &tokens[i + 1..] {
            assert_ne!(t, u);
        }
        // Each is bound to its own pair.
        let (a, c) = pairs[i];
        assert!(verify(&keys, t, &account(a), &call(c), T0).is_ok());
    }
    assert_eq!(ledger.len(), 4);
}

#[test]
fn full_ledger_refuses_new_calls_but_still_answers_known_ones() {
    let keys = keyset(1);
    let ledger = TokenLedger::new(2);
    let a = account(ACCOUNT);
    let (c1, c2, c3) = (
        common::nth_call(1),
        common::nth_call(2),
        common::nth_call(3),
    );
    let t1 = mint(&ledger, &keys, &a, &c1, T0).unwrap();
    mint(&ledger, &keys, &a, &c2, T0).unwrap();
    assert_eq!(mint(&ledger, &keys, &a, &c3, T0), Err(MintError::Full));
    assert_eq!(ledger.len(), 2);
    // A known call still gets its token back while the ledger is full.
    assert_eq!(mint(&ledger, &keys, &a, &c1, T0).unwrap(), t1);
    // After expiry there is room again.
    let later = common::after(T0, TTL);
    assert!(mint(&ledger, &keys, &a, &c3, later).is_ok());
    assert_eq!(ledger.len(), 1);
}

#[test]
fn ledger_issue_errors_record_nothing() {
    let keys = keyset(1);
    let ledger = TokenLedger::default();
    let (a, c) = (account(ACCOUNT), call(CALL));
    let rng = SystemRandom::new();
    for ttl in [Duration::ZERO, Duration::from_secs(3601)] {
        assert_eq!(
            ledger.mint(&keys, &a, &c, T0, ttl, &rng).map(|_| ()),
            Err(MintError::Issue(IssueError::TtlOutOfRange))
        );
        assert!(ledger.is_empty());
    }
}
