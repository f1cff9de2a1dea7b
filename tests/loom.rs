//! Exhaustive concurrency checks with [loom] of the two pieces of state connections share:
//! the in-memory replay store (`src/store/memory.rs`) and the connection slots
//! (`src/server/capacity.rs`). Built with `--cfg streamguard_loom`, the crate takes its `Mutex`
//! from loom (`src/sync.rs`), and each test below runs its threads in every interleaving loom
//! can tell apart, the real code and nothing else inside them:
//!
//! - of two or three concurrent redemptions of one token, exactly one wins, and the record
//!   counts one stream;
//! - concurrent mints for one call agree on one token, which is the one on record; a mint
//!   racing the redemption never gives out a token that opens a second stream;
//! - the slot counters never leak or release twice: after any interleaving of
//!   `Capacity::try_pending`, `PendingPermit::into_stream`, evictions and drops, the counts are
//!   exactly the slots still held, and 0 once every permit is gone.
//!
//! The eviction signal is a tokio oneshot, which loom does not model; it is only sent, never
//! awaited, here. Each test prints how many interleavings it ran and fails below a floor.
//! They have teeth: releasing `MemoryStore`'s lock between reading a record and writing it
//! back fails the redemption and mint tests, and releasing `into_stream`'s between the cap
//! check and the increment fails the stream-slot test (both tried by hand).
//!
//! ```sh
//! RUSTFLAGS="--cfg streamguard_loom" CARGO_TARGET_DIR=target/loom cargo test --release --test loom
//! ```
#![cfg(streamguard_loom)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use loom::thread;
use streamguard::invariants::{ACCOUNT, AUTH_TOKEN, NOW, TOKEN_KEY};
use streamguard::secret::{AuthToken, KeySet, TokenKey};
use streamguard::server::capacity::Capacity;
use streamguard::sid::{AccountSid, CallSid};
use streamguard::store::{
    self, CallId, LiveToken, MemoryStore, MintDecision, MintRefusal, Presented, RedeemRefusal,
    StoreKey, StorePolicy,
};
use streamguard::token;
use streamguard::upgrade::UpgradeReject;

/// Runs `f` in every interleaving loom finds, prints how many there were, and fails if there
/// were fewer than `floor` (a model that cannot branch checks nothing).
fn explore(name: &str, floor: usize, f: impl Fn() + Sync + Send + 'static) {
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let started = Instant::now();
    loom::model(move || {
        counted.fetch_add(1, Ordering::Relaxed);
        f();
    });
    let runs = runs.load(Ordering::Relaxed);
    eprintln!("{name}: {runs} interleavings in {:.2?}", started.elapsed());
    assert!(runs >= floor, "{name}: only {runs} interleavings explored");
}

const TTL: Duration = Duration::from_secs(60);

const POLICY: StorePolicy = StorePolicy {
    token_ttl: TTL,
    call_memory: Duration::from_secs(14_400),
    streams_per_call: 1,
};

/// One call's tokens, computed once outside the models (all pure).
struct Call {
    id: CallId,
    /// Candidates with distinct nonces, as concurrent webhooks would offer them.
    candidates: [LiveToken; 3],
    /// What redeeming the first candidate's token presents: its text rebuilt from the record
    /// ([`store::token_of`]), verified ([`token::verify`]), sealed ([`store::presented`]).
    presented: Presented,
}

fn call() -> Call {
    let keys = KeySet::single(TokenKey::from_bytes(&TOKEN_KEY).unwrap());
    let store_key = StoreKey::derive(&AuthToken::new(AUTH_TOKEN).unwrap());
    let account = AccountSid::parse(ACCOUNT).unwrap();
    let call = CallSid::parse("CA00000000000000000000000000000001").unwrap();
    let candidates = [1u8, 2, 3].map(|n| {
        store::candidate_with_nonce(&store_key, &keys, &account, &call, NOW, TTL, [n; 16]).unwrap()
    });
    let text = store::token_of(&store_key, &keys, &account, &call, &candidates[0]).unwrap();
    let claims = token::verify(&keys, text.as_str(), &account, &call, NOW).unwrap();
    Call {
        id: store_key.call_id(&account, &call),
        candidates,
        presented: store::presented(&store_key, &account, &call, &claims),
    }
}

