//! What the fuzz targets share: a fixed signing key, a libtrust-style verifier, small
//! on-disk stores, and a namespace walker that checks what is served.
//!
//! Every check panics on failure, which is how libFuzzer learns about it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use registryfs::digest::Digest;
use registryfs::gojson::{self, Kind, Node as JsonNode};
use registryfs::manifest::{self, ManifestKind, PlatformChoice};
use registryfs::namespace::{Content, Location, Namespace, Node, Reference, Settings};
use registryfs::schema1::SigningKey;
use registryfs::store::{self, OpenOptions, Store};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The synthetic key of the signing fact sheet (d = 1..=32).
pub fn fixed_key() -> SigningKey {
    let mut d = [0u8; 32];
    for (i, b) in d.iter_mut().enumerate() {
        *b = i as u8 + 1;
    }
    SigningKey::from_scalar(&d).expect("valid scalar")
}

pub fn settings() -> Settings {
    Settings {
        key: fixed_key(),
        platform: PlatformChoice::default(),
        convert_oci: true,
        allow_foreign_layers: true,
        cache_entries: 16,
    }
}

fn member<'t, 'a>(obj: &JsonNode<'t, 'a>, name: &str) -> Option<JsonNode<'t, 'a>> {
    obj.members()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v)
        .last()
}

fn b64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(s)
        .unwrap_or_else(|e| panic!("bad base64url {s:?}: {e}"))
}

/// Checks a signed schema1 document as libtrust's `ParsePrettySignature` + `Verify` do
/// and returns the payload it signs (what its digest is computed over).
pub fn verify_signed(doc: &[u8], key: &SigningKey) -> Vec<u8> {
    let tape = gojson::parse(doc).unwrap_or_else(|e| {
        panic!(
            "signed document is not JSON ({e}): {}",
            String::from_utf8_lossy(doc)
        )
    });
    let root = tape.root();
    assert_eq!(root.kind(), Kind::Object);
    let sigs = member(&root, "signatures").expect("a signatures member");
    let sig: Vec<_> = sigs.elements().collect();
    assert_eq!(sig.len(), 1, "one signature");
    let sig = sig[0];
    let protected = member(&sig, "protected")
        .and_then(|n| n.string_value())
        .expect("protected");
    let signature = member(&sig, "signature")
        .and_then(|n| n.string_value())
        .expect("signature");
    let header = member(&sig, "header").expect("header");
    assert_eq!(
        member(&header, "alg")
            .and_then(|n| n.string_value())
            .as_deref(),
        Some("ES256")
    );
    let jwk = member(&header, "jwk").expect("jwk");
    let mut compact = Vec::new();
    gojson::compact_html(&mut compact, jwk.raw());
    assert_eq!(compact, key.public_jwk_json(), "jwk is the key's");

    let protected_json = b64(&protected);
    let ptape = gojson::parse(&protected_json).expect("protected header is JSON");
    let proot = ptape.root();
    let format_len: usize = member(&proot, "formatLength")
        .and_then(|n| std::str::from_utf8(n.raw()).ok()?.parse().ok())
        .expect("formatLength");
    let tail = member(&proot, "formatTail")
        .and_then(|n| n.string_value())
        .expect("formatTail");
    let time = member(&proot, "time")
        .and_then(|n| n.string_value())
        .expect("time");
    assert_time_format(&time);
    let mut payload = doc
        .get(..format_len)
        .expect("formatLength in range")
        .to_vec();
    payload.extend_from_slice(&b64(&tail));

    let jwk_json = key.public_jwk_json();
    let jtape = gojson::parse(&jwk_json).expect("jwk JSON");
    let coord = |name: &str| {
        b64(&member(&jtape.root(), name)
            .and_then(|n| n.string_value())
            .expect("coordinate"))
    };
    let mut sec1 = vec![4u8];
    sec1.extend_from_slice(&coord("x"));
    sec1.extend_from_slice(&coord("y"));
    let verifying = VerifyingKey::from_sec1_bytes(&sec1).expect("public key");
    let signature = Signature::from_slice(&b64(&signature)).expect("64-byte signature");
    let input = format!("{protected}.{}", URL_SAFE_NO_PAD.encode(&payload));
    verifying
        .verify(input.as_bytes(), &signature)
        .expect("signature verifies");
    payload
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
pub fn assert_time_format(t: &str) {
    let ok = t.len() == 20
        && t.bytes().enumerate().all(|(i, c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'Z',
            _ => c.is_ascii_digit(),
        });
    assert!(ok, "bad signing time {t:?}");
}

/// A store written into a fresh folder below the temp dir (scripts/fuzz.sh points
/// TMPDIR at a scratch folder it removes).
pub struct TempStore {
    pub root: PathBuf,
}

impl TempStore {
    pub fn new(tag: &str) -> TempStore {
        let root =
            std::env::temp_dir().join(format!("registryfs-fuzz-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("mkdir");
        TempStore { root }
    }

    pub fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let path = self.root.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, bytes).expect("write");
        path
    }
}

pub const SCHEMA2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

pub fn config_json(n: usize) -> String {
    let history: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"created":"2024-01-02T03:04:0{i}Z","created_by":"step {i}"}}"#))
        .collect();
    let diff_ids: Vec<String> = (0..n)
        .map(|i| format!("\"sha256:{}\"", format!("{i}").repeat(64)))
        .collect();
    format!(
        r#"{{"architecture":"amd64","os":"linux","created":"2024-01-02T03:04:05Z","history":[{}],"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        history.join(","),
        diff_ids.join(",")
    )
}

