//! The Redis store (`--replay-store redis://HOST:PORT[/DB]`, feature `redis`): the same
//! [`CallRecord`](super::CallRecord) rules, kept in one Redis shared by every instance and surviving restarts.
//!
//! # Atomicity
//!
//! Each operation is one Lua script ([`MINT_SCRIPT`], [`REDEEM_SCRIPT`]) over one key, which
//! Redis runs atomically: of any number of concurrent redemptions of one token, on any number
//! of instances, exactly one wins, decided by Redis. The scripts are the Lua twins of
//! [`CallRecord::mint`](super::CallRecord::mint) and
//! [`CallRecord::redeem`](super::CallRecord::redeem); a differential test drives both with the
//! same operations against a real Redis and compares every answer.
//!
//! # What Redis holds
//!
//! One hash per remembered call, named `streamguard:v1:call:{hex of StoreKey::call_id}`, with
//! the live token's key id, expiry and sealed nonce, the stream count and the keep-until time:
//! no token, nonce or CallSid in clear. Every key expires by itself (`PEXPIRE` to its
//! keep-until time plus [`EXPIRY_MARGIN_MS`]): nothing to clean up, and Redis memory is
//! bounded by the call rate times the call memory (`MEMORY USAGE`: 200 bytes a minted call,
//! 152 a streamed one; see the README).
//! The instance's clock decides what is live (`now` is an argument); Redis's own expiry only
//! collects the garbage, and durations, not instants, are handed to it, so clock skew between
//! instances and Redis does not shorten a record.
//!
//! # Faults fail closed
//!
//! Every operation is bounded by the store timeout (`--replay-store-timeout-ms`, default
//! [`DEFAULT_REDIS_TIMEOUT`]). Unreachable, slow or answering errors: the operation fails
//! ([`StoreError::Unavailable`], [`StoreError::Timeout`], [`StoreError::Failed`]) and the server
//! refuses the webhook or the stream; streams already authenticated do not touch the store and
//! continue. The connection is one multiplexed connection per instance (redis'
//! `ConnectionManager`), opened lazily, re-opened with backoff after a failure, so service
//! resumes by itself when Redis is back.
//!
//! The operator is told the cause once per outage: the first failure after a success is
//! logged at `warn` with the client's error (refused, TLS certificate not trusted, wrong
//! password, ...; never the password, which the error does not carry, and which is redacted
//! if it ever did), the following ones at `debug`, and the first success after them at `info`.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, Script, Value};

use super::{
    CallId, LiveToken, MintDecision, MintRefusal, Presented, RedeemRefusal, ReplayStore,
    StoreError, StoreFill, StoreFuture, StorePolicy,
};
use crate::secret::KeyId;
use crate::time::UnixTime;

/// Default bound on one store operation, connection included when one has to be opened: a
/// call's webhook and `start` each wait for at most this long before being refused. Loopback
/// answers in well under a millisecond, a network Redis in a few.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// Added to every key's Redis expiry, so that Redis never drops a record the instances still
/// count as live.
pub const EXPIRY_MARGIN_MS: u64 = 5_000;

/// The prefix of every key (versioned: a change of layout gets new names).
pub const KEY_PREFIX: &str = "streamguard:v1:call:";

/// [`CallRecord::mint`](super::CallRecord::mint) in Lua. `KEYS[1]`: the record. `ARGV`: now (ms), streams per call,
/// candidate key id (hex), candidate expiry (ms), candidate sealed nonce (hex). Fields: `k` key
/// id, `e` live token expiry (0: none), `s` sealed nonce, `n` streams, `u` keep until (ms).
/// Answers `{"issued"|"reused", k, e, s}` or `{"refused"}`.
pub const MINT_SCRIPT: &str = r#"
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local r = redis.call('HMGET', KEYS[1], 'k', 'e', 's', 'n', 'u')
local keep = tonumber(r[5]) or 0
local margin = tonumber(ARGV[6])
if keep <= now then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'k', ARGV[3], 'e', ARGV[4], 's', ARGV[5], 'n', '0', 'u', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) - now + margin)
  return {'issued', ARGV[3], ARGV[4], ARGV[5]}
