//! `streamguard conformance`: the catalogue ([`super::cases`]) run against any media-stream
//! server, every case bounded in time, the whole run bounded (about a minute against a correct
//! local target, plus one token TTL when `--token-ttl` is given).
//!
//! Order: the cases that mostly wait for a TTL to pass run alongside the others; the ones that
//! load the target (the pre-authentication flood) run alone at the end. `call.legitimate` runs
//! first whenever a selected case needs to know whether the target echoes. The report lists
//! the cases in catalogue order whatever order they ran in.

use std::fmt;
use std::time::Duration;

use super::cases::{Case, Ctx, Outcome, Phase, Target, catalogue};
use super::report::{CaseResult, Report, Verdict};
use crate::secret::AuthToken;

/// Longest a case may take (plus the token TTL for the cases that wait for it).
pub const CASE_TIMEOUT: Duration = Duration::from_secs(30);

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

async fn run_one(case: &Case, ctx: &Ctx) -> CaseResult {
    let limit = match case.phase {
        Phase::Waiting => CASE_TIMEOUT.saturating_add(ctx.target.token_ttl.unwrap_or_default()),
        Phase::Sequential | Phase::Alone => CASE_TIMEOUT,
    };
    let outcome = match tokio::time::timeout(limit, case.run(ctx)).await {
        Ok(o) => o,
        Err(_) => Outcome {
            verdict: Verdict::Fail,
            observed: format!("no outcome within {} s", limit.as_secs()),
        },
    };
    case.result(outcome)
}

async fn run_in_turn(cases: &[&Case], ctx: &Ctx) -> Vec<CaseResult> {
    let mut out = Vec::with_capacity(cases.len());
    for case in cases {
        out.push(run_one(case, ctx).await);
    }
    out
}

/// Runs the cases named in `only` (all when empty) against `target`, whose auth token is
/// `auth_token`.
pub async fn run(
    target: Target,
    auth_token: AuthToken,
    only: &[String],
) -> Result<Report, KitError> {
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
            let _ = run_one(legit, &ctx).await;
        }
    }
    let in_phase =
        |p: Phase| -> Vec<&Case> { selected.iter().copied().filter(|c| c.phase == p).collect() };
    let (sequential, waiting) = futures_util::future::join(
        run_in_turn(&in_phase(Phase::Sequential), &ctx),
        futures_util::future::join_all(
            in_phase(Phase::Waiting)
                .into_iter()
                .map(|c| run_one(c, &ctx)),
        ),
    )
    .await;
    results.extend(sequential);
    results.extend(waiting);
    results.extend(run_in_turn(&in_phase(Phase::Alone), &ctx).await);
    // Catalogue order.
    results.sort_by_key(|r| all.iter().position(|c| c.id == r.id).unwrap_or(usize::MAX));
    Ok(Report::new(name, results))
}
