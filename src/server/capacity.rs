//! Connection slots: `--max-pending`, `--max-pending-per-ip`, `--max-streams`.
//!
//! A connection takes a [`PendingPermit`] when it is upgraded and holds it until its token has
//! verified, when it reserves a stream slot ([`PendingPermit::into_stream`]) *before* the token
//! is redeemed, so a stream refused for `--max-streams` keeps its token unspent.
//!
//! A full cap does not refuse the newcomer: it closes an older pending connection (1008,
//! `pending_evicted`) and admits the new one.
//! - A full per-address cap (`--max-pending-per-ip`) closes that address's oldest.
//! - A full `--max-pending` closes the oldest pending connection of the address that holds the
//!   most (the oldest of all among equals). When every connection comes from one address (a
//!   proxy in front) that is simply the oldest; when a flood comes from a few addresses, it
//!   pays for itself and a client with one pending connection is the last to go.
//!
//! Addresses are counted by IPv4 /32 and IPv6 /64. Twilio sends `start` one round trip after
//! the upgrade, so to keep a legitimate call out an attacker must open `--max-pending` new
//! upgrades within that time, again and again, from as many addresses as it has pending slots,
//! instead of holding a few sockets open (the upgrade signature is the same for every call and
//! never expires, so one captured upgrade is all the credential such a flood needs). Only
//! `--max-streams` refuses an upgrade outright (`503`): authenticated streams are never
//! evicted.
//!
//! Releasing is done by `Drop`, so no path (error, panic in a handler, shutdown) leaks a slot.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::sync::{Mutex, MutexGuard};
use crate::upgrade::UpgradeReject;

/// The part of a client address that counts as one client: the whole IPv4 address, the /64
/// of an IPv6 address (one host usually holds a whole /64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    /// The key of `ip` (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !u128::from(u64::MAX);
                Self(IpAddr::V6(Ipv6Addr::from(bits)))
            }
        }
    }
}

#[derive(Debug)]
struct Pending {
    client: ClientKey,
    evict: oneshot::Sender<()>,
}

#[derive(Debug, Default)]
struct Counts {
    /// Pending connections by admission order (the smallest is the oldest).
    pending: BTreeMap<u64, Pending>,
    /// Pending connections of each client, by admission order.
    per_client: HashMap<ClientKey, BTreeMap<u64, ()>>,
    active: usize,
    next: u64,
    evicted: u64,
}

impl Counts {
    fn remove_pending(&mut self, seq: u64) -> Option<Pending> {
        let entry = self.pending.remove(&seq)?;
        if let Some(of_client) = self.per_client.get_mut(&entry.client) {
            of_client.remove(&seq);
            if of_client.is_empty() {
                self.per_client.remove(&entry.client);
            }
        }
        Some(entry)
    }

    fn evict(&mut self, seq: u64) {
        if let Some(entry) = self.remove_pending(seq) {
            // The connection may be gone already; then there is nobody to tell.
            let _ = entry.evict.send(());
            self.evicted = self.evicted.saturating_add(1);
        }
    }
}

/// The slot counters of one server.
#[derive(Debug)]
pub struct Capacity {
    counts: Mutex<Counts>,
    max_pending: usize,
    max_pending_per_ip: usize,
    max_streams: usize,
}

impl Capacity {
    /// Counters with these caps.
    pub fn new(max_pending: usize, max_pending_per_ip: usize, max_streams: usize) -> Self {
        Self {
            counts: Mutex::new(Counts::default()),
            max_pending,
            max_pending_per_ip,
            max_streams,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a pending slot for a connection from `ip`, closing the oldest pending connection
    /// of that client, or of all, if a cap is reached. Refuses only when `--max-streams`
    /// authenticated streams are open.
    pub fn try_pending(self: &Arc<Self>, ip: IpAddr) -> Result<PendingPermit, UpgradeReject> {
        let client = ClientKey::of(ip);
        let mut c = self.lock();
        if c.active >= self.max_streams {
            return Err(UpgradeReject::StreamsFull);
        }
        let oldest_of_client = c
            .per_client
            .get(&client)
            .filter(|of| of.len() >= self.max_pending_per_ip)
            .and_then(|of| of.keys().next().copied());
        if let Some(seq) = oldest_of_client {
            c.evict(seq);
        } else if c.pending.len() >= self.max_pending {
            // The address holding the most; among equals, the one whose oldest is oldest.
            let victim = c
                .per_client
                .values()
                .filter_map(|of| Some((of.len(), *of.keys().next()?)))
                .max_by(|(n_a, first_a), (n_b, first_b)| {
                    n_a.cmp(n_b).then_with(|| first_b.cmp(first_a))
                })
                .map(|(_, first)| first);
            if let Some(seq) = victim {
                c.evict(seq);
            }
        }
        let seq = c.next;
        c.next = c.next.wrapping_add(1);
        let (evict, evicted) = oneshot::channel();
        c.pending.insert(seq, Pending { client, evict });
        c.per_client.entry(client).or_default().insert(seq, ());
        Ok(PendingPermit {
            capacity: Arc::clone(self),
            seq,
            evicted,
        })
    }

    /// Connections upgraded but not yet authenticated.
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// Authenticated streams (and streams whose token is being redeemed).
    pub fn active(&self) -> usize {
        self.lock().active
    }

    /// Pending connections closed so far to admit newer ones.
    #[cfg(any(test, streamguard_loom))]
    pub fn evicted(&self) -> u64 {
        self.lock().evicted
    }
}

/// A pending slot. Released on drop; the connection must close when [`Self::evicted`]
/// resolves.
#[derive(Debug)]
pub struct PendingPermit {
    capacity: Arc<Capacity>,
    seq: u64,
    evicted: oneshot::Receiver<()>,
}

impl PendingPermit {
    /// Resolves when this connection has been chosen to make room for a newer one (never, if
    /// it is not).
    pub async fn evicted(&mut self) {
        if (&mut self.evicted).await.is_err() {
            // The sender is dropped without a send only when the slot is released, which
            // takes this permit: not while it is being awaited.
            std::future::pending::<()>().await;
        }
    }

    /// The connection's token has verified: trade the pending slot for a stream slot, or keep
    /// the permit if `--max-streams` are open (then nothing is redeemed). A connection chosen
    /// for eviction a moment ago still gets its slot: it leaves the pending set either way.
    pub fn into_stream(self) -> Result<StreamPermit, Self> {
        let capacity = Arc::clone(&self.capacity);
        let mut c = capacity.lock();
        if c.active >= capacity.max_streams {
            drop(c);
            return Err(self);
        }
        c.remove_pending(self.seq);
        c.active = c.active.saturating_add(1);
        drop(c);
        // The entry is gone, so Drop finds nothing to release.
        drop(self);
        Ok(StreamPermit { capacity })
    }
}

impl Drop for PendingPermit {
    fn drop(&mut self) {
        self.capacity.lock().remove_pending(self.seq);
    }
}

/// A stream slot of an authenticated stream. Released on drop.
#[derive(Debug)]
pub struct StreamPermit {
    capacity: Arc<Capacity>,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut c = self.capacity.lock();
        c.active = c.active.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )] // tests: a panic is a failure

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn was_evicted(p: &mut PendingPermit) -> bool {
        p.evicted.try_recv().is_ok()
    }

