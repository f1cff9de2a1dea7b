//! Stream tokens: issue and verify. Pure functions: the time and the randomness are arguments.
//!
//! A token authorises exactly one media stream for exactly one call of one account. It is
//! minted when the signed voice webhook arrives, travels to Twilio inside the TwiML
//! `<Parameter name="token">`, and comes back in `start.customParameters.token`.
//!
//! # Format (version 1)
//!
//! base64url without padding (RFC 4648 §5) of 61 bytes, 82 characters:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version, `0x01` |
//! | 4 | key id ([`KeyId`]) of the key that issued it |
//! | 8 | expiry, milliseconds since the Unix epoch, big-endian |
//! | 16 | nonce from the OS CSPRNG |
//! | 32 | HMAC-SHA256 tag |
//!
//! The tag covers a domain-separation label, the version, the key id, the AccountSid, the
//! CallSid, the expiry and the nonce. Every field has a fixed length, so the MAC input is
//! unambiguous. The SIDs are not in the token: the verifier supplies the ones it expects, so
//! a token presented for any other call or account fails the MAC. Exactly:
//!
//! ```text
//! key id = HMAC-SHA256(key, "streamguard token key id")[0..4]          (secret::KeyId)
//! tag    = HMAC-SHA256(key, "streamguard stream token v1" 0x00 || 0x01 || key id
//!                           || AccountSid || CallSid || expiry || nonce)
//! token  = base64url-nopad(0x01 || key id || expiry || nonce || tag)
//! ```
//!
//! where the label is those 27 ASCII bytes and a NUL, the SIDs are their 34 ASCII characters
//! and the other fields are the bytes of the table above. Known answers computed from this
//! statement by an independent script (`scripts/token_vectors.py`, Python's `hmac`) are in
//! `tests/data/token-vectors.json`: a change to the label or to the MAC input layout breaks
//! them, as it would break tokens between instances in a rolling deploy.
//!
//! # Verification order
//!
//! [`verify`] checks, and stops at the first failure:
//! 1. length: exactly [`TOKEN_CHARS`] characters (nothing longer is even decoded);
//! 2. encoding: canonical base64url, no padding, no stray trailing bits;
//! 3. version byte;
//! 4. MAC, in constant time (`ring::hmac::verify`), with each key of the set that has the
//!    token's key id;
//! 5. expiry: `now` is before the expiry, and the expiry is no further than
//!    [`MAX_TOKEN_TTL`] ahead of `now`.
//!
//! Single use and "one stream per call" are not properties of a token alone; they are
//! enforced by the replay store ([`crate::store`]) after `verify` succeeds. The store keeps a
//! call's live token as its key id, expiry and sealed nonce
//! ([`crate::store::StoreKey::seal_nonce`]), and rebuilds the token from them.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use ring::rand::SecureRandom;

use crate::limits::{MAX_TOKEN_TTL, TOKEN_NONCE_BYTES};
use crate::secret::{KeyId, KeySet, StreamToken, TokenKey};
use crate::sid::{AccountSid, CallSid, SID_LEN};
use crate::time::UnixTime;

/// The version byte of the current format.
pub const VERSION_1: u8 = 1;

const KEY_ID_BYTES: usize = 4;
const EXPIRY_BYTES: usize = 8;
const TAG_BYTES: usize = 32;
const HEADER_BYTES: usize = 1 + KEY_ID_BYTES + EXPIRY_BYTES + TOKEN_NONCE_BYTES;

/// Length of a decoded version 1 token, in bytes.
pub const TOKEN_BYTES: usize = HEADER_BYTES + TAG_BYTES;

/// Length of a version 1 token, in characters (base64url without padding of
/// [`TOKEN_BYTES`] bytes).
pub const TOKEN_CHARS: usize = (TOKEN_BYTES * 4).div_ceil(3);

/// Domain-separation label: a MAC made for any other purpose with the same key can never be
/// a valid token tag. Ends in NUL so no label is a prefix of another.
const LABEL: &[u8] = b"streamguard stream token v1\0";

const MAC_INPUT_BYTES: usize =
    LABEL.len() + 1 + KEY_ID_BYTES + SID_LEN + SID_LEN + EXPIRY_BYTES + TOKEN_NONCE_BYTES;

/// What a valid token says, once [`verify`] has checked it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Claims {
    /// Id of the key that issued the token.
    pub key_id: KeyId,
    /// When the token stops being valid.
    pub expires_at: UnixTime,
    /// The token's nonce (the replay store recognises the token by a keyed hash of it).
    pub nonce: [u8; TOKEN_NONCE_BYTES],
}

