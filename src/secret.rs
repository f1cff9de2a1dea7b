//! Secret-bearing newtypes: token keys, the Twilio auth token, stream tokens.
//!
//! None of them derives `Debug`; each writes a redacting one. None implements `Display`, so a
//! secret cannot end up in a log line through `{}`. Raw key bytes are handed to `ring` at
//! construction and not kept anywhere else.

use std::fmt;

use base64::Engine as _;
use ring::hmac;
use ring::rand::SecureRandom;

use crate::limits::{TOKEN_KEY_MAX_BYTES, TOKEN_KEY_MIN_BYTES, TOKEN_MAX_KEYS};

/// Why a token key or key set was refused. No variant carries key material.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is shorter than [`TOKEN_KEY_MIN_BYTES`].
    TooShort,
    /// The key is longer than [`TOKEN_KEY_MAX_BYTES`].
    TooLong,
    /// The text form is not standard padded base64.
    NotBase64,
    /// The key set is empty.
    Empty,
    /// The key set has more than [`TOKEN_MAX_KEYS`] keys.
    TooMany,
    /// Two keys in the set have the same key id (the same key given twice).
    DuplicateKeyId,
    /// The operating system's random number generator failed.
    RandomnessUnavailable,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort => write!(f, "token key is shorter than {TOKEN_KEY_MIN_BYTES} bytes"),
            Self::TooLong => write!(f, "token key is longer than {TOKEN_KEY_MAX_BYTES} bytes"),
            Self::NotBase64 => f.write_str("token key is not standard padded base64"),
            Self::Empty => f.write_str("token key set is empty"),
            Self::TooMany => write!(f, "token key set has more than {TOKEN_MAX_KEYS} keys"),
            Self::DuplicateKeyId => f.write_str("token key set holds the same key twice"),
            Self::RandomnessUnavailable => f.write_str("the OS random number generator failed"),
        }
    }
}

impl std::error::Error for KeyError {}

/// Public identifier of a token key: the first four bytes of
/// HMAC-SHA256(key, "streamguard token key id"). Every instance that shares a key derives the
/// same id, and the id reveals nothing about the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub(crate) [u8; 4]);

impl KeyId {
    /// The four id bytes, as they appear in a token.
    pub const fn to_bytes(self) -> [u8; 4] {
        self.0
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "KeyId({a:02x}{b:02x}{c:02x}{d:02x})")
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{a:02x}{b:02x}{c:02x}{d:02x}")
    }
}

const KEY_ID_LABEL: &[u8] = b"streamguard token key id";

/// A key that issues and verifies stream tokens (HMAC-SHA256).
pub struct TokenKey {
    id: KeyId,
    key: hmac::Key,
}

impl TokenKey {
    /// A key from raw bytes ([`TOKEN_KEY_MIN_BYTES`] to [`TOKEN_KEY_MAX_BYTES`] of them).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() < TOKEN_KEY_MIN_BYTES {
            return Err(KeyError::TooShort);
        }
        if bytes.len() > TOKEN_KEY_MAX_BYTES {
            return Err(KeyError::TooLong);
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, bytes);
        let tag = hmac::sign(&key, KEY_ID_LABEL);
        let mut id = [0u8; 4];
        for (dst, src) in id.iter_mut().zip(tag.as_ref()) {
            *dst = *src;
        }
        Ok(Self { id: KeyId(id), key })
    }

    /// A key from standard padded base64 (the `STREAMGUARD_TOKEN_KEY` form).
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| KeyError::NotBase64)?;
        Self::from_bytes(&bytes)
    }

    /// A fresh random key of [`TOKEN_KEY_MIN_BYTES`] bytes.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, KeyError> {
        let mut bytes = [0u8; TOKEN_KEY_MIN_BYTES];
        rng.fill(&mut bytes)
            .map_err(|_| KeyError::RandomnessUnavailable)?;
        Self::from_bytes(&bytes)
    }

    /// This key's public id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    pub(crate) fn hmac(&self) -> &hmac::Key {
        &self.key
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenKey({}, ..redacted..)", self.id)
    }
}

