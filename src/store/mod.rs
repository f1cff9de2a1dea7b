//! Single use: the one piece of state shared between connections (and, with the Redis store,
//! between instances). One record per CallSid decides both "a webhook for this call may mint"
//! and "this token may open a stream", so minting and redemption can never disagree.
//!
//! # The record
//!
//! A [`CallRecord`] holds the call's live token, if one has been minted and not yet redeemed
//! (its key id, its expiry and its nonce sealed with a key of the store's own: never the token
//! or the nonce itself), how many streams the call has opened, and until when the record is
//! kept:
//!
//! - **mint** ([`CallRecord::mint`]): a call that has opened `--streams-per-call` streams is
//!   refused ([`MintRefusal::CallAlreadyStreamed`]) for as long as it is remembered
//!   (`--call-memory`, 4 h by default: Twilio's default maximum call length). A call with a
//!   live token gets that same token back (Twilio retries a webhook; a replay inside the TTL
//!   gets nothing it did not already have). Otherwise the candidate token is recorded.
//! - **redeem** ([`CallRecord::redeem`]): succeeds only for the call's live token (its expiry
//!   and sealed nonce, compared in constant time), and only while the call has streams left;
//!   it consumes the token and counts the stream, and the record is then kept for
//!   `--call-memory`.
//!
//! A token that is not on record is refused: spent, superseded, minted by an instance that
//! does not share this store, or from before a restart of an in-memory store. Failing closed
//! there is what makes "works once" hold across restarts and instances.
//!
//! # Secrets in the store
//!
//! A token's nonce is 16 random bytes; the record holds it sealed: XORed with a pad that is a
//! PRF, keyed with the store's own key ([`StoreKey`], derived from the Twilio auth token), of
//! the account, the call and the token's expiry ([`StoreKey::seal_nonce`]). So the store (a
//! shared Redis, say) holds neither a token nor a nonce: reading it does not let anyone build
//! or recognise a token. A presented token is sealed the same way and compared; the token
//! itself is rebuilt from the record and the token key when a webhook is retried.
//!
//! # Stores
//!
//! [`ReplayStore`] is the interface the server uses, with two implementations: [`MemoryStore`]
//! (the default, nothing to set up, one process) and, with the `redis` feature, `RedisStore`
//! (shared by every instance, surviving restarts). Both apply [`CallRecord`]'s rules
//! atomically per call. The pure functions here take the time as an argument; only the server
//! asks a clock.

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use ring::hmac;
use ring::rand::SecureRandom;

pub use self::memory::MemoryStore;
#[cfg(feature = "redis")]
pub use self::redis::{
    DEFAULT_REDIS_TIMEOUT, KEY_PREFIX, MINT_SCRIPT, REDEEM_SCRIPT, RedisSettings,
    RedisSettingsError, RedisStore,
};
use crate::limits::TOKEN_NONCE_BYTES;
use crate::secret::{AuthToken, KeyId, KeySet, StreamToken};
use crate::sid::{AccountSid, CallSid};
use crate::time::UnixTime;
use crate::token::{self, Claims, IssueError};

/// Bytes of a sealed nonce.
pub const SEALED_BYTES: usize = TOKEN_NONCE_BYTES;

/// The rules every store applies: how long a token lives, how long a streamed call is
/// remembered, how many streams a call may open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorePolicy {
    /// `--token-ttl`.
    pub token_ttl: Duration,
    /// `--call-memory`: how long a call that has streamed is remembered.
    pub call_memory: Duration,
    /// `--streams-per-call`.
    pub streams_per_call: u32,
}

/// The live token of a call, as a store keeps it: enough to rebuild the token with the token
/// key, and to recognise it, but neither the token nor its nonce.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LiveToken {
    /// The key that signed it.
    pub key_id: KeyId,
    /// When it expires.
    pub expires_at: UnixTime,
    /// Its nonce, sealed ([`StoreKey::seal_nonce`]).
    pub sealed: [u8; SEALED_BYTES],
}

/// A verified token as redemption presents it to the store: its expiry and its nonce, sealed
/// as the store seals the nonces it keeps.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Presented {
    /// The token's expiry.
    pub expires_at: UnixTime,
    /// Its nonce, sealed ([`StoreKey::seal_nonce`]).
    pub sealed: [u8; SEALED_BYTES],
}

impl fmt::Debug for Presented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Presented")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for LiveToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveToken")
            .field("key_id", &self.key_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What a store knows of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallRecord {
    /// The token minted and not yet redeemed, if any.
    pub live: Option<LiveToken>,
    /// Streams this call has opened.
    pub streams: u32,
    /// When the record may be forgotten.
    pub keep_until: UnixTime,
}

/// Why a webhook may not mint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MintRefusal {
    /// The call has opened all the streams it may open (`--streams-per-call`), and is still
    /// remembered (`--call-memory`).
    CallAlreadyStreamed,
}

