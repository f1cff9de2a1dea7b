//! Connection slots: `--max-pending`, `--max-pending-per-ip`, `--max-streams`.
//!
//! A connection takes a [`PendingPermit`] when it is upgraded and holds it until it is
//! authenticated, when the permit becomes a [`StreamPermit`], or until it closes. A pending
//! connection also occupies a stream slot, so authentication never fails for lack of one
//! and the stream cap bounds every upgraded connection. Releasing is done by `Drop`, so no
//! path (error, panic in a handler, shutdown) leaks a slot.

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
        if c.pending.saturating_add(c.active) >= self.max_streams {
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

    fn release_pending(&self, ip: IpAddr, to_active: bool) {
        let mut c = self.lock();
        c.pending = c.pending.saturating_sub(1);
        if to_active {
            c.active = c.active.saturating_add(1);
        }
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
    /// The connection is authenticated: give back the pending slot, keep the stream slot.
    pub fn into_stream(mut self) -> StreamPermit {
        self.released = true;
        self.capacity.release_pending(self.ip, true);
        StreamPermit {
            capacity: Arc::clone(&self.capacity),
        }
    }
}

impl Drop for PendingPermit {
    fn drop(&mut self) {
        if !self.released {
            self.capacity.release_pending(self.ip, false);
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