fn redeem_concurrently(redeemers: usize, floor: usize) {
    let c = Arc::new(call());
    explore(
        &format!("{redeemers} concurrent redemptions"),
        floor,
        move || {
            let store = Arc::new(MemoryStore::new(16, POLICY));
            let minted = store.mint_now(c.id, c.candidates[0], NOW).unwrap();
            assert_eq!(minted, MintDecision::Issued(c.candidates[0]));
            let handles: Vec<_> = (0..redeemers)
                .map(|_| {
                    let (store, c) = (Arc::clone(&store), Arc::clone(&c));
                    thread::spawn(move || store.redeem_now(c.id, &c.presented, NOW).unwrap())
                })
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let wins = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(wins, 1, "{results:?}");
            for r in &results {
                assert!(
                    matches!(r, Ok(()) | Err(RedeemRefusal::TokenReused)),
                    "{results:?}"
                );
            }
            let record = store.record(c.id, NOW).unwrap();
            assert_eq!((record.streams, record.live), (1, None));
        },
    );
}

/// Of two concurrent redemptions of one token, exactly one wins; the loser hears "replayed".
#[test]
fn one_of_two_concurrent_redemptions_wins() {
    redeem_concurrently(2, 4);
}

/// The same with three.
#[test]
fn one_of_three_concurrent_redemptions_wins() {
    redeem_concurrently(3, 200);
}

/// Concurrent mints for one call (Twilio's webhook and its retry, or a replay), each with a
/// candidate of its own: exactly one candidate is issued, every mint returns that one, and
/// it is the live token on record.
#[test]
fn concurrent_mints_for_one_call_agree_on_one_token() {
    let c = Arc::new(call());
    explore("concurrent mints", 4, move || {
        let store = Arc::new(MemoryStore::new(16, POLICY));
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let (store, c) = (Arc::clone(&store), Arc::clone(&c));
                thread::spawn(move || store.mint_now(c.id, c.candidates[i], NOW).unwrap())
            })
            .collect();
        let decisions: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let issued: Vec<LiveToken> = decisions
            .iter()
            .filter_map(|d| match d {
                MintDecision::Issued(l) => Some(*l),
                _ => None,
            })
            .collect();
        assert_eq!(issued.len(), 1, "{decisions:?}");
        let token = issued[0];
        assert!(c.candidates[..2].contains(&token));
        for d in &decisions {
            assert!(
                matches!(d, MintDecision::Issued(l) | MintDecision::Reused(l) if *l == token),
                "{decisions:?}"
            );
        }
        let record = store.record(c.id, NOW).unwrap();
        assert_eq!((record.live, record.streams), (Some(token), 0));
        assert_eq!(store.len(), 1);
    });
}

/// A retried webhook racing the redemption of the call's token: either the mint comes first
/// and hands out the same token (which then redeems), or the redemption comes first and the
/// mint is refused. Never a second token that could open a second stream.
#[test]
fn a_mint_racing_the_redemption_gives_out_no_second_token() {
    let c = Arc::new(call());
    explore("mint racing redemption", 4, move || {
        let store = Arc::new(MemoryStore::new(16, POLICY));
        store.mint_now(c.id, c.candidates[0], NOW).unwrap();
        let minter = {
            let (store, c) = (Arc::clone(&store), Arc::clone(&c));
            thread::spawn(move || store.mint_now(c.id, c.candidates[1], NOW).unwrap())
        };
        let redeemer = {
            let (store, c) = (Arc::clone(&store), Arc::clone(&c));
            thread::spawn(move || store.redeem_now(c.id, &c.presented, NOW).unwrap())
        };
        let minted = minter.join().unwrap();
        assert_eq!(redeemer.join().unwrap(), Ok(()));
        assert!(
            matches!(
                minted,
                MintDecision::Reused(l) if l == c.candidates[0]
            ) || minted == MintDecision::Refused(MintRefusal::CallAlreadyStreamed),
            "{minted:?}"
        );
        let record = store.record(c.id, NOW).unwrap();
        assert_eq!((record.streams, record.live), (1, None));
    });
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, last])
}