/// The keys a server accepts: the first one issues tokens, every one verifies them. Rotation
/// is: add the new key first, keep the old one until the tokens it issued have expired (one
/// TTL), then drop it.
#[derive(Debug)]
pub struct KeySet {
    /// Issues and verifies. A field of its own, so the set can never be empty.
    current: TokenKey,
    /// Verify only (being rotated out).
    previous: Vec<TokenKey>,
}

impl KeySet {
    /// A set from keys, current key first.
    pub fn new(keys: Vec<TokenKey>) -> Result<Self, KeyError> {
        if keys.len() > TOKEN_MAX_KEYS {
            return Err(KeyError::TooMany);
        }
        for (i, k) in keys.iter().enumerate() {
            if keys.iter().skip(i.saturating_add(1)).any(|o| o.id == k.id) {
                return Err(KeyError::DuplicateKeyId);
            }
        }
        let mut keys = keys.into_iter();
        let current = keys.next().ok_or(KeyError::Empty)?;
        Ok(Self {
            current,
            previous: keys.collect(),
        })
    }

    /// A set of one fresh random key from the operating system's generator (tokens then
    /// verify only in this process, until it restarts).
    pub fn random() -> Result<Self, KeyError> {
        TokenKey::generate(&ring::rand::SystemRandom::new()).map(Self::single)
    }

    /// A set holding one key.
    pub fn single(key: TokenKey) -> Self {
        Self {
            current: key,
            previous: Vec::new(),
        }
    }

    /// A set from a comma-separated list of standard padded base64 keys, current key first.
    pub fn from_base64_list(text: &str) -> Result<Self, KeyError> {
        let keys = text
            .split(',')
            .map(TokenKey::from_base64)
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(keys)
    }

    /// The key that issues new tokens.
    pub fn current(&self) -> &TokenKey {
        &self.current
    }

    /// Every key whose id is `id` (normally at most one).
    pub(crate) fn with_id(&self, id: [u8; 4]) -> impl Iterator<Item = &TokenKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .filter(move |k| k.id.0 == id)
    }
}

/// The Twilio auth token: the HMAC-SHA1 key of `X-Twilio-Signature`, and the source of the
/// replay store's key ([`crate::store::StoreKey`]).
pub struct AuthToken {
    key: hmac::Key,
    /// The same bytes as an HMAC-SHA256 key, from which the store key is derived.
    store_source: hmac::Key,
}

/// Why an auth token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthTokenError {
    /// The token is empty.
    Empty,
    /// The token is longer than 256 bytes (Twilio's are 32 hex characters).
    TooLong,
}

impl fmt::Display for AuthTokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("auth token is empty"),
            Self::TooLong => f.write_str("auth token is longer than 256 bytes"),
        }
    }
}

impl std::error::Error for AuthTokenError {}

impl AuthToken {
    /// Wraps the auth token from the Twilio console.
    pub fn new(token: &str) -> Result<Self, AuthTokenError> {
        if token.is_empty() {
            return Err(AuthTokenError::Empty);
        }
        if token.len() > 256 {
            return Err(AuthTokenError::TooLong);
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, token.as_bytes()),
            store_source: hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes()),
        })
    }

    pub(crate) fn hmac(&self) -> &hmac::Key {
        &self.key
    }

    pub(crate) fn store_key_source(&self) -> &hmac::Key {
        &self.store_source
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(..redacted..)")
    }
}

/// A stream token as it travels in TwiML: base64url text. Comparison is constant time.
#[derive(Clone)]
pub struct StreamToken(String);

impl StreamToken {
    pub(crate) fn new(text: String) -> Self {
        Self(text)
    }

    /// The token text, to be written into a `<Parameter>`. Never log it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl PartialEq for StreamToken {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq::constant_time_eq(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl Eq for StreamToken {}

impl fmt::Debug for StreamToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamToken(..redacted, {} chars..)", self.0.len())
    }
}
