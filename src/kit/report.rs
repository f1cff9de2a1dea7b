//! What the conformance kit found, for people (a table), programs (`--json`) and CI systems
//! (`--junit FILE`, JUnit XML through `quick-junit`: GitHub Actions, GitLab and Jenkins read
//! it).

use std::fmt::Write as _;

use serde::Serialize;

/// The verdict of one case: exactly one of three words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// The target did what a correct server does.
    Pass,
    /// It did not.
    Fail,
    /// The case could not be judged (a precondition is missing: say, `--token-ttl` was not
    /// given, or the target does not echo); never a silent pass.
    Skip,
}

impl Verdict {
    /// `PASS`, `FAIL` or `SKIP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::Skip => "SKIP",
        }
    }
}

/// One case's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CaseResult {
    /// The stable id (`webhook.unsigned`).
    pub id: &'static str,
    /// One line on what is tried.
    pub description: &'static str,
    /// What a correct server does.
    pub expected: &'static str,
    /// What this one did.
    pub observed: String,
    /// The verdict.
    pub verdict: Verdict,
}

/// Every case's result, in the order run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The target (`http://HOST:PORT`).
    pub target: String,
    /// The results.
    pub cases: Vec<CaseResult>,
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failed: usize,
    /// Cases skipped.
    pub skipped: usize,
}

impl Report {
    /// A report of `cases` against `target`.
    pub fn new(target: impl Into<String>, cases: Vec<CaseResult>) -> Self {
        let count = |v| cases.iter().filter(|c| c.verdict == v).count();
        Self {
            target: target.into(),
            passed: count(Verdict::Pass),
            failed: count(Verdict::Fail),
            skipped: count(Verdict::Skip),
            cases,
        }
    }

    /// Whether every case passed or was skipped, and at least one ran.
    pub fn all_passed(&self) -> bool {
        self.failed == 0 && self.passed > 0
    }

    /// The verdict of case `id`, if it ran.
    pub fn verdict(&self, id: &str) -> Option<Verdict> {
        self.cases.iter().find(|c| c.id == id).map(|c| c.verdict)
    }

    /// The ids of the cases with verdict `v`.
    pub fn ids(&self, v: Verdict) -> Vec<&'static str> {
        self.cases
            .iter()
            .filter(|c| c.verdict == v)
            .map(|c| c.id)
            .collect()
    }

    /// `N passed, M failed, K skipped`.
    pub fn summary_line(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }

    /// The table: one row per case (id, expected, observed, verdict), then the summary line.
    pub fn table(&self) -> String {
        let width = |f: fn(&CaseResult) -> usize, min: usize| {
            self.cases.iter().map(f).max().unwrap_or(0).max(min)
        };
        let w_id = width(|c| c.id.len(), 2);
        let w_exp = width(|c| c.expected.chars().count(), 8);
        let w_obs = width(|c| c.observed.chars().count(), 8);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:w_id$}  {:w_exp$}  {:w_obs$}  verdict",
            "id", "expected", "observed"
        );
        let rule = w_id
            .saturating_add(w_exp)
            .saturating_add(w_obs)
            .saturating_add(13);
        let _ = writeln!(out, "{}", "-".repeat(rule));
        for c in &self.cases {
            let _ = writeln!(
                out,
                "{:w_id$}  {:w_exp$}  {:w_obs$}  {}",
                c.id,
                c.expected,
                c.observed,
                c.verdict.as_str()
            );
        }
        let _ = writeln!(out, "{}", self.summary_line());
        out
    }

    /// The report as one JSON document.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The report as JUnit XML: one test suite, one test case per case (a failure element
    /// for FAIL, a skipped element for SKIP, the expected and observed outcomes in its text).
    pub fn junit(&self) -> Result<String, quick_junit::SerializeError> {
        use quick_junit::{NonSuccessKind, Report as JUnit, TestCase, TestCaseStatus, TestSuite};
        let mut suite = TestSuite::new("streamguard conformance");
        for c in &self.cases {
            let status = match c.verdict {
                Verdict::Pass => TestCaseStatus::success(),
                Verdict::Fail => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(format!("expected {}; observed {}", c.expected, c.observed));
                    s
                }
                Verdict::Skip => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message(c.observed.clone());
                    s
                }
            };
            let mut case = TestCase::new(c.id, status);
            case.set_classname("streamguard.conformance");
            case.set_system_out(format!(
                "{}\nexpected: {}\nobserved: {}",
                c.description, c.expected, c.observed
            ));
            suite.add_test_case(case);
        }
        let mut report = JUnit::new(format!("streamguard conformance against {}", self.target));
        report.add_test_suite(suite);
        report.to_string()
    }
}