/// What minting decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MintDecision {
    /// The candidate was recorded: it is the call's token now.
    Issued(LiveToken),
    /// The call already had a live token: this one, unchanged.
    Reused(LiveToken),
    /// Refused.
    Refused(MintRefusal),
}

/// Why a verified token may not open a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedeemRefusal {
    /// The call has streamed and this is not its live token: a replay.
    TokenReused,
    /// The call has opened all the streams it may open.
    CallAlreadyStreamed,
    /// No record of this token: never minted by this store, superseded, or forgotten (an
    /// in-memory store after a restart, an instance that does not share the store).
    NotOnRecord,
}

impl RedeemRefusal {
    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenReused => "token_replayed",
            Self::CallAlreadyStreamed => "call_already_streamed",
            Self::NotOnRecord => "token_not_on_record",
        }
    }
}

impl fmt::Display for RedeemRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TokenReused => "token has already been used",
            Self::CallAlreadyStreamed => "call already has had its streams",
            Self::NotOnRecord => "token is not the live token on record for its call",
        })
    }
}

impl std::error::Error for RedeemRefusal {}

fn later(a: UnixTime, b: UnixTime) -> UnixTime {
    a.max(b)
}

impl CallRecord {
    /// Whether the record still counts at `now`.
    pub fn is_live(&self, now: UnixTime) -> bool {
        self.keep_until > now
    }

    /// Minting for a call whose record is `record` (none, or forgotten), with `candidate` as
    /// the token to record if one is needed. Returns the record to store and the decision.
    pub fn mint(
        record: Option<Self>,
        candidate: LiveToken,
        now: UnixTime,
        policy: &StorePolicy,
    ) -> (Option<Self>, MintDecision) {
        let Some(record) = record.filter(|r| r.is_live(now)) else {
            let fresh = Self {
                live: Some(candidate),
                streams: 0,
                keep_until: candidate.expires_at,
            };
            return (Some(fresh), MintDecision::Issued(candidate));
        };
        if record.streams >= policy.streams_per_call {
            return (
                Some(record),
                MintDecision::Refused(MintRefusal::CallAlreadyStreamed),
            );
        }
        if let Some(live) = record.live.filter(|l| l.expires_at > now) {
            return (Some(record), MintDecision::Reused(live));
        }
        let next = Self {
            live: Some(candidate),
            streams: record.streams,
            keep_until: later(record.keep_until, candidate.expires_at),
        };
        (Some(next), MintDecision::Issued(candidate))
    }

    /// Redeeming the verified token `presented`, for a call whose record is `record`. Returns
    /// the record to store and the result.
    pub fn redeem(
        record: Option<Self>,
        presented: &Presented,
        now: UnixTime,
        policy: &StorePolicy,
    ) -> (Option<Self>, Result<(), RedeemRefusal>) {
        let Some(record) = record.filter(|r| r.is_live(now)) else {
            return (None, Err(RedeemRefusal::NotOnRecord));
        };
        let is_live_token = record.live.is_some_and(|l| {
            l.expires_at > now
                && l.expires_at == presented.expires_at
                && constant_time_eq::constant_time_eq(&l.sealed, &presented.sealed)
        });
        if !is_live_token {
            let why = if record.streams > 0 {
                RedeemRefusal::TokenReused
            } else {
                RedeemRefusal::NotOnRecord
            };
            return (Some(record), Err(why));
        }
        if record.streams >= policy.streams_per_call {
            return (Some(record), Err(RedeemRefusal::CallAlreadyStreamed));
        }
        let next = Self {
            live: None,
            streams: record.streams.saturating_add(1),
            keep_until: later(record.keep_until, now.saturating_add(policy.call_memory)),
        };
        (Some(next), Ok(()))
    }
}

/// Why a store could not answer. The caller refuses (fails closed): no token is minted, no
/// stream is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The store is full of live records (it never forgets one early).
    Full,
    /// The store could not be reached (refused, dropped, not yet reconnected).
    Unavailable,
    /// The store did not answer within its timeout.
    Timeout,
    /// The store answered with an error or something unexpected.
    Failed,
}

