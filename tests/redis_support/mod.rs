//! A real `redis-server` for the tests that need one: started on a free loopback port with
//! persistence off, stopped by its PID (also on drop). Shared by the Redis test files.
//!
//! When `redis-server` is not installed the tests that need it print a loud `SKIPPED` line
//! and return, unless `STREAMGUARD_REQUIRE_REDIS` is set (as `.ci/run` sets it), in which
//! case they fail: CI never passes them silently.

#![allow(dead_code)] // each test file uses a different part

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    password: Option<String>,
    tls: Option<Tls>,
}

/// A TLS listener beside the plain one (which the tests keep for looking inside): a test CA,
/// a server certificate it signed for `127.0.0.1`, and a second CA that signed nothing.
struct Tls {
    port: u16,
    dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA called `name` (`name.crt`, `name.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=streamguard test {name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// `server.crt`/`server.key` for `127.0.0.1` and `localhost`, signed by the CA `ca`.
fn make_server_cert(dir: &Path, ca: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
}

fn openssl_installed() -> bool {
    Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
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
        Self::start_full(test, password, false)
    }

    /// A server that also listens with TLS (`rediss://`, [`Self::tls_url`]), its certificate
    /// signed by a test CA ([`Self::ca_file`]); `None` as [`Self::start`] when `redis-server`
    /// or `openssl` is missing and not required.
    pub fn start_tls(test: &str, password: Option<&str>) -> Option<Self> {
        Self::start_full(test, password, true)
    }

    fn start_full(test: &str, password: Option<&str>, tls: bool) -> Option<Self> {
        if !installed() || (tls && !openssl_installed()) {
            if std::env::var_os("STREAMGUARD_REQUIRE_REDIS").is_some() {
                panic!(
                    "{test}: redis-server is required (STREAMGUARD_REQUIRE_REDIS) but not installed"
                );
            }
            eprintln!(
                "SKIPPED {test}: redis-server (or, for TLS, openssl) is not installed \
                 (apt-get install redis-server openssl); \
                 set STREAMGUARD_REQUIRE_REDIS=1 to make this a failure"
            );
            return None;
        }
        let port = free_port();
        let tls = tls.then(|| {
            let dir = std::env::temp_dir().join(format!(
                "streamguard-redis-tls-{}-{port}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            make_ca(&dir, "ca");
            make_ca(&dir, "other-ca");
            make_server_cert(&dir, "ca");
            Tls {
                port: free_port(),
                dir,
            }
        });
        let mut server = Self {
            child: None,
            port,
            password: password.map(str::to_owned),
            tls,
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
        if let Some(tls) = &self.tls {
            let file = |name: &str| tls.dir.join(name).to_string_lossy().into_owned();
            args.extend([
                "--tls-port".to_owned(),
                tls.port.to_string(),
                "--tls-cert-file".to_owned(),
                file("server.crt"),
                "--tls-key-file".to_owned(),
                file("server.key"),
                "--tls-ca-cert-file".to_owned(),
                file("ca.crt"),
                "--tls-auth-clients".to_owned(),
                "no".to_owned(),
            ]);
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

    /// `rediss://127.0.0.1:PORT` of the TLS listener ([`Self::start_tls`] only).
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls.as_ref().unwrap().port)
    }

    /// The PEM file of the CA that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.tls.as_ref().unwrap().dir.join("ca.crt")
    }

    /// The PEM file of a CA that did not sign it.
    pub fn other_ca_file(&self) -> PathBuf {
        self.tls.as_ref().unwrap().dir.join("other-ca.crt")
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
        if let Some(tls) = &self.tls {
            let _ = std::fs::remove_dir_all(&tls.dir);
        }
    }
}
