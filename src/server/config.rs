//! Server configuration: the validated form of the command line and the environment.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::limits::{
    DEFAULT_CALL_CAPACITY, DEFAULT_CALL_MEMORY, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_PER_IP, DEFAULT_MAX_STREAMS, DEFAULT_START_TIMEOUT,
    DEFAULT_STREAMS_PER_CALL, DEFAULT_TOKEN_TTL, MAX_CALL_MEMORY, MAX_STREAMS_PER_CALL,
    MAX_TOKEN_TTL, MIN_TOKEN_TTL,
};
use crate::secret::{AuthToken, KeySet};

/// The replay store timeout when none is given (`--replay-store-timeout-ms`).
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(250);
use crate::sid::AccountSid;
use crate::store::StorePolicy;
use crate::upgrade::SignatureMode;

/// The route of the voice webhook by default (`--webhook-path`).
pub const DEFAULT_WEBHOOK_PATH: &str = "/voice/webhook";
/// The route of the media stream by default (`--stream-path`).
pub const DEFAULT_STREAM_PATH: &str = "/voice/stream";
/// The health check route.
pub const HEALTH_PATH: &str = "/healthz";
/// The metrics route on `--metrics-listen`.
pub const METRICS_PATH: &str = "/metrics";

/// What Twilio sees: an `http(s)` origin plus an optional path prefix that a proxy in front
/// strips. Signed URLs and the stream URL are built from it, never from `Host` or
/// `X-Forwarded-*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicUrl {
    /// `https://voice.example.com/prefix`, without a trailing `/`.
    http: String,
    /// The same with `wss` (or `ws`).
    ws: String,
}

impl PublicUrl {
    /// Parses `--public-url`: `http://` or `https://`, a host, an optional path prefix, no
    /// query, no fragment. One trailing `/` is dropped.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let bad = ConfigError::PublicUrl;
        let (scheme, rest) = s
            .split_once("://")
            .ok_or(bad("it must start with https:// (or http://)"))?;
        let ws_scheme = match scheme {
            "https" => "wss",
            "http" => "ws",
            _ => return Err(bad("its scheme must be https (or http), in lower case")),
        };
        if rest.is_empty() || rest.starts_with('/') {
            return Err(bad("it must name a host after the scheme"));
        }
        if rest.contains(['?', '#']) {
            return Err(bad(
                "it must have no query or fragment (Twilio drops the query of a stream URL)",
            ));
        }
        if rest.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(bad("it must have no spaces or control characters"));
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        // The host part must be something the signature code can split (port checks etc.).
        let http = format!("{scheme}://{rest}");
        let port_rule = "its host or port cannot be used (port must be 1 to 65535)";
        crate::signature::port_variants(&http).map_err(|_| bad(port_rule))?;
        let authority = rest.split('/').next().unwrap_or_default();
        let after_host = match authority.rfind(']') {
            Some(end) => authority.get(end..).unwrap_or_default(),
            None => authority,
        };
        if let Some((_, port)) = after_host.rsplit_once(':')
            && port.parse::<u16>().map_or(true, |p| p == 0)
        {
            return Err(bad(port_rule));
        }
        Ok(Self {
            ws: format!("{ws_scheme}://{rest}"),
            http,
        })
    }

    /// The `http(s)` form.
    pub fn http(&self) -> &str {
        &self.http
    }

    /// The `ws(s)` form.
    pub fn ws(&self) -> &str {
        &self.ws
    }

    /// Whether it is `https` (Twilio connects only to `wss://` on port 443).
    pub fn is_https(&self) -> bool {
        self.http.starts_with("https://")
    }

    /// The path prefix after the host (`""` when there is none).
    pub fn path_prefix(&self) -> &str {
        let after_scheme = self.http.split_once("://").map_or("", |(_, r)| r);
        after_scheme
            .find('/')
            .map_or("", |i| after_scheme.get(i..).unwrap_or(""))
    }
}