impl fmt::Debug for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims")
            .field("key_id", &self.key_id)
            .field("expires_at", &self.expires_at)
            .field("nonce", &"..redacted..")
            .finish()
    }
}

/// Why a token failed verification. For logs and metrics only: the peer is told nothing more
/// than "policy violation".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// Not exactly [`TOKEN_CHARS`] characters.
    Length,
    /// Not canonical base64url without padding.
    Encoding,
    /// The version byte is not one this build verifies.
    Version,
    /// No key in the set has the token's key id.
    UnknownKey,
    /// The MAC does not match: forged, altered, or issued for another call or account.
    BadMac,
    /// The token has expired.
    Expired,
    /// The expiry is further ahead than any configuration could have issued.
    ExpiryTooFar,
}

impl TokenError {
    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Length => "token_length",
            Self::Encoding => "token_encoding",
            Self::Version => "token_version",
            Self::UnknownKey => "token_unknown_key",
            Self::BadMac => "token_bad_mac",
            Self::Expired => "token_expired",
            Self::ExpiryTooFar => "token_expiry_too_far",
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Length => "token has the wrong length",
            Self::Encoding => "token is not canonical base64url",
            Self::Version => "token has an unknown version",
            Self::UnknownKey => "token was issued by a key not in the current set",
            Self::BadMac => "token MAC does not match this call and account",
            Self::Expired => "token has expired",
            Self::ExpiryTooFar => "token expiry is implausibly far in the future",
        })
    }
}

impl std::error::Error for TokenError {}

/// Why a token could not be issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IssueError {
    /// The TTL is under a millisecond or longer than [`MAX_TOKEN_TTL`].
    TtlOutOfRange,
    /// `now + ttl` does not fit the expiry field.
    ExpiryOverflow,
    /// The random number generator failed.
    Randomness,
}

impl fmt::Display for IssueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TtlOutOfRange => "token TTL is zero or too long",
            Self::ExpiryOverflow => "token expiry does not fit",
            Self::Randomness => "the random number generator failed",
        })
    }
}

impl std::error::Error for IssueError {}

fn mac_input(
    key_id: [u8; KEY_ID_BYTES],
    account: &AccountSid,
    call: &CallSid,
    expiry: [u8; EXPIRY_BYTES],
    nonce: &[u8; TOKEN_NONCE_BYTES],
) -> [u8; MAC_INPUT_BYTES] {
    let mut out = [0u8; MAC_INPUT_BYTES];
    let parts: [&[u8]; 7] = [
        LABEL,
        &[VERSION_1],
        &key_id,
        account.as_bytes(),
        call.as_bytes(),
        &expiry,
        nonce,
    ];
    let mut rest: &mut [u8] = &mut out;
    for part in parts {
        let (head, tail) = rest.split_at_mut(part.len());
        head.copy_from_slice(part);
        rest = tail;
    }
    out
}

/// Issues a token for one stream of `call` in `account`, valid for `ttl` from `now`, signed
/// with `key`; the nonce comes from `rng`.
///
/// ```
/// use std::time::Duration;
/// use ring::rand::SystemRandom;
/// use streamguard::secret::{KeySet, TokenKey};
/// use streamguard::sid::{AccountSid, CallSid};
/// use streamguard::time::UnixTime;
/// use streamguard::token::{issue, verify};
///
/// let rng = SystemRandom::new();
/// let keys = KeySet::single(TokenKey::generate(&rng).unwrap());
/// let account = AccountSid::parse("AC0123456789abcdef0123456789abcdef").unwrap();
/// let call = CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap();
/// let now = UnixTime::from_millis(1_700_000_000_000);
/// let token = issue(keys.current(), &account, &call, now, Duration::from_secs(60), &rng).unwrap();
/// assert!(verify(&keys, token.as_str(), &account, &call, now).is_ok());
/// ```
pub fn issue(
    key: &TokenKey,
    account: &AccountSid,
    call: &CallSid,
    now: UnixTime,
    ttl: Duration,
    rng: &dyn SecureRandom,
) -> Result<StreamToken, IssueError> {
    let mut nonce = [0u8; TOKEN_NONCE_BYTES];
    rng.fill(&mut nonce).map_err(|_| IssueError::Randomness)?;
    issue_with_nonce(key, account, call, now, ttl, nonce)
}

