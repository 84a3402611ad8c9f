//! What a test compared, on which context, and what it skipped and why. A test whose
//! loop may skip (an adapter without a native path, a device whose buffers are too
//! small for the shape) counts its comparisons here and ends with [`Tally::finish`],
//! which fails when it compared nothing: a test that passes has compared something.
//!
//! The lines go straight to stderr (the harness captures `println!`), one whole line
//! each, so that they show in every run and scripts/gpu-report.sh can collect them:
//!
//!     COMPARED <test>: <n> <what> on <context>
//!     SKIPPED <test> on <context>: <why>

use std::fmt::Display;
use std::io::Write;

use wgpu_policy_loss::Context;

/// Comparisons counted per context, and the skips with their reasons.
pub struct Tally {
    test: String,
    what: String,
    counts: Vec<(String, usize)>,
    skipped: Vec<(String, String)>,
}

/// The running test's name: the harness names each test's thread after it.
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("(unnamed test)")
        .to_string()
}

/// A line to stderr, whole, even when the harness captures the test's output.
pub fn report_line(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// A part of a test that this machine cannot run, said on stderr with the reason (the
/// test still compares what it can): `SKIPPED <test>: <why>`.
pub fn skipped_part(why: impl Display) {
    report_line(&format!("SKIPPED {}: {why}", test_name()));
}

impl Tally {
    /// `what` names one unit of comparison, in the plural ("rows", "dtype pairs").
    pub fn new(what: impl Into<String>) -> Self {
        Tally {
            test: test_name(),
            what: what.into(),
            counts: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// `n` more comparisons made on `ctx` (each one an assertion that held).
    pub fn count(&mut self, ctx: &Context, n: usize) {
        self.count_on(&super::name(ctx), n);
    }

    /// As [`Tally::count`], for a context named by the caller.
    pub fn count_on(&mut self, on: &str, n: usize) {
        match self.counts.iter_mut().find(|(c, _)| c == on) {
            Some((_, k)) => *k += n,
            None => self.counts.push((on.to_string(), n)),
        }
    }

    /// `ctx` left out, and why.
    pub fn skip(&mut self, ctx: &Context, why: impl Display) {
        self.skipped.push((super::name(ctx), why.to_string()));
    }

    pub fn total(&self) -> usize {
        self.counts.iter().map(|(_, n)| n).sum()
    }

    /// Prints what was compared and skipped, and fails when nothing was compared,
    /// naming every skip and its reason. Returns the number compared.
    pub fn finish(self) -> usize {
        for (on, why) in &self.skipped {
            report_line(&format!("SKIPPED {} on {on}: {why}", self.test));
        }
        for (on, n) in self.counts.iter().filter(|(_, n)| *n > 0) {
            report_line(&format!(
                "COMPARED {}: {n} {} on {on}",
                self.test, self.what
            ));
        }
        let total = self.total();
        assert!(
            total > 0,
            "{}: 0 {} compared (a test that compares nothing must not pass); skipped: {}",
            self.test,
            self.what,
            match self.skipped.is_empty() {
                true => "nothing (no context was tried)".to_string(),
                false => self
                    .skipped
                    .iter()
                    .map(|(on, why)| format!("{on}: {why}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            }
        );
        total
    }

    /// [`Tally::finish`], and the count must be `expected` exactly.
    pub fn finish_exactly(self, expected: usize) {
        let (test, what) = (self.test.clone(), self.what.clone());
        let total = self.finish();
        assert_eq!(
            total, expected,
            "{test}: compared {total} {what}, {expected} expected"
        );
    }
}
