//! The fixed, public test secrets and values every target uses, the fixture tokens minted
//! from them, and the replay store that holds them (see the module docs of
//! [`crate::invariants`]).

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::limits::{DEFAULT_CALL_MEMORY, TOKEN_NONCE_BYTES};
use crate::secret::{AuthToken, KeySet, TokenKey};
use crate::sid::{AccountSid, CallSid};
use crate::store::{LiveToken, MemoryStore, StoreKey, StorePolicy};
use crate::time::UnixTime;
use crate::token;

#[cfg(doc)]
use crate::limits::DEFAULT_MAX_MESSAGE_BYTES;

// ---------------------------------------------------------------------------------------------
// Fixed test secrets and values
// ---------------------------------------------------------------------------------------------

/// The token key every target verifies with (32 public bytes: a test key, never a real one).
pub const TOKEN_KEY: [u8; 32] = *b"streamguard-fuzz-token-key-00001";

/// A second key, which issues [`FixtureToken::OtherKey`] and is not in the verifying set.
pub const OTHER_TOKEN_KEY: [u8; 32] = *b"streamguard-fuzz-token-key-00002";

/// A key that never issues anything the targets see: nothing may ever verify with it.
pub const UNUSED_TOKEN_KEY: [u8; 32] = *b"streamguard-fuzz-unused-key-0003";

/// The Twilio auth token every signature is made and checked with (public test value).
pub const AUTH_TOKEN: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// Another auth token: a signature made with it must never be accepted.
pub const OTHER_AUTH_TOKEN: &str = "ffeeddccbbaa99887766554433221100";

/// The configured account (`TWILIO_ACCOUNT_SID`).
pub const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
/// An account that is not the configured one.
pub const OTHER_ACCOUNT: &str = "ACfedcba9876543210fedcba9876543210";
/// The call most tokens are issued for.
pub const CALL: &str = "CA0123456789abcdef0123456789abcdef";
/// Another call of the configured account.
pub const OTHER_CALL: &str = "CAfedcba9876543210fedcba9876543210";
/// The stream of most messages.
pub const STREAM: &str = "MZ0123456789abcdef0123456789abcdef";
/// Another stream.
pub const OTHER_STREAM: &str = "MZfedcba9876543210fedcba9876543210";

/// The fixed "now" of every target: 2023-11-14T22:13:20Z.
pub const NOW: UnixTime = UnixTime::from_millis(1_700_000_000_000);

/// Lifetime of the fixture tokens.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);

/// The stream route of the upgrade targets.
pub const STREAM_PATH: &str = "/voice/stream";

/// Largest text message in the `session` target. Smaller than the server's default
/// ([`DEFAULT_MAX_MESSAGE_BYTES`]) so that an oversized message is cheap to build; the
/// `start_frame` target uses the default.
pub const SESSION_MAX_MESSAGE_BYTES: usize = 2048;

/// Reports a violated invariant: this is the crash the fuzzer looks for.
#[track_caller]
pub(super) fn violated(what: fmt::Arguments<'_>) -> ! {
    panic!("invariant violated: {what}")
}

/// Unwraps a fixture built from the constants above: failing is a broken fixture, not an input.
#[track_caller]
fn fixture<T, E: fmt::Debug>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("broken fuzz fixture {what}: {e:?}"),
    }
}

/// The tokens minted for the fixtures, all with [`TOKEN_TTL`] and a distinct fixed nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(serde::Serialize, serde::Deserialize)]
pub enum FixtureToken {
    /// For ([`ACCOUNT`], [`CALL`]) at [`NOW`] with [`TOKEN_KEY`]: the one that authenticates.
    Valid,
    /// For ([`ACCOUNT`], [`OTHER_CALL`]) at [`NOW`] with [`TOKEN_KEY`].
    OtherCall,
    /// For ([`OTHER_ACCOUNT`], [`CALL`]) at [`NOW`] with [`TOKEN_KEY`].
    OtherAccount,
    /// For ([`ACCOUNT`], [`CALL`]) at [`NOW`] with [`OTHER_TOKEN_KEY`] (not in the key set).
    OtherKey,
    /// For ([`ACCOUNT`], [`CALL`]) two minutes before [`NOW`]: expired at `NOW`.
    Expired,
    /// A second token for ([`ACCOUNT`], [`CALL`]) with a valid MAC, but not the one the replay
    /// store minted ([`ON_RECORD`]): it never opens a stream.
    SecondForCall,
}

impl FixtureToken {
    /// Every fixture token.
    pub const ALL: [Self; 6] = [
        Self::Valid,
        Self::OtherCall,
        Self::OtherAccount,
        Self::OtherKey,
        Self::Expired,
        Self::SecondForCall,
    ];
}

pub(super) struct IssuedToken {
    pub(super) which: FixtureToken,
    pub(super) text: String,
    pub(super) account: AccountSid,
    pub(super) call: CallSid,
    pub(super) by_token_key: bool,
    pub(super) expires_at: UnixTime,
    pub(super) nonce: [u8; TOKEN_NONCE_BYTES],
}

