//! The `streamguard` command line: `serve`, `demo`, `sign`, `twiml`. Parsing and printing
//! only; everything else is in the library.

#![allow(clippy::print_stdout)] // a command line prints its results on stdout

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use streamguard::limits::{
    DEFAULT_CALL_CAPACITY, DEFAULT_CALL_MEMORY, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_PER_IP, DEFAULT_MAX_STREAMS, DEFAULT_STREAMS_PER_CALL,
};
use streamguard::secret::AuthToken;
use streamguard::server::{self, Config, Discard, Echo, PublicUrl, Server, config};
use streamguard::sid::AccountSid;
use streamguard::signature;
use streamguard::upgrade::SignatureMode;
use streamguard::wire::twiml::{self, StreamTwiml, Verb};

#[derive(Parser, Debug)]
#[command(
    name = "streamguard",
    version,
    about = "Authenticated Twilio Media Streams: reference server and tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (secrets from TWILIO_AUTH_TOKEN, TWILIO_ACCOUNT_SID, STREAMGUARD_TOKEN_KEY).
    Serve(ServeArgs),
    /// Start a local server with ephemeral secrets and run the whole conformance kit against it.
    Demo,
    /// Test any media-stream server: play Twilio, then attack (secrets of the target from
    /// TWILIO_AUTH_TOKEN and TWILIO_ACCOUNT_SID). Exit 0: all passed; 1: a case failed; 2: could
    /// not run.
    Conformance(ConformanceArgs),
    /// Many concurrent calls against a media-stream server: latency, frames, and the server's
    /// CPU and memory when it runs on this machine (secrets from TWILIO_AUTH_TOKEN and
    /// TWILIO_ACCOUNT_SID, unless --unauthenticated).
    Load(LoadArgs),
    /// Print the X-Twilio-Signature Twilio would send (auth token from TWILIO_AUTH_TOKEN).
    Sign(SignArgs),
    /// Print the TwiML for a <Stream>.
    Twiml(TwimlArgs),
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Where to listen.
    #[arg(long, env = "STREAMGUARD_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// What Twilio sees: origin plus optional path prefix, e.g. https://voice.example.com
    #[arg(long, env = "STREAMGUARD_PUBLIC_URL")]
    public_url: String,
    /// Voice webhook route.
    #[arg(long, default_value = server::config::DEFAULT_WEBHOOK_PATH)]
    webhook_path: String,
    /// Media stream route.
    #[arg(long, default_value = server::config::DEFAULT_STREAM_PATH)]
    stream_path: String,
    /// Stream token lifetime, in seconds.
    #[arg(long, default_value_t = 60)]
    token_ttl: u64,
    /// How long a call that has streamed is refused a new token and stream, in seconds
    /// (Twilio's default maximum call length; raise it with Twilio's TimeLimit).
    #[arg(long, default_value_t = DEFAULT_CALL_MEMORY.as_secs())]
    call_memory: u64,
    /// Streams one call may open (more than 1 lets a call sent back to the webhook by
    /// <Redirect> stream again).
    #[arg(long, default_value_t = DEFAULT_STREAMS_PER_CALL)]
    streams_per_call: u32,
    /// Most calls the in-memory replay store remembers at once (fails closed when full).
    #[arg(long, default_value_t = DEFAULT_CALL_CAPACITY)]
    call_capacity: usize,
    /// Where single use is decided: memory (this process) or redis://HOST:PORT[/DB],
    /// rediss://HOST:PORT[/DB] (shared by every instance; password in
    /// STREAMGUARD_REDIS_PASSWORD, user in STREAMGUARD_REDIS_USERNAME).
    #[arg(long, env = "STREAMGUARD_REPLAY_STORE", default_value = "memory")]
    replay_store: String,
    /// Bound on each replay store operation, in milliseconds (webhooks and streams are
    /// refused when it passes).
    #[arg(long, default_value_t = 250)]
    replay_store_timeout_ms: u64,
    /// Time allowed from upgrade to a valid `start`, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    start_timeout_ms: u64,
    /// X-Twilio-Signature on the WebSocket handshake: required, if-present or off.
    #[arg(long, default_value = "required", value_parser = ["required", "if-present", "off"])]
    upgrade_signature: String,
    /// Connections upgraded but not yet authenticated.
    #[arg(long, default_value_t = DEFAULT_MAX_PENDING)]
    max_pending: usize,
    /// The same, per client IP.
    #[arg(long, default_value_t = DEFAULT_MAX_PENDING_PER_IP)]
    max_pending_per_ip: usize,
    /// Authenticated streams at once.
    #[arg(long, default_value_t = DEFAULT_MAX_STREAMS)]
    max_streams: usize,
    /// Largest inbound WebSocket message, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// TCP connections at once, of every kind (lowered to the file-descriptor limit).
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Send each authenticated inbound media payload back (loopback testing).
    #[arg(long)]
    echo: bool,
    /// Log lines as text (colour only on a terminal, never with NO_COLOR) or as JSON, one
    /// object per line, for log shippers.
    #[arg(long, env = "STREAMGUARD_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Serve GET /metrics (Prometheus text format) on this address.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
}