impl StoreError {
    /// A stable label for the refusal it causes, in metrics and logs: `call_records_full`,
    /// or `replay_store_unavailable` for every way a store can fail to answer.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "call_records_full",
            Self::Unavailable | Self::Timeout | Self::Failed => "replay_store_unavailable",
        }
    }

    /// A stable label for the kind of failure (`streamguard_replay_store_errors_total{kind}`).
    pub fn kind(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Unavailable => "unreachable",
            Self::Timeout => "timeout",
            Self::Failed => "error",
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full => "the replay store is full of live call records",
            Self::Unavailable => "the replay store is unreachable",
            Self::Timeout => "the replay store did not answer in time",
            Self::Failed => "the replay store answered with an error",
        })
    }
}

impl std::error::Error for StoreError {}

/// A future a store returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// How full a store is, for the gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreFill {
    /// Records held now (`None` where the store is shared and this instance does not count).
    pub records: Option<u64>,
    /// Most records it holds (`None` where the store bounds itself, by TTLs).
    pub capacity: Option<u64>,
}

/// The name a record is kept under: [`StoreKey::call_id`] of its account and call, so no store
/// holds a CallSid in clear.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub [u8; 16]);

/// Where the records live. Every operation is atomic per call: of any number of concurrent
/// redemptions of one token, on any number of instances sharing the store, exactly one wins.
pub trait ReplayStore: Send + Sync + 'static {
    /// Applies [`CallRecord::mint`] to the record of `call`.
    fn mint(
        &self,
        call: CallId,
        candidate: LiveToken,
        now: UnixTime,
    ) -> StoreFuture<'_, MintDecision>;

    /// Applies [`CallRecord::redeem`] to the record of `call`.
    fn redeem(
        &self,
        call: CallId,
        presented: Presented,
        now: UnixTime,
    ) -> StoreFuture<'_, Result<(), RedeemRefusal>>;

    /// How full it is.
    fn fill(&self) -> StoreFill;
}

const STORE_KEY_LABEL: &[u8] = b"streamguard replay store key v1\0";
const PAD_LABEL: &[u8] = b"streamguard nonce pad v1\0";
const CALL_LABEL: &[u8] = b"streamguard call v1\0";

/// The store's own key: derived from the Twilio auth token (HMAC-SHA256 with a fixed label),
/// so every instance of an account derives the same one, and a new auth token starts a fresh
/// namespace (requests signed with the old one no longer verify, so nothing is lost).
pub struct StoreKey(hmac::Key);

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreKey(..redacted..)")
    }
}

fn prf16(key: &hmac::Key, label: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(label);
    for p in parts {
        ctx.update(p);
    }
    let tag = ctx.sign();
    let mut out = [0u8; 16];
    for (o, t) in out.iter_mut().zip(tag.as_ref()) {
        *o = *t;
    }
    out
}

impl StoreKey {
    /// The store key of the account whose auth token is `auth`.
    pub fn derive(auth: &AuthToken) -> Self {
        let tag = hmac::sign(auth.store_key_source(), STORE_KEY_LABEL);
        Self(hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref()))
    }

    /// `nonce` sealed for the token of (`account`, `call`) that expires at `expires_at`: XORed
    /// with HMAC-SHA256(store key, label ‖ AccountSid ‖ CallSid ‖ expiry)[..16]. Sealing a
    /// sealed nonce opens it. Each (call, expiry) has its own pad, used for one nonce.
    pub fn seal_nonce(
        &self,
        account: &AccountSid,
        call: &CallSid,
        expires_at: UnixTime,
        nonce: &[u8; TOKEN_NONCE_BYTES],
    ) -> [u8; SEALED_BYTES] {
        let expiry = expires_at.as_millis().to_be_bytes();
        let pad = prf16(
            &self.0,
            PAD_LABEL,
            &[account.as_bytes(), call.as_bytes(), &expiry],
        );
        let mut out = *nonce;
        for (o, p) in out.iter_mut().zip(pad) {
            *o ^= p;
        }
        out
    }

    /// A name for the record of (`account`, `call`) that does not reveal either (128 bits of
    /// HMAC-SHA256): what the stores key their records by.
    pub fn call_id(&self, account: &AccountSid, call: &CallSid) -> CallId {
        CallId(prf16(
            &self.0,
            CALL_LABEL,
            &[account.as_bytes(), call.as_bytes()],
        ))
    }
}

/// Why a webhook got no token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MintError {
    /// The store refused (the call has streamed).
    Refused(MintRefusal),
    /// The store could not answer.
    Store(StoreError),
    /// The token could not be issued.
    Issue(IssueError),
    /// The call's live token was signed by a key that is no longer in the key set (a key was
    /// dropped less than one TTL after it stopped signing).
    KeyGone,
}

