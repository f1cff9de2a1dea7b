//! Connection slots: `--max-pending`, `--max-pending-per-ip`, `--max-streams`.
//!
//! A connection takes a [`PendingPermit`] when it is upgraded (refused with `503` when the
//! pending cap, the per-IP cap or the stream cap is reached) and holds it until it is
//! authenticated, when the permit becomes a [`StreamPermit`], or until it closes.
//! `--max-streams` counts authenticated streams: if pending connections authenticate after
//! the cap has been reached meanwhile, the late one is closed with 1008 (`streams_full`).
//! Twilio never retries a stream, so the token it spent is not missed. Releasing is done by
//! `Drop`, so no path (error, panic in a handler, shutdown) leaks a slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::upgrade::UpgradeReject;

#[derive(Debug, Default)]
struct Counts {
    pending: usize,
    active: usize,
    per_ip: HashMap<IpAddr, usize>,
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

    /// Takes a pending slot for a connection from `ip`, or says which cap is reached.
    pub fn try_pending(self: &Arc<Self>, ip: IpAddr) -> Result<PendingPermit, UpgradeReject> {
        let ip = ip.to_canonical();
        let mut c = self.lock();
        if c.active >= self.max_streams {
            return Err(UpgradeReject::StreamsFull);
        }
        if c.pending >= self.max_pending {
            return Err(UpgradeReject::PendingFull);
        }
        let from_ip = c.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.max_pending_per_ip {
            return Err(UpgradeReject::PendingPerIpFull);
        }
        c.pending = c.pending.saturating_add(1);
        c.per_ip.insert(ip, from_ip.saturating_add(1));
        Ok(PendingPermit {
            capacity: Arc::clone(self),
            ip,
            released: false,
        })
    }

    /// Connections upgraded but not yet authenticated.
    pub fn pending(&self) -> usize {
        self.lock().pending
    }

    /// Authenticated streams.
    pub fn active(&self) -> usize {
        self.lock().active
    }

    fn release_pending(c: &mut Counts, ip: IpAddr) {
        c.pending = c.pending.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_ip.remove(&ip);
            }
        }
    }
}

/// A pending slot (and the stream slot it reserves). Released on drop.
#[derive(Debug)]
pub struct PendingPermit {
    capacity: Arc<Capacity>,
    ip: IpAddr,
    released: bool,
}

impl PendingPermit {
    /// The connection has authenticated: trade the pending slot for a stream slot, or give
    /// the permit back if `--max-streams` has been reached meanwhile.
    pub fn into_stream(mut self) -> Result<StreamPermit, Self> {
        let capacity = Arc::clone(&self.capacity);
        let mut c = capacity.lock();
        if c.active >= capacity.max_streams {
            drop(c);
            return Err(self);
        }
        Capacity::release_pending(&mut c, self.ip);
        c.active = c.active.saturating_add(1);
        self.released = true;
        Ok(StreamPermit {
            capacity: Arc::clone(&capacity),
        })
    }
}

impl Drop for PendingPermit {
    fn drop(&mut self) {
        if !self.released {
            let mut c = self.capacity.lock();
            Capacity::release_pending(&mut c, self.ip);
        }
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
