//! `streamguard demo`: one simulated call end to end, then forgeries, against a server
//! started on 127.0.0.1 with ephemeral secrets. No configuration, no network, no accounts.

use std::fmt::Write as _;
use std::sync::Arc;

use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::net::TcpListener;

use crate::kit::simulator::{
    Signing, SimError, StreamOutcome, StreamPlan, Twilio, parse_twiml, sid_from, strip_query,
    tone_frame,
};
use crate::secret::{AuthToken, KeySet, TokenKey};
use crate::server::{self, Config, Echo, PublicUrl};
use crate::sid::{AccountSid, CallSid, StreamSid};
use crate::time::SystemClock;

/// Media frames in the demo call (half a second of audio, sent in real time).
pub const DEMO_FRAMES: usize = 25;

/// One line of the demo's table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// What was tried.
    pub scenario: &'static str,
    /// What a correct server does.
    pub expected: String,
    /// What this server did.
    pub observed: String,
    /// Whether the two agree.
    pub pass: bool,
}

/// The demo's result.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Report {
    /// One row per scenario, in the order run.
    pub rows: Vec<Row>,
    /// The server's metrics at the end, in Prometheus text format.
    pub metrics: String,
}

impl Report {
    /// Whether the call worked and every forgery was refused.
    pub fn passed(&self) -> bool {
        !self.rows.is_empty() && self.rows.iter().all(|r| r.pass)
    }

    /// The table, for a terminal.
    pub fn render(&self) -> String {
        let w0 = self
            .rows
            .iter()
            .map(|r| r.scenario.len())
            .max()
            .unwrap_or(0)
            .max(8);
        let w1 = self
            .rows
            .iter()
            .map(|r| r.expected.len())
            .max()
            .unwrap_or(0)
            .max(8);
        let w2 = self
            .rows
            .iter()
            .map(|r| r.observed.len())
            .max()
            .unwrap_or(0)
            .max(8);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:w0$}  {:w1$}  {:w2$}  result",
            "scenario", "expected", "observed"
        );
        let _ = writeln!(
            out,
            "{}",
            "-".repeat(w0.saturating_add(w1).saturating_add(w2).saturating_add(14))
        );
        for r in &self.rows {
            let verdict = if r.pass { "ok" } else { "FAIL" };
            let _ = writeln!(
                out,
                "{:w0$}  {:w1$}  {:w2$}  {verdict}",
                r.scenario, r.expected, r.observed
            );
        }
        out
    }
}

fn describe(o: &StreamOutcome) -> String {
    match (o.http_status, o.close_code) {
        (Some(s), _) => format!("HTTP {s}"),
        (None, Some(c)) if o.received.is_empty() => format!("close {c}"),
        (None, Some(c)) => format!("close {c}, {} msgs", o.received.len()),
        (None, None) => format!("no close, {} msgs", o.received.len()),
    }
}

fn refused_with(o: &StreamOutcome, code: u16) -> bool {
    o.close_code == Some(code) && !o.received_anything()
}

