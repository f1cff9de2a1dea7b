//! A real `streamguard serve` process for the tests that run the binary (`tests/cli.rs`,
//! `tests/conformance_verdicts.rs`): on a free loopback port, with test secrets, its stderr
//! collected; stopped with SIGTERM by [`Serve::stop`], killed when dropped otherwise.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure
#![allow(dead_code)] // each test file uses a different part

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use streamguard::kit::simulator::{
    Signing, StreamPlan, Twilio, WebhookReply, parse_twiml, strip_query,
};
use streamguard::secret::AuthToken;
use streamguard::sid::{AccountSid, CallSid, StreamSid};

pub const BIN: &str = env!("CARGO_BIN_EXE_streamguard");

/// The CallSid of test call `n`.
fn call_sid(n: u64) -> CallSid {
    CallSid::parse(&format!("CA{n:032x}")).unwrap()
}

/// A loopback address with a port free just now (`127.0.0.1:PORT`), for a process to listen on.
pub fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

pub const SERVE_AUTH: &str = "f00dfeedf00dfeedf00dfeedf00dfeed";
pub const SERVE_ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
pub const SERVE_KEY: &str = "c3RyZWFtZ3VhcmQtdGVzdC1rZXktMzItYnl0ZXMtbG9uZyE=";

/// A real `streamguard serve` process on a free loopback port, its stderr collected.
pub struct Serve {
    child: std::process::Child,
    pub addr: String,
    pub public: String,
    reader: Option<std::thread::JoinHandle<String>>,
}

impl Serve {
    /// Starts `serve` with `args` after the listen and public-url flags, `RUST_LOG=rust_log`,
    /// optionally under `ulimit -n` (`nofile`), and waits for "listening".
    pub fn start(args: &[&str], rust_log: &str, nofile: Option<u32>) -> Self {
        Self::start_with(args, rust_log, nofile, None, &[])
    }

    /// [`Self::start`] with a given public URL (otherwise `http://{listen}`) and more
    /// environment.
    pub fn start_with(
        args: &[&str],
        rust_log: &str,
        nofile: Option<u32>,
        public_url: Option<&str>,
        env: &[(&str, &str)],
    ) -> Self {
        let addr = free_addr();
        let public = public_url.map_or_else(|| format!("http://{addr}"), str::to_owned);
        let mut all: Vec<&str> = vec!["serve", "--listen", &addr, "--public-url", &public];
        all.extend_from_slice(args);
        let mut cmd = match nofile {
            None => Command::new(BIN),
            Some(n) => {
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(BIN);
                c
            }
        };
        let mut child = cmd
            .args(&all)
            .env("TWILIO_AUTH_TOKEN", SERVE_AUTH)
            .env("TWILIO_ACCOUNT_SID", SERVE_ACCOUNT)
            .env("STREAMGUARD_TOKEN_KEY", SERVE_KEY)
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines() {
                let line = line.unwrap_or_default();
                let _ = tx.send(line.clone());
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("server printed nothing");
            if line.contains("streamguard listening") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "server did not start");
        }
        // Keep draining in the reader thread; `rx` is dropped, sends then fail quietly.
        Self {
            child,
            addr,
            public,
            reader: Some(reader),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn twilio(&self) -> Twilio {
        Twilio {
            connect_to: self.addr.parse().unwrap(),
            auth_token: AuthToken::new(SERVE_AUTH).unwrap(),
            account_sid: AccountSid::parse(SERVE_ACCOUNT).unwrap(),
        }
    }

    pub fn webhook_url(&self) -> String {
        format!("{}/voice/webhook", self.public)
    }

    /// The signed webhook of call `n`, as Twilio posts it.
    async fn webhook_reply(&self, n: u64) -> WebhookReply {
        let twilio = self.twilio();
        twilio
            .post_webhook(
                &self.webhook_url(),
                &twilio.voice_params(&call_sid(n)),
                Signing::Valid,
            )
            .await
            .unwrap()
    }

    /// The signed webhook of call `n`: its status and the token of its TwiML, if any.
    pub async fn webhook(&self, n: u64) -> (u16, Option<String>) {
        let reply = self.webhook_reply(n).await;
        let token = parse_twiml(&reply.body)
            .ok()
            .and_then(|t| t.parameter("token").map(str::to_owned));
        (reply.status, token)
    }

    /// Streams call `n` with `token` and `frames` frames; the close code.
    pub async fn stream(&self, n: u64, token: &str, frames: usize) -> Option<u16> {
        let twilio = self.twilio();
        let plan = StreamPlan::call(
            &format!("{}/voice/stream", self.public.replacen("http", "ws", 1)),
            twilio.account_sid,
            call_sid(n),
            StreamSid::parse(&format!("MZ{n:032x}")).unwrap(),
            vec![("token".to_owned(), token.to_owned())],
            frames,
        );
        twilio.stream(&plan).await.unwrap().close_code
    }

    /// A whole call `n` with echo; returns its token.
    pub async fn call(&self, n: u64, frames: usize) -> String {
        let twilio = self.twilio();
        let call = call_sid(n);
        let reply = self.webhook_reply(n).await;
        assert_eq!(reply.status, 200);
        let twiml = parse_twiml(&reply.body).unwrap();
        let token = twiml.parameter("token").unwrap().to_owned();
        let stream = StreamSid::parse(&format!("MZ{n:032x}")).unwrap();
        let plan = StreamPlan::call(
            strip_query(&twiml.url),
            twilio.account_sid,
            call,
            stream,
            twiml.parameters.clone(),
            frames,
        );
        let o = twilio.stream(&plan).await.unwrap();
        assert_eq!(o.close_code, Some(1000));
        assert_eq!(o.echoed_payloads().len(), frames);
        token
    }

    /// SIGTERM; returns the exit code and everything logged.
    pub fn stop(mut self) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = self.child.wait().unwrap();
        let logs = self.reader.take().unwrap().join().unwrap();
        (status.code(), logs)
    }
}

impl Drop for Serve {
    /// A process not stopped by [`Serve::stop`] (a failed test) is killed.
    fn drop(&mut self) {
        if self.reader.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
