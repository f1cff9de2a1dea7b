//! `streamguard conformance` against a target that is wrong on purpose: a FAIL reaches every
//! output (exit status 1, the table, `--json`, JUnit `<failure>`), a SKIP is `<skipped>`, and
//! the run ends by itself, also against a target that accepts connections and then stalls
//! (the whole-run deadline).
//!
//! The failing and skipped cases are listed by hand from the configuration below, not taken
//! from the program's output.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

use std::collections::BTreeSet;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use streamguard::kit::cases::Target;
use streamguard::kit::conformance::{RUN_DEADLINE_REACHED, list, run_within};
use streamguard::kit::report::Verdict;
use streamguard::secret::AuthToken;
use streamguard::sid::AccountSid;

mod serve_support;
use serve_support::{BIN, SERVE_ACCOUNT, SERVE_AUTH, Serve};

/// `serve --upgrade-signature off`, without `--echo`, and a kit not told `--token-ttl`.
const SERVE_ARGS: &[&str] = &["--upgrade-signature", "off"];

/// What must FAIL against [`SERVE_ARGS`]: with the upgrade signature off, the server checks
/// the path, the method and the handshake, then upgrades whatever `X-Twilio-Signature` says
/// (src/upgrade.rs `decide`). So an upgrade with no signature, and one signed with another
/// auth token, get `101`. Every other case either signs its upgrade validly or is refused
/// before the signature check (wrong path: 404, POST: 4xx, no key: 400), and the stream's
/// token checks are untouched.
const MUST_FAIL: &[&str] = &["upgrade.unsigned", "upgrade.bad_signature"];

/// What must SKIP: the kit is not given `--token-ttl`, so the two cases that wait for a token
/// to expire cannot be judged; the target does not echo, so an injected frame coming back on
/// the call cannot be observed.
const MUST_SKIP: &[&str] = &[
    "webhook.replay_after_ttl",
    "stream.expired_token",
    "injection.unauthenticated_frames_go_nowhere",
];

/// A whole run against a correct local target takes well under a minute; this is where the
/// test gives up on the process (the run must end by itself long before).
const PROCESS_LIMIT: Duration = Duration::from_secs(120);

/// `streamguard conformance --target ... --public-url ...` and `more` against `serve`.
fn conformance(serve: &Serve, more: &[&str]) -> Run {
    let target = format!("http://{}", serve.addr);
    let mut args = vec![
        "conformance",
        "--target",
        &target,
        "--public-url",
        &serve.public,
    ];
    args.extend_from_slice(more);
    run_bounded(&args)
}

/// One finished `conformance` process.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// Runs the binary with `args` (and the kit's two secrets) and waits at most
/// [`PROCESS_LIMIT`]: a run that does not end by itself is killed and the test fails.
fn run_bounded(args: &[&str]) -> Run {
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("STREAMGUARD_TOKEN_KEY")
        .env("TWILIO_AUTH_TOKEN", SERVE_AUTH)
        .env("TWILIO_ACCOUNT_SID", SERVE_ACCOUNT)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > PROCESS_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "conformance did not end within {} s",
                PROCESS_LIMIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        elapsed: started.elapsed(),
    }
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

/// The hand-written lists name real, distinct cases, so a renamed case breaks this test
/// instead of silently passing it.
fn assert_lists_name_real_cases() {
    let all: BTreeSet<&str> = list().iter().map(|(id, _)| *id).collect();
    for id in MUST_FAIL.iter().chain(MUST_SKIP) {
        assert!(all.contains(id), "{id} is not a case id");
    }
    assert!(set(MUST_FAIL).is_disjoint(&set(MUST_SKIP)));
}

/// The whole catalogue against `serve --upgrade-signature off` (no echo, no `--token-ttl`):
/// exit status 1; in `--json` exactly [`MUST_FAIL`] are FAIL, [`MUST_SKIP`] SKIP and every
/// other case PASS, with the counts to match and an observed outcome on each failure; the
/// JUnit file has one `<testcase>` per case, a `<failure>` in exactly the failing ones and a
/// `<skipped>` in exactly the skipped ones; the run ends by itself.
#[cfg(unix)]
#[test]
fn failing_and_skipped_cases_reach_the_exit_status_json_and_junit() {
    assert_lists_name_real_cases();
    let serve = Serve::start(SERVE_ARGS, "info", None);
    let junit = std::env::temp_dir().join(format!(
        "streamguard-verdicts-junit-{}.xml",
        std::process::id()
    ));
    let junit_arg = junit.display().to_string();
    let run = conformance(&serve, &["--json", "--junit", &junit_arg]);
    drop(serve);
    let ctx = format!("{}\n{}", run.stdout, run.stderr);
    eprintln!("conformance run took {:.1} s", run.elapsed.as_secs_f64());
    assert_eq!(run.code, 1, "a FAIL is exit status 1\n{ctx}");

    // --json
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), list().len(), "{ctx}");
    let with = |v: &str| -> BTreeSet<String> {
        cases
            .iter()
            .filter(|c| c["verdict"] == v)
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(with("FAIL"), set(MUST_FAIL), "{ctx}");
    assert_eq!(with("SKIP"), set(MUST_SKIP), "{ctx}");
    assert_eq!(
        with("PASS").len(),
        list().len() - MUST_FAIL.len() - MUST_SKIP.len(),
        "everything else passes\n{ctx}"
    );
    assert_eq!(doc["failed"], MUST_FAIL.len(), "{ctx}");
    assert_eq!(doc["skipped"], MUST_SKIP.len(), "{ctx}");
    assert_eq!(
        doc["passed"],
        list().len() - MUST_FAIL.len() - MUST_SKIP.len()
    );
    for c in cases.iter().filter(|c| c["verdict"] != "PASS") {
        assert!(
            !c["observed"].as_str().unwrap().is_empty(),
            "{} says what happened",
            c["id"]
        );
    }
    // The upgrade went through: that is why they fail.
    for c in cases.iter().filter(|c| c["verdict"] == "FAIL") {
        assert!(c["observed"].as_str().unwrap().contains("101"), "{c}");
    }

    // --junit
    let xml = std::fs::read_to_string(&junit).unwrap();
    let _ = std::fs::remove_file(&junit);
    let parsed = roxmltree::Document::parse(&xml).unwrap();
    let testcases: Vec<_> = parsed
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(testcases.len(), list().len(), "{xml}");
    let having = |child: &str| -> BTreeSet<String> {
        testcases
            .iter()
            .filter(|t| t.children().any(|n| n.has_tag_name(child)))
            .map(|t| t.attribute("name").unwrap().to_owned())
            .collect()
    };
    assert_eq!(having("failure"), set(MUST_FAIL), "{xml}");
    assert_eq!(having("skipped"), set(MUST_SKIP), "{xml}");
    assert!(having("error").is_empty(), "{xml}");
    // Each <failure> is in its own <testcase>, with the expected and observed outcomes.
    for f in parsed.descendants().filter(|n| n.has_tag_name("failure")) {
        let message = f.attribute("message").unwrap_or_default();
        assert!(
            message.contains("expected") && message.contains("observed"),
            "{xml}"
        );
        assert!(f.parent().unwrap().has_tag_name("testcase"));
    }
}