impl fmt::Display for MintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused(MintRefusal::CallAlreadyStreamed) => {
                f.write_str("the call has already streamed")
            }
            Self::Store(e) => e.fmt(f),
            Self::Issue(e) => write!(f, "cannot issue token: {e}"),
            Self::KeyGone => f.write_str("the call's live token was signed by a dropped key"),
        }
    }
}

impl std::error::Error for MintError {}

/// Why a verified token could not be redeemed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedeemError {
    /// The store refused.
    Refused(RedeemRefusal),
    /// The store could not answer.
    Store(StoreError),
}

impl RedeemError {
    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refused(r) => r.as_str(),
            Self::Store(e) => e.as_str(),
        }
    }
}

impl fmt::Display for RedeemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused(r) => r.fmt(f),
            Self::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RedeemError {}

/// The candidate token a mint offers the store: a fresh random nonce, sealed; the current
/// key; `now + ttl`.
pub fn candidate(
    store_key: &StoreKey,
    keys: &KeySet,
    account: &AccountSid,
    call: &CallSid,
    now: UnixTime,
    ttl: Duration,
    rng: &dyn SecureRandom,
) -> Result<LiveToken, IssueError> {
    let mut nonce = [0u8; TOKEN_NONCE_BYTES];
    rng.fill(&mut nonce).map_err(|_| IssueError::Randomness)?;
    candidate_with_nonce(store_key, keys, account, call, now, ttl, nonce)
}

/// [`candidate`] with the nonce given instead of drawn: deterministic, for the model checker
/// and tests (`ring`'s `SecureRandom` is sealed, so a test cannot supply its own). Production
/// code calls [`candidate`]; a nonce that is not fresh random bytes defeats single use.
pub fn candidate_with_nonce(
    store_key: &StoreKey,
    keys: &KeySet,
    account: &AccountSid,
    call: &CallSid,
    now: UnixTime,
    ttl: Duration,
    nonce: [u8; TOKEN_NONCE_BYTES],
) -> Result<LiveToken, IssueError> {
    let expires_at = token::expiry(now, ttl)?;
    Ok(LiveToken {
        key_id: keys.current().id(),
        expires_at,
        sealed: store_key.seal_nonce(account, call, expires_at, &nonce),
    })
}

/// The token text of a call's live token: rebuilt from the record with the key that signed
/// it.
pub fn token_of(
    store_key: &StoreKey,
    keys: &KeySet,
    account: &AccountSid,
    call: &CallSid,
    live: &LiveToken,
) -> Result<StreamToken, MintError> {
    let key = keys
        .with_id(live.key_id.to_bytes())
        .next()
        .ok_or(MintError::KeyGone)?;
    let nonce = store_key.seal_nonce(account, call, live.expires_at, &live.sealed);
    Ok(token::seal(key, account, call, live.expires_at, &nonce))
}

/// What a verified token presents to the store.
pub fn presented(
    store_key: &StoreKey,
    account: &AccountSid,
    call: &CallSid,
    claims: &Claims,
) -> Presented {
    Presented {
        expires_at: claims.expires_at,
        sealed: store_key.seal_nonce(account, call, claims.expires_at, &claims.nonce),
    }
}

/// Mints the token of (`account`, `call`) through `store`: the live one if the call has one,
/// a new one otherwise, nothing if the call has streamed or the store cannot answer.
#[allow(clippy::too_many_arguments)] // each is a distinct input of the decision
pub async fn mint(
    store: &dyn ReplayStore,
    store_key: &StoreKey,
    keys: &KeySet,
    account: &AccountSid,
    call: &CallSid,
    now: UnixTime,
    ttl: Duration,
    rng: &(dyn SecureRandom + Sync),
) -> Result<StreamToken, MintError> {
    let offer =
        candidate(store_key, keys, account, call, now, ttl, rng).map_err(MintError::Issue)?;
    match store
        .mint(store_key.call_id(account, call), offer, now)
        .await
    {
        Ok(MintDecision::Issued(live) | MintDecision::Reused(live)) => {
            token_of(store_key, keys, account, call, &live)
        }
        Ok(MintDecision::Refused(r)) => Err(MintError::Refused(r)),
        Err(e) => Err(MintError::Store(e)),
    }
}

/// Redeems a token that [`token::verify`] accepted for (`account`, `call`).
pub async fn redeem(
    store: &dyn ReplayStore,
    store_key: &StoreKey,
    account: &AccountSid,
    call: &CallSid,
    claims: &Claims,
    now: UnixTime,
) -> Result<(), RedeemError> {
    let offer = presented(store_key, account, call, claims);
    match store
        .redeem(store_key.call_id(account, call), offer, now)
        .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(r)) => Err(RedeemError::Refused(r)),
        Err(e) => Err(RedeemError::Store(e)),
    }
}
