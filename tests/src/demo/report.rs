//! What the demo verified: every check, recorded as it is made and printed
//! as a table at the end.

use std::fmt::Write as _;

/// One check: the act it belongs to, what it verified, and what was seen.
pub struct Check {
    pub act: String,
    pub what: String,
    pub passed: bool,
    pub detail: String,
}

#[derive(Default)]
pub struct Report {
    act: String,
    pub checks: Vec<Check>,
}

impl Report {
    /// Starts an act: a heading in the narration, a group in the table.
    pub fn act(&mut self, title: &str) {
        println!("\n== {title} ==");
        self.act = title.to_owned();
    }

    /// Narration between checks.
    pub fn say(&self, text: impl AsRef<str>) {
        for line in text.as_ref().lines() {
            println!("   {line}");
        }
    }

    /// Records `what` as verified when `outcome` is Ok (its text is what was
    /// seen), failed otherwise. Returns whether it passed.
    pub fn check(&mut self, what: &str, outcome: Result<String, String>) -> bool {
        let (passed, detail) = match outcome {
            Ok(detail) => (true, detail),
            Err(detail) => (false, detail),
        };
        let mark = if passed { "ok  " } else { "FAIL" };
        println!(" [{mark}] {what}: {}", first_line(&detail));
        if !passed {
            for line in detail.lines().skip(1).take(30) {
                println!("        {line}");
            }
        }
        self.checks.push(Check {
            act: self.act.clone(),
            what: what.to_owned(),
            passed,
            detail,
        });
        passed
    }

    /// Records a step that could not be carried out as a failed check.
    pub fn failed(&mut self, what: &str, error: &anyhow::Error) {
        self.check(what, Err(format!("{error:#}")));
    }

    pub fn verified(&self) -> usize {
        self.checks.iter().filter(|c| c.passed).count()
    }

    pub fn failures(&self) -> usize {
        self.checks.len() - self.verified()
    }

    /// The table of every check, then the verdict line
    /// `demo: N verified, M failed` (always the last line).
    pub fn summary(&self) -> String {
        let mut out = String::from("\n== what the demo verified ==\n");
        let width = self
            .checks
            .iter()
            .map(|c| c.what.chars().count())
            .max()
            .unwrap_or(0)
            .min(72);
        let mut act = "";
        for check in &self.checks {
            if check.act != act {
                act = &check.act;
                let _ = writeln!(out, "{act}");
            }
            let mark = if check.passed { "ok  " } else { "FAIL" };
            let _ = writeln!(
                out,
                "  {mark}  {:width$}  {}",
                check.what,
                shorten(first_line(&check.detail), 60)
            );
        }
        let _ = write!(
            out,
            "demo: {} verified, {} failed",
            self.verified(),
            self.failures()
        );
        out
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}
