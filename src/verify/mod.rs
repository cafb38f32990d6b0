//! `registryfs verify`: is this store sound? Walks it as registry 2.8.2's
//! `garbage-collect --dry-run` does (every repository's manifest revisions, and what
//! each references), checks every link on the way, asks the namespace whether each tag
//! converts to schema1, then hashes the blob data on a pool of threads.
//!
//! Faults (the store is unsound): blob data that does not hash to its digest, links to
//! data that is gone, manifests naming what the repository lacks, unusable links or
//! manifests. Notes: tags without schema1 (registry 2.8.2 refuses them too) and blob
//! data nothing references (what garbage collection would delete).

mod hash;
mod report;

pub use hash::Progress;
pub use report::{human_bytes, Amount, Finding, Problem, Report, Totals};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{self, Manifest};
use crate::namespace::Namespace;
use crate::store::Store;
use std::collections::{BTreeMap, BTreeSet};

/// Revisions that cannot be served, with what is wrong with them: a tag naming one has
/// the same fault.
type Broken = BTreeMap<Digest, (Problem, String)>;

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Walk only these repositories (and hash only the blobs they link or reference);
    /// empty: the whole store, unreferenced blobs included.
    pub repositories: Vec<String>,
    /// Threads hashing blob data.
    pub threads: usize,
}

/// Verifies the store `ns` serves; `store_name` names it in the report. Errors only
/// when the walk cannot start (the store's folders unreadable, an unknown repository);
/// everything found in the store is a finding.
pub fn verify(
    ns: &Namespace,
    store_name: &str,
    options: &Options,
    progress: &mut dyn FnMut(Progress),
) -> Result<Report> {
    let store = ns.store();
    let repositories = if options.repositories.is_empty() {
        ns.repositories()?
    } else {
        for name in &options.repositories {
            if !store.is_repository(name)? {
                return Err(Error::Usage(format!(
                    "{name}: no such repository in {store_name}"
                )));
            }
        }
        options.repositories.clone()
    };
    let mut walk = Walk {
        ns,
        store,
        findings: Vec::new(),
        totals: Totals::default(),
        wanted: BTreeSet::new(),
    };
    for repo in &repositories {
        walk.repository(repo);
    }
    let Walk {
        mut findings,
        mut totals,
        wanted,
        ..
    } = walk;
    totals.repositories = repositories.len() as u64;

    let whole_store = options.repositories.is_empty();
    let stored = store.stored_blobs()?;
    let to_hash: Vec<_> = stored
        .iter()
        .filter(|(d, _)| whole_store || wanted.contains(d))
        .cloned()
        .collect();
    totals.blobs = Amount {
        count: to_hash.len() as u64,
        bytes: to_hash.iter().map(|(_, f)| f.len).sum(),
    };
    if whole_store {
        for (digest, file) in stored.iter().filter(|(d, _)| !wanted.contains(d)) {
            totals.unreferenced.count += 1;
            totals.unreferenced.bytes += file.len;
            findings.push(Finding {
                problem: Problem::Unreferenced,
                repository: None,
                subject: format!("blob {digest}"),
                detail: format!(
                    "{}: {} bytes no manifest references",
                    file.path.display(),
                    file.len
                ),
            });
        }
    }
    findings.extend(hash::hash_blobs(store, &to_hash, options.threads, progress));
    Ok(Report::new(
        store_name.to_string(),
        options.repositories.clone(),
        totals,
        findings,
    ))
}

/// The walk's state: what was found, and which blobs the walked repositories link or
/// reference (garbage collection's marks, plus links).
struct Walk<'a> {
    ns: &'a Namespace,
    store: &'a dyn Store,
    findings: Vec<Finding>,
    totals: Totals,
    wanted: BTreeSet<Digest>,
}

