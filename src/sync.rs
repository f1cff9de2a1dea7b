//! The lock the shared state is built on (the in-memory replay store, the connection slots):
//! std's, or loom's when the crate is built with `RUSTFLAGS="--cfg streamguard_loom"`, so that
//! `tests/loom.rs` explores every interleaving of the real code. A crate-specific cfg, not
//! `cfg(loom)`: that one also switches tokio into its own loom mode.
//!
//! Only the lock is swapped: `Arc` stays std's, because `Capacity::try_pending` takes
//! `self: &Arc<Self>` and only std's `Arc` can be a method receiver on stable Rust.

#[cfg(streamguard_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(streamguard_loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};