/// Why a configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `--public-url` is not an `http(s)` URL without query or fragment; says which rule.
    PublicUrl(&'static str),
    /// A route does not start with `/`, has a `?`/`#`, or two routes collide.
    Path(&'static str),
    /// A numeric setting is out of range.
    Range(&'static str),
    /// The replay store cannot be set up.
    Store(&'static str),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PublicUrl(rule) => write!(
                f,
                "--public-url: {rule}; expected the origin Twilio sees plus an optional path \
                 prefix, e.g. https://voice.example.com"
            ),
            Self::Path(what) | Self::Range(what) | Self::Store(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where single use is decided (`--replay-store`).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum ReplayStoreConfig {
    /// `memory`: this process only (the default).
    #[default]
    Memory,
    /// `redis://...` or `rediss://...`: shared by every instance, kept across restarts.
    #[cfg(feature = "redis")]
    Redis(crate::store::RedisSettings),
}

impl ReplayStoreConfig {
    /// What to log: `memory`, or the Redis URL (which holds no credential).
    pub fn describe(&self) -> String {
        match self {
            Self::Memory => "memory".to_owned(),
            #[cfg(feature = "redis")]
            Self::Redis(r) => format!("{} (timeout {} ms)", r.url(), r.timeout.as_millis()),
        }
    }
}

/// Why the environment does not make a configuration: each message names the variable and
/// what is wrong with it, never its value.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvError {
    /// A required variable is not set (or is empty).
    Missing(&'static str),
    /// A variable is set but cannot be used; the text says why.
    Invalid(&'static str, String),
    /// The variables make a configuration that cannot work.
    Config(ConfigError),
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(name) => write!(f, "{name} is not set; it is required"),
            Self::Invalid(name, why) => write!(f, "{name}: {why}"),
            Self::Config(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for EnvError {}

/// Where settings are read from: the process environment ([`Vars::process`]) or, for tests
/// and embedders, any list of pairs ([`Vars::pairs`]).
pub struct Vars<'a> {
    lookup: Box<dyn Fn(&'static str) -> Result<Option<String>, EnvError> + 'a>,
}

impl fmt::Debug for Vars<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Vars(..)")
    }
}

impl<'a> Vars<'a> {
    /// The process environment.
    pub fn process() -> Self {
        Self {
            lookup: Box::new(|name| match std::env::var(name) {
                Ok(v) => Ok(Some(v)),
                Err(std::env::VarError::NotPresent) => Ok(None),
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(EnvError::Invalid(name, "not valid UTF-8".to_owned()))
                }
            }),
        }
    }

    /// The variables in `pairs` (name, value), and no other.
    pub fn pairs(pairs: &'a [(&'a str, &'a str)]) -> Self {
        Self {
            lookup: Box::new(move |name| {
                Ok(pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned()))
            }),
        }
    }

    /// `name`, if set (empty counts as unset).
    fn get(&self, name: &'static str) -> Result<Option<String>, EnvError> {
        Ok((self.lookup)(name)?.filter(|v| !v.is_empty()))
    }

    fn required(&self, name: &'static str) -> Result<String, EnvError> {
        self.get(name)?.ok_or(EnvError::Missing(name))
    }
}

/// The secrets, from `TWILIO_AUTH_TOKEN`, `TWILIO_ACCOUNT_SID` and `STREAMGUARD_TOKEN_KEY`
/// (a random key, with a warning, when it is unset; an error when it is set but empty).
pub fn secrets_from_env() -> Result<(AuthToken, AccountSid, KeySet), EnvError> {
    secrets_from(&Vars::process())
}

/// [`secrets_from_env`], from `vars`.
pub fn secrets_from(vars: &Vars<'_>) -> Result<(AuthToken, AccountSid, KeySet), EnvError> {
    let auth = AuthToken::new(&vars.required("TWILIO_AUTH_TOKEN")?)
        .map_err(|e| EnvError::Invalid("TWILIO_AUTH_TOKEN", e.to_string()))?;
    let account = AccountSid::parse(&vars.required("TWILIO_ACCOUNT_SID")?).map_err(|e| {
        EnvError::Invalid(
            "TWILIO_ACCOUNT_SID",
            format!("{e} (expected AC followed by 32 hex digits)"),
        )
    })?;
    let keys = match (vars.lookup)("STREAMGUARD_TOKEN_KEY")? {
        Some(text) if text.trim().is_empty() => {
            return Err(EnvError::Invalid(
                "STREAMGUARD_TOKEN_KEY",
                "set but empty: set it to the standard base64 of at least 32 random bytes \
                 (e.g. `openssl rand -base64 32`), or unset it to use a random key"
                    .to_owned(),
            ));
        }
        Some(text) => KeySet::from_base64_list(&text)
            .map_err(|e| EnvError::Invalid("STREAMGUARD_TOKEN_KEY", e.to_string()))?,
        None => {
            tracing::warn!(
                "STREAMGUARD_TOKEN_KEY is not set: using a random key. Tokens will not survive a \
                 restart or verify on another instance. Set it to the standard base64 of at least \
                 32 random bytes (e.g. `openssl rand -base64 32`)."
            );
            KeySet::random()
                .map_err(|e| EnvError::Invalid("STREAMGUARD_TOKEN_KEY", e.to_string()))?
        }
    };
    Ok((auth, account, keys))
}

/// The replay store named by `spec` (`memory`, `redis://...`, `rediss://...`), with the
/// Redis credentials from `STREAMGUARD_REDIS_USERNAME` and `STREAMGUARD_REDIS_PASSWORD`.
pub fn replay_store_from(spec: &str, timeout: Duration) -> Result<ReplayStoreConfig, EnvError> {
    replay_store_with(spec, timeout, &Vars::process())
}

fn replay_store_with(
    spec: &str,
    timeout: Duration,
    vars: &Vars<'_>,
) -> Result<ReplayStoreConfig, EnvError> {
    if spec == "memory" {
        return Ok(ReplayStoreConfig::Memory);
    }
    #[cfg(feature = "redis")]
    {
        let user = vars.get("STREAMGUARD_REDIS_USERNAME")?;
        let password = vars.get("STREAMGUARD_REDIS_PASSWORD")?;
        crate::store::RedisSettings::new(spec, user, password, timeout)
            .map(ReplayStoreConfig::Redis)
            .map_err(|e| EnvError::Invalid("STREAMGUARD_REPLAY_STORE", e.to_string()))
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = (timeout, vars);
        Err(EnvError::Invalid(
            "STREAMGUARD_REPLAY_STORE",
            "only `memory` in a build without the `redis` feature".to_owned(),
        ))
    }
}

/// Everything the server needs. Immutable once the server runs: nothing here is ever written
/// by a connection.
#[derive(Debug)]
pub struct Config {
    /// `--listen` / `STREAMGUARD_LISTEN`: where the standalone server listens (an embedding
    /// application uses its own listener).
    pub listen: SocketAddr,
    /// `--public-url`.
    pub public_url: PublicUrl,
    /// `--webhook-path`.
    pub webhook_path: String,
    /// `--stream-path`.
    pub stream_path: String,
    /// `--token-ttl`.
    pub token_ttl: Duration,
    /// `--call-memory`: how long a call that has streamed is refused a new token and stream.
    pub call_memory: Duration,
    /// `--streams-per-call`.
    pub streams_per_call: u32,
    /// `--call-capacity`: most calls the in-memory store remembers at once.
    pub call_capacity: usize,
    /// `--replay-store`.
    pub replay_store: ReplayStoreConfig,
    /// `--start-timeout-ms`.
    pub start_timeout: Duration,
    /// `--upgrade-signature`.
    pub upgrade_signature: SignatureMode,
    /// `--max-pending`.
    pub max_pending: usize,
    /// `--max-pending-per-ip`.
    pub max_pending_per_ip: usize,
    /// `--max-streams`.
    pub max_streams: usize,
    /// `--max-message-bytes`.
    pub max_message_bytes: usize,
    /// `--max-connections`: TCP connections at once, of every kind (lowered at start to what
    /// the file-descriptor limit allows).
    pub max_connections: usize,
    /// `--metrics-listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// `TWILIO_AUTH_TOKEN`.
    pub auth_token: AuthToken,
    /// `TWILIO_ACCOUNT_SID`.
    pub account_sid: AccountSid,
    /// `STREAMGUARD_TOKEN_KEY`.
    pub keys: KeySet,
}

impl Config {
    /// A configuration with every default, for `public_url` and the given secrets.
    pub fn new(
        public_url: PublicUrl,
        auth_token: AuthToken,
        account_sid: AccountSid,
        keys: KeySet,
    ) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url,
            webhook_path: DEFAULT_WEBHOOK_PATH.to_owned(),
            stream_path: DEFAULT_STREAM_PATH.to_owned(),
            token_ttl: DEFAULT_TOKEN_TTL,
            call_memory: DEFAULT_CALL_MEMORY,
            streams_per_call: DEFAULT_STREAMS_PER_CALL,
            call_capacity: DEFAULT_CALL_CAPACITY,
            replay_store: ReplayStoreConfig::Memory,
            start_timeout: DEFAULT_START_TIMEOUT,
            upgrade_signature: SignatureMode::Required,
            max_pending: DEFAULT_MAX_PENDING,
            max_pending_per_ip: DEFAULT_MAX_PENDING_PER_IP,
            max_streams: DEFAULT_MAX_STREAMS,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            metrics_listen: None,
            auth_token,
            account_sid,
            keys,
        }
    }

    /// The configuration `streamguard serve` would run with given the environment and no
    /// flags: `STREAMGUARD_LISTEN` (default `127.0.0.1:8080`), `STREAMGUARD_PUBLIC_URL`
    /// (required), the secrets ([`secrets_from_env`]) and `STREAMGUARD_REPLAY_STORE` (default
    /// `memory`); every other setting at its default. Errors name the variable and the rule,
    /// never a value.
    ///
    /// ```no_run
    /// let config = streamguard::server::Config::from_env()?;
    /// # Ok::<(), streamguard::server::EnvError>(())
    /// ```
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_vars(&Vars::process())
    }

    /// [`Self::from_env`], from `vars`.
    ///
    /// ```
    /// use streamguard::server::{Config, EnvError};
    /// use streamguard::server::config::Vars;
    /// let vars = [("TWILIO_AUTH_TOKEN", "x"), ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef")];
    /// assert_eq!(
    ///     Config::from_vars(&Vars::pairs(&vars)).unwrap_err(),
    ///     EnvError::Missing("STREAMGUARD_PUBLIC_URL")
    /// );
    /// ```
    pub fn from_vars(vars: &Vars<'_>) -> Result<Self, EnvError> {
        let listen = match vars.get("STREAMGUARD_LISTEN")? {
            Some(text) => text.parse().map_err(|_| {
                EnvError::Invalid("STREAMGUARD_LISTEN", format!("{text:?} is not HOST:PORT"))
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let public_url = PublicUrl::parse(&vars.required("STREAMGUARD_PUBLIC_URL")?)
            .map_err(EnvError::Config)?;
        let (auth, account, keys) = secrets_from(vars)?;
        let mut c = Self::new(public_url, auth, account, keys);
        c.listen = listen;
        if let Some(spec) = vars.get("STREAMGUARD_REPLAY_STORE")? {
            c.replay_store = replay_store_with(&spec, DEFAULT_STORE_TIMEOUT, vars)?;
        }
        c.validate().map_err(EnvError::Config)?;
        Ok(c)
    }

    /// Checks the settings against each other and their ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, path) in [
            ("--webhook-path", &self.webhook_path),
            ("--stream-path", &self.stream_path),
        ] {
            if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
                return Err(ConfigError::Path(if name == "--webhook-path" {
                    "--webhook-path must start with / and have no ? or #"
                } else {
                    "--stream-path must start with / and have no ? or #"
                }));
            }
            if path == HEALTH_PATH {
                return Err(ConfigError::Path("routes must not be /healthz"));
            }
        }
        if self.webhook_path == self.stream_path {
            return Err(ConfigError::Path(
                "--webhook-path and --stream-path must differ",
            ));
        }
        if self.token_ttl < MIN_TOKEN_TTL || self.token_ttl > MAX_TOKEN_TTL {
            return Err(ConfigError::Range(
                "--token-ttl must be between 1 and 3600 seconds",
            ));
        }
        if self.call_memory < self.token_ttl || self.call_memory > MAX_CALL_MEMORY {
            return Err(ConfigError::Range(
                "--call-memory must be at least --token-ttl and at most 30 days",
            ));
        }
        if self.streams_per_call == 0 || self.streams_per_call > MAX_STREAMS_PER_CALL {
            return Err(ConfigError::Range(
                "--streams-per-call must be between 1 and 100",
            ));
        }
        if self.call_capacity == 0 || self.max_connections == 0 {
            return Err(ConfigError::Range(
                "--call-capacity and --max-connections must be positive",
            ));
        }
        if self.start_timeout.is_zero() {
            return Err(ConfigError::Range("--start-timeout-ms must be positive"));
        }
        if self.max_pending == 0 || self.max_pending_per_ip == 0 || self.max_streams == 0 {
            return Err(ConfigError::Range(
                "--max-pending, --max-pending-per-ip and --max-streams must be positive",
            ));
        }
        if self.max_message_bytes < 1024 {
            return Err(ConfigError::Range(
                "--max-message-bytes must be at least 1024",
            ));
        }
        Ok(())
    }

    /// Settings that work but are probably not what the operator meant: logged as warnings
    /// when the server starts.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.public_url.is_https() {
            out.push(format!(
                "--public-url is http://, so the stream URL is {}: Twilio connects only to \
                 wss:// on port 443 (error 31922); use http:// only for local tests",
                self.stream_url()
            ));
        }
        if self
            .public_url
            .path_prefix()
            .ends_with(self.webhook_path.as_str())
            || self
                .public_url
                .path_prefix()
                .ends_with(self.stream_path.as_str())
        {
            out.push(format!(
                "--public-url ends in a route ({}): routes are appended to it, so the webhook \
                 URL is {}; give the origin (plus a prefix a proxy strips) only",
                self.public_url.path_prefix(),
                self.webhook_url()
            ));
        }
        match self.upgrade_signature {
            SignatureMode::Required => {}
            SignatureMode::IfPresent => out.push(
                "--upgrade-signature if-present: upgrades without X-Twilio-Signature are \
                 accepted (the stream token is still required)"
                    .to_owned(),
            ),
            SignatureMode::Off => out.push(
                "--upgrade-signature off: the X-Twilio-Signature of the WebSocket upgrade is \
                 not checked (the stream token is still required)"
                    .to_owned(),
            ),
        }
        out
    }

    /// The rules the replay store applies.
    pub fn store_policy(&self) -> StorePolicy {
        StorePolicy {
            token_ttl: self.token_ttl,
            call_memory: self.call_memory,
            streams_per_call: self.streams_per_call,
        }
    }

    /// `{public-url}{webhook-path}`: the URL Twilio signs for the webhook.
    pub fn webhook_url(&self) -> String {
        format!("{}{}", self.public_url.http(), self.webhook_path)
    }

    /// `{ws(s) public url}{stream-path}`: the `<Stream url>` and the URL of the signed
    /// upgrade.
    pub fn stream_url(&self) -> String {
        format!("{}{}", self.public_url.ws(), self.stream_path)
    }
}