#[derive(Args, Debug)]
struct ConformanceArgs {
    /// Where the target listens, http://HOST:PORT (all traffic goes there and nowhere else).
    #[arg(long, required_unless_present = "list")]
    target: Option<String>,
    /// The public URL the target signs against (its --public-url), e.g. https://voice.example.com
    #[arg(long, required_unless_present = "list")]
    public_url: Option<String>,
    /// The target's voice webhook route.
    #[arg(long, default_value = server::config::DEFAULT_WEBHOOK_PATH)]
    webhook_path: String,
    /// The target's media stream route.
    #[arg(long, default_value = server::config::DEFAULT_STREAM_PATH)]
    stream_path: String,
    /// The target's token TTL in seconds: enables the cases that wait for a token to expire.
    #[arg(long)]
    token_ttl: Option<u64>,
    /// The target's start deadline in milliseconds (5000 is assumed otherwise).
    #[arg(long)]
    start_timeout_ms: Option<u64>,
    /// Run only this case (repeatable).
    #[arg(long = "only", value_name = "CASE")]
    only: Vec<String>,
    /// Print the case ids and descriptions, and exit.
    #[arg(long)]
    list: bool,
    /// Print the report as one JSON document instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write the report as JUnit XML to this file.
    #[arg(long, value_name = "FILE")]
    junit: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
struct LoadArgs {
    /// Where the target listens, http://HOST:PORT.
    #[arg(long)]
    target: String,
    /// The public URL the target signs against (its --public-url).
    #[arg(long)]
    public_url: String,
    /// Concurrent calls.
    #[arg(long, default_value_t = 10)]
    calls: usize,
    /// How long each call streams, in seconds (0: start, then stop: set-up cost only).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Frame rate: realtime (20 ms), max (as fast as the socket takes them), idle (none).
    #[arg(long, default_value = "realtime", value_parser = ["realtime", "max", "idle"])]
    rate: String,
    /// The target echoes audio: measure echo latency.
    #[arg(long)]
    echo: bool,
    /// The target authenticates nothing (the unauthenticated baseline): no webhook, no
    /// signature, no token.
    #[arg(long)]
    unauthenticated: bool,
    /// The target's voice webhook route.
    #[arg(long, default_value = server::config::DEFAULT_WEBHOOK_PATH)]
    webhook_path: String,
    /// The target's media stream route.
    #[arg(long, default_value = server::config::DEFAULT_STREAM_PATH)]
    stream_path: String,
    /// Calls set up at once (each call's connection is pending until its start).
    #[arg(long, default_value_t = 4)]
    setup_concurrency: usize,
    /// The target's process id for CPU and memory (found by its port when local).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct SignArgs {
    /// The full URL Twilio requested (scheme, host, port, path, query).
    #[arg(long)]
    url: String,
    /// A form parameter, repeatable.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// A raw (JSON) body: signs the URL with bodySHA256 instead of form parameters.
    #[arg(long, value_name = "FILE", conflicts_with = "params")]
    body_file: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
struct TwimlArgs {
    /// The wss:// URL of the stream (no query string: Twilio drops it).
    #[arg(long)]
    stream_url: String,
    /// <Connect><Stream> (bidirectional; the default).
    #[arg(long, conflicts_with = "start")]
    connect: bool,
    /// <Start><Stream> (listen only).
    #[arg(long)]
    start: bool,
    /// A <Parameter>, repeatable.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
}

fn env_secret(name: &str) -> Result<String, String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(v),
        Ok(_) | Err(std::env::VarError::NotPresent) => {
            Err(format!("{name} is not set; it is required"))
        }
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not valid UTF-8")),
    }
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}

