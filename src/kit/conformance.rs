//! `streamguard conformance`: the catalogue ([`super::cases`]) run against any media-stream
//! server, every case bounded in time, the whole run bounded (about a minute against a correct
//! local target, plus one token TTL when `--token-ttl` is given). Each case's own timeout
//! ([`CASE_TIMEOUT`]) alone would let a target that accepts and then stalls hold a run for
//! 34 × 30 s; the whole run also has a deadline ([`RUN_TIMEOUT`] plus the token TTL), after
//! which the case in progress and every case not yet run are FAIL, observed "run deadline
//! reached".
//!
//! Order: the cases that mostly wait for a TTL to pass run alongside the others; the ones that
//! load the target (the pre-authentication flood) run alone at the end. `call.legitimate` runs
//! first whenever a selected case needs to know whether the target echoes. The report lists
//! the cases in catalogue order whatever order they ran in.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::cases::{Case, Ctx, Outcome, Phase, Target, catalogue};
use super::report::{CaseResult, Report, Verdict};
use crate::secret::AuthToken;

/// Longest a case may take (plus the token TTL for the cases that wait for it).
pub const CASE_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest a whole run may take, plus the token TTL when it is given (the cases that wait for
/// a token to expire run alongside the others, so one TTL covers them). A correct local
/// target takes well under a minute; five leave room for a slow remote one.
///
/// What is not judged by then is reported FAIL (observed "run deadline reached"), not a
/// could-not-run error (exit status 2): the target was reachable and was being judged, it is
/// what made the run stall, and a conforming server answers within every case's bound. A CI
/// job then still gets the full report, table, JSON and JUnit, with the cases judged before
/// the stall, and exit status 1 — a failure to look at, not a broken pipeline. Not SKIP: a
/// case that could not be judged because of the target must never pass silently.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// The `observed` of a case the run deadline cut short or left unrun starts with this.
pub const RUN_DEADLINE_REACHED: &str = "run deadline reached";

/// Why the kit could not run at all (exit status 2).
#[derive(Debug)]
#[non_exhaustive]
pub enum KitError {
    /// The arguments do not name a runnable set of cases.
    Usage(String),
    /// The target does not accept connections.
    Unreachable(String),
}

impl fmt::Display for KitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(e) => f.write_str(e),
            Self::Unreachable(e) => write!(f, "the target is unreachable: {e}"),
        }
    }
}

impl std::error::Error for KitError {}

/// Every case id with its description, for `--list`.
pub fn list() -> Vec<(&'static str, &'static str)> {
    catalogue().iter().map(|c| (c.id, c.description)).collect()
}

async fn run_one(case: &Case, ctx: &Ctx, deadline: Instant) -> CaseResult {
    let limit = match case.phase {
        Phase::Waiting => CASE_TIMEOUT.saturating_add(ctx.target.token_ttl.unwrap_or_default()),
        Phase::Sequential | Phase::Alone => CASE_TIMEOUT,
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let fail = |observed| Outcome {
        verdict: Verdict::Fail,
        observed,
    };
    let outcome = if left.is_zero() {
        fail(format!("{RUN_DEADLINE_REACHED}: not run"))
    } else if left < limit {
        match tokio::time::timeout(left, case.run(ctx)).await {
            Ok(o) => o,
            Err(_) => fail(format!(
                "{RUN_DEADLINE_REACHED} after {:.1} s of this case, no outcome",
                left.as_secs_f64()
            )),
        }
    } else {
        match tokio::time::timeout(limit, case.run(ctx)).await {
            Ok(o) => o,
            Err(_) => fail(format!("no outcome within {} s", limit.as_secs())),
        }
    };
    case.result(outcome)
}

async fn run_in_turn(cases: &[&Case], ctx: &Ctx, deadline: Instant) -> Vec<CaseResult> {
    let mut out = Vec::with_capacity(cases.len());
    for case in cases {
        out.push(run_one(case, ctx, deadline).await);
    }
    out
}

/// Runs the cases named in `only` (all when empty) against `target`, whose auth token is
/// `auth_token`, within [`RUN_TIMEOUT`] plus the token TTL.
pub async fn run(
    target: Target,
    auth_token: AuthToken,
    only: &[String],
) -> Result<Report, KitError> {
    run_within(target, auth_token, only, RUN_TIMEOUT).await
}

/// [`run`] with another whole-run bound than [`RUN_TIMEOUT`] (the token TTL, when given, is
/// still added): what is not judged within it is FAIL, observed [`RUN_DEADLINE_REACHED`].
pub async fn run_within(
    target: Target,
    auth_token: AuthToken,
    only: &[String],
    run_timeout: Duration,
) -> Result<Report, KitError> {
    // From the start, before the reachability check (itself bounded to 5 s).
    let deadline = Instant::now()
        .checked_add(run_timeout.saturating_add(target.token_ttl.unwrap_or_default()))
        .unwrap_or_else(far_future);
    let all = catalogue();
    for id in only {
        if !all.iter().any(|c| c.id == id) {
            return Err(KitError::Usage(format!(
                "unknown case id {id:?} (see --list)"
            )));
        }
    }
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(target.connect_to),
    )
    .await
    .map_err(|_| KitError::Unreachable(format!("{}: no answer", target.target)))?
    .map_err(|e| KitError::Unreachable(format!("{}: {e}", target.target)))?;

    let selected: Vec<&Case> = all
        .iter()
        .filter(|c| only.is_empty() || only.iter().any(|id| id == c.id))
        .collect();
    let name = target.target.clone();
    let ctx = Ctx::new(target, auth_token);
    let needs_echo = selected
        .iter()
        .any(|c| c.id == "injection.unauthenticated_frames_go_nowhere");
    let legit_selected = selected.iter().any(|c| c.id == "call.legitimate");
    let mut results = Vec::new();
    if needs_echo && !legit_selected {
        // Learn whether the target echoes; not reported.
        if let Some(legit) = all.iter().find(|c| c.id == "call.legitimate") {
            let _ = run_one(legit, &ctx, deadline).await;
        }
    }
    let in_phase =
        |p: Phase| -> Vec<&Case> { selected.iter().copied().filter(|c| c.phase == p).collect() };
    let (sequential, waiting) = futures_util::future::join(
        run_in_turn(&in_phase(Phase::Sequential), &ctx, deadline),
        futures_util::future::join_all(
            in_phase(Phase::Waiting)
                .into_iter()
                .map(|c| run_one(c, &ctx, deadline)),
        ),
    )
    .await;
    results.extend(sequential);
    results.extend(waiting);
    results.extend(run_in_turn(&in_phase(Phase::Alone), &ctx, deadline).await);
    // Catalogue order.
    results.sort_by_key(|r| all.iter().position(|c| c.id == r.id).unwrap_or(usize::MAX));
    Ok(Report::new(name, results))
}

/// A deadline no run reaches (for a bound too large to add to now).
fn far_future() -> Instant {
    Instant::now()
        .checked_add(Duration::from_secs(86_400 * 365))
        .unwrap_or_else(Instant::now)
}