end
local streams = tonumber(r[4]) or 0
if streams >= limit then
  return {'refused'}
end
local e = tonumber(r[2]) or 0
if e > now then
  return {'reused', r[1], r[2], r[3]}
end
local u = math.max(keep, tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], 'k', ARGV[3], 'e', ARGV[4], 's', ARGV[5], 'u', string.format('%d', u))
redis.call('PEXPIRE', KEYS[1], u - now + margin)
return {'issued', ARGV[3], ARGV[4], ARGV[5]}
"#;

/// [`CallRecord::redeem`](super::CallRecord::redeem) in Lua. `KEYS[1]`: the record. `ARGV`: now (ms), streams per call,
/// call memory (ms), presented expiry (ms), presented sealed nonce (hex), expiry margin (ms).
/// Answers `ok`, `reused`, `streamed` or `not_on_record`. (The sealed nonces are compared as
/// strings, not in constant time: they are PRF outputs compared after the token's MAC has
/// been verified in constant time, and their timing tells nothing about any secret.)
pub const REDEEM_SCRIPT: &str = r#"
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local memory = tonumber(ARGV[3])
local margin = tonumber(ARGV[6])
local r = redis.call('HMGET', KEYS[1], 'k', 'e', 's', 'n', 'u')
local keep = tonumber(r[5]) or 0
if keep <= now then
  return 'not_on_record'
end
local streams = tonumber(r[4]) or 0
local e = tonumber(r[2]) or 0
if not (e > now and r[2] == ARGV[4] and r[3] == ARGV[5]) then
  if streams > 0 then return 'reused' end
  return 'not_on_record'
end
if streams >= limit then
  return 'streamed'
end
local u = math.max(keep, now + memory)
redis.call('HSET', KEYS[1], 'k', '', 'e', '0', 's', '', 'n', tostring(streams + 1), 'u', string.format('%d', u))
redis.call('PEXPIRE', KEYS[1], u - now + margin)
return 'ok'
"#;

/// Where the Redis store connects, and how. The password comes from the environment
/// (`STREAMGUARD_REDIS_PASSWORD`), never from the URL or the command line.
#[derive(Clone)]
pub struct RedisSettings {
    /// `redis://HOST:PORT[/DB]` or `rediss://HOST:PORT[/DB]` (TLS), without credentials.
    url: String,
    username: Option<String>,
    password: Option<String>,
    /// Bound on each operation.
    pub timeout: Duration,
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "..redacted.."))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Why Redis settings were refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisSettingsError {
    /// Not `redis://` or `rediss://` with a host, or not parseable.
    Url(&'static str),
    /// The URL carries a password (it would end up in process listings and logs).
    PasswordInUrl,
}

impl fmt::Display for RedisSettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Url(rule) => write!(
                f,
                "--replay-store: {rule}; expected memory, redis://HOST:PORT[/DB] or rediss://HOST:PORT[/DB]"
            ),
            Self::PasswordInUrl => f.write_str(
                "--replay-store: the URL carries a password; put it in STREAMGUARD_REDIS_PASSWORD \
                 (and a user in STREAMGUARD_REDIS_USERNAME), never on the command line",
            ),
        }
    }
}

impl std::error::Error for RedisSettingsError {}