/// The same target, a few cases, the table (no `--json`): a FAIL row, SKIP rows and a PASS
/// row, the summary line, exit status 1.
#[cfg(unix)]
#[test]
fn failing_and_skipped_cases_are_rows_of_the_table() {
    let serve = Serve::start(SERVE_ARGS, "info", None);
    let run = conformance(
        &serve,
        &[
            "--only",
            "upgrade.unsigned",
            "--only",
            "upgrade.wrong_path",
            "--only",
            "stream.expired_token",
            "--only",
            "injection.unauthenticated_frames_go_nowhere",
        ],
    );
    drop(serve);
    let ctx = format!("{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.code, 1, "{ctx}");
    let row = |id: &str| -> String {
        let rows: Vec<&str> = run
            .stdout
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(id))
            .collect();
        assert_eq!(rows.len(), 1, "one row for {id}\n{ctx}");
        rows[0].to_owned()
    };
    let verdict_of = |id: &str| row(id).split_whitespace().last().unwrap().to_owned();
    assert_eq!(verdict_of("upgrade.unsigned"), "FAIL", "{ctx}");
    assert!(row("upgrade.unsigned").contains("101"), "{ctx}");
    assert_eq!(verdict_of("upgrade.wrong_path"), "PASS", "{ctx}");
    assert_eq!(verdict_of("stream.expired_token"), "SKIP", "{ctx}");
    assert!(row("stream.expired_token").contains("--token-ttl"), "{ctx}");
    assert_eq!(
        verdict_of("injection.unauthenticated_frames_go_nowhere"),
        "SKIP",
        "{ctx}"
    );
    // `call.legitimate` ran first to learn about the echo, but is not reported.
    assert!(!run.stdout.contains("call.legitimate"), "{ctx}");
    assert!(
        run.stdout.contains("1 passed, 1 failed, 2 skipped"),
        "{ctx}"
    );
}

/// A target that accepts every connection and never answers: without a whole-run bound each
/// case would wait out its own timeouts, one after another (minutes). With a 3 s bound the run
/// ends in about 3 s: the case in progress is FAIL "run deadline reached after ...", every
/// case not yet run is FAIL "run deadline reached: not run", nothing passes. The two cases
/// that need `--token-ttl` SKIP at once (they run alongside, before the deadline).
#[tokio::test]
async fn a_stalling_target_is_cut_off_by_the_run_deadline() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s); // never read, never answered
        }
    });
    let target = Target {
        connect_to: addr,
        target: format!("http://{addr}"),
        public_url: format!("http://{addr}"),
        webhook_path: "/voice".to_owned(),
        stream_path: "/media".to_owned(),
        token_ttl: None,
        start_timeout: None,
        account_sid: AccountSid::parse(SERVE_ACCOUNT).unwrap(),
    };
    let bound = Duration::from_secs(3);
    let started = Instant::now();
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        run_within(target, AuthToken::new(SERVE_AUTH).unwrap(), &[], bound),
    )
    .await
    .expect("the run ended by itself")
    .unwrap();
    let elapsed = started.elapsed();
    holder.abort();
    assert!(
        elapsed >= bound && elapsed < bound + Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert_eq!(report.cases.len(), list().len());
    assert_eq!(report.passed, 0, "{}", report.table());
    let ttl_cases = ["webhook.replay_after_ttl", "stream.expired_token"];
    assert_eq!(report.ids(Verdict::Skip), ttl_cases, "{}", report.table());
    assert_eq!(report.failed, list().len() - ttl_cases.len());
    for c in report.cases.iter().filter(|c| c.verdict == Verdict::Fail) {
        assert!(
            c.observed.starts_with(RUN_DEADLINE_REACHED),
            "{}: {}",
            c.id,
            c.observed
        );
    }
    // The first case was under way when the deadline came; the rest never started.
    let first = &report.cases[0];
    assert_eq!(first.id, "call.legitimate");
    assert!(first.observed.contains("after"), "{}", first.observed);
    let not_run = report
        .cases
        .iter()
        .filter(|c| c.observed == format!("{RUN_DEADLINE_REACHED}: not run"))
        .count();
    assert_eq!(not_run, report.failed - 1, "{}", report.table());
}
