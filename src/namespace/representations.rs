//! Which files a manifest folder holds, and their bytes.
//!
//! Mirrors what registry 2.8.2 answers for GET `/v2/<repo>/manifests/<ref>`: by tag, each
//! representation a client could be served (stored, platform child, converted schema1);
//! by digest, only the stored bytes (a stored schema1 signed, as the registry serves it).

use super::{Content, Namespace};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{self, Descriptor, Manifest, ManifestKind, ParsedManifest};
use crate::metrics::{CacheResult, Refusal, METRICS};
use crate::schema1;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::path::Reference;

/// The files of a manifest folder, and why there is no `schema1` when there is none.
#[derive(Debug)]
pub struct Representations {
    pub files: BTreeMap<ManifestKind, Content>,
    /// The `Docker-Content-Digest` registry 2.8.2 sends with each file: the stored
    /// manifest's, a list's platform child's, or a converted schema1's payload digest
    /// (the document without its signatures).
    pub digests: BTreeMap<ManifestKind, Digest>,
    /// The revision the reference names (for a tag: its link), which registry 2.8.2
    /// compares `If-None-Match` with.
    pub revision: Digest,
    /// An OCI index stored without `mediaType`: registry 2.8.2 serves it whatever the
    /// client accepts (its OCI gate tests the declared type).
    pub any_accept: bool,
    pub no_schema1_because: Option<String>,
    /// The folder's and its files' time: by tag, when the tag was last pushed (every file
    /// of it is a function of where the tag points); by digest, when the manifest was
    /// stored.
    pub mtime: SystemTime,
}

impl Representations {
    fn new(revision: Digest, mtime: SystemTime) -> Representations {
        Representations {
            files: BTreeMap::new(),
            digests: BTreeMap::new(),
            revision,
            any_accept: false,
            no_schema1_because: None,
            mtime,
        }
    }

    fn insert(&mut self, kind: ManifestKind, content: Content, digest: Digest) {
        self.files.insert(kind, content);
        self.digests.insert(kind, digest);
    }

    fn refuse_schema1(mut self, reason: impl Into<String>) -> Option<Representations> {
        self.no_schema1_because = Some(reason.into());
        Some(self)
    }

    /// A tag's refusal, counted by why.
    fn refuse_tag_schema1(
        self,
        why: Refusal,
        reason: impl Into<String>,
    ) -> Option<Representations> {
        METRICS.schema1_refused.inc(why);
        self.refuse_schema1(reason)
    }
}

/// A converted schema1 document: the bytes served (signed when first read), and the
/// digest registry 2.8.2 names it by (of the payload, i.e. without the signatures).
#[derive(Clone, Debug)]
pub struct Schema1Doc {
    pub signed: Arc<schema1::jws::Unsigned>,
    pub payload_digest: Digest,
}

/// Why a tag has no schema1: the kind (counted) and the words (logged, shown).
pub type Refused = (Refusal, String);

/// What a schema1 document depends on, so a cached one is never served for other inputs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Schema1Key {
    repo: String,
    tag: String,
    manifest: Digest,
    key_id: String,
    platform: String,
}

impl Schema1Key {
    /// What one takes in memory, to bound the cache by bytes.
    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.repo.len()
            + self.tag.len()
            + self.key_id.len()
            + self.platform.len()
            + 80
    }
}

/// A manifest as stored, parsed.
struct StoredManifest {
    bytes: Arc<[u8]>,
    parsed: ParsedManifest,
    mtime: SystemTime,
}

impl Namespace {
    fn stored_manifest(&self, repo: &str, digest: &Digest) -> Result<Option<StoredManifest>> {
        let Some(doc) = self.store.manifest(repo, digest)? else {
            return Ok(None);
        };
        let parsed = manifest::parse(&doc.bytes)
            .map_err(|e| Error::invalid(&doc.path, format!("manifest {digest}: {e}")))?;
        Ok(Some(StoredManifest {
            bytes: doc.bytes,
            parsed,
            mtime: doc.mtime,
        }))
    }