/// Two connections from one address race for one stream slot (`--max-streams 1`), each
/// reserving it and then hanging up; a third holds a pending slot meanwhile. Whatever the
/// order, every slot taken is given back exactly once: the counts equal the permits still
/// held, and are 0 when none is.
#[test]
fn stream_slots_are_neither_leaked_nor_released_twice() {
    explore("stream slots", 100, || {
        let cap = Arc::new(Capacity::new(8, 8, 1));
        let waiting = cap.try_pending(ip(9)).unwrap();
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let cap = Arc::clone(&cap);
                thread::spawn(move || match cap.try_pending(ip(1)) {
                    Ok(permit) => match permit.into_stream() {
                        // Authenticated: the stream runs, then ends.
                        Ok(slot) => {
                            assert!(cap.active() <= 1);
                            drop(slot);
                            "streamed"
                        }
                        // Every stream slot busy: the connection closes, its token unspent.
                        Err(permit) => {
                            drop(permit);
                            "streams full at authentication"
                        }
                    },
                    Err(UpgradeReject::StreamsFull) => "streams full at the upgrade",
                    Err(e) => panic!("unexpected refusal {e:?}"),
                })
            })
            .collect();
        let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(outcomes.contains(&"streamed"), "{outcomes:?}");
        assert_eq!((cap.pending(), cap.active()), (1, 0), "{outcomes:?}");
        drop(waiting);
        assert_eq!((cap.pending(), cap.active()), (0, 0));
    });
}

/// A stream slot held throughout while other connections come and go: a double release by
/// any of them would show as a count below the one slot still held.
#[test]
fn a_held_stream_slot_stays_counted_while_others_come_and_go() {
    explore("held slot", 30, || {
        let cap = Arc::new(Capacity::new(8, 8, 2));
        let held = cap.try_pending(ip(1)).unwrap().into_stream().unwrap();
        let streamer = {
            let cap = Arc::clone(&cap);
            thread::spawn(move || {
                let slot = cap.try_pending(ip(2)).ok()?.into_stream().ok()?;
                drop(slot);
                Some(())
            })
        };
        let visitor = {
            let cap = Arc::clone(&cap);
            thread::spawn(move || drop(cap.try_pending(ip(3))))
        };
        assert_eq!(streamer.join().unwrap(), Some(()));
        visitor.join().unwrap();
        assert_eq!((cap.pending(), cap.active()), (0, 1));
        drop(held);
        assert_eq!((cap.pending(), cap.active()), (0, 0));
    });
}

/// `--max-pending 1`: two newcomers race the one pending connection, each evicting the
/// oldest to get in, while that connection authenticates or hangs up. Never more pending than
/// the cap, every eviction counted once, and nothing left once all are gone.
#[test]
fn evictions_racing_authentication_leave_no_slot_behind() {
    explore("evictions", 5_000, || {
        let cap = Arc::new(Capacity::new(1, 1, 4));
        let first = cap.try_pending(ip(1)).unwrap();
        let newcomers: Vec<_> = [2, 3]
            .into_iter()
            .map(|last| {
                let cap = Arc::clone(&cap);
                thread::spawn(move || {
                    let permit = cap.try_pending(ip(last)).unwrap();
                    assert!(cap.pending() <= 1);
                    drop(permit);
                })
            })
            .collect();
        // The first connection's token verifies now: chosen for eviction or not, it leaves the
        // pending set with a stream slot.
        let slot = first.into_stream().unwrap();
        for h in newcomers {
            h.join().unwrap();
        }
        assert_eq!((cap.pending(), cap.active()), (0, 1));
        assert!(cap.evicted() <= 2);
        drop(slot);
        assert_eq!((cap.pending(), cap.active()), (0, 0));
    });
}
