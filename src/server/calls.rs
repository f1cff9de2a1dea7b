//! The verified webhooks of recent calls, kept for their token's lifetime so that the
//! handler of the call's stream learns its `From`, `To` ... (on the instance that answered the
//! webhook). Bounded by [`DEFAULT_CALL_CONTEXTS`]: the oldest is dropped first. A
//! convenience, not security state: losing an entry loses only the context.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::limits::DEFAULT_CALL_CONTEXTS;
use crate::sid::CallSid;
use crate::time::UnixTime;
use crate::webhook::Verified;

#[derive(Default)]
struct Kept {
    by_call: HashMap<CallSid, (Arc<Verified>, UnixTime, u64)>,
    /// Insertion order (with the entry's sequence number, so an entry taken or replaced since
    /// is recognised and skipped), for dropping the oldest and the expired.
    order: VecDeque<(CallSid, u64)>,
    next: u64,
}

impl Kept {
    /// Whether the oldest in `order` is current and `pred` holds for it.
    fn front_is(&self, pred: impl Fn(UnixTime) -> bool) -> Option<bool> {
        let (call, seq) = self.order.front()?;
        Some(match self.by_call.get(call) {
            Some((_, until, s)) if s == seq => pred(*until),
            // Taken or replaced since: nothing to keep.
            _ => true,
        })
    }

    fn pop_front(&mut self) {
        if let Some((call, seq)) = self.order.pop_front()
            && self.by_call.get(&call).is_some_and(|(_, _, s)| *s == seq)
        {
            self.by_call.remove(&call);
        }
    }
}

pub(crate) struct CallContexts {
    kept: Mutex<Kept>,
    ttl: Duration,
}

impl CallContexts {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            kept: Mutex::new(Kept::default()),
            ttl,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps the verified webhook of a call that was just answered.
    pub(crate) fn remember(&self, call: &Verified, now: UnixTime) {
        let mut kept = self.lock();
        // Expired, taken and replaced entries leave from the front (insertion order is expiry
        // order: the TTL is the same for all).
        while kept.front_is(|until| until <= now) == Some(true) {
            kept.pop_front();
        }
        while kept.by_call.len() >= DEFAULT_CALL_CONTEXTS && !kept.order.is_empty() {
            kept.pop_front();
        }
        let seq = kept.next;
        kept.next = kept.next.wrapping_add(1);
        let entry = (Arc::new(call.clone()), now.saturating_add(self.ttl), seq);
        kept.by_call.insert(call.call_sid, entry);
        kept.order.push_back((call.call_sid, seq));
    }

    /// Takes the verified webhook of `call`, if this instance answered it within the TTL.
    pub(crate) fn take(&self, call: &CallSid, now: UnixTime) -> Option<Arc<Verified>> {
        let (v, until, _) = self.lock().by_call.remove(call)?;
        (until > now).then_some(v)
    }
}
