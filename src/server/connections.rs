//! `--max-connections`: every TCP connection, of every kind, holds a [`ConnectionSlot`] from
//! `accept` until its socket closes (an upgraded stream keeps the slot of the HTTP connection
//! it came from).
//!
//! When the cap is reached, the **oldest connection that is waiting for a request** (no
//! complete request head yet, or a webhook body still arriving, or idle between keep-alive
//! requests) is closed to admit the new one, so idle or half-sent connections cannot hold every
//! descriptor. If every connection is busy (a request being answered, or an upgraded stream:
//! those are bounded by `--max-pending` and `--max-streams`), the new connection is closed at
//! once. The cap itself never exceeds what the file-descriptor limit allows
//! ([`effective_max_connections`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

#[derive(Debug)]
struct Entry {
    waiting: Arc<AtomicBool>,
    close: oneshot::Sender<()>,
}

#[derive(Debug, Default)]
struct Open {
    by_age: BTreeMap<u64, Entry>,
    next: u64,
    evicted: u64,
    refused: u64,
}

/// The open connections of one listener.
#[derive(Debug)]
pub(crate) struct Connections {
    open: Mutex<Open>,
    max: AtomicUsize,
}

impl Connections {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            open: Mutex::new(Open::default()),
            max: AtomicUsize::new(max),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for a newly accepted connection, closing the oldest waiting one if the cap is
    /// reached; `None` if the cap is reached and no connection is waiting.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<(ConnectionSlot, oneshot::Receiver<()>)> {
        let mut open = self.lock();
        if open.by_age.len() >= self.max() {
            let oldest_waiting = open
                .by_age
                .iter()
                .find(|(_, e)| e.waiting.load(Ordering::Acquire))
                .map(|(seq, _)| *seq);
            match oldest_waiting.and_then(|seq| open.by_age.remove(&seq)) {
                Some(entry) => {
                    let _ = entry.close.send(());
                    open.evicted = open.evicted.saturating_add(1);
                }
                None => {
                    open.refused = open.refused.saturating_add(1);
                    return None;
                }
            }
        }
        let seq = open.next;
        open.next = open.next.wrapping_add(1);
        let waiting = Arc::new(AtomicBool::new(true));
        let (close, closed) = oneshot::channel();
        open.by_age.insert(
            seq,
            Entry {
                waiting: Arc::clone(&waiting),
                close,
            },
        );
        let slot = ConnectionSlot(Arc::new(SlotInner {
            connections: Arc::clone(self),
            seq,
            waiting,
        }));
        Some((slot, closed))
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.lock().by_age.len()
    }

    /// Waiting connections closed so far to admit new ones.
    pub(crate) fn evicted(&self) -> u64 {
        self.lock().evicted
    }

    /// Connections closed at once because every slot was busy.
    pub(crate) fn refused(&self) -> u64 {
        self.lock().refused
    }

    /// The cap in force.
    pub(crate) fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// Sets the cap (when the standalone server has read the descriptor limit).
    pub(crate) fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct SlotInner {
    connections: Arc<Connections>,
    seq: u64,
    waiting: Arc<AtomicBool>,
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        self.connections.lock().by_age.remove(&self.seq);
    }
}

/// One connection's place under `--max-connections`; released when the last clone is dropped.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionSlot(Arc<SlotInner>);

impl ConnectionSlot {
    /// Marks the connection as waiting for a request (evictable) or busy (not evictable).
    pub(crate) fn set_waiting(&self, waiting: bool) {
        self.0.waiting.store(waiting, Ordering::Release);
    }
}

/// The descriptor limit and the cap it allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FdBudget {
    /// The soft `RLIMIT_NOFILE` after trying to raise it to the hard limit (`None`: unknown or
    /// unlimited).
    pub(crate) limit: Option<u64>,
    /// The cap in force.
    pub(crate) max_connections: usize,
}

/// `requested`, lowered to the descriptor limit less `reserve`. On Unix the soft limit is
/// first raised to the hard limit, as most servers do at start.
pub(crate) fn effective_max_connections(requested: usize, reserve: usize) -> FdBudget {
    let limit = nofile_limit();
    let max_connections = match limit {
        Some(l) => {
            let allowed = usize::try_from(l)
                .unwrap_or(usize::MAX)
                .saturating_sub(reserve);
            requested.min(allowed).max(1)
        }
        None => requested,
    };
    FdBudget {
        limit,
        max_connections,
    }
}

#[cfg(unix)]
fn nofile_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    if now.current != now.maximum {
        let raised = Rlimit {
            current: now.maximum,
            maximum: now.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return now.maximum;
        }
    }
    now.current
}

#[cfg(not(unix))]
fn nofile_limit() -> Option<u64> {
    None
}