/// Logs to stderr, level from `RUST_LOG` (default `info`). tungstenite logs whole frames at
/// trace level, and a `start` frame carries the stream token: [`streamguard::logging`] caps
/// it after the `RUST_LOG` filter, so no value of `RUST_LOG` leaks a token.
fn init_logs(json: bool) {
    use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a terminal, and never when NO_COLOR is set (https://no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour && !json);
    let fmt = if json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let most = filter
        .max_level_hint()
        .unwrap_or(tracing_subscriber::filter::LevelFilter::TRACE);
    tracing_subscriber::registry()
        .with(streamguard::logging::secret_safe())
        .with(fmt.with_filter(filter))
        .init();
    // `init` forwards the `log` records of dependencies (tungstenite, redis) at every level;
    // what the filter drops anyway is better not formed at all.
    log::set_max_level(match most.into_level() {
        None => log::LevelFilter::Off,
        Some(tracing::Level::ERROR) => log::LevelFilter::Error,
        Some(tracing::Level::WARN) => log::LevelFilter::Warn,
        Some(tracing::Level::INFO) => log::LevelFilter::Info,
        Some(tracing::Level::DEBUG) => log::LevelFilter::Debug,
        Some(tracing::Level::TRACE) => log::LevelFilter::Trace,
    });
}

fn serve_config(a: &ServeArgs) -> Result<Config, String> {
    let (auth, account, keys) = config::secrets_from_env().map_err(|e| e.to_string())?;
    let public_url = PublicUrl::parse(&a.public_url).map_err(|e| e.to_string())?;
    let mut c = Config::new(public_url, auth, account, keys);
    c.listen = a.listen;
    c.webhook_path.clone_from(&a.webhook_path);
    c.stream_path.clone_from(&a.stream_path);
    c.token_ttl = Duration::from_secs(a.token_ttl);
    c.call_memory = Duration::from_secs(a.call_memory);
    c.streams_per_call = a.streams_per_call;
    c.call_capacity = a.call_capacity;
    c.replay_store = config::replay_store_from(
        &a.replay_store,
        Duration::from_millis(a.replay_store_timeout_ms.max(1)),
    )
    .map_err(|e| match e {
        // The flag's own words: the value came from --replay-store or its variable.
        config::EnvError::Invalid(_, why) => why,
        other => other.to_string(),
    })?;
    c.start_timeout = Duration::from_millis(a.start_timeout_ms);
    c.upgrade_signature =
        SignatureMode::parse(&a.upgrade_signature).ok_or("bad --upgrade-signature")?;
    c.max_pending = a.max_pending;
    c.max_pending_per_ip = a.max_pending_per_ip;
    c.max_streams = a.max_streams;
    c.max_message_bytes = a.max_message_bytes;
    c.max_connections = a.max_connections;
    c.metrics_listen = a.metrics_listen;
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn serve(a: ServeArgs) -> Result<(), String> {
    let config = serve_config(&a)?;
    let listen = config.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let builder = Server::builder(config);
    let builder = if a.echo {
        builder.handlers(Echo)
    } else {
        builder.handlers(Discard)
    };
    let server = builder.build().map_err(|e| e.to_string())?;
    let running = server.serve(listener).await.map_err(|e| e.to_string())?;
    running
        .serve_until(async {
            wait_for_signal().await;
            tracing::info!("shutting down: closing streams with 1001");
        })
        .await;
    Ok(())
}

async fn demo() -> Result<(), String> {
    println!(
        "streamguard demo: the reference server on 127.0.0.1 with ephemeral secrets, and the \
         conformance kit against it\n"
    );
    let report = streamguard::kit::demo::run()
        .await
        .map_err(|e| format!("demo could not run: {e}"))?;
    print!("{}", report.table());
    println!("\n{}", streamguard::kit::demo::summary(&report));
    if report.all_passed() {
        Ok(())
    } else {
        Err("the demo found a failure (see the table above)".to_owned())
    }
}

async fn load(a: LoadArgs) -> Result<(), String> {
    use streamguard::kit::load::{LoadSpec, Rate};
    let hostport = a
        .target
        .strip_prefix("http://")
        .ok_or_else(|| format!("--target must be http://HOST:PORT, got {:?}", a.target))?
        .trim_end_matches('/');
    let connect_to = tokio::net::lookup_host(hostport)
        .await
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| format!("--target {}: cannot resolve {hostport}", a.target))?;
    let public_url = PublicUrl::parse(&a.public_url).map_err(|e| e.to_string())?;
    let (auth, account) = if a.unauthenticated {
        (
            AuthToken::new("unauthenticated").map_err(|e| e.to_string())?,
            AccountSid::parse("AC00000000000000000000000000000000").map_err(|e| e.to_string())?,
        )
    } else {
        (
            AuthToken::new(&env_secret("TWILIO_AUTH_TOKEN")?)
                .map_err(|e| format!("TWILIO_AUTH_TOKEN: {e}"))?,
            AccountSid::parse(&env_secret("TWILIO_ACCOUNT_SID")?)
                .map_err(|e| format!("TWILIO_ACCOUNT_SID: {e}"))?,
        )
    };
    let rate = match a.rate.as_str() {
        "max" => Rate::Max,
        "idle" => Rate::Idle,
        _ => Rate::Realtime,
    };
    let spec = LoadSpec {
        connect_to,
        public_url: public_url.http().to_owned(),
        webhook_path: a.webhook_path,
        stream_path: a.stream_path,
        calls: a.calls,
        duration: Duration::from_secs(a.duration),
        rate,
        echo: a.echo,
        unauthenticated: a.unauthenticated,
        setup_concurrency: a.setup_concurrency,
        server_pid: a.server_pid,
        account_sid: account,
    };
    let report = streamguard::kit::load::run(spec, auth).await;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

/// Exit status 2: the kit could not run.
const KIT_COULD_NOT_RUN: u8 = 2;

async fn conformance(a: ConformanceArgs) -> Result<ExitCode, (u8, String)> {
    use streamguard::kit::cases::Target;
    let usage = |e: String| (KIT_COULD_NOT_RUN, e);
    let target = a.target.unwrap_or_default();
    let public = a.public_url.unwrap_or_default();
    let hostport = target
        .strip_prefix("http://")
        .ok_or_else(|| usage(format!("--target must be http://HOST:PORT, got {target:?}")))?
        .trim_end_matches('/');
    let connect_to = tokio::net::lookup_host(hostport)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| usage(format!("--target {target}: cannot resolve {hostport}")))?;
    let public_url = PublicUrl::parse(&public).map_err(|e| usage(e.to_string()))?;
    let auth = AuthToken::new(&env_secret("TWILIO_AUTH_TOKEN").map_err(usage)?)
        .map_err(|e| usage(format!("TWILIO_AUTH_TOKEN: {e}")))?;
    let account = AccountSid::parse(&env_secret("TWILIO_ACCOUNT_SID").map_err(usage)?)
        .map_err(|e| usage(format!("TWILIO_ACCOUNT_SID: {e}")))?;
    let spec = Target {
        connect_to,
        target: target.clone(),
        public_url: public_url.http().to_owned(),
        webhook_path: a.webhook_path,
        stream_path: a.stream_path,
        token_ttl: a.token_ttl.map(Duration::from_secs),
        start_timeout: a.start_timeout_ms.map(Duration::from_millis),
        account_sid: account,
    };
    let report = streamguard::kit::conformance::run(spec, auth, &a.only)
        .await
        .map_err(|e| usage(e.to_string()))?;
    if a.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    if let Some(path) = a.junit {
        let xml = report.junit().map_err(|e| usage(format!("--junit: {e}")))?;
        std::fs::write(&path, xml).map_err(|e| usage(format!("{}: {e}", path.display())))?;
    }
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn sign(a: &SignArgs) -> Result<(), String> {
    let auth = AuthToken::new(&env_secret("TWILIO_AUTH_TOKEN")?)
        .map_err(|e| format!("TWILIO_AUTH_TOKEN: {e}"))?;
    let params = a
        .params
        .iter()
        .map(|p| key_value(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut url = a.url.clone();
    if let Some(path) = &a.body_file {
        let body = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let hash = signature::body_sha256(&body);
        if !url.contains(&format!("{}=", signature::BODY_HASH_PARAM)) {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&format!("{}={hash}", signature::BODY_HASH_PARAM));
            eprintln!("signed URL: {url}");
        }
        signature::check_body_hash(&url, Some(&body), false)
            .map_err(|e| format!("--body-file: {e}"))?;
    }
    if let Some(problem) = signature::url_problem(&url) {
        return Err(format!("--url {url:?} cannot be signed: {problem}"));
    }
    let is_upgrade = url.starts_with("wss://") || url.starts_with("ws://");
    if is_upgrade && url.contains('?') {
        eprintln!(
            "note: Twilio drops the query of a stream URL, so the upgrade it signs is over the \
             URL without it"
        );
    }
    if is_upgrade && !params.is_empty() {
        return Err(
            "--param: the WebSocket upgrade is a GET without a body: its signature is over the \
             URL alone"
                .to_owned(),
        );
    }
    println!("{}", signature::compute_signature(&auth, &url, &params));
    Ok(())
}

fn twiml_cmd(a: &TwimlArgs) -> Result<(), String> {
    let mut t = StreamTwiml::connect(a.stream_url.clone());
    if a.start {
        t.verb = Verb::Start;
    }
    for p in &a.params {
        let (name, value) = key_value(p)?;
        if t.parameters.iter().any(|(n, _)| *n == name) {
            return Err(format!(
                "--param {name}: given twice (customParameters is a map: each name once)"
            ));
        }
        t.parameters.push((name, value));
    }
    println!("{}", twiml::render(&t).map_err(|e| e.to_string())?);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sign(a) => sign(&a),
        Command::Twiml(a) => twiml_cmd(&a),
        Command::Serve(a) => {
            init_logs(a.log_format == "json");
            runtime().and_then(|rt| rt.block_on(serve(a)))
        }
        Command::Demo => {
            if std::env::var_os("RUST_LOG").is_some() {
                init_logs(false);
            }
            runtime().and_then(|rt| rt.block_on(demo()))
        }
        Command::Load(a) => runtime().and_then(|rt| rt.block_on(load(a))),
        Command::Conformance(a) => {
            if a.list {
                for (id, description) in streamguard::kit::conformance::list() {
                    println!("{id:<45} {description}");
                }
                return ExitCode::SUCCESS;
            }
            if std::env::var_os("RUST_LOG").is_some() {
                init_logs(false);
            }
            let outcome = runtime()
                .map_err(|e| (KIT_COULD_NOT_RUN, e))
                .and_then(|rt| rt.block_on(conformance(a)));
            return match outcome {
                Ok(code) => code,
                Err((code, e)) => {
                    eprintln!("streamguard conformance: {e}");
                    ExitCode::from(code)
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamguard: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}
