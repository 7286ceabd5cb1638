//! The figures of a `cargo xtask cluster-sim` run: one row per measured quantity with its
//! samples (milliseconds), p50/p99, the target it is held against, plus the scenarios
//! not run, notes, and the failed checks (hung calls, lost or doubled pushes, missing
//! acks) that make the run fail. Rendered as the markdown table that is printed and
//! appended to `BENCHMARKS.md`; passed from the driver to `cluster-sim` as a file in a
//! line-based form.

use anyhow::{Context, Result};

/// One measured quantity.
#[derive(Debug, Clone)]
pub struct Row {
    /// The scenario (`1 cold start`).
    pub scenario: String,
    /// What was measured.
    pub what: String,
    /// The samples, milliseconds.
    pub samples: Vec<f64>,
    /// The target, or empty.
    pub target: String,
    /// The samples' unit (`ms` unless set).
    pub unit: String,
}

impl Row {
    /// A row.
    pub fn new(scenario: &str, what: &str, samples: Vec<f64>, target: &str) -> Row {
        Row {
            scenario: scenario.into(),
            what: what.into(),
            samples,
            target: target.into(),
            unit: "ms".into(),
        }
    }

    /// The same row with samples in `unit`.
    pub fn in_unit(mut self, unit: &str) -> Row {
        self.unit = unit.into();
        self
    }

    /// The `q` quantile (nearest rank), `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.samples.is_empty() {
            return None;
        }
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
        Some(s[rank - 1])
    }

    /// "holds", "misses" or "" for a target of the form `p99 <= N ms`.
    fn verdict(&self) -> &'static str {
        let Some(limit) = self
            .target
            .strip_prefix("p99 <= ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
        else {
            return "";
        };
        match self.quantile(0.99) {
            Some(p) if p <= limit => "holds",
            Some(_) => "misses",
            None => "not measured",
        }
    }
}

/// Everything a run found.
#[derive(Debug, Default)]
pub struct Report {
    /// The measured rows.
    pub rows: Vec<Row>,
    /// Scenarios not run.
    pub not_run: Vec<String>,
    /// Free notes (counts).
    pub notes: Vec<String>,
    /// Failed checks.
    pub failures: Vec<String>,
}

impl Report {
    /// Add a row.
    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    /// A failed check.
    pub fn fail(&mut self, what: String) {
        eprintln!("  FAIL: {what}");
        self.failures.push(what);
    }

    /// A note.
    pub fn note(&mut self, what: String) {
        self.notes.push(what);
    }

    /// A scenario that was not run.
    pub fn not_run(&mut self, what: &str) {
        self.not_run.push(what.into());
    }

    /// The line form (the driver writes it, `cluster-sim` reads it).
    pub fn to_lines(&self) -> String {
        let mut s = String::new();
        for r in &self.rows {
            let samples: Vec<String> = r.samples.iter().map(|x| format!("{x:.3}")).collect();
            s.push_str(&format!(
                "row\t{}\t{}\t{}\t{}\t{}\n",
                r.scenario,
                r.what,
                r.target,
                r.unit,
                samples.join(",")
            ));
        }
        for (tag, list) in [
            ("notrun", &self.not_run),
            ("note", &self.notes),
            ("fail", &self.failures),
        ] {
            for x in list {
                s.push_str(&format!("{tag}\t{}\n", x.replace(['\t', '\n'], " ")));
            }
        }
        s
    }

    /// Read the line form.
    pub fn from_lines(text: &str) -> Result<Report> {
        let mut r = Report::default();
        for line in text.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            match f.as_slice() {
                ["row", scenario, what, target, unit, samples] => {
                    let samples = samples
                        .split(',')
                        .filter(|x| !x.is_empty())
                        .map(|x| x.parse::<f64>().context("a sample"))
                        .collect::<Result<Vec<f64>>>()?;
                    r.rows
                        .push(Row::new(scenario, what, samples, target).in_unit(unit));
                }
                ["notrun", x] => r.not_run.push(x.to_string()),
                ["note", x] => r.notes.push(x.to_string()),
                ["fail", x] => r.failures.push(x.to_string()),
                _ => anyhow::bail!("unreadable result line {line:?}"),
            }
        }
        Ok(r)
    }

    /// The markdown table with the notes, the scenarios not run and the failures.
    pub fn markdown(&self) -> String {
        let mut md = String::from(
            "| scenario | measured | samples | p50 | p99 | target | holds? |\n|---|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            let f = |x: Option<f64>| {
                x.map_or("—".to_string(), |v| {
                    if v.abs() < 10.0 && v.fract() != 0.0 {
                        format!("{v:.2} {}", r.unit)
                    } else {
                        format!("{v:.0} {}", r.unit)
                    }
                })
            };
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                r.scenario,
                r.what,
                r.samples.len(),
                f(r.quantile(0.5)),
                f(r.quantile(0.99)),
                r.target,
                r.verdict()
            ));
        }
        for x in &self.not_run {
            md.push_str(&format!("| {x} | not run | | | | | |\n"));
        }
        md.push('\n');
        for n in &self.notes {
            md.push_str(&format!("- {n}\n"));
        }
        if self.failures.is_empty() {
            md.push_str("- checks: no hung call, no lost or duplicated push, no missing ack\n");
        } else {
            md.push_str(&format!("- **{} failed checks**:\n", self.failures.len()));
            for x in &self.failures {
                md.push_str(&format!("  - {x}\n"));
            }
        }
        md
    }
}