    /// All representations of `repo`'s manifest `reference`, or None if unknown.
    pub(super) fn representations(
        &self,
        repo: &str,
        reference: &Reference,
    ) -> Result<Option<Representations>> {
        let (digest, tag_mtime) = match reference {
            Reference::Digest(d) => (d.clone(), None),
            Reference::Tag(t) => match self.store.tag_link(repo, t)? {
                Some(link) => (link.digest, Some(link.mtime)),
                None => return Ok(None),
            },
        };
        let Some(StoredManifest {
            bytes,
            parsed,
            mtime: stored_mtime,
        }) = self.stored_manifest(repo, &digest)?
        else {
            return Ok(None);
        };
        let mut out = Representations::new(digest.clone(), tag_mtime.unwrap_or(stored_mtime));
        if parsed.kind == ManifestKind::Schema1 {
            out.insert(
                ManifestKind::Schema1,
                Content::Jws(self.sign_stored_schema1(repo, &digest, &bytes)?),
                digest,
            );
            return Ok(Some(out));
        }
        out.insert(parsed.kind, Content::Bytes(bytes), digest.clone());
        out.any_accept = parsed.kind == ManifestKind::OciIndex && parsed.untyped;
        let Reference::Tag(tag) = reference else {
            return Ok(out.refuse_schema1(
                "schema1 is generated for tags only; a digest names the stored bytes",
            ));
        };

        // By tag, a list (or, with --convert-oci, an OCI index) also offers its platform
        // child, and an image manifest its schema1 conversion.
        let (image_digest, image) = match &parsed.manifest {
            Manifest::Index { manifests }
                if parsed.kind == ManifestKind::List || self.config.convert_oci =>
            {
                let child = match self.platform_child(repo, &digest, manifests)? {
                    Ok(child) => child,
                    Err((why, reason)) => return Ok(out.refuse_tag_schema1(why, reason)),
                };
                let (child_digest, child_bytes, child_parsed) = child;
                if child_parsed.kind == ManifestKind::Schema1 {
                    out.insert(
                        ManifestKind::Schema1,
                        Content::Jws(self.sign_stored_schema1(
                            repo,
                            &child_digest,
                            &child_bytes,
                        )?),
                        child_digest,
                    );
                    return Ok(Some(out));
                }
                if matches!(child_parsed.kind, ManifestKind::Schema2 | ManifestKind::Oci) {
                    out.insert(
                        child_parsed.kind,
                        Content::Bytes(child_bytes),
                        child_digest.clone(),
                    );
                }
                (child_digest, child_parsed)
            }
            Manifest::Image { .. } => (digest, parsed),
            _ => {
                return Ok(out.refuse_tag_schema1(
                    Refusal::IndexNotConverted,
                    "an OCI index offers schema1 only with --convert-oci",
                ))
            }
        };
        let convertible = image.kind == ManifestKind::Schema2
            || image.kind == ManifestKind::Oci && self.config.convert_oci;
        let Manifest::Image { config, layers } = &image.manifest else {
            return Ok(out.refuse_tag_schema1(
                Refusal::NotAnImage,
                "the platform entry is not an image manifest",
            ));
        };
        if !convertible {
            return Ok(out.refuse_tag_schema1(
                Refusal::OciNotConverted,
                "OCI image manifests are converted only with --convert-oci",
            ));
        }
        match self.converted_schema1(repo, tag, &image_digest, config, layers) {
            Ok(doc) => out.insert(
                ManifestKind::Schema1,
                Content::Jws(doc.signed),
                doc.payload_digest,
            ),
            Err((why, reason)) => return Ok(out.refuse_tag_schema1(why, reason)),
        }
        Ok(Some(out))
    }

    /// Why `repo:tag` has no `schema1` file, or None when it has one: the same decision
    /// a lookup makes (`verify` reports it). Not found for an unknown tag.
    pub fn schema1_refusal(&self, repo: &str, tag: &str) -> Result<Option<String>> {
        let reference = Reference::Tag(tag.to_string());
        let reps = self
            .representations(repo, &reference)?
            .ok_or_else(|| Error::NotFound(format!("{repo}:{tag}")))?;
        Ok(reps.no_schema1_because)
    }

    /// The list entry for the configured platform, loaded from the repository; or why
    /// there is none.
    #[allow(clippy::type_complexity)]
    fn platform_child(
        &self,
        repo: &str,
        list_digest: &Digest,
        manifests: &[Descriptor],
    ) -> Result<std::result::Result<(Digest, Arc<[u8]>, ParsedManifest), Refused>> {
        let Some(entry) = self.config.platform.pick(manifests) else {
            return Ok(Err((
                Refusal::NoPlatformEntry,
                format!("the list has no {} entry", self.config.platform),
            )));
        };
        let child = Digest::parse(&entry.digest).map_err(|e| {
            Error::invalid(
                format!("{repo}/manifests/{list_digest}"),
                format!("platform entry: {e}"),
            )
        })?;
        let missing = |detail: String| {
            let reason = format!(
                "its {} entry {child} is not in {repo}{detail}",
                self.config.platform
            );
            Err((Refusal::PlatformEntryMissing, reason))
        };
        Ok(match self.stored_manifest(repo, &child) {
            Ok(Some(stored)) => Ok((child, stored.bytes, stored.parsed)),
            Ok(None) => missing(String::new()),
            // Linked but its data is gone: the list itself still serves.
            Err(e) if e.is_not_found() => missing(format!(" ({e})")),
            Err(e) => return Err(e),
        })
    }