impl RedisSettings {
    /// Settings for `url`, with an optional ACL user and password (from the environment).
    pub fn new(
        url: &str,
        username: Option<String>,
        password: Option<String>,
        timeout: Duration,
    ) -> Result<Self, RedisSettingsError> {
        let rest = url
            .strip_prefix("redis://")
            .or_else(|| url.strip_prefix("rediss://"))
            .ok_or(RedisSettingsError::Url(
                "the URL must start with redis:// or rediss://",
            ))?;
        let authority = rest.split('/').next().unwrap_or_default();
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if userinfo.contains(':') {
                return Err(RedisSettingsError::PasswordInUrl);
            }
            return Err(RedisSettingsError::Url(
                "the URL must carry no user (use STREAMGUARD_REDIS_USERNAME)",
            ));
        }
        if authority.is_empty() || authority.starts_with(':') {
            return Err(RedisSettingsError::Url("the URL must name a host"));
        }
        if rest.contains(['?', '#']) {
            return Err(RedisSettingsError::Url(
                "the URL must have no query or fragment",
            ));
        }
        let parsed = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(|_| RedisSettingsError::Url("the URL cannot be parsed"))?;
        if parsed.redis_settings().password().is_some() {
            return Err(RedisSettingsError::PasswordInUrl);
        }
        Ok(Self {
            url: url.to_owned(),
            username: username.filter(|u| !u.is_empty()),
            password: password.filter(|p| !p.is_empty()),
            timeout,
        })
    }

    /// The URL, which never holds a credential: safe to log.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the connection is TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.url.starts_with("rediss://")
    }
}

