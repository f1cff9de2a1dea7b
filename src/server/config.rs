//! Server configuration: the validated form of the command line and the environment.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::limits::{
    DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_PER_IP,
    DEFAULT_MAX_STREAMS, DEFAULT_START_TIMEOUT, DEFAULT_TOKEN_TTL, MAX_TOKEN_TTL,
};
use crate::secret::{AuthToken, KeySet};
use crate::sid::AccountSid;
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
        let bad = || ConfigError::PublicUrl;
        let (scheme, rest) = s.split_once("://").ok_or_else(bad)?;
        let ws_scheme = match scheme {
            "https" => "wss",
            "http" => "ws",
            _ => return Err(bad()),
        };
        if rest.is_empty() || rest.starts_with('/') || rest.contains(['?', '#', ' ']) {
            return Err(bad());
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        // The host part must be something the signature code can split (port checks etc.).
        let http = format!("{scheme}://{rest}");
        crate::signature::port_variants(&http).map_err(|_| bad())?;
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
}

/// Why a configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `--public-url` is not an `http(s)` URL without query or fragment.
    PublicUrl,
    /// A route does not start with `/`, has a `?`/`#`, or two routes collide.
    Path(&'static str),
    /// A numeric setting is out of range.
    Range(&'static str),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PublicUrl => f.write_str(
                "--public-url must be http:// or https:// with a host, an optional path \
                 prefix, no query and no fragment (e.g. https://voice.example.com)",
            ),
            Self::Path(what) => write!(f, "{what}"),
            Self::Range(what) => write!(f, "{what}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Everything the server needs. Immutable once the server runs: nothing here is ever written
/// by a connection.
#[derive(Debug)]
pub struct Config {
    /// `--public-url`.
    pub public_url: PublicUrl,
    /// `--webhook-path`.
    pub webhook_path: String,
    /// `--stream-path`.
    pub stream_path: String,
    /// `--token-ttl`.
    pub token_ttl: Duration,
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
            public_url,
            webhook_path: DEFAULT_WEBHOOK_PATH.to_owned(),
            stream_path: DEFAULT_STREAM_PATH.to_owned(),
            token_ttl: DEFAULT_TOKEN_TTL,
            start_timeout: DEFAULT_START_TIMEOUT,
            upgrade_signature: SignatureMode::Required,
            max_pending: DEFAULT_MAX_PENDING,
            max_pending_per_ip: DEFAULT_MAX_PENDING_PER_IP,
            max_streams: DEFAULT_MAX_STREAMS,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            metrics_listen: None,
            auth_token,
            account_sid,
            keys,
        }
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
        if self.token_ttl.is_zero() || self.token_ttl > MAX_TOKEN_TTL {
            return Err(ConfigError::Range(
                "--token-ttl must be between 1 and 3600 seconds",
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
