//! What `verify` found: findings, totals, and their text and JSON forms.

use serde::Serialize;
use std::fmt::Write as _;

/// What is wrong, or worth knowing, about one thing in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Problem {
    /// Blob data that does not hash to the digest it is stored under, or cannot be read.
    BadBlob,
    /// A link naming data the store does not have: a tag whose revision is gone, a
    /// revision or layer link whose data is gone, a tag folder without its link.
    DanglingLink,
    /// A manifest naming a blob or a list child the repository does not have.
    MissingReference,
    /// A link or manifest that is there but unusable: bad link text, a link naming
    /// another digest, a manifest that does not parse.
    InvalidContent,
    /// A tag registry 2.8.2 would not convert to schema1, and why. A note: a list
    /// without linux/amd64 or an OCI image is sound, old clients just cannot pull it.
    NoSchema1,
    /// Blob data no manifest references: garbage collection would delete it. A note.
    Unreferenced,
}

impl Problem {
    pub const ALL: [Problem; 6] = [
        Problem::BadBlob,
        Problem::DanglingLink,
        Problem::MissingReference,
        Problem::InvalidContent,
        Problem::NoSchema1,
        Problem::Unreferenced,
    ];

    /// Whether it makes the store unsound (notes do not).
    pub fn is_fault(self) -> bool {
        !matches!(self, Problem::NoSchema1 | Problem::Unreferenced)
    }

    pub fn name(self) -> &'static str {
        match self {
            Problem::BadBlob => "bad-blob",
            Problem::DanglingLink => "dangling-link",
            Problem::MissingReference => "missing-reference",
            Problem::InvalidContent => "invalid-content",
            Problem::NoSchema1 => "no-schema1",
            Problem::Unreferenced => "unreferenced",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    pub problem: Problem,
    /// The repository it was found in; None for the store's blobs.
    pub repository: Option<String>,
    /// The tag, manifest or blob concerned (`tag latest`, `manifest sha256:...`).
    pub subject: String,
    /// Why, naming the file on disk.
    pub detail: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Amount {
    pub count: u64,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub repositories: u64,
    pub tags: u64,
    pub manifests: u64,
    /// Blob data hashed.
    pub blobs: Amount,
    /// Of those, blobs no manifest references (only when the whole store is walked).
    pub unreferenced: Amount,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub store: String,
    /// Whether no finding is a fault.
    pub sound: bool,
    /// Only these repositories were walked (empty: all, and unreferenced blobs counted).
    pub repositories: Vec<String>,
    pub totals: Totals,
    /// Findings per problem, every problem listed.
    pub counts: std::collections::BTreeMap<Problem, u64>,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn new(
        store: String,
        repositories: Vec<String>,
        totals: Totals,
        mut findings: Vec<Finding>,
    ) -> Report {
        findings.sort();
        findings.dedup();
        let mut counts: std::collections::BTreeMap<Problem, u64> =
            Problem::ALL.iter().map(|p| (*p, 0)).collect();
        for f in &findings {
            *counts.entry(f.problem).or_default() += 1;
        }
        Report {
            store,
            sound: !findings.iter().any(|f| f.problem.is_fault()),
            repositories,
            totals,
            counts,
            findings,
        }
    }

    /// One line per finding (faults first), then the totals and the verdict.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            let level = if f.problem.is_fault() {
                "FAULT"
            } else {
                "note"
            };
            let place = match &f.repository {
                Some(repo) => format!("{repo}: "),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "{level} {}: {place}{}: {}",
                f.problem.name(),
                f.subject,
                f.detail
            );
        }
        let t = &self.totals;
        let _ = writeln!(
            out,
            "{} repositories, {} tags, {} manifests, {} blobs ({}) hashed",
            t.repositories,
            t.tags,
            t.manifests,
            t.blobs.count,
            human_bytes(t.blobs.bytes)
        );
        let counts: Vec<String> = self
            .counts
            .iter()
            .map(|(p, n)| format!("{} {n}", p.name()))
            .collect();
        let _ = writeln!(out, "findings: {}", counts.join(", "));
        if self.repositories.is_empty() {
            let _ = writeln!(
                out,
                "unreferenced blobs: {} ({})",
                t.unreferenced.count,
                human_bytes(t.unreferenced.bytes)
            );
        }
        let verdict = if self.sound {
            "sound"
        } else {
            "NOT SOUND: see the FAULT lines"
        };
        let _ = writeln!(out, "{}: {verdict}", self.store);
        out
    }

    pub fn json(&self) -> String {
        // Plain data with string keys: serializing it cannot fail.
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(problem: Problem) -> Finding {
        Finding {
            problem,
            repository: Some("r".into()),
            subject: "tag t".into(),
            detail: "why".into(),
        }
    }

    #[test]
    fn notes_keep_a_store_sound_faults_do_not() {
        let notes = vec![finding(Problem::NoSchema1), finding(Problem::Unreferenced)];
        let report = Report::new("s".into(), Vec::new(), Totals::default(), notes);
        assert!(report.sound);
        assert!(report.text().ends_with("s: sound\n"));
        let faults = vec![finding(Problem::BadBlob), finding(Problem::BadBlob)];
        let report = Report::new("s".into(), Vec::new(), Totals::default(), faults);
        assert!(!report.sound);
        assert_eq!(report.findings.len(), 1, "duplicates are dropped");
        assert_eq!(report.counts[&Problem::BadBlob], 1);
        assert!(report.text().starts_with("FAULT bad-blob: r: tag t: why\n"));
        let json: serde_json::Value = serde_json::from_str(&report.json()).expect("JSON");
        assert_eq!(json["sound"], false);
        assert_eq!(json["findings"][0]["problem"], "bad-blob");
        assert_eq!(json["counts"]["bad-blob"], 1);
    }

    #[test]
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(human_bytes(1023), "1023 bytes");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