/// The Redis store.
pub struct RedisStore {
    conn: ConnectionManager,
    timeout: Duration,
    policy: StorePolicy,
    mint: Script,
    redeem: Script,
    url: String,
    /// Only to redact it from an error message, should a client error ever carry it.
    password: Option<String>,
    /// Whether the last operation failed (the cause is logged once per outage).
    failing: AtomicBool,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes.iter().fold(
        String::with_capacity(bytes.len().saturating_mul(2)),
        |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        },
    )
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let bytes = s.as_bytes();
    if bytes.len() != N.checked_mul(2)? {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *o = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

fn key_of(call: CallId) -> String {
    let mut k = String::with_capacity(KEY_PREFIX.len().saturating_add(32));
    k.push_str(KEY_PREFIX);
    k.push_str(&hex(&call.0));
    k
}

fn store_error(e: &RedisError) -> StoreError {
    let unreachable = e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || matches!(e.kind(), ErrorKind::Client | ErrorKind::InvalidClientConfig);
    if e.is_timeout() {
        StoreError::Timeout
    } else if unreachable {
        StoreError::Unavailable
    } else {
        StoreError::Failed
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads the live token a mint script answered with.
fn live_of(parts: &[Value]) -> Option<LiveToken> {
    let [_, k, e, s] = parts else {
        return None;
    };
    Some(LiveToken {
        key_id: KeyId(unhex::<4>(&text(k)?)?),
        expires_at: UnixTime::from_millis(text(e)?.parse().ok()?),
        sealed: unhex::<16>(&text(s)?)?,
    })
}

impl RedisStore {
    /// A store on `settings`, applying `policy`. Connects lazily: it starts even while Redis
    /// is unreachable (every operation then fails closed until it is back).
    pub fn new(settings: &RedisSettings, policy: StorePolicy) -> Result<Self, StoreError> {
        let mut info = redis::IntoConnectionInfo::into_connection_info(settings.url.as_str())
            .map_err(|_| StoreError::Failed)?;
        let mut redis_info = info.redis_settings().clone();
        if let Some(u) = &settings.username {
            redis_info = redis_info.set_username(u);
        }
        if let Some(p) = &settings.password {
            redis_info = redis_info.set_password(p);
        }
        info = info
            .set_redis_settings(redis_info.set_lib_name("streamguard", env!("CARGO_PKG_VERSION")));
        let client = redis::Client::open(info).map_err(|_| StoreError::Failed)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(500));
        let conn =
            ConnectionManager::new_lazy_with_config(client, config).map_err(|e| store_error(&e))?;
        Ok(Self {
            conn,
            timeout: settings.timeout,
            policy,
            mint: Script::new(MINT_SCRIPT),
            redeem: Script::new(REDEEM_SCRIPT),
            url: settings.url.clone(),
            password: settings.password.clone(),
            failing: AtomicBool::new(false),
        })
    }

    fn millis(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }

    async fn run(&self, invocation: redis::ScriptInvocation<'_>) -> Result<Value, StoreError> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, invocation.invoke_async::<Value>(&mut conn)).await
        {
            Ok(Ok(v)) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(replay_store = %self.url, "the replay store answers again");
                }
                Ok(v)
            }
            Ok(Err(e)) => {
                let error = store_error(&e);
                self.failed(error, &e.to_string());
                Err(error)
            }
            Err(_) => {
                let ms = self.timeout.as_millis();
                self.failed(StoreError::Timeout, &format!("no answer within {ms} ms"));
                Err(StoreError::Timeout)
            }
        }
    }

    /// Logs a failed operation: its cause at `warn` the first time in a row, then at `debug`.
    fn failed(&self, error: StoreError, cause: &str) {
        let cause = match &self.password {
            Some(p) if cause.contains(p.as_str()) => "(a client error, redacted)",
            _ => cause,
        };
        if self.failing.swap(true, Ordering::Relaxed) {
            tracing::debug!(replay_store = %self.url, kind = error.kind(), cause, "replay store error");
        } else {
            tracing::warn!(
                replay_store = %self.url,
                kind = error.kind(),
                cause,
                "the replay store fails; new calls are refused until it answers"
            );
        }
    }

    async fn mint_async(
        &self,
        call: CallId,
        candidate: LiveToken,
        now: UnixTime,
    ) -> Result<MintDecision, StoreError> {
        let mut inv = self.mint.key(key_of(call));
        inv.arg(now.as_millis())
            .arg(self.policy.streams_per_call)
            .arg(hex(&candidate.key_id.to_bytes()))
            .arg(candidate.expires_at.as_millis())
            .arg(hex(&candidate.sealed))
            .arg(EXPIRY_MARGIN_MS);
        let answer = self.run(inv).await?;
        let Value::Array(parts) = answer else {
            return Err(StoreError::Failed);
        };
        match parts.first().and_then(text).as_deref() {
            Some("issued") => live_of(&parts).map(MintDecision::Issued),
            Some("reused") => live_of(&parts).map(MintDecision::Reused),
            Some("refused") => Some(MintDecision::Refused(MintRefusal::CallAlreadyStreamed)),
            _ => None,
        }
        .ok_or(StoreError::Failed)
    }

    async fn redeem_async(
        &self,
        call: CallId,
        presented: Presented,
        now: UnixTime,
    ) -> Result<Result<(), RedeemRefusal>, StoreError> {
        let mut inv = self.redeem.key(key_of(call));
        inv.arg(now.as_millis())
            .arg(self.policy.streams_per_call)
            .arg(Self::millis(self.policy.call_memory))
            .arg(presented.expires_at.as_millis())
            .arg(hex(&presented.sealed))
            .arg(EXPIRY_MARGIN_MS);
        let answer = self.run(inv).await?;
        match text(&answer).as_deref() {
            Some("ok") => Ok(Ok(())),
            Some("reused") => Ok(Err(RedeemRefusal::TokenReused)),
            Some("streamed") => Ok(Err(RedeemRefusal::CallAlreadyStreamed)),
            Some("not_on_record") => Ok(Err(RedeemRefusal::NotOnRecord)),
            _ => Err(StoreError::Failed),
        }
    }
}

impl ReplayStore for RedisStore {
    fn mint(
        &self,
        call: CallId,
        candidate: LiveToken,
        now: UnixTime,
    ) -> StoreFuture<'_, MintDecision> {
        Box::pin(self.mint_async(call, candidate, now))
    }

    fn redeem(
        &self,
        call: CallId,
        presented: Presented,
        now: UnixTime,
    ) -> StoreFuture<'_, Result<(), RedeemRefusal>> {
        Box::pin(self.redeem_async(call, presented, now))
    }

    fn fill(&self) -> StoreFill {
        StoreFill {
            records: None,
            capacity: None,
        }
    }
}