    /// A converted, signed schema1 for `repo:tag`, from the cache when possible; or why the
    /// registry (or our policy) refuses, logged once per cache miss.
    fn converted_schema1(
        &self,
        repo: &str,
        tag: &str,
        manifest_digest: &Digest,
        config: &Descriptor,
        layers: &[Descriptor],
    ) -> std::result::Result<Schema1Doc, Refused> {
        let key = Schema1Key {
            repo: repo.to_string(),
            tag: tag.to_string(),
            manifest: manifest_digest.clone(),
            key_id: self.config.key.kid().to_string(),
            platform: self.config.platform.to_string(),
        };
        if let Some(hit) = self.schema1_cache.get(&key) {
            METRICS.schema1_cache.inc(CacheResult::Hit);
            return hit;
        }
        METRICS.schema1_cache.inc(CacheResult::Miss);
        let started = std::time::Instant::now();
        let result = self.convert(repo, tag, config, layers);
        if result.is_ok() {
            METRICS.schema1_generated.observe(started.elapsed());
        }
        if let Err((_, reason)) = &result {
            log::warn!("{repo}:{tag} ({manifest_digest}): no schema1: {reason}");
        }
        // A document larger than the whole cache is not kept (a hostile config can
        // make one of 28 MiB): it is made again when asked for.
        let bytes = key.heap_bytes()
            + match &result {
                Ok(doc) => doc.signed.heap_bytes(),
                Err((_, reason)) => reason.len(),
            };
        self.schema1_cache.put(key, result.clone(), bytes);
        result
    }

    fn convert(
        &self,
        repo: &str,
        tag: &str,
        config: &Descriptor,
        layers: &[Descriptor],
    ) -> std::result::Result<Schema1Doc, Refused> {
        if !self.config.allow_foreign_layers {
            if let Some(foreign) = layers.iter().find(|l| manifest::is_foreign_layer(l)) {
                return Err((Refusal::ForeignLayer, format!(
                    "layer {} is a foreign layer and schema1 cannot carry its URLs (--allow-foreign-layers converts anyway, as registry 2.8 does)",
                    foreign.digest
                )));
            }
        }
        let refused = |reason: String| (Refusal::Config, reason);
        let config_digest =
            Digest::parse(&config.digest).map_err(|e| refused(format!("config digest: {e}")))?;
        let config = self
            .read_document_blob(repo, &config_digest)
            .map_err(|e| refused(e.to_string()))?;
        let layer_digests: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
        // Name the config file: most refusals come from its content.
        let payload = schema1::build_payload(repo, tag, &layer_digests, &config.bytes)
            .map_err(|e| refused(format!("{e} (config {})", config.path.display())))?;
        let signed = schema1::jws::prepare(
            &payload.bytes,
            self.signing_key.clone(),
            &payload.signing_time,
        )
        .map_err(refused)?;
        Ok(Schema1Doc {
            signed: Arc::new(signed),
            payload_digest: Digest::of(&payload.bytes),
        })
    }

    /// A config blob linked into the repository, read whole and checked.
    fn read_document_blob(&self, repo: &str, digest: &Digest) -> Result<crate::store::Document> {
        self.store
            .document_blob(repo, digest)?
            .ok_or_else(|| Error::NotFound(format!("config blob {digest} is not in {repo}")))
    }

    /// A stored schema1 payload, signed with our key as registry 2.8.2 re-signs it on
    /// every GET. Its digest is still the stored payload's.
    fn sign_stored_schema1(
        &self,
        repo: &str,
        digest: &Digest,
        payload: &[u8],
    ) -> Result<Arc<schema1::jws::Unsigned>> {
        let time = stored_schema1_time(payload);
        schema1::jws::prepare(payload, self.signing_key.clone(), &time)
            .map(Arc::new)
            .map_err(|e| {
                Error::invalid(
                    format!("{repo}/manifests/{digest}"),
                    format!("stored schema1: {e}"),
                )
            })
    }
}

/// The signing time for a stored schema1: the top history entry's `created` in UTC.
fn stored_schema1_time(payload: &[u8]) -> String {
    let created = || -> Option<String> {
        let doc: serde_json::Value = serde_json::from_slice(payload).ok()?;
        let v1 = doc
            .get("history")?
            .get(0)?
            .get("v1Compatibility")?
            .as_str()?;
        let v1: serde_json::Value = serde_json::from_str(v1).ok()?;
        let token = serde_json::to_vec(v1.get("created")?).ok()?;
        crate::gotime::GoTime::parse_json_token(&token)?.to_utc_seconds()
    };
    created().unwrap_or_else(|| schema1::convert::FALLBACK_SIGNING_TIME.to_string())
}
