//! The in-memory store (the default): one map of [`CallRecord`]s behind one mutex, in this
//! process only. Nothing to set up; records do not survive a restart (tokens minted before one
//! are then refused, never accepted twice) and are not shared with other instances (use the
//! Redis store for several instances).
//!
//! Bounded: at most `capacity` records. A record is forgotten only once it has expired, never
//! early (forgetting a live record would re-open a replay); when the map is full of live
//! records, minting fails closed ([`StoreError::Full`]). Redemption never adds a record, so a
//! full store still lets minted calls stream. Each operation is a few map lookups under the
//! lock, with no await inside, so "exactly one of N concurrent redemptions wins" follows from
//! the lock.
//!
//! # Size
//!
//! A record is 64 bytes in the map (its 16-byte [`CallId`], the live token's key id, expiry
//! and sealed nonce, the stream count and the time it is kept until), plus 24 bytes in one of
//! two expiry queues. A record's keep-until time is always the time of its last mint plus the
//! token TTL, or of its last redemption plus the call memory, so each queue is in time order
//! and purging pops from its front (an entry whose record was extended since is skipped). The
//! queues assume the clock does not go back; if it does, records are forgotten late, never
//! early.

use std::collections::{HashMap, VecDeque};

use super::{
    CallId, CallRecord, LiveToken, MintDecision, Presented, RedeemRefusal, ReplayStore,
    SEALED_BYTES, StoreError, StoreFill, StoreFuture, StorePolicy,
};
use crate::secret::KeyId;
use crate::sync::{Mutex, MutexGuard};
use crate::time::UnixTime;

/// A [`CallRecord`] as the map holds it: no `Option` tag (an absent live token has expiry 0,
/// which is never live).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Compact {
    key_id: KeyId,
    streams: u32,
    live_expires_ms: u64,
    keep_until_ms: u64,
    sealed: [u8; SEALED_BYTES],
}

impl From<CallRecord> for Compact {
    fn from(r: CallRecord) -> Self {
        let (key_id, live_expires_ms, sealed) = match r.live {
            Some(l) => (l.key_id, l.expires_at.as_millis(), l.sealed),
            None => (KeyId([0; 4]), 0, [0; SEALED_BYTES]),
        };
        Self {
            key_id,
            streams: r.streams,
            live_expires_ms,
            keep_until_ms: r.keep_until.as_millis(),
            sealed,
        }
    }
}

impl From<Compact> for CallRecord {
    fn from(c: Compact) -> Self {
        let live = (c.live_expires_ms != 0).then_some(LiveToken {
            key_id: c.key_id,
            expires_at: UnixTime::from_millis(c.live_expires_ms),
            sealed: c.sealed,
        });
        Self {
            live,
            streams: c.streams,
            keep_until: UnixTime::from_millis(c.keep_until_ms),
        }
    }
}

#[derive(Default)]
struct Records {
    map: HashMap<CallId, Compact>,
    /// Records kept until a token expiry, in time order.
    token_queue: VecDeque<(u64, CallId)>,
    /// Records kept until a call memory ends, in time order.
    memory_queue: VecDeque<(u64, CallId)>,
}

impl Records {
    fn purge_queue(
        map: &mut HashMap<CallId, Compact>,
        queue: &mut VecDeque<(u64, CallId)>,
        now: u64,
    ) {
        while let Some(&(at, id)) = queue.front() {
            if at > now {
                break;
            }
            queue.pop_front();
            if map.get(&id).is_some_and(|r| r.keep_until_ms <= now) {
                map.remove(&id);
            }
        }
    }

    fn purge(&mut self, now: UnixTime) {
        let now = now.as_millis();
        Self::purge_queue(&mut self.map, &mut self.token_queue, now);
        Self::purge_queue(&mut self.map, &mut self.memory_queue, now);
    }
}

/// Single-use records in this process's memory.
pub struct MemoryStore {
    records: Mutex<Records>,
    capacity: usize,
    policy: StorePolicy,
}

impl std::fmt::Debug for MemoryStore {
    /// Counts only: the records are nobody's business (and there may be a million).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("records", &self.len())
            .field("capacity", &self.capacity)
            .field("policy", &self.policy)
            .finish()
    }
}

impl MemoryStore {
    /// A store holding at most `capacity` records, applying `policy`.
    pub fn new(capacity: usize, policy: StorePolicy) -> Self {
        Self {
            records: Mutex::new(Records::default()),
            capacity,
            policy,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Records> {
        // Nothing panics while holding this lock; if something ever did, the map is still
        // consistent (each operation is a few inserts), so carrying on is safe.
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn apply<T>(
        &self,
        id: CallId,
        now: UnixTime,
        may_add: bool,
        rule: impl FnOnce(Option<CallRecord>) -> (Option<CallRecord>, T),
    ) -> Result<T, StoreError> {
        let mut records = self.lock();
        records.purge(now);
        let old = records.map.get(&id).copied().map(CallRecord::from);
        if old.is_none() && may_add && records.map.len() >= self.capacity {
            return Err(StoreError::Full);
        }
        let (new, out) = rule(old);
        match new {
            Some(r) if Some(r) != old => {
                let extended = old.is_none_or(|o| o.keep_until != r.keep_until);
                records.map.insert(id, Compact::from(r));
                if extended {
                    // A keep-until is a token expiry unless a redemption just set it.
                    let queue = if r.streams > old.map_or(0, |o| o.streams) {
                        &mut records.memory_queue
                    } else {
                        &mut records.token_queue
                    };
                    queue.push_back((r.keep_until.as_millis(), id));
                }
            }
            Some(_) => {}
            None => {
                records.map.remove(&id);
            }
        }
        Ok(out)
    }

    /// [`CallRecord::mint`], synchronously.
    pub fn mint_now(
        &self,
        call: CallId,
        candidate: LiveToken,
        now: UnixTime,
    ) -> Result<MintDecision, StoreError> {
        let policy = self.policy;
        self.apply(call, now, true, |r| {
            CallRecord::mint(r, candidate, now, &policy)
        })
    }

    /// [`CallRecord::redeem`], synchronously.
    pub fn redeem_now(
        &self,
        call: CallId,
        presented: &Presented,
        now: UnixTime,
    ) -> Result<Result<(), RedeemRefusal>, StoreError> {
        let policy = self.policy;
        self.apply(call, now, false, |r| {
            CallRecord::redeem(r, presented, now, &policy)
        })
    }

    /// The record of `call` at `now`, if one is kept.
    pub fn record(&self, call: CallId, now: UnixTime) -> Option<CallRecord> {
        let mut records = self.lock();
        records.purge(now);
        records.map.get(&call).copied().map(CallRecord::from)
    }

    /// Records held (live or not yet purged).
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Most records it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl ReplayStore for MemoryStore {
    fn mint(
        &self,
        call: CallId,
        candidate: LiveToken,
        now: UnixTime,
    ) -> StoreFuture<'_, MintDecision> {
        Box::pin(std::future::ready(self.mint_now(call, candidate, now)))
    }

    fn redeem(
        &self,
        call: CallId,
        presented: Presented,
        now: UnixTime,
    ) -> StoreFuture<'_, Result<(), RedeemRefusal>> {
        Box::pin(std::future::ready(self.redeem_now(call, &presented, now)))
    }

    fn fill(&self) -> StoreFill {
        StoreFill {
            records: Some(u64::try_from(self.len()).unwrap_or(u64::MAX)),
            capacity: Some(u64::try_from(self.capacity).unwrap_or(u64::MAX)),
        }
    }
}
