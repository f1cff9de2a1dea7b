//! A real `redis-server` for the tests that need one: started on a free loopback port with
//! persistence off, stopped by its PID (also on drop). Shared by the Redis test files.
//!
//! When `redis-server` is not installed the tests that need it print a loud `SKIPPED` line
//! and return, unless `STREAMGUARD_REQUIRE_REDIS` is set (as `.ci/run` sets it), in which
//! case they fail: CI never passes them silently.

#![allow(dead_code)] // each test file uses a different part

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    password: Option<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Sends one inline command and returns the first line of the answer.
pub fn command(port: u16, cmd: &str) -> Option<String> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    tcp.write_all(format!("{cmd}\r\n").as_bytes()).ok()?;
    let mut buf = [0u8; 512];
    let n = tcp.read(&mut buf).ok()?;
    Some(
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()?
            .to_owned(),
    )
}

impl RedisServer {
    /// A fresh server, or `None` (with a SKIPPED line) when `redis-server` is missing and not
    /// required.
    pub fn start(test: &str) -> Option<Self> {
        Self::start_with_password(test, None)
    }

    /// The same, requiring `password` (`requirepass`) when given.
    pub fn start_with_password(test: &str, password: Option<&str>) -> Option<Self> {
        if !installed() {
            if std::env::var_os("STREAMGUARD_REQUIRE_REDIS").is_some() {
                panic!(
                    "{test}: redis-server is required (STREAMGUARD_REQUIRE_REDIS) but not installed"
                );
            }
            eprintln!(
                "SKIPPED {test}: redis-server is not installed (apt-get install redis-server); \
                 set STREAMGUARD_REQUIRE_REDIS=1 to make this a failure"
            );
            return None;
        }
        let mut server = Self {
            child: None,
            port: free_port(),
            password: password.map(str::to_owned),
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let mut args: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if let Some(p) = &self.password {
            args.push("--requirepass".to_owned());
            args.push(p.clone());
        }
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let ping = match &self.password {
            Some(p) => format!("AUTH {p}\r\nPING"),
            None => "PING".to_owned(),
        };
        while !command(self.port, &ping).is_some_and(|a| a == "+PONG" || a == "+OK") {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} redis-server");
        }
    }

    /// Stops the server (SIGKILL: as if it crashed) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty: persistence is off).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// SIGSTOP: the server holds connections open and answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.resume();
        self.stop();
    }
}