/// [`issue`] with the nonce given instead of drawn: deterministic, for known-answer tests,
/// property tests and fuzzing. Production code calls [`issue`]; a nonce that is not fresh
/// random bytes defeats single use.
pub fn issue_with_nonce(
    key: &TokenKey,
    account: &AccountSid,
    call: &CallSid,
    now: UnixTime,
    ttl: Duration,
    nonce: [u8; TOKEN_NONCE_BYTES],
) -> Result<StreamToken, IssueError> {
    let expires_at = expiry(now, ttl)?;
    Ok(seal(key, account, call, expires_at, &nonce))
}

/// The expiry of a token issued at `now` for `ttl`: `now + ttl`, if the TTL is between 1 ms
/// and [`MAX_TOKEN_TTL`] and the sum fits.
pub fn expiry(now: UnixTime, ttl: Duration) -> Result<UnixTime, IssueError> {
    // Expiry has millisecond resolution: a TTL under 1 ms would issue an expired token.
    if ttl.as_millis() == 0 || ttl > MAX_TOKEN_TTL {
        return Err(IssueError::TtlOutOfRange);
    }
    now.checked_add(ttl).ok_or(IssueError::ExpiryOverflow)
}

/// Builds the token text for the given fields (the expiry already checked).
pub(crate) fn seal(
    key: &TokenKey,
    account: &AccountSid,
    call: &CallSid,
    expires_at: UnixTime,
    nonce: &[u8; TOKEN_NONCE_BYTES],
) -> StreamToken {
    let key_id = key.id().to_bytes();
    let expiry = expires_at.as_millis().to_be_bytes();
    let tag = hmac::sign(key.hmac(), &mac_input(key_id, account, call, expiry, nonce));

    let mut raw = [0u8; TOKEN_BYTES];
    let parts: [&[u8]; 5] = [&[VERSION_1], &key_id, &expiry, nonce, tag.as_ref()];
    let mut rest: &mut [u8] = &mut raw;
    for part in parts {
        let (head, tail) = rest.split_at_mut(part.len());
        head.copy_from_slice(part);
        rest = tail;
    }
    StreamToken::new(URL_SAFE_NO_PAD.encode(raw))
}

/// Verifies `token` for `call` in `account` at time `now`, in the order given in the module
/// documentation. The MAC comparison is constant time.
pub fn verify(
    keys: &KeySet,
    token: &str,
    account: &AccountSid,
    call: &CallSid,
    now: UnixTime,
) -> Result<Claims, TokenError> {
    // 1. Length, before any decoding work.
    if token.len() != TOKEN_CHARS {
        return Err(TokenError::Length);
    }
    // 2. Encoding. The engine rejects padding and non-zero trailing bits, so each token has
    //    exactly one accepted spelling.
    let mut raw = [0u8; TOKEN_BYTES];
    match URL_SAFE_NO_PAD.decode_slice(token.as_bytes(), &mut raw) {
        Ok(TOKEN_BYTES) => {}
        _ => return Err(TokenError::Encoding),
    }
    let (version, rest) = raw.split_at(1);
    let (key_id, rest) = rest.split_at(KEY_ID_BYTES);
    let (expiry, rest) = rest.split_at(EXPIRY_BYTES);
    let (nonce, tag) = rest.split_at(TOKEN_NONCE_BYTES);
    // The splits above are of a fixed-size array at constant offsets; these conversions
    // cannot fail, and a failure would read as a malformed token, not a panic.
    let key_id: [u8; KEY_ID_BYTES] = key_id.try_into().map_err(|_| TokenError::Encoding)?;
    let expiry: [u8; EXPIRY_BYTES] = expiry.try_into().map_err(|_| TokenError::Encoding)?;
    let nonce: [u8; TOKEN_NONCE_BYTES] = nonce.try_into().map_err(|_| TokenError::Encoding)?;

    // 3. Version.
    if version != [VERSION_1] {
        return Err(TokenError::Version);
    }

    // 4. MAC, with every key that carries this key id.
    let input = mac_input(key_id, account, call, expiry, &nonce);
    let mut candidates = keys.with_id(key_id).peekable();
    if candidates.peek().is_none() {
        return Err(TokenError::UnknownKey);
    }
    let key_id = candidates
        .find(|k| hmac::verify(k.hmac(), &input, tag).is_ok())
        .map(TokenKey::id)
        .ok_or(TokenError::BadMac)?;

    // 5. Expiry.
    let expires_at = UnixTime::from_millis(u64::from_be_bytes(expiry));
    if now >= expires_at {
        return Err(TokenError::Expired);
    }
    if expires_at.saturating_since(now) > MAX_TOKEN_TTL {
        return Err(TokenError::ExpiryTooFar);
    }
    Ok(Claims {
        key_id,
        expires_at,
        nonce,
    })
}