    #[test]
    fn ipv4_counts_by_address_and_ipv6_by_slash_64() {
        assert_eq!(
            ClientKey::of(ip("10.0.0.1")),
            ClientKey::of(ip("::ffff:10.0.0.1"))
        );
        assert_ne!(ClientKey::of(ip("10.0.0.1")), ClientKey::of(ip("10.0.0.2")));
        assert_eq!(
            ClientKey::of(ip("2001:db8:1:2:aaaa::1")),
            ClientKey::of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
        );
        assert_ne!(
            ClientKey::of(ip("2001:db8:1:2::1")),
            ClientKey::of(ip("2001:db8:1:3::1"))
        );
    }

    #[test]
    fn a_full_address_loses_its_own_oldest() {
        let cap = Arc::new(Capacity::new(10, 2, 10));
        let mut a1 = cap.try_pending(ip("10.0.0.1")).unwrap();
        let mut other = cap.try_pending(ip("10.0.0.2")).unwrap();
        let mut a2 = cap.try_pending(ip("10.0.0.1")).unwrap();
        let mut a3 = cap.try_pending(ip("10.0.0.1")).unwrap();
        assert!(was_evicted(&mut a1));
        assert!(!was_evicted(&mut other) && !was_evicted(&mut a2) && !was_evicted(&mut a3));
        assert_eq!((cap.pending(), cap.evicted()), (3, 1));
        // The evicted permit's drop releases nothing more.
        drop(a1);
        assert_eq!(cap.pending(), 3);
    }

    #[test]
    fn a_full_cap_evicts_from_the_address_holding_the_most() {
        let cap = Arc::new(Capacity::new(4, 4, 10));
        let mut lone = cap.try_pending(ip("10.0.0.1")).unwrap();
        let mut flood: Vec<_> = (0..3)
            .map(|_| cap.try_pending(ip("10.0.0.9")).unwrap())
            .collect();
        // Full: the newcomer evicts the flood's oldest, not the older lone connection.
        let mut newcomer = cap.try_pending(ip("10.0.0.2")).unwrap();
        assert!(!was_evicted(&mut lone) && !was_evicted(&mut newcomer));
        assert!(was_evicted(&mut flood[0]));
        assert!(!was_evicted(&mut flood[1]) && !was_evicted(&mut flood[2]));
        assert_eq!(cap.pending(), 4);
        // Among equals, the oldest goes: now 10.0.0.9 holds 2, the rest 1.
        let _n2 = cap.try_pending(ip("10.0.0.3")).unwrap();
        assert!(was_evicted(&mut flood[1]));
        let _n3 = cap.try_pending(ip("10.0.0.4")).unwrap();
        // Every address holds one now: the oldest of all, the lone one, goes.
        assert!(was_evicted(&mut lone));
        assert!(!was_evicted(&mut flood[2]));
    }

    #[test]
    fn a_stream_slot_is_reserved_before_redemption_and_released_on_drop() {
        let cap = Arc::new(Capacity::new(4, 4, 1));
        let a = cap.try_pending(ip("10.0.0.1")).unwrap();
        let b = cap.try_pending(ip("10.0.0.1")).unwrap();
        let slot = a.into_stream().unwrap();
        assert_eq!((cap.pending(), cap.active()), (1, 1));
        // The cap is reached: b keeps its pending permit, and no upgrade is admitted.
        let b = b.into_stream().unwrap_err();
        assert_eq!(
            cap.try_pending(ip("10.0.0.2")).unwrap_err(),
            UpgradeReject::StreamsFull
        );
        drop(slot);
        assert_eq!(cap.active(), 0);
        let slot = b.into_stream().unwrap();
        assert_eq!((cap.pending(), cap.active()), (0, 1));
        drop(slot);
        assert_eq!((cap.pending(), cap.active()), (0, 0));
    }
}