fn random_hex(rng: &SystemRandom, bytes: usize) -> Result<String, SimError> {
    let mut buf = vec![0u8; bytes];
    rng.fill(&mut buf)
        .map_err(|_| SimError::Setup("randomness"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Runs the demo: starts a server with ephemeral secrets, plays the scenarios, shuts it down.
pub async fn run() -> Result<Report, SimError> {
    let rng = SystemRandom::new();
    let auth_text = random_hex(&rng, 16)?;
    let account_sid = AccountSid::parse(&format!("AC{}", random_hex(&rng, 16)?))
        .map_err(|_| SimError::Setup("sid"))?;
    let key = TokenKey::generate(&rng).map_err(|_| SimError::Setup("key"))?;

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let public_url =
        PublicUrl::parse(&format!("http://{addr}")).map_err(|_| SimError::Setup("public url"))?;
    let auth = AuthToken::new(&auth_text).map_err(|_| SimError::Setup("auth token"))?;
    let config = Config::new(public_url, auth, account_sid, KeySet::single(key));
    let webhook_url = config.webhook_url();
    let server = server::start(listener, config, Arc::new(Echo), Arc::new(SystemClock)).await?;

    let twilio = Twilio {
        connect_to: addr,
        auth_token: AuthToken::new(&auth_text).map_err(|_| SimError::Setup("auth token"))?,
        account_sid,
    };
    let mut seed = [0u8; 8];
    rng.fill(&mut seed)
        .map_err(|_| SimError::Setup("randomness"))?;
    let seed = u64::from_be_bytes(seed);
    let call = |n| CallSid::parse(&sid_from("CA", seed, n)).map_err(|_| SimError::Setup("sid"));
    let stream_sid =
        |n| StreamSid::parse(&sid_from("MZ", seed, n)).map_err(|_| SimError::Setup("sid"));

    let result = scenarios(&twilio, &webhook_url, account_sid, &call, &stream_sid).await;
    let metrics = server.metrics().render();
    server.shutdown().await;
    let rows = result?;
    Ok(Report { rows, metrics })
}

async fn scenarios(
    twilio: &Twilio,
    webhook_url: &str,
    account: AccountSid,
    call: &dyn Fn(u64) -> Result<CallSid, SimError>,
    stream_sid: &dyn Fn(u64) -> Result<StreamSid, SimError>,
) -> Result<Vec<Row>, SimError> {
    let mut rows = Vec::new();

    // 1. The real thing, as Twilio does it.
    let call1 = call(1)?;
    let reply = twilio
        .post_webhook(webhook_url, &twilio.voice_params(&call1), Signing::Valid)
        .await?;
    let twiml = parse_twiml(&reply.body)?;
    let token1 = twiml.parameter("token").unwrap_or_default().to_owned();
    let mut plan = StreamPlan::call(
        strip_query(&twiml.url),
        account,
        call1,
        stream_sid(1)?,
        twiml.parameters.clone(),
        DEMO_FRAMES,
    );
    plan.paced = true;
    let o = twilio.stream(&plan).await?;
    let sent: Vec<String> = (0..DEMO_FRAMES)
        .map(|i| base64::engine::general_purpose::STANDARD.encode(tone_frame(i)))
        .collect();
    let echoed = o.echoed_payloads();
    rows.push(Row {
        scenario: "signed call, token in <Parameter>",
        expected: format!("close 1000, {DEMO_FRAMES}/{DEMO_FRAMES} echoed"),
        observed: format!(
            "HTTP {} + {}, {}/{DEMO_FRAMES} echoed",
            reply.status,
            o.close_code
                .map_or_else(|| "no close".to_owned(), |c| format!("close {c}")),
            echoed.len()
        ),
        pass: reply.status == 200 && o.close_code == Some(1000) && echoed == sent,
    });

    // 2. Webhooks that Twilio did not sign.
    for (scenario, signing) in [
        ("unsigned webhook", Signing::Absent),
        ("webhook signed with another key", Signing::Forged),
    ] {
        let r = twilio
            .post_webhook(webhook_url, &twilio.voice_params(&call(2)?), signing)
            .await?;
        rows.push(Row {
            scenario,
            expected: "HTTP 403, empty".to_owned(),
            observed: format!(
                "HTTP {}{}",
                r.status,
                if r.body.is_empty() {
                    ", empty"
                } else {
                    ", body!"
                }
            ),
            pass: r.status == 403 && r.body.is_empty(),
        });
    }

    let stream_url = strip_query(&twiml.url).to_owned();
    let attempt = |n: u64,
                   params: Vec<(String, String)>,
                   c: CallSid,
                   a: AccountSid|
     -> Result<StreamPlan, SimError> {
        Ok(StreamPlan::call(
            &stream_url,
            a,
            c,
            stream_sid(n)?,
            params,
            5,
        ))
    };

    // 3. An upgrade without a signature.
    let mut plan = attempt(3, vec![("token".into(), token1.clone())], call(3)?, account)?;
    plan.signing = Signing::Absent;
    let o = twilio.stream(&plan).await?;
    rows.push(Row {
        scenario: "unsigned WebSocket upgrade",
        expected: "HTTP 401".to_owned(),
        observed: describe(&o),
        pass: o.http_status == Some(401) && !o.received_anything(),
    });

    // 4. No token at all (the original CWE-306 hole).
    let o = twilio
        .stream(&attempt(4, Vec::new(), call(4)?, account)?)
        .await?;
    rows.push(Row {
        scenario: "stream without a token",
        expected: "close 1008".to_owned(),
        observed: describe(&o),
        pass: refused_with(&o, 1008),
    });

    // 5. A genuine token, minted for another call.
    let call5 = call(5)?;
    let other = twilio
        .post_webhook(webhook_url, &twilio.voice_params(&call5), Signing::Valid)
        .await?;
    let other_token = parse_twiml(&other.body)?
        .parameter("token")
        .unwrap_or_default()
        .to_owned();
    let o = twilio
        .stream(&attempt(
            5,
            vec![("token".into(), other_token.clone())],
            call(6)?,
            account,
        )?)
        .await?;
    rows.push(Row {
        scenario: "another call's token",
        expected: "close 1008".to_owned(),
        observed: describe(&o),
        pass: refused_with(&o, 1008),
    });

    // 6. The first call's token, used again.
    let o = twilio
        .stream(&attempt(
            7,
            vec![("token".into(), token1.clone())],
            call1,
            account,
        )?)
        .await?;
    rows.push(Row {
        scenario: "replayed token",
        expected: "close 1008".to_owned(),
        observed: describe(&o),
        pass: refused_with(&o, 1008),
    });

    // 7. A valid token presented under another account.
    let foreign = AccountSid::parse(&sid_from("AC", 7, 7)).map_err(|_| SimError::Setup("sid"))?;
    let o = twilio
        .stream(&attempt(
            8,
            vec![("token".into(), other_token)],
            call5,
            foreign,
        )?)
        .await?;
    rows.push(Row {
        scenario: "token under another AccountSid",
        expected: "close 1008".to_owned(),
        observed: describe(&o),
        pass: refused_with(&o, 1008),
    });

    Ok(rows)
}