/// A distribution store (`<root>/docker/registry/v2`) with repository `app`: tag `t`
/// (schema2 image), tag `multi` (a manifest list of it), and returns the manifest digest.
pub struct DistributionFixture {
    pub store: TempStore,
    pub manifest: Digest,
    pub list: Digest,
}

impl DistributionFixture {
    pub fn new(tag: &str) -> DistributionFixture {
        let store = TempStore::new(tag);
        let v2 = "docker/registry/v2";
        let blob = |bytes: &[u8]| {
            let d = Digest::of(bytes);
            let hex = d.encoded().to_string();
            store.write(
                &format!("{v2}/blobs/sha256/{}/{hex}/data", &hex[..2]),
                bytes,
            );
            d
        };
        let link = |section: &str, d: &Digest| {
            store.write(
                &format!(
                    "{v2}/repositories/app/{section}/sha256/{}/link",
                    d.encoded()
                ),
                d.as_str().as_bytes(),
            );
        };
        let config = config_json(1);
        let config_digest = blob(config.as_bytes());
        link("_layers", &config_digest);
        let layer = blob(b"layer");
        link("_layers", &layer);
        let manifest_json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{SCHEMA2}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":{},"digest":"{config_digest}"}},"layers":[{{"mediaType":"{LAYER}","size":5,"digest":"{layer}"}}]}}"#,
            config.len()
        );
        let manifest = blob(manifest_json.as_bytes());
        link("_manifests/revisions", &manifest);
        let list_json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{LIST}","manifests":[{{"mediaType":"{SCHEMA2}","digest":"{manifest}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            manifest_json.len()
        );
        let list = blob(list_json.as_bytes());
        link("_manifests/revisions", &list);
        for (tag, d) in [("t", &manifest), ("multi", &list)] {
            store.write(
                &format!("{v2}/repositories/app/_manifests/tags/{tag}/current/link"),
                d.as_str().as_bytes(),
            );
        }
        DistributionFixture {
            store,
            manifest,
            list,
        }
    }

    pub fn v2(&self) -> PathBuf {
        self.store.root.join("docker/registry/v2")
    }

    pub fn open(&self) -> (Arc<dyn Store>, Namespace) {
        open(&self.store.root)
    }
}

pub fn open(root: &Path) -> (Arc<dyn Store>, Namespace) {
    let store = store::open(root, &OpenOptions::default()).expect("store opens");
    let ns = Namespace::new(store.clone(), settings());
    (store, ns)
}

/// The bytes a file of the namespace serves, blobs verified first (as the mount does).
pub fn served_bytes(ns: &Namespace, content: &Content) -> Option<Vec<u8>> {
    match content {
        Content::Bytes(b) => Some(b.to_vec()),
        Content::Blob { file, digest } => {
            ns.verify_blob(file, digest).ok()?;
            let bytes = std::fs::read(&file.path).ok()?;
            assert!(digest.matches(&bytes), "verified blob changed");
            Some(bytes)
        }
    }
}

/// Checks what `location` served: nothing under a digest it does not hash to, signed
/// schema1 that verifies, stored manifests of the kind their file name says.
pub fn check_served(location: &Location, bytes: &[u8], key: &SigningKey) {
    match location {
        Location::Blob(_, d) => assert!(d.matches(bytes), "blob {d} served other bytes"),
        Location::ManifestFile(_, reference, kind) => {
            let stored = if *kind == ManifestKind::Schema1 {
                verify_signed(bytes, key)
            } else {
                bytes.to_vec()
            };
            if let Reference::Digest(d) = reference {
                assert!(d.matches(&stored), "manifest {d} served other bytes");
            }
            let parsed = manifest::parse(&stored).expect("served manifests parse");
            assert_eq!(parsed.kind, *kind, "file name and content kind agree");
        }
        Location::TagList(_) => {
            gojson::parse(bytes).expect("tag list is JSON");
        }
        _ => panic!("a file at a folder location {location:?}"),
    }
}

/// Walks the namespace from the root (at most `limit` paths), checking every file it can
/// serve. Errors are fine (the store is malformed on purpose); panics are not. Returns
/// the paths that served content.
pub fn walk(store: &Arc<dyn Store>, ns: &Namespace, limit: usize) -> Vec<String> {
    let key = &ns.settings().key;
    let mut queue = vec![String::new()];
    let mut served = Vec::new();
    let mut seen = 0;
    while let Some(path) = queue.pop() {
        seen += 1;
        if seen > limit {
            break;
        }
        let Ok(node) = ns.lookup(&path) else {
            continue;
        };
        match node {
            Node::Dir => {
                if let Ok(entries) = ns.list(&path) {
                    for e in entries {
                        queue.push(if path.is_empty() {
                            e.name
                        } else {
                            format!("{path}/{}", e.name)
                        });
                    }
                }
            }
            Node::File(content) => {
                let location =
                    Location::parse(store.as_ref(), &path).expect("a served path parses");
                if let Some(bytes) = served_bytes(ns, &content) {
                    assert_eq!(bytes.len() as u64, content.len(), "{path}: size");
                    check_served(&location, &bytes, key);
                    served.push(path);
                }
            }
        }
    }
    served
}