/// The fixed values every target shares, built once.
pub(super) struct Fixtures {
    pub(super) keys: KeySet,
    pub(super) store_key: StoreKey,
    pub(super) unused_keys: KeySet,
    pub(super) auth: AuthToken,
    pub(super) account: AccountSid,
    pub(super) other_account: AccountSid,
    pub(super) call: CallSid,
    pub(super) other_call: CallSid,
    pub(super) tokens: Vec<IssuedToken>,
    pub(super) media_payload: String,
    pub(super) oversized: String,
}

pub(super) fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(build_fixtures)
}

fn build_fixtures() -> Fixtures {
    let key = fixture(TokenKey::from_bytes(&TOKEN_KEY), "token key");
    let other_key = fixture(TokenKey::from_bytes(&OTHER_TOKEN_KEY), "other token key");
    let account = fixture(AccountSid::parse(ACCOUNT), "account");
    let other_account = fixture(AccountSid::parse(OTHER_ACCOUNT), "other account");
    let call = fixture(CallSid::parse(CALL), "call");
    let other_call = fixture(CallSid::parse(OTHER_CALL), "other call");
    let two_minutes_ago = UnixTime::from_millis(NOW.as_millis().saturating_sub(120_000));

    let specs = [
        (FixtureToken::Valid, &key, account, call, NOW, 1u8),
        (FixtureToken::OtherCall, &key, account, other_call, NOW, 2),
        (
            FixtureToken::OtherAccount,
            &key,
            other_account,
            call,
            NOW,
            3,
        ),
        (FixtureToken::OtherKey, &other_key, account, call, NOW, 4),
        (
            FixtureToken::Expired,
            &key,
            account,
            call,
            two_minutes_ago,
            5,
        ),
        (FixtureToken::SecondForCall, &key, account, call, NOW, 6),
    ];
    let tokens = specs
        .into_iter()
        .map(|(which, k, account, call, at, n)| {
            let nonce = [n; TOKEN_NONCE_BYTES];
            let text = fixture(
                token::issue_with_nonce(k, &account, &call, at, TOKEN_TTL, nonce),
                "token",
            )
            .as_str()
            .to_owned();
            IssuedToken {
                which,
                text,
                account,
                call,
                by_token_key: k.id() == key.id(),
                expires_at: fixture(at.checked_add(TOKEN_TTL).ok_or(()), "expiry"),
                nonce,
            }
        })
        .collect();

    // 160 bytes of mu-law silence: one 20 ms frame (PROTOCOL.md §2).
    let media_payload = STANDARD.encode([0xFFu8; 160]);
    let prefix = format!(
        r#"{{"event":"media","sequenceNumber":"3","streamSid":"{STREAM}","media":{{"track":"inbound","chunk":"1","timestamp":"5","payload":""#
    );
    let suffix = r#""}}"#;
    let fill = SESSION_MAX_MESSAGE_BYTES
        .saturating_add(1)
        .saturating_sub(prefix.len())
        .saturating_sub(suffix.len());
    let oversized = format!("{prefix}{}{suffix}", "A".repeat(fill));

    let auth = fixture(AuthToken::new(AUTH_TOKEN), "auth token");
    Fixtures {
        store_key: StoreKey::derive(&auth),
        keys: KeySet::single(key),
        unused_keys: KeySet::single(fixture(
            TokenKey::from_bytes(&UNUSED_TOKEN_KEY),
            "unused token key",
        )),
        auth,
        account,
        other_account,
        call,
        other_call,
        tokens,
        media_payload,
        oversized,
    }
}

impl Fixtures {
    pub(super) fn token(&self, which: FixtureToken) -> &IssuedToken {
        match self.tokens.iter().find(|t| t.which == which) {
            Some(t) => t,
            None => panic!("broken fuzz fixture: no token {which:?}"),
        }
    }

    pub(super) fn issued(&self, text: &str) -> Option<&IssuedToken> {
        self.tokens.iter().find(|t| t.text == text)
    }
}

/// The fixture tokens a replay store holds, as if the server had minted them: the live token
/// of ([`ACCOUNT`], [`CALL`]) is [`FixtureToken::Valid`], that of ([`ACCOUNT`],
/// [`OTHER_CALL`]) is [`FixtureToken::OtherCall`]. Every other fixture token is not on record
/// (another account, another key, expired, or superseded for its call).
pub const ON_RECORD: [FixtureToken; 2] = [FixtureToken::Valid, FixtureToken::OtherCall];

/// A fresh in-memory replay store holding the tokens of [`ON_RECORD`] (one stream per call,
/// the default call memory).
pub(super) fn fixture_store() -> MemoryStore {
    let fx = fixtures();
    let store = MemoryStore::new(
        8,
        StorePolicy {
            token_ttl: TOKEN_TTL,
            call_memory: DEFAULT_CALL_MEMORY,
            streams_per_call: 1,
        },
    );
    for which in ON_RECORD {
        let t = fx.token(which);
        let live = LiveToken {
            key_id: fx.keys.current().id(),
            expires_at: t.expires_at,
            sealed: fx
                .store_key
                .seal_nonce(&t.account, &t.call, t.expires_at, &t.nonce),
        };
        let id = fx.store_key.call_id(&t.account, &t.call);
        fixture(store.mint_now(id, live, NOW), "fixture store");
    }
    store
}

/// The text of a fixture token (deterministic: the same on every run and machine).
pub fn fixture_token(which: FixtureToken) -> &'static str {
    &fixtures().token(which).text
}
