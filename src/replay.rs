//! The only state shared between connections: what has been minted and what has been used.
//!
//! - [`TokenLedger`] makes minting idempotent per call: a retried or replayed webhook for a
//!   call whose token is still live gets the identical token back, never a second valid one.
//! - [`ReplayGuard`] makes a token single use and allows one stream per call: a redeemed
//!   nonce is remembered until the token expires, a redeemed CallSid for
//!   [`DEFAULT_CALL_MEMORY`] (or until the token expires,
//!   whichever is later).
//!
//! Both take `now` as an argument, hold a bounded number of entries, forget an entry only once
//! it has expired, and refuse new work when full of live entries (fail closed: forgetting a
//! live entry early would re-open a replay). Each is one mutex around plain maps; every
//! operation is a few map lookups under the lock, so "exactly one of N concurrent
//! redemptions wins" follows from the lock, with no await inside.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use ring::rand::SecureRandom;

use crate::limits::{
    DEFAULT_CALL_MEMORY, DEFAULT_LEDGER_CAPACITY, DEFAULT_REPLAY_CAPACITY, TOKEN_NONCE_BYTES,
};
use crate::secret::{KeySet, StreamToken};
use crate::sid::{AccountSid, CallSid};
use crate::time::UnixTime;
use crate::token::{Claims, IssueError, issue};

/// A map whose entries expire, with an index by expiry so purging is cheap.
#[derive(Debug)]
struct ExpiryMap<K, V> {
    entries: HashMap<K, (V, UnixTime, u64)>,
    by_expiry: BTreeMap<(UnixTime, u64), K>,
    next_seq: u64,
}

impl<K: Eq + Hash + Clone, V> ExpiryMap<K, V> {
    fn new() -> Self {
        Self {
            entries: HashMap::new(),
            by_expiry: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Drops every entry whose expiry is at or before `now`.
    fn purge(&mut self, now: UnixTime) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.entries.remove(&key);
        }
    }

    fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(v, _, _)| v)
    }

    fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Inserts or replaces `key`, to be forgotten after `expires_at`.
    fn insert(&mut self, key: K, value: V, expires_at: UnixTime) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        if let Some((_, old_expiry, old_seq)) =
            self.entries.insert(key.clone(), (value, expires_at, seq))
        {
            self.by_expiry.remove(&(old_expiry, old_seq));
        }
        self.by_expiry.insert((expires_at, seq), key);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; if something ever did, the maps are still
    // consistent (each operation is a few inserts), so carrying on is safe.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why a verified token may not open a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayError {
    /// This token (its nonce) has already opened a stream.
    TokenReused,
    /// Another stream of this call has already been opened.
    CallAlreadyStreamed,
    /// The guard is full of live entries; refusing is safer than forgetting one.
    Full,
}

impl ReplayError {
    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenReused => "token_replayed",
            Self::CallAlreadyStreamed => "call_already_streamed",
            Self::Full => "replay_guard_full",
        }
    }
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TokenReused => "token has already been used",
            Self::CallAlreadyStreamed => "call already has had a stream",
            Self::Full => "replay guard is full",
        })
    }
}

impl std::error::Error for ReplayError {}

#[derive(Debug)]
struct GuardState {
    nonces: ExpiryMap<[u8; TOKEN_NONCE_BYTES], ()>,
    calls: ExpiryMap<CallSid, ()>,
}

/// Single use per token, one stream per call. Shared by all connections of a server.
#[derive(Debug)]
pub struct ReplayGuard {
    state: Mutex<GuardState>,
    capacity: usize,
    call_memory: Duration,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::new(DEFAULT_REPLAY_CAPACITY, DEFAULT_CALL_MEMORY)
    }
}

impl ReplayGuard {
    /// A guard holding at most `capacity` redeemed streams, remembering each call for at
    /// least `call_memory`.
    pub fn new(capacity: usize, call_memory: Duration) -> Self {
        Self {
            state: Mutex::new(GuardState {
                nonces: ExpiryMap::new(),
                calls: ExpiryMap::new(),
            }),
            capacity,
            call_memory,
        }
    }

    /// Redeems a verified token for `call` at `now`: succeeds once per token and once per
    /// call. Atomic: of any number of concurrent redemptions of one token, exactly one wins.
    pub fn redeem(
        &self,
        claims: &Claims,
        call: &CallSid,
        now: UnixTime,
    ) -> Result<(), ReplayError> {
        let mut state = lock(&self.state);
        state.nonces.purge(now);
        state.calls.purge(now);
        if state.nonces.contains(&claims.nonce) {
            return Err(ReplayError::TokenReused);
        }
        if state.calls.contains(call) {
            return Err(ReplayError::CallAlreadyStreamed);
        }
        if state.calls.len() >= self.capacity || state.nonces.len() >= self.capacity {
            return Err(ReplayError::Full);
        }
        let call_until = now.saturating_add(self.call_memory).max(claims.expires_at);
        state.nonces.insert(claims.nonce, (), claims.expires_at);
        state.calls.insert(*call, (), call_until);
        Ok(())
    }

    /// Number of calls currently remembered.
    pub fn len(&self) -> usize {
        lock(&self.state).calls.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why the ledger could not hand out a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MintError {
    /// Issuing failed (see [`IssueError`]).
    Issue(IssueError),
    /// The ledger is full of live entries.
    Full,
}

impl fmt::Display for MintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Issue(e) => write!(f, "cannot issue token: {e}"),
            Self::Full => f.write_str("token ledger is full"),
        }
    }
}

impl std::error::Error for MintError {}

/// Idempotent minting: one live token per (account, call).
#[derive(Debug)]
pub struct TokenLedger {
    state: Mutex<ExpiryMap<(AccountSid, CallSid), StreamToken>>,
    capacity: usize,
}

impl Default for TokenLedger {
    fn default() -> Self {
        Self::new(DEFAULT_LEDGER_CAPACITY)
    }
}

impl TokenLedger {
    /// A ledger holding at most `capacity` live tokens.
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(ExpiryMap::new()),
            capacity,
        }
    }

    /// The live token for this call if there is one, otherwise a new one issued with the
    /// current key of `keys`, valid for `ttl` from `now`.
    pub fn mint(
        &self,
        keys: &KeySet,
        account: &AccountSid,
        call: &CallSid,
        now: UnixTime,
        ttl: Duration,
        rng: &dyn SecureRandom,
    ) -> Result<StreamToken, MintError> {
        let mut state = lock(&self.state);
        state.purge(now);
        let id = (*account, *call);
        if let Some(token) = state.get(&id) {
            return Ok(token.clone());
        }
        if state.len() >= self.capacity {
            return Err(MintError::Full);
        }
        let token =
            issue(keys.current(), account, call, now, ttl, rng).map_err(MintError::Issue)?;
        // `issue` succeeded, so `now + ttl` fits.
        state.insert(id, token.clone(), now.saturating_add(ttl));
        Ok(token)
    }

    /// Number of live tokens remembered.
    pub fn len(&self) -> usize {
        lock(&self.state).len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