impl Walk<'_> {
    fn found(&mut self, problem: Problem, repo: &str, subject: String, detail: String) {
        self.findings.push(Finding {
            problem,
            repository: Some(repo.to_string()),
            subject,
            detail,
        });
    }

    /// A store error met on `subject`: a link or data that is gone is dangling,
    /// anything else is unusable content. Returns what was found.
    fn store_error(&mut self, repo: &str, subject: String, e: &Error) -> (Problem, String) {
        let problem = if e.is_not_found() {
            Problem::DanglingLink
        } else {
            Problem::InvalidContent
        };
        self.found(problem, repo, subject, e.to_string());
        (problem, e.to_string())
    }

    fn repository(&mut self, repo: &str) {
        let broken = self.revisions(repo);
        self.layers(repo);
        self.tags(repo, &broken);
    }

    /// Every revision and what it references; returns the revisions that cannot be read.
    fn revisions(&mut self, repo: &str) -> Broken {
        let mut broken = Broken::new();
        let digests = match self.store.linked_manifests(repo) {
            Ok(digests) => digests,
            Err(e) => {
                self.store_error(repo, "manifest revisions".into(), &e);
                return broken;
            }
        };
        for digest in digests {
            self.wanted.insert(digest.clone());
            let subject = format!("manifest {digest}");
            let doc = match self.store.manifest(repo, &digest) {
                Ok(Some(doc)) => doc,
                Ok(None) => continue,
                Err(e) => {
                    let fault = self.store_error(repo, subject, &e);
                    broken.insert(digest, fault);
                    continue;
                }
            };
            self.totals.manifests += 1;
            match manifest::parse(&doc.bytes) {
                Ok(parsed) => self.references(repo, &digest, &parsed.manifest),
                Err(e) => {
                    let detail = format!("{}: {e}", doc.path.display());
                    self.found(Problem::InvalidContent, repo, subject, detail.clone());
                    broken.insert(digest, (Problem::InvalidContent, detail));
                }
            }
        }
        broken
    }

    /// What a manifest names must be in the repository: an image's config and layers
    /// (foreign layers live elsewhere), a list's children.
    fn references(&mut self, repo: &str, digest: &Digest, manifest: &Manifest) {
        let subject = format!("manifest {digest}");
        let (blobs, children): (Vec<_>, Vec<_>) = match manifest {
            Manifest::Schema1 => return,
            Manifest::Image { config, layers } => (
                std::iter::once(config)
                    .chain(layers.iter().filter(|l| !manifest::is_foreign_layer(l)))
                    .collect(),
                Vec::new(),
            ),
            Manifest::Index { manifests } => (Vec::new(), manifests.iter().collect()),
        };
        for (descriptor, is_child) in blobs
            .into_iter()
            .map(|d| (d, false))
            .chain(children.into_iter().map(|d| (d, true)))
        {
            let named = match Digest::parse(&descriptor.digest) {
                Ok(named) => named,
                Err(e) => {
                    let detail = format!("names {:?}: {e}", descriptor.digest);
                    self.found(Problem::InvalidContent, repo, subject.clone(), detail);
                    continue;
                }
            };
            self.wanted.insert(named.clone());
            let what = if is_child { "child manifest" } else { "blob" };
            // A link whose data is gone is reported by the walk of the links themselves.
            let present = if is_child {
                self.store.manifest_mtime(repo, &named).map(|m| m.is_some())
            } else {
                self.store.blob(repo, &named).map(|b| b.is_some())
            };
            if let Ok(false) = present {
                let detail = format!("names {what} {named}, which is not in {repo}");
                self.found(Problem::MissingReference, repo, subject.clone(), detail);
            }
        }
    }

    /// Every blob link must lead to data named by its own digest.
    fn layers(&mut self, repo: &str) {
        let digests = match self.store.linked_blobs(repo) {
            Ok(digests) => digests,
            Err(e) => {
                self.store_error(repo, "blob links".into(), &e);
                return;
            }
        };
        for digest in digests {
            self.wanted.insert(digest.clone());
            if let Err(e) = self.store.blob(repo, &digest) {
                self.store_error(repo, format!("blob {digest}"), &e);
            }
        }
    }

    /// Every tag must name a revision of the repository; and does it convert to schema1?
    fn tags(&mut self, repo: &str, broken: &Broken) {
        let tags = match self.store.tags(repo) {
            Ok(tags) => tags.unwrap_or_default(),
            Err(e) => {
                self.store_error(repo, "tags".into(), &e);
                return;
            }
        };
        for tag in tags {
            self.totals.tags += 1;
            let subject = format!("tag {tag}");
            let link = match self.store.tag_link(repo, &tag) {
                Ok(Some(link)) => link,
                Ok(None) => {
                    let detail = "the tag folder's name is not a tag".to_string();
                    self.found(Problem::InvalidContent, repo, subject, detail);
                    continue;
                }
                Err(e) => {
                    self.store_error(repo, subject, &e);
                    continue;
                }
            };
            if let Some((problem, detail)) = broken.get(&link.digest) {
                let detail = format!("names manifest {}: {detail}", link.digest);
                self.found(*problem, repo, subject, detail);
                continue;
            }
            match self.store.manifest_mtime(repo, &link.digest) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    let detail =
                        format!("names {}, which is not a revision of {repo}", link.digest);
                    self.found(Problem::DanglingLink, repo, subject, detail);
                    continue;
                }
                Err(e) => {
                    self.store_error(repo, subject, &e);
                    continue;
                }
            }
            match self.ns.schema1_refusal(repo, &tag) {
                Ok(None) => {}
                Ok(Some(reason)) => self.found(Problem::NoSchema1, repo, subject, reason),
                Err(e) => {
                    self.store_error(repo, subject, &e);
                }
            }
        }
    }
}
